"""Time whole-model variants end to end, side by side in one process.

    python benchmarks/bench_e2e.py                      # CPU smoke: small config, small latents
    python benchmarks/bench_e2e.py --device cuda --full # released config; issue 6's table

GPU variants (--full): released-style fp32 (the reference with SDPA on the bias as a float
mask, flash disabled, and shift masks rebuilt on the CPU and copied to the device in every
shifted block, as the released code does for sizes other than 32x32), the same under PyTorch's
default TF32 switches (cuDNN convs in TF32, matmuls in IEEE fp32: what the released code gets in
a fresh process; lua_fast's fp32 mode turns TF32 off everywhere), eager bf16 reference,
torch.compile of the bf16 reference, lua_fast "torch" in bf16, lua_fast "triton" in bf16 /
mixed / fp32, each with and without CUDA graphs (bf16 also with programmatic dependent launch,
LUA_FAST_PDL=1; fp32 also with its Triton dots as three TF32 products, LUA_FAST_FP32_DOTS=tf32x3),
and the graphed peers: eager bf16 and lua_fast "torch" bf16 under CUDA graphs, torch.compile's
mode="reduce-overhead" (what graphs alone give, without the Triton kernels); cases 128x128 x2,
64x64 x2, 128x128 x4 and 128x128 x2 at batch 4 ("128x2b4"). Reports median ms with spread (CUDA events), TFLOP/s,
peak memory, error against the fp32 reference, and ratios against the first variant, eager
bf16 and compiled bf16. The JSON is rewritten after every case, so a run cut short keeps
what finished. CPU figures are a smoke test, not the product's target.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from unittest import mock
from dataclasses import dataclass

import torch
import torch.nn.functional as F

import lua_fast
from lua_fast import LUAConfig, dispatch
from lua_fast.flops import forward_flops
from lua_fast.precision import set_tf32_switches, tf32_switches
from lua_fast.reference import LUA, windows
from lua_fast.reference import model as reference_model

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
    pdl: bool = False  # LUA_FAST_PDL=1: programmatic dependent launch of the Triton kernels (sm_90+)
    fp32_dots: str = "ieee"  # LUA_FAST_FP32_DOTS: the Triton kernels' fp32 dots, IEEE or tf32x3
    fused_mlp: bool = False  # LUA_FAST_FUSED_MLP=1: each Swin block's MLP as one launch
    fused_attn: bool = False  # LUA_FAST_FUSED_ATTN_PROJ=1: attention + proj + residual as one launch
    pytorch_switches: bool = False  # PyTorch's default TF32 switches instead of the fp32 mode's IEEE ones
    triton_gemms: str = ""  # LUA_FAST_TRITON_GEMMS (read when the model loads): "" the default, "0" cuBLAS

    def env(self) -> dict:
        return {"LUA_FAST_PDL": "1" if self.pdl else "0", "LUA_FAST_FP32_DOTS": self.fp32_dots,
                "LUA_FAST_FUSED_MLP": "1" if self.fused_mlp else "0",
                "LUA_FAST_FUSED_ATTN_PROJ": "1" if self.fused_attn else "0",
                "LUA_FAST_TRITON_GEMMS": self.triton_gemms}


# Issue 13's rows first, then the diagnostic rows, most telling first: a run cut short (the GPU time
# is short) keeps the acceptance table. torch.compile's reduce-overhead row last: a compile each.
GPU_VARIANTS = [
    Variant("released fp32", "reference", "fp32", released_masks=True),
    Variant("released fp32, TF32 convs", "reference", "fp32", released_masks=True, pytorch_switches=True),
    Variant("eager bf16", "reference", "bf16"),
    Variant("torch bf16", "torch", "bf16"),
    Variant("triton bf16", "triton", "bf16"),
    Variant("triton bf16 + graphs", "triton", "bf16", cuda_graph=True),
    Variant("triton mixed", "triton", "mixed"),
    Variant("triton mixed + graphs", "triton", "mixed", cuda_graph=True),
    Variant("triton fp32", "triton", "fp32"),
    Variant("triton fp32 + graphs", "triton", "fp32", cuda_graph=True),
    Variant("compiled bf16", "reference", "bf16", compile=True),
    # -- diagnostics: each decides a default or tests a prediction (benchmarks/NOTES.md)
    Variant("triton fp32 tf32x3", "triton", "fp32", fp32_dots="tf32x3"),
    # The trunk's qkv, proj and fc2 on cuBLAS (LayerNorms and residual adds in add_layer_norm launches:
    # 7 launches a block, not 5): the alternative the first GPU session left unmeasured in bf16.
    Variant("triton bf16 + graphs, cuBLAS GEMMs", "triton", "bf16", cuda_graph=True, triton_gemms="0"),
    Variant("triton bf16 + graphs + fused MLP", "triton", "bf16", cuda_graph=True, fused_mlp=True),
    Variant("triton bf16 + graphs + 3 launches/block", "triton", "bf16", cuda_graph=True, fused_mlp=True,
            fused_attn=True),
    Variant("triton bf16 + graphs + PDL", "triton", "bf16", cuda_graph=True, pdl=True),
    # What CUDA graphs alone give, without lua_fast's kernels: the peers of "triton bf16 + graphs" (the
    # graphed rows above are measured against eager rows, which pay ~20 us of host time per PyTorch op).
    Variant("eager bf16 + graphs", "reference", "bf16", cuda_graph=True),
    Variant("torch bf16 + graphs", "torch", "bf16", cuda_graph=True),
    Variant("triton bf16 + graphs + fused attn-proj", "triton", "bf16", cuda_graph=True, fused_attn=True),
    Variant("triton bf16 + graphs + PDL + 3 launches/block", "triton", "bf16", cuda_graph=True, pdl=True,
            fused_mlp=True, fused_attn=True),
    Variant("triton bf16 + PDL", "triton", "bf16", pdl=True),
    Variant("triton bf16 + 3 launches/block", "triton", "bf16", fused_mlp=True, fused_attn=True),
    # torch.compile's own graphs: mode="reduce-overhead" (CUDA graph trees).
    Variant("compiled bf16 + graphs", "reference", "bf16", compile=True, cuda_graph=True),
]
CPU_VARIANTS = [Variant("reference fp32", "reference", "fp32"), Variant("torch fp32", "torch", "fp32"),
                Variant("reference bf16", "reference", "bf16"), Variant("torch bf16", "torch", "bf16")]


def _released_attention(self, x, mask):
    """The released WindowAttention: SDPA with bias (+ shift mask) as one float attn_mask."""
    bw, n, dim = x.shape
    qkv = self.qkv(x).view(bw, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    attn_mask = self.relative_position_bias().unsqueeze(0).to(x.dtype)
    if mask is not None:
        n_windows = mask.shape[0]
        attn_mask = (attn_mask.unsqueeze(1) + mask[None, :, None]).expand(bw // n_windows, -1, -1, -1, -1)
        attn_mask = attn_mask.reshape(bw, self.num_heads, n, n)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=self.scale)
    return self.proj(out.transpose(1, 2).reshape(bw, n, dim))


# The TF32 switches a fresh process starts with (nothing here has set them yet): cuDNN convs may use
# TF32 (PyTorch's default), fp32 matmuls may not. The released code sets none, so it runs under these.
PYTORCH_DEFAULT_SWITCHES = tf32_switches()


@contextlib.contextmanager
def pytorch_default_switches():
    """Run a forward under PyTorch's default TF32 switches, with the fp32 mode's switch-off (IEEE
    GEMMs and convs, for its 1e-5 bound) bypassed: the released code's conditions on a GPU."""
    saved = tf32_switches()
    set_tf32_switches(PYTORCH_DEFAULT_SWITCHES)
    try:
        with mock.patch.object(dispatch, "backend_flags", lambda precision, device: contextlib.nullcontext()):
            yield
    finally:
        set_tf32_switches(saved)


