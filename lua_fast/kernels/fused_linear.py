"""A Swin block's linear layers as one Triton GEMM each, with the glue around them fused in.

``fused_linear(x, packed, *, layer_norm=None, gelu=False, residual=None)`` computes

    out = residual + act(LN(x) @ W^T + b)         (each of LN, act, residual optional)

- LayerNorm prologue (weights packed with ``layer_norm=(weight, bias, eps)``): K = D = 360 is
  small, so each program first reads its rows once to get fp32 statistics (a Welford merge of
  per-block mean and M2, as robust as PyTorch's), then computes ``N_GROUP`` consecutive N tiles
  of those rows (0: all of them). One program per row block reads the statistics once but gives
  only M / BLOCK_M programs: 128 at a 128x128 latent, 32 at 64x64, for 132 SMs; measured on an
  H200 (issue 13) the two LayerNorm GEMMs were the slowest sites, so the autotuner also tries
  groups of 1 and 3 tiles (each program re-reads its rows' statistics from L2), and a resident
  variant (``A_RESIDENT``: the program loads its rows once, K = 360 as register tiles of 256 + 128
  columns, normalises them exactly in registers and streams only the weights). The streamed
  variant only centres each A tile as it loads it:
  LN(x) W^T = rstd * ((x - mean) (W diag(g))^T) + W h, so the LayerNorm's gain is folded into the
  packed weights, its shift into the bias, and rstd scales the fp32 accumulator in the epilogue.
  The normalised activations never exist in memory: no LayerNorm launch, no (M, D) round trip.
- Epilogue: bias in fp32, the exact (erf) GELU, and the residual add, stored once in the output
  dtype (the residual stream's dtype when a residual is given: fp32 in "mixed"). The autotuner
  also tries loading the residual tile before the K loop (``R_PREFETCH``): with K = 384 or 720 the
  loop is short, and a residual load issued after it stalls the epilogue for a memory latency.

- Tiles: on the H200 the fc2 (and the large convs) ran at the rate their programs' loads from L2
  allow (6.6 TB/s of ``launch_l2_bytes``: A once per N tile, the weights once per
  row block), not at the tensor cores' rate, so the fc2 also tries 256-row tiles (half the weight
  re-reads of 128-row ones; the autotuner times them against the others).

Weights are packed once (``pack_linear``): K-major (K + 128 zero rows, N padded to a multiple of
128 columns), so weight loads need no masks. Rows are clamped (loads past the last row re-read it
and are discarded), and the host passes the common power-of-two divisor of each operand's row
stride as an alignment hint, as in ``conv3x3``.

``torch_fused_linear`` is the same computation in PyTorch (the fallback and test oracle).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .conv3x3 import alignment
from .triton_support import (INTERPRET, autotuned, cdiv, dot_precision, dot_upcast, fp32_operands, grid_dependency_sync,
                             kernel_op, launcher, next_pow2, pdl_options, size_class, store_dtype, tl, triton, tuned,
                             unavailable_reason)

K_PAD_ROWS = 128  # zero weight rows after K: the largest BLOCK_K
N_TILE = 128  # packed column count is a multiple of this


@dataclass(frozen=True)
class PackedLinear:
    """An nn.Linear's weight as (K + K_PAD_ROWS, Wn) K-major in the GEMM dtype, bias fp32 (Wn,).
    ``ln_eps`` is set when a LayerNorm is folded in (the kernel then normalises its input), with
    ``colsum`` the fp32 column sums of the packed (rounded) weight for the after-GEMM centring."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    k: int
    n: int
    ln_eps: float | None = None
    colsum: torch.Tensor | None = None


