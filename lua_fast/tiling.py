"""Tiled inference for latents too large to upscale in one pass.

The latent is cut into ``tile`` x ``tile`` tiles overlapping by at least ``overlap`` latent
pixels, each starting on the window grid the untiled pass lays its windows on (``tile_starts``;
the last tile of a row or column ends at the border, so tiles never leave the image). Each tile
is upscaled on its own and the outputs are blended: inside an overlap each tile gives up the
pixels nearest its own edge (``BLEND_MARGIN``, three eighths of the overlap from each side) and
the weights ramp linearly over the middle quarter, so no seam is a hard cut and no kept pixel is
one a tile saw with little context.

Tiling changes the result: a Swin trunk's receptive field spans far more than one
window, so pixels near a tile border see less context than in the untiled pass.
Measured on the small configuration with random weights at a 64x64 latent (relative
error against the untiled output, x2): see ``BLEND_MARGIN`` and README's "Tiled inference".
Trained checkpoints are smoother than random weights; measure on yours before relying
on a bound.

``estimate_peak_bytes`` gives a conservative activation-memory estimate used by
``tile="auto"`` to decide whether, and how, to split a pass: a batch into chunks of whole items
first (the untiled result), an item too large alone into the tiles of least work that fit
(``least_work_tile``).
"""

from __future__ import annotations

import contextlib
import numbers
from typing import Callable

import torch

from . import host_memory
from .config import LUAConfig
from .errors import InputError, LowMemoryWarning, warn_the_caller
from .padding import pad_amount

# tile="auto"'s default budget, a share of what the process can still allocate. CUDA: the caching
# allocator's own overhead is small. CPU: glibc keeps freed blocks in its heap, so the resident set
# of a forward outgrows its live tensors: measured on the development CPU (released config, fp32
# and bf16, x2 and x4, 64-192 latents; benchmarks/bench_cpu_memory.py) the peak RSS over the loaded
# model was 0.60-1.05x estimate_peak_bytes. 0.75 leaves room for that and for the rest of the
# process (the caller's tensors, other threads).
CUDA_BUDGET_FRACTION = 0.9
CPU_BUDGET_FRACTION = 0.75


def cuda_memory_available(device: torch.device) -> int:
    """Bytes this process can still allocate on ``device``: the driver's free memory, capped by a
    per-process limit (``torch.cuda.set_per_process_memory_fraction``: the driver's figure would
    overshoot it, and the forward would meet an out-of-memory error instead of a fitting tile),
    plus what PyTorch's caching allocator holds reserved but unused (freed tensors kept for reuse,
    usable by this process but not free to the driver)."""
    free, total = torch.cuda.mem_get_info(device)
    reserved, allocated = torch.cuda.memory_reserved(device), torch.cuda.memory_allocated(device)
    try:
        fraction = torch.cuda.get_per_process_memory_fraction(device)
    except RuntimeError:  # an allocator backend without the setting (e.g. cudaMallocAsync)
        fraction = 1.0
    if not 0 < fraction <= 1:  # read as "no cap"
        fraction = 1.0
    new_segments = min(free, max(0, int(fraction * total) - reserved))
    return new_segments + max(0, reserved - allocated)


def default_memory_budget(device: torch.device) -> int | None:
    """tile="auto"'s budget when none is given: a share of the memory the process can still take on
    ``device`` (CUDA: the driver and allocator figures above; CPU: RAM within the container's limit,
    lua_fast.host_memory), or None where that is unknown (no tiling then)."""
    if device.type == "cuda":
        return int(CUDA_BUDGET_FRACTION * cuda_memory_available(device))
    if device.type == "cpu":
        available = host_memory.cpu_memory_available()
        return None if available is None else int(CPU_BUDGET_FRACTION * available)
    return None


