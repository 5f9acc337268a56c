"""Whole-model parity on a GPU (skipped without CUDA): the released configuration with random
weights, odd and even latents, x2 and x4, every backend and precision mode against the fp32
reference; CUDA graphs; threads."""

import pytest
import torch

import lua_fast
from lua_fast import LUAConfig
from lua_fast.reference import LUA
from conftest import rel_err, run_in_threads

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
MODES = ["fp32", "tf32", "bf16", "fp16", "mixed"]
# Largest error allowed against the fp32 reference, per mode, when there is no eager yardstick.
TF32_BOUND = 5e-3


@pytest.fixture(scope="module")
def released_random():
    torch.manual_seed(0)
    return LUA(LUAConfig.flux()).state_dict()


@pytest.fixture(scope="module")
def references(released_random):
    """fp32 reference (IEEE: the loader's fp32 mode turns TF32 off) and eager outputs per mode."""
    cache = {}

    def get(size, mode):
        key = (size, mode)
        if key not in cache:
            x = torch.randn(1, 16, *size, device="cuda", generator=torch.Generator("cuda").manual_seed(sum(size)))
            up = lua_fast.load(released_random, device="cuda", backend="reference", precision=mode)
            cache[key] = (x, up.upscale(x, scale=(2, 4)))
        return cache[key]

    return get


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("size", [(64, 64), (128, 128), (40, 72)], ids=str)
def test_mode_against_fp32_reference(released_random, references, backend, mode, size):
    x, ref = references(size, "fp32")
    up = lua_fast.load(released_random, device="cuda", backend=backend, precision=mode)
    out = up.upscale(x, scale=(2, 4))
    for s in (2, 4):
        err = rel_err(out[s], ref[s])
        if mode == "fp32":
            assert err <= 1e-5, err
        elif mode == "tf32":
            assert err <= TF32_BOUND, err
        else:
            _, eager = references(size, mode)
            assert err <= 2 * rel_err(eager[s], ref[s]) + 1e-4, (err, rel_err(eager[s], ref[s]))


@pytest.mark.parametrize("size", [(64, 64), (40, 72)], ids=str)
def test_fp32_mode_with_tf32x3_dots_stays_within_1e5(released_random, references, monkeypatch, size):
    """LUA_FAST_FP32_DOTS=tf32x3: the Triton kernels' fp32 dots as three TF32 tensor-core products
    keep the fp32 mode's bound (the CPU model of it: tests/test_fp32_dots.py)."""
    monkeypatch.setenv("LUA_FAST_FP32_DOTS", "tf32x3")
    x, ref = references(size, "fp32")
    out = lua_fast.load(released_random, device="cuda", backend="triton", precision="fp32").upscale(x, scale=(2, 4))
    for s in (2, 4):
        assert rel_err(out[s], ref[s]) <= 1e-5, (s, rel_err(out[s], ref[s]))


@pytest.mark.parametrize("mode", ["bf16", "mixed"])
@pytest.mark.parametrize("size", [(64, 64), (40, 72)], ids=str)
def test_fewer_launches_per_block_within_the_eager_bound(released_random, references, monkeypatch, mode, size):
    """LUA_FAST_FUSED_MLP=1 and LUA_FAST_FUSED_ATTN_PROJ=1: each block's MLP, and its attention with
    the projection, as one launch each keep the low-precision bound (2x the same-dtype eager error
    against the fp32 reference)."""
    monkeypatch.setenv("LUA_FAST_FUSED_MLP", "1")
    monkeypatch.setenv("LUA_FAST_FUSED_ATTN_PROJ", "1")
    x, ref = references(size, "fp32")
    up = lua_fast.load(released_random, device="cuda", backend="triton", precision=mode)
    assert up.model.fused_mlp and up.model.fused_attn_proj
    out = up.upscale(x, scale=(2, 4))
    _, eager = references(size, mode)
    for s in (2, 4):
        err = rel_err(out[s], ref[s])
        assert err <= 2 * rel_err(eager[s], ref[s]) + 1e-4, (s, err, rel_err(eager[s], ref[s]))


@pytest.mark.parametrize("backend, mode", [("triton", "bf16"), ("triton", "fp32"), ("torch", "bf16"),
                                           ("torch", "fp32"), ("reference", "bf16"), ("reference", "fp32")])
