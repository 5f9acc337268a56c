"""A process forked after PyTorch's CPU thread pool ran (GNU OpenMP cannot restart it in a fork
child): before 2026-11-29 a CPU upscaler loaded and run in the parent hung forever in a
``multiprocessing`` "fork" child (the default start method on Linux before Python 3.14; Celery's
prefork pool; ``gunicorn --preload``). Each case runs in a fresh process with two threads (the
test workers run one thread each, which never starts the pool)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork + libgomp: Linux")

SCRIPT = r"""
import faulthandler, multiprocessing as mp, sys, warnings
import torch
torch.set_num_threads(2)
import lua_fast
from lua_fast import LUAConfig
from lua_fast.reference import LUA

torch.manual_seed(0)
up = lua_fast.load(LUA(LUAConfig.small()).state_dict())
z = torch.randn(2, 16, 24, 24)
parent = up.upscale(z)  # the parent's pool runs

def child(queue):
    faulthandler.dump_traceback_later(60, exit=True)  # a hang ends the child (exit code 1)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        out = up.upscale(z)
        up.upscale(z)
    queue.put((torch.equal(out, parent), torch.get_num_threads(), [str(w.message) for w in seen]))

ctx = mp.get_context("fork")
queue = ctx.Queue()
proc = ctx.Process(target=child, args=(queue,))
proc.start()
proc.join(90)
print("exitcode", proc.exitcode)
same, threads, messages = queue.get(timeout=5)
print("same", same, "threads", threads)
print("warnings", len(messages), messages[:1])
print("parent threads", torch.get_num_threads())
"""


def test_a_forked_child_of_a_cpu_upscaler_runs_single_threaded_instead_of_hanging():
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "exitcode 0" in out, out + proc.stderr[-3000:]
    assert "same True threads 1" in out, out  # the same bits as the parent, on one thread
    assert "warnings 1 " in out and "lua_fast: this process was forked after PyTorch's CPU thread pool" in out, out
    assert "parent threads 2" in out, out  # the parent keeps its threads
