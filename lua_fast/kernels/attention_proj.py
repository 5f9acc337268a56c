"""A Swin block's attention core, output projection and residual add as one Triton launch:
``t + proj(window_attention(qkv))``.

The triton backend otherwise runs them as two launches (``packed_window_attention``, then
``fused_linear`` with a residual epilogue), with the (M, heads * 32) attention output stored and
read back in between. This kernel is the fused MLP's pattern (``fused_mlp``) applied to attention:

- a program owns one block of BLOCK_M queries of one window (all heads), and keeps their projected
  output, all D = 360 columns as two fp32 tiles of 256 + 128 (``resident_split``), in registers;
- for each head in turn it runs the window attention kernel's own per-block online softmax
  (``_attend``: the same index math for the roll and window gather, bias, shift mask from the
  rolled-grid regions, base-2 exponentials), normalises the head's (BLOCK_M, 32) output and rounds it
  to the GEMM dtype exactly where the two-launch path stores it, then at once
  ``acc += o_h @ Wproj[head rows]`` (the packed projection weight's 32 rows of that head);
- the epilogue adds the projection bias and the residual rows (the queries' token rows, un-shifted)
  and stores once in the residual stream's dtype.

So the attention output never exists in memory and a block takes one launch fewer. What it gives
up: the whole-window attention programs (K and V read once per (window, head)) hold a (64, 256)
score tile that leaves no room for the accumulator, so each program re-reads the window's keys and
values per query block, and there are (windows x query blocks) programs instead of (windows x
heads). In shifted blocks the mask branch is uniform per program (border windows only), as in the
attention kernel. Off by default (``LUA_FAST_FUSED_ATTN_PROJ=1``, read per forward; bf16, fp16,
mixed) until a GPU has timed it against the two launches.

``torch_attention_proj`` is the same computation in PyTorch (fallback and test oracle).
"""

from __future__ import annotations


import torch

from .. import env
from .conv3x3 import alignment
from .fused_linear import Outputs, PackedLinear, resident_split, torch_fused_linear
from .triton_support import (INTERPRET, autotuned, cdiv, dot_precision, dot_upcast, fp32_operands, grid_dependency_sync,
                             kernel_op, launcher, next_pow2, pdl_options, size_class, tl, triton, tuned,
                             unavailable_reason)
# loop_weights: the share of programs in each key loop (masked: border windows), as the attention
# kernel's (the static kernel report reads it from this module).
from .window_attention import MAX_HEAD_DIM, check_packed, loop_weights  # noqa: F401

FUSED_ATTN_PROJ_ENV = "LUA_FAST_FUSED_ATTN_PROJ"
MAX_DIM = 512  # widest projection output the accumulator holds (two tiles, O0 + O1 <= 512)
ALL_KEYS_MAX = 256  # the all-keys configs hold a (BLOCK_M, keys) score tile: up to window 16


def attention_proj_enabled() -> bool:
    """``LUA_FAST_FUSED_ATTN_PROJ=1``: the triton backend runs attention + proj + residual as one launch."""
    return env.flag(FUSED_ATTN_PROJ_ENV, False)


def attention_proj_reason(proj: PackedLinear, heads: int, pad: int) -> str | None:
    """None if ``attention_proj`` takes this packed projection, else why not."""
    if proj.ln_eps is not None:
        return "the projection must be packed without a LayerNorm"
    if proj.k != heads * pad:
        return f"the projection's input width {proj.k} is not heads x packed head width = {heads} x {pad}"
    if proj.n > MAX_DIM:
        return f"D = {proj.n} > {MAX_DIM}: the projection's accumulator would not fit in registers"
    if pad > MAX_HEAD_DIM:
        return f"packed head width {pad} > {MAX_HEAD_DIM}"
    if proj.bias is None:
        return "the projection needs its bias (as the reference's WindowAttention has)"
    return None


def torch_attention_proj(attention, proj_weight, proj_bias, residual):
    """The composition: ``attention`` (M, heads * P) in the GEMM dtype, proj in nn.Linear layout."""
    return torch_fused_linear(attention, proj_weight, proj_bias, residual=residual)


