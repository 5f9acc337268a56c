"""Tiled inference: blending, bounds against the untiled result, auto mode, errors."""

import pytest
import torch

import lua_fast
from lua_fast import InputError, LUAConfig
from lua_fast.reference import LUA
from lua_fast.tiling import _ramp, cuda_memory_available, estimate_peak_bytes, tile_starts, upscale_tiled
from conftest import rel_err


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    up = lua_fast.load(LUA(LUAConfig.small()).state_dict())
    x = torch.randn(1, 16, 64, 64, generator=torch.Generator().manual_seed(1))
    return up, x, up.upscale(x, scale=(2, 4))


def test_tile_starts_cover_the_side():
    assert tile_starts(64, 32, 16) == [0, 16, 32]
    assert tile_starts(70, 32, 8) == [0, 24, 38]  # the last tile is aligned to the border
    assert tile_starts(20, 32, 8) == [0]
    for size, tile, overlap in [(64, 32, 16), (70, 32, 8), (100, 24, 0), (33, 16, 15)]:
        starts = tile_starts(size, tile, overlap)
        covered = torch.zeros(size, dtype=torch.bool)
        for s in starts:
            covered[s:s + tile] = True
        assert covered.all() and starts[-1] + tile == size


def test_tiles_start_on_the_window_grid_and_overlap_at_least_as_asked():
    assert tile_starts(70, 32, 8, 8) == [0, 24, 40]  # the last one reaches the end, 30 pixels long
    assert tile_starts(64, 32, 16, 8) == [0, 16, 32]
    assert tile_starts(100, 64, 32, 16) == [0, 32, 48]
    for size in range(1, 120, 7):
        for window in (1, 4, 8, 16):
            for tile in range(window, 72, window):
                for overlap in range(0, tile - window + 1, 3):
                    starts = tile_starts(size, tile, overlap, window)
                    assert all(s % window == 0 for s in starts) and starts[0] == 0, (size, tile, overlap, window)
                    assert starts[-1] + tile >= size and size - starts[-1] > (tile - window if size > tile else 0)
                    ends = [s + tile for s in starts[:-1]]
                    assert all(end - nxt >= overlap for end, nxt in zip(ends, starts[1:])), (size, tile, overlap)


def test_latents_off_the_window_grid_tile_as_well_as_on_it(small):
    """Before 2026-11-29 the last tile of a side was aligned to the latent's end, off the window grid
    when the side is not a multiple of it: that tile computed other windows than the untiled pass
    everywhere (70x70, tile 32 / overlap 8: 14.9% off; 100x100, 48 / 16: 12.7%). On the grid: 1.2%
    and 0.08%. A tile off the grid is widened to it (what the model would pad it to): the same bits."""
    up, _, _ = small
    for size, tile, overlap, bound in ((70, 32, 8, 0.02), (100, 48, 16, 0.005), (37, 20, 4, 0.03)):
        z = torch.randn(1, 16, size, size, generator=torch.Generator().manual_seed(size))
        want = up.upscale(z, scale=(2, 4))
        got = up.upscale(z, scale=(2, 4), tile=tile, overlap=overlap)
        for s in (2, 4):
            assert rel_err(got[s], want[s]) <= bound, (size, tile, overlap, s, rel_err(got[s], want[s]))
    z = torch.randn(2, 16, 45, 29, generator=torch.Generator().manual_seed(5))
    assert torch.equal(up.upscale(z, tile=20, overlap=4), up.upscale(z, tile=24, overlap=4))


def test_ramps_give_up_the_tiles_edge_and_blend_a_constant_exactly():
    """Over an overlap of 6 pixels a tile has weight 0 on the 2 nearest its edge, ramps over the
    middle 2 and keeps 1 on the 2 nearest its inside; the neighbour's weights mirror them."""
    w = _ramp(20, 6, 6, torch.device("cpu"))
    torch.testing.assert_close(w[:6], torch.tensor([0, 0, 1 / 3, 2 / 3, 1, 1]))
    assert w[6:14].eq(1).all() and torch.equal(w[14:], w[:6].flip(0))
    x = torch.ones(1, 1, 37, 45)
    out = upscale_tiled(lambda t, scales: {s: torch.full((1, 1, s * t.shape[-2], s * t.shape[-1]), 3.0)
                                           for s in scales}, x, (2,), 16, 6)
    torch.testing.assert_close(out[2], torch.full((1, 1, 74, 90), 3.0))


