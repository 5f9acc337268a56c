"""The public API: ``lua_fast.load(...)`` returns an :class:`Upscaler`."""

from __future__ import annotations

import os
from typing import Any, BinaryIO, Callable, Mapping, SupportsIndex, Union, overload

import torch

from . import checkpoint, dispatch, forking, hub, untraced
from .config import LUAConfig
from .cuda_graphs import GraphRunner
from .errors import CheckpointError, InputError, NonFiniteInputError, NonFiniteOutputError
from .precision import Precision, default_mixed_dtype, resolve, warn_if_slow_on_the_cpu
from .reference import LUA, windows
from .tiling import run_tiled, untiled, warn_if_over_the_ram

LATENT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
DTYPES = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
    "float64": torch.float64, "fp64": torch.float64, "double": torch.float64,
}  # fmt: skip

Source = Union[str, os.PathLike, bytes, BinaryIO, Mapping[str, torch.Tensor], torch.nn.Module, "Upscaler"]


def parse_dtype(dtype: torch.dtype | str) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise InputError(f"unsupported model dtype {dtype}; use one of float32, bfloat16, float16, float64")
        return dtype
    try:
        return DTYPES[str(dtype).lower().removeprefix("torch.")]
    except KeyError:
        raise InputError(f"unknown dtype {dtype!r}; use one of {sorted(DTYPES)}") from None


