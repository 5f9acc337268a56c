"""Shared benchmark plumbing for the scripts in this folder (the implementations live in
lua_fast.benchmark so that ``lua-fast bench`` has them too)."""

from __future__ import annotations

import os
import sys

import torch

from lua_fast.benchmark import environment, time_call, write_json

__all__ = ["environment", "time_call", "write_json", "gpu_or_interpreter_timer"]


def gpu_or_interpreter_timer(device: torch.device, name: str):
    """triton.testing.do_bench (median ms) on a GPU. On CPU, only under TRITON_INTERPRET=1 as a
    dry run of the script's logic with tiny sizes: those figures mean nothing. Else exit."""
    if device.type == "cuda" and torch.cuda.is_available():
        from triton.testing import do_bench

        return lambda fn, return_mode="median": do_bench(fn, return_mode=return_mode)
    if os.environ.get("TRITON_INTERPRET") == "1":
        print(f"{name}: CPU dry run under the Triton interpreter; timings are meaningless")
        return lambda fn, return_mode="median": time_call(fn, device, warmup=0, repeat=1)["median_ms"]
    print(f"{name} needs a CUDA device (or TRITON_INTERPRET=1 for a CPU dry run of the script)")
    sys.exit(0)
