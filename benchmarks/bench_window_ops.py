"""Time the window ops against the PyTorch compositions they replace.

    python benchmarks/bench_window_ops.py                      # CPU smoke (small sizes)
    python benchmarks/bench_window_ops.py --device cuda        # 64x64 and 128x128, D=360, ws=16

Compares, at each latent size and dtype, side by side in one process:
- partition + roll: native gather vs torch.roll + view/permute + contiguous
- merge + reverse roll: native gather vs view/permute + torch.roll + contiguous
- shift mask for a new size: native (one launch, on device) vs the released code's way
  (python-level labelling on the CPU, then a host-to-device copy) vs the PyTorch fallback on device
GPU timings use triton.testing.do_bench (median ms); CPU timings use wall-clock medians.
"""

from __future__ import annotations

import argparse

import torch

from lua_fast import native
from lua_fast.ops import window_ops as W

from common import environment, time_call, write_json


def released_mask(height, width, window, shift, device, dtype):
    """The released code's calculate_mask: CPU tensors and python slices, then .to(device)."""
    img_mask = torch.zeros((1, height, width, 1))
    cnt = 0
    slices = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    for h in slices:
        for w in slices:
            img_mask[:, h, w, :] = cnt
            cnt += 1
    windows = img_mask.view(1, height // window, window, width // window, window, 1)
    windows = windows.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window)
    mask = windows.unsqueeze(1) - windows.unsqueeze(2)
    mask = mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)
    return mask.to(device=device, dtype=dtype)


def timer(device):
    if device.type == "cuda":
        from triton.testing import do_bench

        return lambda fn: {"median_ms": do_bench(fn, warmup=25, rep=100, return_mode="median")}
    return lambda fn: time_call(fn, device, warmup=2, repeat=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", type=int, nargs="+", default=None)
    parser.add_argument("--dim", type=int, default=360)
    parser.add_argument("--window", type=int, default=16)
    parser.add_argument("--dtypes", nargs="+", default=["bfloat16", "float32"])
    parser.add_argument("--out", default="benchmarks/results/window_ops.json")
    args = parser.parse_args()

    device = torch.device(args.device)
    sizes = args.sizes or ([64, 128] if device.type == "cuda" else [32, 64])
    reason = native.unavailable_reason(device)
    if reason:
        print(f"WARNING: native ops unavailable on {device} ({reason}); 'native' rows time the fallback")
    bench = timer(device)
    ws, shift = args.window, args.window // 2
    rows = []
    for dtype_name in args.dtypes:
        dtype = getattr(torch, dtype_name)
        for size in sizes:
            x = torch.randn(1, size, size, args.dim, device=device, dtype=dtype)
            win = W.window_partition(x, ws, shift)
            cases = {
                "partition+roll": (lambda: W.window_partition(x, ws, shift),
                                   lambda: W.torch_window_partition(x, ws, shift), None),
                "merge+roll": (lambda: W.window_merge(win, 1, size, size, ws, shift),
                               lambda: W.torch_window_merge(win, 1, size, size, ws, shift), None),
                "mask (new size)": (lambda: W.window_mask(size, size, ws, shift, dtype=dtype, device=device),
                                    lambda: W.torch_window_mask(size, size, ws, shift, dtype=dtype, device=device),
                                    lambda: released_mask(size, size, ws, shift, device, dtype)),
            }
            for op, (fast, composed, released) in cases.items():
                row = {"op": op, "dtype": dtype_name, "latent": size, "dim": args.dim, "window": ws,
                       "shift": shift, "native_ms": bench(fast)["median_ms"],
                       "torch_ms": bench(composed)["median_ms"]}
                row["speedup_vs_torch"] = row["torch_ms"] / row["native_ms"]
                if released:
                    row["released_ms"] = bench(released)["median_ms"]
                    row["speedup_vs_released"] = row["released_ms"] / row["native_ms"]
                rows.append(row)
    print(f"{'op':16s} {'dtype':9s} {'latent':>6s} {'native ms':>10s} {'torch ms':>10s} {'x':>6s} "
          f"{'released ms':>12s} {'x':>6s}")
    for r in rows:
        rel = f"{r['released_ms']:12.4f} {r['speedup_vs_released']:6.1f}" if "released_ms" in r else ""
        print(f"{r['op']:16s} {r['dtype']:9s} {r['latent']:6d} {r['native_ms']:10.4f} {r['torch_ms']:10.4f} "
              f"{r['speedup_vs_torch']:6.2f} {rel}")
    write_json(args.out, {"benchmark": "window_ops", "environment": environment(device),
                          "native": {"unavailable_reason": reason}, "results": rows})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
