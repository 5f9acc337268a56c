"""LUA inside diffusers pipelines (FLUX, SD3, SDXL). Requires ``pip install diffusers``.

Pipelines called with ``output_type="latent"`` return latents in the *pipeline's* space;
LUA works on *raw* VAE latents (what ``vae.decode`` takes):

| family | pipeline latents -> raw VAE latents |
|--------|-------------------------------------|
| flux   | unpack (B, (h/2)(w/2), 4C) -> (B, C, h, w), then ``z / scaling_factor + shift_factor`` |
| sd3    | ``z / scaling_factor + shift_factor`` |
| sdxl   | ``z * latents_std / scaling_factor + latents_mean`` when the VAE config has both, else ``z / scaling_factor`` |

``family=None`` (the default) reads the rule from the VAE's config: ``latents_mean`` / ``latents_std``
-> sdxl's, ``shift_factor`` -> flux's (3-D latents, unpacked) or sd3's; a named family the config
contradicts raises ``InputError`` instead of silently dropping the shift or the statistics.

``from_raw_latents`` is the reverse (for feeding an img2img refinement pass, which encodes
to the pipeline's space), and ``pack_flux_latents`` re-packs for FLUX's transformer.

    up = lua_fast.load("lua_flux.pth", device="cuda", dtype=torch.bfloat16)
    out = pipe(prompt, height=1024, width=1024, output_type="latent").images
    raw2x, image = upscale_pipeline_latents(up, out, pipe.vae, "flux", height=1024, width=1024, decode_image=True)
"""

from __future__ import annotations

import numbers
from typing import Any

import torch

from ..errors import InputError

FAMILIES = ("flux", "sd3", "sdxl")


def _config(vae: Any):
    """The VAE's config (an AutoencoderKL, its ``.config``, or a dict)."""
    cfg = getattr(vae, "config", vae)
    return cfg if not isinstance(cfg, dict) else type("Config", (), cfg)


def _scaling(cfg) -> float:
    """The config's ``scaling_factor``: a positive number (0 or None would make every latent Inf/NaN,
    a missing one was an AttributeError before 2026-11-29)."""
    scaling = getattr(cfg, "scaling_factor", None)
    if isinstance(scaling, bool) or not isinstance(scaling, numbers.Real) or not scaling > 0:
        raise InputError(f"the VAE's config needs a positive scaling_factor, got {scaling!r} (pass the pipeline's "
                         "vae, its .config, or a dict with scaling_factor)")
    return float(scaling)


