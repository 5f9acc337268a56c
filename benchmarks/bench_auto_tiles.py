"""tile="auto"'s plan against the plan before 2026-11-29, side by side: tiles, work, error, time.

    python benchmarks/bench_auto_tiles.py [--config small|flux] [--device cpu] [--repeat 3]
                                          [--out results/auto_tiles_small.json]

For each case a memory budget is set to what one tile of a given size needs plus the full-size
blend, so "auto" must tile. Before 2026-11-29 "auto" took the largest square tile whose estimate
fit (a tile cut by a narrow latent's side counted as square); it now counts the cut tile and takes,
up to that size, the tile doing the least work (``lua_fast.tiling.least_work_tile``). The old plan
is timed by passing its tile explicitly (the same overlap and blend as "auto"). Reported per plan:
tiles, tiled work over the untiled pass's (window-padded latent pixels), relative error and seam
step against the untiled output, median time. Then a batch over its budget (``batch_rows``):
tiled as a whole before, in chunks of whole items now. Random weights (seed 0), x2, fp32.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from unittest import mock

import torch

import lua_fast
from lua_fast import LUAConfig, tiling
from lua_fast.reference import LUA

from bench_tiling import seam_step, timed
from common import environment, write_json

# (latent height, width, the tile the budget is sized for), in windows of the configuration
# (small: 8, flux: 16; the released config's cases are fewer and smaller, ~5 s a 64x64 pass on a CPU).
CASES = {"small": [(16, 16, (11, 11)), (6, 40, (6, 20)), (12, 12, (10, 10)), (10, 18, (8, 8))],
         "flux": [(6, 6, (5, 5)), (4, 12, (4, 6))]}


def square_rule(config: LUAConfig, height: int, width: int, budget: int, blend: int, batch: int = 1) -> int:
    """The tile "auto" chose before 2026-11-29: the largest window multiple whose square fit."""
    window, size = config.window_size, max(height, width) // config.window_size * config.window_size
    while size > window and tiling.estimate_peak_bytes(config, size, size, (2,), batch=batch) + blend > budget:
        size -= window
    return size


# (latent side in windows, batch, items the budget fits untiled): a batch over the budget.
BATCH_CASES = {"small": [(8, 4, 2)], "flux": [(3, 4, 2)]}


def batch_rows(up, config: LUAConfig, name: str, repeat: int) -> list[dict]:
    """A batch over the budget: before 2026-11-29 "auto" tiled the whole batch (tiles small enough
    for every item at once); now it runs chunks of whole items (the untiled result)."""
    window, rows = config.window_size, []
    for side_windows, batch, fits in BATCH_CASES[name]:
        side = side_windows * window
        x = torch.randn(batch, config.in_channels, side, side, device=up.device)
        held = batch * config.out_channels * 4 * side * side * 4  # the batch's fp32 x2 outputs
        budget = tiling.estimate_peak_bytes(config, side, side, (2,), batch=fits) + held
        ref, untiled_ms = timed(lambda: up.upscale(x, scale=2), repeat)
        now, now_ms = timed(lambda: up.upscale(x, scale=2, tile="auto", memory_budget=budget), repeat)
        blend = tiling.blend_bytes(batch, config.out_channels, side, side, (2,), 4)
        largest = square_rule(config, side, side, budget, blend, batch)
        tile = tiling.least_work_tile(side, side, largest, 2 * window, window,
                                      lambda t: tiling.default_overlap(t, window))
        before, before_ms = timed(lambda: up.upscale(x, scale=2, tile=tile), repeat)
        rows.append({"latent": [batch, side, side], "budget_fits_items": fits, "budget_bytes": budget,
                     "untiled_median_ms": round(untiled_ms, 1),
                     "before": {"tile": tile, "rel_err": float((before - ref).norm() / ref.norm()),
                                "median_ms": round(before_ms, 1)},
                     "now": {"chunks_of": fits, "rel_err": float((now - ref).norm() / ref.norm()),
                             "median_ms": round(now_ms, 1)},
                     "speedup": round(before_ms / now_ms, 3)})
        print(f"batch {batch} x {side}x{side}, budget for {fits} items: before tiles of {tile} (rel "
              f"{rows[-1]['before']['rel_err']:.2e}, {before_ms:.0f} ms); now chunks of {fits} (rel "
              f"{rows[-1]['now']['rel_err']:.2e}, {now_ms:.0f} ms); untiled {untiled_ms:.0f} ms", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=["small", "flux"], default="small")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "auto_tiles_small.json"))
    args = parser.parse_args()

    torch.manual_seed(0)
    config = LUAConfig.small() if args.config == "small" else LUAConfig.flux()
    window = config.window_size
    up = lua_fast.load(LUA(config).state_dict(), device=args.device)
    rows = []
    for h_windows, w_windows, (th, tw) in CASES[args.config]:
        height, width = h_windows * window, w_windows * window
        x = torch.randn(1, config.in_channels, height, width, device=up.device)
        blend = tiling.blend_bytes(1, config.out_channels, height, width, (2,), 4)
        budget = tiling.estimate_peak_bytes(config, th * window, tw * window, (2,)) + blend
        ref, untiled_ms = timed(lambda: up.upscale(x, scale=2), args.repeat)
        chosen = []
        real = tiling.upscale_tiled

        def spy(run, latents, scales, tile, overlap, **kwargs):
            chosen.append((tile, overlap))
            return real(run, latents, scales, tile, overlap, **kwargs)

        with mock.patch.object(tiling, "upscale_tiled", spy):
            new, new_ms = timed(lambda: up.upscale(x, scale=2, tile="auto", memory_budget=budget), args.repeat)
        old_tile = square_rule(config, height, width, budget, blend)
        old, old_ms = timed(lambda: up.upscale(x, scale=2, tile=old_tile), args.repeat)
        row = {"latent": [height, width], "budget_tile": [th * window, tw * window], "budget_bytes": budget,
               "untiled_median_ms": round(untiled_ms, 1)}
        for name, tile, overlap, out, ms in [("before", old_tile, min(2 * window, old_tile // 2, old_tile - window),
                                              old, old_ms), ("now", *chosen[0], new, new_ms)]:
            starts = [tiling.tile_starts(n, tile, overlap, window) for n in (height, width)]
            row[name] = {"tile": tile, "overlap": overlap, "tiles": len(starts[0]) * len(starts[1]),
                         "work_vs_untiled": round(tiling.tiled_work(height, width, tile, overlap, window)
                                                  / (height * width), 3),
                         "rel_err": float((out - ref).norm() / ref.norm()), "seam_step": seam_step(out, ref),
                         "median_ms": round(ms, 1)}
        row["speedup"] = round(old_ms / new_ms, 3)
        rows.append(row)
        b, n = row["before"], row["now"]
        print(f"{height}x{width}, budget for {th * window}x{tw * window}: before tile {b['tile']} ({b['tiles']} tiles, "
              f"work {b['work_vs_untiled']}x, rel {b['rel_err']:.2e}, {b['median_ms']:.0f} ms); now tile {n['tile']} "
              f"({n['tiles']} tiles, work {n['work_vs_untiled']}x, rel {n['rel_err']:.2e}, {n['median_ms']:.0f} ms); "
              f"untiled {untiled_ms:.0f} ms; {row['speedup']}x", flush=True)
    write_json(args.out, {"environment": environment(up.device), "config": args.config, "weights": "random, seed 0",
                          "scale": 2, "precision": "fp32", "repeat": args.repeat, "rows": rows,
                          "batch_rows": batch_rows(up, config, args.config, args.repeat)})


if __name__ == "__main__":
    main()
