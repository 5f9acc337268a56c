"""Shifted-window bookkeeping exactly as the spec defines it.

These are the reference compositions (torch.roll + view/permute + region
labelling) that fused kernels are tested against. Shift masks are built on the
requested device with tensor ops and cached per (H, W, window, shift, device,
dtype), so no forward pass rebuilds them on the CPU.
"""

from __future__ import annotations

import torch

from ..lru import LRUCache

MASK_VALUE = -100.0  # the released value for token pairs from different regions (not -inf)


def _shapes_only(device) -> bool:
    """Whether a tensor made for ``device`` (None: the default one, ``with torch.device("meta")``
    included) holds no data. Index math on meta tensors runs torch's Python meta kernels, and the
    first of those imports torch._dynamo: 1.2 s of every ``lua_fast.load``, which builds its model on
    meta first. An empty tensor of the right shape is all a meta model needs."""
    return torch.empty(0, device=device).device.type == "meta"


def relative_position_index(window: int, device: torch.device | str | None = None) -> torch.Tensor:
    """(N, N) int64: ``(ya - yb + ws - 1) * (2ws - 1) + (xa - xb + ws - 1)``."""
    if _shapes_only(device):
        return torch.empty(window**2, window**2, dtype=torch.long, device=device)
    ys, xs = torch.meshgrid(
        torch.arange(window, device=device), torch.arange(window, device=device), indexing="ij"
    )
    ys, xs = ys.flatten(), xs.flatten()
    dy = ys[:, None] - ys[None, :] + window - 1
    dx = xs[:, None] - xs[None, :] + window - 1
    return dy * (2 * window - 1) + dx


def region_labels(height: int, width: int, window: int, shift: int, device=None) -> torch.Tensor:
    """(H, W) int64 region label of each position of the ROLLED grid: 3 * row_region + col_region.

    Rows split into [0, H-ws), [H-ws, H-shift), [H-shift, H); columns likewise. The released
    code labels the positions of the already-shifted feature map and partitions this grid
    as it is (no roll of the labels); a label therefore depends on where a token sits after
    the roll, not on the un-rolled pixel it holds.
    """
    rows = torch.arange(height, device=device)
    cols = torch.arange(width, device=device)
    row_region = (rows >= height - window).long() + (rows >= height - shift).long()
    col_region = (cols >= width - window).long() + (cols >= width - shift).long()
    return 3 * row_region[:, None] + col_region[None, :]


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * nW, ws * ws, C); windows row-major over the grid, tokens row-major."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window, c)


def window_reverse(windows: torch.Tensor, window: int, height: int, width: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: (B * nW, ws * ws, C) -> (B, H, W, C)."""
    c = windows.shape[-1]
    x = windows.view(-1, height // window, width // window, window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, height, width, c)


def build_shift_mask(height: int, width: int, window: int, shift: int, *, device=None, dtype=torch.float32):
    """(nW, N, N) additive mask: 0 within a region, -100 across regions."""
    if _shapes_only(device):
        return torch.empty((height // window) * (width // window), window**2, window**2, dtype=dtype, device=device)
    labels = region_labels(height, width, window, shift, device)  # already in the rolled frame
    labels = window_partition(labels[None, :, :, None], window).squeeze(-1)  # (nW, N)
    differ = labels[:, :, None] != labels[:, None, :]
    zero = torch.zeros((), device=labels.device, dtype=dtype)
    return torch.where(differ, torch.full((), MASK_VALUE, device=labels.device, dtype=dtype), zero)


# The cache of callers that own none: a SwinBlock run outside a LUA model, and the window-attention
# kernel's PyTorch twin. A LUA model keeps its own (``LUA.masks``), so deleting the model frees its
# masks; before 2026-11-29 every reference model shared this one, and up to 256 MiB of masks stayed
# on the GPU after ``del upscaler``.
mask_cache = LRUCache()


def drop_cached_masks(device) -> int:
    """Forget the shared cache's masks on ``device`` (``Upscaler.to`` calls it when a model leaves a
    device). Another caller still on ``device`` rebuilds what it needs (one launch per mask)."""
    device = torch.device(device)
    return mask_cache.discard(lambda key: key[4] == device)


def shift_mask(height: int, width: int, window: int, shift: int, *, device, dtype,
               cache: LRUCache | None = None) -> torch.Tensor:
    """:func:`build_shift_mask` on ``device`` in ``dtype``, kept in ``cache`` (the shared one when
    None). Symbolic sizes (torch.export with dynamic shapes) build the mask inside the traced graph
    instead: it then follows the input size."""
    device = torch.device(device)
    if not (isinstance(height, int) and isinstance(width, int)):
        return build_shift_mask(height, width, window, shift, device=device, dtype=dtype)
    return (mask_cache if cache is None else cache).get_or_create(
        (height, width, window, shift, device, dtype),
        lambda: build_shift_mask(height, width, window, shift, device=device, dtype=dtype),
    )
