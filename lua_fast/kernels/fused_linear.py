"""A Swin block's linear layers as one Triton GEMM each, with the glue around them fused in.

``fused_linear(x, packed, *, layer_norm=None, gelu=False, residual=None)`` computes

    out = residual + act(LN(x) @ W^T + b)         (each of LN, act, residual optional)

- LayerNorm prologue (weights packed with ``layer_norm=(weight, bias, eps)``): K = D = 360 is
  small, so each program first reads its rows once to get fp32 statistics (a Welford merge of
  per-block mean and M2, as robust as PyTorch's), then only centres each A tile as it loads it:
  LN(x) W^T = rstd * ((x - mean) (W diag(g))^T) + W h, so the LayerNorm's gain is folded into the
  packed weights, its shift into the bias, and rstd scales the fp32 accumulator in the epilogue.
  The normalised activations never exist in memory: no LayerNorm launch, no (M, D) round trip.
- Epilogue: bias in fp32, the exact (erf) GELU, and the residual add, stored once in the output
  dtype (the residual stream's dtype when a residual is given: fp32 in "mixed").

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
from .triton_support import (INTERPRET, tuned, dot_precision, dot_upcast, kernel_op, launcher, store_dtype, tl, triton,
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
                     INPUT_PRECISION: tl.constexpr, DOT_UPCAST: tl.constexpr):
        """One (BLOCK_M, BLOCK_N) output tile: K loop, then the epilogue and the store."""
        K_BLOCKS: tl.constexpr = (K + BLOCK_K - 1) // BLOCK_K
        EVEN_K: tl.constexpr = K % BLOCK_K == 0
        EVEN_N: tl.constexpr = N % BLOCK_N == 0
        acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
        for kb in range(K_BLOCKS):
            offs_k = kb * BLOCK_K + tl.arange(0, BLOCK_K)
            if EVEN_K:
                a = tl.load(a_rows[:, None] + offs_k[None, :])
            else:
                a = tl.load(a_rows[:, None] + offs_k[None, :], mask=(offs_k < K)[None, :], other=0.0)
            wt = tl.load(w_ptr + offs_k[:, None] * W_STRIDE + offs_n[None, :])  # zero rows past K
            if LAYER_NORM and CENTER:  # gain folded into W; rstd scales the accumulator below
                a = a.to(tl.float32) - mean[:, None]
            if DOT_UPCAST:
                acc = tl.dot(a.to(tl.float32), wt.to(tl.float32), acc, input_precision="ieee")
            else:
                acc = tl.dot(a.to(wt.dtype), wt, acc, input_precision=INPUT_PRECISION)
        if LAYER_NORM:
            if not CENTER:  # x W'^T - mean * colsum(W'): the centring, after the GEMM
                acc -= mean[:, None] * tl.load(cs_ptr + offs_n)[None, :]
            acc = acc * rstd[:, None]
        if HAS_BIAS:
            acc += tl.load(bias_ptr + offs_n)[None, :]
        if GELU:  # exact GELU, as nn.GELU() / F.gelu
            acc = 0.5 * acc * (1.0 + tl.math.erf(acc * 0.7071067811865476))
        if EVEN_N:
            ok = m_ok[:, None]
        else:
            ok = m_ok[:, None] & (offs_n < N)[None, :]
        if HAS_RESIDUAL:
            r_rows = tl.multiple_of(rows_c.to(tl.int64) * stride_rm, R_ALIGN)
            acc += tl.load(r_ptr + r_rows[:, None] + offs_n[None, :], mask=ok, other=0.0).to(tl.float32)
        o_rows = tl.multiple_of(rows_c.to(tl.int64) * stride_om, O_ALIGN)
        tl.store(out_ptr + o_rows[:, None] + offs_n[None, :], acc.to(out_ptr.dtype.element_ty), mask=ok)
        if HAS_LOW:  # the same values in the next layer's GEMM dtype (e.g. fp32 stream -> bf16 conv input)
            tl.store(low_ptr + o_rows[:, None] + offs_n[None, :], acc.to(low_ptr.dtype.element_ty), mask=ok)

    @triton.jit
    def _linear_kernel(
        a_ptr, w_ptr, bias_ptr, r_ptr, out_ptr, low_ptr, cs_ptr,
        M, stride_am, stride_rm, stride_om, eps,
        K: tl.constexpr, N: tl.constexpr, W_STRIDE: tl.constexpr,
        A_ALIGN: tl.constexpr, R_ALIGN: tl.constexpr, O_ALIGN: tl.constexpr,
        LAYER_NORM: tl.constexpr, CENTER: tl.constexpr, HAS_BIAS: tl.constexpr, GELU: tl.constexpr,
        HAS_RESIDUAL: tl.constexpr, HAS_LOW: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
        BLOCK_K: tl.constexpr,
        INPUT_PRECISION: tl.constexpr, DOT_UPCAST: tl.constexpr,
    ):
        N_TILES: tl.constexpr = (N + BLOCK_N - 1) // BLOCK_N
        K_BLOCKS: tl.constexpr = (K + BLOCK_K - 1) // BLOCK_K
        pid = tl.program_id(0)
        if LAYER_NORM:
            pid_m = pid  # a program owns its rows across every N tile: the statistics are read once
            pid_n = 0
        else:
            pid_n = pid % N_TILES  # N tiles fastest: the tiles of one row block share its rows in L2
            pid_m = pid // N_TILES
        rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        m_ok = rows < M
        rows_c = tl.minimum(rows, M - 1)  # loads need no row mask; the extra rows are not stored
        a_rows = a_ptr + tl.multiple_of(rows_c.to(tl.int64) * stride_am, A_ALIGN)
        mean = tl.zeros([BLOCK_M], tl.float32)
        rstd = tl.zeros([BLOCK_M], tl.float32)
        if LAYER_NORM:  # fp32 row statistics: Welford merge of per-block (mean, M2)
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
            rstd = 1.0 / tl.sqrt(m2 / K + eps)
            for nt in range(N_TILES):
                _linear_tile(a_rows, w_ptr, bias_ptr, r_ptr, out_ptr, low_ptr, cs_ptr, rows_c, m_ok,
                             nt * BLOCK_N + tl.arange(0, BLOCK_N), mean, rstd, stride_rm, stride_om,
                             K, N, W_STRIDE, R_ALIGN, O_ALIGN, LAYER_NORM, CENTER, HAS_BIAS, GELU, HAS_RESIDUAL,
                             HAS_LOW, BLOCK_M, BLOCK_N, BLOCK_K, INPUT_PRECISION, DOT_UPCAST)
        else:
            _linear_tile(a_rows, w_ptr, bias_ptr, r_ptr, out_ptr, low_ptr, cs_ptr, rows_c, m_ok,
                         pid_n * BLOCK_N + tl.arange(0, BLOCK_N), mean, rstd, stride_rm, stride_om,
                         K, N, W_STRIDE, R_ALIGN, O_ALIGN, LAYER_NORM, CENTER, HAS_BIAS, GELU, HAS_RESIDUAL,
                         HAS_LOW, BLOCK_M, BLOCK_N, BLOCK_K, INPUT_PRECISION, DOT_UPCAST)

    _CONFIGS = [
        triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk}, num_warps=w, num_stages=s)
        for bm, bn, bk, w, s in [(128, 128, 64, 8, 3), (128, 128, 128, 8, 3), (64, 128, 128, 4, 3),
                                 (128, 64, 64, 4, 4)]
    ]

    def _prune(configs, named_args, **kwargs):
        kept = [c for c in configs if kwargs["W_STRIDE"] % c.kwargs["BLOCK_N"] == 0]
        if kwargs.get("INPUT_PRECISION") == "ieee":  # fp32 operands: halve the shared memory per stage
            kept = [c for c in kept if c.kwargs["BLOCK_N"] * c.kwargs["BLOCK_K"] <= 128 * 64] or kept
        return tuned(kept)

    _linear_tuned = triton.autotune(
        configs=_CONFIGS,
        key=["K", "N", "W_STRIDE", "A_ALIGN", "R_ALIGN", "O_ALIGN", "LAYER_NORM", "GELU", "HAS_RESIDUAL",
             "INPUT_PRECISION", "DOT_UPCAST"],
        prune_configs_by={"early_config_prune": _prune},
    )(_linear_kernel)


def _launch(x, weight, bias, residual, colsum, ln_eps, n, gelu, out_dtype, input_precision, low_dtype=None):
    m, k = x.shape
    out = torch.empty((m, n), device=x.device, dtype=out_dtype)
    dst = out if store_dtype(out_dtype) == out_dtype else torch.empty((m, n), device=x.device,
                                                                       dtype=store_dtype(out_dtype))
    low = torch.empty((m, n) if low_dtype is not None else (0, n), device=x.device, dtype=low_dtype or out_dtype)
    low_dst = low if store_dtype(low.dtype) == low.dtype else torch.empty(low.shape, device=x.device,
                                                                          dtype=store_dtype(low.dtype))
    r = residual if residual is not None else dst
    layer_norm = ln_eps is not None
    # Low-precision input already in the GEMM dtype: no per-element work, the centring is exact after
    # the GEMM. fp32 (or fp32 input into a bf16 GEMM): centre each element before the cast.
    center = x.dtype != weight.dtype or x.dtype == torch.float32
    args = (x, weight, bias if bias is not None else weight, r, dst, low_dst if low_dtype is not None else dst,
            colsum if colsum is not None else weight,
            m, x.stride(0), r.stride(0), dst.stride(0), float(ln_eps or 0.0))
    meta = dict(K=k, N=n, W_STRIDE=weight.shape[1], A_ALIGN=alignment(x), R_ALIGN=alignment(r), O_ALIGN=alignment(dst),
                LAYER_NORM=layer_norm, CENTER=center, HAS_BIAS=bias is not None, GELU=gelu, HAS_LOW=low_dtype is not None,
                HAS_RESIDUAL=residual is not None, INPUT_PRECISION=input_precision or dot_precision(weight.dtype),
                DOT_UPCAST=dot_upcast(weight.dtype))
    if INTERPRET:
        block_k = min(64, max(16, triton.next_power_of_2(k)))
        grid = (triton.cdiv(m, 32) * (1 if layer_norm else triton.cdiv(n, 64)),)
        launcher(_linear_kernel)[grid](*args, BLOCK_M=32, BLOCK_N=64, BLOCK_K=block_k, **meta)
    else:
        grid = lambda c: (triton.cdiv(m, c["BLOCK_M"]) * (1 if layer_norm else triton.cdiv(n, c["BLOCK_N"])),)  # noqa
        launcher(_linear_tuned)[grid](*args, **meta)
    if dst is not out:
        out.copy_(dst)
    if low_dst is not low:
        low.copy_(low_dst)
    return out, low


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
    out, low = torch.ops.lua_fast.fused_linear(x, packed.weight, packed.bias, residual, packed.colsum,
                                               packed.ln_eps, packed.n, gelu, out_dtype, input_precision, also_in)
    return (out, low) if also_in is not None else out


# ------------------------------------------------- static description (kernel report)
def launch_site(args: dict, meta: dict) -> str:
    parts = ["LN+" if meta["LAYER_NORM"] else "", f"linear {meta['K']}->{meta['N']}",
             "+GELU" if meta["GELU"] else "", "+residual" if meta["HAS_RESIDUAL"] else ""]
    return "".join(parts)


def launch_flops(args: dict, meta: dict) -> int:
    return 2 * args["M"] * meta["K"] * meta["N"]


def main_loop_trips(meta: dict) -> int:
    return -(-meta["K"] // meta["BLOCK_K"])


def loop_trips(meta: dict, body: list[str]) -> int:
    """Trips of a SASS loop from its opcodes: a loop that stores is the LayerNorm path's loop over
    N tiles (the epilogue is inside it); the others (GEMM, statistics) loop over K."""
    if meta["LAYER_NORM"] and any(op.startswith("STG") for op in body):
        return -(-meta["N"] // meta["BLOCK_N"])
    return main_loop_trips(meta)


__all__ = ["PackedLinear", "pack_linear", "fused_linear", "torch_fused_linear"]
