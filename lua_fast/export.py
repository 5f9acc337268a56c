"""Deployable artifacts: AOTInductor packages (.pt2) and ONNX models.

``export_package(upscaler, "lua.pt2")`` exports the upscaler's backend model (reference, torch or
triton) with ``torch.export`` and compiles it with AOTInductor into one ``.pt2`` file that runs
without lua_fast's model code (C++ or Python). Shapes are dynamic: any batch up to ``max_batch``
and any H, W that are multiples of the window up to ``max_side`` (the shift masks are built inside
the graph from the input size; padding and cropping for other sizes stay in Python, in the loader).
The package records what it was built from (``lua_fast.json`` inside it: lua_fast version, config,
precision, backend, scales, device). ``lua_fast.load("lua.pt2")`` returns an :class:`Upscaler` with
the same ``upscale`` contract (a subset: the package's scales, its device and dtype; no
``reference_model``, no CUDA graphs). The triton backend's kernels are ``triton_op``s, so
AOTInductor compiles them into the package (CUDA only); the torch backend's native ops are
resolved from ``lua_fast._C`` when the package loads (import lua_fast first).

``export_onnx(upscaler, "lua.onnx", scale=2)`` writes the reference numerics as an ONNX model
(``torch.onnx.export(dynamo=True)``) with dynamic batch and any sizes, the padding, shift masks and
crop computed in the graph (tested with ONNX Runtime at one window and several, padded or not).
AOTInductor packages stay on window multiples: traced over every size, the views' guards on the
window counts become runtime asserts that fail at one window. It needs ``onnx`` and
``onnxscript`` (and ``onnxruntime`` to run it: ``lua_fast[onnx]``).
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import torch

from ._version import __version__
from .checkpoint import is_package_path
from .config import LUAConfig
from .errors import InputError, LuaFastError
from .files import atomic_write, check_output_path
from .padding import pad_to_window_multiple, sides_are_window_multiples
from .precision import Precision, backend_flags, resolve
from .tiling import is_integer

METADATA = "lua_fast.json"
MODEL_NAME = "model"


class ExportError(LuaFastError, RuntimeError):
    """A model could not be exported, or a package could not be loaded."""


class _Heads(torch.nn.Module):
    """forward(x) -> one output per scale (the model pads and crops; see the export functions for
    which sizes each artifact takes)."""

    def __init__(self, model: torch.nn.Module, scales: tuple[int, ...]) -> None:
        super().__init__()
        self.model = model
        self.scales = scales

    def forward(self, x: torch.Tensor):
        out = self.model(x, self.scales)
        return tuple(out[s] for s in self.scales)


def _scale_ints(upscaler, scales) -> tuple[int, ...]:
    """Scales as ``upscale`` reads them (ints, NumPy ints, head names such as "x4" in any case) -> the
    model's sorted ints; ``InputError`` naming its heads for any other. (Before 2026-11-29 a head name
    was refused by ``export_package`` and failed inside torch.export in ``export_onnx``.)"""
    return tuple(sorted({upscaler._scales(s)[1][0] for s in scales}))  # (one at a time: the error names it)


def _export(upscaler, scales, max_batch: int, max_side: int, strict: bool = False):
    from torch.export import Dim

    window = upscaler.config.window_size
    scales = _scale_ints(upscaler, scales or upscaler.config.scales)
    if not is_integer(max_batch) or max_batch < 1:
        raise InputError(f"max_batch must be an int >= 1, got {max_batch!r}")
    if not is_integer(max_side) or max_side < window:
        raise InputError(f"max_side must be an int >= the window size {window} (a padded side is a window "
                         f"multiple), got {max_side!r}")
    # (plain ints: NumPy's reached the package's JSON metadata, after the compile, before 2026-11-29)
    max_batch, max_side = int(max_batch), int(max_side)
    module = _Heads(upscaler.model, scales).eval()
    # A non-square example with batch 2, so no size is specialised on by accident. The graph's bounds
    # hold that example (batch 2, 2 x 3 windows) whatever max_batch and max_side are; the package's
    # runner enforces those (before 2026-11-29 max_batch=1 failed in torch's Dim, and a max_side under
    # 3 windows in torch.export's constraint solver).
    example = torch.randn(2, upscaler.config.in_channels, 2 * window, 3 * window, device=upscaler.device,
                          dtype=upscaler.dtype)
    blocks = max(3, max_side // window)
    dynamic = {"x": {0: Dim("batch", min=1, max=max(2, max_batch)), 2: window * Dim("rows", min=1, max=blocks),
                     3: window * Dim("cols", min=1, max=blocks)}}
    with torch.no_grad():
        try:
            with sides_are_window_multiples():
                return torch.export.export(module, (example,), dynamic_shapes=dynamic, strict=strict), scales, example
        except Exception as exc:
            raise ExportError(f"torch.export failed for the {upscaler.backend} backend: {type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''}") from exc


def metadata(upscaler, scales, max_batch: int, max_side: int) -> dict:
    return {"lua_fast": __version__, "torch": torch.__version__, "config": upscaler.config.to_dict(),
            "precision": upscaler.precision.mode, "mixed_dtype": str(upscaler.precision.compute).removeprefix("torch."),
            "backend": upscaler.backend, "scales": list(scales), "device": upscaler.device.type,
            "max_batch": max_batch, "max_side": max_side}


def export_package(upscaler, path: str | os.PathLike, *, scales=None, max_batch: int = 16,
                   max_side: int = 512) -> str:
    """Export ``upscaler`` to an AOTInductor package at ``path`` (.pt2); returns the path."""
    from torch.export.pt2_archive._package import package_pt2

    path = str(path)
    if not is_package_path(path):
        raise InputError(f"the package path must end in .pt2, got {path}")
    if upscaler.reference_model is None:  # (before 2026-11-29 torch.export failed on the package's runner)
        raise ExportError("export needs the model's weights: load the checkpoint, not a .pt2 package")
    check_output_path(path, option="path")  # (before the compile: a folder or a missing one failed after it)
    ep, scales, example = _export(upscaler, scales, max_batch, max_side)
    max_batch, max_side = int(max_batch), int(max_side)
    try:
        # Inductor reads the TF32 switches where it generates GEMMs itself: those of the package's run.
        with torch.no_grad(), backend_flags(upscaler.precision, upscaler.device):
            files = torch._inductor.aot_compile(ep.module(), (example,), options={"aot_inductor.package": True})
    except Exception as exc:
        raise ExportError(f"AOTInductor failed: {type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''}") from exc
    info = metadata(upscaler, scales, max_batch, max_side)

    def write(tmp: str) -> None:  # (a file object: torch warns about a name not ending in ".pt2")
        with open(tmp, "wb") as f:
            package_pt2(f, aoti_files={MODEL_NAME: files}, extra_files={METADATA: json.dumps(info)})

    # Atomically, as every lua_fast output: before 2026-11-29 an interrupted export left half a
    # package at the path (and an existing one overwritten).
    atomic_write(path, write)
    return path


class PackageRunner:
    """An AOTInductor runner with the backend model's calling convention: ``(latents, scales) -> {s: out}``
    for any sides (pads to the window, crops the outputs, as the backends do)."""

    def __init__(self, runner, scales: tuple[int, ...], window: int, max_batch: int, max_side: int,
                 precision: Precision | None = None, path: str | None = None) -> None:
        self.runner, self.scales, self.window = runner, scales, window
        self.max_batch, self.max_side = max_batch, max_side
        self.precision = precision
        self.path = path  # the package file: a copy (pickle, deepcopy) loads its runner from it again

    # PyTorch's AOTInductor runner cannot be pickled (before 2026-11-29 pickling a package's
    # Upscaler, as multiprocessing's spawn does, raised "cannot pickle 'AOTIModelPackageLoader'"), and
    # deepcopy shared it with a warning. A copy holds the path and opens the package again.
    def __getstate__(self) -> dict:
        if self.path is None:
            raise TypeError("this PackageRunner was built around a runner without its package's path; it cannot be copied")
        return {**self.__dict__, "runner": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.runner = _open_package(Path(self.path))[1]

    def __call__(self, x: torch.Tensor, scales=(2,)) -> dict[int, torch.Tensor]:
        missing = [s for s in scales if s not in self.scales]
        if missing:
            raise InputError(f"this package was exported for scales {self.scales}, not {missing}")
        height, width = x.shape[-2:]
        padded = pad_to_window_multiple(x, self.window)
        if x.shape[0] > self.max_batch or max(padded.shape[-2:]) > self.max_side:
            raise InputError(f"this package takes batches up to {self.max_batch} and sides up to {self.max_side} "
                             f"(padded to the window); got {tuple(x.shape)}")
        # The package's cuBLAS / cuDNN calls read PyTorch's TF32 switches when they run: an fp32
        # package on CUDA sets them as the backends do (cuDNN's default would run its convs in TF32).
        with backend_flags(self.precision, x.device) if self.precision else contextlib.nullcontext():
            outs = dict(zip(self.scales, self.runner(padded.contiguous())))
        return {s: outs[s][..., : s * height, : s * width] for s in scales}


def load_package(path: str | os.PathLike, device=None):
    """A ``.pt2`` written by :func:`export_package` -> :class:`lua_fast.Upscaler`."""
    from . import native
    from .upscaler import Upscaler, parse_device

    native.status()  # the torch backend's ops must be registered before the package loads
    path = Path(path).expanduser()
    if path.is_dir():
        raise ExportError(f"{path} is a directory, not an AOTInductor package")
    if not path.is_file():
        raise FileNotFoundError(f"package not found: {path}")
    info, runner = _open_package(path)
    try:
        config = LUAConfig(**info["config"])
        mixed = getattr(torch, info["mixed_dtype"]) if info["precision"] == "mixed" else torch.bfloat16
        precision = resolve(info["precision"], None, mixed) if info["precision"] != "fp64" else \
            resolve(None, torch.float64)
        limits = tuple(info["scales"]), int(info["max_batch"]), int(info["max_side"]), info["device"], info["backend"]
    except (KeyError, TypeError, ValueError, AttributeError) as exc:  # (a KeyError or TypeError escaped before)
        raise ExportError(f"{path}'s {METADATA} ({_describe(info)}) does not read in lua_fast {__version__}: "
                          f"{type(exc).__name__}: {exc}; export it again with this version") from exc
    target = parse_device(device or info["device"])
    if target.type != info["device"]:
        raise InputError(f"{path} was compiled for {info['device']}, not {target.type}")
    scales, max_batch, max_side, _, backend = limits
    runner = PackageRunner(runner, scales, config.window_size, max_batch, max_side, precision, path=str(path.resolve()))
    up = Upscaler.from_runner(runner, config, target, precision, backend=f"aotinductor:{backend}")
    up.package_info = info
    return up


def _open_package(path: Path):
    """``(metadata, AOTInductor runner)`` of a package file; ``ExportError`` naming what wrote it when
    this lua_fast and torch cannot load it."""
    from torch.export.pt2_archive._package import load_pt2

    try:
        with open(path, "rb") as f:  # (a file object: any case of ".pt2", which torch's own check wants lower)
            contents = load_pt2(f)
        return json.loads(contents.extra_files[METADATA]), contents.aoti_runners[MODEL_NAME]
    except Exception as exc:
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        written = _written_by(path)
        if written is None:
            raise ExportError(f"{path} is not a lua_fast AOTInductor package ({reason})") from exc
        # Its metadata reads, so it is one: say which software wrote it (before 2026-11-29 such a
        # package, e.g. one compiled by another torch release, was "not a lua_fast package").
        raise ExportError(f"{path} is a lua_fast package ({written}) that this lua_fast {__version__} with torch "
                          f"{torch.__version__} cannot load ({reason}); export it again here") from exc


def _describe(info) -> str:
    """"written by lua_fast 0.1.0 with torch 2.11.0" from a package's metadata (what it holds of it)."""
    if not isinstance(info, dict):
        return f"a {type(info).__name__}, not a dict"
    return f"written by lua_fast {info.get('lua_fast', '?')} with torch {info.get('torch', '?')}"


