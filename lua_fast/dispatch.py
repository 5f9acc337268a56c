"""Backend registry and selection.

A backend turns a loaded reference model into a runner
``runner(latents, scales) -> {scale: output}``. For a device and precision each
backend says either that it can run or *why it cannot* (a reason string, as
xformers and torchvision do). ``"auto"`` picks the first one that can, in priority
order triton > torch > reference; ``LUA_FAST_BACKEND`` replaces "auto" (an explicit
``backend=`` argument still wins). A forced backend that cannot run raises
:class:`BackendUnavailableError` carrying the reasons.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from . import env
from .errors import BackendUnavailableError
from .precision import Precision, autocast, backend_flags, resolve

ENV_BACKEND = "LUA_FAST_BACKEND"
TRITON_OFF = "LUA_FAST_DISABLE_TRITON"  # (triton_support.DISABLE_ENV, read here without importing Triton)


@dataclass(frozen=True)
class Backend:
    name: str
    description: str
    # None when the backend can run on (device, precision), else the reason it cannot.
    unavailable_reason: Callable[[torch.device, Precision], str | None]
    # Wraps a loaded reference model (on the device, weights in precision.storage) into the runner.
    build: Callable[[nn.Module, Precision], nn.Module]
    # Why "auto" should pass this backend over although it could run (None: auto may pick it).
    auto_skip_reason: Callable[[torch.device], str | None] = lambda device: None


class EagerRunner(nn.Module):
    """Runs an eager module under the precision's autocast ("mixed") and TF32 switches."""

    def __init__(self, module: nn.Module, precision: Precision) -> None:
        super().__init__()
        self.module = module
        self.precision = precision

    def forward(self, x: torch.Tensor, scales=(2,)) -> dict[int, torch.Tensor]:
        with backend_flags(self.precision, x.device), autocast(self.precision, x.device):
            out = self.module(x, scales)
        return {s: y.to(self.precision.storage) for s, y in out.items()}


def _eager_reason(device: torch.device, precision: Precision) -> str | None:
    if precision.mode == "tf32" and device.type != "cuda":
        return "tf32 needs CUDA tensor cores"
    return None


def _build_reference(model: nn.Module, precision: Precision) -> nn.Module:
    return EagerRunner(model, precision)


def _build_torch(model: nn.Module, precision: Precision) -> nn.Module:
    from .backends.torch_backend import TorchBackendLUA

    return EagerRunner(TorchBackendLUA(model), precision)


def _triton_reason(device: torch.device, precision: Precision) -> str | None:
    if device.type != "cuda" and os.environ.get("TRITON_INTERPRET", "0") != "1" and not env.flag(TRITON_OFF, False):
        # (triton_support's answer, without importing Triton: 0.25 s of a CPU-only process's start)
        return f"Triton kernels need CUDA tensors (got {device}; set TRITON_INTERPRET=1 to interpret on CPU)"
    from .kernels import triton_support

    reason = triton_support.unavailable_reason(device)
    if reason:
        return reason
    if precision.compute not in (torch.float32, torch.bfloat16, torch.float16):
        return f"Triton kernels compute in float32, bfloat16 or float16, not {precision.compute}"
    if precision.mode == "tf32" and device.type != "cuda":
        return "tf32 needs CUDA tensor cores"
    return None


def _triton_auto_skip(device: torch.device) -> str | None:
    from .kernels import triton_support

    if triton_support.INTERPRET:
        return "TRITON_INTERPRET=1: interpreted kernels are a test tool, used only when forced"
    return None


def _build_triton(model: nn.Module, precision: Precision) -> nn.Module:
    from .backends.triton_backend import TritonBackendLUA

    return TritonBackendLUA(model, precision)


# Priority order: the first available backend wins under "auto".
BACKENDS: dict[str, Backend] = {
    "triton": Backend(
        name="triton",
        description="fused Triton kernels end to end (window attention, convs, pixel-shuffle heads)",
        unavailable_reason=_triton_reason,
        build=_build_triton,
        auto_skip_reason=_triton_auto_skip,
    ),
    "torch": Backend(
        name="torch",
        description="PyTorch with fused window partition/merge/mask (native extension, else PyTorch ops)",
        unavailable_reason=_eager_reason,
        build=_build_torch,
    ),
    "reference": Backend(
        name="reference",
        description="eager PyTorch reference model (ground truth; unfused)",
        unavailable_reason=_eager_reason,
        build=_build_reference,
    ),
}


def _as_precision(precision: Precision | str | torch.dtype | None) -> Precision:
    if isinstance(precision, Precision):
        return precision
    if isinstance(precision, torch.dtype):
        return resolve(None, precision)
    return resolve(precision, None)


def availability(device: torch.device | str, precision: Precision | str | torch.dtype = torch.float32,
                 *, for_auto: bool = False) -> dict[str, str | None]:
    """Backend name -> None if it can run on (device, precision), else why not.

    With ``for_auto``, backends that "auto" passes over report that reason too.
    """
    device, precision = torch.device(device), _as_precision(precision)
    reasons = {}
    for name, backend in BACKENDS.items():
        reason = backend.unavailable_reason(device, precision)
        if reason is None and for_auto:
            reason = backend.auto_skip_reason(device)
        reasons[name] = reason
    return reasons


def select_backend(name: str, device: torch.device | str, precision: Precision | str | torch.dtype) -> Backend:
    """Resolve ``name`` ("auto" or a registered backend) for (device, precision)."""
    device, precision = torch.device(device), _as_precision(precision)
    name = name.strip().lower() if isinstance(name, str) else name  # any case, as dtype= and precision=
    if name == "auto" and os.environ.get(ENV_BACKEND, "").strip():
        name = os.environ[ENV_BACKEND].strip().lower()
        if name not in BACKENDS and name != "auto":
            raise BackendUnavailableError(f"{ENV_BACKEND}={name!r} is not one of {list(BACKENDS)} or 'auto'")
    if name == "auto":
        reasons = availability(device, precision, for_auto=True)
        for candidate, reason in reasons.items():
            if reason is None:
                return BACKENDS[candidate]
        raise BackendUnavailableError(
            f"no backend can run on {device} in {precision}: " + "; ".join(f"{k}: {v}" for k, v in reasons.items()),
            reasons,
        )
    if name not in BACKENDS:
        raise BackendUnavailableError(f"unknown backend {name!r}; choose 'auto' or one of {list(BACKENDS)}",
                                      availability(device, precision))
    reason = BACKENDS[name].unavailable_reason(device, precision)
    if reason is not None:
        raise BackendUnavailableError(
            f"backend {name!r} cannot run on {device} in {precision}: {reason}", {name: reason}
        )
    return BACKENDS[name]