# ------------------------------------------------------------------- the kernel
if triton is not None:
    from .fused_linear import _linear_epilogue
    from .window_attention import _all_keys, _attend, _region_label, _token_rows

    @triton.jit
    def _head_attention(qkv_base, bias_base, q_rows, offs_m, k_rows, k_label, stride_qkv_t, wy, wx, height, width,
                        WINDOW: tl.constexpr, SHIFT: tl.constexpr, HEAD_PAD: tl.constexpr, DIM_PAD: tl.constexpr,
                        MASKED: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, EVEN: tl.constexpr,
                        ALL_KEYS: tl.constexpr, KEYS: tl.constexpr, INPUT_PRECISION: tl.constexpr,
                        DOT_UPCAST: tl.constexpr):
        """One head's normalised fp32 attention output for the program's query block: an online
        softmax over key blocks (``_attend``), or with ALL_KEYS all KEYS keys at once (``_all_keys``,
        one pass; k_rows / k_label: the window's key rows and region labels, the same for every head)."""
        N: tl.constexpr = WINDOW * WINDOW
        offs_d = tl.arange(0, HEAD_PAD)
        q_ptrs = qkv_base + q_rows[:, None] * stride_qkv_t + offs_d[None, :]
        if EVEN:
            q = tl.load(q_ptrs)
        else:
            q = tl.load(q_ptrs, mask=(offs_m < N)[:, None], other=0.0)
        if ALL_KEYS:
            offs_n = tl.arange(0, KEYS)
            kt_ptrs = qkv_base + DIM_PAD + k_rows[None, :] * stride_qkv_t + offs_d[:, None]  # k, transposed
            v_ptrs = qkv_base + 2 * DIM_PAD + k_rows[:, None] * stride_qkv_t + offs_d[None, :]
            b_ptrs = bias_base + offs_m[:, None] * N + offs_n[None, :]
            if EVEN and KEYS == N:
                kt = tl.load(kt_ptrs)
                v = tl.load(v_ptrs)
                bias = tl.load(b_ptrs)
            else:
                kt = tl.load(kt_ptrs, mask=(offs_n < N)[None, :], other=0.0)
                v = tl.load(v_ptrs, mask=(offs_n < N)[:, None], other=0.0)
                bias = tl.load(b_ptrs, mask=(offs_m < N)[:, None] & (offs_n < N)[None, :], other=0.0)
            if DOT_UPCAST:
                kt = kt.to(tl.float32)
            acc, l_i = _all_keys(q, kt, v, bias, k_label, offs_m, offs_n, wy, wx, height, width, WINDOW, SHIFT, KEYS,
                                 MASKED, INPUT_PRECISION, DOT_UPCAST)
        else:
            acc, l_i = _attend(q, offs_m, qkv_base, bias_base, stride_qkv_t, wy, wx, height, width, WINDOW, SHIFT,
                               HEAD_PAD, DIM_PAD, BLOCK_M, BLOCK_N, MASKED, EVEN, INPUT_PRECISION, DOT_UPCAST)
        return acc / l_i[:, None]

    @triton.jit
    def _all_heads(qkv_batch, bias_ptr, w_ptr, q_rows, offs_m, k_rows, k_label, stride_qkv_t, wy, wx, height,
                   width, HEADS: tl.constexpr, WINDOW: tl.constexpr, SHIFT: tl.constexpr, HEAD_PAD: tl.constexpr,
                   MASKED: tl.constexpr, W_STRIDE: tl.constexpr, O0: tl.constexpr, O1: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, EVEN: tl.constexpr, ALL_KEYS: tl.constexpr,
                   KEYS: tl.constexpr, INPUT_PRECISION: tl.constexpr, DOT_UPCAST: tl.constexpr):
        """The query block's projected output over all heads: fp32 (BLOCK_M, O0) and (BLOCK_M, O1)
        accumulators (the second (BLOCK_M, 16) and unused when O1 = 0)."""
        N: tl.constexpr = WINDOW * WINDOW
        DIM_PAD: tl.constexpr = HEADS * HEAD_PAD
        acc0 = tl.zeros([BLOCK_M, O0], tl.float32)
        acc1 = tl.zeros([BLOCK_M, O1 if O1 > 0 else 16], tl.float32)
        offs_o0 = tl.arange(0, O0)
        offs_o1 = O0 + tl.arange(0, O1 if O1 > 0 else 16)
        offs_d = tl.arange(0, HEAD_PAD)
        for head in range(HEADS):
            o = _head_attention(qkv_batch + head * HEAD_PAD, bias_ptr + head * N * N, q_rows, offs_m, k_rows,
                                k_label, stride_qkv_t, wy, wx, height, width, WINDOW, SHIFT, HEAD_PAD, DIM_PAD,
                                MASKED, BLOCK_M, BLOCK_N, EVEN, ALL_KEYS, KEYS, INPUT_PRECISION, DOT_UPCAST)
            # The head's output in the GEMM dtype: where the two-launch path rounds it for its store.
            o = o.to(w_ptr.dtype.element_ty)
            w_rows = (head * HEAD_PAD + offs_d)[:, None] * W_STRIDE
            wa = tl.load(w_ptr + w_rows + offs_o0[None, :])
            if DOT_UPCAST:
                acc0 = tl.dot(o.to(tl.float32), wa.to(tl.float32), acc0, input_precision="ieee")
            else:
                acc0 = tl.dot(o, wa, acc0, input_precision=INPUT_PRECISION)
            if O1 > 0:
                wb = tl.load(w_ptr + w_rows + offs_o1[None, :])
                if DOT_UPCAST:
                    acc1 = tl.dot(o.to(tl.float32), wb.to(tl.float32), acc1, input_precision="ieee")
                else:
                    acc1 = tl.dot(o, wb, acc1, input_precision=INPUT_PRECISION)
        return acc0, acc1

    @triton.jit
    def _attention_proj_kernel(
        qkv_ptr, bias_ptr, w_ptr, pb_ptr, r_ptr, out_ptr,
        stride_qkv_b, stride_qkv_t, stride_rm, stride_om, height, width, windows_x, windows_y, size_key,
        HEADS: tl.constexpr, WINDOW: tl.constexpr, SHIFT: tl.constexpr, HEAD_PAD: tl.constexpr,
        USE_MASK: tl.constexpr, D: tl.constexpr, W_STRIDE: tl.constexpr, O0: tl.constexpr, O1: tl.constexpr,
        R_ALIGN: tl.constexpr, O_ALIGN: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
        ALL_KEYS: tl.constexpr, KEYS: tl.constexpr, INPUT_PRECISION: tl.constexpr, DOT_UPCAST: tl.constexpr,
        PDL: tl.constexpr,
    ):
        grid_dependency_sync(PDL)
        N: tl.constexpr = WINDOW * WINDOW
        EVEN: tl.constexpr = (N % BLOCK_M == 0) and (N % BLOCK_N == 0)
        pid = tl.program_id(0)  # batch * windows + window
        win = pid % (windows_x * windows_y)
        batch = pid // (windows_x * windows_y)
        wy = (win // windows_x) * WINDOW
        wx = (win % windows_x) * WINDOW
        offs_m = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
        m_ok = offs_m < N
        # The queries' token rows (un-shifted pixels); past N (a partial last block) clamped to the
        # window's last token: loaded, never stored.
        q_rows = _token_rows(wy, wx, tl.minimum(offs_m, N - 1), height, width, WINDOW, SHIFT)
        border = (wy == height - WINDOW) | (wx == width - WINDOW)  # only these windows mix regions
        if ALL_KEYS:  # the window's key rows and their region labels: the same for every head
            offs_n = tl.arange(0, KEYS)
            k_rows = _token_rows(wy, wx, tl.minimum(offs_n, N - 1), height, width, WINDOW, SHIFT)
            if USE_MASK:
                k_label = _region_label(wy + offs_n // WINDOW, wx + offs_n % WINDOW, height, width, WINDOW, SHIFT)
            else:
                k_label = offs_n  # unused
        else:
            k_rows = q_rows  # unused
            k_label = q_rows
        qkv_batch = qkv_ptr + batch.to(tl.int64) * stride_qkv_b
        # In shifted blocks only the windows in the last row or column of the grid mix regions: the
        # others run the head loop without mask code (a branch uniform over the program).
        if USE_MASK:
            if border:
                acc0, acc1 = _all_heads(qkv_batch, bias_ptr, w_ptr, q_rows, offs_m, k_rows, k_label, stride_qkv_t,
                                        wy, wx, height, width, HEADS, WINDOW, SHIFT, HEAD_PAD, True, W_STRIDE, O0,
                                        O1, BLOCK_M, BLOCK_N, EVEN, ALL_KEYS, KEYS, INPUT_PRECISION, DOT_UPCAST)
            else:
                acc0, acc1 = _all_heads(qkv_batch, bias_ptr, w_ptr, q_rows, offs_m, k_rows, k_label, stride_qkv_t,
                                        wy, wx, height, width, HEADS, WINDOW, SHIFT, HEAD_PAD, False, W_STRIDE, O0,
                                        O1, BLOCK_M, BLOCK_N, EVEN, ALL_KEYS, KEYS, INPUT_PRECISION, DOT_UPCAST)
        else:
            acc0, acc1 = _all_heads(qkv_batch, bias_ptr, w_ptr, q_rows, offs_m, k_rows, k_label, stride_qkv_t, wy,
                                    wx, height, width, HEADS, WINDOW, SHIFT, HEAD_PAD, False, W_STRIDE, O0, O1,
                                    BLOCK_M, BLOCK_N, EVEN, ALL_KEYS, KEYS, INPUT_PRECISION, DOT_UPCAST)
        offs_o0 = tl.arange(0, O0)
        offs_o1 = O0 + tl.arange(0, O1 if O1 > 0 else 16)
        rows = batch.to(tl.int64) * height * width + q_rows  # rows of the (B*H*W, D) residual stream
        _linear_epilogue(acc0, 0.0, pb_ptr, r_ptr, out_ptr, out_ptr, rows, m_ok, offs_o0, stride_rm, stride_om,
                         D, R_ALIGN, O_ALIGN, True, False, True, False, False, O0)
        if O1 > 0:
            _linear_epilogue(acc1, 0.0, pb_ptr, r_ptr, out_ptr, out_ptr, rows, m_ok, offs_o1, stride_rm, stride_om,
                             D, R_ALIGN, O_ALIGN, True, False, True, False, False, O1)

    # sm_90a, Triton 3.9, bf16 x2 (wave bound per launch, unshifted / shifted; the two launches it
    # replaces: 17.3 / 20.7 us at 128x128, 5.8 / 7.4 us at 64x64):
    # - ALL_KEYS with 32 query rows (mma.sync; 512 programs at 128x128): 34.5 / 36.8 us at 128x128,
    #   8.6 / 9.4 us at 64x64, 156-170 registers, 0 spills: the best at both sizes;
    # - the online softmax over 64-key blocks, 64 rows, 8 warps (wgmma): 39.5 / 45.4 and 19.8 / 24.2
    #   us (64 programs at 64x64), 0 spills; 4 warps only for narrow models (<= 128 columns).
    # Not offered: ALL_KEYS with 64 rows (200-536 B of spills: the score tile beside the 64 x 384
    # accumulator), the online softmax with 32 rows (twice the instructions: 80 / 87 us), 16 warps
    # (registers capped at 128 a thread: 56-1840 B of spills, 55-118 us).
    _CONFIGS = [
        triton.Config({"BLOCK_M": 32, "BLOCK_N": 64, "ALL_KEYS": 1}, num_warps=8, num_stages=1),
    ] + [
        triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "ALL_KEYS": 0}, num_warps=w, num_stages=s)
        for bm, bn, w, s in [(64, 64, 8, 2), (64, 64, 8, 3), (64, 64, 4, 2)]
    ]

    def _prune(configs, named_args, **kwargs):
        size = max(16, next_pow2(kwargs["WINDOW"] ** 2))
        wide = kwargs["O0"] + kwargs["O1"] > 128  # 4 warps hold 64 x 128 fp32 at most beside the attention
        kept = [c for c in configs if c.kwargs["BLOCK_M"] <= size and c.kwargs["BLOCK_N"] <= size
                and not (wide and c.num_warps < 8) and (not c.kwargs["ALL_KEYS"] or kwargs["KEYS"] <= ALL_KEYS_MAX)]
        if fp32_operands(kwargs):  # (a fp32 score tile of all keys would spill)
            kept = [c for c in kept if not c.kwargs["ALL_KEYS"]] or kept
        return tuned(kept) or [triton.Config({"BLOCK_M": min(64, size), "BLOCK_N": min(64, size), "ALL_KEYS": 0},
                                             num_warps=8, num_stages=2)]

    _attention_proj_tuned = autotuned(_attention_proj_kernel, _CONFIGS, _prune,
                              ["WINDOW", "SHIFT", "HEADS", "HEAD_PAD", "USE_MASK", "D", "W_STRIDE", "R_ALIGN",
                               "O_ALIGN"])


