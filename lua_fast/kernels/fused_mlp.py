"""A Swin block's whole MLP as one Triton launch: ``t + fc2(GELU(fc1(LN2(t))))``.

The triton backend otherwise runs it as two ``fused_linear`` launches (LN2 + fc1 + GELU, then
fc2 + residual) with the (M, 720) hidden activations stored and read back in between. Measured on
an H200 (issue 13) a launch costs ~20 us at a 64x64 latent whatever its work, and the MLP is 2 of a
block's 5 launches; this kernel is the flash-attention pattern applied to the MLP:

- a program owns BLOCK_M rows of the residual stream for the whole MLP and reads their LayerNorm
  statistics once (the streamed path of ``fused_linear``: rows centred as they load, or centred
  after the GEMM through the column sums). The rows are re-streamed from L1/L2 for each hidden
  chunk: holding them normalised in registers (as ``fused_linear``'s ``A_RESIDENT``) left no
  registers for the fc2 accumulator (40-64 B of spills and 240 KiB of shared memory on sm_90a, and
  a higher issue bound: 41 against 26 us);
- it walks the hidden dimension BLOCK_H columns at a time: ``h = GELU(LN(x) @ W1[:, chunk] + b1)``
  in fp32, rounded to the GEMM dtype exactly where the two-launch path stores it, and at once
  ``acc += h @ W2[chunk, :]`` (the h tile is the second dot's register operand, like P in P @ V);
- the fc2 accumulator covers all D output columns, as two tiles of O0 + O1 columns
  (360 -> 256 + 128: ``resident_split``); the epilogue adds b2 and the residual (the input rows
  themselves) and stores once (and, with ``also_in``, the same values in a second dtype).

So the hidden activations never exist in memory, and a block takes four launches. The cost is
registers: the fc2 accumulator is BLOCK_M x (O0 + O1) fp32 (96 a thread at 64 rows, 8 warps), so
programs own 64 rows (or 32, for twice the programs on small latents) and wide models (D > 512)
are refused (:func:`mlp_reason`; the backend keeps the two launches there). With fp32 operands
(IEEE or tf32x3 dots) the kernel is exact but spills 584-808 B a thread on sm_90a, so the triton
backend uses it in bf16, fp16 and mixed only. Off by default (``LUA_FAST_FUSED_MLP=1``) until a
GPU has timed it against the two launches; the kernel report compiles it for sm_90a either way.

Weights come from ``pack_linear``: fc1 with the LayerNorm folded in (K-major, N padded to 128,
zero bias and column sums past the hidden width, so padded hidden columns are GELU(0) = 0), fc2
plain (K + 128 zero rows, so hidden chunks past 720 read zeros). ``torch_fused_mlp`` is the same
computation in PyTorch (fallback and test oracle).
"""

from __future__ import annotations


import torch

from .. import env
from .conv3x3 import alignment
from .fused_linear import K_PAD_ROWS, Outputs, PackedLinear, check_args, resident_split, torch_fused_linear
from .triton_support import (INTERPRET, autotuned, cdiv, dot_precision, dot_upcast, fp32_operands, grid_dependency_sync,
                             kernel_op, launcher, next_pow2, pdl_options, size_class, tl, triton, tuned,
                             unavailable_reason)

FUSED_MLP_ENV = "LUA_FAST_FUSED_MLP"
MAX_DIM = 512  # widest residual stream the fc2 accumulator holds (two tiles, O0 + O1 <= 512)


def fused_mlp_enabled() -> bool:
    """``LUA_FAST_FUSED_MLP=1``: the triton backend runs each block's MLP as one launch."""
    return env.flag(FUSED_MLP_ENV, False)


def mlp_reason(fc1: PackedLinear, fc2: PackedLinear) -> str | None:
    """None if ``fused_mlp`` takes these packed layers, else why not."""
    if fc1.ln_eps is None:
        return "fc1 must be packed with its LayerNorm folded in (pack_linear(..., layer_norm=))"
    if fc2.ln_eps is not None:
        return "fc2 must be packed without a LayerNorm"
    if fc2.k != fc1.n or fc2.n != fc1.k:
        return f"shapes do not chain: fc1 {fc1.k}->{fc1.n}, fc2 {fc2.k}->{fc2.n} (want D->H, H->D)"
    if fc1.k > MAX_DIM:
        return f"D = {fc1.k} > {MAX_DIM}: the fc2 accumulator would not fit in registers"
    if fc2.bias is None or fc1.bias is None:
        return "fc1 and fc2 need biases (as the reference's Mlp has)"
    return None


