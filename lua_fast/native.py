"""Loads lua_fast's native extension (``lua_fast._C``, built from csrc/) once.

Never raises: when the library is missing, broken or disabled, :func:`status`
says why and every op falls back to its pure-PyTorch implementation.
``LUA_FAST_DISABLE_NATIVE=1`` simulates a missing extension.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from . import env

DISABLE_ENV = "LUA_FAST_DISABLE_NATIVE"


@dataclass(frozen=True)
class NativeStatus:
    loaded: bool
    reason: str | None  # why it is not loaded (None when loaded)
    path: str | None = None
    cuda: bool = False  # whether the loaded library has CUDA kernels


_status: NativeStatus | None = None
_lock = threading.Lock()
_on_load = []  # callbacks run once after the library loads (fake-kernel registration)


def _has_kernel(op: str, key: str) -> bool:
    try:
        return bool(torch._C._dispatch_has_kernel_for_dispatch_key(op, key))
    except Exception:  # private API: treat failure as "unknown, no"
        return False


def _built_for_another_python(package: Path = Path(__file__).resolve().parent) -> list[str]:
    """Names of ``_C`` libraries in ``package`` that this interpreter cannot import (an in-place
    build by another Python version, or a library carried from another machine)."""
    return sorted(p.name for p in package.glob("_C.*") if p.suffix in (".so", ".pyd")
                  and p.name not in {"_C" + suffix for suffix in importlib.machinery.EXTENSION_SUFFIXES})


def _load() -> NativeStatus:
    if env.flag(DISABLE_ENV, False):
        return NativeStatus(False, f"disabled by {DISABLE_ENV}={os.environ[DISABLE_ENV]}")
    spec = importlib.util.find_spec("lua_fast._C")
    if spec is None or not spec.origin:
        other = _built_for_another_python()
        if other:
            return NativeStatus(False, f"built for another Python ({', '.join(other)} beside the package; this "
                                       f"interpreter loads {importlib.machinery.EXTENSION_SUFFIXES[0]!r}): "
                                       "reinstall with this Python")
        return NativeStatus(
            False,
            "not built (installed with LUA_FAST_NO_NATIVE_BUILD=1, without torch at build time, or the "
            "build failed: reinstall with LUA_FAST_REQUIRE_NATIVE=1 to see the compiler error)",
        )
    try:
        torch.ops.load_library(spec.origin)
    except Exception as exc:  # ABI mismatch with the installed torch, missing symbols, ...
        return NativeStatus(False, f"failed to load {spec.origin}: {exc}".strip(), spec.origin)
    mismatch = _built_against_another_torch()
    if mismatch:
        return NativeStatus(False, f"{mismatch}: reinstall lua_fast with this torch ({REBUILD})", spec.origin)
    return NativeStatus(True, None, spec.origin, _has_kernel("lua_fast::window_partition", "CUDA"))


REBUILD = "in the lua_fast source tree: pip install --no-build-isolation -e ."


def _torch_release() -> tuple[int, int]:
    major, minor = torch.__version__.split(".")[:2]
    return int(major), int(minor)


def _built_against_another_torch() -> str | None:
    """Why the loaded library must not run with this torch, or None. PyTorch's C++ ABI may change
    between releases: a library built against torch 2.13 loaded under 2.14 (a torch upgraded after
    the install) and ran until 2026-11-29, with nothing to say its calls were sound."""
    try:
        built = tuple(torch.ops.lua_fast.built_against())
    except (AttributeError, RuntimeError):  # a library from before the build record existed
        return "the library predates lua_fast's record of the torch it was built against"
    if built != _torch_release():
        return (f"built against torch {'.'.join(map(str, built))}, but this is torch {torch.__version__} "
                "(PyTorch's C++ ABI may change between releases)")
    return None


def status() -> NativeStatus:
    """Load the library on first use and report the outcome."""
    global _status
    if _status is None:
        with _lock:
            if _status is None:
                result = _load()
                if result.loaded:
                    for callback in _on_load:
                        callback()
                _status = result
    return _status


def on_load(callback) -> None:
    """Run ``callback`` once the library is loaded (now, if it already is)."""
    _on_load.append(callback)
    if _status is not None and _status.loaded:
        callback()


def unavailable_reason(device: torch.device) -> str | None:
    """None if the native ops can run on ``device``, else why not."""
    st = status()
    if not st.loaded:
        return f"native extension {st.reason}"
    if device.type == "cuda" and not st.cuda:
        return "native extension was built without CUDA (torch had no CUDA or nvcc was not found at build time)"
    if device.type not in ("cpu", "cuda"):
        return f"native extension has no kernels for device type {device.type!r}"
    return None
