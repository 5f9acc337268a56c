"""Latent files and safe output paths for the command line.

- ``read_latents``: a tensor from an untrusted safetensors / ``torch.save`` file (told apart by
  content, whatever the suffix); every way it can
  be malformed ends in :class:`InputError` (or ``FileNotFoundError``) naming the file.
- ComfyUI's ``.latent`` files (its SaveLatent / LoadLatent nodes) are read and written in its
  layout: the tensor under ``latent_tensor`` and an empty ``latent_format_version_0`` marker,
  without which ComfyUI's LoadLatent divides the latents by SD 1.x's 0.18215 (so does
  ``read_latents``, to read such a file as ComfyUI does).
- ``check_output_path``: run *before* any computation, so a bad ``--output`` fails at once and
  no command overwrites a file it reads (input, weights) unless forced.
- ``atomic_write``: writes go to a temporary file in the target directory and are renamed over
  the target, so an interrupted write never leaves half a file behind.
"""

from __future__ import annotations

import contextlib
import glob
import math
import os
import stat
import tempfile
from pathlib import Path
from typing import Callable, Iterable

import torch

from .checkpoint import (CHECKPOINT_SUFFIXES, SAFETENSORS_SUFFIXES, TORCH_SUFFIXES, UnreadableFile, deserialise,
                         storage_problem)
from .errors import InputError, UsageError

LATENTS_KEY = "latents"
# ComfyUI's latent files: safetensors named ".latent"; LATENT "samples" are raw VAE latents there.
COMFYUI_SUFFIX = ".latent"
COMFYUI_KEY, COMFYUI_VERSION_KEY = "latent_tensor", "latent_format_version_0"
COMFYUI_LATENT_DICT_KEY = "samples"  # ComfyUI's in-memory LATENT: {"samples": ..., "batch_index", "noise_mask"}
COMFYUI_LEGACY_SCALE = 0.18215  # files without the version marker hold SD 1.x-scaled latents
LATENT_SUFFIXES = CHECKPOINT_SUFFIXES + (COMFYUI_SUFFIX,)  # what lua-fast reads and writes as latents
# A folder's latents (any format under any of these names, read by content): not .bin or .ckpt,
# which a folder beside a model may hold for other things.
FOLDER_SUFFIXES = (".safetensors", ".sft", ".pt", ".pth", COMFYUI_SUFFIX)
GLOB_CHARACTERS = frozenset("*?[")


def latent_files(folder: str | os.PathLike, skip: Iterable[str | os.PathLike] = ()) -> list[str]:
    """The latent files of a folder (``FOLDER_SUFFIXES``, any case; not its subfolders), sorted by
    name, less the files in ``skip`` (the weights, kept beside the latents)."""
    found = sorted(str(p) for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in FOLDER_SUFFIXES)
    return _less(found, skip)


def _less(files: list[str], skip: Iterable[str | os.PathLike]) -> list[str]:
    """``files`` without those that are one of ``skip`` (another name for it included)."""
    skip = [Path(p) for p in skip if Path(p).is_file()]  # (an hf:// path is no local file)
    return [f for f in files if not any(_same_file(Path(f), s) for s in skip)]


def expand_inputs(inputs: Iterable[str], skip: Iterable[str | Path] = ()) -> list[str]:
    """``lua-fast upscale --input`` as given, except that a folder stands for its latent files
    (``latent_files``) and a name with ``*``, ``?`` or ``[`` that is no file stands for the files it
    matches, sorted: the shell expands no pattern in Windows' cmd and PowerShell, nor a quoted one.
    Those two leave out the files in ``skip`` (the weights beside the latents). A folder without
    latent files or a pattern that matches nothing is a :class:`UsageError`."""
    out = []
    for name in inputs:
        path = Path(name)
        if path.is_dir():
            found = latent_files(path)
            what = f"--input {name} is a folder without latents files ({', '.join(FOLDER_SUFFIXES)})"
        elif not path.exists() and GLOB_CHARACTERS & set(name):
            # (glob, not Path.glob: an absolute pattern, and "~" left to the shell as for any name)
            found = sorted(p for p in glob.glob(name) if Path(p).is_file())
            what = f"--input {name}: no file matches this pattern"
        else:
            out.append(name)
            continue
        kept = _less(found, skip)
        if not kept:
            raise UsageError(what + (" (other than the weights)" if found else ""))
        out += kept
    return out


