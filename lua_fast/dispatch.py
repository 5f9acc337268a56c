"""Backend registry and selection.

A backend turns a loaded reference model into something that runs
``runner(latents, scales) -> {scale: output}``. Each backend says for a given
device and dtype either that it can run or *why it cannot* (a reason string, as
xformers and torchvision do); ``"auto"`` picks the first one that can, in
priority order. Later backends ("torch", "triton") register here behind the same
``lua_fast.load(..., backend=...)`` call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from .errors import BackendUnavailableError


@dataclass(frozen=True)
class Backend:
    name: str
    description: str
    # Returns None when the backend can run on (device, dtype), else the reason it cannot.
    unavailable_reason: Callable[[torch.device, torch.dtype], str | None]
    # Wraps a loaded reference model (already on device, in dtype) into the runner.
    build: Callable[[nn.Module], nn.Module]


def _always(device: torch.device, dtype: torch.dtype) -> str | None:
    return None  # plain PyTorch (the torch backend's window ops fall back to PyTorch too)


def _build_torch(model: nn.Module) -> nn.Module:
    from .backends.torch_backend import TorchBackendLUA

    return TorchBackendLUA(model)


# Priority order: the first available backend wins under "auto".
BACKENDS: dict[str, Backend] = {
    "torch": Backend(
        name="torch",
        description="PyTorch with fused window partition/merge/mask (native extension, else PyTorch ops)",
        unavailable_reason=_always,
        build=_build_torch,
    ),
    "reference": Backend(
        name="reference",
        description="eager PyTorch reference model (ground truth; unfused)",
        unavailable_reason=_always,
        build=lambda model: model,
    ),
}


def availability(device: torch.device | str, dtype: torch.dtype = torch.float32) -> dict[str, str | None]:
    """Backend name -> None if it can run on (device, dtype), else why not."""
    device = torch.device(device)
    return {name: b.unavailable_reason(device, dtype) for name, b in BACKENDS.items()}


def select_backend(name: str, device: torch.device | str, dtype: torch.dtype) -> Backend:
    """Resolve ``name`` ("auto" or a registered backend) for (device, dtype)."""
    reasons = availability(device, dtype)
    if name == "auto":
        for candidate, reason in reasons.items():
            if reason is None:
                return BACKENDS[candidate]
        raise BackendUnavailableError(
            f"no backend can run on {device} with {dtype}: "
            + "; ".join(f"{k}: {v}" for k, v in reasons.items()),
            reasons,
        )
    if name not in BACKENDS:
        raise BackendUnavailableError(
            f"unknown backend {name!r}; choose 'auto' or one of {list(BACKENDS)}", reasons
        )
    if reasons[name] is not None:
        raise BackendUnavailableError(
            f"backend {name!r} cannot run on {device} with {dtype}: {reasons[name]}", {name: reasons[name]}
        )
    return BACKENDS[name]
