"""Fused 3x3 convolution over channels-last input (implicit GEMM, Triton).

``conv3x3(x, weight, bias, *, leaky_slope=None, residual=None, pixel_shuffle=False)``
computes ``act(conv2d(x, weight, bias, padding=1)) + residual`` for x indexed
(B, H, W, Cin) with any strides — the trunk's token tensor (B, H*W, D) viewed as
(B, H, W, D), or an NCHW latent permuted, is read in place without a copy — and
writes channels-last (B, H, W, Cout). With ``pixel_shuffle=True`` the epilogue stores
each output channel straight at its PixelShuffle(2) position, returning
(B, 2H, 2W, Cout/4): no pre-shuffle tensor and no shuffle copy exist.

The GEMM is M = B*H*W output pixels, N = Cout, K = 9*Cin, accumulated in fp32 (fp32
inputs use IEEE dots). Weights are packed once (``pack_conv``) into a :class:`PackedConv`:
(9*Cin + 64, Wn) K-major with zero rows past K (so the last K block reads no mask) and Wn
= Cout padded to a multiple of the N tile (so weight loads carry no mask and rows are
16-byte aligned); a pixel-shuffle conv's columns are permuted to (2i+j)*Cout/4 + c, so an N
tile is one sub-pixel's run of consecutive output channels and its stores are vectors. The
host checks each tensor's strides and base pointer and passes their common power-of-two
divisor as ``*_ALIGN`` (the channel stride 360 is not a multiple of 16, so the JIT alone
cannot prove the rows 16-byte aligned); programs run N tiles fastest, so the tiles of one
block of pixels read its input from L2 together. The K loop runs over (tap, channel block), taps
outer, or (an autotune choice on Triton >= 3.9) taps inner with the input loaded through L1, so
the 9 taps' overlapping input rows can come from L1 instead of 9 times from L2.

``torch_conv3x3`` is the PyTorch composition (conv2d + leaky_relu + residual +
pixel_shuffle) with the same signature: the fallback and the test oracle.
"""

from __future__ import annotations

import math

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .triton_support import (INTERPRET, autotuned, cdiv, dot_precision, dot_upcast, fp32_operands, grid_dependency_sync,
                             kernel_op, launcher, next_pow2, note_launch, pdl_options, size_class, store_dtype, tl,
                             triton, triton_version, tuned, unavailable_reason, without_data)

K_PAD_ROWS = 128  # zero rows after the 9*Cin packed rows: the largest BLOCK_K


# --------------------------------------------------------------------- packing
@dataclass(frozen=True)
class PackedConv:
    """A 3x3 conv's weights in the kernel's layout (see the module docstring)."""

    weight: torch.Tensor  # (9*Cin + K_PAD_ROWS, Wn), rows (ky*3 + kx)*Cin + ci
    bias: torch.Tensor | None  # (Wn,) float32, zero past Cout
    c_in: int
    c_out: int
    pixel_shuffle: bool  # columns in sub-pixel order

    def to(self, dtype: torch.dtype) -> "PackedConv":
        return PackedConv(self.weight.to(dtype), self.bias, self.c_in, self.c_out, self.pixel_shuffle)


