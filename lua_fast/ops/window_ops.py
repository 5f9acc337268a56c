"""Shifted-window partition, merge and mask: native kernels with PyTorch fallbacks.

- ``window_partition(x, window, shift)``: (B, H, W, C) -> (B*nW, N, C), the cyclic
  shift by (-shift, -shift) folded into one gather.
- ``window_merge(windows, batch, height, width, window, shift)``: the inverse, with
  the reverse shift folded in.
- ``window_mask(height, width, window, shift, dtype=, device=)``: the additive
  shift mask (nW, N, N) (0 / -100) and the per-token region labels (nW, N) uint8
  from which a kernel can rebuild the mask on the fly.

Each op runs the native ``torch.ops.lua_fast.*`` kernel when the extension is
loaded for the input's device, else the ``torch_*`` fallback (the reference
composition of torch.roll + view/permute). Both validate arguments the same way.
"""

from __future__ import annotations

import torch

from .. import native
from ..reference import windows as ref

MASK_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


# ------------------------------------------------------------------ validation
def check_geometry(op: str, height: int, width: int, window: int, shift: int) -> None:
    if window <= 0:
        raise ValueError(f"{op}: window must be positive, got {window}")
    if not 0 <= shift < window:
        raise ValueError(f"{op}: shift must be in [0, window), got shift={shift} with window={window}")
    if height <= 0 or width <= 0 or height % window or width % window:
        raise ValueError(
            f"{op}: H and W must be positive multiples of the window (pad the input first), "
            f"got H={height}, W={width}, window={window}"
        )


def _check_partition(x: torch.Tensor, window: int, shift: int) -> None:
    if x.dim() != 4:
        raise ValueError(f"window_partition: expected x of shape (B, H, W, C), got {tuple(x.shape)}")
    check_geometry("window_partition", x.shape[1], x.shape[2], window, shift)


