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


def relative_position_bias(attn: WindowAttention, dtype: torch.dtype) -> torch.Tensor:
    """The reference's (heads, N, N) bias, the same values, but contiguous: gathered from the
    transposed table. The reference's is a permuted view, which made each add over the scores
    read it across strides: measured on the development CPU (16 windows x 12 heads), 3.9 vs 1.4 ms
    in fp32 and 14.3 vs 1.2 ms in bf16 for the in-place add (benchmarks/NOTES.md)."""
    n = attn.window * attn.window
    table = attn.relative_position_bias_table
    # Gathered in fp32 (or fp64) and cast after: the values are the same (a cast commutes with a
    # gather, and fp16/bf16 -> fp32 is exact), and CPU index_select has no fast bf16 path
    # (2.0 vs 0.4 ms a block, measured on the development CPU).
    wide = table if table.dtype in (torch.float32, torch.float64) else table.float()
    bias = torch.index_select(wide.t(), 1, attn.relative_position_index.view(-1)).to(dtype)
    return bias.view(attn.num_heads, n, n)


def _scores_in_place(scores: torch.Tensor, bias: torch.Tensor) -> bool:
    """Whether the (windows, heads, N, N) scores may take the bias add, the mask add and the
    softmax in place: the same ops in the same order (the same bits), without three score-sized
    allocations. On the CPU each is fresh memory whose first touch costs page faults: in place
    measured up to 2.2x faster for the attention and 1.2-1.4x for a whole forward
    (benchmarks/NOTES.md). Only where nothing needs the scores for a backward (autograd refuses an
    ``out=`` softmax) and nothing traces (graphs plan their own buffers); not on CUDA, whose
    caching allocator has no such cost (and where this is untimed). Nor under autocast ("mixed")."""
    return (scores.device.type == "cpu" and not scores.requires_grad and not bias.requires_grad
            and scores.dtype == bias.dtype  # (else the add promotes: "mixed" adds an fp32 bias to bf16 scores)
            and not torch.is_autocast_enabled("cpu")  # (autocast runs softmax in fp32; an out= softmax not)
            and not window_ops._traced())


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
        bias = relative_position_bias(attn, x.dtype)  # (heads, N, N), gathered on the device
        mask = None
        if shift:
            mask = self.shift_mask(height, width, attn.window, shift, x.device, x.dtype)  # (nW, N, N)
            n_windows = mask.shape[0]
            # Group windows of one image so the (nW, 1, N, N) mask broadcasts over the batch.
            q, k, v = (z.view(bw // n_windows, n_windows, heads, n, head_dim) for z in (q, k, v))
            mask = mask.unsqueeze(1)
        impl = self.attention_impl or ATTENTION_IMPL.get(x.device.type, "sdpa")
        if impl == "sdpa":
            bias = bias if mask is None else bias.unsqueeze(0) + mask  # (nW, heads, N, N)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=attn.scale)
        else:  # the reference's ops in its order: the bias, then the mask, then the softmax
            scores = (q * attn.scale) @ k.transpose(-2, -1)
            if _scores_in_place(scores, bias):
                scores += bias
                if mask is not None:
                    scores += mask
                attn_weights = torch.ops.aten._softmax.out(scores, -1, False, out=scores)
            else:
                scores = scores + bias
                attn_weights = (scores if mask is None else scores + mask).softmax(dim=-1)
            out = attn_weights @ v
        out = out.reshape(bw, heads, n, head_dim).transpose(1, 2).reshape(bw, n, dim)
        return attn.proj(out)