def torch_fused_mlp(x, w1, b1, w2, b2, *, layer_norm, out_dtype=None):
    """The PyTorch composition: the two-launch path's numerics (hidden rounded to x's dtype)."""
    h = torch_fused_linear(x, w1, b1, layer_norm=layer_norm, gelu=True)
    return torch_fused_linear(h, w2, b2, residual=x, out_dtype=out_dtype)


# ------------------------------------------------------------------- the kernel
if triton is not None:
    from .fused_linear import _bias_act, _linear_epilogue, _row_stats, _streamed_tile

    @triton.jit
    def _mlp_kernel(
        x_ptr, w1_ptr, b1_ptr, cs1_ptr, w2_ptr, b2_ptr, out_ptr, low_ptr,
        M, stride_xm, stride_om, eps, size_key,
        D: tl.constexpr, HIDDEN: tl.constexpr, W1_STRIDE: tl.constexpr, W2_STRIDE: tl.constexpr,
        X_ALIGN: tl.constexpr, O_ALIGN: tl.constexpr, CENTER: tl.constexpr, HAS_LOW: tl.constexpr,
        O0: tl.constexpr, O1: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr,
        STATIC_K: tl.constexpr,
        INPUT_PRECISION: tl.constexpr, DOT_UPCAST: tl.constexpr, PDL: tl.constexpr,
    ):
        grid_dependency_sync(PDL)
        H_BLOCKS: tl.constexpr = (HIDDEN + BLOCK_H - 1) // BLOCK_H
        rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        m_ok = rows < M
        rows_c = tl.minimum(rows, M - 1)  # loads need no row mask; the extra rows are not stored
        x_rows = x_ptr + tl.multiple_of(rows_c.to(tl.int64) * stride_xm, X_ALIGN)
        mean, rstd = _row_stats(x_rows, eps, D, BLOCK_M, BLOCK_K)
        acc0 = tl.zeros([BLOCK_M, O0], tl.float32)
        acc1 = tl.zeros([BLOCK_M, O1 if O1 > 0 else 16], tl.float32)
        offs_o0 = tl.arange(0, O0)
        offs_o1 = O0 + tl.arange(0, O1 if O1 > 0 else 16)
        for hb in range(H_BLOCKS):
            offs_h = hb * BLOCK_H + tl.arange(0, BLOCK_H)  # < W1's padded width and W2's K + pad rows
            h = _streamed_tile(x_rows, w1_ptr, cs1_ptr, offs_h, mean, rstd, D, W1_STRIDE, True, CENTER,
                               BLOCK_M, BLOCK_H, BLOCK_K, INPUT_PRECISION, DOT_UPCAST, STATIC_K)
            # The hidden tile in the GEMM dtype: where the two-launch path rounds it for its store.
            h = _bias_act(h, b1_ptr, offs_h, True, True).to(w2_ptr.dtype.element_ty)
            w2a = tl.load(w2_ptr + offs_h[:, None] * W2_STRIDE + offs_o0[None, :])
            if DOT_UPCAST:
                acc0 = tl.dot(h.to(tl.float32), w2a.to(tl.float32), acc0, input_precision="ieee")
            else:
                acc0 = tl.dot(h, w2a, acc0, input_precision=INPUT_PRECISION)
            if O1 > 0:
                w2b = tl.load(w2_ptr + offs_h[:, None] * W2_STRIDE + offs_o1[None, :])
                if DOT_UPCAST:
                    acc1 = tl.dot(h.to(tl.float32), w2b.to(tl.float32), acc1, input_precision="ieee")
                else:
                    acc1 = tl.dot(h, w2b, acc1, input_precision=INPUT_PRECISION)
        # + b2 + the residual (the input rows themselves), stored once per output tile.
        _linear_epilogue(acc0, 0.0, b2_ptr, x_ptr, out_ptr, low_ptr, rows_c, m_ok, offs_o0, stride_xm, stride_om,
                         D, X_ALIGN, O_ALIGN, True, False, True, False, HAS_LOW, O0)
        if O1 > 0:
            _linear_epilogue(acc1, 0.0, b2_ptr, x_ptr, out_ptr, low_ptr, rows_c, m_ok, offs_o1, stride_xm,
                             stride_om, D, X_ALIGN, O_ALIGN, True, False, True, False, HAS_LOW, O1)

    # BLOCK_M = 64: the fc2 accumulator (64 x (O0 + O1) fp32) is 96 registers a thread with 8 warps
    # (sm_90a, Triton 3.6 / 3.9, x2 128x128 bf16: 213-255 registers, 0 spills, wgmma; 128-column
    # hidden chunks have the lowest issue bound, 26.2-26.8 us, against 35-36 us for 32 columns).
    # BLOCK_M = 32 (mma.sync: wgmma needs 64 rows) gives twice the programs: at a 64x64 latent 128
    # instead of 64 for 132 SMs, wave bound 10.9 against 13.8 us; 174 registers, 0 spills (with 4
    # warps, or 128-column chunks, it spills 40-160 B: not offered).
    # STATIC_K unrolls the fc1 K loop in the IR so the hidden loop is the innermost and pipelined:
    # W2's tiles then come by cp.async too (the others load them with plain LDG, their latency
    # exposed once per chunk). 32 rows: 10.2 us of wave bound at 64x64 (142 registers, 124 KiB of
    # shared memory); with 64 rows it costs 1.8x the instructions (47.6-54.6 us at 128x128): not offered.
    _CONFIGS = [
        triton.Config({"BLOCK_M": 64, "BLOCK_H": bh, "BLOCK_K": bk, "STATIC_K": 0}, num_warps=w, num_stages=s)
        for bh, bk, w, s in [(128, 64, 8, 2), (64, 64, 8, 3), (64, 128, 8, 2), (32, 64, 8, 3), (64, 64, 4, 3)]
    ] + [
        triton.Config({"BLOCK_M": 32, "BLOCK_H": 64, "BLOCK_K": 64, "STATIC_K": k}, num_warps=8, num_stages=s)
        for k, s in [(0, 3), (1, 2)]
    ]

    def _prune(configs, named_args, **kwargs):
        wide = kwargs["O0"] + kwargs["O1"] > 128  # 4 warps hold 64 x 128 fp32 at most
        kept = [c for c in configs if kwargs["W1_STRIDE"] % c.kwargs["BLOCK_H"] == 0
                and not (wide and c.num_warps < 8)]
        if fp32_operands(kwargs):  # fp32 operands: 4-byte tiles in shared memory
            kept = [c for c in kept if c.kwargs["BLOCK_H"] * c.kwargs["BLOCK_K"] <= 64 * 64] or kept
        return tuned(kept)

    _mlp_tuned = autotuned(_mlp_kernel, _CONFIGS, _prune,
                              ["D", "HIDDEN", "W1_STRIDE", "W2_STRIDE", "X_ALIGN", "O_ALIGN", "CENTER"])


