import os

import torch

# Triton kernels are interpreted on CPU tensors when there is no GPU. Triton reads this when a
# kernel is decorated, so it must be set before any lua_fast.kernels module is imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

# Kernel tests use small shapes under the interpreter and larger ones on a GPU. A compile-only run
# without a GPU (scripts/compile_only.py, which builds the GPU run's Triton cache ahead) asks for
# the GPU's shapes and dtypes here, so it compiles the binaries a GPU test run launches.
GPU_SHAPES = torch.cuda.is_available() or os.environ.get("LUA_FAST_TEST_GPU_SHAPES") == "1"

from lua_fast import LUAConfig
from lua_fast.reference import LUA


@pytest.fixture(autouse=True, scope="session")
def exact_fp32_references():
    """On a GPU, fp32 references run in IEEE fp32. PyTorch lets cuDNN convs use TF32 by default
    (~1e-3 relative error): an fp32 kernel compared with such a reference would fail its 1e-5
    bound through the reference's error, not its own. The tf32 mode sets its own switches."""
    if not torch.cuda.is_available():
        yield
        return
    from lua_fast.precision import set_tf32_switches, tf32_switches

    saved = tf32_switches()
    set_tf32_switches(False)
    yield
    set_tf32_switches(saved)


GPU_SHARE_FOR_WORKERS = 0.8  # of the GPU's memory, split evenly; the rest is the workers' CUDA contexts


@pytest.fixture(autouse=True, scope="session")
def bounded_gpu_memory_per_worker():
    """Under pytest-xdist on one GPU, each worker's allocator is capped at an even share of 80% of
    the GPU (9.3 GiB of an H200 for 12 workers; LUA_FAST_TEST_GPU_MEMORY_GIB sets another cap, 0 =
    none). The model tests need at most ~1.6 GB of tensors (the released config's fp32 reference at
    128x128, x2 and x4: 622 MiB on the CPU; torch bf16 at 256x256 x4: 1564 MiB); a test that needs
    more says so with ``gpu_memory_gib(n)`` (below). But the fp32 references run cuDNN convs in IEEE fp32, and
    PyTorch takes the first cuDNN plan whose workspace it can allocate: on the H200 the
    released-style fp32 forward at 128x128 peaked at ~132 GB, a workspace by the reading in
    benchmarks/NOTES.md (not yet confirmed). One worker holding that in its allocator's cache would
    leave the other workers' tensors nothing; capped, the big plan fails inside its own worker and
    PyTorch moves on to the next plan."""
    cap_gpu_memory_per_worker()
    yield


def cap_gpu_memory_per_worker() -> float | None:
    """The fraction of the GPU's memory this worker's allocator may use (None: not capped)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if not torch.cuda.is_available() or workers < 2:
        return None
    fraction = GPU_SHARE_FOR_WORKERS / workers
    cap_gib = os.environ.get("LUA_FAST_TEST_GPU_MEMORY_GIB")
    if cap_gib is not None:
        if float(cap_gib) <= 0:
            return None
        fraction = min(1.0, float(cap_gib) * 2**30 / torch.cuda.get_device_properties(0).total_memory)
    torch.cuda.set_per_process_memory_fraction(fraction)
    return fraction


# The files that take longest (a few tests each: compiles, exports, interpreted forwards), slowest
# first, as measured on the 2-core development machine (2026-11-27: 97, 92, 88, 86, 80, 50, 45, 43, 42 s). They run
# first so that no worker ends alone on a long file. pytest-xdist's --dist loadfile otherwise
# orders files by their number of tests, which put the slowest ones last. Unlisted files follow in
# their usual order; a stale list only costs time.
SLOW_FILES_FIRST = ("test_triton_compile.py", "test_backends.py", "test_export.py", "test_gpu_scripts.py",
                    "test_host_launch.py", "test_window_attention.py", "test_autotune_configs.py",
                    "test_official_parity.py", "test_opcheck.py", "test_upsample_heads.py")


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu_memory_gib(n): this test needs n GiB of GPU memory, above the "
                                       "per-worker cap: the cap is lifted to n GiB while it runs")
    if hasattr(config.option, "loadscopereorder"):  # the xdist controller: keep the order set below
        config.option.loadscopereorder = False
    # xdist workers share the cores: each takes its share of PyTorch's intra-op threads. Two workers
    # with two threads each on CI's 2 cores spin against each other in every multithreaded op (the
    # released-config launch-count test took 43 s that way, 10 s with a core to itself).
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(SLOW_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file's order kept


@pytest.fixture(autouse=True)
def gpu_memory_for_this_test(request):
    """A test marked ``gpu_memory_gib(n)`` runs with its worker's cap lifted to n GiB, then the
    worker's cached memory is handed back and its cap restored. (One such test, the 64-bit offsets
    partition, holds ~16 GiB: above a worker's share on an H200, and far above it on an H100.)"""
    marker = request.node.get_closest_marker("gpu_memory_gib")
    if marker is None or not torch.cuda.is_available():
        yield
        return
    yield from lifted_gpu_memory_cap(marker.args[0])