def pack_linear(weight: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype, *,
                layer_norm=None) -> PackedLinear:
    """(N, K) weight and (N,) bias -> :class:`PackedLinear`; ``layer_norm=(g, h, eps)`` folds a
    LayerNorm of the input in: W diag(g) as the weight, b + W h as the bias (computed in fp32)."""
    n, k = weight.shape
    w = weight.detach().float()
    b = None if bias is None else bias.detach().float()
    eps = None
    if layer_norm is not None:
        g, h, eps = layer_norm
        b = (0 if b is None else b) + w @ h.detach().float()
        w = w * g.detach().float()[None, :]
    width = -(-n // N_TILE) * N_TILE
    packed = torch.zeros(k + K_PAD_ROWS, width, device=weight.device, dtype=torch.float32)
    packed[:k, :n] = w.t()
    if b is not None:
        b = torch.cat([b, b.new_zeros(width - n)])
    packed = packed.to(dtype)
    colsum = packed.float().sum(0) if layer_norm is not None else None
    return PackedLinear(packed, b, k, n, None if eps is None else float(eps), colsum)


def torch_fused_linear(x, weight, bias=None, *, layer_norm=None, gelu=False, residual=None, out_dtype=None):
    """The PyTorch composition with fused_linear's meaning; ``weight`` in nn.Linear's (N, K) layout.
    The GEMM runs in x's dtype; LN statistics and the epilogue in fp32, stored once."""
    compute = x.dtype
    if layer_norm is not None:
        w, b, eps = layer_norm
        x = F.layer_norm(x.float(), x.shape[-1:], w.float(), b.float(), eps).to(compute)
    y = (x @ weight.to(compute).t()).float()
    if bias is not None:
        y = y + bias.float()
    if gelu:
        y = F.gelu(y)
    if residual is not None:
        y = y + residual.float()
        out_dtype = out_dtype or residual.dtype
    return y.to(out_dtype or compute)


# ------------------------------------------------------------------- the kernel
if triton is not None:

    @triton.jit
    def _linear_tile(a_rows, w_ptr, bias_ptr, r_ptr, out_ptr, low_ptr, cs_ptr, rows_c, m_ok, offs_n, mean, rstd,
                     stride_rm, stride_om,
                     K: tl.constexpr, N: tl.constexpr, W_STRIDE: tl.constexpr, R_ALIGN: tl.constexpr,
                     O_ALIGN: tl.constexpr, LAYER_NORM: tl.constexpr, CENTER: tl.constexpr,
                     HAS_BIAS: tl.constexpr, GELU: tl.constexpr, HAS_RESIDUAL: tl.constexpr,
                     HAS_LOW: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                     R_PREFETCH: tl.constexpr, INPUT_PRECISION: tl.constexpr, DOT_UPCAST: tl.constexpr):
        """One (BLOCK_M, BLOCK_N) output tile: K loop, then the epilogue and the store. With
        R_PREFETCH the residual tile is loaded before the K loop, so its memory latency overlaps
        the GEMM instead of stalling the epilogue (32 more registers a thread at 128x128, 8 warps)."""
        if HAS_RESIDUAL and R_PREFETCH:
            r_tile = _residual_tile(r_ptr, rows_c, m_ok, offs_n, stride_rm, N, R_ALIGN, BLOCK_N)
        else:
            r_tile = 0.0
        acc = _streamed_tile(a_rows, w_ptr, cs_ptr, offs_n, mean, rstd, K, W_STRIDE, LAYER_NORM, CENTER,
                             BLOCK_M, BLOCK_N, BLOCK_K, INPUT_PRECISION, DOT_UPCAST)
        _linear_epilogue(acc, r_tile, bias_ptr, r_ptr, out_ptr, low_ptr, rows_c, m_ok, offs_n, stride_rm,
                         stride_om, N, R_ALIGN, O_ALIGN, HAS_BIAS, GELU, HAS_RESIDUAL, R_PREFETCH, HAS_LOW, BLOCK_N)

    @triton.jit
    def _streamed_tile(a_rows, w_ptr, cs_ptr, offs_n, mean, rstd, K: tl.constexpr, W_STRIDE: tl.constexpr,
                       LAYER_NORM: tl.constexpr, CENTER: tl.constexpr, BLOCK_M: tl.constexpr,
                       BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, INPUT_PRECISION: tl.constexpr,
                       DOT_UPCAST: tl.constexpr, STATIC_K: tl.constexpr = False):
        """fp32 (BLOCK_M, BLOCK_N) = (LN of) the rows @ the packed weight's columns offs_n, the rows
        streamed BLOCK_K columns at a time (the LayerNorm applied as the module docstring says).
        STATIC_K unrolls the K loop in the IR (``tl.static_range``): a caller's enclosing loop is
        then the innermost one, which Triton's pipeliner can software-pipeline."""
        K_BLOCKS: tl.constexpr = (K + BLOCK_K - 1) // BLOCK_K
        acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
        if STATIC_K:
            for kb in tl.static_range(K_BLOCKS):
                acc = _k_step(acc, a_rows, w_ptr, offs_n, mean, kb, K, W_STRIDE, LAYER_NORM, CENTER, BLOCK_K,
                              INPUT_PRECISION, DOT_UPCAST)
        else:
            for kb in range(K_BLOCKS):
                acc = _k_step(acc, a_rows, w_ptr, offs_n, mean, kb, K, W_STRIDE, LAYER_NORM, CENTER, BLOCK_K,
                              INPUT_PRECISION, DOT_UPCAST)
        if LAYER_NORM:
            if not CENTER:  # x W'^T - mean * colsum(W'): the centring, after the GEMM
                acc -= mean[:, None] * tl.load(cs_ptr + offs_n)[None, :]
            acc = acc * rstd[:, None]
        return acc

    @triton.jit
    def _k_step(acc, a_rows, w_ptr, offs_n, mean, kb, K: tl.constexpr, W_STRIDE: tl.constexpr,
                LAYER_NORM: tl.constexpr, CENTER: tl.constexpr, BLOCK_K: tl.constexpr,
                INPUT_PRECISION: tl.constexpr, DOT_UPCAST: tl.constexpr):
        """acc += the rows' K block kb @ the weight's (BLOCK_K, offs_n) tile (zero rows past K)."""
        offs_k = kb * BLOCK_K + tl.arange(0, BLOCK_K)
        if K % BLOCK_K == 0:
            a = tl.load(a_rows[:, None] + offs_k[None, :])
        else:
            a = tl.load(a_rows[:, None] + offs_k[None, :], mask=(offs_k < K)[None, :], other=0.0)
        wt = tl.load(w_ptr + offs_k[:, None] * W_STRIDE + offs_n[None, :])
        if LAYER_NORM and CENTER:  # gain folded into W; rstd scales the accumulator after the loop
            a = a.to(tl.float32) - mean[:, None]
        if DOT_UPCAST:
            return tl.dot(a.to(tl.float32), wt.to(tl.float32), acc, input_precision="ieee")
        return tl.dot(a.to(wt.dtype), wt, acc, input_precision=INPUT_PRECISION)

    @triton.jit
    def _residual_tile(r_ptr, rows_c, m_ok, offs_n, stride_rm, N: tl.constexpr, R_ALIGN: tl.constexpr,
                       BLOCK_N: tl.constexpr):
        """The residual's (BLOCK_M, BLOCK_N) tile in its own dtype (zeros outside the output)."""
        if N % BLOCK_N == 0:
            ok = m_ok[:, None]
        else:
            ok = m_ok[:, None] & (offs_n < N)[None, :]
        r_rows = tl.multiple_of(rows_c.to(tl.int64) * stride_rm, R_ALIGN)
        return tl.load(r_ptr + r_rows[:, None] + offs_n[None, :], mask=ok, other=0.0)

    @triton.jit
    def _linear_epilogue(acc, r_tile, bias_ptr, r_ptr, out_ptr, low_ptr, rows_c, m_ok, offs_n, stride_rm,
                         stride_om, N: tl.constexpr, R_ALIGN: tl.constexpr, O_ALIGN: tl.constexpr,
                         HAS_BIAS: tl.constexpr, GELU: tl.constexpr, HAS_RESIDUAL: tl.constexpr,
                         R_PREFETCH: tl.constexpr, HAS_LOW: tl.constexpr, BLOCK_N: tl.constexpr):
        """Bias, GELU, residual add and the store(s) of one fp32 (BLOCK_M, BLOCK_N) tile
        (``r_tile``: the residual tile when it was prefetched)."""
        EVEN_N: tl.constexpr = N % BLOCK_N == 0
        acc = _bias_act(acc, bias_ptr, offs_n, HAS_BIAS, GELU)
        if EVEN_N:
            ok = m_ok[:, None]
        else:
            ok = m_ok[:, None] & (offs_n < N)[None, :]
        if HAS_RESIDUAL:
            if R_PREFETCH:
                acc += r_tile.to(tl.float32)
            else:
                acc += _residual_tile(r_ptr, rows_c, m_ok, offs_n, stride_rm, N, R_ALIGN, BLOCK_N).to(tl.float32)
        o_rows = tl.multiple_of(rows_c.to(tl.int64) * stride_om, O_ALIGN)
        tl.store(out_ptr + o_rows[:, None] + offs_n[None, :], acc.to(out_ptr.dtype.element_ty), mask=ok)
        if HAS_LOW:  # the same values in the next layer's GEMM dtype (e.g. fp32 stream -> bf16 conv input)
            tl.store(low_ptr + o_rows[:, None] + offs_n[None, :], acc.to(low_ptr.dtype.element_ty), mask=ok)

    @triton.jit
    def _bias_act(acc, bias_ptr, offs_n, HAS_BIAS: tl.constexpr, GELU: tl.constexpr):
        """acc + bias (fp32, packed width: no mask), then the exact (erf) GELU, as nn.GELU() / F.gelu."""
        if HAS_BIAS:
            acc += tl.load(bias_ptr + offs_n)[None, :]
        if GELU:
            acc = 0.5 * acc * (1.0 + tl.math.erf(acc * 0.7071067811865476))
        return acc

    @triton.jit
    def _row_stats(a_rows, eps, K: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr):
        """(mean, rstd) of each row in fp32: a Welford merge of per-block (mean, M2), BLOCK_K columns
        at a time (as robust as PyTorch's LayerNorm)."""
        K_BLOCKS: tl.constexpr = (K + BLOCK_K - 1) // BLOCK_K
        mean = tl.zeros([BLOCK_M], tl.float32)
        m2 = tl.zeros([BLOCK_M], tl.float32)
        for kb in range(K_BLOCKS):
            offs_k = kb * BLOCK_K + tl.arange(0, BLOCK_K)
            k_ok = offs_k < K
            x = tl.load(a_rows[:, None] + offs_k[None, :], mask=k_ok[None, :], other=0.0).to(tl.float32)
            seen = kb * BLOCK_K * 1.0
            count = tl.sum(k_ok.to(tl.float32), 0)
            block_mean = tl.sum(x, 1) / count
            d = tl.where(k_ok[None, :], x - block_mean[:, None], 0.0)
            delta = block_mean - mean
            total = seen + count
            mean = mean + delta * (count / total)
            m2 = m2 + tl.sum(d * d, 1) + delta * delta * (seen * count / total)
        return mean, 1.0 / tl.sqrt(m2 / K + eps)

    @triton.jit
    def _normalised_rows(a_rows, eps, K: tl.constexpr, K0: tl.constexpr, K1: tl.constexpr, dtype: tl.constexpr):
        """The program's whole rows, LayerNorm-normalised (gain and shift are in the packed weights),
        as two resident GEMM operands: columns [0, K0) and [K0, K0 + K1) (K1 = 0: none), zero past K.
        Exact two-pass statistics in fp32 from registers: the rows are read from memory once."""
        offs0 = tl.arange(0, K0)
        x0 = tl.load(a_rows[:, None] + offs0[None, :], mask=(offs0 < K)[None, :], other=0.0).to(tl.float32)
        total = tl.sum(x0, 1)
        if K1 > 0:
            offs1 = K0 + tl.arange(0, K1)
            x1 = tl.load(a_rows[:, None] + offs1[None, :], mask=(offs1 < K)[None, :], other=0.0).to(tl.float32)
            total += tl.sum(x1, 1)
        mean = total / K
        x0 = tl.where((offs0 < K)[None, :], x0 - mean[:, None], 0.0)
        sq = tl.sum(x0 * x0, 1)
        if K1 > 0:
            x1 = tl.where((offs1 < K)[None, :], x1 - mean[:, None], 0.0)
            sq += tl.sum(x1 * x1, 1)
        rstd = 1.0 / tl.sqrt(sq / K + eps)
        x0 = (x0 * rstd[:, None]).to(dtype)
        if K1 > 0:
            x1 = (x1 * rstd[:, None]).to(dtype)
        else:
            x1 = x0  # unused
        return x0, x1

    @triton.jit
    def _resident_tile(x0, x1, w_ptr, offs_n, W_STRIDE: tl.constexpr, K0: tl.constexpr, K1: tl.constexpr,
                       BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, INPUT_PRECISION: tl.constexpr,
                       DOT_UPCAST: tl.constexpr):
        """fp32 (BLOCK_M, BLOCK_N) = resident rows @ the packed weight's columns offs_n (zero rows past K)."""
        w0 = tl.load(w_ptr + tl.arange(0, K0)[:, None] * W_STRIDE + offs_n[None, :])
        acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
        if DOT_UPCAST:
            acc = tl.dot(x0, w0.to(tl.float32), acc, input_precision="ieee")
        else:
            acc = tl.dot(x0, w0, acc, input_precision=INPUT_PRECISION)
        if K1 > 0:
            w1 = tl.load(w_ptr + (K0 + tl.arange(0, K1))[:, None] * W_STRIDE + offs_n[None, :])
            if DOT_UPCAST:
                acc = tl.dot(x1, w1.to(tl.float32), acc, input_precision="ieee")
            else:
                acc = tl.dot(x1, w1, acc, input_precision=INPUT_PRECISION)
        return acc

    @triton.jit
    def _linear_kernel(
        a_ptr, w_ptr, bias_ptr, r_ptr, out_ptr, low_ptr, cs_ptr,
        M, stride_am, stride_rm, stride_om, eps, size_key,
        K: tl.constexpr, N: tl.constexpr, W_STRIDE: tl.constexpr,
        A_ALIGN: tl.constexpr, R_ALIGN: tl.constexpr, O_ALIGN: tl.constexpr,
        LAYER_NORM: tl.constexpr, CENTER: tl.constexpr, HAS_BIAS: tl.constexpr, GELU: tl.constexpr,
        HAS_RESIDUAL: tl.constexpr, HAS_LOW: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
        BLOCK_K: tl.constexpr, N_GROUP: tl.constexpr, A_RESIDENT: tl.constexpr, A_K0: tl.constexpr,
        A_K1: tl.constexpr, R_PREFETCH: tl.constexpr, INPUT_PRECISION: tl.constexpr, DOT_UPCAST: tl.constexpr,
        PDL: tl.constexpr,
    ):
        grid_dependency_sync(PDL)
        N_TILES: tl.constexpr = (N + BLOCK_N - 1) // BLOCK_N
        GROUP: tl.constexpr = N_TILES if (N_GROUP == 0 or N_GROUP > N_TILES) else N_GROUP
        N_GROUPS: tl.constexpr = (N_TILES + GROUP - 1) // GROUP
        pid = tl.program_id(0)
        if LAYER_NORM:  # a program owns its rows across GROUP N tiles: the statistics are read once per group
            pid_n = pid % N_GROUPS  # groups of one row block adjacent: they share its rows in L2
            pid_m = pid // N_GROUPS
        else:
            pid_n = pid % N_TILES  # N tiles fastest: the tiles of one row block share its rows in L2
            pid_m = pid // N_TILES
        rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        m_ok = rows < M
        rows_c = tl.minimum(rows, M - 1)  # loads need no row mask; the extra rows are not stored
        a_rows = a_ptr + tl.multiple_of(rows_c.to(tl.int64) * stride_am, A_ALIGN)
        mean = tl.zeros([BLOCK_M], tl.float32)
        rstd = tl.zeros([BLOCK_M], tl.float32)
        if N_TILES % GROUP == 0:
            last = pid_n * GROUP + GROUP
        else:  # the last group is short
            last = tl.minimum(pid_n * GROUP + GROUP, N_TILES)
        if LAYER_NORM and A_RESIDENT:  # the rows stay in registers across the group's N tiles
            x0, x1 = _normalised_rows(a_rows, eps, K, A_K0, A_K1,
                                      tl.float32 if DOT_UPCAST else w_ptr.dtype.element_ty)
            for nt in range(pid_n * GROUP, last):
                offs_n = nt * BLOCK_N + tl.arange(0, BLOCK_N)
                acc = _resident_tile(x0, x1, w_ptr, offs_n, W_STRIDE, A_K0, A_K1, BLOCK_M, BLOCK_N,
                                     INPUT_PRECISION, DOT_UPCAST)
                _linear_epilogue(acc, 0.0, bias_ptr, r_ptr, out_ptr, low_ptr, rows_c, m_ok, offs_n, stride_rm,
                                 stride_om, N, R_ALIGN, O_ALIGN, HAS_BIAS, GELU, HAS_RESIDUAL, False, HAS_LOW,
                                 BLOCK_N)
        elif LAYER_NORM:
            mean, rstd = _row_stats(a_rows, eps, K, BLOCK_M, BLOCK_K)
            for nt in range(pid_n * GROUP, last):
                _linear_tile(a_rows, w_ptr, bias_ptr, r_ptr, out_ptr, low_ptr, cs_ptr, rows_c, m_ok,
                             nt * BLOCK_N + tl.arange(0, BLOCK_N), mean, rstd, stride_rm, stride_om,
                             K, N, W_STRIDE, R_ALIGN, O_ALIGN, LAYER_NORM, CENTER, HAS_BIAS, GELU, HAS_RESIDUAL,
                             HAS_LOW, BLOCK_M, BLOCK_N, BLOCK_K, R_PREFETCH, INPUT_PRECISION, DOT_UPCAST)
        else:
            _linear_tile(a_rows, w_ptr, bias_ptr, r_ptr, out_ptr, low_ptr, cs_ptr, rows_c, m_ok,
                         pid_n * BLOCK_N + tl.arange(0, BLOCK_N), mean, rstd, stride_rm, stride_om,
                         K, N, W_STRIDE, R_ALIGN, O_ALIGN, LAYER_NORM, CENTER, HAS_BIAS, GELU, HAS_RESIDUAL,
                         HAS_LOW, BLOCK_M, BLOCK_N, BLOCK_K, R_PREFETCH, INPUT_PRECISION, DOT_UPCAST)

    # LayerNorm GEMMs only: N_GROUP = N tiles per program (0 = all; the others run one tile each),
    # A_RESIDENT = the normalised rows stay in registers across those tiles (BLOCK_K unused).
    # GEMMs with a residual only: R_PREFETCH = its tile is loaded before the K loop.
    _TILES = [(128, 128, 64, 8, 3), (128, 128, 128, 8, 3), (64, 128, 128, 4, 3), (128, 64, 64, 4, 4),
              (64, 128, 64, 4, 4), (64, 64, 64, 4, 4),
              (256, 128, 64, 8, 3)]  # (half the weight re-reads; the fc2 only: see _prune)
    _CONFIGS = [
        triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "N_GROUP": g, "A_RESIDENT": 0, "R_PREFETCH": 0},
                      num_warps=w, num_stages=s)
        for bm, bn, bk, w, s in _TILES
        for g in (0, 1, 3)
    ] + [  # resident rows: the (K0 + K1)-deep weight tile of each stage must fit beside them (227 KiB)
        triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": 64, "N_GROUP": g, "A_RESIDENT": 1, "R_PREFETCH": 0},
                      num_warps=w, num_stages=s)
        for bm, bn, w, s in [(64, 64, 4, 3), (64, 128, 4, 1), (128, 64, 8, 2)]  # (128x128: spills on 3.9)
        for g in (0, 3)
    ] + [
        triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "N_GROUP": 1, "A_RESIDENT": 0, "R_PREFETCH": 1},
                      num_warps=w, num_stages=s)
        for bm, bn, bk, w, s in _TILES if (bm, bn, bk) not in ((128, 128, 128), (256, 128, 64))  # (spill on 3.9)
    ]

    def _prune(configs, named_args, **kwargs):
        ln = kwargs["LAYER_NORM"]
        resident_ok = ln and not fp32_operands(kwargs) and not kwargs.get("DOT_UPCAST") \
            and kwargs["A_K0"] + kwargs["A_K1"] <= kwargs["K"] + K_PAD_ROWS and kwargs["K"] <= 512
        # 256-row tiles hold a 128-register accumulator per thread (8 warps): only a plain GEMM with
        # 2-byte operands, output and residual fits beside it (LayerNorm, fp32 tiles or a second
        # output copy spill on sm_90a), and one with K >= 512 (the fc2; at K = 384, the proj,
        # Triton 3.6 spills 80 B, and its weight re-reads are half the fc2's).
        tall_ok = not ln and not fp32_operands(kwargs) and not kwargs["HAS_LOW"] and kwargs["K"] >= 512 \
            and named_args["out_ptr"].element_size() == 2 \
            and (not kwargs["HAS_RESIDUAL"] or named_args["r_ptr"].element_size() == 2)
        kept = [c for c in configs if kwargs["W_STRIDE"] % c.kwargs["BLOCK_N"] == 0
                and (ln or c.kwargs["N_GROUP"] == 1) and (resident_ok or not c.kwargs["A_RESIDENT"])
                and (kwargs["HAS_RESIDUAL"] or not c.kwargs["R_PREFETCH"])
                and (c.kwargs["BLOCK_M"] <= 128 or tall_ok)]
        if fp32_operands(kwargs):  # fp32 operands: halve the shared memory per stage
            kept = [c for c in kept if c.kwargs["BLOCK_N"] * c.kwargs["BLOCK_K"] <= 128 * 64] or kept
        return tuned(kept)

    _linear_tuned = autotuned(_linear_kernel, _CONFIGS, _prune,
                              ["K", "N", "W_STRIDE", "A_ALIGN", "R_ALIGN", "O_ALIGN", "LAYER_NORM", "GELU",
                               "HAS_RESIDUAL"])


