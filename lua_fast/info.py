"""What this installation can do: versions, devices, backends and why not."""

from __future__ import annotations

import importlib
import platform
import sys

import torch

from . import dispatch, native
from ._version import __version__


def _module_version(name: str) -> str | None:
    try:
        return getattr(importlib.import_module(name), "__version__", "unknown")
    except Exception:  # an optional dependency may be missing or broken
        return None


def devices() -> list[torch.device]:
    found = [torch.device("cpu")]
    if torch.cuda.is_available():
        found += [torch.device("cuda", i) for i in range(torch.cuda.device_count())]
    return found


def info() -> dict:
    """A JSON-serialisable report of versions, devices and backend availability."""
    cuda = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            cuda.append({"index": i, "name": props.name, "capability": f"{props.major}.{props.minor}",
                         "memory_gib": round(props.total_memory / 2**30, 1)})
    backends = {}
    for device in devices():
        for dtype in (torch.float32, torch.bfloat16):
            for name, reason in dispatch.availability(device, dtype).items():
                backends.setdefault(name, {})[f"{device}/{str(dtype).removeprefix('torch.')}"] = (
                    "available" if reason is None else reason
                )
    return {
        "lua_fast": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "triton": _module_version("triton"),
        "numpy": _module_version("numpy"),
        "safetensors": _module_version("safetensors"),
        "cuda_devices": cuda,
        "native_extension": _native_report(),
        "ops": {
            "window_partition / window_merge / window_mask": {
                str(d): "native" if native.unavailable_reason(d) is None
                else f"PyTorch fallback ({native.unavailable_reason(d)})"
                for d in devices()
            }
        },
        "backends": backends,
        "auto_backend": {
            str(d): _auto_name(d) for d in devices()
        },
    }


def _native_report() -> dict:
    st = native.status()
    return {"loaded": st.loaded, "reason": st.reason, "path": st.path, "cuda_kernels": st.cuda}


def _auto_name(device: torch.device) -> str:
    try:
        return dispatch.select_backend("auto", device, torch.float32).name
    except Exception as exc:
        return f"none ({exc})"
