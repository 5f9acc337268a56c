"""Backend "triton": the whole forward in token layout with the fused kernels.

Data stays in token layout (B, H*W, D) == channels-last (B, H, W, D) from the first conv
to the heads: no roll, partition, merge, mask tensor, transpose copy or pixel-shuffle
copy exists anywhere.

- conv_first: Triton conv3x3 reading the NCHW latent in place (channel stride H*W); the patch
  norm is one ``add_layer_norm`` launch.
- each Swin block, default in bf16/fp16/mixed (``LUA_FAST_TRITON_GEMMS=1`` forces it): five launches
  (one fewer with ``LUA_FAST_FUSED_MLP=1``: fc1 and fc2 as one ``fused_mlp``; one fewer with
  ``LUA_FAST_FUSED_ATTN_PROJ=1``: attention and proj as one ``attention_proj``),
      qkv = LN1(t) @ Wqkv + b            fused_linear, LayerNorm prologue (packed heads)
      a   = window attention(qkv)        one launch (two in shifted blocks: interior, border)
      t   = t + a @ Wproj + b            fused_linear, residual epilogue
      h   = GELU(LN2(t) @ W1 + b1)       fused_linear, LayerNorm prologue + GELU epilogue
      t   = t + h @ W2 + b2              fused_linear, residual epilogue
  so no LayerNorm output, residual sum or GELU input ever round-trips through memory.
- default in fp32/tf32 (``LUA_FAST_TRITON_GEMMS=0`` forces it): qkv, proj and fc2 on cuBLAS (proj
  and fc2 without their bias), each residual add + the next LayerNorm in one ``add_layer_norm``
  launch, fc1 + bias + GELU as a Triton GEMM: seven launches per block. Which is faster in bf16 is
  a GPU measurement (both paths stay selectable for it).
- each RSTB conv and conv_after_body: Triton conv3x3 with the residual add in its epilogue
  (conv_after_body writes inside a zero border for the heads).
- heads: ``fused_head`` (bias + LeakyReLU in the epilogue, pixel-shuffle stores, padded chaining).

Weights for the kernels are packed once, here. Shapes are validated once per input shape, not per
kernel call.
"""

from __future__ import annotations

import contextlib
import os

import torch
import torch.nn.functional as F
from torch import nn

from .. import env
from ..kernels.conv3x3 import conv3x3, pack_conv
from ..kernels.fused_linear import PackedLinear, check_args as check_linear, fused_linear, pack_linear
from ..kernels.attention_proj import (attention_proj, attention_proj_enabled, attention_proj_reason,
                                      check_attention_proj)
from ..kernels.fused_mlp import check_mlp, fused_mlp, fused_mlp_enabled, mlp_reason
from ..kernels.layer_norm import add_layer_norm
from ..kernels.triton_support import forget_choices_of_another_mode, other_cuda_device, refuse_gradients
from ..kernels.upsample_head import PackedHead, fused_head
from ..kernels.window_attention import (bias_dtype, check_packed, dense_log2_bias, log2_bias_table, pack_proj,
                                        pack_qkv, packed_window_attention)
from ..precision import Precision, backend_flags, without_autocast
from ..reference.model import LUA, SwinBlock

GEMMS_ENV = "LUA_FAST_TRITON_GEMMS"


def fused_gemms_enabled(precision: Precision) -> bool:
    """``LUA_FAST_TRITON_GEMMS=1/0`` decides; by default the fused Triton GEMMs run in bf16/fp16
    compute (tensor cores) and cuBLAS in fp32/tf32, where the Triton GEMMs would run on FMA units
    (IEEE) and the kernel report puts them at 65 ms of issue bound per 128x128 forward."""
    if os.environ.get(GEMMS_ENV, "").strip():
        return env.flag(GEMMS_ENV, False)
    return precision.compute in (torch.float16, torch.bfloat16)


def _norm(norm: nn.LayerNorm):
    """(weight, bias, eps) in fp32, converted once (the kernels keep LayerNorm parameters in fp32)."""
    return norm.weight.detach().float().contiguous(), norm.bias.detach().float().contiguous(), norm.eps


