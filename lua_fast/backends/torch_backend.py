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

import math

import torch
import torch.nn.functional as F
from torch import nn

from .. import native
from ..lru import LRUCache
from ..ops import window_ops
from ..reference.model import LUA, Mlp, SwinBlock, WindowAttention

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


def _reuse_memory(x: torch.Tensor, *others: torch.Tensor) -> bool:
    """Whether an op on ``x`` (with ``others``: weights, bias) may write into a buffer the forward
    reuses, or into its input: the same ops in the same order (the same bits), without allocating.
    On the CPU each large allocation is fresh memory whose first touch costs page faults (the
    scores GEMM of 16 windows x 12 heads: 7.4 ms into a reused buffer, 20.5 ms into a new one;
    benchmarks/NOTES.md has the forward's figures). Only where nothing needs the result for a
    backward (autograd refuses ``out=`` ops) and nothing traces (graphs plan their own buffers);
    not under autocast ("mixed": the adds promote bf16 scores to fp32 and the softmax runs in
    fp32); not on CUDA, whose caching allocator has no such cost (and where this is untimed)."""
    grads = torch.is_grad_enabled() and (x.requires_grad or any(o.requires_grad for o in others))
    return (x.device.type == "cpu" and not grads and all(o.dtype == x.dtype for o in others)
            and not torch.is_autocast_enabled("cpu") and not window_ops._traced())


class Workspace:
    """One forward's memory for its largest per-block tensors (the attention scores, qkv, the MLP's
    hidden activations): every block writes into the same buffers, grown to the largest block, so
    their pages are touched once per forward, not once per block. Not kept across forwards: a
    128x128 latent's fp32 scores alone are 200 MB that an idle upscaler should not hold."""

    def __init__(self) -> None:
        self.buffers: dict[str, torch.Tensor] = {}

    def take(self, name: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        numel = math.prod(shape)
        buf = self.buffers.get(name)
        if buf is None or buf.numel() < numel or buf.dtype != like.dtype or buf.device != like.device:
            buf = self.buffers[name] = torch.empty(numel, dtype=like.dtype, device=like.device)
        return buf[:numel].view(shape)


def _linear_into(workspace: "Workspace | None", name: str, layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``layer(x)``, written into the workspace's buffer ``name`` where memory may be reused (the
    GEMM ``nn.Linear`` runs: addmm over the flattened rows, the same bits)."""
    if workspace is None or layer.bias is None or not x.is_contiguous() or \
            not _reuse_memory(x, layer.weight, layer.bias):
        return layer(x)
    rows = x.view(-1, x.shape[-1])
    out = workspace.take(name, (rows.shape[0], layer.out_features), x)
    torch.addmm(layer.bias, rows, layer.weight.t(), out=out)
    return out.view(*x.shape[:-1], layer.out_features)


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
        workspace = Workspace()  # one forward's, shared by its blocks, freed with it
        return self.model.trunk(x, run_block=lambda block, t, h, w: self.block(block, t, h, w, workspace))

    def shift_mask(self, height, width, window, shift, device, dtype) -> torch.Tensor:
        if not (isinstance(height, int) and isinstance(width, int)):  # symbolic (export): no cache
            return window_ops.window_mask(height, width, window, shift, dtype=dtype, device=device)[0]
        key = (height, width, window, shift, device, dtype)
        return self._masks.get_or_create(
            key, lambda: window_ops.window_mask(height, width, window, shift, dtype=dtype, device=device)[0]
        )

    def block(self, block: SwinBlock, t: torch.Tensor, height: int, width: int,
              workspace: Workspace | None = None) -> torch.Tensor:
        b, length, dim = t.shape
        window, shift = block.window, block.shift
        y = block.norm1(t).view(b, height, width, dim)
        windows = window_ops.window_partition(y, window, shift)
        windows = self.attention(block.attn, windows, height, width, shift, workspace)
        t = t + window_ops.window_merge(windows, b, height, width, window, shift).view(b, length, dim)
        return t + self.mlp(block.mlp, block.norm2(t), workspace)

    @staticmethod
    def mlp(mlp: Mlp, x: torch.Tensor, workspace: Workspace | None = None) -> torch.Tensor:
        """The reference's ``fc2(GELU(fc1(x)))``; fc1 into the workspace and the GELU in place where
        memory may be reused."""
        hidden = _linear_into(workspace, "hidden", mlp.fc1, x)
        return mlp.fc2(torch.ops.aten.gelu_(hidden) if _reuse_memory(hidden) else F.gelu(hidden))

    def attention(self, attn: WindowAttention, x: torch.Tensor, height: int, width: int, shift: int,
                  workspace: Workspace | None = None):
        bw, n, dim = x.shape
        heads, head_dim = attn.num_heads, attn.head_dim
        qkv = _linear_into(workspace, "qkv", attn.qkv, x)
        q, k, v = qkv.view(bw, n, 3, heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
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
        elif _reuse_memory(q, bias):  # the reference's ops in its order: the bias, the mask, the softmax
            scores = (workspace or Workspace()).take("scores", q.shape[:-1] + (n,), q)
            torch.matmul(q * attn.scale, k.transpose(-2, -1), out=scores)
            scores += bias
            if mask is not None:
                scores += mask
            out = torch.ops.aten._softmax.out(scores, -1, False, out=scores) @ v
        else:
            scores = (q * attn.scale) @ k.transpose(-2, -1) + bias
            out = (scores if mask is None else scores + mask).softmax(dim=-1) @ v
        out = out.reshape(bw, heads, n, head_dim).transpose(1, 2).reshape(bw, n, dim)
        return attn.proj(out)