def over_the_cpu_budget(device: torch.device, need: int) -> bool:
    """Whether ``need`` bytes exceed tile="auto"'s default budget on the CPU (False on other devices,
    or where the RAM is unknown): for callers about to run one untiled pass, whose failure on the CPU
    would be the kernel's OOM killer ending the process, not an exception to catch."""
    if device.type != "cpu":
        return False
    budget = default_memory_budget(device)
    return budget is not None and need > budget


def is_out_of_memory(exc: BaseException) -> bool:
    """An allocation failure: CUDA's ``torch.OutOfMemoryError``, or the CPU allocator's refusal, which
    PyTorch raises as a plain RuntimeError ("DefaultCPUAllocator: can't allocate memory", e.g. under
    ``ulimit -v`` or with overcommit off)."""
    return isinstance(exc, torch.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "DefaultCPUAllocator" in str(exc) and "allocate" in str(exc))


def blend_bytes(batch: int, channels: int, height: int, width: int, scales, element_size: int) -> int:
    """Memory a tiled run holds besides its tile's forward: per scale, the full-size fp32 sum of
    weighted tile outputs and of the weights (float64 for a float64 model), and the output they are
    divided into."""
    wide = 8 if element_size == 8 else 4
    return sum(s * s * height * width * (batch * channels * (wide + element_size) + wide) for s in scales)


