"""Residual add + LayerNorm in one pass (Triton).

``add_layer_norm(t, weight, bias, eps, *, add=None, add_bias=None, y_dtype=None)`` computes

    s = t + add + add_bias        (in fp32, rounded once to t's dtype: the new residual stream)
    y = LayerNorm(s)              (fp32 statistics of the rounded s, written in ``y_dtype``)

and returns ``(s, y)`` (``s`` is t itself when there is nothing to add). One read of each input
and one write of each output per row, one launch. The triton backend uses it for the standalone
norms (the patch norm and the final norm) and, on its cuBLAS path (fp32, or
``LUA_FAST_TRITON_GEMMS=0``), after the proj and fc2 GEMMs (which then run without their bias);
with the fused GEMMs the block norms live in the qkv / fc1 GEMM prologues instead (``fused_linear``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .conv3x3 import alignment
from .triton_support import (INTERPRET, cdiv, grid_dependency_sync, kernel_op, launcher, next_pow2, pdl_options,
                             store_dtype, tl, triton, unavailable_reason)


def torch_add_layer_norm(t, weight, bias, eps, *, add=None, add_bias=None, y_dtype=None):
    """The PyTorch composition with add_layer_norm's meaning."""
    s = t
    if add is not None or add_bias is not None:
        s = t.float()
        if add is not None:
            s = s + add.float()
        if add_bias is not None:
            s = s + add_bias.float()
        s = s.to(t.dtype)
    y = F.layer_norm(s.float(), s.shape[-1:], weight.float(), bias.float(), eps)
    return s, y.to(y_dtype or t.dtype)


if triton is not None:

    @triton.jit
    def _add_layer_norm_kernel(
        t_ptr, a_ptr, ab_ptr, w_ptr, b_ptr, s_ptr, y_ptr,
        M, stride_t, stride_a, stride_s, stride_y, eps,
        D: tl.constexpr, D_PAD: tl.constexpr, HAS_ADD: tl.constexpr, HAS_ADD_BIAS: tl.constexpr,
        WRITE_SUM: tl.constexpr, NORMALIZE: tl.constexpr, ROUND_SUM: tl.constexpr, BLOCK_M: tl.constexpr,
        T_ALIGN: tl.constexpr, A_ALIGN: tl.constexpr, S_ALIGN: tl.constexpr, Y_ALIGN: tl.constexpr,
        PDL: tl.constexpr,
    ):
        grid_dependency_sync(PDL)
        rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        cols = tl.arange(0, D_PAD)
        ok = (rows < M)[:, None] & (cols < D)[None, :]
        r64 = rows.to(tl.int64)
        x = tl.load(t_ptr + tl.multiple_of(r64 * stride_t, T_ALIGN)[:, None] + cols[None, :], mask=ok, other=0.0)
        if HAS_ADD or HAS_ADD_BIAS:
            s = x.to(tl.float32)
            if HAS_ADD:
                s += tl.load(a_ptr + tl.multiple_of(r64 * stride_a, A_ALIGN)[:, None] + cols[None, :], mask=ok,
                             other=0.0).to(tl.float32)
            if HAS_ADD_BIAS:
                s += tl.load(ab_ptr + cols, mask=cols < D, other=0.0).to(tl.float32)[None, :]
            if ROUND_SUM:  # the residual stream's rounding, as an eager add; the LN reads the rounded sum
                s = s.to(t_ptr.dtype.element_ty)
            if WRITE_SUM:
                tl.store(s_ptr + tl.multiple_of(r64 * stride_s, S_ALIGN)[:, None] + cols[None, :], s, mask=ok)
            x = s
        if NORMALIZE:
            x = x.to(tl.float32)
            mean = tl.sum(x, 1) / D
            xc = tl.where(ok, x - mean[:, None], 0.0)
            rstd = 1.0 / tl.sqrt(tl.sum(xc * xc, 1) / D + eps)
            w = tl.load(w_ptr + cols, mask=cols < D, other=0.0)
            b = tl.load(b_ptr + cols, mask=cols < D, other=0.0)
            y = xc * rstd[:, None] * w[None, :] + b[None, :]
            tl.store(y_ptr + tl.multiple_of(r64 * stride_y, Y_ALIGN)[:, None] + cols[None, :],
                     y.to(y_ptr.dtype.element_ty), mask=ok)


