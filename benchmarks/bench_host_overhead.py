"""Host (Python) time per kernel launch of a triton-backend forward, with no kernel executed.

    python benchmarks/bench_host_overhead.py [--size 32] [--precision fp16] [--out FILE]

Runs a released-configuration forward with ``count_launches``' DRY_RUN switch on: every lua_fast
wrapper, the op dispatch and the argument preparation run, the Triton kernels do not (on a GPU
Triton's own autotuner/JIT launch path comes on top of this figure). On the CPU it needs
TRITON_INTERPRET=1 (set here) and measures the same Python path the GPU runs, minus that launch.
Without CUDA graphs the triton backend is host-bound at batch 1 (NOTES: ~100 us per launch on the
H200's host), so this is the number to move.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from lua_fast import LUAConfig  # noqa: E402
from lua_fast.backends.triton_backend import TritonBackendLUA  # noqa: E402
from lua_fast.kernels import triton_support  # noqa: E402
from lua_fast.precision import resolve  # noqa: E402
from lua_fast.reference import LUA  # noqa: E402

from common import environment, write_json  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--precision", default="fp16", help="fp16/bf16: fused GEMMs (bf16 adds store copies "
                        "under the interpreter, which lacks bf16)")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    prec = resolve(args.precision, None)
    model = LUA(LUAConfig.flux()).to(device, prec.storage).eval().requires_grad_(False)
    backend = TritonBackendLUA(model, prec)
    x = torch.randn(1, 16, args.size, args.size, device=device)
    launches = [0]
    observer = lambda name: launches.__setitem__(0, launches[0] + 1)  # noqa: E731
    triton_support.LAUNCH_OBSERVERS.append(observer)
    triton_support.DRY_RUN[0] = True
    try:
        with torch.inference_mode():
            backend(x, (2,))
            launches[0] = 0
            backend(x, (2,))
            per_forward = launches[0]
            times = []
            for _ in range(args.repeat):
                start = time.perf_counter()
                backend(x, (2,))
                times.append((time.perf_counter() - start) * 1e3)
    finally:
        triton_support.DRY_RUN[0] = False
        triton_support.LAUNCH_OBSERVERS.remove(observer)
    ms = statistics.median(times)
    result = {"benchmark": "host_overhead", "environment": environment(device), "precision": args.precision,
              "latent": args.size, "launches_per_forward": per_forward, "host_ms_per_forward": ms,
              "host_us_per_launch": ms * 1e3 / per_forward}
    print(f"{args.precision} {args.size}x{args.size} on {device}: {per_forward} launches, host {ms:.2f} ms per "
          f"forward, {result['host_us_per_launch']:.1f} us per launch (no kernel executed)")
    if args.out:
        write_json(args.out, result)


if __name__ == "__main__":
    main()
