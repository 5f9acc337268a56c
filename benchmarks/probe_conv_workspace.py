"""One trunk conv (360 -> 360, 3x3) in fp32, three ways: what each costs in time and memory.

    python benchmarks/probe_conv_workspace.py --device cuda   # 64x64 and 128x128, batch 1 and 4
    python benchmarks/probe_conv_workspace.py                 # CPU smoke (no cuDNN: the modes coincide)

The released-style fp32 row peaked at ~132 GB at 128x128 on an H200, hardly more at batch 4
(benchmarks/NOTES.md). The reading to test: lua_fast's fp32 mode runs cuDNN convs in IEEE fp32,
and PyTorch runs the first cuDNN plan whose workspace it can allocate (an FFT plan's filter
transform grows with the area, not the batch). Modes, each a fresh allocator cache:
- "ieee": cuDNN, TF32 off (lua_fast's fp32 mode, and the released-style row);
- "tf32": cuDNN, TF32 allowed (PyTorch's default, what the released code runs);
- "ieee, cudnn off": PyTorch's own conv (im2col + GEMM), TF32 off: the exact fallback.
Each row: median ms (CUDA events), the most allocated and reserved over what was held before the
first call (the first call picks the plan; its allocations count), error against "ieee".
"""

from __future__ import annotations

import argparse
import contextlib

import torch
import torch.nn.functional as F

from lua_fast.precision import set_tf32_switches, tf32_switches

from common import environment, time_call, write_json

MODES = {"ieee": (False, True), "tf32": (True, True), "ieee, cudnn off": (False, False)}  # (tf32, cudnn)


@contextlib.contextmanager
def conv_mode(tf32: bool, cudnn: bool):
    # (torch.backends.cudnn.flags() would also reset the TF32 switch it takes a default for)
    saved, saved_cudnn = tf32_switches(), torch.backends.cudnn.enabled
    set_tf32_switches(tf32)
    torch.backends.cudnn.enabled = cudnn
    try:
        yield
    finally:
        set_tf32_switches(saved)
        torch.backends.cudnn.enabled = saved_cudnn


def probe(size: int, batch: int, channels: int, device: torch.device, repeat: int) -> list[dict]:
    gen = torch.Generator(device="cpu").manual_seed(size + batch)
    x = torch.randn(batch, channels, size, size, generator=gen).to(device)
    w = (torch.randn(channels, channels, 3, 3, generator=gen) / (9 * channels) ** 0.5).to(device)
    b = torch.randn(channels, generator=gen).to(device)
    rows, outputs = [], {}
    for mode, (tf32, cudnn) in MODES.items():
        cuda = device.type == "cuda"
        if cuda:
            torch.cuda.synchronize(device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            held = torch.cuda.memory_allocated(device)
        with conv_mode(tf32, cudnn), torch.inference_mode():
            try:
                outputs[mode] = F.conv2d(x, w, b, padding=1)  # the first call picks the plan
                timing = time_call(lambda: F.conv2d(x, w, b, padding=1), device, warmup=1, repeat=repeat)
            except Exception as exc:  # noqa: BLE001 (a mode that fails is a finding, not the end)
                rows.append({"size": size, "batch": batch, "mode": mode, "error": f"{type(exc).__name__}: {exc}"[:300]})
                continue
        row = {"size": size, "batch": batch, "channels": channels, "mode": mode, **timing}
        if cuda:
            row["peak_allocated_mib"] = (torch.cuda.max_memory_allocated(device) - held) / 2**20
            row["peak_reserved_mib"] = torch.cuda.max_memory_reserved(device) / 2**20
        ref = outputs["ieee"].double() if "ieee" in outputs else None
        if ref is not None:
            row["rel_err_vs_ieee"] = ((outputs[mode].double() - ref).norm() / ref.norm()).item()
        rows.append(row)
        print(f"{size:4d}x{size:<4d} b{batch} {mode:16s} {row['median_ms']:8.3f} ms"
              + (f"  allocated {row['peak_allocated_mib']:9.0f} MiB  reserved {row['peak_reserved_mib']:9.0f} MiB"
                 if cuda else "") + f"  err {row.get('rel_err_vs_ieee', 0):.1e}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", type=int, nargs="+", default=None)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--channels", type=int, default=360)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--out", default="benchmarks/results/conv_workspace.json")
    args = parser.parse_args()
    device = torch.device(args.device)
    sizes = args.sizes or ([64, 128] if device.type == "cuda" else [16])
    rows = []
    for size in sizes:
        for batch in args.batches:
            rows += probe(size, batch, args.channels, device, args.repeat)
            write_json(args.out, {"benchmark": "conv_workspace", "environment": environment(device),
                                  "results": rows})


if __name__ == "__main__":
    main()
