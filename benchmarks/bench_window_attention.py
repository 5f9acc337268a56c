"""Time the fused Triton window attention against the eager PyTorch path, its torch.compile,
and a FlexAttention implementation of the same shifted-window attention.

    python benchmarks/bench_window_attention.py --device cuda [--no-compile] [--no-flex]

FlexAttention peer: windows gathered outside (roll + partition to (B*nW, heads, N, head_dim)),
``flex_attention`` compiled, with a score_mod adding the relative-position bias and the -100
shift mask (captured tensors), then merge + roll back. Timed whole ("flex_ms") and the
flex_attention call alone ("flex_core_ms").

Released geometry: D=360, 12 heads (head_dim 30), window 16; latents 64x64 and 128x128;
shift 0 and 8; bf16 and fp32. The eager path is what the released code does per block:
roll + partition + bias/mask expansion + SDPA (float mask) + merge + roll. Timings with
triton.testing.do_bench (median ms). Needs a GPU: the interpreter is not a timing tool.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from common import environment, gpu_or_interpreter_timer, write_json


def eager_path(qkv, height, width, heads, window, shift, table, index, mask):
    b, length, three_d = qkv.shape
    dim, n = three_d // 3, window * window
    x = qkv.view(b, height, width, three_d)
    if shift:
        x = torch.roll(x, (-shift, -shift), (1, 2))
    x = x.view(b, height // window, window, width // window, window, three_d).permute(0, 1, 3, 2, 4, 5)
    x = x.reshape(-1, n, three_d)
    bw = x.shape[0]
    q, k, v = x.view(bw, n, 3, heads, dim // heads).permute(2, 0, 3, 1, 4)
    bias = table[index.view(-1)].view(n, n, heads).permute(2, 0, 1).to(qkv.dtype)
    attn_mask = bias.unsqueeze(0).expand(bw, heads, n, n)
    if shift:
        attn_mask = (bias.unsqueeze(0) + mask.unsqueeze(1)).repeat(b, 1, 1, 1).view(bw, heads, n, n)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
    out = out.transpose(1, 2).reshape(bw, n, dim)
    out = out.view(b, height // window, width // window, window, window, dim).permute(0, 1, 3, 2, 4, 5)
    out = out.reshape(b, height, width, dim)
    if shift:
        out = torch.roll(out, (shift, shift), (1, 2))
    return out.reshape(b, length, dim)


def flex_path(heads, window, shift, table, index, mask):
    """A callable qkv -> out doing the same attention with FlexAttention (see the module doc)."""
    from torch.nn.attention.flex_attention import flex_attention

    n = window * window
    bias = table[index.view(-1)].view(n, n, heads).permute(2, 0, 1).float().contiguous()
    mask_f = mask.float().contiguous() if shift else None
    n_windows = mask.shape[0] if shift else 1

    def score_mod(score, b, h, q_idx, kv_idx):
        score = score + bias[h, q_idx, kv_idx]
        if mask_f is not None:
            score = score + mask_f[b % n_windows, q_idx, kv_idx]
        return score

    flex = torch.compile(flex_attention, dynamic=False)

    def windows_of(qkv, height, width):
        b, length, three_d = qkv.shape
        dim = three_d // 3
        x = qkv.view(b, height, width, three_d)
        if shift:
            x = torch.roll(x, (-shift, -shift), (1, 2))
        x = x.view(b, height // window, window, width // window, window, three_d).permute(0, 1, 3, 2, 4, 5)
        x = x.reshape(-1, n, 3, heads, dim // heads).permute(2, 0, 3, 1, 4)
        return x[0], x[1], x[2]

    def merge(out, b, height, width):
        dim = out.shape[1] * out.shape[3]
        out = out.transpose(1, 2).reshape(b, height // window, width // window, window, window, dim)
        out = out.permute(0, 1, 3, 2, 4, 5).reshape(b, height, width, dim)
        if shift:
            out = torch.roll(out, (shift, shift), (1, 2))
        return out.reshape(b, height * width, dim)

    def run(qkv, height, width, core_only=False, qkv_windows=None):
        q, k, v = qkv_windows or windows_of(qkv, height, width)
        out = flex(q, k, v, score_mod=score_mod, scale=(q.shape[-1]) ** -0.5)
        return out if core_only else merge(out, qkv.shape[0], height, width)

    run.windows_of = windows_of
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--dtypes", nargs="+", default=["bfloat16", "float32"])
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile baseline")
    parser.add_argument("--no-flex", action="store_true", help="skip the FlexAttention peer")
    parser.add_argument("--out", default="benchmarks/results/window_attention.json")
    args = parser.parse_args()
    device = torch.device(args.device)
    bench = gpu_or_interpreter_timer(device, "bench_window_attention")
    from lua_fast.precision import set_tf32_switches

    set_tf32_switches(False)  # fp32 rows compare exact modes

    from lua_fast.kernels.window_attention import (attention_flops, bias_dtype, dense_log2_bias, pack_activations,
                                                   packed_window_attention, torch_window_attention, window_attention)
    from lua_fast.reference import windows

    heads, window, dim = 12, 16, 360
    index = windows.relative_position_index(window, device)
    rows = []
    for dtype_name in args.dtypes:
        dtype = getattr(torch, dtype_name)
        for size in args.sizes:
            for shift in (0, window // 2):
                qkv = torch.randn(1, size * size, 3 * dim, device=device, dtype=dtype)
                table = torch.randn((2 * window - 1) ** 2, heads, device=device)
                mask = windows.shift_mask(size, size, window, shift, device=device, dtype=dtype) if shift else None
                # What the triton backend runs: qkv already in the packed layout (its GEMM writes it),
                # the log2-domain bias built once. The plain wrapper adds one packing copy per call.
                packed, bias = pack_activations(qkv, heads), dense_log2_bias(table, window, bias_dtype(dtype))
                fused = lambda: packed_window_attention(packed, bias, size, size, heads=heads,  # noqa
                                                        window=window, shift=shift)
                plain = lambda: window_attention(qkv, size, size, heads=heads, window=window, shift=shift,  # noqa
                                                 bias_table=table)
                eager = lambda: eager_path(qkv, size, size, heads, window, shift, table, index, mask)  # noqa
                ref = torch_window_attention(qkv.float(), size, size, heads=heads, window=window, shift=shift,
                                             bias_table=table)
                err = lambda out: ((out.double() - ref.double()).norm() / ref.double().norm()).item()  # noqa
                row = {"dtype": dtype_name, "latent": size, "shift": shift, "dim": dim, "heads": heads,
                       "window": window, "fused_ms": bench(fused, return_mode="median"),
                       "plain_layout_wrapper_ms": bench(plain, return_mode="median"),
                       "eager_ms": bench(eager, return_mode="median"),
                       "fused_rel_err": err(plain()), "eager_rel_err": err(eager())}
                if not args.no_compile:
                    compiled = torch.compile(eager_path)
                    comp = lambda: compiled(qkv, size, size, heads, window, shift, table, index, mask)  # noqa
                    row["compiled_ms"] = bench(comp, return_mode="median")
                    row["speedup_vs_compiled"] = row["compiled_ms"] / row["fused_ms"]
                if not args.no_flex and device.type == "cuda":
                    flex = flex_path(heads, window, shift, table, index, mask)
                    wins = flex.windows_of(qkv, size, size)
                    row["flex_rel_err"] = err(flex(qkv, size, size))
                    row["flex_ms"] = bench(lambda: flex(qkv, size, size), return_mode="median")
                    row["flex_core_ms"] = bench(lambda: flex(qkv, size, size, True, wins), return_mode="median")
                    row["speedup_vs_flex"] = row["flex_ms"] / row["fused_ms"]
                    row["speedup_vs_flex_core"] = row["flex_core_ms"] / row["fused_ms"]
                row["speedup_vs_eager"] = row["eager_ms"] / row["fused_ms"]
                row["fused_tflops"] = attention_flops(1, size, size, dim, window) / (row["fused_ms"] * 1e-3) / 1e12
                rows.append(row)
                print(f"{dtype_name:9s} {size:4d} shift {shift:2d}  fused {row['fused_ms']:.4f} ms "
                      f"({row['fused_tflops']:.1f} TFLOP/s, plain-layout wrapper {row['plain_layout_wrapper_ms']:.4f})  "
                      f"eager {row['eager_ms']:.4f} (x{row['speedup_vs_eager']:.1f})  "
                      + (f"compiled {row['compiled_ms']:.4f} (x{row['speedup_vs_compiled']:.1f})  "
                         if "compiled_ms" in row else "")
                      + (f"flex {row['flex_ms']:.4f} (core {row['flex_core_ms']:.4f}, x{row['speedup_vs_flex']:.1f}, "
                         f"err {row['flex_rel_err']:.1e})  " if "flex_ms" in row else "")
                      + f"err {row['fused_rel_err']:.1e} vs eager {row['eager_rel_err']:.1e}", flush=True)
    write_json(args.out, {"benchmark": "window_attention", "environment": environment(device), "results": rows})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