def test_every_pixel_keeps_weight_whatever_the_tiles_and_overlaps():
    """Where one tile's weight is 0 another's is not, for any side, tile and overlap (overlaps past
    half a tile included, where three tiles share pixels): a constant blends back to itself, never
    0/0. Each output pixel's weight sum is the product of its row's and column's, so one axis is
    checked (a 1-pixel-high latent). With a window grid too, where the last tile is shorter."""
    constant = lambda t, scales: {s: torch.full((1, 1, s * t.shape[-2], s * t.shape[-1]), 3.0) for s in scales}
    for window, tiles in ((1, (1, 2, 3, 5, 8, 13, 16, 24, 32)), (4, (4, 8, 12, 20)), (8, (8, 16, 24))):
        for tile in tiles:
            for overlap in sorted({0, 1, tile // 4, tile // 2, tile // 2 + 1, tile - 1} & set(range(tile - window + 1))):
                for size in range(1, 3 * tile + 4, max(1, tile // 3)):
                    out = upscale_tiled(constant, torch.ones(1, 1, 1, size), (2, 4), tile, overlap, window=window)
                    for s in (2, 4):
                        torch.testing.assert_close(
                            out[s], torch.full((1, 1, s, s * size), 3.0), rtol=1e-6, atol=0,
                            msg=lambda m: f"size {size}, tile {tile}, overlap {overlap}, window {window}, x{s}: {m}")


def test_a_float64_blend_keeps_float64_values():
    """A stand-in model whose outputs are not fp32 numbers: the blended float64 result must keep their
    bits where one tile covers a pixel, and blend in float64 where tiles overlap. Before 2026-11-29 the
    blend summed in fp32, so every tiled float64 output was an fp32 number."""
    x = torch.rand(1, 1, 37, 45, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    third = 1 / 3  # not an fp32 number
    out = upscale_tiled(lambda t, scales: {s: torch.full((1, 1, s * t.shape[-2], s * t.shape[-1]), third,
                                                         dtype=torch.float64) for s in scales}, x, (2,), 16, 6)
    assert out[2].dtype == torch.float64
    torch.testing.assert_close(out[2], torch.full_like(out[2], third), rtol=1e-15, atol=0)


def test_one_tile_is_the_untiled_result(small):
    up, x, full = small
    out = up.upscale(x, scale=(2, 4), tile=64)
    for s in (2, 4):
        assert torch.equal(out[s], full[s])


def test_tiled_within_the_stated_bound_and_overlap_helps(small):
    """README: tile 32, overlap 16 on the small config: <= 0.5% relative (measured 0.14% x2, 0.13% x4);
    before 2026-11-29 the ramps ran over the whole overlap, giving the tile-edge pixels weight:
    2.8% / 2.4%. Overlap 8: <= 2% (measured 1.3%, before 4.0%)."""
    up, x, full = small
    blended = up.upscale(x, scale=(2, 4), tile=32, overlap=16)
    narrow = up.upscale(x, scale=(2, 4), tile=32, overlap=8)
    hard = up.upscale(x, scale=(2, 4), tile=32, overlap=0)
    for s in (2, 4):
        assert blended[s].shape == full[s].shape
        assert rel_err(blended[s], full[s]) <= 0.005
        assert rel_err(narrow[s], full[s]) <= 0.02
        assert rel_err(hard[s], full[s]) > 10 * rel_err(narrow[s], full[s])


def test_auto_tiles_only_over_budget(small):
    up, x, full = small
    need = estimate_peak_bytes(up.config, 64, 64, (2,))
    assert torch.equal(up.upscale(x, tile="auto", memory_budget=need), full[2])  # fits: untiled
    tiled = up.upscale(x, tile="auto", memory_budget=need // 3, progress=True)
    assert not torch.equal(tiled, full[2]) and rel_err(tiled, full[2]) < 0.1
    assert torch.equal(up.upscale(x, tile="auto"), full[2])  # CPU with RAM to spare: untiled


def test_a_progress_hook_hears_of_every_pass(small):
    """A host application's hook (ComfyUI's bar, a server's status) is told when the work is done
    whether or not tiling happened; before 2026-11-28 an untiled pass never called it."""
    up, x, full = small
    need = estimate_peak_bytes(up.config, 64, 64, (2,))
    for kwargs, calls in [({}, [(1, 1)]), ({"tile": "auto", "memory_budget": need}, [(1, 1)]),
                          ({"tile": 48}, [(1, 4), (2, 4), (3, 4), (4, 4)])]:
        seen = []
        out = up.upscale(x, progress=lambda done, total: seen.append((done, total)), **kwargs)
        assert seen == calls, kwargs
        if "tile" not in kwargs or kwargs["tile"] == "auto":
            assert torch.equal(out, full[2])


class Cancelled(Exception):
    """What a host raises from its progress hook to stop a job (ComfyUI's hook raises its
    InterruptProcessingException when the user presses Cancel)."""


def test_a_cancelled_tiled_pass_closes_its_bar(small):
    """A cancellation raised from the progress hook reaches the caller as raised, after the tile it
    was raised on; and a tiled pass stopped by an exception closes its tqdm bar while the exception
    lives (a notebook keeps the last traceback). Before 2026-11-29 the bar stayed open among tqdm's
    instances, and every later bar was drawn a line lower."""
    from tqdm import tqdm

    up, x, _ = small
    seen = []

    def cancel_at_the_second_tile(done, total):
        seen.append(done)
        if done == 2:
            raise Cancelled

    with pytest.raises(Cancelled):
        up.upscale(x, tile=48, progress=cancel_at_the_second_tile)
    assert seen == [1, 2]

    passes = []

    def fails_on_the_second_tile(tile, scales):
        passes.append(tile.shape)
        if len(passes) == 2:
            raise Cancelled
        return up.model(tile, scales)

    open_bars = len(tqdm._instances)
    with pytest.raises(Cancelled) as stopped:
        upscale_tiled(fails_on_the_second_tile, x.to(up.dtype), (2,), 48, 16, window=8, progress=True)
    assert len(passes) == 2 and stopped.value is not None
    assert len(tqdm._instances) == open_bars

def test_estimate_grows_with_size_and_scale():
    c = LUAConfig.flux()
    assert estimate_peak_bytes(c, 64, 64, (2,)) < estimate_peak_bytes(c, 128, 128, (2,))
    assert estimate_peak_bytes(c, 128, 128, (2,)) < estimate_peak_bytes(c, 128, 128, (4,))
    assert estimate_peak_bytes(c, 128, 128, (2,), materialises_scores=False) < estimate_peak_bytes(c, 128, 128, (2,))


def test_tiling_errors(small):
    up, x, _ = small
    with pytest.raises(InputError, match="tile must be an int >= the window size 8"):
        up.upscale(x, tile=4)
    with pytest.raises(InputError, match="overlap must be an int in \\[0, tile - window\\] = \\[0, 8\\]"):
        up.upscale(x, tile=16, overlap=9)  # (on the window grid, 16-pixel tiles overlap by 8 at most)
    with pytest.raises(InputError, match="cannot be combined"):
        up.upscale(x, tile=16, cuda_graph=True)


def test_numpy_integers_are_tile_sizes(small):
    """As scales already were: NumPy integers (a size read from an array or a config) count as the int
    they hold; before 2026-11-29 "tile must be an int >= the window size 8, got 16"."""
    import numpy as np

    up, x, _ = small
    want = up.upscale(x, tile=16, overlap=4)
    assert torch.equal(up.upscale(x, tile=np.int64(16), overlap=np.int32(4)), want)
    assert torch.equal(up.upscale(x, tile="auto", memory_budget=np.int64(2**40)), up.upscale(x))
    assert torch.equal(up.upscale(x, tile="Auto", memory_budget=2**40), up.upscale(x))  # (any case)
    with pytest.raises(InputError, match="tile must be an int"):
        up.upscale(x, tile=np.float64(16))


@pytest.mark.parametrize("fraction, reserved, allocated, expected", [
    (1.0, 30, 20, 10 + 10),  # the driver's free 10 GiB, plus 10 GiB cached by the allocator
    (0.25, 18, 12, 2 + 6),  # a 20 GiB per-process cap leaves 2 GiB of new segments (the driver has 10)
    (0.125, 18, 12, 0 + 6),  # a cap set below what is already reserved: only the cached memory
    (0.0, 30, 20, 10 + 10),  # 0 or an allocator without the setting: no cap
    (RuntimeError("not supported by this allocator"), 30, 20, 10 + 10),
])
def test_auto_budget_counts_the_allocator_cache_and_the_process_cap(monkeypatch, fraction, reserved, allocated,
                                                                    expected):
    """tile="auto"'s default budget on CUDA: what this process can still allocate, which is neither
    the driver's free memory alone (it misses the allocator's cache) nor above a per-process cap
    (set_per_process_memory_fraction; the forward would hit an out-of-memory error first)."""
    gib = 2**30
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (10 * gib, 80 * gib))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device: reserved * gib)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device: allocated * gib)
    def get_fraction(device):
        if isinstance(fraction, Exception):
            raise fraction
        return fraction

    monkeypatch.setattr(torch.cuda, "get_per_process_memory_fraction", get_fraction)
    assert cuda_memory_available(torch.device("cuda")) == expected * gib


# ------------------------------------------------------------------ tile="auto" on the CPU
def _fake_host(tmp_path, meminfo_kib, cgroup_line, files=None):
    """A /proc and a /sys/fs/cgroup holding what each test case's machine would show."""
    proc, root = tmp_path / "proc", tmp_path / "cgroup"
    (proc / "self").mkdir(parents=True)
    (proc / "meminfo").write_text(f"MemTotal:       65000000 kB\nMemFree:  1000 kB\nMemAvailable:   {meminfo_kib} kB\n")
    (proc / "self" / "cgroup").write_text(cgroup_line)
    root.mkdir()
    for rel, text in (files or {}).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return proc, root


GIB = 2**30
_V2 = {"cgroup.controllers": "cpu memory"}


_HOSTS = [
    ("no cgroup limit (v2 'max')", 60, "0::/user.slice\n",
     {**_V2, "user.slice/memory.max": "max", "user.slice/memory.current": str(5 * GIB)}, 60),
    ("a container's 8 GiB (v2, namespaced: the path reads '/')", 60, "0::/\n",
     {**_V2, "memory.max": str(8 * GIB), "memory.current": str(3 * GIB)}, 5),
    ("its reclaimable page cache counts as free", 60, "0::/\n",
     {**_V2, "memory.max": str(8 * GIB), "memory.current": str(3 * GIB),
      "memory.stat": f"anon 123\ninactive_file {GIB}\nactive_file 7\n"}, 6),
    ("a tighter limit on a parent cgroup", 60, "0::/pod/app\n",
     {**_V2, "pod/memory.max": str(4 * GIB), "pod/memory.current": str(3 * GIB),
      "pod/app/memory.max": "max", "pod/app/memory.current": str(2 * GIB)}, 1),
    ("the host has less than the cgroup allows", 2, "0::/\n",
     {**_V2, "memory.max": str(8 * GIB), "memory.current": str(GIB)}, 2),
    ("cgroup v1 beside v2 (hybrid), with v1's 'unlimited' 2^63", 60,
     "12:memory:/docker/abc\n0::/docker/abc\n",
     {"memory/docker/abc/memory.limit_in_bytes": str(16 * GIB),
      "memory/docker/abc/memory.usage_in_bytes": str(6 * GIB),
      "memory/docker/abc/memory.stat": f"cache 1\ntotal_inactive_file {2 * GIB}\n",
      "memory/docker/memory.limit_in_bytes": "9223372036854771712",
      "memory/docker/memory.usage_in_bytes": str(6 * GIB)}, 12),
    ("a v1 path from another mount namespace: the mount's root is the container's", 60,
     "4:cpu,memory:/elsewhere/xyz\n",
     {"memory/memory.limit_in_bytes": str(10 * GIB), "memory/memory.usage_in_bytes": str(4 * GIB)}, 6),
    ("a usage over the limit leaves nothing", 60, "0::/\n",
     {**_V2, "memory.max": str(GIB), "memory.current": str(2 * GIB)}, 0),
]


@pytest.mark.parametrize("name, meminfo_gib, cgroup_line, files, expected_gib", _HOSTS, ids=[h[0] for h in _HOSTS])
def test_cpu_memory_available_reads_the_tightest_limit(tmp_path, name, meminfo_gib, cgroup_line, files,
                                                       expected_gib):
    """tile="auto"'s CPU budget is what the kernel lets the process take: MemAvailable, capped by its
    memory cgroup and every cgroup above it (a container's limit), page cache reclaimable."""
    from lua_fast.host_memory import cpu_memory_available

    proc, root = _fake_host(tmp_path, meminfo_gib * GIB // 1024, cgroup_line, files)
    assert cpu_memory_available(proc, root) == expected_gib * GIB, name


_QUOTAS = [
    ("no quota (v2 'max')", "0::/\n", {**_V2, "cpu.max": "max 100000"}, None),
    ("a container run with --cpus 4 (v2)", "0::/\n", {**_V2, "cpu.max": "400000 100000"}, 4.0),
    ("a tighter quota on a parent cgroup (v2)", "0::/pod/app\n",
     {**_V2, "pod/cpu.max": "150000 100000", "pod/app/cpu.max": "max 100000"}, 1.5),
    ("v1 without a quota (-1)", "3:cpu,cpuacct:/docker/abc\n0::/docker/abc\n",
     {"cpu/docker/abc/cpu.cfs_quota_us": "-1", "cpu/docker/abc/cpu.cfs_period_us": "100000"}, None),
    ("v1 with a quota, beside a v2 tree without one (hybrid)", "3:cpu,cpuacct:/docker/abc\n0::/docker/abc\n",
     {"cpu/docker/abc/cpu.cfs_quota_us": "50000", "cpu/docker/abc/cpu.cfs_period_us": "100000",
      "unified/docker/abc/cpu.max": "max 100000"}, 0.5),
    ("no cpu controller listed", "4:memory:/x\n", {"memory/x/memory.limit_in_bytes": "1"}, None),
]


@pytest.mark.parametrize("name, cgroup_line, files, expected", _QUOTAS, ids=[q[0] for q in _QUOTAS])
def test_cpu_quota_reads_the_tightest_cgroup(tmp_path, name, cgroup_line, files, expected):
    from lua_fast.host_memory import cpu_quota

    proc, root = _fake_host(tmp_path, 1, cgroup_line, files)
    assert cpu_quota(proc, root) == expected, name
    assert cpu_quota(tmp_path / "no-proc", root) is None


def test_cpu_memory_is_unknown_without_procfs(tmp_path):
    from lua_fast.host_memory import cpu_memory_available, meminfo_available

    assert cpu_memory_available(tmp_path / "no-proc", tmp_path) is None  # macOS, Windows
    assert meminfo_available("MemTotal: 1000 kB\nMemFree: 10 kB\n") is None  # kernels before 3.14
    assert cpu_memory_available() is None or cpu_memory_available() > 0  # this machine's, read for real


def _tiles_seen(up, x, **kwargs):
    seen = []
    out = up.upscale(x, tile="auto", progress=lambda done, total: seen.append(total), **kwargs)
    return out, seen[-1]


def test_auto_tiles_on_the_cpu_within_the_ram_it_can_take(small, monkeypatch):
    """On the CPU an over-large forward is not an exception but the OOM killer ending the process;
    before 2026-11-28 tile="auto" never tiled there without an explicit budget."""
    from lua_fast import host_memory, tiling

    up, x, full = small
    need = estimate_peak_bytes(up.config, 64, 64, (2,))
    monkeypatch.setattr(host_memory, "cpu_memory_available", lambda: need // 2)
    assert tiling.default_memory_budget(torch.device("cpu")) == int(tiling.CPU_BUDGET_FRACTION * (need // 2))
    out, tiles = _tiles_seen(up, x)
    assert tiles > 1 and rel_err(out, full[2]) < 0.1
    for plenty in (100 * need, None):  # enough RAM, or a machine that cannot tell: one pass
        monkeypatch.setattr(host_memory, "cpu_memory_available", lambda: plenty)
        out, tiles = _tiles_seen(up, x)
        assert tiles == 1 and torch.equal(out, full[2])


def test_auto_counts_the_full_size_blend_it_writes_into(small):
    """A tiled run holds, besides one tile's forward, the full-size fp32 sums it blends into (at x4,
    33x the latent in fp32): a budget that fits the tile but not the blend takes smaller tiles."""
    from lua_fast.tiling import blend_bytes

    up, x, full = small
    estimate = lambda side: estimate_peak_bytes(up.config, side, side, (2,))  # noqa: E731
    blend = blend_bytes(1, 16, 64, 64, (2,), 4)
    assert blend == 4 * 64 * 64 * (16 * 8 + 4)
    _, at_32 = _tiles_seen(up, x, memory_budget=estimate(32) + blend)
    _, below_32 = _tiles_seen(up, x, memory_budget=estimate(32) + blend - 1)
    assert at_32 == 9 and below_32 > at_32  # 32-pixel tiles overlapping by 16: 3 x 3
    with pytest.raises(InputError, match=r"smallest automatic tile \(16x16\) with the full-size output"):
        up.upscale(x, tile="auto", memory_budget=estimate(16) + blend - 1)


def _auto_plan(config, height, width, budget_tile):
    """The tiles tile="auto" runs (a stand-in model records them) under a budget that fits one
    ``budget_tile`` (h, w) tile and the blend; and that budget."""
    from lua_fast.tiling import blend_bytes, run_tiled

    blend = blend_bytes(1, 16, height, width, (2,), 4)
    budget = estimate_peak_bytes(config, *budget_tile, (2,)) + blend
    seen = []

    def model(z, scales):
        seen.append(tuple(z.shape[-2:]))
        return {s: torch.zeros(1, 16, s * z.shape[-2], s * z.shape[-1]) for s in scales}

    run_tiled(model, torch.zeros(1, 16, height, width), (2,), config, tile="auto", overlap=None, memory_budget=budget,
              progress=None, element_size=4, materialises_scores=True)
    fits = all(estimate_peak_bytes(config, h, w, (2,)) + blend <= budget for h, w in seen)
    return seen, fits


def test_auto_counts_a_wide_latents_tiles_as_cut_to_its_height():
    """A tile is cut to the latent's sides; before 2026-11-29 "auto" counted it square, so a
    64 x 2048 latent whose budget fits 64 x 512 tiles ran 14 tiles of 64 x 176."""
    seen, fits = _auto_plan(LUAConfig(), 64, 2048, (64, 512))
    assert fits and len(seen) == 5 and max(w for _, w in seen) >= 448


@pytest.mark.parametrize("side, budget_side, before, now", [(256, 176, 1.89, 1.27), (96, 80, 2.78, 1.78)])
def test_auto_takes_the_tile_doing_the_least_work(side, budget_side, before, now):
    """The largest tile the budget fits overhangs its neighbour at the end of a side (tiles start on
    the window grid): 256 in tiles of 176 start at 0 and 80. "auto" takes the tile of least work
    up to that size (``least_work_tile``); before 2026-11-29, the largest (``before``: its work
    over the untiled pass's)."""
    from lua_fast.tiling import least_work_tile, tiled_work

    seen, fits = _auto_plan(LUAConfig(), side, side, (budget_side, budget_side))
    assert fits and len(seen) == 4
    assert sum(h * w for h, w in seen) / side**2 == pytest.approx(now, abs=0.01)
    assert tiled_work(side, side, budget_side, 32, 16) / side**2 == pytest.approx(before, abs=0.01)
    assert least_work_tile(side, side, budget_side, 32, 16, lambda tile: 32) == max(h for h, _ in seen)


def test_least_work_tile_never_takes_more_tiles_than_the_largest():
    """The tile of least work among those needing no more tiles than the largest; never above the
    largest nor below the smallest, on the window grid. (Smaller tiles, with smaller default
    overlaps, can do less work in more passes: 96 x 96 in 25 tiles of 32 against 16 of 48.)"""
    from lua_fast.tiling import default_overlap, least_work_tile, tiled_work

    def overlap(tile):
        return default_overlap(tile, 8)

    def count(height, width, tile):
        return len(tile_starts(height, tile, overlap(tile), 8)) * len(tile_starts(width, tile, overlap(tile), 8))

    for height, width, largest in [(160, 300, 128), (64, 2048, 512), (100, 37, 48), (30, 30, 16), (500, 90, 200),
                                   (96, 96, 48), (128, 128, 88)]:
        largest = largest // 8 * 8
        tile = least_work_tile(height, width, largest, 16, 8, overlap)
        assert 16 <= tile <= largest and tile % 8 == 0
        assert count(height, width, tile) <= count(height, width, largest)
        work = tiled_work(height, width, tile, overlap(tile), 8)
        assert all(tiled_work(height, width, t, overlap(t), 8) >= work
                   for t in range(16, largest + 1, 8) if count(height, width, t) <= count(height, width, largest))
    assert least_work_tile(96, 96, 48, 32, 16, lambda t: default_overlap(t, 16)) == 48  # not 32 (25 tiles)


def test_auto_retries_smaller_tiles_when_the_cpu_allocator_refuses(small):
    """Under `ulimit -v` or with overcommit off, PyTorch's CPU allocator raises a plain RuntimeError;
    tile="auto" now retries with smaller tiles there as it does after a CUDA out-of-memory error
    (before 2026-11-28 it re-raised on the CPU). Other errors still surface."""
    from lua_fast.tiling import run_tiled

    up, x, _ = small
    refused = RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate "
                           "memory: you tried to allocate 8589934592 bytes. Error code 12 (Cannot allocate memory)")
    sides = []

    def model(z, scales):  # refuses latents wider than 32, as a capped process would
        sides.append(z.shape[-1])
        if z.shape[-1] > 32:
            raise refused
        return up.model(z, scales)

    kwargs = dict(tile="auto", overlap=None, memory_budget=None, progress=None, element_size=4,
                  materialises_scores=True)
    out = run_tiled(model, x, (2,), up.config, **kwargs)
    assert sides[0] == 64 and set(sides[1:]) == {32}
    assert torch.equal(out[2], up.upscale(x, tile=32))

    def broken(z, scales):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    with pytest.raises(RuntimeError, match="cannot be multiplied"):
        run_tiled(broken, x, (2,), up.config, **kwargs)


def test_an_untiled_cpu_pass_over_the_ram_is_warned_before_it_runs(small, monkeypatch):
    """If it does not fit, the OOM killer ends the process with no Python error: the warning, printed
    before the pass, is then the only message saying why (new on 2026-11-28). It still runs: the
    resident peak measured 0.60-1.05x the estimate, so it may fit."""
    import warnings

    from lua_fast import LowMemoryWarning, host_memory, tiling

    up, x, full = small
    need = estimate_peak_bytes(up.config, 64, 64, (2,))
    monkeypatch.setattr(tiling, "RAM_CHECK_FLOOR", 0)  # (the small config's pass is below the floor)
    monkeypatch.setattr(host_memory, "cpu_memory_available", lambda: need - 1)
    with pytest.warns(LowMemoryWarning, match=r"\(1, 16, 64, 64\) latent needs an estimated .* tile='auto' to "
                      "upscale in tiles that fit"):
        assert torch.equal(up.upscale(x), full[2])
    # A batch whose items fit one at a time is told of chunks (the untiled result), not tiles.
    monkeypatch.setattr(host_memory, "cpu_memory_available", lambda: 2 * need)
    with pytest.warns(LowMemoryWarning, match=r"\(3, 16, 64, 64\) latent .* in chunks of items that fit"):
        up.upscale(x.expand(3, -1, -1, -1))
    monkeypatch.setattr(host_memory, "cpu_memory_available", lambda: need - 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        up.upscale(x, tile="auto")  # tiled runs plan within the budget instead
        for available in (need, None):  # enough, or unknown: no warning
            monkeypatch.setattr(host_memory, "cpu_memory_available", lambda: available)
            up.upscale(x)
        monkeypatch.setattr(tiling, "RAM_CHECK_FLOOR", need + 1)  # small passes read no files
        monkeypatch.setattr(host_memory, "cpu_memory_available", lambda: 1 / 0)
        up.upscale(x)


# ------------------------------------------------------------------ tile="auto" with a batch
def _recording(up, refuse=lambda z: False):
    """``up.model`` with the (batch, h, w) of every call recorded; ``refuse(z)`` raises the CPU
    allocator's out-of-memory error instead."""
    calls = []

    def model(z, scales):
        calls.append((z.shape[0], *z.shape[-2:]))
        if refuse(z):
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 bytes")
        return up.model(z, scales)

    return model, calls


def _run_auto(up, model, x, budget, progress=None):
    from lua_fast.tiling import run_tiled

    return run_tiled(model, x, (2,), up.config, tile="auto", overlap=None, memory_budget=budget, progress=progress,
                     element_size=4, materialises_scores=True)[2]


def test_auto_runs_a_batch_over_the_budget_in_chunks_of_items_untiled(small):
    """A batch that does not fit runs as chunks of whole items: the untiled result, no seams. Before
    2026-11-29 the whole batch was tiled (here 4 tiles of 40 x 40 at batch 4, 0.096% off the untiled
    output, 1.5x the time of the chunks)."""
    up, _, _ = small
    x = torch.randn(4, 16, 64, 64, generator=torch.Generator().manual_seed(7))
    held = 4 * 64 * 64 * 4 * 16 * 4  # the batch's x2 outputs, written chunk by chunk
    budget = estimate_peak_bytes(up.config, 64, 64, (2,), batch=2) + held
    model, calls = _recording(up)
    seen = []
    out = _run_auto(up, model, x, budget, progress=lambda done, total: seen.append((done, total)))
    assert calls == [(2, 64, 64), (2, 64, 64)] and seen == [(2, 4), (4, 4)]
    assert rel_err(out, up.upscale(x)) < 1e-5  # (library GEMMs are not batch-invariant: ~1e-7)
    # Three items fit no better than two: chunks of 2 and then the last item alone.
    model, calls = _recording(up)
    _run_auto(up, model, x[:3], estimate_peak_bytes(up.config, 64, 64, (2,), batch=2) + held)
    assert calls == [(2, 64, 64), (1, 64, 64)]
    # The outputs held meanwhile count: a budget for three items' passes, but not beside the outputs.
    model, calls = _recording(up)
    _run_auto(up, model, x, estimate_peak_bytes(up.config, 64, 64, (2,), batch=3) + held - 1)
    assert calls == [(2, 64, 64), (2, 64, 64)]


def test_auto_tiles_the_items_of_a_batch_one_at_a_time_when_one_does_not_fit(small):
    """An item too large alone is tiled alone, with the tiles one item allows (larger than a whole
    batch's would be), into the batch's outputs; progress counts every item's tiles."""
    from lua_fast.tiling import blend_bytes

    up, _, _ = small
    x = torch.randn(3, 16, 64, 64, generator=torch.Generator().manual_seed(8))
    held = 3 * 64 * 64 * 4 * 16 * 4
    budget = estimate_peak_bytes(up.config, 32, 32, (2,)) + blend_bytes(1, 16, 64, 64, (2,), 4) + held
    model, calls = _recording(up)
    seen = []
    out = _run_auto(up, model, x, budget, progress=lambda done, total: seen.append((done, total)))
    assert {c[0] for c in calls} == {1} and len(calls) == 3 * 9 and max(c[1] for c in calls) == 32
    assert seen[-1] == (27, 27) and [d for d, _ in seen] == list(range(1, 28))
    for i in range(3):
        assert torch.equal(out[i:i + 1], up.upscale(x[i:i + 1], tile=32))


def test_auto_halves_the_chunk_after_an_allocation_failure(small):
    """No budget known (or a wrong estimate): the whole batch is tried, and after the allocator's
    refusal chunks of half as many items, 5 -> 3 -> 2, kept for the rest; an item alone that fails
    is tiled."""
    up, _, _ = small
    x = torch.randn(5, 16, 24, 24, generator=torch.Generator().manual_seed(9))
    model, calls = _recording(up, refuse=lambda z: z.shape[0] > 2)
    out = _run_auto(up, model, x, None)
    assert calls == [(5, 24, 24), (3, 24, 24), (2, 24, 24), (2, 24, 24), (1, 24, 24)]
    assert rel_err(out, up.upscale(x)) < 1e-5
    model, calls = _recording(up, refuse=lambda z: z.shape[0] > 1 or z.shape[-1] > 16)
    out = _run_auto(up, model, x[:2], None)
    assert calls[:3] == [(2, 24, 24), (1, 24, 24), (1, 16, 16)] and {c[0] for c in calls[1:]} == {1}
    assert torch.equal(out[1:], up.upscale(x[1:2], tile=16))
    def fails(z, scales):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    with pytest.raises(RuntimeError, match="cannot be multiplied"):  # other errors surface at once
        _run_auto(up, fails, x, None)


def test_mixed_precision_is_estimated_at_its_fp32_stream(small):
    """"mixed" keeps its residual stream in fp32 (and autocast's softmax returns fp32): its memory is
    estimated at 4 bytes an element. Before 2026-11-29 at bf16's 2, under which a CPU forward's peak
    measured 1.10x (torch backend) and 1.41x (reference) the estimate: tile="auto" ran untiled a
    pass over its budget."""
    from lua_fast.precision import resolve

    assert {m: resolve(m, None).activation_itemsize for m in ("fp32", "tf32", "bf16", "fp16", "mixed")} == \
        {"fp32": 4, "tf32": 4, "bf16": 2, "fp16": 2, "mixed": 4}
    up, x, _ = small
    mixed = lua_fast.load(up, precision="mixed")
    at_bf16 = estimate_peak_bytes(up.config, 64, 64, (2,), element_size=2)
    seen = []
    mixed.upscale(x, tile="auto", memory_budget=at_bf16, progress=lambda done, total: seen.append(total))
    assert seen[-1] > 1  # tiled: the pass needs about twice that