def _launch(t, add, add_bias, weight, bias, eps, y_dtype):
    """y_dtype None: only the sum (no LayerNorm)."""
    m, d = t.shape
    write_sum = add is not None or add_bias is not None
    normalize = y_dtype is not None
    s = torch.empty_like(t) if write_sum else t
    y = torch.empty((m, d) if normalize else (0, d), device=t.device, dtype=y_dtype or t.dtype)
    s_dst = s if not write_sum or store_dtype(s.dtype) == s.dtype else \
        torch.empty(s.shape, device=t.device, dtype=store_dtype(s.dtype))
    y_dst = y if store_dtype(y.dtype) == y.dtype else torch.empty(y.shape, device=t.device, dtype=store_dtype(y.dtype))
    a = add if add is not None else t
    d_pad = next_pow2(d)
    block_m = max(1, min(16, 4096 // d_pad))  # a few rows per program, ~4K elements in flight
    args = (t, a, add_bias if add_bias is not None else weight, weight, bias, s_dst, y_dst,
            m, t.stride(0), a.stride(0), s_dst.stride(0), max(1, y_dst.stride(0)), float(eps))
    meta = dict(D=d, D_PAD=d_pad, HAS_ADD=add is not None, HAS_ADD_BIAS=add_bias is not None, WRITE_SUM=write_sum,
                NORMALIZE=normalize, BLOCK_M=block_m,
                # the interpreter rounds fp32 -> bf16 toward zero in kernels: there PyTorch rounds s
                ROUND_SUM=store_dtype(t.dtype) == t.dtype, T_ALIGN=alignment(t), A_ALIGN=alignment(a), S_ALIGN=alignment(s_dst),
                Y_ALIGN=alignment(y_dst))
    launcher(_add_layer_norm_kernel)[(cdiv(m, block_m),)](*args, num_warps=4, **meta, **pdl_options(t.device))
    if s_dst is not s:
        s.copy_(s_dst)
    if y_dst is not y:
        y.copy_(y_dst)
    return (s if write_sum else t.new_empty(0)), y


def _add_layer_norm_fake(t, add, add_bias, weight, bias, eps, y_dtype):
    write_sum = add is not None or add_bias is not None
    y_shape = t.shape if y_dtype is not None else (0, t.shape[1])
    return (torch.empty_like(t) if write_sum else t.new_empty(0)), t.new_empty(y_shape, dtype=y_dtype or t.dtype)


@kernel_op("add_layer_norm", _add_layer_norm_fake)
def _add_layer_norm_op(t: torch.Tensor, add: torch.Tensor | None, add_bias: torch.Tensor | None, weight: torch.Tensor,
                       bias: torch.Tensor, eps: float,
                       y_dtype: torch.dtype | None) -> tuple[torch.Tensor, torch.Tensor]:
    return _launch(t, add, add_bias, weight, bias, eps, y_dtype)


def add_layer_norm(t, weight, bias, eps, *, add=None, add_bias=None, y_dtype=None, normalize=True, check=True):
    """``(t + add + add_bias, LayerNorm(...))`` in one launch; see the module docstring.

    t, add: (M, D) rows with unit column stride. weight, bias: (D,) LayerNorm affine.
    Returns (s, y): s in t's dtype (t itself when nothing is added), y in ``y_dtype`` (default t's);
    ``normalize=False`` only adds (y is None).
    """
    if check:
        if t.dim() != 2 or t.stride(1) != 1:
            raise ValueError(f"add_layer_norm: t must be (M, D) with unit column stride, got {tuple(t.shape)}")
        d = t.shape[1]
        if add is not None and (add.shape != t.shape or add.stride(1) != 1):
            raise ValueError(f"add_layer_norm: add must match t {tuple(t.shape)}, got {tuple(add.shape)}")
        for name, v in (("weight", weight), ("bias", bias), ("add_bias", add_bias)):
            if v is not None and tuple(v.shape) != (d,):
                raise ValueError(f"add_layer_norm: {name} must be ({d},), got {tuple(v.shape)}")
        reason = unavailable_reason(t.device)
        if reason:
            raise RuntimeError(f"add_layer_norm: Triton kernel cannot run: {reason}")
    s, y = _add_layer_norm_op(t, add, add_bias, weight.float().contiguous(), bias.float().contiguous(),
                                             float(eps), (y_dtype or t.dtype) if normalize else None)
    return (t if add is None and add_bias is None else s), (y if normalize else None)


# ------------------------------------------------- static description (kernel report)
def launch_site(args: dict, meta: dict) -> str:
    add = "add" if meta["HAS_ADD"] or meta["HAS_ADD_BIAS"] else ""
    return f"{add}{'+' if add and meta['NORMALIZE'] else ''}{'layernorm' if meta['NORMALIZE'] else ''} {meta['D']}"


def launch_flops(args: dict, meta: dict) -> int:
    return 0


def main_loop_trips(meta: dict) -> int:
    return 1


__all__ = ["add_layer_norm", "torch_add_layer_norm"]
