"""Window bookkeeping (relative position index, shift mask, partition) and padding."""

import pytest
import torch
import torch.nn.functional as F

from lua_fast.padding import mirror_indices, pad_to_window_multiple, sides_are_window_multiples
from lua_fast.reference import windows
from slow_lua import _labels


@pytest.mark.parametrize("ws", [2, 4, 8])
def test_relative_position_index_formula(ws):
    index = windows.relative_position_index(ws)
    n = ws * ws
    assert index.shape == (n, n) and index.dtype == torch.int64
    for a in range(n):
        for b in range(n):
            (ya, xa), (yb, xb) = divmod(a, ws), divmod(b, ws)
            assert index[a, b] == (ya - yb + ws - 1) * (2 * ws - 1) + (xa - xb + ws - 1)


@pytest.mark.parametrize("h,w,ws", [(8, 12, 4), (16, 8, 8), (4, 4, 4)])
def test_shift_mask_matches_python_labelling(h, w, ws):
    shift = ws // 2
    mask = windows.build_shift_mask(h, w, ws, shift)
    labels = _labels(h, w, ws, shift)  # rolled frame: partitioned as is
    n_win = 0
    for wy in range(h // ws):
        for wx in range(w // ws):
            lab = labels[wy * ws:(wy + 1) * ws, wx * ws:(wx + 1) * ws].reshape(-1)
            expect = torch.where(lab[:, None] == lab[None, :], 0.0, -100.0)
            assert torch.equal(mask[n_win], expect)
            n_win += 1
    assert mask.shape == (n_win, ws * ws, ws * ws)
    assert set(mask.unique().tolist()) <= {0.0, -100.0}
    assert (mask == -100).any()  # the last row/column of windows mixes regions


def test_mask_cache_keys_on_geometry_device_and_dtype():
    windows.mask_cache.clear()
    a = windows.shift_mask(8, 8, 4, 2, device="cpu", dtype=torch.float32)
    assert windows.shift_mask(8, 8, 4, 2, device="cpu", dtype=torch.float32) is a
    b = windows.shift_mask(8, 8, 4, 2, device="cpu", dtype=torch.bfloat16)
    assert b is not a and b.dtype == torch.bfloat16
    c = windows.shift_mask(8, 12, 4, 2, device="cpu", dtype=torch.float32)
    assert c.shape[0] == 6
    assert len(windows.mask_cache) == 3


def test_a_cache_is_bounded_by_bytes_too_and_keeps_its_newest_entry():
    """Bounded by count alone (64), the shift-mask caches kept GBs for a service seeing many latent
    sizes (the released config's mask is 1 KiB per latent pixel in fp32: 64 MiB at 256x256)."""
    from lua_fast.lru import LRUCache

    cache = LRUCache(capacity=8, max_bytes=1000)
    for i in range(5):
        cache.get_or_create(i, lambda: torch.zeros(60))  # 240 bytes each: four fit
    assert len(cache) == 4 and cache.nbytes == 960
    assert cache.get_or_create(0, lambda: None) is None  # 0 was evicted: built again (by this factory)
    cache.get_or_create(3, lambda: None)  # a hit: 3 is now the most recent
    cache.get_or_create("big", lambda: (torch.zeros(500), torch.zeros(10, dtype=torch.uint8)))
    assert list(cache._items) == ["big"] and cache.nbytes == 2010  # over the budget alone: kept
    cache.get_or_create("small", lambda: torch.zeros(2))
    assert list(cache._items) == ["small"] and cache.nbytes == 8
    cache.clear()
    assert cache.nbytes == 0 and len(cache) == 0
    # Bounds are checked when set (before 2026-11-29 "10" or 1.5 were taken, and the next eviction
    # raised a TypeError inside a forward)
    import numpy as np

    from lua_fast import InputError

    for name, bad in (("max_bytes", "10"), ("max_bytes", 1.5), ("max_bytes", -1), ("max_bytes", True),
                      ("capacity", 0), ("capacity", None), ("capacity", "8")):
        with pytest.raises(InputError, match=f"LRUCache.{name} must be an int >= "):
            setattr(cache, name, bad)
    cache.max_bytes, cache.capacity = np.int64(4096), np.int32(3)
    assert (cache.max_bytes, cache.capacity) == (4096, 3) and type(cache.max_bytes) is int
    cache.max_bytes = None  # no byte bound
    with pytest.raises(InputError):
        LRUCache(capacity=-1)


def test_a_cache_holds_its_capacity_and_evicts_the_least_recently_used():
    """The count bound and the order of eviction: a hit makes an entry the most recent, so a cache
    of shift masks keeps the sizes in use. (A mutation survey found neither tested: a cache one
    entry over its capacity, and one evicting in insertion order, both passed the suite.)"""
    from lua_fast.lru import LRUCache

    cache = LRUCache(capacity=3, max_bytes=None)
    for key in "abc":
        cache.get_or_create(key, lambda key=key: torch.full((4,), float(ord(key))))
    assert cache.get_or_create("a", lambda: None)[0] == ord("a")  # a hit: "a" is the most recent
    cache.get_or_create("d", lambda: torch.zeros(4))
    assert list(cache._items) == ["c", "a", "d"] and len(cache) == 3  # "b", least recently used, went
    assert cache.nbytes == 3 * 4 * 4
    assert cache.get_or_create("b", lambda: None) is None  # built again


@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_the_mask_caches_hold_their_byte_budget_across_many_sizes(backend):
    import lua_fast
    from conftest import random_state_dict, tiny_config

    sd = random_state_dict(tiny_config(), seed=2)
    up, fresh = lua_fast.load(sd, backend=backend), lua_fast.load(sd, backend=backend)
    cache = up.model.module.masks if backend == "reference" else up.model.module._masks
    cache.clear()
    old = cache.max_bytes
    cache.max_bytes = 20_000  # a few small masks (window 4: 1 KiB per 4x4 window)
    try:
        for h, w in [(8, 8), (16, 16), (24, 20), (40, 12), (8, 8), (32, 32)]:
            x = torch.randn(1, 4, h, w, generator=torch.Generator().manual_seed(h * w))
            assert torch.equal(up.upscale(x), fresh.upscale(x))
            assert cache.nbytes <= 20_000 or len(cache) == 1, (h, w, cache.nbytes)
            assert cache.nbytes == sum(m.numel() * m.element_size() for m in cache._items.values())
    finally:
        cache.max_bytes = old


def test_partition_reverse_round_trip():
    x = torch.randn(2, 8, 12, 5)
    parts = windows.window_partition(x, 4)
    assert parts.shape == (2 * 6, 16, 5)
    assert torch.equal(parts[1], x[0, 0:4, 4:8].reshape(16, 5))  # window (0, 1), tokens row-major
    assert torch.equal(windows.window_reverse(parts, 4, 8, 12), x)


@pytest.mark.parametrize("size", [2, 3, 5, 9, 15])
def test_mirror_extension_equals_reflect_where_reflect_is_defined(size):
    window = 16
    pad = (window - size % window) % window
    x = torch.randn(1, 1, size, 1)
    got = x.index_select(2, mirror_indices(size, size + pad, x.device))
    if pad < size:
        assert torch.equal(got, F.pad(x, (0, 0, 0, pad), mode="reflect"))
    # The periodic even extension: bounce between the two ends.
    pos, step, expect = 0, 1, []
    for _ in range(size + pad):
        expect.append(pos)
        if not 0 <= pos + step < size:
            step = -step
        pos += step
    assert mirror_indices(size, size + pad, x.device).tolist() == expect


@pytest.mark.parametrize("side", [7, 8, 9])
def test_padding_at_the_edge_of_reflects_domain(side):
    """Window 16: a side of 9 pads 7 (the released reflect), of 8 pads 8 and of 7 pads 9, where
    reflect is undefined (PyTorch refuses a pad not smaller than the side) and the mirror extension
    takes over; on either axis, the other one reflect-padded or not."""
    for shape in [(1, 2, side, 11), (1, 2, 11, side), (1, 2, side, side)]:
        x = torch.randn(shape)
        h, w = shape[-2:]
        want = x.index_select(-2, mirror_indices(h, 16, x.device)).index_select(-1, mirror_indices(w, 16, x.device))
        assert torch.equal(pad_to_window_multiple(x, 16), want), shape


def test_pad_short_sides():
    x = torch.randn(2, 3, 1, 5)
    y = pad_to_window_multiple(x, 8)
    assert y.shape == (2, 3, 8, 8)
    assert torch.equal(y[:, :, :1, :5], x)
    assert torch.equal(y[:, :, 5, :5], x[:, :, 0])  # a side of 1 is replicated
    assert pad_to_window_multiple(torch.randn(1, 1, 8, 16), 8).shape == (1, 1, 8, 16)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
@pytest.mark.parametrize("size", [(13, 21), (3, 5), (1, 17), (16, 24)])
def test_padding_traced_with_symbolic_sides_is_the_eager_padding(size):
    """Under torch.export (and ONNX, dynamic compiles) the sides are SymInts and padding is one
    branch-free gather per side; it must give the eager bits at every size, and a side declared
    a window multiple must need no gather. (torch.jit.trace's tensor sizes take the eager path.)"""
    from torch.export import Dim

    class Pad(torch.nn.Module):
        def forward(self, x):
            return pad_to_window_multiple(x, 8)

    example = torch.randn(2, 3, 13, 19)
    any_size = torch.export.export(Pad(), (example,), dynamic_shapes={"x": {2: Dim("h"), 3: Dim("w")}}).module()
    x = torch.randn(2, 3, *size)
    assert torch.equal(any_size(x), pad_to_window_multiple(x, 8))
    with sides_are_window_multiples():  # (what AOTInductor packages declare)
        multiples = torch.export.export(Pad(), (torch.randn(2, 3, 16, 24),),
                                        dynamic_shapes={"x": {2: 8 * Dim("r"), 3: 8 * Dim("c")}})
    assert not any("index_select" in str(node.target) for node in multiples.graph.nodes)
    traced = torch.jit.trace(Pad(), (example,))
    assert torch.equal(traced(example), pad_to_window_multiple(example, 8))


def test_masks_are_built_once_per_geometry_not_per_call(monkeypatch):
    import lua_fast
    from conftest import random_state_dict, tiny_config

    up = lua_fast.load(random_state_dict(tiny_config()), backend="reference")
    windows.mask_cache.clear()
    built = []
    real = windows.build_shift_mask
    monkeypatch.setattr(windows, "build_shift_mask", lambda *a, **k: built.append(a) or real(*a, **k))
    for _ in range(3):
        up.upscale(torch.randn(1, 4, 8, 12))
    assert built == [(8, 12, 4, 2)]  # one build for the size, shared by every shifted block and call
    up.upscale(torch.randn(1, 4, 5, 5))  # padded to 8x8: a new geometry
    assert built == [(8, 12, 4, 2), (8, 8, 4, 2)]


def test_flop_count_matches_the_published_figure():
    from lua_fast import LUAConfig
    from lua_fast.flops import forward_flops

    # Issue 6 quotes 1.82 TFLOP for the released model, x2 head, 128x128 latent.
    assert abs(forward_flops(LUAConfig.flux(), 128, 128, (2,)) / 1e12 - 1.82) < 0.005
    assert forward_flops(LUAConfig.flux(), 120, 127, (2,)) == forward_flops(LUAConfig.flux(), 128, 128, (2,))


@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_deleting_an_upscaler_frees_its_shift_masks(backend):
    """Each model owns its mask cache. Before 2026-11-29 the reference model's masks sat in one cache
    shared by every reference model, so ``del up`` left up to 256 MiB of them on the GPU."""
    import gc
    import weakref

    import lua_fast
    from conftest import random_state_dict, tiny_config
    from lua_fast.lru import hold_values

    up = lua_fast.load(random_state_dict(tiny_config(), seed=3), backend=backend)
    with hold_values() as held:
        up.upscale(torch.randn(2, 4, 13, 21))
    masks = [weakref.ref(v) for v in held if isinstance(v, torch.Tensor)]
    assert masks, "the shifted blocks read no cached mask"
    del held, up
    gc.collect()
    assert [m for m in masks if m() is not None] == []
