"""Whole-model parity on a GPU (skipped without CUDA): the released configuration with random
weights, odd and even latents, x2 and x4, every backend against the fp32 reference."""

import pytest
import torch

import lua_fast
from lua_fast import LUAConfig
from lua_fast.reference import LUA
from conftest import rel_err

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@pytest.fixture(scope="module")
def released_random():
    torch.manual_seed(0)
    return LUA(LUAConfig.flux()).state_dict()


@pytest.fixture(autouse=True)
def exact_fp32():
    """fp32 parity needs IEEE convs and matmuls (cuDNN allows TF32 by default)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.mark.parametrize("size", [(40, 72), (64, 64)])
def test_torch_backend_matches_reference_on_gpu(released_random, size):
    x = torch.randn(1, 16, *size, device="cuda")
    ref_fp32 = lua_fast.load(released_random, device="cuda", backend="reference").upscale(x, scale=(2, 4))
    fast_fp32 = lua_fast.load(released_random, device="cuda", backend="torch").upscale(x, scale=(2, 4))
    ref_bf16 = lua_fast.load(released_random, device="cuda", dtype="bf16", backend="reference").upscale(x, scale=(2, 4))
    fast_bf16 = lua_fast.load(released_random, device="cuda", dtype="bf16", backend="torch").upscale(x, scale=(2, 4))
    for s in (2, 4):
        assert rel_err(fast_fp32[s], ref_fp32[s]) <= 1e-5
        assert rel_err(fast_bf16[s], ref_fp32[s]) <= 2 * rel_err(ref_bf16[s], ref_fp32[s]) + 1e-6
