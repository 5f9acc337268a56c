"""Reading and validating LUA checkpoints in the released format.

Accepted sources: a ``torch.save``d dict holding the state dict under ``params_ema``
(preferred) or ``params`` (BasicSR style), a plain ``torch.save``d state dict, a
``.safetensors`` file (the format is read from the content, not the suffix), the bytes of
either, an open binary file object, or an in-memory mapping of any of these. Pickles are read
with ``weights_only=True``.

Validation is strict: every learned tensor must be present with the shape the
inferred config implies, nothing unexpected may be present, and the derived
buffers (``relative_position_index``, training-size ``attn_mask``) are optional but,
when present, must equal what the spec derives.

Checkpoints are untrusted input. Before anything is computed from a tensor, each must be a
dense CPU/CUDA tensor of a supported dtype whose storage really holds every element its shape
declares (no stride-0 expansions or overlapping views: a few KB of file must not turn into
GB of memory), and the inferred config must stay within :data:`MAX_WINDOW` and
:data:`MAX_ELEMENTS`; derived buffers are built only after those checks.
"""

from __future__ import annotations

import io
import math
import os
import re
from pathlib import Path
from typing import Any, BinaryIO, Mapping

import torch

from .config import LUAConfig
from .errors import CheckpointError, ConfigError
from .reference import windows

# File names lua_fast reads (either format under any of them: the content decides) and writes
# (safetensors under the first two, torch.save under the rest).
SAFETENSORS_SUFFIXES = (".safetensors", ".sft")
TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
CHECKPOINT_SUFFIXES = SAFETENSORS_SUFFIXES + TORCH_SUFFIXES
PACKAGE_SUFFIX = ".pt2"  # an AOTInductor package (lua_fast.export): compiled code, no weights to read


def is_package_path(path) -> bool:
    """Whether ``path`` names an exported AOTInductor package (``.pt2``, any case)."""
    return isinstance(path, (str, os.PathLike)) and os.fspath(path).lower().endswith(PACKAGE_SUFFIX)
WRAPPER_KEYS = ("params_ema", "params")
# Prefixes that wrappers add to every key of a module's state dict: DataParallel / DDP ("module.",
# which BasicSR's own loader strips too) and torch.compile's OptimizedModule ("_orig_mod.").
FRAMEWORK_PREFIXES = ("module.", "_orig_mod.")
# lua_fast's own backend modules (``Upscaler.model``) hold the reference model as ``module`` (the
# eager runner) and ``model`` (the torch and triton backends): their state dicts carry ``module.``,
# ``module.model.`` or ``model.``. Such a chain of these names before the released keys is dropped
# too (``model.`` only before them: "model.net." stays a hint, _prefix_hint).
WRAPPER_ATTRIBUTES = ("module", "_orig_mod", "model")
# Limits on untrusted checkpoints (the released model: window 16, 54.9 M elements).
MAX_WINDOW = 32  # the derived (N, N) index and (nW, N, N) masks grow as window^4
MAX_ELEMENTS = 1 << 30  # declared elements of all tensors together (~20x the released model)
WEIGHT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
INDEX_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)
DERIVED_SUFFIXES = (".attn.relative_position_index", ".attn_mask")
_MAX_LISTED = 12


def is_derived(key: str) -> bool:
    return key.endswith(DERIVED_SUFFIXES)