def lifted_gpu_memory_cap(gib: float):
    """Generator body of the fixture above (a plain function, so it can be tested with CUDA mocked)."""
    total = torch.cuda.get_device_properties(0).total_memory
    try:
        capped = torch.cuda.get_per_process_memory_fraction(0)
    except RuntimeError:  # an allocator backend without the setting (cudaMallocAsync): nothing capped
        capped = 1.0
    needed = min(1.0, gib * 2**30 / total)
    if capped >= needed:
        yield
        return
    torch.cuda.set_per_process_memory_fraction(needed)
    try:
        yield
    finally:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()  # (the test's tensors are gone: its blocks go back to the driver)
        torch.cuda.set_per_process_memory_fraction(capped)


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.double(), ref.double()
    return ((out - ref).norm() / ref.norm()).item()


def random_state_dict(config: LUAConfig, seed: int = 0, table_std: float = 1.0) -> dict:
    """Released-format state dict with every learned tensor randomised.

    Larger-than-init bias tables and norms make the relative position bias, the
    norms and the biases matter, so a wrong index or a dropped term shows.
    """
    gen = torch.Generator().manual_seed(seed)
    model = LUA(config)
    sd = {}
    for key, value in model.state_dict().items():
        if key.endswith(("relative_position_index", "attn_mask")):
            sd[key] = value.clone()
        elif key.endswith("relative_position_bias_table"):
            sd[key] = table_std * torch.randn(value.shape, generator=gen)
        elif "norm" in key and key.endswith("weight"):
            sd[key] = 1.0 + 0.2 * torch.randn(value.shape, generator=gen)
        elif key.endswith("bias"):
            sd[key] = 0.1 * torch.randn(value.shape, generator=gen)
        else:
            fan_in = value[0].numel()
            sd[key] = torch.randn(value.shape, generator=gen) / fan_in**0.5
    return sd


TINY = dict(embed_dim=16, depths=(2, 2), num_heads=(2, 4), window_size=4, head_width=8, img_size=8)


def tiny_config(channels: int = 4, **overrides) -> LUAConfig:
    return LUAConfig(in_channels=channels, out_channels=channels, **{**TINY, **overrides})


@pytest.fixture
def tiny():
    return tiny_config()


BACKENDS = ["reference", "torch", "torch-no-native"]


@pytest.fixture(params=BACKENDS)
def backend(request, monkeypatch):
    """A backend name for lua_fast.load; "torch-no-native" is the torch backend on PyTorch fallback ops."""
    if request.param == "torch-no-native":
        from lua_fast import native

        monkeypatch.setattr(native, "unavailable_reason", lambda device: "simulated: extension absent")
        return "torch"
    return request.param


def run_in_threads(fn, count: int) -> list:
    """Run fn(i) for i in range(count) on concurrent threads; return the exceptions raised."""
    import threading

    errors = []

    def work(i):
        try:
            fn(i)
        except Exception as exc:  # collected and asserted on by the caller
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors
