"""The reference LUA model: the ground truth every fast path is tested against.

Written for clarity, not speed. Module names and buffers reproduce the released
checkpoint's state-dict keys and shapes exactly, derived buffers included
(``relative_position_index`` and the training-size ``attn_mask`` of shifted
blocks), so ``load_state_dict(released, strict=True)`` works. The derived buffers
are kept only for that compatibility: the forward pass recomputes masks for the
actual input size, cached per size, device and dtype in the model's own ``masks`` (so they go
with the model; see ``windows.py``).
"""

from __future__ import annotations

from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from ..config import LUAConfig
from ..lru import LRUCache
from ..padding import pad_to_window_multiple
from . import windows

LAYER_NORM_EPS = 1e-5
LEAKY_SLOPE = 0.01


class WindowAttention(nn.Module):
    """Multi-head self-attention inside each window, with relative position bias."""

    def __init__(self, dim: int, window: int, num_heads: int) -> None:
        super().__init__()
        self.window = window
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, num_heads))
        # (not on meta, where it has no values to draw: torch 2.11's meta trunc_normal_ imports Dynamo,
        # 1.2 s of every load; see windows._shapes_only)
        if self.relative_position_bias_table.device.type != "meta":
            nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.register_buffer("relative_position_index", windows.relative_position_index(window))
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.proj = nn.Linear(dim, dim)

    def relative_position_bias(self) -> torch.Tensor:
        """(heads, N, N): bias[h, a, b] = table[index(a, b), h]."""
        n = self.window * self.window
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        return bias.view(n, n, self.num_heads).permute(2, 0, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """x: (B * nW, N, D) windows; mask: (nW, N, N) or None."""
        bw, n, dim = x.shape
        # qkv features are ordered [q for all heads | k | v], each head a contiguous slice.
        qkv = self.qkv(x).view(bw, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (B * nW, heads, N, head_dim)
        scores = (q * self.scale) @ k.transpose(-2, -1)
        scores = scores + self.relative_position_bias().unsqueeze(0)
        if mask is not None:
            n_windows = mask.shape[0]
            scores = scores.view(bw // n_windows, n_windows, self.num_heads, n, n) + mask[None, :, None]
            scores = scores.view(bw, self.num_heads, n, n)
        attn = scores.softmax(dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(bw, n, dim)
        return self.proj(out)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))  # exact (erf) GELU


class SwinBlock(nn.Module):
    def __init__(self, config: LUAConfig, num_heads: int, block_index: int) -> None:
        super().__init__()
        dim, window = config.embed_dim, config.window_size
        self.window = window
        self.shift = config.shift_size(block_index)
        self.norm1 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.attn = WindowAttention(dim, window, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.mlp = Mlp(dim, config.mlp_hidden)
        if self.shift:
            size = config.img_size
            self.register_buffer(
                "attn_mask", windows.build_shift_mask(size, size, window, self.shift, dtype=torch.float32)
            )
        else:
            self.register_buffer("attn_mask", None)

    def forward(self, t: torch.Tensor, height: int, width: int, masks: LRUCache | None = None) -> torch.Tensor:
        """``masks``: the model's shift-mask cache (None: the shared one)."""
        b, _, dim = t.shape
        y = self.norm1(t).view(b, height, width, dim)
        mask = None
        if self.shift:
            y = torch.roll(y, shifts=(-self.shift, -self.shift), dims=(1, 2))
            mask = windows.shift_mask(height, width, self.window, self.shift, device=t.device, dtype=t.dtype,
                                      cache=masks)
        y = windows.window_partition(y, self.window)
        y = self.attn(y, mask)
        y = windows.window_reverse(y, self.window, height, width)
        if self.shift:
            y = torch.roll(y, shifts=(self.shift, self.shift), dims=(1, 2))
        t = t + y.reshape(b, height * width, dim)
        return t + self.mlp(self.norm2(t))


class ResidualGroup(nn.Module):
    """Holds the blocks under the released name ``residual_group.blocks``."""

    def __init__(self, config: LUAConfig, num_heads: int, depth: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(SwinBlock(config, num_heads, j) for j in range(depth))


class RSTB(nn.Module):
    """Residual Swin Transformer block: Swin blocks, a 3x3 conv, a residual ("1conv")."""

    def __init__(self, config: LUAConfig, num_heads: int, depth: int) -> None:
        super().__init__()
        dim = config.embed_dim
        self.residual_group = ResidualGroup(config, num_heads, depth)
        self.conv = nn.Conv2d(dim, dim, 3, padding=1)

    def forward(self, t: torch.Tensor, height: int, width: int, run_block=None) -> torch.Tensor:
        y = t
        for block in self.residual_group.blocks:
            y = block(y, height, width) if run_block is None else run_block(block, y, height, width)
        return t + tokens(self.conv(image(y, height, width)))


class PatchEmbed(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)


class UpsampleHead(nn.Module):
    """conv 3x3 D->F + LeakyReLU; log2(s) x [conv 3x3 F->4F, PixelShuffle(2)]; conv 3x3 F->C."""

    def __init__(self, dim: int, width: int, out_channels: int, scale: int) -> None:
        super().__init__()
        self.conv_before = nn.Sequential(nn.Conv2d(dim, width, 3, padding=1), nn.LeakyReLU(LEAKY_SLOPE))
        stages: list[nn.Module] = []
        for _ in range(scale.bit_length() - 1):
            stages += [nn.Conv2d(width, 4 * width, 3, padding=1), nn.PixelShuffle(2)]
        self.upsample = nn.Sequential(*stages)
        self.conv_last = nn.Conv2d(width, out_channels, 3, padding=1)

    def forward(self, g: torch.Tensor) -> torch.Tensor:
        return self.conv_last(self.upsample(self.conv_before(g)))


def tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, D, H, W) -> (B, H*W, D), row-major over (H, W)."""
    return x.flatten(2).transpose(1, 2)


def image(t: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, H*W, D) -> (B, D, H, W)."""
    return t.transpose(1, 2).reshape(t.shape[0], t.shape[2], height, width)


class LUA(nn.Module):
    """Latent Upscaler Adapter: SwinIR trunk shared by pixel-shuffle heads."""

    def __init__(self, config: LUAConfig | None = None) -> None:
        super().__init__()
        config = config or LUAConfig.flux()
        self.config = config
        dim = config.embed_dim
        self.conv_first = nn.Conv2d(config.in_channels, dim, 3, padding=1)
        self.patch_embed = PatchEmbed(dim)
        self.layers = nn.ModuleList(RSTB(config, h, d) for h, d in zip(config.num_heads, config.depths))
        self.norm = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.conv_after_body = nn.Conv2d(dim, dim, 3, padding=1)
        self.heads = nn.ModuleDict(
            {
                name: UpsampleHead(dim, config.head_width, config.out_channels, scale)
                for name, scale in config.heads
            }
        )
        # Shift masks for the sizes seen, on their devices (not state: a copy starts empty). Owned
        # by the model so that they are freed with it.
        self.masks = LRUCache()

    def trunk(self, x: torch.Tensor, run_block=None) -> torch.Tensor:
        """(B, C, H, W) with H, W window multiples -> features g (B, D, H, W).

        ``run_block(block, t, H, W)``, when given, replaces each Swin block's forward
        (backends swap in fused attention while sharing everything else).
        """
        height, width = x.shape[-2:]
        if run_block is None:
            run_block = lambda block, t, h, w: block(t, h, w, self.masks)  # noqa: E731
        f = self.conv_first(x)
        t = self.patch_embed.norm(tokens(f))
        for layer in self.layers:
            t = layer(t, height, width, run_block)
        t = self.norm(t)
        return self.conv_after_body(image(t, height, width)) + f

    def forward(self, x: torch.Tensor, scales: Iterable[int] = (2,)) -> dict[int, torch.Tensor]:
        """Run the trunk once and return every requested head's output, keyed by scale.

        Inputs whose sides are not window multiples are mirror-padded (the released
        reflect padding, extended to short sides: see ``lua_fast.padding``) and the
        outputs cropped to (s*H, s*W).
        """
        return self.upscale_with(x, scales, self.trunk)

    def upscale_with(self, x: torch.Tensor, scales: Iterable[int], trunk, head=None) -> dict[int, torch.Tensor]:
        """Pad, run ``trunk`` once, run each requested head, crop.

        ``head(g, scale)``, when given, replaces the reference heads (backends share the rest).
        """
        scales = tuple(dict.fromkeys(int(s) for s in scales))
        for s in scales:
            if s not in self.config.scales:
                raise ValueError(f"scale {s} is not one of this model's heads {self.config.scales}")
        height, width = x.shape[-2:]
        g = trunk(pad_to_window_multiple(x, self.config.window_size))
        if head is None:  # (not `head or ...`: torch 2.11's Dynamo cannot take a bound method's truth value)
            head = lambda features, s: self.heads[self.config.head_name(s)](features)  # noqa: E731
        return {s: head(g, s)[..., : s * height, : s * width] for s in scales}
