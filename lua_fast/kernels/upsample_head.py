"""A whole LUA upsampling head as fused Triton convs, channels-last end to end.

Head for scale s (LUA_SPEC.md): conv 3x3 D->F + LeakyReLU(0.01); log2(s) x
[conv 3x3 F->4F + PixelShuffle(2)]; conv 3x3 F->C. Here every conv is
``conv3x3``: the LeakyReLU and the bias live in the epilogue, and each upsampling
conv stores straight into its pixel-shuffled position, so no pre-shuffle tensor
and no shuffle copy exist. The input is the trunk output in channels-last layout
(B, H, W, D) — or the trunk's tokens (B, H*W, D) with ``height``/``width`` — read
without a transpose copy. Weights are packed once into a :class:`PackedHead`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch
from torch import nn

from .conv3x3 import PackedConv, conv3x3, pack_conv, torch_conv3x3

LEAKY_SLOPE = 0.01


@dataclass(frozen=True)
class PackedHead:
    """A head's convs packed once for the conv kernel (:class:`PackedConv`: weights and fp32 biases)."""

    scale: int
    before: PackedConv
    stages: tuple[PackedConv, ...]  # packed in sub-pixel column order (pixel-shuffle stores)
    last: PackedConv

    @property
    def in_channels(self) -> int:
        return self.before.c_in

    @property
    def out_channels(self) -> int:
        return self.last.c_out

    @classmethod
    def from_weights(cls, weights, dtype: torch.dtype | None = None) -> "PackedHead":
        """From a reference ``UpsampleHead`` module or a mapping with its state-dict keys
        (``conv_before.0.weight``, ``upsample.0.weight``, ``upsample.2.weight``, ..., ``conv_last.weight``
        and the matching ``.bias``)."""
        sd = weights.state_dict() if isinstance(weights, nn.Module) else weights
        if not isinstance(sd, Mapping):
            raise TypeError(f"head weights must be an UpsampleHead module or a mapping, got {type(weights).__name__}")

        def conv(name, pixel_shuffle=False):
            try:
                w, b = sd[f"{name}.weight"], sd[f"{name}.bias"]
            except KeyError as exc:
                raise ValueError(f"head weights lack {exc.args[0]!r}; keys: {sorted(sd)}") from None
            return pack_conv(w.detach(), b, dtype or w.dtype, pixel_shuffle=pixel_shuffle)

        n_stages = sum(1 for k in sd if k.startswith("upsample.") and k.endswith(".weight"))
        stages = tuple(conv(f"upsample.{2 * i}", pixel_shuffle=True) for i in range(n_stages))
        return cls(scale=2**n_stages, before=conv("conv_before.0"), stages=stages, last=conv("conv_last"))


def _as_channels_last(features: torch.Tensor, height, width) -> torch.Tensor:
    if features.dim() == 3:
        if height is None or width is None or features.shape[1] != height * width:
            raise ValueError(
                f"fused_head: token features (B, H*W, D) need height and width with H*W = {features.shape[1]}"
            )
        return features.view(features.shape[0], height, width, features.shape[2])
    if features.dim() != 4:
        raise ValueError(
            f"fused_head: features must be (B, H, W, D) channels-last or (B, H*W, D) tokens, got {tuple(features.shape)}"
        )
    return features


def _check_scale(head: PackedHead, scale: int | None) -> None:
    if scale is not None and scale != head.scale:
        raise ValueError(f"fused_head: these head weights upsample by {head.scale}, not {scale}")


def fused_head(features, head_weights, scale: int | None = None, *, height=None, width=None,
               out_dtype: torch.dtype | None = None, padded_input: bool = False) -> torch.Tensor:
    """Run a whole head with the fused Triton convs.

    features: (B, H, W, D) channels-last (any strides with unit channel stride), or the
    trunk's tokens (B, H*W, D) with ``height`` and ``width``.
    head_weights: a :class:`PackedHead` (pack once with ``PackedHead.from_weights``), an
    ``UpsampleHead`` module or a mapping of its state dict.
    Returns (B, C, s*H, s*W) as a view with channels-last memory layout, in ``out_dtype``
    (default: the features' dtype). Intermediate activations live in zero-bordered buffers so
    every conv after the first reads its halo without masks; ``padded_input=True`` says the
    features are such a bordered buffer already, (B, H+2, W+2, D) (the triton backend's trunk
    output; ``conv3x3(..., out_padded=True)``).
    """
    x = _as_channels_last(features, height, width)
    head = head_weights if isinstance(head_weights, PackedHead) else PackedHead.from_weights(head_weights, x.dtype)
    _check_scale(head, scale)
    if x.shape[-1] != head.in_channels:
        raise ValueError(f"fused_head: features have {x.shape[-1]} channels but the head expects {head.in_channels}")
    z = conv3x3(x, head.before, leaky_slope=LEAKY_SLOPE, padded_input=padded_input, out_padded=True)
    for stage in head.stages:
        z = conv3x3(z, stage, pixel_shuffle=True, padded_input=True, out_padded=True)
    return conv3x3(z, head.last, out_dtype=out_dtype, padded_input=True).permute(0, 3, 1, 2)


def torch_fused_head(features, head_weights, scale: int | None = None, *, height=None, width=None) -> torch.Tensor:
    """The PyTorch composition (conv2d + leaky_relu + pixel_shuffle) with fused_head's signature;
    ``head_weights`` is an ``UpsampleHead`` module or a mapping of its state dict."""
    x = _as_channels_last(features, height, width)
    sd = head_weights.state_dict() if isinstance(head_weights, nn.Module) else head_weights
    n_stages = sum(1 for k in sd if k.startswith("upsample.") and k.endswith(".weight"))
    if scale is not None and scale != 2**n_stages:
        raise ValueError(f"fused_head: these head weights upsample by {2**n_stages}, not {scale}")
    z = torch_conv3x3(x, sd["conv_before.0.weight"], sd["conv_before.0.bias"], leaky_slope=LEAKY_SLOPE)
    for i in range(n_stages):
        z = torch_conv3x3(z, sd[f"upsample.{2 * i}.weight"], sd[f"upsample.{2 * i}.bias"], pixel_shuffle=True)
    return torch_conv3x3(z, sd["conv_last.weight"], sd["conv_last.bias"]).permute(0, 3, 1, 2)