def test_cuda_graph_replay_equals_eager(released_random, backend, mode):
    """``cuda_graph=True`` on every backend: the replay gives what the eager forward gives. The
    Triton kernels bit for bit. cuBLAS/cuDNN may choose another algorithm inside a capture, so the
    eager backends within 1e-5 in fp32 and 1e-2 in bf16 (rounding flips over 36 blocks; a stale
    input or a wrong buffer is O(1))."""
    up = lua_fast.load(released_random, device="cuda", backend=backend, precision=mode)
    for seed in (1, 2):  # the second input exercises the static-buffer copy
        x = torch.randn(1, 16, 64, 64, device="cuda", generator=torch.Generator("cuda").manual_seed(seed))
        eager = up.upscale(x, scale=(2, 4))
        graphed = up.upscale(x, scale=(2, 4), cuda_graph=True)
        for s in (2, 4):
            if backend == "triton":
                assert torch.equal(graphed[s], eager[s])
            else:
                bound = 1e-5 if mode == "fp32" else 1e-2
                assert rel_err(graphed[s], eager[s]) <= bound, (s, rel_err(graphed[s], eager[s]))


def test_upscale_inside_the_callers_own_cuda_graph(released_random):
    """A caller capturing upscale() in their own torch.cuda.graph: with check_finite on it raises
    InputError before any CUDA call (not "operation not permitted when stream is capturing"); with
    it off, the replay gives the eager bits (warm-up on a side stream, as torch.cuda.graph asks)."""
    from lua_fast import InputError

    up = lua_fast.load(released_random, device="cuda", backend="triton", precision="bf16")
    x = torch.randn(1, 16, 40, 72, device="cuda", generator=torch.Generator("cuda").manual_seed(3))
    eager = up.upscale(x)
    static = torch.zeros_like(x)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        up.upscale(static, check_finite=False)  # warm-up: tuning choices, caches
    torch.cuda.current_stream().wait_stream(side)
    with pytest.raises(InputError, match="pass check_finite=False"):
        with torch.cuda.graph(torch.cuda.CUDAGraph()):
            up.upscale(static)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = up.upscale(static, check_finite=False)
    static.copy_(x)
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(out, eager)


def test_to_offloads_to_the_cpu_and_back_to_the_fast_backend(released_random):
    """up.to("cpu") between uses (a pipeline's offload) and up.to("cuda") again: "auto" picks the
    CPU's backend and then the GPU's again, with a fresh load's bits; the GPU memory goes back."""
    x = torch.randn(1, 16, 40, 72, device="cuda", generator=torch.Generator("cuda").manual_seed(4))
    fresh = lua_fast.load(released_random, device="cuda", precision="bf16")
    want = fresh.upscale(x)
    up = lua_fast.load(released_random, precision="bf16")
    assert up.backend == "torch"
    assert up.to("cuda") is up and up.backend == fresh.backend and up.device.type == "cuda"
    assert torch.equal(up.upscale(x), want) and torch.equal(up.upscale(x, cuda_graph=True), want)
    del fresh
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    up.to("cpu")
    assert up.backend == "torch" and up.device.type == "cpu"
    assert torch.cuda.memory_allocated() < before - 50 * 2**20  # the bf16 weights (110 MB) and packs freed


def test_untimed_triton_outputs_do_not_depend_on_the_rest_of_the_batch(released_random, monkeypatch):
    """With LUA_FAST_AUTOTUNE=0 each kernel runs its first config that fits, whatever the batch, and
    no kernel reduces across rows, pixels or windows: a latent alone and in a batch of three give
    the same bits (timed tuning may pick other configs per batch size, so it is not asked there)."""
    monkeypatch.setenv("LUA_FAST_AUTOTUNE", "0")
    up = lua_fast.load(released_random, device="cuda", backend="triton", precision="bf16")
    x = torch.randn(3, 16, 40, 72, device="cuda", generator=torch.Generator("cuda").manual_seed(6))
    together = up.upscale(x, scale=(2, 4))
    for i in range(3):
        alone = up.upscale(x[i:i + 1], scale=(2, 4))
        assert all(torch.equal(together[s][i:i + 1], alone[s]) for s in (2, 4)), i


def test_programmatic_dependent_launch_changes_no_result(released_random, monkeypatch):
    """LUA_FAST_PDL=1 (sm_90+): the same kernels and configs, so the same bits, eager and replayed
    many times from a CUDA graph (a kernel reading before its predecessor finished would differ)."""
    from lua_fast.kernels import triton_support

    monkeypatch.setenv(triton_support.PDL_ENV, "1")
    reason = triton_support.pdl_reason(torch.device("cuda"))
    if reason:
        pytest.skip(f"PDL unavailable here: {reason}")
    up = lua_fast.load(released_random, device="cuda", backend="triton", precision="bf16")
    x = torch.randn(1, 16, 64, 64, device="cuda", generator=torch.Generator("cuda").manual_seed(3))
    monkeypatch.setenv(triton_support.PDL_ENV, "0")
    plain = up.upscale(x, scale=(2, 4))  # (tunes: later calls reuse the configs)
    monkeypatch.setenv(triton_support.PDL_ENV, "1")
    for _ in range(3):
        eager = up.upscale(x, scale=(2, 4))
        assert all(torch.equal(eager[s], plain[s]) for s in (2, 4))
    for _ in range(20):
        graphed = up.upscale(x, scale=(2, 4), cuda_graph=True)
        assert all(torch.equal(graphed[s], plain[s]) for s in (2, 4))


