"""CUDA-graph keys (the capture itself needs a GPU: tests/test_gpu_backends.py): a graph replays the
kernels it captured, so every switch read per forward or per launch must be part of its key."""

import torch

from lua_fast import cuda_graphs
from lua_fast.kernels import attention_proj, fused_mlp, triton_support


def test_the_switches_are_the_ones_the_kernels_read():
    assert set(cuda_graphs.SWITCHES) == {fused_mlp.FUSED_MLP_ENV, attention_proj.FUSED_ATTN_PROJ_ENV,
                                         triton_support.PDL_ENV, triton_support.FP32_DOTS_ENV}


def test_flipping_a_switch_asks_for_another_graph(monkeypatch):
    runner = cuda_graphs.GraphRunner(model=None, device=torch.device("cpu"))
    x = torch.zeros(1, 16, 8, 8)
    for name in cuda_graphs.SWITCHES:
        monkeypatch.delenv(name, raising=False)
    plain = runner.key(x, (2,))
    assert runner.key(x.clone(), (2,)) == plain
    assert runner.key(x, (4,)) != plain and runner.key(x.to(torch.float16), (2,)) != plain
    for name, value in [("LUA_FAST_FUSED_MLP", "1"), ("LUA_FAST_FUSED_ATTN_PROJ", "1"), ("LUA_FAST_PDL", "1"),
                        ("LUA_FAST_FP32_DOTS", "tf32x3")]:
        monkeypatch.setenv(name, value)
        assert runner.key(x, (2,)) != plain, name
        monkeypatch.delenv(name)
    assert runner.key(x, (2,)) == plain


def test_the_tuning_mode_asks_for_another_graph(monkeypatch):
    """Under torch.use_deterministic_algorithms(True) or LUA_FAST_AUTOTUNE=0 the kernels run their
    first configs, not the timed ones a graph captured before."""
    runner = cuda_graphs.GraphRunner(model=None, device=torch.device("cpu"))
    x = torch.zeros(1, 16, 8, 8)
    monkeypatch.setenv("LUA_FAST_AUTOTUNE", "1")
    timed = runner.key(x, (2,))
    monkeypatch.setenv("LUA_FAST_AUTOTUNE", "0")
    assert runner.key(x, (2,)) != timed
    monkeypatch.setenv("LUA_FAST_AUTOTUNE", "1")
    before = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        torch.use_deterministic_algorithms(True)
        assert runner.key(x, (2,)) != timed
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
    assert runner.key(x, (2,)) == timed
