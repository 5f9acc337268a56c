"""The official LUA package's API on lua_fast's backends: a one-line migration.

    # from lua import load_model, upscale_latent
    from lua_fast.official import load_model, upscale_latent

    model = load_model("lua_flux.pth", device="cuda")      # or load_model() to fetch the release
    z2 = upscale_latent(model, z, head="x2")               # (B, 16, 2h, 2w), float32

Same names, head names ("x2", "x4") and defaults as the official functions, and the same
contract: ``load_model`` reads ``params_ema`` (else ``params``) strictly and, without a path,
downloads the released ``lua_flux.pth`` from the Hugging Face Hub; ``upscale_latent`` moves the
latent to the model's device, pads to the window, runs one head, crops, and returns float32 on
the model's device. What lua_fast adds: ``backend=`` and any ``dtype`` (the official code runs
fp32 only), and its checks (NaN/Inf latents raise instead of propagating).
"""

from __future__ import annotations

import os

import torch

from . import hub
from .upscaler import Upscaler, load


def load_model(weights_path: str | os.PathLike | None = None, device: str | torch.device = "cpu",
               dtype: torch.dtype = torch.float32, *, backend: str = "auto") -> Upscaler:
    """Load LUA weights (``None``: the released checkpoint from the hub) as an :class:`Upscaler`.

    ``weights_path`` may also be an ``hf://owner/repo/file`` path. ``dtype`` is the model's
    dtype (float32, bfloat16, float16); ``backend`` picks a lua_fast backend ("auto": the
    fastest that runs on ``device``).
    """
    return load(hub.RELEASED if weights_path is None else weights_path, device=device, dtype=dtype,
                backend=backend)


def upscale_latent(model: Upscaler, latent: torch.Tensor, head: str = "x2") -> torch.Tensor:
    """Upscale one latent batch (B, C, h, w) with the head named ``head``; float32 on the model's device."""
    # (a non-tensor goes on as it is, for upscale's InputError: before 2026-11-29 an AttributeError)
    moved = latent.to(model.device) if isinstance(latent, torch.Tensor) else latent
    return model.upscale(moved, scale=head).float()


__all__ = ["load_model", "upscale_latent"]
