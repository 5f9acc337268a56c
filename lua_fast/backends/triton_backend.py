"""Backend "triton": the whole forward in token layout with the fused kernels.

Data stays in token layout (B, H*W, D) == channels-last (B, H, W, D) from the first conv
to the heads: no roll, partition, merge, mask tensor, transpose copy or pixel-shuffle
copy exists anywhere.

- conv_first: Triton conv3x3 reading the NCHW latent in place (channel stride H*W).
- each Swin block: LayerNorm -> qkv GEMM (packed: heads padded to 32, softmax scale folded
  in) -> ``packed_window_attention`` (roll, window gather, dense relative position bias,
  shift mask and online softmax; shifted blocks launch the border windows separately) ->
  proj GEMM (zero columns at the padding) + residual -> LayerNorm -> fc1 + GELU -> fc2 +
  residual.
- each RSTB conv and conv_after_body: Triton conv3x3 on the token tensor with the
  residual add in its epilogue (fp32 output in "mixed" mode).
- heads: ``fused_head`` (bias + LeakyReLU in the epilogue, pixel-shuffle stores).

GEMMs, LayerNorm and GELU are PyTorch ops (cuBLAS); which further fusions pay is a GPU
measurement (benchmarks/NOTES.md). Weights for the kernels are packed once, here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..kernels.conv3x3 import conv3x3, pack_conv
from ..kernels.upsample_head import PackedHead, fused_head
from ..kernels.window_attention import (bias_dtype, check_packed, dense_log2_bias, pack_proj, pack_qkv,
                                        packed_window_attention)
from ..precision import Precision, backend_flags
from ..reference.model import LAYER_NORM_EPS, LUA, SwinBlock


class TritonBackendLUA(nn.Module):
    """Runs a loaded reference :class:`LUA` (weights in ``precision.storage``) with the fused kernels."""

    def __init__(self, model: LUA, precision: Precision) -> None:
        super().__init__()
        self.model = model
        self.config = model.config
        self.precision = precision
        compute = precision.compute

        def packed(conv: nn.Conv2d):
            return pack_conv(conv.weight.detach(), conv.bias.detach(), compute)

        self._convs = {"conv_first": packed(model.conv_first), "conv_after_body": packed(model.conv_after_body)}
        self._convs.update({f"layers.{i}.conv": packed(layer.conv) for i, layer in enumerate(model.layers)})
        self._heads = {
            scale: PackedHead.from_weights(model.heads[name], compute) for name, scale in self.config.heads
        }
        # GEMM weights in the compute dtype (a copy only in "mixed", where storage is fp32).
        self._linears = {
            id(m): (m.weight.detach().to(compute), m.bias.detach().to(compute))
            for m in model.modules()
            if isinstance(m, nn.Linear)
        }
        # Attention in the packed layout (window_attention's docstring): qkv rows padded per head
        # with the softmax scale and log2(e) folded into q, the proj weight with zero columns at
        # the padding, and each block's dense log2-domain bias, all built once here.
        self._attention = {}
        for block in (blk for layer in model.layers for blk in layer.residual_group.blocks):
            attn = block.attn
            qkv_w, qkv_b = pack_qkv(attn.qkv.weight.detach(), attn.qkv.bias.detach(), attn.num_heads, attn.scale)
            self._attention[id(block)] = (
                qkv_w.to(compute), qkv_b.to(compute),
                pack_proj(attn.proj.weight.detach(), attn.num_heads).to(compute), attn.proj.bias.detach().to(compute),
                dense_log2_bias(attn.relative_position_bias_table.detach(), block.window, bias_dtype(compute)),
            )
        self._checked: set = set()  # (shape, dtype) of packed attention inputs already validated

    def _linear(self, module: nn.Linear, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, *self._linears[id(module)])

    def forward(self, x: torch.Tensor, scales=(2,)) -> dict[int, torch.Tensor]:
        with backend_flags(self.precision, x.device):
            return self.model.upscale_with(x, scales, self.trunk, self.head)

    def head(self, g: torch.Tensor, scale: int) -> torch.Tensor:
        return fused_head(g, self._heads[scale], out_dtype=self.precision.storage, padded_input=True)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """Padded NCHW latent -> trunk features (B, H, W, D), channels-last, compute dtype."""
        m, compute, stream = self.model, self.precision.compute, self.precision.storage
        b, _, height, width = x.shape
        dim = self.config.embed_dim
        f = conv3x3(x.to(compute).permute(0, 2, 3, 1), self._convs["conv_first"], out_dtype=stream)
        t = m.patch_embed.norm(f.view(b, height * width, dim))
        for i, layer in enumerate(m.layers):
            y = t
            for block in layer.residual_group.blocks:
                y = self.block(block, y, height, width)
            t = conv3x3(y.view(b, height, width, dim).to(compute), self._convs[f"layers.{i}.conv"],
                        residual=t.view(b, height, width, dim), out_dtype=stream)
            t = t.view(b, height * width, dim)
        t = m.norm(t)
        # Written inside a zero border: the heads' first conv reads its halo without masks.
        return conv3x3(t.view(b, height, width, dim).to(compute), self._convs["conv_after_body"], residual=f,
                       out_dtype=compute, out_padded=True)

    def block(self, block: SwinBlock, t: torch.Tensor, height: int, width: int) -> torch.Tensor:
        compute = self.precision.compute
        attn = block.attn
        qkv_w, qkv_b, proj_w, proj_b, bias = self._attention[id(block)]
        y = F.layer_norm(t, t.shape[-1:], block.norm1.weight, block.norm1.bias, LAYER_NORM_EPS)
        qkv = F.linear(y.to(compute), qkv_w, qkv_b)
        key = (tuple(qkv.shape), qkv.dtype, block.window, block.shift)
        if key not in self._checked:  # validate once per shape, not per block call
            check_packed(qkv, bias, height, width, attn.num_heads, block.window, block.shift)
            self._checked.add(key)
        a = packed_window_attention(qkv, bias, height, width, heads=attn.num_heads, window=block.window,
                                    shift=block.shift)
        t = t + F.linear(a, proj_w, proj_b)
        z = F.layer_norm(t, t.shape[-1:], block.norm2.weight, block.norm2.bias, LAYER_NORM_EPS)
        return t + self._linear(block.mlp.fc2, F.gelu(self._linear(block.mlp.fc1, z.to(compute))))
