"""Exceptions raised by lua_fast.

Every error a user can cause derives from :class:`LuaFastError` and also from the
builtin class that describes it best (``ValueError``, ``RuntimeError``), so generic
``except ValueError`` handlers keep working.
"""

from __future__ import annotations

import os
import sys
import warnings


class LuaFastError(Exception):
    """Base class of every lua_fast error."""


class ConfigError(LuaFastError, ValueError):
    """A configuration is invalid, or cannot be read back from a state dict."""


class CheckpointError(LuaFastError, ValueError):
    """A checkpoint file or state dict does not hold LUA weights in the released format.

    ``missing``, ``unexpected`` and ``mismatched`` list what is wrong so callers can
    act on it programmatically; the message lists them too.
    """

    def __init__(
        self,
        message: str,
        *,
        missing: list[str] | None = None,
        unexpected: list[str] | None = None,
        mismatched: list[tuple[str, tuple, tuple]] | None = None,
    ) -> None:
        super().__init__(message)
        self.missing = list(missing or [])
        self.unexpected = list(unexpected or [])
        self.mismatched = list(mismatched or [])


class InputError(LuaFastError, ValueError):
    """Latents passed to ``upscale`` cannot be upscaled as given."""


class NonFiniteInputError(InputError):
    """The latents contain NaN or Inf values (``count`` of them), or overflow the model dtype;
    ``batch_items`` lists the latents of the batch that do (a server batching requests can fail
    those alone).

    ``opt_out`` names the switch that skips the check (the CLI sets its own flag's name).
    """

    def __init__(self, message: str, *, count: int = 0, opt_out: str = "check_finite=False",
                 batch_items: list[int] | None = None) -> None:
        super().__init__(message)
        self.message, self.count, self.opt_out = message, count, opt_out
        self.batch_items = [] if batch_items is None else batch_items

    def __str__(self) -> str:
        return f"{self.message} (pass {self.opt_out} to skip this check)"


class UsageError(LuaFastError, ValueError):
    """A command-line argument, file path or environment switch cannot be used as given (the CLI
    exits with 2)."""


class NonFiniteOutputError(LuaFastError, FloatingPointError):
    """Finite latents gave NaN or Inf outputs (an overflow in the model's dtype); ``batch_items``
    lists the latents of the batch whose outputs hold them."""

    def __init__(self, message: str, *, batch_items: list[int] | None = None) -> None:
        super().__init__(message)
        self.batch_items = [] if batch_items is None else batch_items


class NotDifferentiableError(LuaFastError, RuntimeError):
    """Gradients were asked of a path that has no backward: the triton backend and the Triton
    kernel ops are inference-only (the reference and torch backends are differentiable)."""


class HubError(LuaFastError, RuntimeError):
    """A ``hf://`` checkpoint cannot be fetched (package missing, offline with an empty cache, ...)."""


class BackendUnavailableError(LuaFastError, RuntimeError):
    """A backend was requested that cannot run here; ``reasons`` says why."""

    def __init__(self, message: str, reasons: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.reasons = dict(reasons or {})


class LowMemoryWarning(UserWarning):
    """An untiled CPU pass estimated to need more RAM than the process can still take: on Linux its
    failure is the kernel's OOM killer ending the process, with no Python error to read."""


class SlowPrecisionWarning(UserWarning):
    """A bf16/fp16 computing precision on a CPU without native kernels for it (PyTorch's fallback
    loops: about 40x slower than fp32)."""


def _not_the_caller() -> tuple[str, ...]:
    """Folders whose frames are not the caller's: lua_fast's own (its official API, integrations and
    wrappers call each other) and torch's (``torch.no_grad`` wraps ``upscale`` in a frame of its own)."""
    import torch

    return tuple(os.path.dirname(os.path.abspath(m)) + os.sep for m in (__file__, torch.__file__))


def warn_the_caller(message: str, category: type[Warning]) -> None:
    """``warnings.warn`` attributed to the first frame outside lua_fast and torch: the user's line,
    whichever entry point (``upscale``, ``official.upscale_latent``, ``load``, ``to``) led there. A
    fixed stacklevel named lua_fast's own wrapper when the call came through one, and a warning
    filter on the caller's module (``-W ignore::...:mymodule``) then never matched."""
    folders, frame, level = _not_the_caller(), sys._getframe(1), 2  # (level 1: this function)
    while frame is not None and frame.f_code.co_filename.startswith(folders):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)


def first_line(exc: BaseException, limit: int = 300) -> str:
    """An exception's first line, for a one-line report (PyTorch's out-of-memory messages run on
    for several lines of allocator statistics)."""
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:limit]
