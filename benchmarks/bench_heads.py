"""Time the fused Triton pixel-shuffle heads against cuDNN conv + nn.PixelShuffle and torch.compile.

    python benchmarks/bench_heads.py --device cuda

Released geometry at a 128x128 latent: D=360, F=256, C=16; x2 and x4 heads; bf16 and fp32
(fp32 rows with TF32 disabled everywhere, the kernel using IEEE dots). Baselines: the
reference UpsampleHead eager in channels-first and channels-last memory format, and
torch.compile of it. Also one trunk conv (360 -> 360 with a residual add, channels-last)
against cuDNN, to decide whether the kernel should serve the trunk's convs too.
Timings with triton.testing.do_bench (median ms). Needs a GPU.
"""

from __future__ import annotations

import argparse

import torch

from common import environment, gpu_or_interpreter_timer, write_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--dtypes", nargs="+", default=["bfloat16", "float32"])
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--out", default="benchmarks/results/heads.json")
    args = parser.parse_args()
    device = torch.device(args.device)
    bench = gpu_or_interpreter_timer(device, "bench_heads")
    from lua_fast.precision import set_tf32_switches

    set_tf32_switches(False)  # fp32 rows compare exact modes (cuDNN allows TF32 by default)
    torch.backends.cudnn.benchmark = True

    from lua_fast import LUAConfig
    from lua_fast.flops import head_flops
    from lua_fast.kernels.conv3x3 import conv3x3, conv3x3_flops, pack_conv
    from lua_fast.kernels.upsample_head import PackedHead, fused_head
    from lua_fast.reference.model import UpsampleHead

    config = LUAConfig.flux()
    d, f, c, size = config.embed_dim, config.head_width, config.out_channels, args.size
    rel = lambda a, b: ((a.double() - b.double()).norm() / b.double().norm()).item()  # noqa: E731
    rows = []
    for dtype_name in args.dtypes:
        dtype = getattr(torch, dtype_name)
        g = torch.randn(1, d, size, size, device=device)
        for scale in (2, 4):
            torch.manual_seed(scale)
            head32 = UpsampleHead(d, f, c, scale).to(device).eval()
            with torch.no_grad():
                ref = head32(g)
            head = UpsampleHead(d, f, c, scale).to(device).eval()
            head.load_state_dict(head32.state_dict())
            head = head.to(dtype)
            packed = PackedHead.from_weights(head, dtype)
            g_cf = g.to(dtype)
            g_cl = g_cf.contiguous(memory_format=torch.channels_last)
            head_cl = UpsampleHead(d, f, c, scale).to(device).eval().to(dtype).to(memory_format=torch.channels_last)
            head_cl.load_state_dict(head.state_dict())
            features = g_cl.permute(0, 2, 3, 1)  # (B, H, W, D) view, unit channel stride: no copy
            with torch.no_grad():
                cases = {"fused": lambda: fused_head(features, packed),
                         "eager_channels_first": lambda: head(g_cf),
                         "eager_channels_last": lambda: head_cl(g_cl)}
                if not args.no_compile:
                    compiled = torch.compile(head)
                    cases["compiled"] = lambda: compiled(g_cf)
                row = {"dtype": dtype_name, "latent": size, "scale": scale, "D": d, "F": f, "C": c}
                for name, fn in cases.items():
                    row[f"{name}_ms"] = bench(fn, return_mode="median")
                    row[f"{name}_rel_err"] = rel(fn(), ref)
            flops = head_flops(config, size, size, scale)
            row["fused_tflops"] = flops / (row["fused_ms"] * 1e-3) / 1e12
            for name in cases:
                if name != "fused":
                    row[f"speedup_vs_{name}"] = row[f"{name}_ms"] / row["fused_ms"]
            rows.append(row)
            print(f"{dtype_name:9s} x{scale}  fused {row['fused_ms']:.3f} ms ({row['fused_tflops']:.0f} TFLOP/s)  "
                  + "  ".join(f"{n} {row[f'{n}_ms']:.3f} (x{row[f'speedup_vs_{n}']:.2f})" for n in cases if n != "fused")
                  + f"  err {row['fused_rel_err']:.1e} (eager {row['eager_channels_first_rel_err']:.1e})")
        # One trunk conv: 360 -> 360 + residual, channels-last, vs cuDNN.
        conv = torch.nn.Conv2d(d, d, 3, padding=1).to(device, dtype).to(memory_format=torch.channels_last)
        x_cl = torch.randn(1, d, size, size, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
        res = torch.randn_like(x_cl)
        packed = pack_conv(conv.weight.detach(), conv.bias, dtype)
        with torch.no_grad():
            fused = lambda: conv3x3(x_cl.permute(0, 2, 3, 1), packed,  # noqa: E731
                                    residual=res.permute(0, 2, 3, 1))
            cudnn = lambda: conv(x_cl) + res  # noqa: E731
            row = {"dtype": dtype_name, "latent": size, "op": "trunk_conv_residual",
                   "fused_ms": bench(fused, return_mode="median"), "cudnn_ms": bench(cudnn, return_mode="median")}
        row["speedup_vs_cudnn"] = row["cudnn_ms"] / row["fused_ms"]
        row["fused_tflops"] = conv3x3_flops(1, size, size, d, d) / (row["fused_ms"] * 1e-3) / 1e12
        rows.append(row)
        print(f"{dtype_name:9s} trunk conv 360->360 + residual: fused {row['fused_ms']:.3f} ms, "
              f"cuDNN {row['cudnn_ms']:.3f} ms (x{row['speedup_vs_cudnn']:.2f})")
    write_json(args.out, {"benchmark": "heads", "environment": environment(device), "results": rows})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