class MaskClock:
    """Host time the released path spends on its shift masks: building each on the CPU, then
    copying it to the device (a pageable copy: it also waits for the device's queue to reach it)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.masks, self.build_s, self.copy_s = 0, 0.0, 0.0

    def __call__(self, h, w, ws, shift, *, device, dtype, cache=None):  # (the released code caches none)
        start = time.perf_counter()
        mask = released_mask(h, w, ws, shift, "cpu", dtype)
        built = time.perf_counter()
        mask = mask.to(device)
        self.masks, self.build_s, self.copy_s = (self.masks + 1, self.build_s + built - start,
                                                 self.copy_s + time.perf_counter() - built)
        return mask

    def per_forward(self, forwards: int) -> dict:
        return {"masks": self.masks / forwards, "build_ms": self.build_s * 1e3 / forwards,
                "copy_ms": self.copy_s * 1e3 / forwards}


@contextlib.contextmanager
def released_code_path(clock: MaskClock | None = None):
    """Run the reference as the released code does: each shift mask rebuilt on the CPU and copied
    over per block call (timed by ``clock``), attention through SDPA with a float mask and flash
    disabled."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    real_mask, real_forward = windows.shift_mask, reference_model.WindowAttention.forward
    windows.shift_mask = clock or MaskClock()
    reference_model.WindowAttention.forward = _released_attention
    try:
        with sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]):
            yield
    finally:
        windows.shift_mask, reference_model.WindowAttention.forward = real_mask, real_forward


