"""What this installation can do: versions, devices, backends and why not."""

from __future__ import annotations

import importlib
import os
import platform
import sys

import torch

from . import dispatch, host_memory, native
from .precision import PRECISIONS, cpu_native_kernels
from ._version import __version__


ENV_VARS = ("LUA_FAST_BACKEND", "LUA_FAST_DISABLE_NATIVE", "LUA_FAST_DISABLE_TRITON", "LUA_FAST_AUTOTUNE",
            "LUA_FAST_AUTOTUNE_CACHE", "LUA_FAST_PDL", "LUA_FAST_FP32_DOTS", "LUA_FAST_FUSED_MLP",
            "LUA_FAST_FUSED_ATTN_PROJ", "LUA_FAST_TRITON_GEMMS", "TRITON_INTERPRET", "TRITON_CACHE_DIR")


# The releases this version was tested against (both ends included). Outside them it may still
# work, but Triton's autotuner/JIT internals and torch's triton_op API, which the launch path
# leans on, change between releases: `lua-fast info` says so instead of leaving it to a traceback.
TESTED_VERSIONS = {"torch": ((2, 11), (2, 14)), "triton": ((3, 6), (3, 9))}


def _major_minor(version: str) -> tuple[int, int] | None:
    parts = version.split("+")[0].split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return None


def version_check(name: str, version: str | None) -> str | None:
    """None when ``version`` of ``name`` lies in TESTED_VERSIONS (or is not installed), else why
    it is outside: ``version_check("triton", "3.10.0")`` -> "newer than the tested 3.6-3.9"."""
    if version is None or name not in TESTED_VERSIONS:
        return None
    low, high = TESTED_VERSIONS[name]
    tested = f"{low[0]}.{low[1]}-{high[0]}.{high[1]}"
    found = _major_minor(version)
    if found is None:
        return f"version {version!r} not understood; tested {tested}"
    if found < low:
        return f"older than the tested {tested}"
    if found > high:
        return f"newer than the tested {tested}"
    return None


def _module_version(name: str) -> str | None:
    try:
        return getattr(importlib.import_module(name), "__version__", "unknown")
    except Exception:  # an optional dependency may be missing or broken
        return None


def cpu_name() -> str:
    """The CPU's model name (``platform.processor()`` is empty on Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name") and ":" in line:
                    return line.split(":", 1)[1].strip() or "cpu"
    except OSError:
        pass
    return platform.processor() or "cpu"


def cpu_report() -> dict:
    """The CPU by name, the instruction set PyTorch's CPU kernels use, its thread count, the RAM this
    process can still take (None where unknown: tile="auto"'s CPU budget is 75% of it), its cgroup
    CPU quota (None: none), and whether it has native bf16 / fp16 kernels."""
    return {"name": cpu_name(), "capability": torch.backends.cpu.get_cpu_capability(),
            "threads": torch.get_num_threads(), "memory_available": host_memory.cpu_memory_available(),
            "quota": host_memory.cpu_quota(),  # a container's CPU limit: PyTorch's threads ignore it
            # bf16 / fp16 without native kernels run PyTorch's fallback loops, ~40x slower than fp32
            "native_kernels": {"bf16": cpu_native_kernels(torch.bfloat16),
                               "fp16": cpu_native_kernels(torch.float16)}}


def _cudnn_version() -> int | None:
    try:
        return torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    except Exception:  # a broken cuDNN install reports itself here, not as a crash of `info`
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
        for mode in PRECISIONS:
            can = dispatch.availability(device, mode)
            auto = dispatch.availability(device, mode, for_auto=True)
            for name, reason in can.items():
                status = reason or ("available" if auto[name] is None else f"available when forced ({auto[name]})")
                backends.setdefault(name, {})[f"{device}/{mode}"] = status
    return {
        "lua_fast": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": _cudnn_version(),
        "triton": _module_version("triton"),
        "triton_kernels": _triton_report(),
        "untested_versions": {name: why for name in TESTED_VERSIONS
                              if (why := version_check(name, torch.__version__ if name == "torch"
                                                       else _module_version(name))) is not None},
        "programmatic_dependent_launch": _pdl_report(),
        "numpy": _module_version("numpy"),
        "safetensors": _module_version("safetensors"),
        "cpu": cpu_report(),
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
        "auto_backend": {str(d): _auto_name(d) for d in devices()},
        "env": {k: os.environ[k] for k in ENV_VARS if k in os.environ},
    }


def _triton_report() -> str:
    from .kernels import triton_support

    reasons = {str(d): triton_support.unavailable_reason(d) for d in devices()}
    usable = [d for d, r in reasons.items() if r is None]
    if usable:
        return "usable on " + ", ".join(usable) + (" (interpreted)" if triton_support.INTERPRET else "")
    return "not usable: " + "; ".join(f"{d}: {r}" for d, r in reasons.items())


def _pdl_report() -> dict:
    """Per CUDA device: whether Triton kernel launches use PDL (LUA_FAST_PDL=1, sm_90+), else why not."""
    from .kernels import triton_support

    if triton_support.triton is None:
        return {}
    return {str(d): triton_support.pdl_reason(d) or "on" for d in devices() if d.type == "cuda"}


def _native_report() -> dict:
    st = native.status()
    return {"loaded": st.loaded, "reason": st.reason, "path": st.path, "cuda_kernels": st.cuda}


def _auto_name(device: torch.device) -> str:
    try:
        return dispatch.select_backend("auto", device, "fp32").name
    except Exception as exc:
        return f"none ({exc})"