INTERPRET_N_GROUP = 2  # interpreter runs: two N tiles per LayerNorm program (tests vary it)
INTERPRET_A_RESIDENT = 0  # interpreter runs: the streamed LayerNorm path (tests run both)
INTERPRET_R_PREFETCH = 1  # interpreter runs: the residual tile loaded before the K loop (tests run both)
INTERPRET_BLOCK_M = 128  # interpreter runs: rows per program (fewer programs run faster; kernel tests pin 32)


def resident_split(k: int) -> tuple[int, int]:
    """(K0, K1): K as a power of two plus a smaller power of two or 0, each >= 16, K0 + K1 >= K
    (360 -> 256 + 128): the resident-rows path's two register tiles."""
    k0 = max(16, 1 << (k.bit_length() - 1))
    rest = k - k0
    return k0, 0 if rest <= 0 else max(16, next_pow2(rest))


def programs(m: int, n: int, layer_norm: bool, meta: dict) -> int:
    """The launch's grid size: one program per (row block, N tile), or per (row block, N group)."""
    n_tiles = cdiv(n, meta["BLOCK_N"])
    if not layer_norm:
        return cdiv(m, meta["BLOCK_M"]) * n_tiles
    group = n_tiles if meta["N_GROUP"] in (0, None) or meta["N_GROUP"] > n_tiles else meta["N_GROUP"]
    return cdiv(m, meta["BLOCK_M"]) * cdiv(n_tiles, group)


