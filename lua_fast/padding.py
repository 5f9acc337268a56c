"""Padding latents to a window multiple, shared by every backend.

The released code reflect-pads the bottom/right of the latent to the next multiple
of the window (``F.pad(x, (0, pw, 0, ph), mode="reflect")``) and crops the output.
Reflection is undefined when the pad is not smaller than the side (a 5-pixel side
needs 11 pixels of padding with window 16) and the released code crashes there.

lua_fast instead extends such sides by *repeated* mirror reflection: the periodic
even extension of the signal (period ``2 * (side - 1)``). Wherever reflect padding
is defined this gives exactly the same values, so ordinary inputs keep the released
numerics; a side of length 1 has no mirror axis and is replicated.
"""

from __future__ import annotations

import contextlib
import contextvars

import torch

# Set while torch.export traces a graph whose sides are declared window multiples (AOTInductor
# packages): with derived dims the tracer cannot prove the padding is zero until it solves the
# constraints after tracing, so it is told.
_SIDES_ARE_WINDOW_MULTIPLES = contextvars.ContextVar("lua_fast_sides_are_window_multiples", default=False)


@contextlib.contextmanager
def sides_are_window_multiples():
    """Trace with symbolic sides that are window multiples: padding is skipped (and asserted)."""
    token = _SIDES_ARE_WINDOW_MULTIPLES.set(True)
    try:
        yield
    finally:
        _SIDES_ARE_WINDOW_MULTIPLES.reset(token)


def pad_amount(size: int, window: int) -> int:
    # Written as ceil-to-multiple minus size, not (window - size % window) % window: under
    # torch.compile's dynamic shapes the padded side is then ``window * FloorDiv(...)``, which
    # the symbolic shape engine divides by the window exactly (the Mod form broke Inductor).
    return (size + window - 1) // window * window - size


def mirror_indices(size: int, padded: int, device: torch.device) -> torch.Tensor:
    """Source index for each of ``padded`` output positions along a side of ``size``.

    Branch-free, so a symbolic ``size`` (torch.export, dynamic shapes) traces into one graph for
    every size: the period is at least 1, and a side of 1 then maps every position to 0. The
    size and period are 0-d tensors, not Python scalars: the ONNX exporter cannot translate an
    operator whose scalar argument is symbolic.
    """
    idx = torch.arange(padded, device=device)
    size = torch.full((), size, dtype=idx.dtype, device=device)
    period = (2 * (size - 1)).clamp_min(1)
    idx = idx % period
    return torch.where(idx < size, idx, period - idx)


def pad_to_window_multiple(x: torch.Tensor, window: int) -> torch.Tensor:
    """Pad (B, C, H, W) bottom/right to multiples of ``window`` (see module docstring)."""
    height, width = x.shape[-2:]
    ph, pw = pad_amount(height, window), pad_amount(width, window)
    if isinstance(height, torch.SymInt) or isinstance(width, torch.SymInt):
        # Symbolic sides (torch.export, ONNX, dynamic torch.compile). Sides declared as window
        # multiples need nothing; otherwise one gather per side for every size, padded or not, so
        # the graph branches on nothing (each branch below would be a guard: an export over a range
        # of sizes would fail, a dynamic compile would recompile).
        if _SIDES_ARE_WINDOW_MULTIPLES.get():
            torch._check(ph == 0, lambda: "this graph takes sides that are window multiples")
            torch._check(pw == 0, lambda: "this graph takes sides that are window multiples")
            return x
        x = x.index_select(-2, mirror_indices(height, height + ph, x.device))
        return x.index_select(-1, mirror_indices(width, width + pw, x.device))
    if ph == 0 and pw == 0:
        return x
    if ph < height and pw < width:
        # The released operation itself, where it is defined.
        return torch.nn.functional.pad(x, (0, pw, 0, ph), mode="reflect")
    if ph:
        x = x.index_select(-2, mirror_indices(height, height + ph, x.device))
    if pw:
        x = x.index_select(-1, mirror_indices(width, width + pw, x.device))
    return x
