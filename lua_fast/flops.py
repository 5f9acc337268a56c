"""Floating-point operation counts of a LUA forward pass (multiply-add = 2 FLOPs).

Counts the GEMMs, attention matmuls and convolutions on the window-padded grid;
norms, softmax and elementwise ops are ignored (well under 1%). Used by the
benchmarks to report TFLOP/s and the compute floor.
"""

from __future__ import annotations

from .config import LUAConfig
from .padding import pad_amount


def trunk_flops(config: LUAConfig, height: int, width: int) -> int:
    h = height + pad_amount(height, config.window_size)
    w = width + pad_amount(width, config.window_size)
    tokens, d, n = h * w, config.embed_dim, config.window_size**2
    per_block = 2 * tokens * (3 * d * d + d * d + 2 * d * config.mlp_hidden) + 4 * tokens * n * d
    conv = 2 * 9 * d * d * tokens
    return (
        2 * 9 * config.in_channels * d * tokens  # conv_first
        + sum(config.depths) * per_block
        + len(config.depths) * conv  # RSTB convs
        + conv  # conv_after_body
    )


def head_flops(config: LUAConfig, height: int, width: int, scale: int) -> int:
    h = height + pad_amount(height, config.window_size)
    w = width + pad_amount(width, config.window_size)
    tokens, d, f = h * w, config.embed_dim, config.head_width
    total = 2 * 9 * d * f * tokens
    for stage in range(scale.bit_length() - 1):
        total += 2 * 9 * f * 4 * f * tokens * 4**stage
    return total + 2 * 9 * f * config.out_channels * tokens * scale * scale


def forward_flops(config: LUAConfig, height: int, width: int, scales=(2,)) -> int:
    """FLOPs of one forward producing ``scales`` from a (height, width) latent, batch 1."""
    return trunk_flops(config, height, width) + sum(head_flops(config, height, width, s) for s in scales)