class Outputs:
    """A GEMM kernel's (M, N) output and optional second copy in another dtype (``low``, (0, N) when
    not asked for), with the buffers the kernel writes (``dst``, ``low_dst``: fp32 stand-ins where
    the interpreter cannot round to the dtype, see ``store_dtype``); ``done()`` copies them back."""

    def __init__(self, m: int, n: int, device, out_dtype, low_dtype=None):
        self.out = torch.empty((m, n), device=device, dtype=out_dtype)
        self.dst = self.out if store_dtype(out_dtype) == out_dtype else \
            torch.empty((m, n), device=device, dtype=store_dtype(out_dtype))
        self.low = torch.empty((m, n) if low_dtype is not None else (0, n), device=device,
                               dtype=low_dtype or out_dtype)
        self.low_dst = self.low if store_dtype(self.low.dtype) == self.low.dtype else \
            torch.empty(self.low.shape, device=device, dtype=store_dtype(self.low.dtype))
        self.has_low = low_dtype is not None

    def done(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.dst is not self.out:
            self.out.copy_(self.dst)
        if self.low_dst is not self.low:
            self.low.copy_(self.low_dst)
        return self.out, self.low


def _launch(x, weight, bias, residual, colsum, ln_eps, n, gelu, out_dtype, input_precision, low_dtype=None):
    m, k = x.shape
    outs = Outputs(m, n, x.device, out_dtype, low_dtype)
    dst, low_dst = outs.dst, outs.low_dst
    r = residual if residual is not None else dst
    layer_norm = ln_eps is not None
    # Low-precision input already in the GEMM dtype: no per-element work, the centring is exact after
    # the GEMM. fp32 (or fp32 input into a bf16 GEMM): centre each element before the cast.
    center = x.dtype != weight.dtype or x.dtype == torch.float32
    args = (x, weight, bias if bias is not None else weight, r, dst, low_dst if low_dtype is not None else dst,
            colsum if colsum is not None else weight,
            m, x.stride(0), r.stride(0), dst.stride(0), float(ln_eps or 0.0), size_class(m))
    meta = dict(K=k, N=n, W_STRIDE=weight.shape[1], A_ALIGN=alignment(x), R_ALIGN=alignment(r), O_ALIGN=alignment(dst),
                LAYER_NORM=layer_norm, CENTER=center, HAS_BIAS=bias is not None, GELU=gelu, HAS_LOW=low_dtype is not None,
                HAS_RESIDUAL=residual is not None, INPUT_PRECISION=input_precision or dot_precision(weight.dtype),
                DOT_UPCAST=dot_upcast(weight.dtype))
    meta["A_K0"], meta["A_K1"] = resident_split(k)
    if INTERPRET:
        block_k = min(64, max(16, next_pow2(k)))
        meta_i = dict(BLOCK_M=INTERPRET_BLOCK_M, BLOCK_N=64, BLOCK_K=block_k, N_GROUP=INTERPRET_N_GROUP,
                      A_RESIDENT=INTERPRET_A_RESIDENT if layer_norm else 0,
                      R_PREFETCH=INTERPRET_R_PREFETCH if residual is not None else 0)
        launcher(_linear_kernel)[(programs(m, n, layer_norm, meta_i),)](*args, **meta_i, **meta, PDL=False)
    else:
        launcher(_linear_tuned)[lambda c: (programs(m, n, layer_norm, c),)](*args, **meta, **pdl_options(x.device))
    return outs.done()


def _fused_linear_fake(x, weight, bias, residual, colsum, ln_eps, n, gelu, out_dtype, input_precision, low_dtype):
    low_shape = (x.shape[0], n) if low_dtype is not None else (0, n)
    return x.new_empty((x.shape[0], n), dtype=out_dtype), x.new_empty(low_shape, dtype=low_dtype or out_dtype)


@kernel_op("fused_linear", _fused_linear_fake)
def _fused_linear_op(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, residual: torch.Tensor | None,
                     colsum: torch.Tensor | None, ln_eps: float | None, n: int, gelu: bool, out_dtype: torch.dtype,
                     input_precision: str | None,
                     low_dtype: torch.dtype | None) -> tuple[torch.Tensor, torch.Tensor]:
    return _launch(x, weight, bias, residual, colsum, ln_eps, n, gelu, out_dtype, input_precision, low_dtype)


def check_args(x: torch.Tensor, packed: PackedLinear, residual) -> None:
    if x.dim() != 2 or x.shape[1] != packed.k or x.stride(1) != 1:
        raise ValueError(f"fused_linear: x must be (M, {packed.k}) with unit column stride, got {tuple(x.shape)} "
                         f"strides {x.stride()}")
    if x.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"fused_linear: dtype {x.dtype} not supported (float32, float16, bfloat16)")
    if residual is not None and (tuple(residual.shape) != (x.shape[0], packed.n) or residual.stride(1) != 1):
        raise ValueError(f"fused_linear: residual must be ({x.shape[0]}, {packed.n}) with unit column stride")