INTERPRET_CONFIG = {"BLOCK_M": 32, "BLOCK_N": 32, "ALL_KEYS": 0}  # interpreter runs (tests vary it)


def _launch(qkv, bias, weight, proj_bias, residual, height, width, heads, window, shift, d):
    b, length, three_dp = qkv.shape
    pad = three_dp // (3 * heads)
    n = window * window
    windows_x, windows_y = width // window, height // window
    outs = Outputs(b * length, d, qkv.device, residual.dtype)
    o0, o1 = resident_split(d)
    meta = dict(HEADS=heads, WINDOW=window, SHIFT=shift, HEAD_PAD=pad, USE_MASK=bool(shift), D=d,
                W_STRIDE=weight.shape[1], O0=o0, O1=o1, R_ALIGN=alignment(residual), O_ALIGN=alignment(outs.dst),
                KEYS=max(16, next_pow2(n)), INPUT_PRECISION=dot_precision(weight.dtype),
                DOT_UPCAST=dot_upcast(weight.dtype))
    args = (qkv, bias, weight, proj_bias, residual, outs.dst, qkv.stride(0), qkv.stride(1), residual.stride(0),
            outs.dst.stride(0), height, width, windows_x, windows_y, size_class(b * length))
    grid = lambda c: (b * windows_x * windows_y, cdiv(n, c["BLOCK_M"]))  # noqa: E731
    if INTERPRET:
        size = max(16, next_pow2(n))
        meta_i = dict(INTERPRET_CONFIG, BLOCK_M=min(INTERPRET_CONFIG["BLOCK_M"], size),
                      BLOCK_N=min(INTERPRET_CONFIG["BLOCK_N"], size))
        meta_i["ALL_KEYS"] = int(bool(meta_i["ALL_KEYS"]) and meta["KEYS"] <= ALL_KEYS_MAX)
        launcher(_attention_proj_kernel)[grid(meta_i)](*args, **meta_i, **meta, PDL=False)
    else:
        launcher(_attention_proj_tuned)[grid](*args, **meta, **pdl_options(qkv.device))
    return outs.done()[0]


