"""The two ComfyUI nodes and the plain functions behind them.

- ``LUALoader``: a checkpoint from ``models/latent_upscale_models`` with backend, precision and
  device choices -> a ``LUA_MODEL`` (a :class:`lua_fast.Upscaler`).
- ``LUAUpscaleLatent``: ``LATENT`` + ``LUA_MODEL`` -> ``LATENT`` upscaled by x2 or x4.

ComfyUI's LATENT ``samples`` are raw VAE latents for FLUX, SD3 and SDXL (each ComfyUI model
applies its own scale/shift when sampling), which is what LUA takes: no scaling is applied here.
The output LATENT is a copy of the input dict with ``samples`` replaced and everything else kept,
as ComfyUI's own latent upscalers do: ``batch_index``, and ``noise_mask`` (an inpainting mask, at
any resolution: ComfyUI's samplers resize it to the latent; dropping it, as this node did before
2026-11-28, made a masked second pass denoise the whole image). Latents are moved to the model's device
and the result comes back on ComfyUI's intermediate device in the input's dtype.
"""

from __future__ import annotations

import os

import torch

from ...checkpoint import CHECKPOINT_SUFFIXES
from ...errors import InputError
from ... import precision as precision_modes
from ...tiling import (blend_bytes, budget_for_items, default_overlap, estimate_peak_bytes, is_integer,
                       is_out_of_memory, least_work_tile, outputs_bytes, over_the_cpu_budget)
from ...upscaler import Upscaler, load

MODEL_FOLDER = "latent_upscale_models"
MODEL_TYPE = "LUA_MODEL"
# ComfyUI's own checkpoint suffixes (folder_paths.supported_pt_extensions): lua_fast reads either
# format from any of them (by content), e.g. a ".sft" safetensors file.
EXTENSIONS = set(CHECKPOINT_SUFFIXES)
BACKENDS = ["auto", "triton", "torch", "reference"]
PRECISIONS = ["mixed", "bf16", "fp16", "fp32"]
DEVICES = ["default", "cuda", "cpu"]
TILING = ["off", "auto", "size"]
CATEGORY = "latent/upscaling"

# Channel counts of the latent families users meet in ComfyUI, for a useful mismatch message.
FAMILIES = {4: "SD1.5 / SDXL", 16: "FLUX.1 / SD3", 128: "FLUX.2"}


def register_model_folder() -> None:
    """Make ``folder_paths`` know ``models/latent_upscale_models`` (once; ComfyUI may already)."""
    import folder_paths

    if MODEL_FOLDER not in folder_paths.folder_names_and_paths:
        path = os.path.join(folder_paths.models_dir, MODEL_FOLDER)
        folder_paths.folder_names_and_paths[MODEL_FOLDER] = ([path], set(EXTENSIONS))


def load_lua_model(model_name: str, backend: str = "auto", precision: str = "mixed",
                   device: str = "default") -> Upscaler:
    import folder_paths
    from comfy import model_management

    register_model_folder()
    path = folder_paths.get_full_path(MODEL_FOLDER, model_name)
    if path is None:
        raise FileNotFoundError(f"LUA model {model_name!r} not found in models/{MODEL_FOLDER}")
    target = model_management.get_torch_device() if device == "default" else torch.device(device)
    # ("mixed" computes in float16 on GPUs before Ampere: lua_fast.precision.default_mixed_dtype)
    if precision == "mixed" and target.type == "cpu" and precision_modes.cpu_native_kernels(torch.bfloat16) is False:
        # The node's default, on a CPU without native bfloat16 kernels (most desktop CPUs, AVX2):
        # PyTorch's fallback loops run it about 40x slower than fp32 (lua_fast.precision), so the
        # default means fp32 there (before 2026-11-28: 47 s instead of 1.1 s for a 32x32 latent).
        print("[lua_fast] this CPU has no native bfloat16 kernels: LUA runs in fp32 instead of mixed "
              "(about 40x faster here); choose bf16 to force it")
        precision = "fp32"
    return load(path, device=target, backend=backend, precision=precision)