def _tensor(x: Any, what: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise InputError(f"{what} must be a torch.Tensor, got {type(x).__name__}")
    return x


def _family(family: str | None, cfg, packed: bool = False) -> str:
    """The family's name in lower case ("FLUX" and "SDXL" as the model cards write them), checked
    against the VAE's config; ``None``: read from it (``packed``: 3-D latents, or ``pack=True``).

    A family that does not match the VAE was silently wrong before 2026-11-29: "sdxl" with FLUX's
    VAE left out its ``shift_factor`` (every raw latent off by 0.1159), "flux" with a VAE that has
    ``latents_mean`` / ``latents_std`` left those out."""
    shift = getattr(cfg, "shift_factor", None)
    has_stats = getattr(cfg, "latents_mean", None) is not None and getattr(cfg, "latents_std", None) is not None
    if family is None:
        if shift and has_stats:
            raise InputError("this VAE's config has both shift_factor and latents_mean / latents_std: name the "
                             f"pipeline family, one of {FAMILIES}")
        return ("flux" if packed else "sd3") if shift else "sdxl"
    name = family.lower() if isinstance(family, str) else family
    if name not in FAMILIES:
        raise InputError(f"unknown pipeline family {family!r}; choose one of {FAMILIES} (any case), or None "
                         "to read it from the VAE's config")
    if name == "sdxl" and shift:
        raise InputError(f"family {family!r} ignores a shift_factor, but this VAE's config has shift_factor={shift} "
                         "(FLUX's or SD3's VAE): pass 'flux' or 'sd3', or None to read it from the config")
    if name != "sdxl" and has_stats:
        raise InputError(f"family {family!r} ignores latents_mean / latents_std, which this VAE's config has: "
                         "pass 'sdxl' (its rule uses them), or None to read it from the config")
    return name


def unpack_flux_latents(packed: torch.Tensor, height: int, width: int, vae_scale_factor: int = 8) -> torch.Tensor:
    """FLUX's packed (B, (h/2)*(w/2), 4C) latents for an image of height x width -> (B, C, h, w)."""
    if _tensor(packed, "packed FLUX latents").dim() != 3 or packed.shape[-1] % 4:
        raise InputError(f"packed FLUX latents must be (B, (h/2)*(w/2), 4C), got {tuple(packed.shape)}")
    b, patches, channels = packed.shape
    h = 2 * (int(height) // (vae_scale_factor * 2))
    w = 2 * (int(width) // (vae_scale_factor * 2))
    if patches != (h // 2) * (w // 2):
        raise InputError(f"{patches} packed patches do not match a {height}x{width} image ({h // 2}x{w // 2} patches)")
    x = packed.view(b, h // 2, w // 2, channels // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, channels // 4, h, w)


def pack_flux_latents(latents: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> FLUX's packed (B, (h/2)*(w/2), 4C); h and w must be even."""
    if _tensor(latents, "latents").dim() != 4:
        raise InputError(f"FLUX packing takes (B, C, h, w) latents, got {tuple(latents.shape)}")
    b, c, h, w = latents.shape
    if h % 2 or w % 2:
        raise InputError(f"FLUX packing needs even latent sides, got {h}x{w}")
    x = latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // 2) * (w // 2), c * 4)


def _mean_std(cfg, like: torch.Tensor):
    mean, std = getattr(cfg, "latents_mean", None), getattr(cfg, "latents_std", None)
    if mean is None or std is None:
        return None
    channels = like.shape[1]
    if len(mean) != channels or len(std) != channels:  # (a broadcasting RuntimeError before 2026-11-29)
        raise InputError(f"the VAE's latents_mean / latents_std have {len(mean)} / {len(std)} entries but the latents "
                         f"have {channels} channels: is this the pipeline's VAE?")
    shape = (1, channels, 1, 1)
    return (torch.tensor(mean, device=like.device, dtype=like.dtype).view(shape),
            torch.tensor(std, device=like.device, dtype=like.dtype).view(shape))


def to_raw_latents(latents: torch.Tensor, vae: Any, family: str | None = None, *, height: int | None = None,
                   width: int | None = None, vae_scale_factor: int = 8) -> torch.Tensor:
    """Pipeline-space latents (``output_type="latent"``) -> raw VAE latents (B, C, h, w).

    FLUX latents may be packed (3-D); then ``height`` and ``width`` (image pixels) are needed.
    ``family=None`` reads the rule from the VAE's config (see the table above); a named family
    that does not match the config raises ``InputError``.
    """
    cfg = _config(vae)
    family = _family(family, cfg, packed=_tensor(latents, "latents").dim() == 3)
    if family == "flux" and latents.dim() == 3:
        if height is None or width is None:
            raise InputError("packed FLUX latents need the image height and width to unpack")
        latents = unpack_flux_latents(latents, height, width, vae_scale_factor)
    if latents.dim() != 4:
        raise InputError(f"latents must be (B, C, h, w) (or packed FLUX latents), got {tuple(latents.shape)}")
    scaling = _scaling(cfg)
    if family in ("flux", "sd3"):
        return latents / scaling + (getattr(cfg, "shift_factor", None) or 0.0)
    stats = _mean_std(cfg, latents)
    if stats is not None:
        mean, std = stats
        return latents * std / scaling + mean
    return latents / scaling


def from_raw_latents(raw: torch.Tensor, vae: Any, family: str | None = None, *, pack: bool = False) -> torch.Tensor:
    """Raw VAE latents -> the pipeline's space (the inverse of :func:`to_raw_latents`).

    For an img2img refinement pass that takes latents; ``pack=True`` re-packs for FLUX.
    """
    cfg = _config(vae)
    family = _family(family, cfg, packed=pack)
    if _tensor(raw, "raw latents").dim() != 4:
        raise InputError(f"raw latents must be (B, C, h, w), got {tuple(raw.shape)}")
    scaling = _scaling(cfg)
    if family in ("flux", "sd3"):
        z = (raw - (getattr(cfg, "shift_factor", None) or 0.0)) * scaling
        return pack_flux_latents(z) if pack and family == "flux" else z
    stats = _mean_std(cfg, raw)
    if stats is not None:
        mean, std = stats
        return (raw - mean) * scaling / std
    return raw * scaling


def _check_decoder(vae: Any) -> None:
    if not callable(getattr(vae, "decode", None)) or not isinstance(getattr(vae, "dtype", None), torch.dtype):
        raise InputError(f"decoding needs the VAE itself (an AutoencoderKL: pipe.vae), got {type(vae).__name__}; "
                         "its config alone only converts latents")


@torch.no_grad()  # ordinary tensors for the caller, as diffusers' own pipelines return (see Upscaler.upscale)
def decode(vae, raw: torch.Tensor, *, upcast: bool | None = None) -> torch.Tensor:
    """Decode raw latents with the VAE: images (B, 3, 8h, 8w) in [-1, 1].

    ``upcast=None`` follows the VAE's config as diffusers' SDXL pipelines do: a float16 VAE whose
    config sets ``force_upcast`` (SDXL's own VAE, and every AutoencoderKL by default) decodes in
    float32, because its activations overflow float16 and the image comes out NaN (black), the
    more likely the larger the image, which is what LUA makes. The VAE is cast to float32 for the
    call and back to float16 after (float16 -> float32 -> float16 is exact), and the image is
    float32. Otherwise the image has the VAE's dtype. ``upcast=True`` / ``False`` forces either.
    """
    _check_decoder(vae)
    if upcast is None:
        upcast = vae.dtype == torch.float16 and bool(getattr(_config(vae), "force_upcast", False))
    if not upcast or vae.dtype == torch.float32:
        return vae.decode(raw.to(device=vae.device, dtype=vae.dtype), return_dict=False)[0]
    # nn.Module.to, not diffusers' override: that one logs a warning about casting at every call.
    dtype = vae.dtype
    torch.nn.Module.to(vae, dtype=torch.float32)
    try:
        return vae.decode(raw.to(device=vae.device, dtype=torch.float32), return_dict=False)[0]
    finally:
        torch.nn.Module.to(vae, dtype=dtype)


def upscale_pipeline_latents(upscaler, latents: torch.Tensor, vae: Any, family: str | None = None, *, scale: int = 2,
                             height: int | None = None, width: int | None = None, decode_image: bool = False,
                             upcast_vae: bool | None = None, **upscale_kwargs):
    """A pipeline's ``output_type="latent"`` result -> upscaled raw latents (and the decoded image).

    Returns the raw upscaled latents (B, C, s*h, s*w) in the upscaler's dtype, or
    ``(raw, image)`` with ``decode_image=True`` (``vae`` must then be the AutoencoderKL;
    ``upcast_vae`` is :func:`decode`'s ``upcast``). Several scales (``scale=(2, 4)``) give dicts
    keyed by scale, of latents and of images, as ``Upscaler.upscale`` does.
    Extra keyword arguments go to ``Upscaler.upscale`` (``tile=``, ``cuda_graph=``, ...).

    The scale and shift run in the wider of the latents' and the upscaler's dtypes: a bfloat16
    pipeline's latents feeding an fp32 upscaler are not rounded to bfloat16 after the shift (which
    cost 2.5e-3 relative error in the raw latents before 2026-11-29, 4e-8 in fp32).
    """
    if decode_image:  # before the upscale, which may take seconds (before 2026-11-29: an AttributeError after it)
        _check_decoder(vae)
    _tensor(latents, "latents")
    wide = torch.promote_types(latents.dtype, upscaler.dtype) if latents.is_floating_point() else latents.dtype
    raw = to_raw_latents(latents.to(wide), vae, family, height=height, width=width)
    raw = raw.to(device=upscaler.device)
    upscaled = upscaler.upscale(raw, scale=scale, **upscale_kwargs)
    if not decode_image:
        return upscaled
    if isinstance(upscaled, dict):  # several scales (before 2026-11-29: AttributeError in decode)
        return upscaled, {s: decode(vae, z, upcast=upcast_vae) for s, z in upscaled.items()}
    return upscaled, decode(vae, upscaled, upcast=upcast_vae)
