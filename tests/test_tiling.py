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


def test_ramps_never_vanish_and_blend_a_constant_exactly():
    w = _ramp(20, 6, 6, torch.device("cpu"))
    assert (w > 0).all() and w[6:14].eq(1).all()
    x = torch.ones(1, 1, 37, 45)
    out = upscale_tiled(lambda t, scales: {s: torch.full((1, 1, s * t.shape[-2], s * t.shape[-1]), 3.0)
                                           for s in scales}, x, (2,), 16, 6)
    torch.testing.assert_close(out[2], torch.full((1, 1, 74, 90), 3.0))


def test_one_tile_is_the_untiled_result(small):
    up, x, full = small
    out = up.upscale(x, scale=(2, 4), tile=64)
    for s in (2, 4):
        assert torch.equal(out[s], full[s])


def test_tiled_within_the_stated_bound_and_overlap_helps(small):
    """README / lua_fast.tiling: tile 32, overlap 16 on the small config: <= 3.5% relative."""
    up, x, full = small
    blended = up.upscale(x, scale=(2, 4), tile=32, overlap=16)
    hard = up.upscale(x, scale=(2, 4), tile=32, overlap=0)
    for s in (2, 4):
        assert blended[s].shape == full[s].shape
        assert rel_err(blended[s], full[s]) <= 0.035
        assert rel_err(hard[s], full[s]) > 2 * rel_err(blended[s], full[s])


def test_auto_tiles_only_over_budget(small):
    up, x, full = small
    need = estimate_peak_bytes(up.config, 64, 64, (2,))
    assert torch.equal(up.upscale(x, tile="auto", memory_budget=need), full[2])  # fits: untiled
    tiled = up.upscale(x, tile="auto", memory_budget=need // 3, progress=True)
    assert not torch.equal(tiled, full[2]) and rel_err(tiled, full[2]) < 0.1
    assert torch.equal(up.upscale(x, tile="auto"), full[2])  # CPU without a budget: untiled


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


def test_estimate_grows_with_size_and_scale():
    c = LUAConfig.flux()
    assert estimate_peak_bytes(c, 64, 64, (2,)) < estimate_peak_bytes(c, 128, 128, (2,))
    assert estimate_peak_bytes(c, 128, 128, (2,)) < estimate_peak_bytes(c, 128, 128, (4,))
    assert estimate_peak_bytes(c, 128, 128, (2,), materialises_scores=False) < estimate_peak_bytes(c, 128, 128, (2,))


def test_tiling_errors(small):
    up, x, _ = small
    with pytest.raises(InputError, match="tile must be an int >= the window size 8"):
        up.upscale(x, tile=4)
    with pytest.raises(InputError, match="overlap must be an int in \\[0, tile\\)"):
        up.upscale(x, tile=16, overlap=16)
    with pytest.raises(InputError, match="cannot be combined"):
        up.upscale(x, tile=16, cuda_graph=True)


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