def test_one_triton_model_from_many_threads(released_random):
    up = lua_fast.load(released_random, device="cuda", backend="triton", precision="bf16")
    inputs = [torch.randn(1, 16, 32 + 8 * i, 48, device="cuda") for i in range(4)]
    expected = [up.upscale(x) for x in inputs]
    results = {}

    def work(i):
        with torch.cuda.stream(torch.cuda.Stream()):
            results[i] = up.upscale(inputs[i])
            torch.cuda.current_stream().synchronize()

    assert not run_in_threads(work, 4)
    for i in range(4):
        assert torch.equal(results[i], expected[i])


def test_a_graph_still_reads_its_masks_after_the_cache_drops_them(released_random):
    """A graph holds raw pointers to the cached shift masks its capture read. Evicting them from
    the cache and reusing their memory must not change the next replay (tests/test_cuda_graph_safety.py
    checks the references on the CPU)."""
    up = lua_fast.load(released_random, device="cuda", backend="torch", precision="bf16")
    cache = up.model.module._masks
    x = torch.randn(1, 16, 40, 72, device="cuda", generator=torch.Generator("cuda").manual_seed(4))
    first = up.upscale(x, cuda_graph=True)
    shapes = [(m.shape, m.dtype) for m in cache._items.values()]
    assert shapes, "no cached mask at 40x72"
    cache.clear()
    junk = [torch.full(shape, 1e4, dtype=dtype, device="cuda") for shape, dtype in shapes * 4]  # reuse freed blocks
    assert torch.equal(up.upscale(x, cuda_graph=True), first)
    del junk


def test_one_graph_replayed_from_threads_on_their_own_streams(released_random):
    """Threads on streams of their own share one graph's static buffers: each replay must see its
    own input and return its own output (the graph lock orders the host, an event the device)."""
    up = lua_fast.load(released_random, device="cuda", backend="triton", precision="bf16")
    inputs = [torch.randn(1, 16, 64, 64, device="cuda", generator=torch.Generator("cuda").manual_seed(10 + i))
              for i in range(4)]
    expected = [up.upscale(x) for x in inputs]
    up.upscale(inputs[0], cuda_graph=True)  # capture once, outside the threads
    torch.cuda.synchronize()
    results = {}

    def work(i):
        with torch.cuda.stream(torch.cuda.Stream()):
            results[i] = [up.upscale(inputs[(i + k) % 4], cuda_graph=True) for k in range(8)]
            torch.cuda.current_stream().synchronize()

    assert not run_in_threads(work, 4)
    for i in range(4):
        for k, out in enumerate(results[i]):
            assert torch.equal(out, expected[(i + k) % 4]), (i, k)


def test_a_capture_while_another_thread_runs_forwards(released_random):
    """Captures use the "thread_local" mode: another thread's forwards (allocations, syncs for the
    finite checks) during a capture neither invalidate it nor fail themselves."""
    import threading

    up = lua_fast.load(released_random, device="cuda", backend="triton", precision="bf16")
    busy = lua_fast.load(released_random, device="cuda", backend="torch", precision="bf16")
    x = torch.randn(1, 16, 64, 64, device="cuda", generator=torch.Generator("cuda").manual_seed(5))
    expected = up.upscale(x)
    done = threading.Event()
    counts = []

    def work(i):
        if i == 0:
            try:
                assert torch.equal(up.upscale(x, cuda_graph=True), expected)
            finally:
                done.set()
        else:
            n = 0
            while not done.is_set() or n == 0:
                busy.upscale(torch.randn(1, 16, 24 + 8 * (n % 3), 40, device="cuda"))
                n += 1
            counts.append(n)

    assert not run_in_threads(work, 2)
    assert counts and counts[0] >= 1


