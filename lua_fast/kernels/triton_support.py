"""Whether Triton kernels can run, and why not.

Triton decides at decoration time whether a kernel is compiled for the GPU or run by
its interpreter (``TRITON_INTERPRET=1``, numpy on CPU tensors, ~1000x slower: for
tests on small shapes). ``LUA_FAST_DISABLE_TRITON=1`` simulates a missing Triton.
"""

from __future__ import annotations

import os

import torch

DISABLE_ENV = "LUA_FAST_DISABLE_TRITON"

try:
    import triton  # noqa: F401
    import triton.language as tl  # noqa: F401

    IMPORT_ERROR: str | None = None
except Exception as exc:  # ImportError, or a broken install raising at import
    triton = None
    tl = None
    IMPORT_ERROR = f"{type(exc).__name__}: {exc}"

# Read once, like Triton itself: kernels decorated in this process are interpreted or compiled.
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


def unavailable_reason(device: torch.device) -> str | None:
    """None if this process's Triton kernels can run on tensors of ``device``, else why not."""
    if os.environ.get(DISABLE_ENV, "").strip() not in ("", "0"):
        return f"disabled by {DISABLE_ENV}={os.environ[DISABLE_ENV]}"
    if triton is None:
        return f"triton is not importable ({IMPORT_ERROR})"
    if INTERPRET:
        return None if device.type == "cpu" else f"TRITON_INTERPRET=1 runs kernels on CPU tensors, not {device}"
    if device.type != "cuda":
        return f"Triton kernels need CUDA tensors (got {device}; set TRITON_INTERPRET=1 to interpret on CPU)"
    return None
