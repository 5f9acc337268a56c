"""The torch backend's CPU attention: a contiguous bias and, in eager inference, the bias add, the
mask add and the softmax in place on scores that every block of a forward writes into one buffer,
with the reference's bits (2026-11-28; timed in benchmarks/bench_cpu_attention.py)."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import lua_fast
from lua_fast.backends import torch_backend
from lua_fast.reference.model import WindowAttention
from conftest import random_state_dict, rel_err, tiny_config

CONFIG = tiny_config(4)  # windows of 4: 2 stages of 2 blocks, every second block shifted
BLOCKS, SHIFTED = sum(CONFIG.depths), sum(d // 2 for d in CONFIG.depths)


@pytest.fixture(scope="module")
def weights():
    return random_state_dict(CONFIG, seed=29)


class OpLog(TorchDispatchMode):
    """The ops a call runs, and the storages the scores GEMMs (``bmm``) and the qkv / fc1 GEMMs
    (``addmm``) write into with ``out=``."""

    def __init__(self):
        super().__init__()
        self.ops, self.score_storages, self.linear_storages = [], [], []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self.ops.append(str(func))
        if func is torch.ops.aten.bmm.out:
            self.score_storages.append(kwargs["out"].untyped_storage().data_ptr())
        if func is torch.ops.aten.addmm.out:
            self.linear_storages.append(kwargs["out"].untyped_storage().data_ptr())
        return func(*args, **kwargs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("window", [4, 8])
def test_the_contiguous_bias_is_the_references_bias(dtype, window):
    attn = WindowAttention(12, window, 3).to(dtype)
    with torch.no_grad():
        attn.relative_position_bias_table.normal_()
    bias = torch_backend.relative_position_bias(attn, dtype)
    assert bias.is_contiguous() and bias.dtype == dtype
    assert torch.equal(bias, attn.relative_position_bias().to(dtype))
    wide = torch_backend.relative_position_bias(attn, torch.float32)  # a bf16 table read as fp32: exact
    assert torch.equal(wide, attn.relative_position_bias().float())


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_cpu_inference_takes_the_scores_in_place_with_the_references_bits(weights, precision):
    """Odd sides (padding), batch 2, a channels-last input, both heads from one trunk: the same bits
    as the reference, in place or not; in place, one out= softmax per block and no new score-sized
    tensor from an add, and the scores, qkv and fc1 GEMMs of all blocks write into one buffer each.
    Before 2026-11-28 each block allocated four score-sized tensors, qkv, and the MLP's hidden
    activations twice (fc1, GELU)."""
    x = torch.randn(2, 4, 7, 10, generator=torch.Generator().manual_seed(3)).contiguous(
        memory_format=torch.channels_last)
    expected = lua_fast.load(weights, backend="reference", precision=precision).upscale(x, scale=(2, 4))
    up = lua_fast.load(weights, backend="torch", precision=precision)
    with OpLog() as log:
        got = up.upscale(x, scale=(2, 4))
    assert log.ops.count("aten._softmax.out") == BLOCKS and "aten._softmax.default" not in log.ops
    assert log.ops.count("aten.add_.Tensor") >= BLOCKS + SHIFTED
    # One score buffer per forward, grown for the stage with more heads (CONFIG: 2 then 4)
    assert len(log.score_storages) == BLOCKS and len(set(log.score_storages)) == len(set(CONFIG.num_heads))
    # qkv and fc1 of every block into two buffers; the GELU in place
    assert len(log.linear_storages) == 2 * BLOCKS and len(set(log.linear_storages)) == 2
    assert log.ops.count("aten.gelu_.default") == BLOCKS and "aten.gelu.default" not in log.ops
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch_backend, "_reuse_memory", lambda *tensors: False)
        with OpLog() as log:
            out_of_place = up.upscale(x, scale=(2, 4))
    assert log.ops.count("aten._softmax.default") == BLOCKS and "aten._softmax.out" not in log.ops
    assert "aten.addmm.out" not in log.ops and "aten.gelu_.default" not in log.ops
    for s in (2, 4):
        assert torch.equal(got[s], expected[s]) and torch.equal(out_of_place[s], expected[s])


def test_scores_stay_out_of_place_where_a_backward_or_autocast_needs_them(weights):
    """Gradients (an out= softmax has no backward) and "mixed" (autocast: the add promotes the
    bf16 scores to fp32 and the softmax runs in fp32) take the reference's out-of-place ops."""
    up = lua_fast.load(weights, backend="torch", dtype=torch.float64)
    x = torch.randn(1, 4, 8, 8, dtype=torch.float64, requires_grad=True)
    with OpLog() as log:
        out = up.model(x, (2,))[2]
    assert "aten._softmax.out" not in log.ops and "aten.addmm.out" not in log.ops and "aten.gelu_.default" not in log.ops
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()

    mixed = lua_fast.load(weights, backend="torch", precision="mixed")
    with OpLog() as log:
        mixed.upscale(x.detach().float())
    assert "aten._softmax.out" not in log.ops and "aten.addmm.out" not in log.ops


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_the_sdpa_attention_computes_the_references(weights, dtype, monkeypatch):
    """``ATTENTION_IMPL``'s other choice, kept for a GPU measurement: SDPA with the bias, plus the
    shift mask in shifted blocks, as its float mask. Nothing ran it before 2026-11-29 (a mutation
    survey dropped the shift mask from it, and every test passed)."""
    monkeypatch.setitem(torch_backend.ATTENTION_IMPL, "cpu", "sdpa")
    x = torch.randn(2, 4, 7, 10, generator=torch.Generator().manual_seed(5), dtype=dtype)
    expected = lua_fast.load(weights, backend="reference", dtype=dtype).upscale(x, scale=(2, 4))
    up = lua_fast.load(weights, backend="torch", dtype=dtype)
    with OpLog() as log:
        got = up.upscale(x, scale=(2, 4))
    # (under a dispatch mode SDPA runs its math path, whose softmax is _safe_softmax)
    assert "aten._softmax.out" not in log.ops and "aten._softmax.default" not in log.ops
    assert any("scaled_dot_product" in op or "_safe_softmax" in op for op in log.ops)
    for s in (2, 4):
        assert rel_err(got[s], expected[s]) <= (1e-12 if dtype == torch.float64 else 1e-5)
