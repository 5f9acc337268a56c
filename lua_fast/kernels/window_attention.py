"""Fused shifted-window attention: one Triton kernel per Swin block's attention core.

The kernel works on a *packed* qkv layout that the triton backend's qkv GEMM produces
directly (``pack_qkv``: the qkv weight repacked once at load):

- every head padded to ``HEAD_PAD`` = 32 columns with zero weights, so each head's row slice
  is 64-byte aligned and loads are 16-byte vectors (head_dim 30 would be 60-byte rows at
  unprovable alignment: scalar loads);
- q pre-multiplied by ``head_dim**-0.5 * log2(e)`` (folded into the weights), so the scores
  come out of the dot in the base-2 domain the online softmax uses;
- the relative position bias is a dense (heads, N, N) tensor built once per block
  (``dense_log2_bias``, also pre-multiplied by log2(e)), read in contiguous tiles instead of
  a gather per score element; the whole-window programs may instead gather it from the head's
  (2w-1)^2 table (``log2_bias_table``, 2 KiB in fp16: it stays in L1), an autotune choice that trades
  ~3 us of issue bound per launch for two thirds of the launch's L2 traffic (the dense bias is
  128 KiB per head, re-read by every window).

It folds the cyclic shift and the window gather into its index math, applies the shift mask
from each token's position in the rolled window grid (the released 0 / -100 labelling; no
mask tensor exists), runs an online softmax in fp32 over key blocks and writes (B, H*W,
heads*HEAD_PAD) in token order at the un-shifted positions, ready for the output projection
(whose weight gets zero input columns at the padding: ``pack_proj``). In shifted blocks only
the windows touching the last row or column of the window grid need the mask: the kernel takes
a branch that is uniform over each program, so interior windows run a loop without any mask
code. Tiles whose size divides N = window^2 carry no bounds masks.

Two program shapes, chosen by the autotuner (``WHOLE``): one program per (window, head, block of
queries) with an online softmax over blocks of keys, or one program per (window, head) that loads
the window's keys and values once, then takes its query blocks one after another, each against
all keys at once (a one-pass softmax: no running maximum, no rescaling). The second reads K and V
once instead of once per query block (a quarter of the traffic at window 16, 64-row blocks) and
issues about a third fewer instructions; it holds a (BLOCK_M, N) score tile, so it exists up to
N = 256 and not for IEEE fp32 (which would spill).

``window_attention(qkv, ...)`` keeps the plain layout (B, H*W, 3D) for callers and tests: it
packs qkv (one copy) and the bias, runs the kernel, and returns (B, H*W, D).
``torch_window_attention`` has the same signature, written from the spec with explicit roll /
partition / mask tensors: the fallback and the test oracle.
"""

from __future__ import annotations

import math

import torch

from ..reference import windows as ref
from .triton_support import (INTERPRET, autotuned, cdiv, dot_precision, dot_upcast, fp32_operands, grid_dependency_sync,
                             kernel_op, launcher, next_pow2, pdl_options, size_class, store_dtype, tl, triton, tuned,
                             unavailable_reason)

MAX_HEAD_DIM = 64
MASK_VALUE = -100.0
LOG2E = math.log2(math.e)
HEAD_PAD = 32  # packed head width: head_dim 30 -> 32 (64-byte rows in bf16)
WHOLE_MAX_KEYS = 256  # the whole-window variant holds a (BLOCK_M, keys) score tile: up to window 16
INTERPRET_WHOLE = 0  # interpreter runs: the per-block path (tests run both)
INTERPRET_BIAS_TABLE = 0  # interpreter runs of the whole-window path: the dense bias (tests run both)

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


# ------------------------------------------------------------------- packing
def head_pad(head_dim: int) -> int:
    """Packed head width: a power of two >= 16 (the tl.dot minimum) and >= head_dim."""
    return max(16, next_pow2(head_dim))


def pack_qkv(weight: torch.Tensor, bias: torch.Tensor, heads: int, scale: float | None = None):
    """(3D, D) qkv weight and (3D,) bias -> (3 * heads * P, D), (3 * heads * P,) with P = head_pad.

    Rows are [q heads | k heads | v heads], each head padded to P rows with zeros; the q rows
    are multiplied by ``scale * log2(e)`` (default scale head_dim**-0.5). Computed in float32;
    cast the result to the GEMM's dtype.
    """
    three_d, dim = weight.shape
    head_dim = dim // heads
    pad = head_pad(head_dim)
    scale = head_dim**-0.5 if scale is None else scale
    w = weight.float().view(3, heads, head_dim, dim)
    b = bias.float().view(3, heads, head_dim)
    factor = torch.tensor([scale * LOG2E, 1.0, 1.0], device=weight.device, dtype=torch.float32).view(3, 1, 1)
    packed_w = weight.new_zeros((3, heads, pad, dim), dtype=torch.float32)
    packed_b = bias.new_zeros((3, heads, pad), dtype=torch.float32)
    packed_w[:, :, :head_dim] = w * factor[..., None]
    packed_b[:, :, :head_dim] = b * factor
    return packed_w.view(3 * heads * pad, dim), packed_b.view(-1)