def package_metadata(path: str | os.PathLike) -> dict:
    """A package's ``lua_fast.json`` (config, precision, backend, scales, limits, versions), read
    from the archive alone: no model is loaded (the Ray job's check reads it before the cluster
    starts). ``ExportError`` when the file holds none."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            name = next(n for n in archive.namelist() if n.endswith("/" + METADATA) or n == METADATA)
            info = json.loads(archive.read(name))
    except (OSError, zipfile.BadZipFile, StopIteration, ValueError) as exc:
        raise ExportError(f"{path} is not a lua_fast AOTInductor package ({type(exc).__name__}: "
                          f"{str(exc) or f'no {METADATA}'})") from exc
    if not isinstance(info, dict):
        raise ExportError(f"{path}'s {METADATA} holds a {type(info).__name__}, not lua_fast's metadata")
    return info


def _written_by(path: Path) -> str | None:
    """``_describe`` of a package's metadata, or None when there is none (no lua_fast package)."""
    try:
        return _describe(package_metadata(path))
    except ExportError:
        return None


# ONNX's Conv takes bfloat16 from opset 22 on; before it, a bf16 export wrote a model that no ONNX
# runtime loads ("Type 'tensor(bfloat16)' of input parameter ... of operator (Conv) ... is invalid").
ONNX_OPSET = 18
ONNX_OPSET_BF16 = 22
# A model over protobuf's 2 GiB keeps its weights in an external data file (torch.onnx decides):
# 54.9 M fp32 parameters are 220 MB; configs up to the loader's 2^30 elements can pass it.
ONNX_PROTOBUF_LIMIT = 2**31 - 2**26


