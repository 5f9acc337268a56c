"""The public API: ``lua_fast.load(...)`` returns an :class:`Upscaler`."""

from __future__ import annotations

import os
from typing import Iterable, Mapping, Union

import torch

import threading
from dataclasses import dataclass, field

from . import checkpoint, dispatch
from .config import LUAConfig
from .errors import InputError, NonFiniteInputError
from .precision import Precision, resolve
from .reference import LUA
from .tiling import estimate_peak_bytes, upscale_tiled

DTYPES = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
    "float64": torch.float64, "fp64": torch.float64, "double": torch.float64,
}  # fmt: skip

Source = Union[str, os.PathLike, Mapping[str, torch.Tensor]]


def parse_dtype(dtype: torch.dtype | str) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise ValueError(f"unsupported model dtype {dtype}; use one of float32, bfloat16, float16, float64")
        return dtype
    try:
        return DTYPES[str(dtype).lower().removeprefix("torch.")]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(DTYPES)}") from None


def parse_device(device: torch.device | str) -> torch.device:
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device} requested but CUDA is not available in this PyTorch build")
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
    return device


@dataclass
class _Graph:
    """One captured CUDA graph: static input/output buffers, replayed under a lock."""

    graph: "torch.cuda.CUDAGraph"
    static_in: torch.Tensor
    static_out: dict
    lock: threading.Lock = field(default_factory=threading.Lock)