def fused_linear(x, packed: PackedLinear, *, gelu=False, residual=None, out_dtype=None, input_precision=None,
                 also_in=None, check=True):
    """``residual + act(LN(x) @ W^T + b)`` in one launch; see the module docstring (the LayerNorm is
    there when ``packed`` was built with ``layer_norm=``).

    x: (M, K) (a token tensor viewed as rows) in the GEMM dtype, or in the residual stream's dtype
    when a LayerNorm is folded in (fp32 statistics either way).
    Returns (M, N) in ``out_dtype`` (default: the residual's dtype, else the weights' dtype);
    with ``also_in=dtype`` returns ``(out, the same values in dtype)`` from one launch (the next
    layer's input without a cast launch). ``check=False`` skips argument validation (callers that
    validated the shape once).
    """
    if check:
        check_args(x, packed, residual)
        reason = unavailable_reason(x.device)
        if reason:
            raise RuntimeError(f"fused_linear: Triton kernel cannot run: {reason}")
    if packed.ln_eps is None and x.dtype != packed.weight.dtype:
        x = x.to(packed.weight.dtype)
    out_dtype = out_dtype or (residual.dtype if residual is not None else packed.weight.dtype)
    out, low = _fused_linear_op(x, packed.weight, packed.bias, residual, packed.colsum,
                                               packed.ln_eps, packed.n, gelu, out_dtype, input_precision, also_in)
    return (out, low) if also_in is not None else out


