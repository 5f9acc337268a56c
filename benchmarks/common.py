"""Shared benchmark plumbing: environment record, timing, JSON output."""

from __future__ import annotations

import json
import platform
import statistics
import time
from pathlib import Path

import torch

import lua_fast


def environment(device: torch.device) -> dict:
    env = {
        "lua_fast": lua_fast.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "cpu_threads": torch.get_num_threads(),
    }
    try:
        import triton

        env["triton"] = triton.__version__
    except ImportError:
        env["triton"] = None
    return env


def time_call(fn, device: torch.device, *, warmup: int = 1, repeat: int = 5) -> dict:
    """Median and spread of ``fn()`` wall time in ms, synchronising the device around each call."""
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return {"median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times), "repeat": repeat}


def write_json(path: str | Path, payload: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")


def gpu_or_interpreter_timer(device: torch.device, name: str):
    """triton.testing.do_bench (median ms) on a GPU. On CPU, only under TRITON_INTERPRET=1 as a
    dry run of the script's logic with tiny sizes: those figures mean nothing. Else exit."""
    import os
    import sys

    if device.type == "cuda" and torch.cuda.is_available():
        from triton.testing import do_bench

        return lambda fn, return_mode="median": do_bench(fn, return_mode=return_mode)
    if os.environ.get("TRITON_INTERPRET") == "1":
        print(f"{name}: CPU dry run under the Triton interpreter; timings are meaningless")
        return lambda fn, return_mode="median": time_call(fn, device, warmup=0, repeat=1)["median_ms"]
    print(f"{name} needs a CUDA device (or TRITON_INTERPRET=1 for a CPU dry run of the script)")
    sys.exit(0)