def auto_device() -> str:
    """What ``device="auto"`` (and ``lua-fast --device auto``) means: CUDA when PyTorch sees a GPU,
    else the CPU."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def parse_device(device: torch.device | str) -> torch.device:
    """A usable ``torch.device`` from a device or its name (any case; "auto": ``auto_device()``,
    the current CUDA device), or InputError."""
    if isinstance(device, str):
        device = device.strip().lower()
        if device == "auto":
            device = auto_device()
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InputError(f"unknown device {device!r}: use cpu, cuda, cuda:N or auto ({exc})") from None
    if device.type in ("cpu", "meta") and device.index is not None:
        # Their tensors report no index: an upscaler on "cpu:0" refused every CPU tensor as being
        # on another device (before 2026-11-29).
        device = torch.device(device.type)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            if torch.version.cuda is None:
                raise InputError(f"device {device} requested but this PyTorch build has no CUDA "
                                 f"(torch {torch.__version__}: a CPU wheel)")
            raise InputError(
                f"device {device} requested but PyTorch (built with CUDA {torch.version.cuda}) sees no GPU: "
                "check the NVIDIA driver (nvidia-smi) and CUDA_VISIBLE_DEVICES")
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        elif device.index >= torch.cuda.device_count():
            raise InputError(f"device {device} requested but only {torch.cuda.device_count()} GPU(s) are visible "
                             f"(cuda:0 to cuda:{torch.cuda.device_count() - 1}; CUDA_VISIBLE_DEVICES renumbers them)")
    elif device.type not in ("cpu", "meta"):
        # mps, xpu, ...: the eager backends are plain PyTorch, so any device PyTorch can allocate on
        # may run them. Ask by allocating: each device module words "not here" differently (mps: a
        # RuntimeError, xpu: an AssertionError), and it would otherwise surface mid-load.
        try:
            torch.empty(0, device=device)
        except Exception as exc:  # noqa: BLE001 - any failure means the device cannot be used
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(f"device {device} is not usable with this PyTorch (torch {torch.__version__}): "
                             f"{first}") from None
    return device


# The NaN/Inf checks read a count back from the device: a compiled ``upscale`` runs them eagerly
# between its graphs, and with fullgraph=True the compile fails with this reason, not with
# Dynamo's "could not guard on data-dependent expression". (Called as ``untraced.<name>``.)
_READS_DATA = ("lua_fast: upscale(check_finite=True) reads a NaN/Inf count back from the device, which a graph "
               "cannot; for one graph pass check_finite=False, or compile up.model")


def _nonfinite_items(*batches: torch.Tensor) -> list[int]:
    """The batch indices whose latents or outputs hold NaN/Inf (read on the failure path only)."""
    found = set()
    for t in batches:
        found.update((~torch.isfinite(t)).flatten(1).any(1).nonzero().flatten().tolist())
    return sorted(found)


def _in_items(items: list[int], batch: int) -> str:
    """" in batch items [0, 3]" for a batch of several (before 2026-11-29 the error did not say which)."""
    if batch < 2:
        return ""
    shown = ", ".join(map(str, items[:10])) + (f", ... ({len(items)} in all)" if len(items) > 10 else "")
    return f" in batch item{'s' if len(items) > 1 else ''} [{shown}] of {batch}"


@untraced.register(reason=_READS_DATA)
def check_finite_input(up: "Upscaler", latents: torch.Tensor, x: torch.Tensor) -> None:
    """NaN/Inf in ``x`` (the latents cast to the model dtype) raise NonFiniteInputError."""
    bad = (~torch.isfinite(x)).sum().item()
    if not bad:
        return
    before = bad if x is latents else (~torch.isfinite(latents)).sum().item()
    what = (f"contain {bad} NaN/Inf value(s)" if before else
            f"have {bad} value(s) too large for {up.dtype} (they become Inf in the cast)")
    items = _nonfinite_items(x)
    raise NonFiniteInputError(
        f"latents {what} out of {latents.numel()}{_in_items(items, x.shape[0])}; the output would be meaningless",
        count=bad, batch_items=items,
    )


@untraced.register(reason=_READS_DATA)
def check_finite_output(up: "Upscaler", outputs: dict) -> None:
    """Finite latents must give finite outputs: an overflow inside the model raises."""
    if all(bool(torch.isfinite(o).all()) for o in outputs.values()):
        return
    items = _nonfinite_items(*outputs.values())
    where = _in_items(items, next(iter(outputs.values())).shape[0])
    if up.precision.guards_overflow:
        why = ("the SwinIR residual stream exceeds float16's range of 65504 for these latents; use "
               "precision='mixed' with bfloat16 or dtype=torch.bfloat16")
    else:
        why = (f"activations exceed {up.dtype}'s range for these latents, far outside what LUA was "
               "trained on; raw VAE latents are O(1): check their scale")
    raise NonFiniteOutputError(f"{up.precision} overflowed and the output holds NaN/Inf{where} ({why})",
                               batch_items=items)


def _check_switches(*, progress, **flags) -> None:
    """A switch given as a string (check_finite="false" from a config file or a form) read as True,
    and progress=1 or "yes" as no progress at all, before 2026-11-29; now each is an InputError."""
    for name, value in flags.items():
        if isinstance(value, (str, bytes)) or value is None:
            raise InputError(f"{name} takes True or False, got {value!r}")
    if not (progress is None or isinstance(progress, bool) or callable(progress)):
        raise InputError(f"progress takes True (a tqdm bar), False or None, or a callable (done, total); got {progress!r}")


def _capturing(device: torch.device) -> bool:
    """Whether this thread's current stream on ``device`` is capturing a CUDA graph."""
    return device.type == "cuda" and torch.cuda.is_current_stream_capturing()


def _whole_number_hint(bad, scales) -> str:
    """For 2.0 or tensor(2), where the int would do: the message listed 2 as a head beside
    "unsupported scale 2.0", which read as a contradiction."""
    for s in bad:
        if isinstance(s, (bool, str)):
            continue
        try:
            value = float(s)
        except (TypeError, ValueError, RuntimeError):  # (a tensor of many elements: RuntimeError)
            continue
        if value.is_integer() and int(value) in scales:
            return f"; scales are ints: pass {int(value)}, not {type(s).__name__} {s!r}"
    return ""


