"""Peak resident memory of a CPU forward against ``lua_fast.tiling.estimate_peak_bytes``.

    python benchmarks/bench_cpu_memory.py [--cases torch:float32:128:2 ...] [--out results/cpu_memory.json]

tile="auto" on the CPU tiles where the estimate exceeds a share of the RAM the process can still
take (``lua_fast.tiling.CPU_BUDGET_FRACTION``); this measures how the resident set really grows,
which includes what glibc keeps in its heap after tensors are freed. Each case runs in a fresh
process (a clean heap; ``ru_maxrss`` only grows; ``lua-fast bench`` resets Linux's ``VmHWM``
instead, ``host_memory.reset_resident_peak``): released FLUX config with random weights, loaded and
warmed on a 16x16 latent, then one forward at the case's size; the figure is the peak RSS
(``ru_maxrss``) above the resident set before that forward.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

from common import environment, write_json

CHILD = r"""
import json, resource, sys, torch, lua_fast
from lua_fast import LUAConfig
from lua_fast.reference import LUA
from lua_fast.tiling import estimate_peak_bytes
backend, dtype_name, size, scale = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
torch.manual_seed(0)
config = LUAConfig.flux()
kind = {"precision": dtype_name} if dtype_name == "mixed" else {"dtype": getattr(torch, dtype_name)}
up = lua_fast.load(LUA(config).state_dict(), backend=backend, **kind)
up.upscale(torch.randn(1, 16, 16, 16), scale=scale)
x = torch.randn(1, 16, size, size)
page = resource.getpagesize()
before = max(int(open("/proc/self/statm").read().split()[1]) * page,
             resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
up.upscale(x, scale=scale)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
estimate = estimate_peak_bytes(config, size, size, (scale,), element_size=up.precision.activation_itemsize,
                               materialises_scores=True)
print(json.dumps({"peak_over_loaded_mib": round((peak - before) / 2**20, 1),
                  "estimate_mib": round(estimate / 2**20, 1), "ratio": round((peak - before) / estimate, 3)}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=[
        "torch:float32:64:2", "reference:float32:64:2", "torch:float32:128:2", "reference:float32:128:2",
        "torch:float32:128:4", "torch:bfloat16:128:2", "reference:bfloat16:128:2", "torch:float32:192:2",
        "reference:float32:192:2", "torch:bfloat16:192:4"])
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "cpu_memory.json"))
    args = parser.parse_args()
    rows = []
    for case in args.cases:
        backend, dtype_name, size, scale = case.split(":")
        done = subprocess.run([sys.executable, "-c", CHILD, backend, dtype_name, size, scale],
                              capture_output=True, text=True, check=True)
        row = {"backend": backend, "dtype": dtype_name, "latent": [1, 16, int(size), int(size)], "scale": int(scale),
               **json.loads(done.stdout.strip().splitlines()[-1])}
        rows.append(row)
        print(json.dumps(row), flush=True)
        write_json(args.out, {"environment": environment(torch.device("cpu")), "config": "flux (released)",
                              "rows": rows})


if __name__ == "__main__":
    main()
