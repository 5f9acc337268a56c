"""Tiled upscaling against the untiled pass: error, seam step and time, blend margins side by side.

    python benchmarks/bench_tiling.py [--config small|flux] [--size 64] [--tiles 32/16 48/16]
                                      [--margins 0 0.375 0.5] [--device cpu] [--out results/tiling_small.json]

Random weights (seed 0), x2, batch 1, fp32. For each tile / overlap and each blend margin
(``lua_fast.tiling.BLEND_MARGIN``: the share of an overlap, at a tile's own edge, where that tile
gets no weight; 0 was the blend before 2026-11-29, linear ramps over the whole overlap; 0.5 is a
hard cut in the middle) it reports the relative error against the untiled output, the largest
error, the largest step between neighbouring output pixels beyond the untiled output's (a seam
shows as such a step), and the tiled call's median time beside the untiled one's, measured in
the same process. Trained weights are smoother than random ones: the errors bound nothing there.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from unittest import mock

import torch

import lua_fast
from lua_fast import LUAConfig, tiling
from lua_fast.reference import LUA

from common import environment, write_json


def seam_step(out: torch.Tensor, ref: torch.Tensor) -> float:
    """The largest change between neighbouring pixels beyond the untiled output's, over its largest value."""
    steps = [(out.diff(dim=d) - ref.diff(dim=d)).abs().max() for d in (-1, -2)]
    return float(max(steps) / ref.abs().max())


def timed(fn, repeat: int) -> tuple[torch.Tensor, float]:
    out, times = fn(), []  # the first call warms up
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        times.append((time.perf_counter() - start) * 1e3)
    return out, statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=["small", "flux"], default="small")
    parser.add_argument("--size", type=int, default=64, help="latent side")
    parser.add_argument("--tiles", nargs="+", default=["32/8", "32/16", "48/16"], help="tile/overlap pairs")
    parser.add_argument("--margins", type=float, nargs="+", default=[0.0, 0.375, 0.5])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "tiling_small.json"))
    args = parser.parse_args()

    torch.manual_seed(0)
    config = LUAConfig.small() if args.config == "small" else LUAConfig.flux()
    up = lua_fast.load(LUA(config).state_dict(), device=args.device)
    x = torch.randn(1, config.in_channels, args.size, args.size, device=up.device)
    ref, untiled_ms = timed(lambda: up.upscale(x, scale=2), args.repeat)
    rows = []
    for pair in args.tiles:
        tile, overlap = (int(v) for v in pair.split("/"))
        for margin in args.margins:
            with mock.patch.object(tiling, "BLEND_MARGIN", margin):
                out, ms = timed(lambda: up.upscale(x, scale=2, tile=tile, overlap=overlap), args.repeat)
            rows.append({
                "tile": tile, "overlap": overlap, "blend_margin": margin,
                "rel_err": float((out - ref).norm() / ref.norm()),
                "max_err": float((out - ref).abs().max() / ref.abs().max()),
                "seam_step": seam_step(out, ref),
                "median_ms": round(ms, 1), "untiled_median_ms": round(untiled_ms, 1),
                "vs_untiled": round(untiled_ms / ms, 3),
            })
            r = rows[-1]
            print(f"tile {tile} / overlap {overlap}, margin {margin}: rel {r['rel_err']:.2e}, max {r['max_err']:.2e}, "
                  f"seam step {r['seam_step']:.2e}, {ms:.0f} ms (untiled {untiled_ms:.0f} ms)", flush=True)
    write_json(args.out, {"environment": environment(up.device), "config": args.config, "weights": "random, seed 0",
                          "latent": [1, config.in_channels, args.size, args.size], "scale": 2, "precision": "fp32",
                          "repeat": args.repeat, "rows": rows})


if __name__ == "__main__":
    main()