class Upscaler:
    """A loaded LUA model bound to a device, precision and backend.

    ``upscale(latents, scale=2)`` takes raw VAE latents (B, C, H, W) and returns
    (B, C, s*H, s*W) in the upscaler's dtype on its device; ``scale=(2, 4)``
    returns ``{2: ..., 4: ...}`` from a single trunk pass.

    ``model`` is the backend's ``nn.Module`` (``model(latents, scales) -> {scale: out}``,
    no input checks), the thing to hand to ``torch.compile``; ``reference_model`` is the
    reference :class:`LUA` holding the weights.
    """

    def __init__(self, model: LUA, backend: dispatch.Backend, device: torch.device, precision: Precision,
                 requested_backend: str | None = None):
        self.reference_model = model
        self.config: LUAConfig = model.config
        self.backend: str = backend.name
        self._requested_backend = requested_backend or backend.name  # "auto" re-selects in to()
        self.device = device
        self.precision = precision
        self.dtype = precision.storage
        self.model = backend.build(model, precision)
        self._graphs = GraphRunner(self.model, device)

    @classmethod
    def from_runner(cls, runner, config: LUAConfig, device: torch.device, precision: Precision,
                    backend: str) -> "Upscaler":
        """An Upscaler around a prebuilt callable ``runner(latents, scales) -> {scale: output}`` (an
        exported package, see ``lua_fast.export``): the same checks and ``upscale`` contract, no
        ``reference_model``."""
        self = cls.__new__(cls)
        self.reference_model = None
        self.config = config
        self.backend = backend
        self.device = device
        self.precision = precision
        self.dtype = precision.storage
        self.model = runner
        self._graphs = GraphRunner(runner, device)
        return self

    def __repr__(self) -> str:
        return (
            f"Upscaler(backend={self.backend!r}, device={self.device}, precision={self.precision}, "
            f"scales={getattr(self.model, 'scales', self.config.scales)}, channels={self.config.in_channels})"
        )

    def _scales(self, scale) -> tuple[tuple, tuple[int, ...], bool]:
        """(the keys asked for, their scales, whether one was asked for); head names map to scales."""
        single = not isinstance(scale, (tuple, list))
        keys = (scale,) if single else tuple(scale)
        # (head names in any case, as device, dtype and precision names: "X4" is "x4")
        scales = tuple(self.config.scale_of(k) for k in keys)
        bad = [k for k, s in zip(keys, scales) if s is None]
        if bad or not scales:
            raise InputError(
                f"unsupported scale {scale!r}: this model has heads {self.config.heads} (pass a scale or a "
                "head name, or a tuple of them)" + _whole_number_hint(bad, self.config.scales))
        return keys, scales, single

    def check_latents(self, latents: torch.Tensor, *, check_finite: bool = True) -> None:
        """Raise :class:`InputError` if ``latents`` cannot be upscaled as given."""
        if not isinstance(latents, torch.Tensor):
            raise InputError(f"latents must be a torch.Tensor, got {type(latents).__name__}")
        if latents.is_nested:  # (a strided nested tensor reports layout strided; its sizes raise a RuntimeError)
            raise InputError("latents must be a dense tensor, got a nested tensor: upscale each latent on its "
                             "own (up.upscale(t[None]) for t in nested.unbind()), or pad them to one size first")
        if latents.dim() != 4:
            raise InputError(
                f"latents must be 4-D (batch, channels, height, width), got shape {tuple(latents.shape)}"
                + ("; add a batch dimension with latents[None], or unpack FLUX's packed (B, seq, 64) "
                   "latents first" if latents.dim() == 3 else "")
            )
        if latents.layout != torch.strided:
            raise InputError(f"latents must be a dense tensor, got layout {latents.layout} (use .to_dense())")
        if latents.dtype not in LATENT_DTYPES:
            raise InputError(
                f"latents must be a floating-point tensor (float16, bfloat16, float32 or float64), got dtype {latents.dtype}"
                + (" (cast float8 latents up first)" if latents.is_floating_point() else "")
            )
        b, c, h, w = latents.shape
        if c != self.config.in_channels:
            raise InputError(f"latents have {c} channels but this model expects {self.config.in_channels}")
        if b == 0 or h == 0 or w == 0:
            raise InputError(f"latents must have a non-empty batch and sides, got shape {tuple(latents.shape)}")
        if latents.device != self.device:
            raise InputError(
                f"latents are on {latents.device} but the upscaler is on {self.device}; "
                f"move them with latents.to('{self.device}')"
                + (f", or the upscaler with up.to('{latents.device}')" if self.reference_model is not None else "")
            )
        if check_finite and latents.device.type != "meta":
            untraced.check_finite_input(self, latents, latents)

    # One scale gives a tensor, a tuple or list of them a dict: overloads, so a type checker reading
    # the package (py.typed) types ``up.upscale(z, scale=2).shape`` without a cast.
    @overload
    def upscale(self, latents: torch.Tensor, scale: SupportsIndex | str = 2, *, check_finite: bool = True,
                cuda_graph: bool = False, tile: int | str | None = None, overlap: int | None = None,
                memory_budget: int | None = None,
                progress: bool | Callable[[int, int], None] = False) -> torch.Tensor: ...

    @overload
    def upscale(self, latents: torch.Tensor, scale: tuple[SupportsIndex | str, ...] | list[SupportsIndex | str], *,
                check_finite: bool = True, cuda_graph: bool = False, tile: int | str | None = None,
                overlap: int | None = None, memory_budget: int | None = None,
                progress: bool | Callable[[int, int], None] = False) -> dict[Any, torch.Tensor]: ...

    # no_grad, not inference_mode: inference tensors cannot be updated in place or used by autograd
    # once the mode is left, and the caller owns these outputs (a hires-fix pass adds noise to them,
    # a pipeline scales them in place). Called inside torch.inference_mode(), the caller gets that
    # mode's slightly lower host cost per op, and inference tensors. (On the implementation: above
    # the overloads, it decorated one of them and upscale ran with autograd on.)
    @torch.no_grad()
    def upscale(
        self,
        latents: torch.Tensor,
        scale: SupportsIndex | str | tuple[SupportsIndex | str, ...] | list[SupportsIndex | str] = 2,
        *,
        check_finite: bool = True,
        cuda_graph: bool = False,
        tile: int | str | None = None,
        overlap: int | None = None,
        memory_budget: int | None = None,
        progress: bool | Callable[[int, int], None] = False,
    ) -> torch.Tensor | dict[Any, torch.Tensor]:
        """Upscale raw VAE latents by ``scale`` (2 or 4 for the released model, or a head name,
        "x2" / "x4"); a tuple of them returns a dict keyed the way they were asked for.

        Floating inputs of another dtype are cast to the upscaler's dtype. NaN or Inf in the
        input (after that cast) raise :class:`NonFiniteInputError`, and NaN or Inf in the output
        of finite latents (an overflow inside the model) raise :class:`NonFiniteOutputError`, a
        ``FloatingPointError``; ``check_finite=False`` skips both checks (each synchronises with
        the device once). ``cuda_graph=True`` (CUDA only) captures one CUDA graph per
        (shape, dtype, scales, per-forward switches: ``cuda_graphs.SWITCHES``) on first use and
        replays it afterwards, removing launch overhead.

        Tiling (``lua_fast.tiling``): ``tile=T`` upscales T x T latent tiles overlapping by at least
        ``overlap`` (default two windows, at most half a tile; at most T less one window) and blends
        them; tiles start on the window grid, and a T off it is widened to it. ``tile="auto"`` acts
        only when the estimated activation memory exceeds ``memory_budget`` bytes (default on CUDA:
        90% of what the process can still allocate; on the CPU: 75% of the RAM it can still take,
        within its container's limit, where Linux tells it; ``lua_fast.tiling.default_memory_budget``):
        a batch runs in chunks of whole items (the untiled result), and an item too large alone in
        the tiles of least work that fit; after an allocation failure, smaller chunks, then smaller
        tiles. ``progress=True`` shows a tqdm bar over tiles; a callable ``progress(done, total)``
        is called after each tile (or chunk of items) instead, and once with (1, 1) after an
        untiled pass (no ``tile``, or "auto" that did not tile).
        """
        _check_switches(check_finite=check_finite, cuda_graph=cuda_graph, progress=progress)
        keys, asked, single = self._scales(scale)
        scales = tuple(dict.fromkeys(asked))  # one trunk pass and one head run per distinct scale
        self.check_latents(latents, check_finite=False)
        if self.device.type == "cpu":
            forking.note_cpu_work()
            forking.warn_if_made_single_threaded()
        check_finite = check_finite and self.device.type != "meta"  # (meta: shapes only, no values to check)
        if (check_finite or cuda_graph) and _capturing(self.device):
            # The caller's own torch.cuda.graph: a read-back would fail with "operation not permitted
            # when stream is capturing" and invalidate their capture, a capture of ours would nest.
            raise InputError(
                "upscale() is being captured into a CUDA graph of yours: pass check_finite=False (the NaN/Inf "
                "checks read values back from the device, which a capture cannot) and cuda_graph=False (your "
                "graph already captures this call)"
            )
        # One memory layout for every input: a channels-last or strided view gives the same bits
        # as its contiguous copy.
        x = latents.to(self.dtype, memory_format=torch.contiguous_format)
        if check_finite:  # after the cast: finite float64 latents can overflow the model dtype
            untraced.check_finite_input(self, latents, x)
        if tile is None and (overlap is not None or memory_budget is not None):
            raise InputError("overlap and memory_budget only apply to tiled runs; pass tile=N or tile='auto'")
        if tile is not None:
            if cuda_graph:
                raise InputError("cuda_graph=True and tiling cannot be combined")
            outputs = run_tiled(self.model, x, scales, self.config, tile=tile, overlap=overlap,
                                memory_budget=memory_budget, progress=progress,
                                element_size=self.precision.activation_itemsize,
                                materialises_scores=self.backend != "triton")
        elif cuda_graph:
            if self.device.type != "cuda":
                raise InputError(f"cuda_graph=True needs a CUDA upscaler; this one is on {self.device}")
            outputs = untiled(self._graphs, x, scales, progress)
        else:
            warn_if_over_the_ram(self.config, x, scales, element_size=self.precision.activation_itemsize,
                                 materialises_scores=self.backend != "triton")
            outputs = untiled(self.model, x, scales, progress)
        outputs = {s: outputs[s].contiguous() for s in scales}
        if check_finite:
            untraced.check_finite_output(self, outputs)
        return outputs[scales[0]] if single else {k: outputs[s] for k, s in zip(keys, asked)}

    def to(self, *args, device: torch.device | str | None = None, dtype: torch.dtype | str | None = None,
           precision: str | None = None, mixed_dtype: torch.dtype | str | None = None) -> "Upscaler":
        """Move this upscaler to another device and/or precision **in place** (as ``nn.Module.to``)
        and return it: ``up.to("cuda")``, ``up.to("cpu")`` (offload between uses),
        ``up.to(torch.bfloat16)``, ``up.to("cuda", precision="mixed")``.

        The backend is chosen again as ``load`` chose it ("auto" picks the best for the new device;
        a backend named at load time must be able to run there, else
        :class:`BackendUnavailableError` and nothing changes). Captured CUDA graphs are dropped.
        Weights are never widened: from bf16/fp16 storage to float32 (or from float32 to float64)
        they would keep the narrow rounding and silently differ from the checkpoint's, so that raises
        :class:`InputError`; load the checkpoint again instead. Not for use while another thread
        runs ``upscale`` on this upscaler.
        """
        for arg in args:  # positional device / dtype, in either order, as nn.Module.to takes them
            if isinstance(arg, torch.dtype) and dtype is None:
                dtype = arg
            elif isinstance(arg, (str, torch.device, int)) and not isinstance(arg, bool) and device is None:
                device = arg
            else:
                raise InputError(f"Upscaler.to takes a device and/or a dtype, got {arg!r} in {args!r}")
        if self.reference_model is None:
            raise InputError("an exported package is compiled for its device and precision; "
                             "lua_fast.load(path, device=...) it again instead of to()")
        new_device = self.device if device is None else parse_device(device)
        if precision is None and dtype is None:
            if mixed_dtype is None:
                prec = self.precision
            elif self.precision.mode == "mixed":
                prec = resolve("mixed", None, parse_dtype(mixed_dtype))
            else:
                raise InputError(f"mixed_dtype is mixed precision's compute dtype; this upscaler runs "
                                 f"{self.precision}: pass precision='mixed' too")
        else:
            prec = resolve(precision, None if dtype is None else parse_dtype(dtype),
                           default_mixed_dtype(new_device) if mixed_dtype is None else parse_dtype(mixed_dtype))
        old_storage, new_storage = self.precision.storage, prec.storage
        if new_storage.itemsize > old_storage.itemsize or (
                new_storage != old_storage and old_storage.itemsize == 2):  # bf16 <-> fp16 loses range or bits
            raise InputError(
                f"the weights are held in {old_storage}; {new_storage} from them would keep {old_storage}'s "
                "rounding, not the checkpoint's values: lua_fast.load the checkpoint again with "
                + (f"precision={prec.mode!r}" if prec.mode in ("mixed", "tf32") else f"dtype={new_storage}"))
        if new_device == self.device and prec == self.precision:
            return self
        requested = getattr(self, "_requested_backend", self.backend)  # (a copy pickled before it existed)
        chosen = dispatch.select_backend(requested, new_device, prec)  # before any change
        warn_if_slow_on_the_cpu(prec, new_device)
        model = _materialize(self.reference_model.state_dict(), self.config, new_device, prec)
        runner = chosen.build(model, prec)
        max_graphs = self.max_cuda_graphs
        self._graphs.clear()
        if new_device != self.device:  # the old device's shared reference masks (per-model caches go with the model)
            windows.drop_cached_masks(self.device)
        self.reference_model, self.model, self.backend = model, runner, chosen.name
        self.device, self.precision, self.dtype = new_device, prec, prec.storage
        self._graphs = GraphRunner(runner, new_device, max_graphs)
        return self

    def clear_cuda_graphs(self) -> None:
        """Drop captured graphs and their memory pools (once their last replays have finished)."""
        self._graphs.clear()

    @property
    def max_cuda_graphs(self) -> int | None:
        """How many CUDA graphs (one per shape, dtype, scales and switches) ``cuda_graph=True`` keeps,
        each with a private memory pool of about its forward's activations: default
        ``cuda_graphs.DEFAULT_MAX_GRAPHS``; None keeps every one. Past the bound the least recently
        used graph is dropped before the next capture; lowering it drops graphs at once."""
        return self._graphs.max_graphs

    @max_cuda_graphs.setter
    def max_cuda_graphs(self, value: int | None) -> None:
        self._graphs.max_graphs = value

    def cuda_graph_stats(self) -> dict:
        """``{"graphs", "max_graphs", "captures", "evictions"}``: graphs held now, the bound, and the
        captures and evictions so far. Evictions that keep growing mean shapes are re-captured
        (0.1-0.4 s each): raise ``max_cuda_graphs`` or leave ``cuda_graph`` off for them."""
        return self._graphs.stats()

    __call__ = upscale


