"""Processes forked after PyTorch's CPU thread pool has run.

PyTorch's Linux wheels run their CPU thread pool on GNU OpenMP (libgomp), which cannot restart its
worker threads in a child made by ``fork()``: the child's first parallel op (a conv, a GEMM, a large
elementwise op) waits forever for threads that only exist in the parent (GCC bug 60035). Measured
here (2 threads; torch 2.13.0 CPU and 2.14.1+cu130 wheels): with plain PyTorch ops and with
``upscale``, a ``multiprocessing`` "fork" child hung after its parent had run one such op; with one
thread it ran.
"fork" is ``multiprocessing``'s default on Linux before Python 3.14, and Celery's prefork pool and
``gunicorn --preload`` fork too: a CPU upscaler loaded in the parent hung in every worker, with no
error. PyTorch's DataLoader gives its workers one thread for the same reason.

So a child forked from a process where lua_fast has done CPU work (``load`` validates the weights
on the CPU; an upscale on the CPU) runs PyTorch with one thread when libgomp is loaded, and its
first ``upscale`` warns once, saying how to get every core back (the "spawn" or "forkserver" start
method). A child that calls ``torch.set_num_threads(n > 1)`` itself takes the hang back, and a
parent whose own code ran PyTorch CPU ops before lua_fast did anything is not detected (call
``torch.set_num_threads(1)`` in such a child).
"""

from __future__ import annotations

import os

import torch

from .errors import warn_the_caller

_state = {"cpu_work": False, "made_single_threaded": False, "warned": False}


def note_cpu_work() -> None:
    """This process has (probably) started PyTorch's CPU thread pool: its forked children must not use it."""
    _state["cpu_work"] = True


def _libgomp_loaded() -> bool:
    try:
        with open("/proc/self/maps") as maps:
            return "libgomp" in maps.read()
    except OSError:  # not Linux: other OpenMP runtimes (or none)
        return False


def _after_fork_in_child() -> None:
    _state["warned"] = False  # (a grandchild warns too)
    if _state["cpu_work"] and torch.get_num_threads() > 1 and _libgomp_loaded():
        torch.set_num_threads(1)  # (omp_set_num_threads: safe here, it starts no thread)
        _state["made_single_threaded"] = True


def warn_if_made_single_threaded() -> None:
    """Once per forked child that ``_after_fork_in_child`` made single-threaded, at its first upscale."""
    if _state["made_single_threaded"] and not _state["warned"]:
        _state["warned"] = True
        warn_the_caller(
            "lua_fast: this process was forked after PyTorch's CPU thread pool (GNU OpenMP) ran in its parent; "
            "that pool hangs in a forked child, so PyTorch runs here with one thread. For every core, start "
            "workers with multiprocessing's 'spawn' or 'forkserver' method (or load the upscaler in each worker).",
            RuntimeWarning)


if hasattr(os, "register_at_fork"):  # (not on Windows)
    os.register_at_fork(after_in_child=_after_fork_in_child)