def record_switches_once(module) -> list:
    """A list that receives the TF32 switches in force when ``module``'s forward first runs (inside
    the backend's own switch context), then stops listening (no cost in the timed calls)."""
    seen = []

    def record(_module, _args):
        seen.append(tf32_switches())
        handle.remove()

    handle = module.register_forward_pre_hook(record)
    return seen


def largest_allocations(snapshot: dict, top: int = 5) -> list[dict]:
    """The largest live-at-some-point blocks of a CUDA memory snapshot, with their Python frames."""
    allocs = []
    for trace in snapshot.get("device_traces", []):
        for event in trace:
            if event.get("action") == "alloc":
                frames = [f"{f['filename'].rsplit('/', 1)[-1]}:{f['line']} {f['name']}"
                          for f in event.get("frames", []) if f["filename"].endswith(".py")][:6]
                allocs.append({"mib": event["size"] / 2**20, "frames": frames})
    return sorted(allocs, key=lambda a: -a["mib"])[:top]


def run_variant(variant, state_dict, x, scale, device, repeat, trace_memory=False):
    """(output of the first call, timing, peak MiB, seconds of the first call).

    Peak memory: the most allocated during the timed calls, over what was allocated once the
    model was loaded (weights excluded, CUDA-graph pools and cached masks included). The
    allocator's cache is emptied first, so its peak reserved memory is this row's own."""
    free_device_memory(device)
    with mock.patch.dict(os.environ, variant.env()):  # (switches read when the model loads)
        up = lua_fast.load(state_dict, device=device, backend=variant.backend, precision=variant.precision)
    if variant.compile:  # with graphs: torch.compile's own (CUDA graph trees), whose outputs a later
        # replay overwrites, hence the clone (lua_fast's graphs clone their outputs too); each call
        # marked as a new step, as the trees ask of inference loops
        model = torch.compile(up.model, mode="reduce-overhead" if variant.cuda_graph else None)

        def call():
            if variant.cuda_graph:
                torch.compiler.cudagraph_mark_step_begin()
                return model(x.to(up.dtype), (scale,))[scale].clone()
            return model(x.to(up.dtype), (scale,))[scale]
    else:
        call = lambda: up.upscale(x, scale=scale, check_finite=False, cuda_graph=variant.cuda_graph)  # noqa: E731
    clock = MaskClock()
    ctx = released_code_path(clock) if variant.released_masks else contextlib.nullcontext()
    switches = pytorch_default_switches() if variant.pytorch_switches else contextlib.nullcontext()
    seen = record_switches_once(up.reference_model) if variant.backend == "reference" and not variant.compile else []
    with ctx, switches, mock.patch.dict(os.environ, variant.env()), torch.inference_mode():
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            loaded = torch.cuda.memory_allocated(device)
        start = time.perf_counter()
        out = call()  # first call: compile / capture / autotune outside the timing
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        first_s = time.perf_counter() - start
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        clock.reset()
        timing = time_call(call, device, warmup=2, repeat=repeat, budget_ms=3000)
        if variant.released_masks:  # per forward, over the warm-up and timed calls
            timing["released_masks_per_forward"] = clock.per_forward(2 + timing["repeat"])
        peak = (torch.cuda.max_memory_allocated(device) - loaded) / 2**20 if device.type == "cuda" else None
        if device.type == "cuda":  # what the allocator held from the driver (cached blocks, workspaces):
            # what other processes on the GPU lose while this one runs
            timing["peak_reserved_mib"] = torch.cuda.max_memory_reserved(device) / 2**20
        if trace_memory and device.type == "cuda":  # one more call with the allocator's history on
            try:  # (private allocator API: a failure is recorded, not fatal to the table)
                torch.cuda.memory._record_memory_history(max_entries=200000)
                call()
                torch.cuda.synchronize(device)
                timing["largest_allocations"] = largest_allocations(torch.cuda.memory._snapshot())
                torch.cuda.memory._record_memory_history(enabled=None)
            except Exception as exc:  # noqa: BLE001
                timing["largest_allocations"] = f"{type(exc).__name__}: {exc}"
    if seen:
        timing["tf32_switches_in_forward"] = {"matmul": seen[0][0], "cudnn_conv": seen[0][1]}
    up = model = call = None  # free the model before the next variant loads
    if variant.compile:  # and the compiled graph, with its CUDA graph trees' memory pool
        torch._dynamo.reset()
    return out, timing, peak, first_s