def load(
    source: Source,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | str | None = None,
    backend: str = "auto",
    precision: str | None = None,
    mixed_dtype: torch.dtype | str | None = None,
) -> Upscaler:
    """Load LUA weights and return an :class:`Upscaler`.

    ``source``: a path to ``.pth``/``.pt`` (state dict, optionally under
    ``params_ema``/``params``) or ``.safetensors`` (the format is read from the content, so
    ``.sft``, ``.ckpt`` or ``.bin`` names work), the bytes of such a file or an open binary file
    object (read to its end), an ``nn.Module`` holding the released layout (its ``state_dict()``:
    lua_fast's reference :class:`LUA`, the official model class, an upscaler's ``model``), another
    :class:`Upscaler` (its weights), a Hugging Face Hub file
    ``hf://owner/repo[@revision]/file`` or its ``https://huggingface.co/.../resolve/...`` link
    (``lua_fast.hub``: needs ``huggingface_hub``; other URLs are refused), an
    AOTInductor package ``.pt2`` written by ``lua_fast.export.export_package`` (device only), or an
    in-memory state dict.
    The config is inferred from keys and shapes and the weights validated strictly.

    ``dtype`` (weights, residual stream, output; default float32) and ``precision``
    ("fp32", "tf32", "bf16", "fp16" or "mixed", in any case, or a dtype's name such as "bfloat16":
    see ``lua_fast.precision``) say how to
    compute; give either, or both if they agree. ``mixed_dtype`` is "mixed"'s compute dtype
    (default: bfloat16, or float16 on CUDA GPUs before Ampere, which lack bfloat16 tensor cores).
    ``backend``: "auto" (or ``LUA_FAST_BACKEND``) picks triton > torch > reference.
    ``device``: a ``torch.device`` or its name ("cpu", "cuda", "cuda:1"; any case), or "auto" for
    the current CUDA device when PyTorch sees one, else the CPU.
    """
    if checkpoint.is_package_path(source):
        from .export import load_package

        if backend != "auto" or precision is not None or dtype is not None:
            raise InputError("an exported .pt2 package fixes its backend and precision; pass only device=")
        # (a package on the Hub too: before 2026-11-29 "package not found: hf:/...")
        return load_package(_fetched(source), device)
    device = parse_device(device)
    forking.note_cpu_work()  # (the weights are validated on the CPU, whatever the device)
    prec = resolve(precision, None if dtype is None else parse_dtype(dtype),
                   default_mixed_dtype(device) if mixed_dtype is None else parse_dtype(mixed_dtype))
    chosen = dispatch.select_backend(backend, device, prec)  # fail before reading weights
    warn_if_slow_on_the_cpu(prec, device)
    config, state_dict = checkpoint.validate_state_dict(read_weights(source))
    return Upscaler(_materialize(state_dict, config, device, prec), chosen, device, prec, backend)