def check_latents_suffix(path: str | Path, option: str = "--output") -> None:
    """Refuse an output name whose suffix promises a format lua-fast does not write (``.npy``,
    ``.npz``, ``.png``): before 2026-11-28 any such name got a ``torch.save`` pickle."""
    suffix = Path(path).suffix.lower()
    if suffix not in LATENT_SUFFIXES:
        raise UsageError(f"{option} {path}: lua-fast writes safetensors ({', '.join(SAFETENSORS_SUFFIXES)}), "
                         f"torch.save files ({', '.join(TORCH_SUFFIXES)}) or ComfyUI latents ({COMFYUI_SUFFIX}), "
                         f"not {suffix or 'a file without a suffix'}")


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


def read_latents(path: str | Path, key: str = LATENTS_KEY) -> torch.Tensor:
    """A latents tensor from ``.safetensors`` (under ``key``, or its only tensor) or ``.pt``.

    A ``.pt`` file may hold a tensor or a dict with the tensor under ``key`` (else under ComfyUI's
    LATENT key ``samples``, or the dict's one tensor); pickles are read with ``weights_only=True``.
    A ComfyUI latent file (a ``latent_tensor`` key) is read as ComfyUI's LoadLatent reads it:
    without its ``latent_format_version_0`` marker, the latents are divided by 0.18215 (float32). Before 2026-11-28 ComfyUI files needed ``--key latent_tensor``
    and a file without the marker was read 5.49x too large.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path} is a directory, not a latents file")
    if not path.exists():
        raise FileNotFoundError(f"latents file not found: {path}")
    try:
        obj = deserialise(path, str(path))  # by content, as checkpoints are: a renamed file still reads
    except Exception as exc:  # truncated, empty, foreign or hostile files: each library has its own errors
        cause = exc.__cause__ or exc  # the library's own error, not the checkpoint wording around it
        reason = str(cause) if isinstance(cause, UnreadableFile) else _first_line(cause)  # plain words as they are
        raise InputError(f"{path} could not be read as a latents file ({reason})") from exc
    tensors = {key: obj} if isinstance(obj, torch.Tensor) else obj
    if not isinstance(tensors, dict):
        raise InputError(f"{path} holds a {type(obj).__name__}, not a tensor or a dict of tensors")
    if key not in tensors:  # ComfyUI's latent file, or its LATENT dict saved with torch.save
        key = next((k for k in (COMFYUI_KEY, COMFYUI_LATENT_DICT_KEY) if k in tensors), key)
    only = [k for k, v in tensors.items() if isinstance(v, torch.Tensor)]
    if key in tensors:
        latents = tensors[key]
    elif len(tensors) == 1 or len(only) == 1:  # (the one tensor beside other values: a list, a string)
        key = next(iter(tensors)) if len(tensors) == 1 else only[0]
        latents = tensors[key]
    else:
        names = sorted(map(str, tensors))
        shown = ", ".join(map(repr, names[:8])) + (f", ... ({len(names)} in all)" if len(names) > 8 else "")
        hint = ("; it is a LUA checkpoint (conv_first.weight, ...), not latents: pass it as --weights"
                if "conv_first.weight" in tensors else " (use --key)")  # (it listed all 556 names before)
        raise InputError(f"{path} has no tensor under key {key!r}; it holds {shown}{hint}")
    if not isinstance(latents, torch.Tensor):
        raise InputError(f"{path} holds a {type(latents).__name__} under key {key!r}, not a tensor")
    problem = storage_problem(latents)
    if problem:
        raise InputError(f"{path}: the latents under key {key!r} are {problem}")
    if key == COMFYUI_KEY and COMFYUI_VERSION_KEY not in tensors:
        if not latents.is_floating_point():
            raise InputError(f"{path}: the latents under key {key!r} are {latents.dtype}, not floating point")
        latents = latents.float() * (1.0 / COMFYUI_LEGACY_SCALE)  # ComfyUI's LoadLatent, op for op
    return latents


def one_latent_as_batch(latents: torch.Tensor, channels: int) -> tuple[torch.Tensor, bool]:
    """``(latents, False)``, or for one latent saved without its batch dimension, (C, H, W) with
    C = ``channels`` (a pipeline's ``latents[0]``), ``(latents[None], True)``: the caller upscales a
    batch of one and writes back ``out[0]``, the rank it read. Other 3-D tensors (FLUX's packed
    (B, seq, 64)) stay as they are, for the upscaler's error that says how to unpack them."""
    if latents.dim() == 3 and latents.shape[0] == channels:
        return latents[None], True
    return latents, False


def output_name(path: str | Path, scale: int) -> str:
    """``<stem>.x<scale>.safetensors``, or ``.latent`` (ComfyUI's layout) for a ``.latent`` input: the
    name ``lua-fast upscale --output-dir`` and the Ray job give an input's output."""
    suffix = COMFYUI_SUFFIX if Path(path).suffix.lower() == COMFYUI_SUFFIX else ".safetensors"
    return f"{Path(path).stem}.x{scale}{suffix}"


def _umask() -> int:
    """The process's umask. Linux shows it in /proc (read-only); elsewhere it can only be read by
    setting it and setting it back (a moment in which another thread's new files would get 0o022)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _open_mode(path: Path) -> int:
    """The permission bits ``open(path, "w")`` would leave: an existing file keeps its own, a new one
    gets 0o666 less the umask (0o644 under the usual 0o022)."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode) & 0o777
    except (FileNotFoundError, NotADirectoryError):
        return 0o666 & ~_umask()


def written_shape(path: str | Path) -> tuple[int, ...] | None:
    """The shape of the latents in an output lua-fast wrote (safetensors or ``.latent``: the largest
    tensor, a ``.latent`` file holding a marker beside it), read from the header alone; None if there
    is no such file or it does not read (outputs are written atomically: one that reads is whole)."""
    from safetensors import safe_open

    if not Path(path).is_file():
        return None
    try:
        with safe_open(str(path), "pt") as f:
            shape = max((tuple(f.get_slice(k).get_shape()) for k in f.keys()), key=math.prod, default=None)
    except Exception:  # noqa: BLE001 - not a readable safetensors file (torch.save outputs are not read)
        return None
    return shape if shape and math.prod(shape) else None


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it over ``path``.

    The result has the permissions ``open(path, "w")`` would give it (the temporary file is created
    0o600, private; before 2026-11-29 every output kept that mode, so other users, e.g. a ComfyUI
    or web service, could not read it). A symbolic link is written through, like ``open``: its
    target is replaced and the link stays."""
    path = Path(os.path.realpath(path)) if os.path.islink(path) else Path(path)
    mode = _open_mode(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, mode)  # after the write: a read-only mode would refuse it
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_latents(path: str | Path, latents: torch.Tensor, key: str = LATENTS_KEY) -> None:
    """Write ``{key: latents}`` as safetensors (a ``.safetensors`` or ``.sft`` suffix) or a
    ``torch.save`` file, atomically. A ``.latent`` file gets ComfyUI's layout whatever ``key``
    says: ``latent_tensor`` and the ``latent_format_version_0`` marker (without the marker,
    ComfyUI's LoadLatent would divide the latents by 0.18215)."""
    latents = latents.detach().cpu().contiguous()
    suffix = Path(path).suffix.lower()
    if suffix == COMFYUI_SUFFIX:
        from safetensors.torch import save_file

        tensors = {COMFYUI_KEY: latents, COMFYUI_VERSION_KEY: torch.zeros(0, dtype=torch.float32, device="cpu")}
        atomic_write(path, lambda tmp: save_file(tensors, tmp))
    elif suffix in SAFETENSORS_SUFFIXES:
        from safetensors.torch import save_file

        atomic_write(path, lambda tmp: save_file({key: latents}, tmp))
    else:
        atomic_write(path, lambda tmp: torch.save({key: latents}, tmp))


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def check_output_path(path: str | Path, *, reads: Iterable[tuple[str, str | Path]] = (), force: bool = False,
                      option: str = "--output") -> Path:
    """Refuse an output path that cannot be written, or that is a file this command reads.

    ``reads``: (what, path) pairs such as ("--input", "z.pt"). ``force`` allows overwriting them.
    """
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{option} {path} is a directory; give a file path")
    parent = path.parent
    if not parent.is_dir():
        raise UsageError(f"{option} {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise UsageError(f"{option} {path}: directory {parent} is not writable")
    if path.exists() and not os.access(path, os.W_OK):  # (the rename would replace it regardless)
        raise UsageError(f"{option} {path} is read-only; it stays as it is (make it writable to replace it, "
                         "or choose another path)")
    for what, read in reads:
        if _same_file(path, Path(read)) and not force:
            raise UsageError(
                f"{option} {path} is the same file as {what}; writing it would destroy what this command "
                "reads (choose another path, or pass --force to overwrite it)"
            )
    return path