class Upscaler:
    """A loaded LUA model bound to a device, precision and backend.

    ``upscale(latents, scale=2)`` takes raw VAE latents (B, C, H, W) and returns
    (B, C, s*H, s*W) in the upscaler's dtype on its device; ``scale=(2, 4)``
    returns ``{2: ..., 4: ...}`` from a single trunk pass.

    ``model`` is the backend's ``nn.Module`` (``model(latents, scales) -> {scale: out}``,
    no input checks), the thing to hand to ``torch.compile``; ``reference_model`` is the
    reference :class:`LUA` holding the weights.
    """

    def __init__(self, model: LUA, backend: dispatch.Backend, device: torch.device, precision: Precision):
        self.reference_model = model
        self.config: LUAConfig = model.config
        self.backend: str = backend.name
        self.device = device
        self.precision = precision
        self.dtype = precision.storage
        self.model = backend.build(model, precision)
        self._graphs: dict[tuple, _Graph] = {}
        self._graphs_lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"Upscaler(backend={self.backend!r}, device={self.device}, precision={self.precision}, "
            f"scales={self.config.scales}, channels={self.config.in_channels})"
        )

    def _scales(self, scale) -> tuple[tuple[int, ...], bool]:
        single = not isinstance(scale, (tuple, list))
        scales = (scale,) if single else tuple(scale)
        bad = [s for s in scales if isinstance(s, bool) or not isinstance(s, int) or s not in self.config.scales]
        if bad or not scales:
            raise InputError(
                f"unsupported scale {scale!r}: this model has heads for scales {self.config.scales} "
                "(pass one of them, or a tuple of them)"
            )
        return scales, single

    def check_latents(self, latents: torch.Tensor, *, check_finite: bool = True) -> None:
        """Raise :class:`InputError` if ``latents`` cannot be upscaled as given."""
        if not isinstance(latents, torch.Tensor):
            raise InputError(f"latents must be a torch.Tensor, got {type(latents).__name__}")
        if latents.dim() != 4:
            raise InputError(
                f"latents must be 4-D (batch, channels, height, width), got shape {tuple(latents.shape)}"
                + ("; add a batch dimension with latents[None], or unpack FLUX's packed (B, seq, 64) "
                   "latents first" if latents.dim() == 3 else "")
            )
        if not latents.is_floating_point():
            raise InputError(f"latents must be a floating-point tensor, got dtype {latents.dtype}")
        b, c, h, w = latents.shape
        if c != self.config.in_channels:
            raise InputError(f"latents have {c} channels but this model expects {self.config.in_channels}")
        if b == 0 or h == 0 or w == 0:
            raise InputError(f"latents must have a non-empty batch and sides, got shape {tuple(latents.shape)}")
        if latents.device != self.device:
            raise InputError(
                f"latents are on {latents.device} but the upscaler is on {self.device}; "
                f"move them with latents.to('{self.device}')"
            )
        if check_finite:
            bad = (~torch.isfinite(latents)).sum().item()
            if bad:
                raise NonFiniteInputError(
                    f"latents contain {bad} NaN/Inf value(s) out of {latents.numel()}; the output would be "
                    "meaningless (pass check_finite=False to skip this check)"
                )

    @torch.inference_mode()
    def upscale(
        self,
        latents: torch.Tensor,
        scale: int | Iterable[int] = 2,
        *,
        check_finite: bool = True,
        cuda_graph: bool = False,
        tile: int | str | None = None,
        overlap: int | None = None,
        memory_budget: int | None = None,
        progress: bool = False,
    ) -> torch.Tensor | dict[int, torch.Tensor]:
        """Upscale raw VAE latents by ``scale`` (2 or 4 for the released model).

        Floating inputs of another dtype are cast to the upscaler's dtype. NaN or Inf in the
        input raise :class:`NonFiniteInputError` unless ``check_finite=False`` (the check
        synchronises with the device once). In fp16 compute an output overflow raises
        :class:`FloatingPointError`. ``cuda_graph=True`` (CUDA only) captures one CUDA graph per
        (shape, dtype, scales) on first use and replays it afterwards, removing launch overhead.

        Tiling (``lua_fast.tiling``): ``tile=T`` upscales T x T latent tiles overlapping by
        ``overlap`` (default two windows, at most half a tile) and blends them; ``tile="auto"`` tiles only when the
        estimated activation memory exceeds ``memory_budget`` bytes (default on CUDA: 90% of the
        free memory; on CPU only when a budget is given), and on CUDA also retries with smaller
        tiles after an out-of-memory error. ``progress=True`` shows a tqdm bar over tiles.
        """
        scales, single = self._scales(scale)
        self.check_latents(latents, check_finite=check_finite)
        x = latents.to(self.dtype)
        if tile is not None:
            if cuda_graph:
                raise InputError("cuda_graph=True and tiling cannot be combined")
            outputs = self._tiled(x, scales, tile, overlap, memory_budget, progress)
        elif cuda_graph:
            outputs = self._replay(x, scales)
        else:
            outputs = self.model(x, scales)
        outputs = {s: outputs[s].contiguous() for s in scales}
        if self.precision.guards_overflow and check_finite:
            self._check_overflow(outputs)
        return outputs[scales[0]] if single else outputs

    def _tiled(self, x, scales, tile, overlap, memory_budget, progress) -> dict[int, torch.Tensor]:
        window = self.config.window_size
        height, width = x.shape[-2:]

        def default_overlap(size):  # two windows, at most half a tile
            return min(2 * window, size // 2) if overlap is None else min(overlap, size - 1)

        if tile == "auto":
            size = self._auto_tile(x, scales, memory_budget)
            if size is None:
                try:
                    return self.model(x, scales)
                except torch.OutOfMemoryError:
                    if self.device.type != "cuda":
                        raise
                    torch.cuda.empty_cache()
                    size = max(window, (max(height, width) // 2) // window * window)
            while True:
                try:
                    return upscale_tiled(self.model, x, scales, size, default_overlap(size), progress=progress)
                except torch.OutOfMemoryError:
                    if self.device.type != "cuda" or size <= window:
                        raise
                    torch.cuda.empty_cache()
                    size = max(window, (size // 2) // window * window)
        if isinstance(tile, bool) or not isinstance(tile, int) or tile < window:
            raise InputError(f"tile must be an int >= the window size {window}, or 'auto'; got {tile!r}")
        if overlap is not None and (isinstance(overlap, bool) or not isinstance(overlap, int)
                                    or not 0 <= overlap < tile):
            raise InputError(f"overlap must be an int in [0, tile), got {overlap!r} with tile={tile}")
        return upscale_tiled(self.model, x, scales, tile, default_overlap(tile), progress=progress)

    def _auto_tile(self, x, scales, memory_budget) -> int | None:
        """Largest window-multiple tile whose estimated activations fit the budget; None: no tiling."""
        if memory_budget is None:
            if self.device.type != "cuda":
                return None
            memory_budget = int(0.9 * torch.cuda.mem_get_info(self.device)[0])
        b, _, height, width = x.shape
        eager = self.backend != "triton"
        size_of = self.precision.compute.itemsize

        def estimate(h, w):
            return estimate_peak_bytes(self.config, h, w, scales, element_size=size_of, batch=b,
                                       materialises_scores=eager)

        if estimate(height, width) <= memory_budget:
            return None
        window = self.config.window_size
        size = max(height, width) // window * window
        while size > window and estimate(size, size) > memory_budget:
            size -= window
        return max(size, window)

    def _check_overflow(self, outputs: dict) -> None:
        if any(not bool(torch.isfinite(o).all()) for o in outputs.values()):
            raise FloatingPointError(
                f"{self.precision} overflowed (the SwinIR residual stream exceeds float16's range of 65504 "
                "for these latents); use precision='mixed' with bfloat16 or dtype=torch.bfloat16"
            )

    def _replay(self, x: torch.Tensor, scales: tuple[int, ...]) -> dict[int, torch.Tensor]:
        if self.device.type != "cuda":
            raise InputError(f"cuda_graph=True needs a CUDA upscaler; this one is on {self.device}")
        key = (tuple(x.shape), x.dtype, scales)
        with self._graphs_lock:
            entry = self._graphs.get(key)
            if entry is None:
                entry = self._graphs[key] = self._capture(x, scales)
        with entry.lock:
            entry.static_in.copy_(x)
            entry.graph.replay()
            return {s: o.clone() for s, o in entry.static_out.items()}

    def _capture(self, x: torch.Tensor, scales: tuple[int, ...]) -> _Graph:
        static_in = x.clone()
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):  # warm-up off the capture: autotuning, caches, masks, lazy loads
            for _ in range(2):
                self.model(static_in, scales)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = self.model(static_in, scales)
        return _Graph(graph, static_in, static_out)

    def clear_cuda_graphs(self) -> None:
        """Drop captured graphs and their memory pools."""
        with self._graphs_lock:
            self._graphs.clear()

    __call__ = upscale


def load(
    source: Source,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | str | None = None,
    backend: str = "auto",
    precision: str | None = None,
    mixed_dtype: torch.dtype | str = torch.bfloat16,
) -> Upscaler:
    """Load LUA weights and return an :class:`Upscaler`.

    ``source``: a path to ``.pth``/``.pt`` (state dict, optionally under
    ``params_ema``/``params``) or ``.safetensors``, or an in-memory state dict.
    The config is inferred from keys and shapes and the weights validated strictly.

    ``dtype`` (weights, residual stream, output; default float32) and ``precision``
    ("fp32", "tf32", "bf16", "fp16" or "mixed": see ``lua_fast.precision``) say how to
    compute; give either, or both if they agree. ``mixed_dtype`` is "mixed"'s compute dtype.
    ``backend``: "auto" (or ``LUA_FAST_BACKEND``) picks triton > torch > reference.
    """
    device = parse_device(device)
    prec = resolve(precision, None if dtype is None else parse_dtype(dtype), parse_dtype(mixed_dtype))
    chosen = dispatch.select_backend(backend, device, prec)  # fail before reading weights
    if isinstance(source, (str, os.PathLike)):
        state_dict = checkpoint.read_checkpoint(source)
    else:
        state_dict = checkpoint.unwrap(source, origin="the given state dict")
    config, state_dict = checkpoint.validate_state_dict(state_dict)
    with torch.device("meta"):
        model = LUA(config)
    # Copy straight to the target device/dtype; indices stay integer.
    state_dict = {
        k: v.to(device=device, dtype=prec.storage if v.is_floating_point() else v.dtype, copy=True)
        for k, v in state_dict.items()
    }
    model.load_state_dict(state_dict, strict=True, assign=True)
    model.eval().requires_grad_(False)
    return Upscaler(model, chosen, device, prec)