def _check_samples(up: Upscaler, samples) -> None:
    if not isinstance(samples, torch.Tensor) or samples.dim() != 4:
        shape = tuple(samples.shape) if isinstance(samples, torch.Tensor) else type(samples).__name__
        raise InputError(f"LUA upscales image latents (batch, channels, height, width); got {shape}"
                         + (" (a video latent?)" if isinstance(samples, torch.Tensor) and samples.dim() == 5 else ""))
    want, got = up.config.in_channels, samples.shape[1]
    if got != want:
        raise InputError(
            f"this LUA model takes {want}-channel latents ({FAMILIES.get(want, 'unknown family')}), but the "
            f"LATENT has {got} channels ({FAMILIES.get(got, 'unknown family')}); load the LUA checkpoint "
            "trained for this model family"
        )


def _progress_hook():
    """A ``(done, total)`` callback driving ComfyUI's progress bar (created on the first tile)."""
    from comfy.utils import ProgressBar

    bar = None

    def hook(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = ProgressBar(total)
        bar.update_absolute(done, total)

    return hook


def _retry_sizes(up: Upscaler, height: int, width: int) -> list[int]:
    """Tile sizes to try after an out-of-memory error: at most half the last, window multiples,
    >= 2 windows, each the tile of least work up to that size (``tiling.least_work_tile``, as
    tile="auto" takes; before 2026-11-29 the halved size itself)."""
    window = up.config.window_size
    size, sizes = max(height, width) // 2 // window * window, []
    while size >= 2 * window:
        size = least_work_tile(height, width, size, 2 * window, window, lambda tile: default_overlap(tile, window))
        sizes.append(size)
        size = size // 2 // window * window
    return sizes or [2 * window]


def upscale_latent_dict(up: Upscaler, latent: dict, scale: str = "x2", tiling: str = "off",
                        tile_size: int = 64) -> dict:
    """The upscale node's work on a LATENT dict (see the module docstring)."""
    from comfy import model_management

    if not isinstance(latent, dict) or "samples" not in latent:
        raise InputError(f"a LATENT is a dict holding 'samples'; got {type(latent).__name__}"
                         + (f" with {sorted(latent)}" if isinstance(latent, dict) else ""))
    samples = latent["samples"]
    _check_samples(up, samples)
    if tiling not in TILING:
        raise InputError(f"tiling must be one of {TILING}, got {tiling!r}")
    factor = up.config.scale_of(scale)
    if factor is None:
        # (a checkpoint with an x2 head only, asked for x4: before 2026-11-29 an AttributeError from
        # the memory estimate, before upscale's own check could name the heads)
        raise InputError(f"this LUA model has heads {sorted(dict(up.config.heads))}, not {scale!r}")
    z = samples.to(up.device)
    b, _, h, w = z.shape
    # Tell ComfyUI what this pass needs so it can unload other models first: the whole pass, or with
    # tiles of a given size one tile's and the full-size blend (before 2026-11-29 the whole pass's
    # there too, so a tiled run unloaded models, the sampler's among them, that its tiles left room for).
    element_size = up.precision.activation_itemsize
    activations = estimate_peak_bytes(up.config, h, w, (factor,), element_size=element_size,
                                      batch=b, materialises_scores=up.backend != "triton")
    need = activations + outputs_bytes(b, up.config.out_channels, h, w, (factor,), up.dtype.itemsize)
    if tiling == "size" and is_integer(tile_size) and tile_size > 0:
        side = -(-int(tile_size) // up.config.window_size) * up.config.window_size  # (widened to the grid)
        need = min(need, estimate_peak_bytes(up.config, min(side, h), min(side, w), (factor,),
                                             element_size=element_size, batch=b,
                                             materialises_scores=up.backend != "triton")
                   + blend_bytes(b, up.config.out_channels, h, w, (factor,), element_size))
    model_management.free_memory(need, up.device)
    oom = getattr(model_management, "OOM_EXCEPTION", torch.cuda.OutOfMemoryError)

    if tiling == "size":
        out = up.upscale(z, scale=scale, tile=int(tile_size), progress=_progress_hook())
    # On a GPU "off" means one pass, tiled only after an out-of-memory error. On the CPU that error
    # rarely comes: the kernel's OOM killer ends ComfyUI instead (before 2026-11-28 "off" ran such a
    # pass), so there "off" tiles as "auto" does once the pass exceeds the budget.
    elif tiling == "auto" or over_the_cpu_budget(up.device, activations):
        out = up.upscale(z, scale=scale, tile="auto", progress=_progress_hook())
    else:
        # ComfyUI's OOM_EXCEPTION (CUDA's), or the CPU allocator's refusal (a plain RuntimeError)
        allocation_failed = (oom, RuntimeError)
        try:
            out = up.upscale(z, scale=scale)
        except allocation_failed as exc:
            if not (isinstance(exc, oom) or is_out_of_memory(exc)):
                raise
            out = None
        if out is None and b > 1:
            # A batch: chunks of whole items first, which give the untiled result, as tile="auto"
            # runs them: half the batch at a time, halved again after a failure, an item alone tiled
            # if it must be (before 2026-11-29 the whole batch was tiled, each seam an approximation).
            model_management.soft_empty_cache()
            budget = budget_for_items(up.config, h, w, (factor,), items=(b + 1) // 2, batch=b,
                                      element_size=up.precision.activation_itemsize,
                                      materialises_scores=up.backend != "triton")
            out = up.upscale(z, scale=scale, tile="auto", memory_budget=budget, progress=_progress_hook())
        if out is None:  # retried outside the except block so the failed pass's memory is released
            for size in _retry_sizes(up, h, w):
                model_management.soft_empty_cache()
                try:
                    out = up.upscale(z, scale=scale, tile=size, progress=_progress_hook())
                    break
                except allocation_failed as exc:
                    if not (isinstance(exc, oom) or is_out_of_memory(exc)):
                        raise
            else:
                raise oom(f"LUA ran out of memory even with {size}x{size} tiles")
    result = dict(latent)
    result["samples"] = out.to(model_management.intermediate_device(), dtype=samples.dtype)
    return result


class LUALoader:
    """Load a LUA checkpoint from models/latent_upscale_models."""

    @classmethod
    def INPUT_TYPES(cls):
        import folder_paths

        register_model_folder()
        return {"required": {
            "model_name": (folder_paths.get_filename_list(MODEL_FOLDER),),
            "backend": (BACKENDS, {"default": "auto"}),
            "precision": (PRECISIONS, {"default": "mixed"}),
            "device": (DEVICES, {"default": "default"}),
        }}

    RETURN_TYPES = (MODEL_TYPE,)
    RETURN_NAMES = ("lua_model",)
    FUNCTION = "load"
    CATEGORY = CATEGORY

    def load(self, model_name, backend, precision, device):
        return (load_lua_model(model_name, backend, precision, device),)


class LUAUpscaleLatent:
    """Upscale a LATENT by 2x or 4x in latent space (decode once at the target size)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "lua_model": (MODEL_TYPE,),
            "samples": ("LATENT",),
            "scale": (["x2", "x4"], {"default": "x2"}),
            "tiling": (TILING, {"default": "off"}),
            "tile_size": ("INT", {"default": 64, "min": 8, "max": 4096, "step": 8}),
        }}

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "upscale"
    CATEGORY = CATEGORY

    def upscale(self, lua_model, samples, scale, tiling, tile_size):
        return (upscale_latent_dict(lua_model, samples, scale, tiling, tile_size),)


NODE_CLASS_MAPPINGS = {"LUALoader": LUALoader, "LUAUpscaleLatent": LUAUpscaleLatent}
NODE_DISPLAY_NAME_MAPPINGS = {"LUALoader": "Load LUA Latent Upscaler (lua_fast)",
                              "LUAUpscaleLatent": "Upscale Latent with LUA (lua_fast)"}
