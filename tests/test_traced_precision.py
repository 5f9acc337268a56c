"""PyTorch's TF32 switches under torch.compile and in AOTInductor packages.

An fp32/tf32 model on CUDA sets the process-global switches around its cuBLAS / cuDNN calls
(cuDNN runs fp32 convs in TF32 by default: ~1e-3 error). A compiled graph cannot set them: before,
Dynamo hit the switches' lock (fullgraph failed, with no hint), and an AOTInductor package ran with
whatever the caller had set. No GPU here: these tests make a CPU forward need the switches (what a
CUDA one does) and check who sets them, and when.
"""

import pytest
import torch

import lua_fast
from lua_fast import precision as P
from conftest import random_state_dict, tiny_config

FP32 = P.resolve("fp32", None)
CUDA = torch.device("cuda")  # only its type is read: no CUDA tensor is made


def switched_region(x):
    with P.backend_flags(FP32, CUDA):
        return x * 2


def test_fullgraph_compile_without_the_switches_says_how_to_hold_them():
    torch._dynamo.reset()
    with pytest.raises(Exception, match=r"cannot be set inside a compiled graph.*backend_flags\(up.precision"):
        torch.compile(switched_region, fullgraph=True, backend="aot_eager")(torch.ones(3))
    assert P._switched[0] is None and not P._tf32_lock._is_owned()


def test_plain_compile_switches_eagerly_and_restores():
    before = P.tf32_switches()
    seen = []
    torch._dynamo.reset()

    def region(x):
        with P.backend_flags(FP32, CUDA):
            seen.append(P._switched[0])  # (a list append: Dynamo would replay it after the graph)
            return x * 2

    assert torch.equal(torch.compile(region, backend="aot_eager")(torch.ones(3)), torch.full((3,), 2.0))
    assert seen == ["fp32"] and P.tf32_switches() == before and P._switched[0] is None


def test_compiled_call_inside_the_held_switches_is_one_graph():
    before = P.tf32_switches()
    torch._dynamo.reset()
    with P.backend_flags(FP32, CUDA):
        assert P.tf32_switches() == (("ieee", "ieee") if P._FP32_PRECISION_API else (False, False))
        explained = torch._dynamo.explain(switched_region)(torch.ones(3))
        assert (explained.graph_count, explained.graph_break_count) == (1, 0)
        out = torch.compile(switched_region, fullgraph=True, backend="aot_eager")(torch.ones(3))
    assert torch.equal(out, torch.full((3,), 2.0)) and P.tf32_switches() == before


@pytest.fixture
def cpu_needs_switches(monkeypatch):
    """A CPU forward takes the switches' path as an fp32 / tf32 CUDA one does."""
    monkeypatch.setattr(P, "_needs_switches", lambda precision, device: precision.storage == torch.float32
                        and precision.mode != "mixed")


@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_compiled_fp32_model_of_an_eager_backend(backend, cpu_needs_switches):
    up = lua_fast.load(random_state_dict(tiny_config(4), seed=2), backend=backend)
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    want = up.model(x, (2,))[2]
    torch._dynamo.reset()
    with pytest.raises(Exception, match="cannot be set inside a compiled graph"):
        torch.compile(up.model, fullgraph=True, backend="aot_eager")(x, (2,))
    torch._dynamo.reset()
    with torch.no_grad(), P.backend_flags(up.precision, up.device):
        got = torch.compile(up.model, fullgraph=True, backend="aot_eager")(x, (2,))[2]
    assert torch.equal(got, want)


def test_package_runner_holds_the_switches(cpu_needs_switches):
    from lua_fast.export import PackageRunner

    seen = []

    def runner(x):
        seen.append((P._switched[0], P.tf32_switches()))
        return (x.repeat_interleave(2, -1).repeat_interleave(2, -2),)

    x = torch.randn(1, 4, 8, 8)
    out = PackageRunner(runner, (2,), 4, 4, 64, FP32)(x, (2,))
    assert out[2].shape == (1, 4, 16, 16)
    assert seen == [("fp32", ("ieee", "ieee") if P._FP32_PRECISION_API else (False, False))]
    assert P._switched[0] is None