def _check_merge(windows: torch.Tensor, batch: int, height: int, width: int, window: int, shift: int) -> None:
    check_geometry("window_merge", height, width, window, shift)
    count = batch * (height // window) * (width // window)
    if windows.dim() != 3 or windows.shape[0] != count or windows.shape[1] != window * window:
        raise ValueError(
            f"window_merge: expected windows of shape (B*nW, N, C) = ({count}, {window * window}, C) for "
            f"B={batch}, H={height}, W={width}, window={window}, got {tuple(windows.shape)}"
        )


def _check_mask(height: int, width: int, window: int, shift: int, dtype: torch.dtype) -> None:
    check_geometry("window_mask", height, width, window, shift)
    if dtype not in MASK_DTYPES:
        raise ValueError(f"window_mask: dtype must be one of {MASK_DTYPES}, got {dtype}")


# ------------------------------------------------------------ PyTorch fallback
def torch_window_partition(x: torch.Tensor, window: int, shift: int) -> torch.Tensor:
    _check_partition(x, window, shift)
    if shift:
        x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
    return ref.window_partition(x.contiguous(), window)


def torch_window_merge(windows: torch.Tensor, batch: int, height: int, width: int, window: int, shift: int):
    _check_merge(windows, batch, height, width, window, shift)
    x = ref.window_reverse(windows.contiguous(), window, height, width)
    if shift:
        x = torch.roll(x, shifts=(shift, shift), dims=(1, 2))
    return x.contiguous()


def torch_window_labels(height: int, width: int, window: int, shift: int, device=None) -> torch.Tensor:
    labels = ref.region_labels(height, width, window, shift, device)  # rolled frame: no roll
    return ref.window_partition(labels[None, :, :, None], window).squeeze(-1).to(torch.uint8)


def torch_window_mask(height: int, width: int, window: int, shift: int, *, dtype=torch.float32, device=None):
    _check_mask(height, width, window, shift, dtype)
    mask = ref.build_shift_mask(height, width, window, shift, device=device, dtype=dtype)
    return mask, torch_window_labels(height, width, window, shift, device)


# ------------------------------------------------------------------ dispatch
def _native_ok(device: torch.device) -> bool:
    return native.unavailable_reason(device) is None


def window_partition(x: torch.Tensor, window: int, shift: int) -> torch.Tensor:
    _check_partition(x, window, shift)
    if _native_ok(x.device):
        return torch.ops.lua_fast.window_partition(x, window, shift)
    return torch_window_partition(x, window, shift)


def window_merge(windows: torch.Tensor, batch: int, height: int, width: int, window: int, shift: int):
    _check_merge(windows, batch, height, width, window, shift)
    if _native_ok(windows.device):
        return torch.ops.lua_fast.window_merge(windows, batch, height, width, window, shift)
    return torch_window_merge(windows, batch, height, width, window, shift)


def _traced() -> bool:
    """Under torch.compile / torch.export tracing or a dispatch mode (make_fx, fake tensors)."""
    return torch.compiler.is_compiling() or torch._C._get_dispatch_mode(torch._C._TorchDispatchModeKey.FAKE) \
        is not None or torch._C._get_dispatch_mode(torch._C._TorchDispatchModeKey.PROXY) is not None


def window_mask(height: int, width: int, window: int, shift: int, *, dtype=torch.float32, device="cpu"):
    device = torch.device(device)
    _check_mask(height, width, window, shift, dtype)
    # Traced graphs get the PyTorch composition (the same values; the compiler fuses it): in an
    # AOTInductor package built by torch 2.11 the op's ScalarType argument arrived wrong (a float32
    # mask came back float64 and was read as float32: 7e-2 error end to end; fine on 2.13).
    if _native_ok(device) and isinstance(height, int) and isinstance(width, int) and not _traced():
        return torch.ops.lua_fast.window_mask(height, width, window, shift, dtype, device)
    return torch_window_mask(height, width, window, shift, dtype=dtype, device=device)


# ------------------------------------------- fake (meta) kernels and gradients
def _register_python_kernels() -> None:
    """Shape functions so torch.compile / FakeTensor can trace the native ops, and their gradients."""

    @torch.library.register_fake("lua_fast::window_partition")
    def _(x, window, shift):
        b, h, w, c = x.shape
        return x.new_empty((b * (h // window) * (w // window), window * window, c))

    @torch.library.register_fake("lua_fast::window_merge")
    def _(windows, batch, height, width, window, shift):
        return windows.new_empty((batch, height, width, windows.shape[-1]))

    @torch.library.register_fake("lua_fast::window_mask")
    def _(height, width, window, shift, dtype, device):
        n_windows, n = (height // window) * (width // window), window * window
        return (
            torch.empty((n_windows, n, n), dtype=dtype, device=device),
            torch.empty((n_windows, n), dtype=torch.uint8, device=device),
        )

    # The two gathers are one permutation and its inverse, so each one's gradient is the other
    # applied to the incoming gradient. Without these, PyTorch's fallback gave the native ops'
    # inputs no gradient (it only warned): the torch backend's input gradients lost the attention.
    def partition_context(ctx, inputs, output):
        x, ctx.window, ctx.shift = inputs
        ctx.geometry = x.shape[0], x.shape[1], x.shape[2]

    def partition_backward(ctx, grad):
        batch, height, width = ctx.geometry
        return window_merge(grad, batch, height, width, ctx.window, ctx.shift), None, None

    def merge_context(ctx, inputs, output):
        ctx.window, ctx.shift = inputs[-2:]

    def merge_backward(ctx, grad):
        return window_partition(grad, ctx.window, ctx.shift), None, None, None, None, None

    torch.library.register_autograd("lua_fast::window_partition", partition_backward, setup_context=partition_context)
    torch.library.register_autograd("lua_fast::window_merge", merge_backward, setup_context=merge_context)


native.on_load(_register_python_kernels)