INTERPRET_CONFIG = {"BLOCK_M": 32, "BLOCK_H": 32, "BLOCK_K": 32, "STATIC_K": 0}  # interpreter runs (tests vary it)


def _launch(x, w1, b1, cs1, w2, b2, ln_eps, hidden, out_dtype, input_precision, low_dtype=None):
    m, d = x.shape
    outs = Outputs(m, d, x.device, out_dtype, low_dtype)
    args = (x, w1, b1, cs1, w2, b2, outs.dst, outs.low_dst if outs.has_low else outs.dst,
            m, x.stride(0), outs.dst.stride(0), float(ln_eps), size_class(m))
    o0, o1 = resident_split(d)  # the fc2 accumulator's two tiles: 360 -> 256 + 128 columns
    meta = dict(D=d, HIDDEN=hidden, W1_STRIDE=w1.shape[1], W2_STRIDE=w2.shape[1], X_ALIGN=alignment(x),
                O_ALIGN=alignment(outs.dst), CENTER=x.dtype != w1.dtype or x.dtype == torch.float32,
                HAS_LOW=low_dtype is not None, O0=o0, O1=o1,
                INPUT_PRECISION=input_precision or dot_precision(w1.dtype), DOT_UPCAST=dot_upcast(w1.dtype))
    if INTERPRET:
        meta_i = dict(INTERPRET_CONFIG, BLOCK_K=min(INTERPRET_CONFIG["BLOCK_K"], max(16, next_pow2(d))))
        launcher(_mlp_kernel)[(cdiv(m, meta_i["BLOCK_M"]),)](*args, **meta_i, **meta, PDL=False)
    else:
        launcher(_mlp_tuned)[lambda c: (cdiv(m, c["BLOCK_M"]),)](*args, **meta, **pdl_options(x.device))
    return outs.done()


def _fused_mlp_fake(x, w1, b1, cs1, w2, b2, ln_eps, hidden, out_dtype, input_precision, low_dtype):
    low_shape = tuple(x.shape) if low_dtype is not None else (0, x.shape[1])
    return x.new_empty(tuple(x.shape), dtype=out_dtype), x.new_empty(low_shape, dtype=low_dtype or out_dtype)


@kernel_op("fused_mlp", _fused_mlp_fake)
def _fused_mlp_op(x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, cs1: torch.Tensor, w2: torch.Tensor,
                  b2: torch.Tensor, ln_eps: float, hidden: int, out_dtype: torch.dtype, input_precision: str | None,
                  low_dtype: torch.dtype | None) -> tuple[torch.Tensor, torch.Tensor]:
    return _launch(x, w1, b1, cs1, w2, b2, ln_eps, hidden, out_dtype, input_precision, low_dtype)