def pack_proj(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """(D, D) output projection -> (D, heads * P): zero input columns at each head's padding."""
    dim = weight.shape[1]
    head_dim = dim // heads
    pad = head_pad(head_dim)
    packed = weight.new_zeros((weight.shape[0], heads, pad))
    packed[:, :, :head_dim] = weight.view(weight.shape[0], heads, head_dim)
    return packed.view(weight.shape[0], heads * pad)


def dense_log2_bias(bias_table: torch.Tensor, window: int, dtype: torch.dtype) -> torch.Tensor:
    """((2w-1)^2, heads) table -> (heads, N, N) bias times log2(e), contiguous, in ``dtype``."""
    n = window * window
    index = ref.relative_position_index(window, bias_table.device).view(-1)
    dense = bias_table.float()[index].view(n, n, -1).permute(2, 0, 1) * LOG2E
    return dense.to(dtype).contiguous()


def log2_bias_table(bias_table: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """((2w-1)^2, heads) table -> (heads, (2w-1)^2) times log2(e), contiguous, in ``dtype``: the same
    values as :func:`dense_log2_bias` (rounded alike), for kernels that gather the bias."""
    return (bias_table.float().t() * LOG2E).to(dtype).contiguous()


def bias_dtype(compute: torch.dtype) -> torch.dtype:
    """fp32 bias for fp32 kernels; fp16 (3 more mantissa bits than bf16, same bytes) otherwise."""
    return torch.float32 if compute == torch.float32 else torch.float16


# ------------------------------------------------------------------- the kernel
if triton is not None:

    @triton.jit
    def _region_label(y, x, height, width, WINDOW: tl.constexpr, SHIFT: tl.constexpr):
        """The spec's region label of ROLLED-grid position (y, x): 3 * row_region + col_region.

        The released code labels positions of the shifted feature map, so callers pass the
        token's position in the window grid (wy + y_in, wx + x_in), never the un-rolled pixel."""
        return 3 * ((y >= height - WINDOW).to(tl.int32) + (y >= height - SHIFT).to(tl.int32)) \
            + (x >= width - WINDOW).to(tl.int32) + (x >= width - SHIFT).to(tl.int32)

    @triton.jit
    def _wrap_rolled(v, size, SHIFT: tl.constexpr):
        """(v % size) for v in [0, size + SHIFT): rolled-grid coordinate -> pixel, without an
        integer division by a runtime size (~20 instructions each); nothing when unshifted."""
        if SHIFT == 0:
            return v
        return tl.where(v >= size, v - size, v)

    @triton.jit
    def _token_rows(wy, wx, offs, height, width, WINDOW: tl.constexpr, SHIFT: tl.constexpr):
        """Window-local token indices -> the token rows (un-shifted pixels, int64) they hold."""
        y = _wrap_rolled(wy + offs // WINDOW + SHIFT, height, SHIFT)
        x = _wrap_rolled(wx + offs % WINDOW + SHIFT, width, SHIFT)
        return (y * width + x).to(tl.int64)

    @triton.jit
    def _attend(q, offs_m, qkv_base, bias_base, stride_qkv_t, wy, wx, height, width,
                WINDOW: tl.constexpr, SHIFT: tl.constexpr, HEAD_PAD: tl.constexpr, DIM_PAD: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, MASKED: tl.constexpr, EVEN: tl.constexpr,
                INPUT_PRECISION: tl.constexpr, DOT_UPCAST: tl.constexpr):
        """Online softmax over the window's keys for one block of queries: (acc, row sums)."""
        N: tl.constexpr = WINDOW * WINDOW
        MASK_LOG2: tl.constexpr = -100.0 * 1.4426950408889634
        offs_d = tl.arange(0, HEAD_PAD)
        if MASKED:
            q_label = _region_label(wy + offs_m // WINDOW, wx + offs_m % WINDOW, height, width, WINDOW, SHIFT)
        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, HEAD_PAD], tl.float32)
        for start in range(0, N, BLOCK_N):
            offs_n = start + tl.arange(0, BLOCK_N)
            ky_in = offs_n // WINDOW
            kx_in = offs_n % WINDOW
            k_rows = _token_rows(wy, wx, offs_n, height, width, WINDOW, SHIFT)
            kt_ptrs = qkv_base + DIM_PAD + k_rows[None, :] * stride_qkv_t + offs_d[:, None]  # k, transposed
            v_ptrs = qkv_base + 2 * DIM_PAD + k_rows[:, None] * stride_qkv_t + offs_d[None, :]
            b_ptrs = bias_base + offs_m[:, None] * N + offs_n[None, :]
            if EVEN:
                kt = tl.load(kt_ptrs)
                bias = tl.load(b_ptrs)
            else:
                n_ok = offs_n < N
                kt = tl.load(kt_ptrs, mask=n_ok[None, :], other=0.0)
                bias = tl.load(b_ptrs, mask=(offs_m < N)[:, None] & n_ok[None, :], other=0.0)
            if DOT_UPCAST:
                s = tl.dot(q.to(tl.float32), kt.to(tl.float32), input_precision="ieee")
            else:
                s = tl.dot(q, kt, input_precision=INPUT_PRECISION)
            s = s + bias.to(tl.float32)  # q and bias carry log2(e): s is in the base-2 domain
            if MASKED:
                k_label = _region_label(wy + ky_in, wx + kx_in, height, width, WINDOW, SHIFT)
                s = tl.where(q_label[:, None] == k_label[None, :], s, s + MASK_LOG2)
            if not EVEN:
                s = tl.where((offs_n < N)[None, :], s, float("-inf"))
            # Online softmax (base 2): rescale what was accumulated to the new running max.
            m_new = tl.maximum(m_i, tl.max(s, 1))
            alpha = tl.exp2(m_i - m_new)
            p = tl.exp2(s - m_new[:, None])
            l_i = l_i * alpha + tl.sum(p, 1)
            if EVEN:
                v = tl.load(v_ptrs)
            else:
                v = tl.load(v_ptrs, mask=(offs_n < N)[:, None], other=0.0)
            if DOT_UPCAST:
                acc = tl.dot(p.to(v.dtype).to(tl.float32), v.to(tl.float32), acc * alpha[:, None],
                             input_precision="ieee")
            else:
                acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None], input_precision=INPUT_PRECISION)
            m_i = m_new
        return acc, l_i

    @triton.jit
    def _all_keys(q, kt, v, bias, k_label, offs_m, offs_n, wy, wx, height, width, WINDOW: tl.constexpr,
                  SHIFT: tl.constexpr, KEYS: tl.constexpr, MASKED: tl.constexpr, INPUT_PRECISION: tl.constexpr,
                  DOT_UPCAST: tl.constexpr):
        """One query block against all of the window's keys at once (kt: (P, KEYS), already fp32 when
        DOT_UPCAST; v: (KEYS, P); bias: the (BLOCK_M, KEYS) log2-domain tile; k_label: the keys'
        region labels when MASKED): the scores are complete, so the softmax is one pass (no running
        max, no rescaling). Returns (unnormalised fp32 output, row sums)."""
        N: tl.constexpr = WINDOW * WINDOW
        MASK_LOG2: tl.constexpr = -100.0 * 1.4426950408889634
        if DOT_UPCAST:
            s = tl.dot(q.to(tl.float32), kt, input_precision="ieee")
        else:
            s = tl.dot(q, kt, input_precision=INPUT_PRECISION)
        s = s + bias.to(tl.float32)  # base-2 domain, as in _attend
        if MASKED:
            q_label = _region_label(wy + offs_m // WINDOW, wx + offs_m % WINDOW, height, width, WINDOW, SHIFT)
            s = tl.where(q_label[:, None] == k_label[None, :], s, s + MASK_LOG2)
        if KEYS != N:
            s = tl.where((offs_n < N)[None, :], s, float("-inf"))
        p = tl.exp2(s - tl.max(s, 1)[:, None])
        l_i = tl.sum(p, 1)
        if DOT_UPCAST:
            acc = tl.dot(p.to(v.dtype).to(tl.float32), v.to(tl.float32), input_precision="ieee")
        else:
            acc = tl.dot(p.to(v.dtype), v, input_precision=INPUT_PRECISION)
        return acc, l_i

    @triton.jit
    def _whole_window(qkv_base, out_base, bias_base, table_base, stride_qkv_t, stride_out_t, wy, wx, height,
                      width, WINDOW: tl.constexpr, SHIFT: tl.constexpr, HEAD_PAD: tl.constexpr, DIM_PAD: tl.constexpr,
                      KEYS: tl.constexpr, BLOCK_M: tl.constexpr, MASKED: tl.constexpr, BIAS_TABLE: tl.constexpr,
                      INPUT_PRECISION: tl.constexpr, DOT_UPCAST: tl.constexpr):
        """All of one window's queries for one head, BLOCK_M at a time, against its N keys held
        for the whole program (KEYS = N rounded up to a power of two): the scores of a query block
        are complete, so the softmax is one pass (no running max, no rescaling). BIAS_TABLE: the
        bias is gathered from the head's ((2w-1)^2) table (L1-resident) instead of read as a dense
        (N, N) tile from L2."""
        N: tl.constexpr = WINDOW * WINDOW
        T: tl.constexpr = 2 * WINDOW - 1  # the table's row length: index = (dy + w-1) * T + dx + w-1
        offs_n = tl.arange(0, KEYS)
        offs_d = tl.arange(0, HEAD_PAD)
        # A token's table coordinate y * T + x: a pair's index is the query's minus the key's plus a constant.
        key_at = (offs_n // WINDOW) * T + offs_n % WINDOW
        k_rows = _token_rows(wy, wx, offs_n, height, width, WINDOW, SHIFT)
        kt_ptrs = qkv_base + DIM_PAD + k_rows[None, :] * stride_qkv_t + offs_d[:, None]  # k, transposed
        v_ptrs = qkv_base + 2 * DIM_PAD + k_rows[:, None] * stride_qkv_t + offs_d[None, :]
        if KEYS == N:
            kt = tl.load(kt_ptrs)
            v = tl.load(v_ptrs)
        else:
            kt = tl.load(kt_ptrs, mask=(offs_n < N)[None, :], other=0.0)
            v = tl.load(v_ptrs, mask=(offs_n < N)[:, None], other=0.0)
        if DOT_UPCAST:
            kt = kt.to(tl.float32)
        if MASKED:
            k_label = _region_label(wy + offs_n // WINDOW, wx + offs_n % WINDOW, height, width, WINDOW, SHIFT)
        else:
            k_label = offs_n  # unused
        for start in range(0, N, BLOCK_M):
            offs_m = start + tl.arange(0, BLOCK_M)
            q_rows = _token_rows(wy, wx, offs_m, height, width, WINDOW, SHIFT)
            q_ptrs = qkv_base + q_rows[:, None] * stride_qkv_t + offs_d[None, :]
            if BIAS_TABLE:
                query_at = (offs_m // WINDOW) * T + offs_m % WINDOW
                b_ptrs = table_base + (query_at[:, None] - key_at[None, :] + ((WINDOW - 1) * T + WINDOW - 1))
            else:
                b_ptrs = bias_base + offs_m[:, None] * N + offs_n[None, :]
            if (N % BLOCK_M == 0) and (KEYS == N):
                q = tl.load(q_ptrs)
                bias = tl.load(b_ptrs)
            else:
                q = tl.load(q_ptrs, mask=(offs_m < N)[:, None], other=0.0)
                bias = tl.load(b_ptrs, mask=(offs_m < N)[:, None] & (offs_n < N)[None, :], other=0.0)
            acc, l_i = _all_keys(q, kt, v, bias, k_label, offs_m, offs_n, wy, wx, height, width, WINDOW, SHIFT,
                                 KEYS, MASKED, INPUT_PRECISION, DOT_UPCAST)
            out = acc / l_i[:, None]
            o_ptrs = out_base + q_rows[:, None] * stride_out_t + offs_d[None, :]
            if N % BLOCK_M == 0:
                tl.store(o_ptrs, out.to(out_base.dtype.element_ty))
            else:
                tl.store(o_ptrs, out.to(out_base.dtype.element_ty), mask=(offs_m < N)[:, None])

    @triton.jit
    def _window_attention_kernel(
        qkv_ptr, out_ptr, bias_ptr, table_ptr,
        stride_qkv_b, stride_qkv_t, stride_out_b, stride_out_t,
        height, width, windows_x, windows_y, size_key,
        HEADS: tl.constexpr, WINDOW: tl.constexpr, SHIFT: tl.constexpr, HEAD_PAD: tl.constexpr,
        USE_MASK: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, WHOLE: tl.constexpr,
        BIAS_TABLE: tl.constexpr, HAS_TABLE: tl.constexpr, KEYS: tl.constexpr, INPUT_PRECISION: tl.constexpr,
        DOT_UPCAST: tl.constexpr, PDL: tl.constexpr,
    ):
        grid_dependency_sync(PDL)
        N: tl.constexpr = WINDOW * WINDOW
        EVEN: tl.constexpr = (N % BLOCK_M == 0) and (N % BLOCK_N == 0)  # no bounds masks needed
        DIM_PAD: tl.constexpr = HEADS * HEAD_PAD
        pid = tl.program_id(0)  # (batch * windows + window) * HEADS + head
        head = pid % HEADS
        win = (pid // HEADS) % (windows_x * windows_y)
        batch = (pid // HEADS) // (windows_x * windows_y)
        wy = (win // windows_x) * WINDOW
        wx = (win % windows_x) * WINDOW

        qkv_base = qkv_ptr + batch.to(tl.int64) * stride_qkv_b + head * HEAD_PAD
        bias_base = bias_ptr + head * N * N
        table_base = table_ptr + head * (2 * WINDOW - 1) * (2 * WINDOW - 1)
        out_base = out_ptr + batch.to(tl.int64) * stride_out_b + head * HEAD_PAD
        # With the shift mask, only windows in the last row or column of the grid mix regions; the
        # others take the unmasked code (a branch uniform over the whole program).
        if WHOLE:  # one program per (window, head): keys and values read once for all queries
            if USE_MASK:
                if (wy == height - WINDOW) | (wx == width - WINDOW):
                    _whole_window(qkv_base, out_base, bias_base, table_base, stride_qkv_t, stride_out_t, wy, wx,
                                  height, width, WINDOW, SHIFT, HEAD_PAD, DIM_PAD, KEYS, BLOCK_M, True, BIAS_TABLE,
                                  INPUT_PRECISION, DOT_UPCAST)
                else:
                    _whole_window(qkv_base, out_base, bias_base, table_base, stride_qkv_t, stride_out_t, wy, wx,
                                  height, width, WINDOW, SHIFT, HEAD_PAD, DIM_PAD, KEYS, BLOCK_M, False, BIAS_TABLE,
                                  INPUT_PRECISION, DOT_UPCAST)
            else:
                _whole_window(qkv_base, out_base, bias_base, table_base, stride_qkv_t, stride_out_t, wy, wx,
                              height, width, WINDOW, SHIFT, HEAD_PAD, DIM_PAD, KEYS, BLOCK_M, False, BIAS_TABLE,
                              INPUT_PRECISION, DOT_UPCAST)
        else:
            offs_m = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
            offs_d = tl.arange(0, HEAD_PAD)
            # Query tokens: window-local (y, x) -> the un-shifted pixel they hold.
            q_rows = _token_rows(wy, wx, offs_m, height, width, WINDOW, SHIFT)
            q_ptrs = qkv_base + q_rows[:, None] * stride_qkv_t + offs_d[None, :]
            if EVEN:
                q = tl.load(q_ptrs)
            else:
                q = tl.load(q_ptrs, mask=(offs_m < N)[:, None], other=0.0)
            if USE_MASK:
                if (wy == height - WINDOW) | (wx == width - WINDOW):
                    acc, l_i = _attend(q, offs_m, qkv_base, bias_base, stride_qkv_t, wy, wx, height, width, WINDOW,
                                       SHIFT, HEAD_PAD, DIM_PAD, BLOCK_M, BLOCK_N, True, EVEN, INPUT_PRECISION,
                                       DOT_UPCAST)
                else:
                    acc, l_i = _attend(q, offs_m, qkv_base, bias_base, stride_qkv_t, wy, wx, height, width, WINDOW,
                                       SHIFT, HEAD_PAD, DIM_PAD, BLOCK_M, BLOCK_N, False, EVEN, INPUT_PRECISION,
                                       DOT_UPCAST)
            else:
                acc, l_i = _attend(q, offs_m, qkv_base, bias_base, stride_qkv_t, wy, wx, height, width, WINDOW,
                                   SHIFT, HEAD_PAD, DIM_PAD, BLOCK_M, BLOCK_N, False, EVEN, INPUT_PRECISION, DOT_UPCAST)
            out = acc / l_i[:, None]
            o_ptrs = out_base + q_rows[:, None] * stride_out_t + offs_d[None, :]
            if EVEN:
                tl.store(o_ptrs, out.to(out_ptr.dtype.element_ty))
            else:
                tl.store(o_ptrs, out.to(out_ptr.dtype.element_ty), mask=(offs_m < N)[:, None])

    # On a GPU: tiles x pipeline depths, tuned once per (window, shift, head width, dtype); WHOLE:
    # one program per (window, head) looping over query blocks of BLOCK_M (BLOCK_N unused), with the
    # bias read densely or gathered from its table (BIAS_TABLE).
    _TUNED_CONFIGS = [
        triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "WHOLE": 0, "BIAS_TABLE": 0}, num_warps=w, num_stages=s)
        for bm, bn, w in [(64, 64, 4), (64, 128, 4), (128, 64, 8), (128, 128, 8)]
        for s in (2, 3)
    ] + [
        triton.Config({"BLOCK_M": bm, "BLOCK_N": 64, "WHOLE": 1, "BIAS_TABLE": t}, num_warps=w, num_stages=s)
        for bm, w, s in [(64, 4, 1), (64, 4, 2), (128, 8, 2)]  # (32-row blocks spill; 8 warps on 64 rows: slower)
        for t in (0, 1)
    ]

    def _prune(configs, named_args, **kwargs):
        n = kwargs["WINDOW"] ** 2
        size = max(16, next_pow2(n))
        kept = [c for c in configs if c.kwargs["BLOCK_M"] <= size and c.kwargs["BLOCK_N"] <= size
                and (not c.kwargs["WHOLE"] or kwargs["KEYS"] <= WHOLE_MAX_KEYS)
                and (kwargs["HAS_TABLE"] or not c.kwargs["BIAS_TABLE"])]
        if fp32_operands(kwargs):  # fp32 128x128 tiles need 272 KiB of shared memory;
            # fp32 whole windows spill ~10 KiB a thread (FMA dots hold their operands in registers)
            kept = [c for c in kept if c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"] < 128 * 128
                    and not c.kwargs["WHOLE"]] or kept
        return tuned(kept) or [triton.Config({"BLOCK_M": size, "BLOCK_N": size, "WHOLE": 0, "BIAS_TABLE": 0},
                                             num_warps=4, num_stages=2)]

    _window_attention_tuned = autotuned(_window_attention_kernel, _TUNED_CONFIGS, _prune,
                              ["WINDOW", "SHIFT", "HEADS", "HEAD_PAD", "USE_MASK", "KEYS", "HAS_TABLE"])


def _launch(qkv, bias, height, width, heads, window, shift, use_mask=True, out=None, table=None) -> torch.Tensor:
    """Run the kernel on packed qkv (B, H*W, 3*heads*P), a log2-domain dense bias (heads, N, N) and
    optionally the same bias as its log2-domain table (heads, (2w-1)^2) (``log2_bias_table``)."""
    b, length, three_dp = qkv.shape
    pad = three_dp // (3 * heads)
    n = window * window
    windows_x, windows_y = width // window, height // window
    if out is None:
        out = torch.empty((b, length, heads * pad), device=qkv.device, dtype=qkv.dtype)
    kept = store_dtype(qkv.dtype)
    dst = out if kept == out.dtype else torch.empty(out.shape, device=qkv.device, dtype=kept)
    meta = dict(HEADS=heads, WINDOW=window, SHIFT=shift, HEAD_PAD=pad, USE_MASK=bool(use_mask and shift),
                KEYS=max(16, next_pow2(n)), HAS_TABLE=table is not None, INPUT_PRECISION=dot_precision(qkv.dtype),
                DOT_UPCAST=dot_upcast(qkv.dtype))
    args = (qkv, dst, bias, table if table is not None else bias, qkv.stride(0), qkv.stride(1), dst.stride(0),
            dst.stride(1), height, width, windows_x, windows_y)
    programs = b * windows_x * windows_y * heads
    args += (size_class(b * length),)  # (tokens: the same classes as the GEMMs)
    grid = lambda c: (programs, 1 if c["WHOLE"] else cdiv(n, c["BLOCK_M"]))  # noqa: E731
    if INTERPRET:
        block = min(64, max(16, next_pow2(n)))
        whole = int(bool(INTERPRET_WHOLE) and meta["KEYS"] <= WHOLE_MAX_KEYS)
        from_table = int(bool(whole and INTERPRET_BIAS_TABLE and table is not None))
        launcher(_window_attention_kernel)[grid(dict(WHOLE=whole, BLOCK_M=block))](
            *args, BLOCK_M=block, BLOCK_N=block, WHOLE=whole, BIAS_TABLE=from_table, **meta, PDL=False)
    else:
        launcher(_window_attention_tuned)[grid](*args, **meta, **pdl_options(qkv.device))
    if dst is not out:
        out.copy_(dst)
    return out


# ------------------------------------------------------------ torch.library op
def _window_attention_fake(qkv, bias, table, height, width, heads, window, shift, use_mask):
    b, length, three_dp = qkv.shape
    return qkv.new_empty((b, length, three_dp // 3))


@kernel_op("window_attention", _window_attention_fake)
def _window_attention_op(qkv: torch.Tensor, bias: torch.Tensor, table: torch.Tensor | None, height: int, width: int,
                         heads: int, window: int, shift: int, use_mask: bool) -> torch.Tensor:
    return _launch(qkv, bias, height, width, heads, window, shift, use_mask, table=table)


def check_packed(qkv: torch.Tensor, bias: torch.Tensor, height: int, width: int, heads: int, window: int,
                 shift: int, table: torch.Tensor | None = None) -> None:
    """Validate the packed layout the backend passes (once per shape, see ``packed_window_attention``)."""
    if qkv.dim() != 3 or qkv.shape[1] != height * width or qkv.shape[2] % (3 * heads):
        raise ValueError(f"window_attention: packed qkv must be (B, H*W, 3*heads*P), got {tuple(qkv.shape)}")
    pad = qkv.shape[2] // (3 * heads)
    if pad < 16 or pad & (pad - 1):
        raise ValueError(f"window_attention: packed head width {pad} is not a power of two >= 16")
    if height % window or width % window or not 0 <= shift < window:
        raise ValueError(f"window_attention: bad geometry H={height}, W={width}, window={window}, shift={shift}")
    n = window * window
    if tuple(bias.shape) != (heads, n, n) or not bias.is_contiguous():
        raise ValueError(f"window_attention: bias must be a contiguous (heads, N, N) = ({heads}, {n}, {n}) tensor")
    rows = (2 * window - 1) ** 2
    if table is not None and (tuple(table.shape) != (heads, rows) or not table.is_contiguous()
                              or table.dtype != bias.dtype):
        raise ValueError(f"window_attention: table must be a contiguous (heads, (2*window-1)^2) = ({heads}, {rows}) "
                         f"tensor of the bias's dtype {bias.dtype}, got {tuple(table.shape)} {table.dtype}")
    if qkv.stride(-1) != 1:
        raise ValueError("window_attention: packed qkv needs a unit channel stride")


def packed_window_attention(qkv, bias, height, width, *, heads, window, shift, table=None):
    """The backend's entry: packed qkv (``pack_qkv`` weights), log2-domain dense bias
    (``dense_log2_bias``) and optionally its table (``log2_bias_table``: lets the autotuner try
    gathering the bias instead of reading it densely) -> (B, H*W, heads * P). No validation here:
    the caller checked the layout once with :func:`check_packed`."""
    return _window_attention_op(qkv, bias, table, height, width, heads, window, shift, True)


def window_attention(qkv, height, width, *, heads, window, shift, bias_table, scale=None, dense_bias=None,
                     _use_mask: bool = True):
    """Fused shifted-window attention core (Triton) on the plain layout. See the module docstring.

    qkv: (B, H*W, 3D) in token order, the output of the qkv projection.
    bias_table: ((2*window-1)^2, heads), the learned relative position bias table.
    dense_bias: optionally a precomputed (heads, N, N) bias used instead of the table.
    Returns (B, H*W, D) in token order. ``_use_mask=False`` disables the shift mask (tests only).
    This wrapper packs qkv and the bias on every call (copies); the triton backend packs its
    weights once and calls :func:`packed_window_attention`.
    """
    dim, head_dim = check_args(qkv, height, width, heads, window, shift, bias_table)
    reason = unavailable_reason(qkv.device)
    if reason:
        raise RuntimeError(f"window_attention: Triton kernel cannot run: {reason}")
    if head_dim > MAX_HEAD_DIM:
        raise ValueError(f"window_attention: head_dim {head_dim} > {MAX_HEAD_DIM} is not supported by the kernel")
    if qkv.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"window_attention: dtype {qkv.dtype} not supported (float32, float16, bfloat16)")
    n = window * window
    if dense_bias is not None:
        if tuple(dense_bias.shape) != (heads, n, n):
            raise ValueError(f"window_attention: dense_bias must be (heads, N, N) = ({heads}, {n}, {n})")
        bias = (dense_bias.float() * LOG2E).to(bias_dtype(qkv.dtype)).contiguous()
        table = None
    else:
        bias = dense_log2_bias(bias_table, window, bias_dtype(qkv.dtype))
        table = log2_bias_table(bias_table, bias_dtype(qkv.dtype)).to(qkv.device)
    bias = bias.to(qkv.device)
    b, length, _ = qkv.shape
    pad = head_pad(head_dim)
    out = _window_attention_op(pack_activations(qkv, heads, scale), bias, table, height, width, heads,
                               window, shift, _use_mask)
    return out.view(b, length, heads, pad)[..., :head_dim].reshape(b, length, dim)


def pack_activations(qkv: torch.Tensor, heads: int, scale: float | None = None) -> torch.Tensor:
    """Plain (B, L, 3D) qkv activations -> the packed layout (a copy; the caller's tensor is kept):
    what ``pack_qkv`` weights would have produced."""
    b, length, three_d = qkv.shape
    head_dim = three_d // (3 * heads)
    pad = head_pad(head_dim)
    scale = head_dim**-0.5 if scale is None else float(scale)
    packed = qkv.new_zeros((b, length, 3, heads, pad))
    parts = qkv.reshape(b, length, 3, heads, head_dim).to(torch.float32, copy=True)
    parts[:, :, 0] *= scale * LOG2E
    packed[..., :head_dim] = parts.to(qkv.dtype)
    return packed.view(b, length, 3 * heads * pad)


# ------------------------------------------------- static description (kernel report)
def launch_site(args: dict, meta: dict) -> str:
    """A label for a launch, from its arguments (scripts/compile_kernels.py)."""
    return f"attention shift={meta['SHIFT']}" + (" (border windows masked)" if meta["USE_MASK"] else "")


def launch_flops(args: dict, meta: dict) -> int:
    """QK^T and PV FLOPs the tensor cores run (padded head width)."""
    tokens = args["qkv_ptr"].shape[0] * args["windows_x"] * args["windows_y"] * meta["WINDOW"] ** 2
    return 4 * tokens * meta["WINDOW"] ** 2 * meta["HEADS"] * meta["HEAD_PAD"]


def loop_weights(args: dict, meta: dict) -> list[float] | None:
    """Share of programs running each key loop, loops ordered by body length (the masked loop is the
    longer one): None when the kernel has one loop."""
    if not meta["USE_MASK"]:
        return None
    wx, wy = args["windows_x"], args["windows_y"]
    border = (wx + wy - 1) / (wx * wy)
    return [1.0 - border, border]


def launch_l2_bytes(args: dict, meta: dict) -> int:
    """Bytes the launch's programs load (from L2 at best) and store under its config (``meta``):
    per (window, head), q and the output once; K and V once per query block (per-block programs)
    or once (``WHOLE``); the head's dense (N, N) bias once, or its ((2w-1)^2) table once per
    program (``BIAS_TABLE``: gathered from L1 after that). On the H200 the per-block kernel of
    2026-11-26 moved ~225 MB per x2 128x128 launch in 61.6 us (3.7 TB/s: not bound by these
    loads, at 2x its pipe bound; benchmarks/NOTES.md), so for attention this is a lower estimate."""
    n, pad, heads = meta["WINDOW"] ** 2, meta["HEAD_PAD"], meta["HEADS"]
    pairs = args["qkv_ptr"].shape[0] * args["windows_x"] * args["windows_y"] * heads  # (window, head)
    e = args["qkv_ptr"].element_size()
    kv_passes = 1 if meta["WHOLE"] else cdiv(n, meta["BLOCK_M"])
    if meta["WHOLE"] and meta["BIAS_TABLE"]:
        bias = (2 * meta["WINDOW"] - 1) ** 2 * args["table_ptr"].element_size()
    else:
        bias = n * n * args["bias_ptr"].element_size()
    per_pair = n * pad * (e + 2 * e * kv_passes + args["out_ptr"].element_size()) + bias
    return pairs * per_pair


def main_loop_trips(meta: dict) -> int:
    """Iterations of the kernel's loop per program: key blocks, or query blocks when WHOLE."""
    return -(-meta["WINDOW"] ** 2 // (meta["BLOCK_M"] if meta.get("WHOLE") else meta["BLOCK_N"]))


def attention_flops(batch: int, height: int, width: int, dim: int, window: int) -> int:
    """QK^T and PV FLOPs of one call (multiply-add = 2)."""
    return 4 * batch * height * width * window * window * dim


__all__ = ["window_attention", "packed_window_attention", "torch_window_attention", "check_args", "check_packed",
           "pack_qkv", "pack_proj", "pack_activations", "dense_log2_bias", "log2_bias_table", "attention_flops"]