def tile_starts(size: int, tile: int, overlap: int, window: int = 1) -> list[int]:
    """Tile origins along a side, all on the ``window`` grid: stride ``tile - overlap`` rounded down to
    a window multiple (at least one window), the last tile reaching the end (shorter than ``tile`` by
    less than a window when ``size - tile`` is off the grid). Every overlap is at least ``overlap``
    when ``overlap <= tile - window``.

    Why the grid: a Swin block attends within windows laid from the latent's origin, so a tile that
    starts off the grid computes other windows than the untiled pass, everywhere, not only near its
    borders. Measured (small config, random weights, x2, 70x70, tile 32 / overlap 8): the last tile
    aligned to the end, at 38, put the result 14.9% off the untiled output; on the grid, 1.2%.
    (Before 2026-11-29 the last tile was aligned to the end.) A tile that reaches the end is padded
    there as the untiled pass pads the latent, so it sees the same border."""
    if size <= tile:
        return [0]
    step = max(window, (tile - overlap) // window * window)
    last = -(-(size - tile) // window) * window  # the first grid point from which a tile reaches the end
    return list(range(0, last, step)) + [last]


def tiled_work(height: int, width: int, tile: int, overlap: int, window: int = 1) -> int:
    """Latent pixels the tiles of a ``height`` x ``width`` latent run through the model, each tile
    padded to the window grid as the model pads it: the work of a tiled pass (the untiled pass's is
    the padded latent's area)."""
    def side(size):
        return sum(-(-min(tile, size - start) // window) * window for start in tile_starts(size, tile, overlap, window))
    return side(height) * side(width)


def least_work_tile(height: int, width: int, largest: int, smallest: int, window: int,
                    overlap_of: Callable[[int], int]) -> int:
    """Of the tiles in [``smallest``, ``largest``] (window multiples) that need no more tiles than
    ``largest``, the one doing the least work (``tiled_work``), the larger on a tie.

    The largest tile memory allows is rarely the cheapest: the grid being fixed, the last tile of a
    side overhangs the one before by up to a tile. Released config's window 16, overlap 32: a
    256 x 256 latent in tiles of 176 runs 4 tiles of 176 x 176 (1.89x the untiled work), in tiles of
    144, 4 of 144 x 144 (1.27x). More, smaller tiles can do less work still (a smaller tile's
    default overlap is smaller), but each adds seams and a pass: not taken."""
    def count(tile):
        overlap = overlap_of(tile)
        return len(tile_starts(height, tile, overlap, window)) * len(tile_starts(width, tile, overlap, window))

    most = count(largest)
    plans = [(tiled_work(height, width, tile, overlap_of(tile), window), -tile)
             for tile in range(smallest, largest + 1, window) if count(tile) <= most]
    return -min(plans)[1] if plans else largest


# Share of each overlap, on the side of the tile's own edge, where that tile gets no weight: its
# pixels there see the least context, and the neighbour's see the most. The ramp runs over the
# overlap's middle quarter. Measured against the untiled output (random weights, x2): released
# config 64x64, tile 32 / overlap 16: 3.6% -> 1.07% relative, the largest step between neighbouring
# pixels beyond the untiled output's 0.10 -> 0.024 (of the output's largest value); small config,
# 32 / 16: 2.8% -> 0.14%. A hard cut in the middle (0.5) measured 1.20% and 0.035 there: the ramp
# also hides the seam. Before 2026-11-29 the ramp ran over the whole overlap (margin 0).
BLEND_MARGIN = 0.375


def _rise(length: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """A tile's weight across an overlap of ``length`` pixels, from its edge inwards: 0 over the
    outer ``BLEND_MARGIN``, then linear (never 0 nor 1), then 1. The neighbour's weight there is the
    mirror image, and the two sum to 1 wherever both ramp."""
    margin = int(length * BLEND_MARGIN)
    w = torch.zeros(length, device=device, dtype=dtype)
    middle = length - 2 * margin
    w[margin:margin + middle] = torch.linspace(0, 1, middle + 2, device=device, dtype=dtype)[1:-1]
    w[margin + middle:] = 1
    return w


def _ramp(length: int, overlap_before: int, overlap_after: int, device: torch.device,
          dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A tile's weights along one axis: 1 inside, ``_rise`` over the overlaps shared with its
    neighbours (in ``dtype`` on ``device``, explicitly: neither torch.set_default_dtype nor
    set_default_device applies). Every pixel of the side keeps a positive sum over the tiles: where
    one tile's weight is 0 its neighbour's is 1 (``tests/test_tiling.py`` checks it over sizes, tiles
    and overlaps)."""
    w = torch.ones(length, device=device, dtype=dtype)
    if overlap_before:
        w[:overlap_before] = _rise(overlap_before, device, dtype)
    if overlap_after:
        w[length - overlap_after:] = torch.minimum(w[length - overlap_after:],
                                                   _rise(overlap_after, device, dtype).flip(0))
    return w


def upscale_tiled(
    run: Callable[[torch.Tensor, tuple[int, ...]], dict[int, torch.Tensor]],
    latents: torch.Tensor,
    scales: tuple[int, ...],
    tile: int,
    overlap: int,
    *,
    window: int = 1,
    progress: bool | Callable[[int, int], None] = False,
) -> dict[int, torch.Tensor]:
    """Upscale ``latents`` (B, C, H, W) tile by tile with ``run`` and blend the overlaps; tiles start
    on the ``window`` grid (``tile_starts``).

    ``progress``: True for a tqdm bar, or a callable ``(tiles_done, tiles_total)`` called after
    each tile (e.g. a host application's progress hook).
    """
    if tile < 1 or not 0 <= overlap < tile:
        raise InputError(f"tiling needs tile >= 1 and 0 <= overlap < tile, got tile={tile}, overlap={overlap}")
    b, c, height, width = latents.shape
    ys, xs = tile_starts(height, tile, overlap, window), tile_starts(width, tile, overlap, window)
    # The blend sums in fp32, or in float64 for a float64 model (summed in fp32 before 2026-11-29, its
    # tiled outputs were fp32 numbers: ~1e-7 off where the reference is exact to ~1e-16).
    wide = torch.float64 if latents.dtype == torch.float64 else torch.float32
    acc = {s: torch.zeros(b, c, s * height, s * width, device=latents.device, dtype=wide) for s in scales}
    wsum = {s: torch.zeros(1, 1, s * height, s * width, device=latents.device, dtype=wide) for s in scales}
    out_dtype = None
    boxes = [(y0, x0) for y0 in ys for x0 in xs]
    bar = None
    if progress is True and len(boxes) > 1:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(boxes), desc="lua_fast tiles", unit="tile")
    hook = progress if callable(progress) else None
    # The bar is closed on any exit: one left open by an error, a Ctrl-C or a host's cancellation
    # raised from its progress hook stayed among tqdm's instances (before 2026-11-29), and each
    # later bar was drawn a line lower.
    with contextlib.closing(bar) if bar is not None else contextlib.nullcontext():
        for done, (y0, x0) in enumerate(boxes, 1):
            th, tw = min(tile, height - y0), min(tile, width - x0)
            outs = run(latents[..., y0:y0 + th, x0:x0 + tw], scales)
            # Overlap actually shared with the previous / next tile along each axis.
            iy, ix = ys.index(y0), xs.index(x0)
            oy0 = ys[iy - 1] + tile - y0 if iy > 0 else 0
            oy1 = y0 + th - ys[iy + 1] if iy + 1 < len(ys) else 0
            ox0 = xs[ix - 1] + tile - x0 if ix > 0 else 0
            ox1 = x0 + tw - xs[ix + 1] if ix + 1 < len(xs) else 0
            for s in scales:
                w = _ramp(s * th, s * oy0, s * oy1, latents.device, wide)[:, None] * \
                    _ramp(s * tw, s * ox0, s * ox1, latents.device, wide)[None, :]
                region = (..., slice(s * y0, s * (y0 + th)), slice(s * x0, s * (x0 + tw)))
                acc[s][region] += outs[s].to(wide) * w
                wsum[s][region] += w
                out_dtype = outs[s].dtype
            if bar is not None:
                bar.update()
            if hook is not None:
                hook(done, len(boxes))
    return {s: (acc[s] / wsum[s]).to(out_dtype) for s in scales}


def estimate_peak_bytes(config: LUAConfig, height: int, width: int, scales, *, element_size: int = 4,
                        batch: int = 1, materialises_scores: bool = True) -> int:
    """A conservative estimate of the activation memory of one forward pass (weights excluded).

    Trunk: the token stream, qkv, MLP hidden and, for eager backends, the (windows, heads, N, N)
    score tensors (``materialises_scores``). Heads: the largest conv input/output pair (the eager
    head also holds the pre-shuffle tensor, counted for every backend to stay conservative).
    """
    h = height + pad_amount(height, config.window_size)
    w = width + pad_amount(width, config.window_size)
    tokens, d, n = batch * h * w, config.embed_dim, config.window_size**2
    trunk = tokens * (4 * d + 3 * d + config.mlp_hidden)  # stream + residual + norm out + conv in, qkv, hidden
    if materialises_scores:
        trunk += 2 * tokens * n * max(config.num_heads)  # scores and softmax
    head = 0
    for s in scales:
        f = config.head_width
        stages = s.bit_length() - 1
        biggest = tokens * d + tokens * f
        for k in range(stages):
            pixels = tokens * 4**k
            biggest = max(biggest, pixels * f + pixels * 4 * f + pixels * 4 * f)  # in, pre-shuffle, shuffled
        head = max(head, biggest + tokens * s * s * config.out_channels)
    return (trunk + head) * element_size


# Below this estimate an untiled CPU pass is not checked against the RAM (no files read).
RAM_CHECK_FLOOR = 256 * 2**20


def warn_if_over_the_ram(config: LUAConfig, x: torch.Tensor, scales, *, element_size: int,
                         materialises_scores: bool) -> None:
    """Before an untiled pass on the CPU: warn (``LowMemoryWarning``) where its estimate exceeds all
    the RAM the process can still take. It may still fit (the resident peak measured 0.60-1.05x the
    estimate), so it runs; but if it does not, the kernel's OOM killer ends the process with no
    Python error, and this warning is then the only message saying why."""
    if x.device.type != "cpu" or torch.compiler.is_compiling():
        return
    need = estimate_peak_bytes(config, x.shape[-2], x.shape[-1], scales, element_size=element_size,
                               batch=x.shape[0], materialises_scores=materialises_scores)
    if need < RAM_CHECK_FLOOR:
        return
    available = host_memory.cpu_memory_available()
    if available is not None and need > available:
        one = estimate_peak_bytes(config, x.shape[-2], x.shape[-1], scales, element_size=element_size,
                                  materialises_scores=materialises_scores)
        how = ("in chunks of items that fit (the untiled result)" if x.shape[0] > 1 and one < available
               else "in tiles that fit")
        warn_the_caller(
            f"lua_fast: this untiled pass over a {tuple(x.shape)} latent needs an estimated {need / 2**30:.1f} GiB "
            f"of RAM and the process can still take {available / 2**30:.1f} GiB: the kernel may end the process. "
            f"Pass tile='auto' to upscale {how}.", LowMemoryWarning)


def untiled(model, x: torch.Tensor, scales: tuple[int, ...], progress) -> dict[int, torch.Tensor]:
    """One pass over the whole latent; a progress callable hears of it as one tile, (1, 1) (before
    2026-11-28 a host application's hook was never called when no tiling happened)."""
    out = model(x, scales)
    if callable(progress):
        progress(1, 1)
    return out


MIN_AUTO_TILE_WINDOWS = 2  # tile="auto" never goes below 2 x 2 windows


def default_overlap(tile: int, window: int, overlap: int | None = None) -> int:
    """The overlap a tile of ``tile`` gets: ``overlap`` if given, else two windows, at most half
    the tile; at most ``tile - window`` either way (``tile_starts``)."""
    return min(2 * window, tile // 2, tile - window) if overlap is None else min(overlap, tile - window)


def is_auto(tile) -> bool:
    """``tile`` names automatic tiling: "auto" in any case, as lua_fast's other names."""
    return isinstance(tile, str) and tile.strip().lower() == "auto"


def is_integer(value) -> bool:
    """An int or another integral type (NumPy's, read from an array or a config), not a bool: what
    the tile sizes, scales and counts of lua_fast's APIs take."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def run_tiled(model, x: torch.Tensor, scales: tuple[int, ...], config: LUAConfig, *, tile, overlap,
              memory_budget, progress, element_size: int, materialises_scores: bool) -> dict[int, torch.Tensor]:
    """``Upscaler.upscale``'s tiling: validate ``tile``/``overlap``, plan "auto", retry after OOM."""
    window = config.window_size

    def overlap_of(size):
        return default_overlap(size, window, overlap)

    if overlap is not None and (not is_integer(overlap) or overlap < 0):
        raise InputError(f"overlap must be an int >= 0, got {overlap!r}")
    overlap = None if overlap is None else int(overlap)
    tile = "auto" if is_auto(tile) else int(tile) if is_integer(tile) else tile
    memory_budget = memory_budget if not is_integer(memory_budget) else int(memory_budget)
    if tile != "auto":
        if not is_integer(tile) or tile < window:
            raise InputError(f"tile must be an int >= the window size {window}, or 'auto'; got {tile!r}")
        # Off the window grid a tile would be padded to the next multiple by the model anyway: take
        # that many real latent pixels instead (the same shapes, memory and work; more context).
        tile = -(-tile // window) * window
        if overlap is not None and overlap > tile - window:
            raise InputError(f"overlap must be an int in [0, tile - window] = [0, {tile - window}] (tiles start on "
                             f"the window grid, {window}), got {overlap!r} with tile={tile}")
        if memory_budget is not None:
            raise InputError("memory_budget only applies to tile='auto'")
        return upscale_tiled(model, x, scales, tile, overlap_of(tile), window=window, progress=progress)
    if memory_budget is not None and (not is_integer(memory_budget) or memory_budget < 1):
        raise InputError(f"memory_budget must be a positive int (bytes), got {memory_budget!r}")

    if memory_budget is None:
        memory_budget = default_memory_budget(x.device)
    plan = _AutoPlan(model, scales, config, overlap_of, memory_budget, element_size, materialises_scores)
    return plan.run(x, progress)


def _release(device: torch.device) -> None:
    """After an allocation failure: hand the failed forward's blocks back."""
    if device.type == "cuda":
        torch.cuda.empty_cache()


def outputs_bytes(batch: int, channels: int, height: int, width: int, scales, element_size: int) -> int:
    """The upscaled outputs of a (batch, channels, height, width) latent, one per scale."""
    return sum(s * s * height * width * batch * channels * element_size for s in scales)


def budget_for_items(config: LUAConfig, height: int, width: int, scales, *, items: int, batch: int,
                     element_size: int = 4, materialises_scores: bool = True) -> int:
    """The ``memory_budget`` under which tile="auto" runs a ``batch`` of latents ``items`` at a time,
    untiled: one chunk's estimate and the batch's outputs, which the chunks are written into."""
    return (estimate_peak_bytes(config, height, width, scales, element_size=element_size, batch=items,
                                materialises_scores=materialises_scores)
            + outputs_bytes(batch, config.out_channels, height, width, scales, element_size))


class _AutoPlan:
    """tile="auto": a batch that does not fit in one pass runs in chunks of items, which give the
    untiled result (no seams, no overlap work); only an item that does not fit alone is tiled.
    (Before 2026-11-29 a batch over the budget was tiled as a whole: tiles small enough for every
    item at once, each seam an approximation a smaller batch would not have needed.)"""

    def __init__(self, model, scales, config: LUAConfig, overlap_of, budget: int | None, element_size: int,
                 materialises_scores: bool) -> None:
        self.model, self.scales, self.config, self.overlap_of = model, scales, config, overlap_of
        self.budget, self.element_size, self.materialises_scores = budget, element_size, materialises_scores
        self.window = config.window_size
        self.smallest = MIN_AUTO_TILE_WINDOWS * self.window

    def estimate(self, h: int, w: int, batch: int) -> int:
        return estimate_peak_bytes(self.config, h, w, self.scales, element_size=self.element_size, batch=batch,
                                   materialises_scores=self.materialises_scores)

    def outputs_bytes(self, batch: int, height: int, width: int) -> int:
        return outputs_bytes(batch, self.config.out_channels, height, width, self.scales, self.element_size)

    def run(self, x: torch.Tensor, progress) -> dict[int, torch.Tensor]:
        batch, height, width = x.shape[0], *x.shape[-2:]
        if batch == 1:
            return self.one_item(x, progress, held=0)
        chunk = batch
        if self.budget is not None and self.estimate(height, width, batch) > self.budget:
            held = self.outputs_bytes(batch, height, width)  # the batch's outputs, written chunk by chunk
            chunk = max((c for c in range(1, batch) if self.estimate(height, width, c) + held <= self.budget),
                        default=1)
        if chunk == batch:
            out = self.untiled_or_none(x, progress)
            if out is not None:
                return out
            chunk = (batch + 1) // 2
        return self.in_chunks(x, chunk, progress)

    def untiled_or_none(self, x: torch.Tensor, progress) -> dict[int, torch.Tensor] | None:
        """The untiled pass, or None after an allocation failure (its memory handed back, outside
        the ``except`` block, whose traceback would hold the failed pass's tensors)."""
        try:
            return untiled(self.model, x, self.scales, progress)
        except (torch.OutOfMemoryError, RuntimeError) as exc:
            if not is_out_of_memory(exc):
                raise
        _release(x.device)
        return None

    def in_chunks(self, x: torch.Tensor, chunk: int, progress) -> dict[int, torch.Tensor]:
        """Items ``chunk`` at a time into the batch's outputs; a chunk that runs out of memory is
        halved for the rest, down to one item, which ``one_item`` tiles if it must."""
        batch, height, width = x.shape[0], *x.shape[-2:]
        held = self.outputs_bytes(batch, height, width)
        outs: dict[int, torch.Tensor] = {}
        report = _BatchProgress(progress, batch)
        done = 0
        with contextlib.closing(report):
            while done < batch:
                part = x[done:done + chunk]
                if len(part) == 1:
                    got = self.one_item(part, report.hook(done, 1), held=held)
                else:
                    got = self.untiled_or_none(part, report.hook(done, len(part)))
                    if got is None:
                        chunk = (chunk + 1) // 2  # (3 -> 2, 2 -> 1)
                        continue
                for s, out in got.items():
                    if s not in outs:
                        outs[s] = out.new_empty((batch, *out.shape[1:]))
                    outs[s][done:done + len(part)] = out
                done += len(part)
        return outs

    def one_item(self, x: torch.Tensor, progress, *, held: int) -> dict[int, torch.Tensor]:
        """One latent: untiled if it fits, else tiles of the least work within the budget
        (``held``: bytes the caller holds meanwhile), smaller after an allocation failure."""
        height, width = x.shape[-2:]
        window, smallest, budget = self.window, self.smallest, self.budget

        def estimate(h, w):
            return self.estimate(h, w, x.shape[0])

        def cheapest(largest):  # the tile up to `largest` doing the least work
            return least_work_tile(height, width, largest, smallest, window, self.overlap_of)

        # A tiled run also holds the full-size blend (before 2026-11-28 not counted: at x4 in fp32 it
        # is 33x the latent's own size).
        blend = blend_bytes(x.shape[0], self.config.out_channels, height, width, self.scales, self.element_size)
        size = None  # None: no tiling needed
        if budget is not None and estimate(height, width) + held > budget:
            # A tile is cut to the latent's sides (a wide latent's tiles are as high as the latent):
            # its memory is that of the cut tile (before 2026-11-29 a square tile's was counted, so a
            # 64 x 2048 latent went in tiles of 176 where tiles of 512 fit).
            size = max(height, width) // window * window
            while size > window and estimate(min(size, height), min(size, width)) + blend + held > budget:
                size -= window
            if size < smallest:  # tiles this small would see too little context (large seams)
                others = f" and the batch's outputs it is copied into ({held:,})" if held else ""
                raise InputError(
                    f"memory_budget {budget:,} bytes is below the estimated "
                    f"{estimate(min(smallest, height), min(smallest, width)) + blend + held:,} bytes of the "
                    f"smallest automatic tile ({smallest}x{smallest}) with the full-size output it is blended "
                    f"into ({blend:,}){others}; raise the budget, or pass tile=N to choose a tile yourself"
                )
            size = cheapest(size)
        if size is None:
            out = self.untiled_or_none(x, progress)
            if out is not None:
                return out
            size = cheapest(max(smallest, (max(height, width) // 2) // window * window))
        while True:
            try:
                return upscale_tiled(self.model, x, self.scales, size, self.overlap_of(size), window=window,
                                     progress=progress)
            except (torch.OutOfMemoryError, RuntimeError) as exc:
                if not is_out_of_memory(exc) or size <= smallest:
                    raise
                _release(x.device)
                size = cheapest(max(smallest, (size // 2) // window * window))


class _BatchProgress:
    """One progress report over a batch run in chunks: a chunk of ``n`` items starting at item
    ``start`` reports (tiles done, tiles) of its own; this reports (start * t + done * n, batch * t),
    t being the chunk's tile count, so a tiled item counts its tiles and an untiled chunk its items.
    ``progress=True`` gets one tqdm bar for the batch."""

    def __init__(self, progress, batch: int) -> None:
        self.batch, self.bar, self.callback = batch, None, progress if callable(progress) else None
        self.show = progress is True

    def hook(self, start: int, n: int):
        def report(done: int, total: int) -> None:
            overall, whole = start * total + done * n, self.batch * total
            if self.show and self.bar is None:  # (at the first pass done: an error before shows no bar)
                from tqdm.auto import tqdm

                self.bar = tqdm(total=whole, desc="lua_fast items and tiles", unit="pass")
            if self.bar is not None:
                self.bar.total = whole
                self.bar.n = overall
                self.bar.refresh()
            if self.callback is not None:
                self.callback(overall, whole)
        return report

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