def failed_row(case: str, variant: Variant, exc: Exception, device: torch.device) -> dict:
    """A row that failed (e.g. the released-style fp32 path's ~132 GB peak at 128x128 on an 80 GB
    H100), recorded with its error instead of ending the table."""
    row = {"case": case, "variant": variant.label, "backend": variant.backend, "precision": variant.precision,
           "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"}
    if device.type == "cuda":
        row["device_memory_gib"] = round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1)
    return row


def free_device_memory(device: torch.device) -> None:
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def parse_case(case: str) -> tuple[int, int, int]:
    """'128x2' -> (size 128, scale 2, batch 1); '128x2b4' -> batch 4."""
    size_scale, _, batch = case.partition("b")
    size, scale = (int(v) for v in size_scale.split("x"))
    return size, scale, int(batch or 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--full", action="store_true", help="released config (default: the small config)")
    parser.add_argument("--cases", nargs="+", default=None, help="SIZExSCALE[bBATCH], e.g. 64x2 128x4 128x2b4")
    parser.add_argument("--variants", nargs="+", default=None, help="labels to run (default: all for the device)")
    parser.add_argument("--compile-cases", nargs="*", default=None,
                        help="cases that run the torch.compile variant (default: all); it costs a compile each")
    parser.add_argument("--repeat", type=int, default=30, help="at most this many timed calls (and at most ~3 s)")
    parser.add_argument("--trace-memory", nargs="*", default=[],
                        help="variant labels whose largest CUDA allocations (with Python frames) go in the JSON")
    parser.add_argument("--out", default="benchmarks/results/e2e.json")
    args = parser.parse_args()

    device = torch.device(args.device)
    config = LUAConfig.flux() if args.full else LUAConfig.small()
    cases = args.cases or (["128x2", "64x2", "128x4", "128x2b4"] if device.type == "cuda" else ["16x2", "32x2"])
    variants = GPU_VARIANTS if device.type == "cuda" else CPU_VARIANTS
    if args.variants:
        unknown = set(args.variants) - {v.label for v in variants}
        if unknown:  # (a mistyped label would silently drop a row of a GPU run)
            parser.error(f"unknown variants {sorted(unknown)}; known: {[v.label for v in variants]}")
        variants = [v for v in variants if v.label in args.variants]
    torch.manual_seed(0)
    state_dict = LUA(config).state_dict()
    rows = []
    for case in cases:
        size, scale, batch = parse_case(case)
        case_variants = [v for v in variants
                         if not v.compile or args.compile_cases is None or case in args.compile_cases]
        x = torch.randn(batch, config.in_channels, size, size, device=device)
        flops = forward_flops(config, size, size, (scale,)) * batch
        ref = lua_fast.load(state_dict, device=device, backend="reference", precision="fp32").upscale(x, scale=scale)
        results, outputs, case_rows = {}, {}, []
        for variant in case_variants:
            failure = None
            try:
                out, timing, peak, first_s = run_variant(variant, state_dict, x, scale, device, args.repeat,
                                                         trace_memory=variant.label in args.trace_memory)
            except Exception as exc:  # noqa: BLE001 (one row's failure must not cost the table its other rows)
                failure = failed_row(case, variant, exc, device)
            if failure is not None:  # (past the except block: its traceback no longer holds the row's tensors)
                free_device_memory(device)
                case_rows.append(failure)
                print(f"{case:8s} {variant.label:24s} FAILED: {failure['error']}", flush=True)
                write_json(args.out, {"benchmark": "e2e", "config": config.to_dict(),
                                      "environment": environment(device), "results": rows + case_rows})
                continue
            err = ((out.double() - ref.double()).norm() / ref.double().norm()).item()
            results[variant.label] = timing["median_ms"]
            outputs[variant.label] = out
            plain = variant.label.replace(" + PDL", "")
            if variant.pdl and plain in outputs:  # PDL reorders nothing: a race would show as a difference
                timing["equal_to_without_pdl"] = bool(torch.equal(out, outputs[plain]))
            case_rows.append({"case": case, "variant": variant.label, "backend": variant.backend,
                              "precision": variant.precision, "compile": variant.compile,
                              "cuda_graph": variant.cuda_graph, "latent": [batch, config.in_channels, size, size],
                              "scale": scale, **timing, "first_call_s": first_s, "gflop": flops / 1e9,
                              "tflops_per_s": flops / (timing["median_ms"] * 1e-3) / 1e12,
                              "peak_mib": peak, "rel_err_vs_fp32_reference": err})
            r = case_rows[-1]
            host = f"host {r['host_median_ms']:8.3f} ms  " if "host_median_ms" in r else ""
            print(f"{case:8s} {r['variant']:24s} {r['median_ms']:9.3f} ms [{r['p20_ms']:.3f}-{r['p80_ms']:.3f}] {host}"
                  f"{r['tflops_per_s']:6.2f} TFLOP/s  err {err:.1e}  "
                  + (f"peak {peak:7.0f} MiB  " if peak is not None else "") + f"first {first_s:.1f} s"
                  + (f"  equal to without PDL: {timing.get('equal_to_without_pdl', '-')}" if variant.pdl else ""),
                  flush=True)
            first = case_variants[0].label
            for row in case_rows:  # ratios so far: the file is rewritten after every variant
                for label in (first, "eager bf16", "compiled bf16"):
                    if label in results and "median_ms" in row:
                        row[f"speedup_vs_{label.replace(' ', '_')}"] = results[label] / row["median_ms"]
            write_json(args.out, {"benchmark": "e2e", "config": config.to_dict(), "environment": environment(device),
                                  "results": rows + case_rows})
        rows += case_rows
        print(f"wrote {args.out} ({case})", flush=True)
    print(table(rows))


def table(rows) -> str:
    """Markdown: one line per case x variant, ratios side by side."""
    lines = ["| case | variant | median ms | p20-p80 | host ms | vs released fp32 | vs eager bf16 | "
             "vs compiled bf16 | peak MiB | err vs fp32 ref |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['case']} | {r['variant']} | failed: {r['error']} | | | | | | | |")
            continue
        ratio = lambda key: f"{r[key]:.2f}x" if key in r else "-"  # noqa: E731
        peak = f"{r['peak_mib']:.0f}" if r["peak_mib"] is not None else "-"
        host = f"{r['host_median_ms']:.3f}" if "host_median_ms" in r else "-"
        lines.append(f"| {r['case']} | {r['variant']} | {r['median_ms']:.3f} | {r['p20_ms']:.3f}-{r['p80_ms']:.3f} | "
                     f"{host} | "
                     f"{ratio('speedup_vs_released_fp32')} | {ratio('speedup_vs_eager_bf16')} | "
                     f"{ratio('speedup_vs_compiled_bf16')} | {peak} | {r['rel_err_vs_fp32_reference']:.1e} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
