"""Time whole-model backends end to end, side by side in one process.

    python benchmarks/bench_e2e.py                       # CPU: small config, small latents
    python benchmarks/bench_e2e.py --device cuda --full  # released config, 64x64 and 128x128

CPU figures are a smoke test, not the product's target.
"""

from __future__ import annotations

import argparse

import torch

import lua_fast
from lua_fast import LUAConfig
from lua_fast.flops import forward_flops
from lua_fast.reference import LUA

from common import environment, time_call, write_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--full", action="store_true", help="released config (default: the small config)")
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="square latent sides")
    parser.add_argument("--dtypes", nargs="+", default=["float32"])
    parser.add_argument("--backends", nargs="+", default=["reference", "torch"])
    parser.add_argument("--scale", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", default="benchmarks/results/e2e.json")
    args = parser.parse_args()

    device = torch.device(args.device)
    config = LUAConfig.flux() if args.full else LUAConfig.small()
    sizes = args.sizes or ([64, 128] if args.full else [16, 32])
    torch.manual_seed(0)
    state_dict = LUA(config).state_dict()
    rows = []
    for dtype in args.dtypes:
        for size in sizes:
            x = torch.randn(1, config.in_channels, size, size, device=device)
            baseline = None
            for backend in args.backends:
                up = lua_fast.load(state_dict, device=device, dtype=dtype, backend=backend)
                timing = time_call(lambda: up.upscale(x, scale=args.scale), device, repeat=args.repeat)
                baseline = baseline or timing["median_ms"]
                flops = forward_flops(config, size, size, (args.scale,))
                rows.append({
                    "backend": up.backend, "dtype": dtype, "latent": [1, config.in_channels, size, size],
                    "scale": args.scale, **timing, "gflop": flops / 1e9,
                    "tflops_per_s": flops / (timing["median_ms"] * 1e-3) / 1e12,
                    f"speedup_vs_{args.backends[0]}": baseline / timing["median_ms"],
                })
                print(f"{up.backend:10s} {dtype:9s} {size:4d}x{size:<4d} x{args.scale}  "
                      f"{timing['median_ms']:9.2f} ms  {rows[-1]['tflops_per_s']:7.3f} TFLOP/s  "
                      f"x{baseline / timing['median_ms']:.2f} vs {args.backends[0]}")
    write_json(args.out, {"benchmark": "e2e", "config": config.to_dict(),
                          "environment": environment(device), "results": rows})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