def export_onnx(upscaler, path: str | os.PathLike, *, scale: int = 2, opset: int | None = None) -> str:
    """The reference numerics of ``upscaler``'s weights as ONNX: dynamic batch and any H, W >= 1
    (the mirror padding to the window, the shift masks and the crop are computed in the graph), in
    the upscaler's storage dtype (a "mixed" upscaler exports float32: ONNX has no autocast).
    ``opset``: default 18, or 22 for bfloat16 (the first with a bfloat16 Conv). The file is checked
    with ``onnx.checker`` before this returns. Returns the path."""
    try:
        import onnx
        import onnxscript  # noqa: F401  (the dynamo exporter needs it)
    except ImportError as exc:
        raise ExportError(f"ONNX export needs onnx and onnxscript ({exc}): pip install \"lua_fast[onnx]\"") from None
    from torch.export import Dim

    if upscaler.reference_model is None:
        raise ExportError("ONNX export needs the model's weights: load the checkpoint, not a .pt2 package")
    (scale,) = _scale_ints(upscaler, (scale,))
    check_output_path(path, option="path")  # (before the export: a folder or a missing one failed after it)
    bf16 = upscaler.dtype == torch.bfloat16
    least = ONNX_OPSET_BF16 if bf16 else ONNX_OPSET
    if opset is None:
        opset = least
    elif not is_integer(opset):
        raise InputError(f"opset must be an int, got {opset!r}")
    elif opset < least:
        why = ("Conv has no bfloat16 before it; or export a float16 / float32 model" if bf16 else
               "the least torch.onnx's exporter writes")  # (before 2026-11-29 an fp32 model was told "bfloat16")
        raise ExportError(f"a {str(upscaler.dtype).removeprefix('torch.')} model needs ONNX opset >= {least} ({why}), "
                          f"got opset={opset}")
    opset = int(opset)
    window = upscaler.config.window_size
    module = _Heads(upscaler.reference_model, (scale,)).eval()
    # Sides off the window grid: the padding gathers are traced (a window multiple would skip them).
    example = torch.randn(2, upscaler.config.in_channels, 2 * window - 3, 3 * window - 5, dtype=upscaler.dtype,
                          device=upscaler.device)
    dynamic = {"x": {0: Dim("batch"), 2: Dim("height"), 3: Dim("width")}}
    with torch.no_grad():
        try:
            program = torch.onnx.export(module, (example,), dynamo=True, dynamic_shapes=dynamic, opset_version=opset,
                                        input_names=["latents"], output_names=[f"x{scale}"])
        except Exception as exc:
            raise ExportError(f"ONNX export failed: {type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''}") from exc
    def write(tmp: str) -> None:  # checked before it takes the path's name: an invalid model never lands there
        program.save(tmp)
        try:
            onnx.checker.check_model(tmp, full_check=True)
        except onnx.checker.ValidationError as exc:
            raise ExportError(f"the exported ONNX model for {path} is invalid: {str(exc).splitlines()[0]}") from exc

    weights = sum(p.numel() * p.element_size() for p in upscaler.reference_model.parameters())
    if weights < ONNX_PROTOBUF_LIMIT:
        atomic_write(path, write)  # (before 2026-11-29 written in place: an interrupted export left half a file)
    else:  # its weights go to a data file named after the model's: the temporary's name would stay in it
        write(str(path))
    return str(path)
