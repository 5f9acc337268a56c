"""Fused 3x3 convolution over channels-last input (implicit GEMM, Triton).

``conv3x3(x, weight, bias, *, leaky_slope=None, residual=None, pixel_shuffle=False)``
computes ``act(conv2d(x, weight, bias, padding=1)) + residual`` for x indexed
(B, H, W, Cin) with any strides — the trunk's token tensor (B, H*W, D) viewed as
(B, H, W, D), or an NCHW latent permuted, is read in place without a copy — and
writes channels-last (B, H, W, Cout). With ``pixel_shuffle=True`` the epilogue stores
each output channel straight at its PixelShuffle(2) position, returning
(B, 2H, 2W, Cout/4): no pre-shuffle tensor and no shuffle copy exist.

The GEMM is M = B*H*W output pixels, N = Cout, K = 9*Cin; weights are packed once to
(9*Cin, Cout) (``pack_weight``). Zero padding comes from masked loads. Accumulation
in fp32; fp32 inputs use IEEE dots.

``torch_conv3x3`` is the PyTorch composition (conv2d + leaky_relu + residual +
pixel_shuffle) with the same signature: the fallback and the test oracle.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .triton_support import INTERPRET, dot_precision, dot_upcast, store_dtype, tl, triton, unavailable_reason


# --------------------------------------------------------------------- helpers
def pack_weight(weight: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """(Cout, Cin, 3, 3) -> (9*Cin, Cout), row (ky*3 + kx)*Cin + ci: the GEMM's K-major B operand."""
    if weight.dim() != 4 or tuple(weight.shape[2:]) != (3, 3):
        raise ValueError(f"conv3x3: weight must be (Cout, Cin, 3, 3), got {tuple(weight.shape)}")
    cout, cin = weight.shape[:2]
    packed = weight.permute(2, 3, 1, 0).reshape(9 * cin, cout)
    return packed.to(dtype or weight.dtype).contiguous()


def _check(x, weight, bias, residual, pixel_shuffle, packed):
    if x.dim() != 4:
        raise ValueError(f"conv3x3: x must be channels-last (B, H, W, Cin), got shape {tuple(x.shape)}")
    b, h, w, cin = x.shape
    if packed:
        if weight.dim() != 2 or weight.shape[0] != 9 * cin:
            raise ValueError(
                f"conv3x3: packed weight must be (9*Cin, Cout) = ({9 * cin}, Cout), got {tuple(weight.shape)}"
            )
        cout = weight.shape[1]
    else:
        if weight.dim() != 4 or tuple(weight.shape[2:]) != (3, 3):
            raise ValueError(f"conv3x3: weight must be (Cout, Cin, 3, 3), got {tuple(weight.shape)}")
        if weight.shape[1] != cin:
            raise ValueError(f"conv3x3: x has {cin} channels but the weight expects {weight.shape[1]}")
        cout = weight.shape[0]
    if bias is not None and tuple(bias.shape) != (cout,):
        raise ValueError(f"conv3x3: bias must be ({cout},), got {tuple(bias.shape)}")
    if pixel_shuffle and cout % 4:
        raise ValueError(f"conv3x3: pixel_shuffle needs Cout divisible by 4, got {cout}")
    if residual is not None and tuple(residual.shape) != (b, h, w, cout):
        raise ValueError(
            f"conv3x3: residual must match the conv output (B, H, W, Cout) = {(b, h, w, cout)}, "
            f"got {tuple(residual.shape)}"
        )
    if residual is not None and pixel_shuffle:
        raise ValueError("conv3x3: residual and pixel_shuffle cannot be combined")
    if not x.is_floating_point():
        raise ValueError(f"conv3x3: x must be floating point, got {x.dtype}")
    if b == 0 or h == 0 or w == 0:
        raise ValueError(f"conv3x3: empty input {tuple(x.shape)}")
    return cout


# ---------------------------------------------------------------- PyTorch oracle
def torch_conv3x3(x, weight, bias=None, *, leaky_slope=None, residual=None, pixel_shuffle=False):
    """conv2d + optional LeakyReLU + optional residual + optional PixelShuffle(2), channels-last in
    and out; ``weight`` in PyTorch's (Cout, Cin, 3, 3) layout."""
    _check(x, weight, bias, residual, pixel_shuffle, packed=False)
    y = F.conv2d(x.permute(0, 3, 1, 2), weight.to(x.dtype), None if bias is None else bias.to(x.dtype), padding=1)
    if leaky_slope is not None:
        y = F.leaky_relu(y, leaky_slope)
    if residual is not None:
        y = y + residual.permute(0, 3, 1, 2)
    if pixel_shuffle:
        y = F.pixel_shuffle(y, 2)
    return y.permute(0, 2, 3, 1)