# ------------------------------------------------- static description (kernel report)
def launch_site(args: dict, meta: dict) -> str:
    parts = ["LN+" if meta["LAYER_NORM"] else "", f"linear {meta['K']}->{meta['N']}",
             "+GELU" if meta["GELU"] else "", "+residual" if meta["HAS_RESIDUAL"] else ""]
    return "".join(parts)


def launch_flops(args: dict, meta: dict) -> int:
    return 2 * args["M"] * meta["K"] * meta["N"]


def launch_l2_bytes(args: dict, meta: dict) -> int:
    """Bytes the launch's programs load (from L2 at best) and store under its config (``meta``
    holds the tile): each program loads its A rows once per N tile it computes (streamed; once
    more for the LayerNorm statistics) or once in all (resident rows), each row block loads the
    weight columns of its N tiles, and the output (residual, second copy) moves once. On the H200
    the fc2 ran at 6.6 TB/s of these bytes, the LayerNorm GEMMs and the proj (short of programs)
    at 3-4 TB/s (benchmarks/NOTES.md, "L2 traffic")."""
    m, k, n = args["M"], meta["K"], meta["N"]
    n_tiles, m_blocks = cdiv(n, meta["BLOCK_N"]), cdiv(m, meta["BLOCK_M"])
    if meta["LAYER_NORM"] and meta["A_RESIDENT"]:
        a_passes, w_rows = 1, meta["A_K0"] + meta["A_K1"]
    else:
        a_passes, w_rows = n_tiles + bool(meta["LAYER_NORM"]), cdiv(k, meta["BLOCK_K"]) * meta["BLOCK_K"]
    a = m * k * args["a_ptr"].element_size() * a_passes
    w = m_blocks * w_rows * n_tiles * meta["BLOCK_N"] * args["w_ptr"].element_size()
    c = m * n * (args["out_ptr"].element_size() + (args["r_ptr"].element_size() if meta["HAS_RESIDUAL"] else 0)
                 + (args["low_ptr"].element_size() if meta["HAS_LOW"] else 0))
    return a + w + c


def main_loop_trips(meta: dict) -> int:
    return -(-meta["K"] // meta["BLOCK_K"])


def loop_trips(meta: dict, body: list[str]) -> int:
    """Trips of a SASS loop from its opcodes: a loop that stores is the LayerNorm path's loop over
    N tiles (the epilogue is inside it); the others (GEMM, statistics) loop over K."""
    if meta["LAYER_NORM"] and any(op.startswith("STG") for op in body):
        n_tiles = -(-meta["N"] // meta["BLOCK_N"])
        return n_tiles if meta["N_GROUP"] == 0 else min(meta["N_GROUP"], n_tiles)
    return main_loop_trips(meta)


__all__ = ["PackedLinear", "pack_linear", "fused_linear", "torch_fused_linear"]