def _fetched(source):
    """A Hub file (``hf://...`` or its https link, through the Hub's cache) as a local path; other
    URLs refused; anything else as it is."""
    source = hub.from_url(source) or source
    hub.refuse_url(source)
    return hub.download(source) if hub.is_hub_path(source) else source


def _refuse_package(path) -> None:
    """An exported package where weights are wanted (``convert``, ``bench``, the Ray check): it holds
    compiled code, no weights. Before 2026-11-29 it read as a "corrupted" torch.save checkpoint."""
    if not (checkpoint.is_package_path(path) and os.path.isfile(path)):
        return
    from .export import ExportError, package_metadata

    try:
        package_metadata(path)
    except ExportError:
        return  # not one of ours: read it as what it claims to be
    raise CheckpointError(f"{path} is an exported AOTInductor package: it holds compiled code, not weights to read; "
                          "pass the checkpoint it was exported from (lua_fast.load runs the package itself)")


def read_weights(source) -> dict[str, torch.Tensor]:
    """The flat state dict of any weights ``load`` takes (not yet validated): a path, a hub path or
    link, bytes or a binary file object, a module, or a state dict."""
    if isinstance(source, (str, os.PathLike)) and not os.fspath(source).strip():
        # (an unset variable, load(os.environ.get("LUA_WEIGHTS", "")): Path("") is the working directory)
        raise InputError("no checkpoint given: the path is empty")
    source = _fetched(source)
    if isinstance(source, (str, os.PathLike)):
        _refuse_package(source)
        return checkpoint.read_checkpoint(source)
    if isinstance(source, (bytes, bytearray, memoryview)) or callable(getattr(source, "read", None)):
        return checkpoint.read_checkpoint_stream(source)
    if isinstance(source, Upscaler):  # another upscaler's weights (before 2026-11-29: "not a LUA checkpoint")
        if source.reference_model is None:
            raise InputError("an exported package holds no weights to load again: load the checkpoint it was "
                             "exported from")
        source = source.reference_model
    if isinstance(source, torch.nn.Module):  # a LUA module (lua_fast's reference, the official class, up.model)
        return checkpoint.unwrap(source.state_dict(), origin=f"the given {type(source).__name__}'s state dict")
    return checkpoint.unwrap(source, origin="the given state dict")


def _materialize(state_dict: Mapping[str, torch.Tensor], config: LUAConfig, device: torch.device,
                 prec: Precision) -> LUA:
    """A reference model holding copies of validated weights on ``device`` in ``prec``'s storage."""
    with torch.device("meta"):
        model = LUA(config)
    # Copy straight to the target device/dtype; indices stay integer.
    state_dict = {  # contiguous copies: checkpoint tensors may be any (validated) strided view
        k: v.to(device=device, dtype=prec.storage if v.is_floating_point() else v.dtype,
                memory_format=torch.contiguous_format, copy=True)
        for k, v in state_dict.items()
    }
    model.load_state_dict(state_dict, strict=True, assign=True)
    return model.eval().requires_grad_(False)
