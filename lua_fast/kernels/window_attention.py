"""Fused shifted-window attention: one Triton launch per Swin block's attention core.

The kernel reads q, k and v straight from the qkv projection in token order
(B, H*W, 3D), folds the cyclic shift and the window gather into its index math,
adds the relative position bias gathered from the learned table, applies the
shift mask rebuilt from each token's position in the rolled window grid (the released
0 / -100 labelling; no mask tensor exists), runs an online (flash-style) softmax in
fp32 over key blocks, and writes the output in token order at the un-shifted positions (B, H*W, D), ready
for the output projection. LayerNorm and both projections are token-wise, so they
commute with roll and partition: nothing else is needed around it.

``torch_window_attention`` has the same signature and is written from the spec
with explicit roll / partition / mask tensors: the fallback and the test oracle.
"""

from __future__ import annotations

import torch

from ..reference import windows as ref
from .triton_support import INTERPRET, dot_precision, dot_upcast, store_dtype, tl, triton, unavailable_reason

MAX_HEAD_DIM = 64
MASK_VALUE = -100.0


# --------------------------------------------------------------------- validation
def check_args(qkv: torch.Tensor, height: int, width: int, heads: int, window: int, shift: int,
               bias_table: torch.Tensor) -> tuple[int, int]:
    """Validate and return (embed dim D, head_dim)."""
    if qkv.dim() != 3:
        raise ValueError(f"window_attention: qkv must be (B, H*W, 3D), got shape {tuple(qkv.shape)}")
    b, length, three_d = qkv.shape
    if heads < 1 or three_d % (3 * heads):
        raise ValueError(
            f"window_attention: qkv's last dim {three_d} is not 3 * D with D divisible by heads={heads}"
        )
    dim = three_d // 3
    head_dim = dim // heads
    if window < 1 or height < 1 or width < 1 or height % window or width % window:
        raise ValueError(
            f"window_attention: H and W must be positive multiples of the window, got H={height}, "
            f"W={width}, window={window}"
        )
    if length != height * width:
        raise ValueError(f"window_attention: qkv has {length} tokens but H*W = {height * width}")
    if not 0 <= shift < window:
        raise ValueError(f"window_attention: shift must be in [0, window), got {shift} with window={window}")
    rows = (2 * window - 1) ** 2
    if tuple(bias_table.shape) != (rows, heads):
        raise ValueError(
            f"window_attention: bias_table must be ((2*window-1)^2, heads) = ({rows}, {heads}), "
            f"got {tuple(bias_table.shape)}"
        )
    if not qkv.is_floating_point():
        raise ValueError(f"window_attention: qkv must be floating point, got {qkv.dtype}")
    return dim, head_dim


