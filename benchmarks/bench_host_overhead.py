"""Host (Python) time per kernel launch of a triton-backend forward, three ways side by side.

    python benchmarks/bench_host_overhead.py [--size 32] [--precision bf16] [--repeat 20] [--out FILE]

Without CUDA graphs the triton backend is host-bound at batch 1 (~200 launches per x2 forward), so
this is the number to move. One process, one model, three timings of the same forward:
- "wrappers only": ``DRY_RUN`` on: lua_fast's wrappers, the op dispatch and argument preparation;
  no Triton code runs;
- "Triton's autotuner": the whole launch path with every tuned launch through
  ``Autotuner.run`` (``TUNED_FAST_PATH`` off);
- "default": the whole launch path as shipped (a tuned key looked up by lua_fast, see
  ``triton_support._Tuned``).
On a GPU the launches are real (time to return from the forward, not to finish it). Without one
the kernels are compiled-mode Triton behind a stand-in driver (``stub_gpu.py``): everything up to
the compiled launcher runs, nothing is compiled or executed. ``wrapped_launches`` counts launches
that went through ``torch.library.wrap_triton``'s higher-order op: 0 on a plain eager forward.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time
from unittest import mock

import torch

if os.environ.get("TRITON_INTERPRET") == "1":
    raise SystemExit("bench_host_overhead.py times compiled-mode launches: run it without TRITON_INTERPRET=1")

from lua_fast import LUAConfig  # noqa: E402
from lua_fast.backends.triton_backend import TritonBackendLUA  # noqa: E402
from lua_fast.kernels import conv3x3, triton_support  # noqa: E402
from lua_fast.precision import resolve  # noqa: E402
from lua_fast.reference import LUA  # noqa: E402

from common import environment, write_json  # noqa: E402

WAYS = ("wrappers only", "Triton's autotuner", "default")


@contextlib.contextmanager
def way(name: str):
    """Switch the launch path for one of WAYS."""
    triton_support.DRY_RUN[0] = name == "wrappers only"
    triton_support.TUNED_FAST_PATH[0] = name != "Triton's autotuner"
    try:
        yield
    finally:
        triton_support.DRY_RUN[0], triton_support.TUNED_FAST_PATH[0] = False, True


@contextlib.contextmanager
def timed_cpu_fills(spent: list):
    """Add the time of the padded conv buffers' border fills (conv3x3.zero_border) to ``spent[0]``.
    On the CPU a fill does the work itself, on pages the allocator may have just mapped (their
    first touch), where a GPU host only enqueues a fill kernel. On the 2-core development CPU
    (2026-11-27, bf16 32x32) the fills took 0.1-0.7 ms of a 9-10 ms forward when it ran alone, and
    0.7-11 ms of 11-28 ms with another process on the second core: timed apart so the per-launch
    figure can be read without that noise."""
    real = conv3x3.zero_border

    def zero_border(buf):
        start = time.perf_counter()
        try:
            return real(buf)
        finally:
            spent[0] += time.perf_counter() - start

    with mock.patch.object(conv3x3, "zero_border", zero_border):
        yield


def measure(forward, device: torch.device, repeat: int) -> tuple[float, float]:
    """Medians, in ms per forward, of host time (on a GPU: from the call to its return, queue
    drained first) and of the CPU's own border fills within it (0 on a GPU: not timed there)."""
    times, fills = [], []
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        spent = [0.0]
        with timed_cpu_fills(spent) if device.type == "cpu" else contextlib.nullcontext():
            start = time.perf_counter()
            forward()
            times.append((time.perf_counter() - start) * 1e3)
        fills.append(spent[0] * 1e3)
    return statistics.median(times), statistics.median(fills)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--precision", default="bf16")
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
    forward = lambda: backend(x, (2,))  # noqa: E731
    if device.type == "cuda":
        gpu = contextlib.nullcontext()
    else:
        from stub_gpu import stub_gpu

        gpu = stub_gpu()
    wrapped, real_wrap = [0], torch.library.wrap_triton

    def wrap_counted(kernel):
        wrapped[0] += 1
        return real_wrap(kernel)

    rows = {}
    with gpu, mock.patch.object(torch.library, "wrap_triton", wrap_counted), torch.inference_mode():
        forward()  # compile (or stub-compile) and tune outside the timing
        triton_support.LAUNCH_OBSERVERS.append(observer)
        try:
            forward()
        finally:
            triton_support.LAUNCH_OBSERVERS.remove(observer)
        per_forward = launches[0]
        for name in WAYS:
            wrapped[0] = 0
            with way(name):
                forward()
                ms, fills = measure(forward, device, args.repeat)
            rows[name] = {"host_ms_per_forward": ms, "host_us_per_launch": ms * 1e3 / per_forward,
                          "cpu_fills_ms_per_forward": fills,
                          "host_us_per_launch_less_cpu_fills": (ms - fills) * 1e3 / per_forward,
                          "wrapped_launches_per_forward": wrapped[0] / (args.repeat + 1)}
    result = {"benchmark": "host_overhead", "environment": environment(device), "precision": args.precision,
              "latent": args.size, "launch_path": "real GPU launches" if device.type == "cuda" else
              "compiled-mode Triton behind stub_gpu (no compiled launcher, no CUDA driver)",
              "launches_per_forward": per_forward, "ways": rows,
              "switches": {k: os.environ.get(k, "") for k in ("LUA_FAST_FUSED_MLP", "LUA_FAST_FUSED_ATTN_PROJ",
                                                               "LUA_FAST_PDL")}}
    print(f"{args.precision} {args.size}x{args.size} on {device}, {per_forward} launches per forward "
          f"({result['launch_path']}):")
    for name, row in rows.items():
        fills = (f", {row['host_us_per_launch_less_cpu_fills']:5.1f} without the CPU's border fills"
                 if row["cpu_fills_ms_per_forward"] else "")
        print(f"  {name:20s} {row['host_ms_per_forward']:7.2f} ms per forward  "
              f"{row['host_us_per_launch']:6.1f} us per launch{fills}  ({row['wrapped_launches_per_forward']:g} "
              "through wrap_triton)")
    if args.out:
        write_json(args.out, result)


if __name__ == "__main__":
    main()