def check_mlp(x: torch.Tensor, fc1: PackedLinear, fc2: PackedLinear) -> None:
    reason = mlp_reason(fc1, fc2)
    if reason:
        raise ValueError(f"fused_mlp: {reason}")
    check_args(x, fc1, None)
    if fc1.weight.dtype != fc2.weight.dtype:
        raise ValueError(f"fused_mlp: fc1 and fc2 packed in different dtypes ({fc1.weight.dtype}, "
                         f"{fc2.weight.dtype})")
    if fc2.weight.shape[0] < cdiv(fc1.n, 128) * 128 or fc2.weight.shape[0] != fc2.k + K_PAD_ROWS:
        raise ValueError("fused_mlp: fc2 is not packed by pack_linear (K + 128 zero rows)")


def fused_mlp(x, fc1: PackedLinear, fc2: PackedLinear, *, out_dtype=None, input_precision=None, also_in=None,
              check=True):
    """``x + fc2(GELU(fc1(LN(x))))`` in one launch (see the module docstring).

    x: (M, D) residual stream rows (unit column stride; fp32 statistics whatever its dtype);
    ``fc1`` packed with the LayerNorm folded in, ``fc2`` plain, both in the GEMM dtype.
    Returns (M, D) in ``out_dtype`` (default x's dtype); with ``also_in=dtype`` returns
    ``(out, the same values in dtype)`` from the same launch. ``check=False`` skips validation."""
    if check:
        check_mlp(x, fc1, fc2)
        reason = unavailable_reason(x.device)
        if reason:
            raise RuntimeError(f"fused_mlp: Triton kernel cannot run: {reason}")
    out, low = _fused_mlp_op(x, fc1.weight, fc1.bias, fc1.colsum, fc2.weight, fc2.bias, fc1.ln_eps, fc1.n,
                             out_dtype or x.dtype, input_precision, also_in)
    return (out, low) if also_in is not None else out


# ------------------------------------------------- static description (kernel report)
def launch_site(args: dict, meta: dict) -> str:
    return f"LN+MLP {meta['D']}->{meta['HIDDEN']}->{meta['D']}+GELU+residual"


def launch_flops(args: dict, meta: dict) -> int:
    return 4 * args["M"] * meta["D"] * meta["HIDDEN"]


def launch_l2_bytes(args: dict, meta: dict) -> int:
    """Bytes the launch's programs load (from L2 at best) and store under its config (``meta``):
    each program reads its rows for the LayerNorm statistics, once per hidden chunk (streamed fc1
    operand) and once for the residual, and **all of both weights** (fc1's K rows x padded hidden
    columns, fc2's hidden rows x O0 + O1 columns); the output once (and its second copy). The
    weights are what grows: they are re-read by every BLOCK_M rows, where the two-launch path
    re-reads fc1's per 128 rows and fc2's per 128-256 rows (``fused_linear.launch_l2_bytes``)."""
    m, d, e_x = args["M"], meta["D"], args["x_ptr"].element_size()
    programs, chunks = cdiv(m, meta["BLOCK_M"]), cdiv(meta["HIDDEN"], meta["BLOCK_H"])
    hidden = chunks * meta["BLOCK_H"]
    e_w = args["w1_ptr"].element_size()
    weights = programs * hidden * (cdiv(d, meta["BLOCK_K"]) * meta["BLOCK_K"] + meta["O0"] + meta["O1"]) * e_w
    rows = m * d * e_x * (chunks + 2)
    out = m * d * (args["out_ptr"].element_size() + (args["low_ptr"].element_size() if meta["HAS_LOW"] else 0))
    return weights + rows + out


def main_loop_trips(meta: dict) -> int:
    return -(-meta["HIDDEN"] // meta["BLOCK_H"])


def loop_trips(meta: dict, body: list[str]) -> int:
    """Trips of a SASS loop from its opcodes: the loop holding the GELU (its erf's MUFU.EX2) is the
    hidden loop; a loop with tensor-core ops but no GELU is a streamed fc1 K loop nested in it
    (ptxas may unroll it: 6 steps); the others are the LayerNorm statistics (K loop)."""
    if any(op.startswith("MUFU.EX2") for op in body):
        return main_loop_trips(meta)
    return -(-meta["D"] // meta["BLOCK_K"])


__all__ = ["fused_mlp", "torch_fused_mlp", "mlp_reason", "fused_mlp_enabled", "FUSED_MLP_ENV"]