class _Block:
    """One Swin block's weights in the kernels' layouts."""

    def __init__(self, block: SwinBlock, compute: torch.dtype, fused: bool) -> None:
        attn = block.attn
        self.heads, self.window, self.shift = attn.num_heads, block.window, block.shift
        self.norm1 = _norm(block.norm1)
        self.norm2 = _norm(block.norm2)
        qkv_w, qkv_b = pack_qkv(attn.qkv.weight.detach(), attn.qkv.bias.detach(), attn.num_heads, attn.scale)
        proj_w = pack_proj(attn.proj.weight.detach(), attn.num_heads)
        self.bias = dense_log2_bias(attn.relative_position_bias_table.detach(), block.window, bias_dtype(compute))
        self.bias_table = log2_bias_table(attn.relative_position_bias_table.detach(), bias_dtype(compute))
        mlp = block.mlp
        if fused:  # the block's LayerNorms folded into the qkv and fc1 GEMMs
            self.qkv = pack_linear(qkv_w, qkv_b, compute, layer_norm=self.norm1)
            self.proj = pack_linear(proj_w, attn.proj.bias, compute)
            self.fc1 = pack_linear(mlp.fc1.weight, mlp.fc1.bias, compute, layer_norm=self.norm2)
            self.fc2 = pack_linear(mlp.fc2.weight, mlp.fc2.bias, compute)
        else:  # cuBLAS operands (the biases of proj and fc2 go to add_layer_norm)
            self.fc1 = pack_linear(mlp.fc1.weight, mlp.fc1.bias, compute)
            self.qkv = (qkv_w.to(compute), qkv_b.to(compute))
            self.proj, self.proj_bias = proj_w.to(compute), attn.proj.bias.detach().float()
            self.fc2, self.fc2_bias = mlp.fc2.weight.detach().to(compute), mlp.fc2.bias.detach().float()