# ------------------------------------------------------------------- the kernel
if triton is not None:

    @triton.jit
    def _conv3x3_kernel(
        x_ptr, w_ptr, b_ptr, r_ptr, out_ptr,
        pixels, height, width, c_out,
        sx_b, sx_h, sx_w, sx_c, sr_b, sr_h, sr_w, sr_c, so_b, so_h, so_w,
        slope,
        C_IN: tl.constexpr,  # constexpr: static K loop (and Triton 3.6's interpreter cannot loop to a runtime bound)
        HAS_BIAS: tl.constexpr, HAS_LEAKY: tl.constexpr, HAS_RESIDUAL: tl.constexpr,
        PIXEL_SHUFFLE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
        INPUT_PRECISION: tl.constexpr, DOT_UPCAST: tl.constexpr,
    ):
        offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)  # output pixels, row-major (b, y, x)
        m_ok = offs_m < pixels
        batch = (offs_m // (height * width)).to(tl.int64)
        rest = offs_m % (height * width)
        py = rest // width
        px = rest % width
        offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)  # output channels
        n_ok = offs_n < c_out
        acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
        # One flat K loop over (tap, channel block), so Triton's pipeliner overlaps the loads of the
        # next step with the current dot (nested loops left the conv single-staged).
        K_BLOCKS: tl.constexpr = (C_IN + BLOCK_K - 1) // BLOCK_K
        for step in range(9 * K_BLOCKS):
            tap = step // K_BLOCKS
            offs_k = (step % K_BLOCKS) * BLOCK_K + tl.arange(0, BLOCK_K)
            k_ok = offs_k < C_IN
            iy = py + (tap // 3 - 1)
            ix = px + (tap % 3 - 1)
            inside = m_ok & (iy >= 0) & (iy < height) & (ix >= 0) & (ix < width)  # zero padding
            row = x_ptr + batch * sx_b + iy.to(tl.int64) * sx_h + ix.to(tl.int64) * sx_w
            a = tl.load(row[:, None] + offs_k[None, :] * sx_c, mask=inside[:, None] & k_ok[None, :], other=0.0)
            wt = tl.load(w_ptr + (tap * C_IN + offs_k)[:, None] * c_out + offs_n[None, :],
                         mask=k_ok[:, None] & n_ok[None, :], other=0.0)
            if DOT_UPCAST:
                acc = tl.dot(a.to(tl.float32), wt.to(tl.float32), acc, input_precision="ieee")
            else:
                acc = tl.dot(a, wt, acc, input_precision=INPUT_PRECISION)
        if HAS_BIAS:
            acc += tl.load(b_ptr + offs_n, mask=n_ok, other=0.0).to(tl.float32)[None, :]
        if HAS_LEAKY:
            acc = tl.where(acc > 0, acc, acc * slope)
        ok = m_ok[:, None] & n_ok[None, :]
        if HAS_RESIDUAL:
            res = tl.load(r_ptr + (batch * sr_b + py.to(tl.int64) * sr_h + px.to(tl.int64) * sr_w)[:, None]
                          + offs_n[None, :] * sr_c, mask=ok, other=0.0)
            acc += res.to(tl.float32)
        if PIXEL_SHUFFLE:  # channel 4c + 2i + j of pixel (y, x) -> channel c of pixel (2y + i, 2x + j)
            oy = 2 * py[:, None] + ((offs_n // 2) % 2)[None, :]
            ox = 2 * px[:, None] + (offs_n % 2)[None, :]
            dst = out_ptr + batch[:, None] * so_b + oy.to(tl.int64) * so_h + ox.to(tl.int64) * so_w \
                + (offs_n // 4)[None, :]
        else:
            dst = out_ptr + (batch * so_b + py.to(tl.int64) * so_h + px.to(tl.int64) * so_w)[:, None] \
                + offs_n[None, :]
        tl.store(dst, acc.to(out_ptr.dtype.element_ty), mask=ok)

    _CONFIGS = [
        triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk}, num_warps=w, num_stages=s)
        for bm, bn, bk, w, s in [(128, 128, 32, 8, 3), (128, 64, 32, 4, 3), (64, 128, 64, 4, 3), (64, 64, 64, 4, 3)]
    ]

    def _prune(configs, named_args, **kwargs):
        c_out = named_args["c_out"]
        cap = max(16, triton.next_power_of_2(c_out))
        kept = [c for c in configs if c.kwargs["BLOCK_N"] <= cap]
        return kept or [triton.Config({"BLOCK_M": 128, "BLOCK_N": cap, "BLOCK_K": 32}, num_warps=4, num_stages=3)]

    _conv3x3_tuned = triton.autotune(
        configs=_CONFIGS,
        key=["C_IN", "c_out", "HAS_LEAKY", "HAS_RESIDUAL", "PIXEL_SHUFFLE", "INPUT_PRECISION", "DOT_UPCAST"],
        prune_configs_by={"early_config_prune": _prune},
    )(_conv3x3_kernel)


def _launch(x, w_packed, bias, residual, slope, has_leaky, pixel_shuffle, out_dtype=None, out=None):
    b, h, w, cin = x.shape
    cout = w_packed.shape[1]
    shape = (b, 2 * h, 2 * w, cout // 4) if pixel_shuffle else (b, h, w, cout)
    out_dtype = out_dtype or x.dtype
    if out is None:
        out = torch.empty(shape, device=x.device, dtype=out_dtype)
    kept = store_dtype(out.dtype)
    dst = out if kept == out.dtype else torch.empty(shape, device=x.device, dtype=kept)
    r = residual if residual is not None else dst  # unused pointer when there is no residual
    pixels = b * h * w
    args = (x, w_packed, bias if bias is not None else w_packed, r, dst, pixels, h, w, cout,
            x.stride(0), x.stride(1), x.stride(2), x.stride(3), r.stride(0), r.stride(1), r.stride(2), r.stride(3),
            dst.stride(0), dst.stride(1), dst.stride(2), float(slope))
    meta = dict(C_IN=cin, HAS_BIAS=bias is not None, HAS_LEAKY=has_leaky, HAS_RESIDUAL=residual is not None,
                PIXEL_SHUFFLE=pixel_shuffle, INPUT_PRECISION=dot_precision(x.dtype), DOT_UPCAST=dot_upcast(x.dtype))
    if INTERPRET:
        block_n = min(64, max(16, triton.next_power_of_2(cout)))
        block_k = min(32, max(16, triton.next_power_of_2(cin)))
        grid = (triton.cdiv(pixels, 32), triton.cdiv(cout, block_n))
        _conv3x3_kernel[grid](*args, BLOCK_M=32, BLOCK_N=block_n, BLOCK_K=block_k, **meta)
    else:
        grid = lambda m: (triton.cdiv(pixels, m["BLOCK_M"]), triton.cdiv(cout, m["BLOCK_N"]))  # noqa: E731
        _conv3x3_tuned[grid](*args, **meta)
    if dst is not out:
        out.copy_(dst)
    return out


@torch.library.custom_op("lua_fast::conv3x3", mutates_args=())
def _conv3x3_op(x: torch.Tensor, w_packed: torch.Tensor, bias: torch.Tensor | None, residual: torch.Tensor | None,
                slope: float, has_leaky: bool, pixel_shuffle: bool, out_dtype: torch.dtype) -> torch.Tensor:
    return _launch(x, w_packed, bias, residual, slope, has_leaky, pixel_shuffle, out_dtype)


@_conv3x3_op.register_fake
def _(x, w_packed, bias, residual, slope, has_leaky, pixel_shuffle, out_dtype):
    b, h, w, _ = x.shape
    cout = w_packed.shape[1]
    shape = (b, 2 * h, 2 * w, cout // 4) if pixel_shuffle else (b, h, w, cout)
    return x.new_empty(shape, dtype=out_dtype)


def conv3x3(x, weight, bias=None, *, leaky_slope=None, residual=None, pixel_shuffle=False, packed=False,
            out_dtype=None):
    """Fused 3x3 conv over channels-last x (B, H, W, Cin); see the module docstring.

    ``weight``: (Cout, Cin, 3, 3), or already packed (9*Cin, Cout) with ``packed=True``.
    x may have any strides (an NCHW tensor permuted to (B, H, W, C) is read in place).
    Returns channels-last (B, H, W, Cout), or (B, 2H, 2W, Cout/4) with ``pixel_shuffle``, in
    ``out_dtype`` (default: x's dtype; accumulation is fp32 either way, so an fp32 output of
    bf16 operands keeps the fp32 residual add exact).
    """
    _check(x, weight, bias, residual, pixel_shuffle, packed)
    reason = unavailable_reason(x.device)
    if reason:
        raise RuntimeError(f"conv3x3: Triton kernel cannot run: {reason}")
    if x.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"conv3x3: dtype {x.dtype} not supported (float32, float16, bfloat16)")
    w_packed = weight.to(x.dtype).contiguous() if packed else pack_weight(weight, x.dtype)
    bias = None if bias is None else bias.float().contiguous()  # added to the fp32 accumulator
    return torch.ops.lua_fast.conv3x3(
        x, w_packed, bias, residual, 0.0 if leaky_slope is None else float(leaky_slope),
        leaky_slope is not None, pixel_shuffle, out_dtype or x.dtype,
    )


def conv3x3_flops(batch: int, height: int, width: int, c_in: int, c_out: int) -> int:
    return 2 * 9 * batch * height * width * c_in * c_out