def _listing(items: list) -> str:
    shown = ", ".join(map(str, items[:_MAX_LISTED]))
    return shown + (f", ... ({len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else "")


# ----------------------------------------------------------------------- reading
def sniff_format(head: bytes) -> str | None:
    """The serialisation a file's first bytes announce: "safetensors", "torch" or None.

    Files are read by what they hold, not by their suffix: ``.sft``, ``.ckpt`` and ``.bin`` are
    common names for both kinds (ComfyUI's FLUX files are ``.sft`` safetensors), and a renamed
    file must not be handed to the wrong reader with a misleading error.
    """
    # safetensors first: its 8-byte header length may itself start with 0x80.
    if len(head) >= 9 and head[8:9] == b"{" and 1 < int.from_bytes(head[:8], "little") < 1 << 40:
        return "safetensors"  # a little-endian header length, then the JSON header
    if head.startswith(b"PK\x03\x04") or head.startswith(b"\x80"):
        return "torch"  # torch.save's zip archive, or its legacy pickle format
    return None


class UnreadableFile(ValueError):
    """Why a file holds no readable tensors, in plain words (the cause of the CheckpointError a
    reader raises; the latents reader quotes it as it stands)."""


def foreign_content(head: bytes) -> str | None:
    """Why a file whose first bytes are ``head`` holds no tensors, when its start tells: what a failed
    download or a clone without Git LFS leaves behind. None when it may be a tensor file."""
    if not head:
        return "the file is empty (0 bytes; an interrupted download or copy?)"
    if head.startswith(b"version https://git-lfs"):
        return ("it is a Git LFS pointer, not the tensors: fetch the file itself (`git lfs pull` in the "
                "clone, or download it)")
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head", b"<body")):
        return ("it is a web page, not a tensor file (a download link that returned HTML? On the Hugging "
                "Face Hub download .../resolve/main/<file>, not .../blob/main/<file>)")
    return None


def _looks_truncated(message: str) -> bool:
    """The readers' words for a file cut short (torch's zip reader, safetensors' header check:
    "MetadataIncompleteBuffer" up to 0.4, "incomplete metadata, file not fully covered" after)."""
    return any(words in message for words in ("central directory", "incomplete metadata", "not fully covered",
                                              "MetadataIncompleteBuffer"))


def _unreadable(origin: str, reason: str, exc: Exception | None = None) -> CheckpointError:
    cause = UnreadableFile(reason)
    cause.__cause__ = exc
    error = CheckpointError(f"{origin}: {reason}")
    error.__cause__ = cause
    return error


def deserialise(source: Path | bytes, origin: str) -> Any:
    """Deserialise a tensor file (a path) or its bytes, in the format its first bytes announce:
    safetensors, or ``torch.save`` read with ``weights_only=True``. Checkpoints and latent files.

    Content that is recognisably not a tensor file (empty, a Git LFS pointer, a web page) is named
    as such before either reader runs, and a truncated file as truncated: the readers' own errors
    ("EOFError", "KeyError: 101", "failed finding central directory") said only that before
    2026-11-29."""
    if isinstance(source, Path):
        with open(source, "rb") as f:
            head = f.read(64)
        size = source.stat().st_size
    else:
        head, size = source[:64], len(source)
    foreign = foreign_content(head)
    if foreign:
        raise _unreadable(origin, foreign)
    kind = sniff_format(head)
    if kind == "safetensors":
        from safetensors.torch import load, load_file

        try:
            return load_file(str(source), device="cpu") if isinstance(source, Path) else load(source)
        except Exception as exc:  # safetensors raises its own error types
            if _looks_truncated(str(exc)):
                raise _unreadable(origin, f"the safetensors file looks truncated ({size} bytes; an interrupted "
                                          f"download or copy?): {exc}", exc)
            raise CheckpointError(f"{origin} is not a readable safetensors file: {exc}") from exc
    try:
        # A file object, not the path: torch >= 2.13 hands any path ending in ".safetensors" to
        # safetensors whatever it holds.
        with open(source, "rb") if isinstance(source, Path) else io.BytesIO(source) as f:
            return torch.load(f, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        if kind is None:  # no format's signature, and torch.load could not read it either (safetensors'
            # own error for such a file, whatever its name, was "header too large")
            raise _unreadable(origin, f"it is neither a safetensors nor a torch.save file (it begins "
                                      f"{head[:16]!r})", exc)
        if _looks_truncated(first):
            raise _unreadable(origin, f"the torch.save file looks truncated ({size} bytes; an interrupted "
                                      f"download or copy?): {first.split('. ')[0]}", exc)
        pickled = _PICKLED_GLOBAL.search(str(exc))
        if pickled:
            raise _unreadable(origin, _pickled_objects(pickled.group(1)), exc)
        raise CheckpointError(
            f"{origin} could not be read as a weights-only PyTorch checkpoint ({type(exc).__name__}: "
            f"{_ANSI.sub('', first)}). lua_fast only loads tensors, never "
            "arbitrary pickled objects; convert other formats to .safetensors."
        ) from exc


# torch's weights-only unpickler names the first class or function a file needs (torch 2.4 to 2.14:
# "Unsupported global: GLOBAL pkg.module.Name was not an allowed global by default"); its message
# also carries terminal escapes (bold) that a log or ComfyUI's error box shows as "[1m".
_PICKLED_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _pickled_objects(name: str) -> str:
    """Why a torch.save file that needs ``name`` to unpickle is refused, and what to do instead. Before
    2026-11-29 torch's own first line came through ("Weights only load failed. This file can still be
    loaded, to do so you have two options, [1mdo those steps only if ..."), the options cut off."""
    return (f"it holds pickled Python objects, not only tensors: loading it needs {name} (a whole model "
            "or a training checkpoint saved with torch.save?). lua_fast reads torch.save files with "
            "weights_only=True and never runs a file's code. If you trust the file, load it yourself with "
            "torch.load(path, weights_only=False) and keep only its tensors: a state dict (or the module) "
            "can go to lua_fast.load, any tensors to a .safetensors file")


def read_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a checkpoint file into a flat state dict (on the CPU, dtype as stored).

    The format (safetensors or ``torch.save``) is read from the file's first bytes, whatever its
    suffix."""
    path = Path(path).expanduser()  # "~/models/lua_flux.pth" as a shell would read it
    if path.is_dir():
        # (a downloaded hub repository is a folder: name the file to pass)
        inside = sorted(p.name for p in path.iterdir() if p.is_file() and p.suffix.lower() in CHECKPOINT_SUFFIXES)
        hint = f"; it holds {', '.join(inside[:5])}{', ...' if len(inside) > 5 else ''}: pass one of them" if inside else ""
        raise CheckpointError(f"{path} is a directory, not a checkpoint file{hint}")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}{_repo_id_hint(str(path))}")
    return unwrap(deserialise(path, str(path)), origin=str(path))


def _repo_id_hint(name: str) -> str:
    """For a missing path shaped like a Hub repository id ("owner/repo"): how to name a file in it."""
    parts = name.split("/")
    if len(parts) == 2 and all(parts) and not name.startswith((".", "~")) and not Path(name).suffix:
        return f" (a Hugging Face Hub repository? name a file in it: hf://{name}/<file>)"
    return ""


def read_checkpoint_stream(source: bytes | bytearray | memoryview | BinaryIO) -> dict[str, torch.Tensor]:
    """A checkpoint held in memory (``bytes``) or in an open binary file object (``read()`` from its
    current position: an ``open(..., "rb")`` file, ``io.BytesIO``, an HTTP response body), in
    either format."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data, origin = bytes(source), f"the given {type(source).__name__}"
    else:
        data, origin = source.read(), f"the given {type(source).__name__}"
        if not isinstance(data, (bytes, bytearray)):
            raise CheckpointError(f"{origin} returned {type(data).__name__} from read(); open the file in binary mode ('rb')")
        data = bytes(data)
    if not data:
        raise CheckpointError(_position_hint(source, origin) or f"{origin} is empty")
    return unwrap(deserialise(data, origin), origin=origin)


def _position_hint(source, origin: str) -> str:
    """Why a file object read nothing: it stood at its end (``torch.save(sd, buf)`` leaves a BytesIO
    there; before 2026-11-29 the error only said "is empty")."""
    try:
        position = source.tell()
    except Exception:  # bytes, a pipe or a response body: no position to report
        return ""
    if not isinstance(position, int) or position <= 0:
        return ""
    return (f"{origin} has nothing left to read: it stands at byte {position}, its end (where a write such "
            "as torch.save(sd, buf) leaves it); call .seek(0) before loading")


def unwrap(obj: Any, origin: str = "state dict") -> dict[str, torch.Tensor]:
    """Return the flat state dict inside a checkpoint object (``params_ema`` > ``params`` > itself)."""
    if isinstance(obj, Mapping):
        for key in WRAPPER_KEYS:
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"{origin} is not a LUA checkpoint: expected a dict of tensors (optionally under "
            f"'params_ema' or 'params'), found a {type(obj).__name__}"
        )
    not_tensors = [k for k, v in obj.items() if not isinstance(v, torch.Tensor) or not isinstance(k, str)]
    if not_tensors or not obj:
        raise CheckpointError(
            f"{origin} is not a LUA checkpoint: expected a dict of tensors (optionally under "
            f"'params_ema' or 'params'); "
            + (f"entries that are not tensors: {_listing([str(k) for k in not_tensors])}" if obj else "it is empty")
            + _nested_hint(obj)
        )
    return strip_framework_prefixes(obj)


def _nested_hint(obj: Mapping) -> str:
    """Where the weights may be in a training checkpoint (Lightning's ``state_dict``, a trainer's
    ``model`` / ``net_g`` / ``ema``): the entries that hold dicts of tensors, and how to load one."""
    nested = {k: v for k, v in obj.items() if isinstance(v, Mapping)
              and any(isinstance(t, torch.Tensor) for t in v.values())}
    if not nested:
        return ""
    counts = "; ".join(f"{k!r} holds {sum(isinstance(t, torch.Tensor) for t in v.values())} tensors"
                       for k, v in list(nested.items())[:_MAX_LISTED])
    key = next(iter(nested))
    prefix = _wrapper_prefix(nested[key])
    read = f"sd = torch.load(path, weights_only=True)[{key!r}]; "
    weights = (read + "lua_fast.load(sd)" if prefix is None or _dropped(prefix) else
               read + f"lua_fast.load({{k.removeprefix({prefix!r}): v for k, v in sd.items()}})")
    return f" ({counts}: a training checkpoint? Load the model's weights from it, e.g. {weights})"


def strip_framework_prefixes(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop a ``FRAMEWORK_PREFIXES`` prefix that every key carries (repeatedly: a compiled DDP
    model's keys start with ``module._orig_mod.``), then a chain of ``WRAPPER_ATTRIBUTES`` before
    the released keys (``up.model.state_dict()``: ``module.model.``). A prefix only some keys carry
    stays, and the strict key check reports it."""
    state_dict = dict(state_dict)
    while True:
        prefix = next((p for p in FRAMEWORK_PREFIXES if all(k.startswith(p) for k in state_dict)), None)
        if prefix is None:
            break
        state_dict = {k[len(prefix):]: v for k, v in state_dict.items()}
    prefix = _wrapper_prefix(state_dict)
    if _dropped(prefix):
        state_dict = {k[len(prefix):]: v for k, v in state_dict.items()}
    return state_dict


def _dropped(prefix: str | None) -> bool:
    """Whether ``load`` drops this prefix of every key itself (a chain of WRAPPER_ATTRIBUTES)."""
    return bool(prefix) and all(name in WRAPPER_ATTRIBUTES for name in prefix.split(".")[:-1])


def _wrapper_prefix(state_dict: Mapping[str, torch.Tensor]) -> str | None:
    """The prefix every key carries when the keys seem to sit under one (a training wrapper's
    attribute: ``model.``, ``net.``), else None."""
    anchors = [k for k in state_dict if isinstance(k, str) and k.endswith(".conv_first.weight")]
    if len(anchors) != 1:
        return None
    prefix = anchors[0][: -len("conv_first.weight")]
    return prefix if all(isinstance(k, str) and k.startswith(prefix) for k in state_dict) else None


def _prefix_hint(state_dict: Mapping[str, torch.Tensor]) -> str:
    """A hint when every key seems to sit under one other prefix (a training wrapper's attribute)."""
    prefix = _wrapper_prefix(state_dict)
    if prefix is None:
        return ""
    return (f"; every key starts with {prefix!r} (a training wrapper's attribute?): load "
            f"{{k.removeprefix({prefix!r}): v for k, v in state_dict.items()}}")


# ------------------------------------------------------------ untrusted tensors
def storage_problem(t: torch.Tensor) -> str | None:
    """Why ``t`` cannot be trusted as a plain tensor, or None.

    Refuses other layouts (sparse, quantized, ...), tensors without data (meta), and tensors
    whose storage is smaller than their shape implies or whose elements overlap (stride 0
    expansions), which would make every later pass over them materialise far more memory
    than the file holds.
    """
    if t.layout != torch.strided:
        return f"layout {t.layout} (only dense tensors are supported)"
    if t.is_quantized:
        return "a quantized tensor"
    if t.device.type == "meta":
        return "a meta tensor (it holds no data)"
    if t.numel() == 0:
        return None
    dims = sorted((st, sz) for st, sz in zip(t.stride(), t.shape) if sz > 1)
    span = 1  # elements covered so far by the faster-moving dims
    for stride, size in dims:
        if stride < span:
            return f"overlapping or expanded strides {t.stride()} for shape {tuple(t.shape)}"
        span = stride * size
    extent = t.storage_offset() + sum((sz - 1) * st for st, sz in zip(t.stride(), t.shape)) + 1
    if t.untyped_storage().nbytes() < extent * t.element_size():
        return f"a storage of {t.untyped_storage().nbytes()} bytes, smaller than its shape {tuple(t.shape)} needs"
    return None


def check_tensors(state_dict: Mapping[str, torch.Tensor]) -> None:
    """Raise :class:`CheckpointError` for tensors that are not plain dense data of a supported dtype."""
    bad = []
    for key, value in state_dict.items():
        problem = storage_problem(value)
        if problem is None and value.dtype not in WEIGHT_DTYPES + INDEX_DTYPES:
            problem = f"dtype {value.dtype} (weights must be float16/bfloat16/float32/float64)"
        if problem:
            bad.append(f"{key}: {problem}")
    if bad:
        raise CheckpointError(f"unsupported tensors in the checkpoint: {_listing(bad)}")


def check_window(config: LUAConfig) -> None:
    """Refuse windows whose derived buffers would be huge (checked before any is built)."""
    if config.window_size > MAX_WINDOW:
        raise CheckpointError(
            f"window size {config.window_size} exceeds lua_fast's limit of {MAX_WINDOW} (released: 16); "
            f"its derived buffers alone would need {config.window_size ** 4 * 8 / 2**30:.1f} GiB per block"
        )


def check_size(config: LUAConfig, expected: Mapping[str, tuple[int, ...]]) -> None:
    """Refuse configs that declare more elements than :data:`MAX_ELEMENTS`."""
    total = sum(math.prod(shape) for shape in expected.values())
    if total > MAX_ELEMENTS:
        raise CheckpointError(
            f"the configuration these keys imply ({config}) declares {total:,} elements, over lua_fast's "
            f"limit of {MAX_ELEMENTS:,} (the released model has 54.9 M)"
        )


# -------------------------------------------------------------------- validation
def expected_shapes(config: LUAConfig) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the released-format state dict for ``config`` (derived buffers included)."""
    from .reference import LUA

    with torch.device("meta"):
        model = LUA(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def derived_buffers(config: LUAConfig) -> dict[str, torch.Tensor]:
    """The derived buffers the spec defines for ``config``, computed on the CPU."""
    # On the CPU whatever torch.set_default_device says (compared with the checkpoint's CPU tensors).
    cpu = torch.device("cpu")
    index = windows.relative_position_index(config.window_size, device=cpu)
    size, window = config.img_size, config.window_size
    masks = {}  # one tensor per shift value, shared by the blocks that use it
    out = {}
    for i, depth in enumerate(config.depths):
        for j in range(depth):
            prefix = f"layers.{i}.residual_group.blocks.{j}."
            out[prefix + "attn.relative_position_index"] = index
            shift = config.shift_size(j)
            if shift:
                if shift not in masks:
                    masks[shift] = windows.build_shift_mask(size, size, window, shift, device=cpu)
                out[prefix + "attn_mask"] = masks[shift]
    return out


def validate_state_dict(state_dict: Mapping[str, torch.Tensor], config: LUAConfig | None = None):
    """Check ``state_dict`` against ``config`` (inferred when omitted).

    Returns ``(config, complete_state_dict)`` where missing derived buffers are filled
    in. Raises :class:`CheckpointError` listing missing / unexpected keys, shape
    mismatches (key, expected, found), wrong dtypes, non-finite weights, and
    derived buffers that disagree with the spec; refuses expanded/overlapping tensors and
    configs over the untrusted-input limits before building anything from them.
    """
    check_tensors(state_dict)
    if config is None:
        try:
            config = LUAConfig.from_state_dict(state_dict)
        except ConfigError as exc:
            raise CheckpointError(f"not a LUA state dict in the released format: {exc}{_prefix_hint(state_dict)}") from exc
    check_window(config)  # before expected_shapes builds a (meta) model of it
    expected = expected_shapes(config)
    check_size(config, expected)

    missing = [k for k in expected if k not in state_dict and not is_derived(k)]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        (k, expected[k], tuple(state_dict[k].shape))
        for k in expected
        if k in state_dict and tuple(state_dict[k].shape) != expected[k]
    ]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing keys: {_listing(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_listing(unexpected)}")
        if mismatched:
            parts.append(
                "shape mismatches (key: expected, found): "
                + _listing([f"{k}: {tuple(e)}, {tuple(f)}" for k, e, f in mismatched])
            )
        raise CheckpointError(
            f"state dict does not match the LUA layout of {config}: " + "; ".join(parts),
            missing=missing,
            unexpected=unexpected,
            mismatched=mismatched,
        )

    wrong_dtype = [
        f"{k} ({v.dtype})"
        for k, v in state_dict.items()
        if (v.is_floating_point() == k.endswith("relative_position_index")) or v.is_complex()
    ]
    if wrong_dtype:
        raise CheckpointError(
            "wrong tensor dtypes (weights must be floating point, relative_position_index integer): "
            + _listing(wrong_dtype)
        )
    non_finite = [k for k, v in state_dict.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if non_finite:
        raise CheckpointError(f"weights contain NaN or Inf: {_listing(non_finite)}")

    derived = derived_buffers(config)
    inconsistent = [
        k for k, v in derived.items() if k in state_dict and not torch.equal(state_dict[k].to(v.dtype).cpu(), v)
    ]
    if inconsistent:
        raise CheckpointError(
            "derived buffers disagree with the spec (relative position index / shift mask for "
            f"window {config.window_size}, training size {config.img_size}): {_listing(inconsistent)}"
        )
    # The spec's own derived buffers replace the checkpoint's (equal in value, checked above): a
    # uint8 index kept as such would index as a boolean mask (PyTorch's legacy byte-mask rule).
    return config, {**state_dict, **derived}