def padded_width(c_out: int) -> int:
    """Packed column count: Cout rounded up to a multiple of min(128, next power of two >= Cout), >= 16."""
    tile = min(128, max(16, 1 << (c_out - 1).bit_length()))
    return -(-c_out // tile) * tile


def pack_conv(weight: torch.Tensor, bias: torch.Tensor | None = None, dtype: torch.dtype | None = None, *,
              pixel_shuffle: bool = False) -> PackedConv:
    """(Cout, Cin, 3, 3) weight and (Cout,) bias -> :class:`PackedConv` (weights in ``dtype``)."""
    if weight.dim() != 4 or tuple(weight.shape[2:]) != (3, 3):
        raise ValueError(f"conv3x3: weight must be (Cout, Cin, 3, 3), got {tuple(weight.shape)}")
    cout, cin = weight.shape[:2]
    if pixel_shuffle and cout % 4:
        raise ValueError(f"conv3x3: pixel_shuffle needs Cout divisible by 4, got {cout}")
    k = weight.permute(2, 3, 1, 0).reshape(9 * cin, cout).float()
    b = None if bias is None else bias.detach().float().reshape(cout)
    if pixel_shuffle:  # column 4c + s -> s * Cout/4 + c (s = 2i + j, the sub-pixel)
        k = k.view(9 * cin, cout // 4, 4).transpose(1, 2).reshape(9 * cin, cout)
        b = None if b is None else b.view(cout // 4, 4).t().reshape(cout)
    width = padded_width(cout)
    packed = torch.zeros(9 * cin + K_PAD_ROWS, width, device=weight.device, dtype=torch.float32)
    packed[: 9 * cin, :cout] = k
    if b is not None:
        b = torch.cat([b, b.new_zeros(width - cout)]).contiguous()
    return PackedConv(packed.to(dtype or weight.dtype), b, cin, cout, pixel_shuffle)


def alignment(t: torch.Tensor, skip_unit: bool = True) -> int:
    """The largest power of two <= 16 dividing t's start (in elements, from a 16-byte boundary) and
    every non-unit stride: the ``multiple_of`` hint a row offset into t may carry. Under tracing
    (no data pointer) the allocation is taken as 16-byte aligned, as CUDA's allocator guarantees."""
    if without_data(t):
        if (t.storage_offset() * t.element_size()) % 16:
            return 1
    elif t.data_ptr() % 16:
        return 1
    # gcd with 16: the largest power of two <= 16 dividing every stride (0 divides by anything)
    return math.gcd(16, *(st for st in t.stride() if not (skip_unit and st == 1)))


def _check_weight(x, weight, bias) -> tuple[int, int]:
    """(Cin, Cout) of a (Cout, Cin, 3, 3) weight that fits x; the bias must be (Cout,)."""
    if weight.dim() != 4 or tuple(weight.shape[2:]) != (3, 3):
        raise ValueError(f"conv3x3: weight must be (Cout, Cin, 3, 3), got {tuple(weight.shape)}")
    if x.dim() == 4 and weight.shape[1] != x.shape[3]:
        raise ValueError(f"conv3x3: x has {x.shape[3]} channels but the weight expects {weight.shape[1]}")
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"conv3x3: bias must be ({weight.shape[0]},), got {tuple(bias.shape)}")
    return weight.shape[1], weight.shape[0]


def _check(x, c_in, c_out, residual, pixel_shuffle) -> None:
    if x.dim() != 4:
        raise ValueError(f"conv3x3: x must be channels-last (B, H, W, Cin), got shape {tuple(x.shape)}")
    b, h, w, cin = x.shape
    if cin != c_in:
        raise ValueError(f"conv3x3: x has {cin} channels but the weight expects {c_in}")
    if pixel_shuffle and c_out % 4:
        raise ValueError(f"conv3x3: pixel_shuffle needs Cout divisible by 4, got {c_out}")
    if residual is not None and tuple(residual.shape) != (b, h, w, c_out):
        raise ValueError(
            f"conv3x3: residual must match the conv output (B, H, W, Cout) = {(b, h, w, c_out)}, "
            f"got {tuple(residual.shape)}"
        )
    if residual is not None and pixel_shuffle:
        raise ValueError("conv3x3: residual and pixel_shuffle cannot be combined")
    if not x.is_floating_point():
        raise ValueError(f"conv3x3: x must be floating point, got {x.dtype}")
    if b == 0 or h == 0 or w == 0:
        raise ValueError(f"conv3x3: empty input {tuple(x.shape)}")


# ---------------------------------------------------------------- PyTorch oracle
def torch_conv3x3(x, weight, bias=None, *, leaky_slope=None, residual=None, pixel_shuffle=False):
    """conv2d + optional LeakyReLU + optional residual + optional PixelShuffle(2), channels-last in
    and out; ``weight`` in PyTorch's (Cout, Cin, 3, 3) layout."""
    _check(x, *_check_weight(x, weight, bias), residual, pixel_shuffle)
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
        pixels, height, width,
        sx_b, sx_h, sx_w, sx_c, sr_b, sr_h, sr_w, so_b, so_h, so_w,
        slope, size_key,
        C_IN: tl.constexpr, C_OUT: tl.constexpr, W_STRIDE: tl.constexpr,
        X_ALIGN: tl.constexpr, R_ALIGN: tl.constexpr, O_ALIGN: tl.constexpr,
        HAS_BIAS: tl.constexpr, HAS_LEAKY: tl.constexpr, HAS_RESIDUAL: tl.constexpr,
        PIXEL_SHUFFLE: tl.constexpr, PADDED_INPUT: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, TAP_INNER: tl.constexpr,
        A_L1: tl.constexpr, INPUT_PRECISION: tl.constexpr, DOT_UPCAST: tl.constexpr, PDL: tl.constexpr,
    ):
        grid_dependency_sync(PDL)
        # A_L1 is an int (a string config value breaks torch.compile's per-config grid code, torch 2.11-2.13)
        A_CACHE: tl.constexpr = ".ca" if A_L1 else ""
        N_TILES: tl.constexpr = (C_OUT + BLOCK_N - 1) // BLOCK_N
        K_BLOCKS: tl.constexpr = (C_IN + BLOCK_K - 1) // BLOCK_K
        EVEN_K: tl.constexpr = C_IN % BLOCK_K == 0
        EVEN_N: tl.constexpr = C_OUT % BLOCK_N == 0
        pid = tl.program_id(0)
        pid_n = pid % N_TILES  # N tiles fastest: the tiles of one pixel block share its input in L2
        pid_m = pid // N_TILES
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # output pixels, row-major (b, y, x)
        m_ok = offs_m < pixels
        if PADDED_INPUT:  # rows past the end re-read the last pixel (discarded): loads need no row mask
            offs_m = tl.minimum(offs_m, pixels - 1)
        batch = (offs_m // (height * width)).to(tl.int64)
        rest = offs_m % (height * width)
        py = rest // width
        px = rest % width
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # packed output columns
        acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
        # Per pixel once: its input row offset and which neighbours exist (zero padding); the loop
        # then only adds a per-tap scalar offset and picks the tap's edge conditions.
        center = batch * sx_b + py.to(tl.int64) * sx_h + px.to(tl.int64) * sx_w
        # Bits: 1 a row above, 2 a row below, 4 a column left, 8 a column right, 16 a real pixel.
        edges = (py > 0).to(tl.int32) | ((py < height - 1).to(tl.int32) << 1) | ((px > 0).to(tl.int32) << 2) \
            | ((px < width - 1).to(tl.int32) << 3) | (m_ok.to(tl.int32) << 4)
        # One flat K loop over (tap, channel block), so Triton's pipeliner overlaps the loads of the
        # next step with the current dot. TAP_INNER runs the 9 taps of a channel block in a row: a
        # tap's input tile is its neighbour's shifted by one pixel (or one image row), so with the
        # input loaded through L1 (A_L1: ".ca"; the default async copy bypasses it) most of the
        # 9x re-read of the im2col operand can hit L1 instead of L2 (launch_l2_bytes).
        for step in range(9 * K_BLOCKS):
            if TAP_INNER:
                tap = step % 9
                offs_k = (step // 9) * BLOCK_K + tl.arange(0, BLOCK_K)
            else:
                tap = step // K_BLOCKS
                offs_k = (step % K_BLOCKS) * BLOCK_K + tl.arange(0, BLOCK_K)
            dy = tap // 3 - 1
            dx = tap % 3 - 1
            need = 16 | (dy < 0).to(tl.int32) | ((dy > 0).to(tl.int32) << 1) | ((dx < 0).to(tl.int32) << 2) \
                | ((dx > 0).to(tl.int32) << 3)  # a scalar: one AND and one compare per row below
            inside = (edges & need) == need
            row = tl.multiple_of(center + (dy * sx_h + dx * sx_w), X_ALIGN)
            a_ptrs = x_ptr + row[:, None] + offs_k[None, :] * sx_c
            if PADDED_INPUT:  # a zero border surrounds the input: no padding masks
                if EVEN_K:
                    a = tl.load(a_ptrs, cache_modifier=A_CACHE)
                else:
                    a = tl.load(a_ptrs, mask=(offs_k < C_IN)[None, :], other=0.0, cache_modifier=A_CACHE)
            elif EVEN_K:
                a = tl.load(a_ptrs, mask=inside[:, None], other=0.0, cache_modifier=A_CACHE)
            else:
                a = tl.load(a_ptrs, mask=inside[:, None] & (offs_k < C_IN)[None, :], other=0.0,
                            cache_modifier=A_CACHE)
            # Zero rows past 9*Cin and zero columns past Cout: no weight mask (A is zero for k >= Cin).
            wt = tl.load(w_ptr + (tap * C_IN + offs_k)[:, None] * W_STRIDE + offs_n[None, :])
            if DOT_UPCAST:
                acc = tl.dot(a.to(tl.float32), wt.to(tl.float32), acc, input_precision="ieee")
            else:
                acc = tl.dot(a.to(wt.dtype), wt, acc, input_precision=INPUT_PRECISION)  # x may be wider
        if HAS_BIAS:
            acc += tl.load(b_ptr + offs_n)[None, :]
        if HAS_LEAKY:
            acc = tl.where(acc > 0, acc, acc * slope)
        if EVEN_N:
            ok = m_ok[:, None]
        else:
            ok = m_ok[:, None] & (offs_n < C_OUT)[None, :]
        if HAS_RESIDUAL:
            r_row = tl.multiple_of(batch * sr_b + py.to(tl.int64) * sr_h + px.to(tl.int64) * sr_w, R_ALIGN)
            acc += tl.load(r_ptr + r_row[:, None] + offs_n[None, :], mask=ok, other=0.0).to(tl.float32)
        if PIXEL_SHUFFLE:  # packed column s*C/4 + c (s = 2i + j) -> channel c of pixel (2y + i, 2x + j)
            QUARTER: tl.constexpr = C_OUT // 4
            if QUARTER % BLOCK_N == 0:  # one sub-pixel per tile: consecutive channels, vector stores
                sub = (pid_n * BLOCK_N) // QUARTER
                chan = offs_n - sub * QUARTER
                o_row = batch * so_b + (2 * py + sub // 2).to(tl.int64) * so_h + (2 * px + sub % 2).to(tl.int64) * so_w
                dst = out_ptr + tl.multiple_of(o_row, O_ALIGN)[:, None] + chan[None, :]
            else:
                sub = offs_n // QUARTER
                oy = 2 * py[:, None] + (sub // 2)[None, :]
                ox = 2 * px[:, None] + (sub % 2)[None, :]
                dst = out_ptr + batch[:, None] * so_b + oy.to(tl.int64) * so_h + ox.to(tl.int64) * so_w \
                    + (offs_n % QUARTER)[None, :]
        else:
            o_row = tl.multiple_of(batch * so_b + py.to(tl.int64) * so_h + px.to(tl.int64) * so_w, O_ALIGN)
            dst = out_ptr + o_row[:, None] + offs_n[None, :]
        tl.store(dst, acc.to(out_ptr.dtype.element_ty), mask=ok)

    # Each tile twice: taps outer with the input's async copies bypassing L1 (as before), and taps
    # inner with them cached in L1 (TAP_INNER; the autotuner times both: how much the L1 keeps
    # depends on the shared memory the tile leaves it). Without L1_ASYNC_COPIES (below) the
    # taps-inner configs would only reorder the loop, and the prune hook drops them.
    _CONFIGS = [
        triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "TAP_INNER": inner, "A_L1": inner},
                      num_warps=w, num_stages=s)
        for inner in (0, 1)
        for bm, bn, bk, w, s in [
            (128, 128, 64, 8, 3), (128, 128, 32, 8, 4), (64, 128, 64, 4, 3), (128, 64, 64, 4, 3),
            (128, 256, 64, 8, 3),  # wide N: fewer input re-reads for the 256- and 1024-channel convs
            (256, 16, 64, 4, 3), (256, 16, 128, 4, 3), (128, 16, 128, 4, 4), (512, 16, 64, 4, 3),  # conv_last
            (128, 16, 64, 4, 3),  # (the conv_last tile that fits 99 KiB of shared memory in fp32: RTX 30/40)
        ]
    ]

    def _prune(configs, named_args, **kwargs):
        wn = kwargs["W_STRIDE"]
        small = kwargs["C_OUT"] <= 32
        kept = [c for c in configs if wn % c.kwargs["BLOCK_N"] == 0 and (c.kwargs["BLOCK_N"] <= 32) == small
                and (L1_ASYNC_COPIES or not c.kwargs["TAP_INNER"])]
        if fp32_operands(kwargs):  # fp32 operands: halve the shared memory per stage
            kept = [c for c in kept if c.kwargs["BLOCK_N"] * c.kwargs["BLOCK_M"] <= 128 * 128] or kept
        return tuned(kept) or [triton.Config({"BLOCK_M": 64, "BLOCK_N": min(wn, 64), "BLOCK_K": 32, "TAP_INNER": 0,
                                              "A_L1": 0}, num_warps=4, num_stages=3)]

    _conv3x3_tuned = autotuned(_conv3x3_kernel, _CONFIGS, _prune,
                              ["C_IN", "C_OUT", "W_STRIDE", "X_ALIGN", "R_ALIGN", "O_ALIGN", "HAS_LEAKY",
                               "HAS_RESIDUAL", "PIXEL_SHUFFLE"])


# Interpreter runs: the interpreter's cost is Python per tile operation, so large tiles (few
# programs, few K steps) run fastest (an interpreted forward of the official-fixture model: 68 s
# with 32x64x32 tiles, 26 s with 128x64x64, one of the GPU configs). The kernel tests pin small
# tiles, so their odd sizes still span several programs and K blocks.
INTERPRET_CONFIG = {"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_K": 64, "TAP_INNER": 1}  # (tests run both orders)

# Only Triton >= 3.9 keeps a load's cache modifier on the async copy its pipeliner makes (".ca":
# LDGSTS.E.128, allocating in L1); 3.6-3.8 emit the L1-bypassing copy whatever the modifier (SASS
# read 2026-11-27). (Defined below the kernel: a line added above it would change its cache key.)
L1_ASYNC_COPIES = triton_version() >= (3, 9)


def output_shape(x_shape, c_out: int, pixel_shuffle: bool, out_padded: bool) -> tuple[int, ...]:
    """The op's output: (B, H, W, Cout) or (B, 2H, 2W, Cout/4), plus a 1-pixel border if padded."""
    b, h, w, _ = x_shape
    shape = (b, 2 * h, 2 * w, c_out // 4) if pixel_shuffle else (b, h, w, c_out)
    return (shape[0], shape[1] + 2, shape[2] + 2, shape[3]) if out_padded else shape


def zero_border(buf: torch.Tensor) -> torch.Tensor:
    """Zero the 1-pixel border of a (B, H+2, W+2, C) buffer (two strided fills: first and last
    rows, first and last columns); return its interior view."""
    buf[:, :: buf.shape[1] - 1].zero_()
    buf[:, :, :: buf.shape[2] - 1].zero_()
    note_launch("zero_border")
    note_launch("zero_border")
    return buf[:, 1:-1, 1:-1]


def _launch(x, w_packed, bias, residual, c_out, slope, has_leaky, pixel_shuffle, out_dtype=None, out=None,
            padded_input=False, out_padded=False):
    """Run the kernel. With ``out_padded`` the result is a (B, Ho+2, Wo+2, C) buffer whose border
    is zero (the next conv reads it with ``padded_input``); ``out`` is then ignored."""
    b, h, w, cin = x.shape
    width = w_packed.shape[1]
    out_dtype = out_dtype or x.dtype
    if padded_input and not without_data(x) and not has_zero_border_room(x):  # needs the storage: eager only
        raise ValueError("conv3x3: padded_input=True needs x to be the interior view of a buffer with a "
                         "1-pixel border (e.g. the output of conv3x3(..., out_padded=True))")
    result = None
    if out_padded:
        result = torch.empty(output_shape(x.shape, c_out, pixel_shuffle, True), device=x.device, dtype=out_dtype)
        out = zero_border(result)
    elif out is None:
        out = torch.empty(output_shape(x.shape, c_out, pixel_shuffle, False), device=x.device, dtype=out_dtype)
    kept = store_dtype(out.dtype)
    dst = out if kept == out.dtype else torch.empty(out.shape, device=x.device, dtype=kept)
    r = residual if residual is not None else dst  # unused pointer when there is no residual
    pixels = b * h * w
    args = (x, w_packed, bias if bias is not None else w_packed, r, dst, pixels, h, w,
            x.stride(0), x.stride(1), x.stride(2), x.stride(3), r.stride(0), r.stride(1), r.stride(2),
            dst.stride(0), dst.stride(1), dst.stride(2), float(slope), size_class(pixels))
    meta = dict(C_IN=cin, C_OUT=c_out, W_STRIDE=width, X_ALIGN=alignment(x) if x.stride(3) == 1 else 1,
                R_ALIGN=alignment(r), O_ALIGN=alignment(dst), HAS_BIAS=bias is not None, HAS_LEAKY=has_leaky,
                HAS_RESIDUAL=residual is not None, PIXEL_SHUFFLE=pixel_shuffle, PADDED_INPUT=padded_input,
                INPUT_PRECISION=dot_precision(w_packed.dtype), DOT_UPCAST=dot_upcast(w_packed.dtype))
    if INTERPRET:
        block_m = INTERPRET_CONFIG["BLOCK_M"]
        block_n = min(INTERPRET_CONFIG["BLOCK_N"], width)
        block_k = min(INTERPRET_CONFIG["BLOCK_K"], max(16, next_pow2(cin)))
        grid = (cdiv(pixels, block_m) * cdiv(c_out, block_n),)
        launcher(_conv3x3_kernel)[grid](*args, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k,
                                        TAP_INNER=INTERPRET_CONFIG.get("TAP_INNER", 1), A_L1=0, **meta, PDL=False)
    else:
        grid = lambda m: (cdiv(pixels, m["BLOCK_M"]) * cdiv(c_out, m["BLOCK_N"]),)  # noqa: E731
        launcher(_conv3x3_tuned)[grid](*args, **meta, **pdl_options(x.device))
    if dst is not out:
        out.copy_(dst)
    return out if result is None else result


def _interior_shape(x_shape, padded_input: bool) -> tuple[int, ...]:
    b, h, w, c = x_shape
    return (b, h - 2, w - 2, c) if padded_input else (b, h, w, c)


def _conv3x3_fake(x, w_packed, bias, residual, c_out, slope, has_leaky, pixel_shuffle, out_dtype, padded_input,
                  out_padded):
    return x.new_empty(output_shape(_interior_shape(x.shape, padded_input), c_out, pixel_shuffle, out_padded),
                       dtype=out_dtype)


# A bordered input is passed whole, (B, H+2, W+2, C), not as its interior view: an op may read only
# its inputs. Until 2026-11-28 the op took the interior view and read the border around it in the
# storage, which holds only while every caller hands over that exact view: torch.library.opcheck's
# schema check (it copies the inputs) failed, and a tracer free to copy the view (functionalization,
# Inductor) would have fed the kernel garbage borders, unchecked (the room was only checked eagerly).
@kernel_op("conv3x3", _conv3x3_fake)
def _conv3x3_op(x: torch.Tensor, w_packed: torch.Tensor, bias: torch.Tensor | None, residual: torch.Tensor | None,
                c_out: int, slope: float, has_leaky: bool, pixel_shuffle: bool, out_dtype: torch.dtype,
                padded_input: bool, out_padded: bool) -> torch.Tensor:
    return _launch(x[:, 1:-1, 1:-1] if padded_input else x, w_packed, bias, residual, c_out, slope, has_leaky,
                   pixel_shuffle, out_dtype, padded_input=padded_input, out_padded=out_padded)


def has_zero_border_room(x: torch.Tensor) -> bool:
    """Whether x (B, H, W, C) can be a view into a buffer with a 1-pixel border (the storage holds the
    pixels one row/column before and after every pixel of x)."""
    b, h, w, c = x.shape
    s = x.stride()
    first = x.storage_offset() - s[1] - s[2]
    last = x.storage_offset() + (b - 1) * s[0] + h * s[1] + w * s[2] + (c - 1) * s[3]
    return first >= 0 and (last + 1) * x.element_size() <= x.untyped_storage().nbytes()


def conv3x3(x, weight, bias=None, *, leaky_slope=None, residual=None, pixel_shuffle=False, out_dtype=None,
            padded_input=False, out_padded=False):
    """Fused 3x3 conv over channels-last x (B, H, W, Cin); see the module docstring.

    ``weight``: (Cout, Cin, 3, 3) with ``bias`` (packed on every call, in x's dtype), or a
    :class:`PackedConv` from ``pack_conv`` (packed once; its own bias is used and ``bias`` must be
    None; its dtype is the GEMM's: x of another float dtype, e.g. an fp32 latent into a bf16 conv,
    is cast tile by tile inside the kernel).
    x may have any strides (an NCHW tensor permuted to (B, H, W, C) is read in place).
    Returns channels-last (B, H, W, Cout), or (B, 2H, 2W, Cout/4) with ``pixel_shuffle``, in
    ``out_dtype`` (default: x's dtype; accumulation is fp32 either way, so an fp32 output of
    bf16 operands keeps the fp32 residual add exact).

    Chaining convs without padding masks: ``out_padded=True`` returns the output inside a zero
    1-pixel border, (B, Ho+2, Wo+2, Cout) (the output is ``[:, 1:-1, 1:-1]`` of it); a conv given
    such a **bordered** tensor with ``padded_input=True`` convolves its interior (B, H, W) and
    loads the halo from the border instead of masking every tap (the caller promises the border
    is zero). Until 2026-11-28 both sides used the interior view, and the kernel read the border
    outside it (see ``_conv3x3_op``).
    """
    if padded_input and (x.dim() != 4 or x.shape[1] < 3 or x.shape[2] < 3):
        raise ValueError(f"conv3x3: padded_input=True takes a bordered (B, H+2, W+2, Cin) tensor (from "
                         f"conv3x3(..., out_padded=True)), got shape {tuple(x.shape)}")
    inner = x[:, 1:-1, 1:-1] if padded_input else x  # what is convolved
    if isinstance(weight, PackedConv):
        if bias is not None:
            raise ValueError("conv3x3: a PackedConv carries its own bias; pass bias=None")
        if weight.pixel_shuffle != pixel_shuffle:
            raise ValueError(f"conv3x3: weights packed with pixel_shuffle={weight.pixel_shuffle} used with "
                             f"pixel_shuffle={pixel_shuffle}")
        packed = weight
        _check(inner, packed.c_in, packed.c_out, residual, pixel_shuffle)
    else:
        _check(inner, *_check_weight(inner, weight, bias), residual, pixel_shuffle)
        packed = None
    reason = unavailable_reason(x.device)
    if reason:
        raise RuntimeError(f"conv3x3: Triton kernel cannot run: {reason}")
    if x.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"conv3x3: dtype {x.dtype} not supported (float32, float16, bfloat16)")
    if packed is None:
        packed = pack_conv(weight, bias, x.dtype, pixel_shuffle=pixel_shuffle)
    return _conv3x3_op(
        x, packed.weight, packed.bias, residual, packed.c_out, 0.0 if leaky_slope is None else float(leaky_slope),
        leaky_slope is not None, pixel_shuffle, out_dtype or x.dtype, padded_input, out_padded,
    )


# ------------------------------------------------- static description (kernel report)
def launch_site(args: dict, meta: dict) -> str:
    """A label for a launch, from its arguments (scripts/compile_kernels.py)."""
    epilogue = "+residual" if meta["HAS_RESIDUAL"] else "+leaky" if meta["HAS_LEAKY"] else \
        "+shuffle" if meta["PIXEL_SHUFFLE"] else ""
    return f"conv {meta['C_IN']}->{meta['C_OUT']}{epilogue}"


def launch_flops(args: dict, meta: dict) -> int:
    return 2 * 9 * args["pixels"] * meta["C_IN"] * meta["C_OUT"]


def launch_l2_bytes(args: dict, meta: dict) -> int:
    """Bytes the launch's programs load (from L2 at best) and store under its config
    (``meta`` holds the tile): each program loads its pixels' 9 shifted input rows (the im2col
    operand, 9 x Cin per pixel) once per N tile it owns, and each block of pixels loads the
    weight columns of its N tile for all 9 x Cin rows; the output (and residual) once. The
    asynchronous copies bypass L1, so overlapping taps are not shared there (except in the
    taps-inner configs on Triton >= 3.9, counted at their best case below). On the H200 the
    large convs timed alone ran at 6.6-7.6 TB/s of these bytes (benchmarks/NOTES.md, "L2 traffic")."""
    pixels, c_in, c_out, block_m = args["pixels"], meta["C_IN"], meta["C_OUT"], meta["BLOCK_M"]
    n_tiles, m_blocks = cdiv(c_out, meta["BLOCK_N"]), cdiv(pixels, block_m)
    taps = 9
    if meta.get("TAP_INNER") and meta.get("A_L1") and L1_ASYNC_COPIES:
        # Taps inner, through L1: a channel block's 9 taps read the block's pixels shifted by one
        # pixel and by one image row, so at best only three rows' worth (two more pixels each)
        # come from L2, if L1 keeps them for the 9 steps (an upper bound on the saving).
        taps = (block_m + 2 * min(block_m, args["width"]) + 2) / block_m
    a = int(pixels * taps * c_in * args["x_ptr"].element_size() * n_tiles)
    w = m_blocks * 9 * cdiv(c_in, meta["BLOCK_K"]) * meta["BLOCK_K"] * n_tiles * meta["BLOCK_N"] \
        * args["w_ptr"].element_size()
    c = pixels * c_out * (args["out_ptr"].element_size()
                          + (args["r_ptr"].element_size() if meta["HAS_RESIDUAL"] else 0))
    return a + w + c


def main_loop_trips(meta: dict) -> int:
    """Iterations of the flat (tap, channel block) K loop per program."""
    return 9 * -(-meta["C_IN"] // meta["BLOCK_K"])


def conv3x3_flops(batch: int, height: int, width: int, c_in: int, c_out: int) -> int:
    return 2 * 9 * batch * height * width * c_in * c_out