def test_bounded_graphs_replay_right_and_give_their_pools_back(released_random):
    """With ``max_cuda_graphs=1`` two alternating shapes evict each other at every call: each
    re-capture must give the eager result, and the evicted graphs' pools must go back to the
    allocator (reserved memory does not grow with the captures; tests/test_cuda_graph_safety.py
    checks the order and the waits on the CPU)."""
    up = lua_fast.load(released_random, device="cuda", backend="triton", precision="bf16")
    up.max_cuda_graphs = 1
    inputs = [torch.randn(1, 16, h, 48, device="cuda", generator=torch.Generator("cuda").manual_seed(h))
              for h in (32, 48)]
    expected = [up.upscale(x) for x in inputs]
    reserved = []
    for k in range(6):
        assert torch.equal(up.upscale(inputs[k % 2], cuda_graph=True), expected[k % 2]), k
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        reserved.append(torch.cuda.memory_reserved())
    assert up.cuda_graph_stats() == {"graphs": 1, "max_graphs": 1, "captures": 6, "evictions": 5}
    assert max(reserved[2:]) <= max(reserved[:2]) + 2**20, reserved


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
@pytest.mark.parametrize("graphed", [False, True], ids=["eager", "graphed"])
def test_an_upscaler_on_the_second_gpu_while_the_first_is_current(released_random, graphed):
    """Triton launches on the current device and torch.cuda.graph captures on the current device's
    stream: an upscaler on cuda:1 must switch to it (tests/test_device_guard.py, on the CPU)."""
    on0 = lua_fast.load(released_random, device="cuda:0", backend="triton", precision="bf16")
    on1 = lua_fast.load(released_random, device="cuda:1", backend="triton", precision="bf16")
    for seed in (6, 7):  # the second input: a replay, not the capture's own outputs
        x = torch.randn(1, 16, 64, 64, device="cuda:0", generator=torch.Generator("cuda:0").manual_seed(seed))
        expected = on0.upscale(x)
        with torch.cuda.device(0):
            out = on1.upscale(x.to("cuda:1"), cuda_graph=graphed)
        assert out.device == torch.device("cuda:1")
        assert rel_err(out.to("cuda:0"), expected) <= 1e-3, (seed, rel_err(out.to("cuda:0"), expected))


def test_peak_memory_not_above_eager_bf16(released_random):
    x = torch.randn(1, 16, 128, 128, device="cuda")
    peaks = {}
    for backend in ("reference", "triton"):
        up = lua_fast.load(released_random, device="cuda", backend=backend, precision="bf16")
        up.upscale(x)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        up.upscale(x)
        torch.cuda.synchronize()
        peaks[backend] = torch.cuda.max_memory_allocated() - base
        del up
    assert peaks["triton"] <= peaks["reference"], peaks


def test_256x256_x4_within_the_documented_budget(released_random):
    """README: a 256x256 latent x4 (8192 px) with tile="auto" and memory_budget=16 GiB stays under it."""
    budget = 16 * 2**30
    up = lua_fast.load(released_random, device="cuda", backend="triton", precision="bf16")
    x = torch.randn(1, 16, 256, 256, device="cuda")
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    out = up.upscale(x, scale=4, tile="auto", memory_budget=budget)
    torch.cuda.synchronize()
    assert out.shape == (1, 16, 1024, 1024) and torch.isfinite(out).all()
    assert torch.cuda.max_memory_allocated() - base <= budget


def test_compiled_fp32_model_inside_the_held_switches_stays_fp32(released_random, references):
    """torch.compile cannot set PyTorch's TF32 switches inside a graph (tests/test_traced_precision.py):
    fullgraph without them raises saying how to hold them; held around the compiled call, the graph's
    cuDNN convs and cuBLAS GEMMs run in IEEE fp32 although the process default (set here) is TF32."""
    from lua_fast import precision as P

    x, want = references((64, 64), "fp32")
    up = lua_fast.load(released_random, device="cuda", backend="torch", precision="fp32")
    saved = P.tf32_switches()
    P.set_tf32_switches(True)
    try:
        torch._dynamo.reset()
        with pytest.raises(Exception, match="cannot be set inside a compiled graph"):
            torch.compile(up.model, fullgraph=True, backend="aot_eager")(x, (2,))
        torch._dynamo.reset()
        with torch.no_grad(), P.backend_flags(up.precision, up.device):
            got = torch.compile(up.model, fullgraph=True, backend="aot_eager")(x, (2, 4))
        torch.cuda.synchronize()
        assert P.tf32_switches() == (("tf32", "tf32") if P._FP32_PRECISION_API else (True, True))
    finally:
        P.set_tf32_switches(saved)
    for s in (2, 4):
        assert rel_err(got[s], want[s]) <= 1e-5, (s, rel_err(got[s], want[s]))