class TritonBackendLUA(nn.Module):
    """Runs a loaded reference :class:`LUA` (weights in ``precision.storage``) with the fused kernels."""

    def __init__(self, model: LUA, precision: Precision, fused_gemms: bool | None = None) -> None:
        super().__init__()
        self.model = model
        self.config = model.config
        self.precision = precision
        self.fused_gemms = fused_gemms_enabled(precision) if fused_gemms is None else fused_gemms
        compute = precision.compute
        # tf32 mode: the Triton GEMMs use TF32 too (the convs and attention stay IEEE).
        self._gemm_precision = "tf32" if precision.mode == "tf32" else None

        def packed(conv: nn.Conv2d):
            return pack_conv(conv.weight.detach(), conv.bias.detach(), compute)

        self._convs = {"conv_first": packed(model.conv_first), "conv_after_body": packed(model.conv_after_body)}
        self._convs.update({f"layers.{i}.conv": packed(layer.conv) for i, layer in enumerate(model.layers)})
        self._heads = {
            scale: PackedHead.from_weights(model.heads[name], compute) for name, scale in self.config.heads
        }
        self._blocks = [[_Block(blk, compute, self.fused_gemms) for blk in layer.residual_group.blocks]
                        for layer in model.layers]
        # Whether every block's MLP fits the one-launch kernel: the fused GEMMs' packing, D <= 512, and
        # 2-byte GEMM operands (with fp32 operands, IEEE or tf32x3, the kernel spills 584-808 B a
        # thread on sm_90a next to its register-resident fc2 accumulator: the two launches stay).
        two_byte = self.fused_gemms and compute in (torch.float16, torch.bfloat16)
        every = [blk for blocks in self._blocks for blk in blocks]
        self._mlp_fits = two_byte and all(mlp_reason(blk.fc1, blk.fc2) is None for blk in every)
        # The same for attention + proj + residual in one launch (its accumulator beside the attention).
        self._attn_proj_fits = two_byte and all(
            attention_proj_reason(blk.proj, blk.heads, blk.qkv.n // (3 * blk.heads)) is None for blk in every)
        self._patch_norm, self._final_norm = _norm(model.patch_embed.norm), _norm(model.norm)
        self._checked: set = set()  # input shapes whose kernel arguments were validated

    @property
    def fused_mlp(self) -> bool:
        """Whether forwards run each block's MLP as one ``fused_mlp`` launch: ``LUA_FAST_FUSED_MLP=1``
        (read per forward, like ``LUA_FAST_PDL``; a CUDA graph keeps what it captured) and layers
        that fit it."""
        return self._mlp_fits and fused_mlp_enabled()

    @property
    def fused_attn_proj(self) -> bool:
        """Whether forwards run each block's attention, proj and residual add as one
        ``attention_proj`` launch: ``LUA_FAST_FUSED_ATTN_PROJ=1`` (read per forward) and layers that fit."""
        return self._attn_proj_fits and attention_proj_enabled()

    def forward(self, x: torch.Tensor, scales=(2,)) -> dict[int, torch.Tensor]:
        # On x's device: Triton launches on the current CUDA device, whatever its tensors' device
        # (once per forward here, so each kernel op finds its device current).
        if torch.is_grad_enabled():  # Upscaler.upscale runs without grad; a direct model call may not
            refuse_gradients("the triton backend", (x, *self.model.parameters()))
        if torch.compiler.is_compiling():
            index = None
        else:
            index = other_cuda_device(x)
            forget_choices_of_another_mode()  # (e.g. choices timed before use_deterministic_algorithms)
        with backend_flags(self.precision, x.device), without_autocast(x.device), (
                contextlib.nullcontext() if index is None else torch.cuda.device(index)):
            return self.model.upscale_with(x, scales, self.trunk, self.head)

    def head(self, g: torch.Tensor, scale: int) -> torch.Tensor:
        return fused_head(g, self._heads[scale], out_dtype=self.precision.storage, padded_input=True)

    # ------------------------------------------------------------------ validation
    def _validate(self, key, batch: int, height: int, width: int) -> None:
        """Check every kernel's arguments for this input shape once (the hot path passes check=False)."""
        if key in self._checked:
            return
        compute, stream = self.precision.compute, self.precision.storage
        device = "meta"  # shapes, strides and dtypes only
        rows = batch * height * width
        for blocks in self._blocks:
            for blk in blocks:
                dim = blk.norm1[0].shape[0]
                t = torch.empty(rows, dim, device=device, dtype=stream)
                qkv_cols = blk.qkv.n if isinstance(blk.qkv, PackedLinear) else blk.qkv[0].shape[0]
                qkv = torch.empty(batch, height * width, qkv_cols, device=device, dtype=compute)
                check_packed(qkv, blk.bias, height, width, blk.heads, blk.window, blk.shift, blk.bias_table)
                if isinstance(blk.qkv, PackedLinear):
                    check_linear(t, blk.qkv, None)
                    check_linear(torch.empty(rows, blk.proj.k, device=device, dtype=compute), blk.proj, t)
                    check_linear(t, blk.fc1, None)
                    check_linear(torch.empty(rows, blk.fc2.k, device=device, dtype=compute), blk.fc2, t)
                    if self._mlp_fits:
                        check_mlp(t, blk.fc1, blk.fc2)
                    if self._attn_proj_fits:
                        check_attention_proj(qkv, blk.bias, blk.proj, t, height, width, blk.heads, blk.window,
                                             blk.shift)
                else:
                    check_linear(torch.empty(rows, blk.fc1.k, device=device, dtype=compute), blk.fc1, None)
        self._checked.add(key)

    # ------------------------------------------------------------------ forward
    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """Padded NCHW latent -> trunk features, channels-last, compute dtype, inside a zero border:
        (B, H+2, W+2, D) (the heads read it with ``padded_input``)."""
        compute, stream = self.precision.compute, self.precision.storage
        b, _, height, width = x.shape
        dim = self.config.embed_dim
        rows = b * height * width
        key = (tuple(x.shape), x.dtype)
        if not torch.compiler.is_compiling():
            self._validate(key, b, height, width)
        one_mlp, one_attn = self.fused_mlp, self.fused_attn_proj
        f = conv3x3(x.permute(0, 2, 3, 1), self._convs["conv_first"], out_dtype=stream)  # cast in the kernel
        t = add_layer_norm(f.reshape(rows, dim), *self._patch_norm, y_dtype=stream, check=False)[1]
        for i, blocks in enumerate(self._blocks):
            y = t
            if self.fused_gemms:
                for j, blk in enumerate(blocks):
                    # The last block also writes its output in the compute dtype for the RSTB conv.
                    y = self._block_fused(blk, y, b, height, width, last=j == len(blocks) - 1, one_mlp=one_mlp,
                                          one_attn=one_attn)
            else:
                y1 = add_layer_norm(y, *blocks[0].norm1, y_dtype=compute, check=False)[1]
                for j, blk in enumerate(blocks):
                    after = blocks[j + 1].norm1 if j + 1 < len(blocks) else None
                    y, y1 = self._block_cublas(blk, y, y1, after, b, height, width)
            if isinstance(y, tuple):  # (stream, compute-dtype copy): the conv only needs the copy
                y = y[1]
            t = conv3x3(y.view(b, height, width, dim).to(compute), self._convs[f"layers.{i}.conv"],
                        residual=t.view(b, height, width, dim), out_dtype=stream).reshape(rows, dim)
        t = add_layer_norm(t, *self._final_norm, y_dtype=compute, check=False)[1]
        # Written inside a zero border: the heads' first conv reads its halo without masks.
        return conv3x3(t.view(b, height, width, dim), self._convs["conv_after_body"], residual=f,
                       out_dtype=compute, out_padded=True)

    def _attention(self, blk: _Block, qkv: torch.Tensor, b: int, height: int, width: int) -> torch.Tensor:
        a = packed_window_attention(qkv.view(b, height * width, -1), blk.bias, height, width, heads=blk.heads,
                                    window=blk.window, shift=blk.shift, table=blk.bias_table)
        return a.view(b * height * width, -1)

    def _block_fused(self, blk: _Block, t: torch.Tensor, b: int, height: int, width: int, last: bool = False,
                     one_mlp: bool = False, one_attn: bool = False):
        """t: (rows, D) residual stream -> the block's output (five launches; one fewer with each of
        ``one_mlp``, ``one_attn``). ``last`` with a wider stream ("mixed") also returns the output in
        the compute dtype: ``(out, out_compute)``."""
        p = self._gemm_precision
        qkv = fused_linear(t, blk.qkv, input_precision=p, check=False)  # LN1 folded in
        if one_attn:  # attention + proj + residual, one launch
            t = attention_proj(qkv.view(b, height * width, -1), blk.bias, blk.proj, t, height, width,
                               heads=blk.heads, window=blk.window, shift=blk.shift, check=False)
        else:
            a = self._attention(blk, qkv, b, height, width)
            t = fused_linear(a, blk.proj, residual=t, input_precision=p, check=False)
        compute = self.precision.compute
        also = compute if last and t.dtype != compute else None
        if one_mlp:  # LN2 + fc1 + GELU + fc2 + residual, one launch
            return fused_mlp(t, blk.fc1, blk.fc2, input_precision=p, also_in=also, check=False)
        h = fused_linear(t, blk.fc1, gelu=True, input_precision=p, check=False)  # LN2 folded in
        return fused_linear(h, blk.fc2, residual=t, input_precision=p, also_in=also, check=False)

    def _block_cublas(self, blk: _Block, t, y1, next_norm, b: int, height: int, width: int):
        """(t, LN1(t)) -> (t', LN1_next(t') or None): cuBLAS GEMMs, add+LayerNorm launches."""
        compute = self.precision.compute
        qkv = F.linear(y1, *blk.qkv)
        a = self._attention(blk, qkv, b, height, width)
        t, y2 = add_layer_norm(t, *blk.norm2, add=F.linear(a, blk.proj), add_bias=blk.proj_bias, y_dtype=compute,
                               check=False)
        h = fused_linear(y2, blk.fc1, gelu=True, input_precision=self._gemm_precision, check=False)
        out = F.linear(h, blk.fc2)
        if next_norm is None:  # the RSTB's conv follows: only the add
            return add_layer_norm(t, *blk.norm1, add=out, add_bias=blk.fc2_bias, normalize=False, check=False)
        return add_layer_norm(t, *next_norm, add=out, add_bias=blk.fc2_bias, y_dtype=compute, check=False)
