"""Time whole-model variants end to end, side by side in one process.

    python benchmarks/bench_e2e.py                      # CPU smoke: small config, small latents
    python benchmarks/bench_e2e.py --device cuda --full # released config; issue 6's table

GPU variants (--full): released-style fp32 reference (shift masks rebuilt on the CPU and
copied to the device in every shifted block, as the released code does for sizes other
than 32x32), eager bf16 reference, torch.compile of the bf16 reference, lua_fast "triton"
in bf16 / mixed / fp32, each with and without CUDA graphs; at 64x64 x2, 128x128 x2 and
128x128 x4. Reports median ms, spread, TFLOP/s, peak memory, error against the fp32
reference, and ratios against the first variant and against compiled bf16. CPU figures
are a smoke test, not the product's target.
"""

from __future__ import annotations

import argparse
import contextlib
from dataclasses import dataclass

import torch

import lua_fast
from lua_fast import LUAConfig
from lua_fast.flops import forward_flops
from lua_fast.reference import LUA, windows

from bench_window_ops import released_mask
from common import environment, time_call, write_json


@dataclass(frozen=True)
class Variant:
    label: str
    backend: str
    precision: str
    compile: bool = False
    cuda_graph: bool = False
    released_masks: bool = False


GPU_VARIANTS = [
    Variant("released fp32", "reference", "fp32", released_masks=True),
    Variant("eager bf16", "reference", "bf16"),
    Variant("compiled bf16", "reference", "bf16", compile=True),
    Variant("triton bf16", "triton", "bf16"),
    Variant("triton bf16 + graphs", "triton", "bf16", cuda_graph=True),
    Variant("triton mixed", "triton", "mixed"),
    Variant("triton mixed + graphs", "triton", "mixed", cuda_graph=True),
    Variant("triton fp32", "triton", "fp32"),
    Variant("triton fp32 + graphs", "triton", "fp32", cuda_graph=True),
]
CPU_VARIANTS = [Variant("reference fp32", "reference", "fp32"), Variant("torch fp32", "torch", "fp32"),
                Variant("reference bf16", "reference", "bf16"), Variant("torch bf16", "torch", "bf16")]


@contextlib.contextmanager
def released_mask_building():
    """Make the reference rebuild each shift mask on the CPU and copy it over, per block call."""
    real = windows.shift_mask
    windows.shift_mask = lambda h, w, ws, shift, *, device, dtype: released_mask(h, w, ws, shift, device, dtype)
    try:
        yield
    finally:
        windows.shift_mask = real


def run_variant(variant, state_dict, x, scale, device, repeat):
    up = lua_fast.load(state_dict, device=device, backend=variant.backend, precision=variant.precision)
    if variant.compile:
        model = torch.compile(up.model)
        call = lambda: model(x.to(up.dtype), (scale,))[scale]  # noqa: E731
    else:
        call = lambda: up.upscale(x, scale=scale, check_finite=False, cuda_graph=variant.cuda_graph)  # noqa: E731
    ctx = released_mask_building() if variant.released_masks else contextlib.nullcontext()
    with ctx, torch.inference_mode():
        out = call()  # first call: compile / capture / autotune outside the timing
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
        timing = time_call(call, device, warmup=2, repeat=repeat)
        peak = (torch.cuda.max_memory_allocated(device) - base) / 2**20 if device.type == "cuda" else None
    up = None  # free the model before the next variant loads
    return out, timing, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--full", action="store_true", help="released config (default: the small config)")
    parser.add_argument("--cases", nargs="+", default=None, help="SIZExSCALE, e.g. 64x2 128x4")
    parser.add_argument("--variants", nargs="+", default=None, help="labels to run (default: all for the device)")
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--out", default="benchmarks/results/e2e.json")
    args = parser.parse_args()

    device = torch.device(args.device)
    config = LUAConfig.flux() if args.full else LUAConfig.small()
    cases = args.cases or (["64x2", "128x2", "128x4"] if device.type == "cuda" else ["16x2", "32x2"])
    variants = GPU_VARIANTS if device.type == "cuda" else CPU_VARIANTS
    if args.variants:
        variants = [v for v in variants if v.label in args.variants]
    torch.manual_seed(0)
    state_dict = LUA(config).state_dict()
    rows = []
    for case in cases:
        size, scale = (int(v) for v in case.split("x"))
        x = torch.randn(1, config.in_channels, size, size, device=device)
        flops = forward_flops(config, size, size, (scale,))
        ref = lua_fast.load(state_dict, device=device, backend="reference", precision="fp32").upscale(x, scale=scale)
        results = {}
        for variant in variants:
            out, timing, peak = run_variant(variant, state_dict, x, scale, device, args.repeat)
            err = ((out.double() - ref.double()).norm() / ref.double().norm()).item()
            results[variant.label] = timing["median_ms"]
            rows.append({"variant": variant.label, "backend": variant.backend, "precision": variant.precision,
                         "compile": variant.compile, "cuda_graph": variant.cuda_graph, "latent": [1, config.in_channels, size, size],
                         "scale": scale, **timing, "gflop": flops / 1e9, "tflops_per_s": flops / (timing["median_ms"] * 1e-3) / 1e12,
                         "peak_mib": peak, "rel_err_vs_fp32_reference": err})
        first = variants[0].label
        for row in rows[-len(variants):]:
            row[f"speedup_vs_{first}"] = results[first] / row["median_ms"]
            if "compiled bf16" in results:
                row["speedup_vs_compiled_bf16"] = results["compiled bf16"] / row["median_ms"]
            peak = f"{row['peak_mib']:8.0f} MiB" if row["peak_mib"] is not None else ""
            print(f"{case:7s} {row['variant']:24s} {row['median_ms']:10.2f} ms  {row['tflops_per_s']:7.2f} TFLOP/s  "
                  f"x{row[f'speedup_vs_{first}']:6.2f} vs {first}  err {row['rel_err_vs_fp32_reference']:.1e} {peak}")
    write_json(args.out, {"benchmark": "e2e", "config": config.to_dict(), "environment": environment(device),
                          "results": rows})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
