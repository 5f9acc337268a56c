"""Backend "torch": the reference numerics with the window bookkeeping fused.

Each Swin block runs LayerNorm -> one partition gather (roll folded in, native
kernel when available) -> qkv -> attention with the relative position bias and
the cached shift mask -> proj -> one merge gather (reverse roll folded in). No
torch.roll, no separate permute/contiguous copies, and the shift mask is built
once per (H, W, window, shift, device, dtype) on the device (native kernel, or the
PyTorch fallback) and cached. Everything else (convs, heads, padding) is shared
with the reference model, whose weights it uses.

Attention runs through ``F.scaled_dot_product_attention`` or an explicit batched
matmul + softmax; ``ATTENTION_IMPL`` records which one each device type uses and
why (benchmarks/NOTES.md has the measurements).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import native
from ..lru import LRUCache
from ..ops import window_ops
from ..reference.model import LUA, SwinBlock, WindowAttention

# CPU: matmul measured faster than SDPA (released config, 32x32 latent, 2 cores: fp32 1.39 s vs
# 1.79 s, bf16 0.62 s vs 1.51 s; benchmarks/NOTES.md). CUDA: not measured yet; SDPA with
# head_dim 30 and a float mask takes its math path there (LUA_SPEC.md), i.e. the same matmuls.
ATTENTION_IMPL = {"cpu": "matmul", "cuda": "matmul"}


class TorchBackendLUA(nn.Module):
    """Runs a loaded reference :class:`LUA` with fused window ops; shares its weights."""

    def __init__(self, model: LUA, attention: str | None = None) -> None:
        super().__init__()
        if attention not in (None, "sdpa", "matmul"):
            raise ValueError(f"attention must be 'sdpa' or 'matmul', got {attention!r}")
        self.model = model
        self.config = model.config
        self.attention_impl = attention
        self._masks = LRUCache()
        native.status()  # load the extension now: a first load under torch.compile would stop its trace

    def forward(self, x: torch.Tensor, scales=(2,)) -> dict[int, torch.Tensor]:
        return self.model.upscale_with(x, scales, self.trunk)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.trunk(x, run_block=self.block)

    def shift_mask(self, height, width, window, shift, device, dtype) -> torch.Tensor:
        if not (isinstance(height, int) and isinstance(width, int)):  # symbolic (export): no cache
            return window_ops.window_mask(height, width, window, shift, dtype=dtype, device=device)[0]
        key = (height, width, window, shift, device, dtype)
        return self._masks.get_or_create(
            key, lambda: window_ops.window_mask(height, width, window, shift, dtype=dtype, device=device)[0]
        )

    def block(self, block: SwinBlock, t: torch.Tensor, height: int, width: int) -> torch.Tensor:
        b, length, dim = t.shape
        window, shift = block.window, block.shift
        y = block.norm1(t).view(b, height, width, dim)
        windows = window_ops.window_partition(y, window, shift)
        windows = self.attention(block.attn, windows, height, width, shift)
        t = t + window_ops.window_merge(windows, b, height, width, window, shift).view(b, length, dim)
        return t + block.mlp(block.norm2(t))

    def attention(self, attn: WindowAttention, x: torch.Tensor, height: int, width: int, shift: int):
        bw, n, dim = x.shape
        heads, head_dim = attn.num_heads, attn.head_dim
        q, k, v = attn.qkv(x).view(bw, n, 3, heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        bias = attn.relative_position_bias().to(x.dtype)  # (heads, N, N), gathered on the device
        if shift:
            mask = self.shift_mask(height, width, attn.window, shift, x.device, x.dtype)  # (nW, N, N)
            n_windows = mask.shape[0]
            # Group windows of one image so the (nW, heads, N, N) bias broadcasts over the batch.
            q, k, v = (z.view(bw // n_windows, n_windows, heads, n, head_dim) for z in (q, k, v))
            bias = bias.unsqueeze(0) + mask.unsqueeze(1)
        impl = self.attention_impl or ATTENTION_IMPL.get(x.device.type, "sdpa")
        if impl == "sdpa":
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=attn.scale)
        else:
            out = ((q * attn.scale) @ k.transpose(-2, -1) + bias).softmax(dim=-1) @ v
        out = out.reshape(bw, heads, n, head_dim).transpose(1, 2).reshape(bw, n, dim)
        return attn.proj(out)
