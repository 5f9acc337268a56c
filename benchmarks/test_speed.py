"""pytest-benchmark suite (not part of the test suite; never gates CI on a timing).

    python -m pytest benchmarks/test_speed.py --benchmark-only [--benchmark-json out.json]

Each timed callable synchronises the device, so GPU timings cover the kernels. On CPU the
small config runs; on CUDA the released config at a 64x64 latent.
"""

import pytest
import torch

import lua_fast
from lua_fast import LUAConfig, dispatch
from lua_fast.benchmark import synchronize
from lua_fast.reference import LUA

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
CONFIG = LUAConfig.flux() if DEVICE.type == "cuda" else LUAConfig.small()
SIZE = 64 if DEVICE.type == "cuda" else 24


@pytest.fixture(scope="module")
def state_dict():
    torch.manual_seed(0)
    return LUA(CONFIG).state_dict()


@pytest.mark.parametrize("precision", ["fp32", "bf16", "mixed"])
@pytest.mark.parametrize("backend", list(dispatch.BACKENDS))
def test_upscale_x2(benchmark, state_dict, backend, precision):
    reason = dispatch.availability(DEVICE, precision, for_auto=True)[backend]
    if reason:
        pytest.skip(reason)
    up = lua_fast.load(state_dict, device=DEVICE, backend=backend, precision=precision)
    x = torch.randn(1, CONFIG.in_channels, SIZE, SIZE, device=DEVICE)

    def run():
        out = up.upscale(x, check_finite=False)
        synchronize(DEVICE)
        return out

    benchmark.extra_info.update(device=str(DEVICE), backend=backend, precision=precision, latent=SIZE)
    assert benchmark(run).shape == (1, CONFIG.out_channels, 2 * SIZE, 2 * SIZE)


def test_window_mask_new_size(benchmark):
    from lua_fast.ops import window_mask

    sizes = iter(range(10**6))

    def run():  # a new geometry each call, like the released code's per-size rebuild
        n = next(sizes) % 4 + 2
        out = window_mask(16 * n, 16 * n, 16, 8, dtype=torch.float32, device=DEVICE)
        synchronize(DEVICE)
        return out

    benchmark(run)