def _attention_proj_fake(qkv, bias, weight, proj_bias, residual, height, width, heads, window, shift, d):
    return residual.new_empty((qkv.shape[0] * qkv.shape[1], d))


@kernel_op("attention_proj", _attention_proj_fake)
def _attention_proj_op(qkv: torch.Tensor, bias: torch.Tensor, weight: torch.Tensor, proj_bias: torch.Tensor,
                       residual: torch.Tensor, height: int, width: int, heads: int, window: int, shift: int,
                       d: int) -> torch.Tensor:
    return _launch(qkv, bias, weight, proj_bias, residual, height, width, heads, window, shift, d)


def check_attention_proj(qkv, bias, proj: PackedLinear, residual, height, width, heads, window, shift) -> None:
    """Validate the packed arguments (the backend calls it once per input shape)."""
    check_packed(qkv, bias, height, width, heads, window, shift)
    reason = attention_proj_reason(proj, heads, qkv.shape[2] // (3 * heads))
    if reason:
        raise ValueError(f"attention_proj: {reason}")
    rows = qkv.shape[0] * qkv.shape[1]
    if tuple(residual.shape) != (rows, proj.n) or residual.stride(1) != 1:
        raise ValueError(f"attention_proj: residual must be ({rows}, {proj.n}) with unit column stride, got "
                         f"{tuple(residual.shape)}")
    if qkv.dtype != proj.weight.dtype:
        raise ValueError(f"attention_proj: qkv ({qkv.dtype}) and the projection ({proj.weight.dtype}) must share "
                         "the GEMM dtype")


def attention_proj(qkv, bias, proj: PackedLinear, residual, height, width, *, heads, window, shift, check=True):
    """``residual + proj(window_attention(qkv))`` in one launch (see the module docstring).

    qkv: packed (B, H*W, 3 * heads * P) (``pack_qkv`` weights), bias: the log2-domain dense bias
    (heads, N, N) (``dense_log2_bias``), proj: ``pack_linear(pack_proj(w, heads), b, dtype)``,
    residual: (B*H*W, D) in the residual stream's dtype. Returns (B*H*W, D) in that dtype."""
    if check:
        check_attention_proj(qkv, bias, proj, residual, height, width, heads, window, shift)
        reason = unavailable_reason(qkv.device)
        if reason:
            raise RuntimeError(f"attention_proj: Triton kernel cannot run: {reason}")
    return _attention_proj_op(qkv, bias, proj.weight, proj.bias, residual, height, width, heads, window, shift,
                              proj.n)


# ------------------------------------------------- static description (kernel report)
def launch_site(args: dict, meta: dict) -> str:
    return (f"attention+proj {meta['HEADS'] * meta['HEAD_PAD']}->{meta['D']}+residual shift={meta['SHIFT']}"
            + (" (border windows masked)" if meta["USE_MASK"] else ""))


def launch_flops(args: dict, meta: dict) -> int:
    tokens = args["qkv_ptr"].shape[0] * args["windows_x"] * args["windows_y"] * meta["WINDOW"] ** 2
    dim_pad = meta["HEADS"] * meta["HEAD_PAD"]
    return 4 * tokens * meta["WINDOW"] ** 2 * dim_pad + 2 * tokens * dim_pad * meta["D"]


def launch_l2_bytes(args: dict, meta: dict) -> int:
    """Bytes the launch's programs load (from L2 at best) and store under its config (``meta``):
    each program (a window's block of BLOCK_M queries, all heads) reads its queries, **all the
    window's keys and values** and its rows of every head's dense bias, then **the whole
    projection weight** (heads x 32 rows, O0 + O1 columns), the residual rows and writes the
    output once. K, V and the weight are re-read by every query block of a window, which the
    two-launch path does not do (``window_attention``'s whole-window programs read K and V once
    per (window, head); the proj GEMM reads its weight once per 128-256 rows)."""
    n, heads, pad = meta["WINDOW"] ** 2, meta["HEADS"], meta["HEAD_PAD"]
    windows = args["qkv_ptr"].shape[0] * args["windows_x"] * args["windows_y"]
    blocks = cdiv(n, meta["BLOCK_M"])
    e, width = args["qkv_ptr"].element_size(), heads * pad
    qkv = windows * (n * width * e + blocks * 2 * n * width * e)
    bias = windows * heads * n * n * args["bias_ptr"].element_size()
    weight = windows * blocks * width * (meta["O0"] + meta["O1"]) * args["w_ptr"].element_size()
    rows = windows * n * meta["D"] * (args["r_ptr"].element_size() + args["out_ptr"].element_size())
    return qkv + bias + weight + rows


def loop_trips(meta: dict, body: list[str]) -> int:
    """Trips of a SASS loop from its opcodes: the head loop holds each head's normalisation (the
    division by the row sums: MUFU.RCP) and, without ALL_KEYS, the key loops inside it (online
    softmax: exponentials, no division), which run N / BLOCK_N times per head."""
    if meta["ALL_KEYS"] or any(op.startswith("MUFU.RCP") for op in body):
        return meta["HEADS"]
    return -(-meta["WINDOW"] ** 2 // meta["BLOCK_N"])


def main_loop_trips(meta: dict) -> int:
    return -(-meta["WINDOW"] ** 2 // meta["BLOCK_N"])


__all__ = ["attention_proj", "torch_attention_proj", "attention_proj_reason", "attention_proj_enabled",
           "check_attention_proj", "FUSED_ATTN_PROJ_ENV"]