# ---------------------------------------------------------------- PyTorch oracle
def torch_window_attention(qkv, height, width, *, heads, window, shift, bias_table, scale=None):
    """The same computation as the kernel with explicit roll / partition / bias / mask tensors,
    in the input's dtype (eager numerics)."""
    dim, head_dim = check_args(qkv, height, width, heads, window, shift, bias_table)
    scale = head_dim**-0.5 if scale is None else scale
    b, n = qkv.shape[0], window * window
    x = qkv.reshape(b, height, width, 3 * dim)
    if shift:
        x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
    x = ref.window_partition(x, window)  # (B*nW, N, 3D)
    bw = x.shape[0]
    q, k, v = x.view(bw, n, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
    index = ref.relative_position_index(window, qkv.device)
    bias = bias_table[index.view(-1)].view(n, n, heads).permute(2, 0, 1).to(qkv.dtype)
    scores = (q * scale) @ k.transpose(-2, -1) + bias
    if shift:
        mask = ref.shift_mask(height, width, window, shift, device=qkv.device, dtype=qkv.dtype)
        scores = (scores.view(b, -1, heads, n, n) + mask[None, :, None]).view(bw, heads, n, n)
    out = (scores.softmax(-1) @ v).transpose(1, 2).reshape(bw, n, dim)
    out = ref.window_reverse(out, window, height, width)
    if shift:
        out = torch.roll(out, shifts=(shift, shift), dims=(1, 2))
    return out.reshape(b, height * width, dim)


# ------------------------------------------------------------------- the kernel
if triton is not None:

    @triton.jit
    def _token_pixels(offs, wy, wx, height, width, WINDOW: tl.constexpr, SHIFT: tl.constexpr):
        """Window-local (y, x) of tokens ``offs`` and the un-shifted pixel (y, x) each holds."""
        y_in = offs // WINDOW
        x_in = offs % WINDOW
        return y_in, x_in, (wy + y_in + SHIFT) % height, (wx + x_in + SHIFT) % width

    @triton.jit
    def _region_label(y, x, height, width, WINDOW: tl.constexpr, SHIFT: tl.constexpr):
        """The spec's region label of ROLLED-grid position (y, x): 3 * row_region + col_region.

        The released code labels positions of the shifted feature map, so callers pass the
        token's position in the window grid (wy + y_in, wx + x_in), never the un-rolled pixel."""
        return 3 * ((y >= height - WINDOW).to(tl.int32) + (y >= height - SHIFT).to(tl.int32)) \
            + (x >= width - WINDOW).to(tl.int32) + (x >= width - SHIFT).to(tl.int32)

    @triton.jit
    def _window_attention_kernel(
        qkv_ptr, out_ptr, bias_ptr,
        stride_qkv_b, stride_qkv_t, stride_out_b, stride_out_t, stride_bias_0, stride_bias_1,
        scale, height, width, windows_x, windows, heads, dim,
        WINDOW: tl.constexpr, SHIFT: tl.constexpr, HEAD_DIM: tl.constexpr, HEAD_DIM_PAD: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, DENSE_BIAS: tl.constexpr,
        INPUT_PRECISION: tl.constexpr, USE_MASK: tl.constexpr, DOT_UPCAST: tl.constexpr,
    ):
        N: tl.constexpr = WINDOW * WINDOW
        LOG2E: tl.constexpr = 1.4426950408889634
        pid = tl.program_id(0)  # (batch * windows + window) * heads + head
        head = pid % heads
        win = (pid // heads) % windows
        batch = (pid // heads) // windows
        wy = (win // windows_x) * WINDOW
        wx = (win % windows_x) * WINDOW

        offs_d = tl.arange(0, HEAD_DIM_PAD)
        d_ok = offs_d < HEAD_DIM
        qkv_base = qkv_ptr + batch.to(tl.int64) * stride_qkv_b

        # Query tokens of this block: window-local (y, x), then their un-shifted pixel.
        offs_m = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
        m_ok = offs_m < N
        qy_in, qx_in, qy, qx = _token_pixels(offs_m, wy, wx, height, width, WINDOW, SHIFT)
        q_rows = (qy * width + qx).to(tl.int64)
        q = tl.load(
            qkv_base + q_rows[:, None] * stride_qkv_t + (head * HEAD_DIM + offs_d)[None, :],
            mask=m_ok[:, None] & d_ok[None, :], other=0.0,
        )
        q_label = _region_label(wy + qy_in, wx + qx_in, height, width, WINDOW, SHIFT)

        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, HEAD_DIM_PAD], tl.float32)
        for start in range(0, N, BLOCK_N):
            offs_n = start + tl.arange(0, BLOCK_N)
            n_ok = offs_n < N
            ky_in, kx_in, ky, kx = _token_pixels(offs_n, wy, wx, height, width, WINDOW, SHIFT)
            k_rows = (ky * width + kx).to(tl.int64)
            kt = tl.load(  # (HEAD_DIM_PAD, BLOCK_N): k already transposed
                qkv_base + k_rows[None, :] * stride_qkv_t + (dim + head * HEAD_DIM + offs_d)[:, None],
                mask=d_ok[:, None] & n_ok[None, :], other=0.0,
            )
            if DOT_UPCAST:
                s = tl.dot(q.to(tl.float32), kt.to(tl.float32), input_precision="ieee") * scale
            else:
                s = tl.dot(q, kt, input_precision=INPUT_PRECISION) * scale
            pair_ok = m_ok[:, None] & n_ok[None, :]
            if DENSE_BIAS:  # a (heads, N, N) tensor
                bias = tl.load(bias_ptr + head * stride_bias_0 + offs_m[:, None] * stride_bias_1 + offs_n[None, :],
                               mask=pair_ok, other=0.0)
            else:  # gathered from the ((2ws-1)^2, heads) table
                index = (qy_in[:, None] - ky_in[None, :] + WINDOW - 1) * (2 * WINDOW - 1) \
                    + (qx_in[:, None] - kx_in[None, :] + WINDOW - 1)
                bias = tl.load(bias_ptr + index * stride_bias_0 + head * stride_bias_1, mask=pair_ok, other=0.0)
            s = s + bias.to(tl.float32)
            if USE_MASK:
                k_label = _region_label(wy + ky_in, wx + kx_in, height, width, WINDOW, SHIFT)
                s = tl.where(q_label[:, None] == k_label[None, :], s, s - 100.0)
            s = tl.where(n_ok[None, :], s * LOG2E, float("-inf"))
            # Online softmax (base 2): rescale what was accumulated to the new running max.
            m_new = tl.maximum(m_i, tl.max(s, 1))
            alpha = tl.exp2(m_i - m_new)
            p = tl.exp2(s - m_new[:, None])
            l_i = l_i * alpha + tl.sum(p, 1)
            v = tl.load(
                qkv_base + k_rows[:, None] * stride_qkv_t + (2 * dim + head * HEAD_DIM + offs_d)[None, :],
                mask=n_ok[:, None] & d_ok[None, :], other=0.0,
            )
            if DOT_UPCAST:
                acc = tl.dot(p.to(v.dtype).to(tl.float32), v.to(tl.float32), acc * alpha[:, None],
                             input_precision="ieee")
            else:
                acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None], input_precision=INPUT_PRECISION)
            m_i = m_new
        out = acc / l_i[:, None]
        tl.store(
            out_ptr + batch.to(tl.int64) * stride_out_b + q_rows[:, None] * stride_out_t
            + (head * HEAD_DIM + offs_d)[None, :],
            out.to(out_ptr.dtype.element_ty), mask=m_ok[:, None] & d_ok[None, :],
        )

    # On a GPU: a few configs, tuned once per (window, head_dim, dtype, bias layout) and cached.
    _TUNED_CONFIGS = [
        triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s)
        for bm, bn, w, s in [(64, 64, 4, 2), (64, 128, 4, 2), (128, 64, 8, 2), (128, 128, 8, 2)]
    ]

    def _prune(configs, named_args, **kwargs):
        n = named_args["WINDOW"] ** 2 if "WINDOW" in named_args else kwargs["WINDOW"] ** 2
        size = max(16, triton.next_power_of_2(n))
        kept = [c for c in configs if c.kwargs["BLOCK_M"] <= size and c.kwargs["BLOCK_N"] <= size]
        if kwargs.get("INPUT_PRECISION") == "ieee":  # fp32 128x128 tiles need 272 KiB of shared memory
            kept = [c for c in kept if c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"] < 128 * 128] or kept
        return kept or [triton.Config({"BLOCK_M": size, "BLOCK_N": size}, num_warps=4, num_stages=2)]

    _window_attention_tuned = triton.autotune(
        configs=_TUNED_CONFIGS,
        key=["WINDOW", "SHIFT", "HEAD_DIM_PAD", "DENSE_BIAS", "INPUT_PRECISION", "USE_MASK", "DOT_UPCAST"],
        prune_configs_by={"early_config_prune": _prune},
    )(_window_attention_kernel)


def _launch(qkv, bias, height, width, heads, window, shift, scale, dense_bias, use_mask, out=None) -> torch.Tensor:
    b, length, three_d = qkv.shape
    dim = three_d // 3
    head_dim = dim // heads
    n = window * window
    windows_x = width // window
    n_windows = (height // window) * windows_x
    if out is None:
        out = torch.empty((b, length, dim), device=qkv.device, dtype=qkv.dtype)
    dst = out if store_dtype(qkv.dtype) == qkv.dtype else torch.empty(
        (b, length, dim), device=qkv.device, dtype=store_dtype(qkv.dtype))
    common = dict(
        WINDOW=window, SHIFT=shift, HEAD_DIM=head_dim, HEAD_DIM_PAD=max(16, triton.next_power_of_2(head_dim)),
        DENSE_BIAS=dense_bias, INPUT_PRECISION=dot_precision(qkv.dtype),
        USE_MASK=use_mask and shift > 0,
        DOT_UPCAST=dot_upcast(qkv.dtype),  # see triton_support.dot_upcast
    )
    bias_strides = (bias.stride(0), bias.stride(1))
    args = (qkv, dst, bias, qkv.stride(0), qkv.stride(1), dst.stride(0), dst.stride(1), *bias_strides,
            float(scale), height, width, windows_x, n_windows, heads, dim)
    if INTERPRET:
        block = min(64, max(16, triton.next_power_of_2(n)))
        grid = (b * n_windows * heads, triton.cdiv(n, block))
        _window_attention_kernel[grid](*args, BLOCK_M=block, BLOCK_N=block, **common)
    else:
        grid = lambda meta: (b * n_windows * heads, triton.cdiv(n, meta["BLOCK_M"]))  # noqa: E731
        _window_attention_tuned[grid](*args, **common)
    if dst is not out:
        out.copy_(dst)
    return out


# ------------------------------------------------------------ torch.library op
@torch.library.custom_op("lua_fast::window_attention", mutates_args=())
def _window_attention_op(
    qkv: torch.Tensor, bias: torch.Tensor, height: int, width: int, heads: int, window: int, shift: int,
    scale: float, dense_bias: bool, use_mask: bool,
) -> torch.Tensor:
    return _launch(qkv, bias, height, width, heads, window, shift, scale, dense_bias, use_mask)


@_window_attention_op.register_fake
def _(qkv, bias, height, width, heads, window, shift, scale, dense_bias, use_mask):
    b, length, three_d = qkv.shape
    return qkv.new_empty((b, length, three_d // 3))


def window_attention(qkv, height, width, *, heads, window, shift, bias_table, scale=None, dense_bias=None,
                     _use_mask: bool = True):
    """Fused shifted-window attention core (Triton). See the module docstring.

    qkv: (B, H*W, 3D) in token order, the output of the qkv projection.
    bias_table: ((2*window-1)^2, heads), the learned relative position bias table.
    dense_bias: optionally a precomputed (heads, N, N) bias used instead of the table.
    Returns (B, H*W, D) in token order. ``_use_mask=False`` disables the shift mask (tests only).
    """
    dim, head_dim = check_args(qkv, height, width, heads, window, shift, bias_table)
    reason = unavailable_reason(qkv.device)
    if reason:
        raise RuntimeError(f"window_attention: Triton kernel cannot run: {reason}")
    if head_dim > MAX_HEAD_DIM:
        raise ValueError(f"window_attention: head_dim {head_dim} > {MAX_HEAD_DIM} is not supported by the kernel")
    if qkv.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"window_attention: dtype {qkv.dtype} not supported (float32, float16, bfloat16)")
    if qkv.stride(-1) != 1:
        qkv = qkv.contiguous()
    bias = bias_table
    if dense_bias is not None:
        n = window * window
        if tuple(dense_bias.shape) != (heads, n, n):
            raise ValueError(f"window_attention: dense_bias must be (heads, N, N) = ({heads}, {n}, {n})")
        bias = dense_bias.contiguous()
    bias = bias.to(qkv.device)
    scale = head_dim**-0.5 if scale is None else float(scale)
    return torch.ops.lua_fast.window_attention(
        qkv, bias, height, width, heads, window, shift, scale, dense_bias is not None, _use_mask
    )


def attention_flops(batch: int, height: int, width: int, dim: int, window: int) -> int:
    """QK^T and PV FLOPs of one call (multiply-add = 2)."""
    return 4 * batch * height * width * window * window * dim


__all__ = ["window_attention", "torch_window_attention", "check_args", "attention_flops"]
