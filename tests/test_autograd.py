"""Gradients: the reference and torch backends are differentiable and agree; the triton backend
and the Triton kernel ops have no backward and say so instead of returning detached outputs.

Before: the native window ops had no autograd kernel, so backpropagating through the torch
backend gave input gradients 4.5% off the reference's (float64, PyTorch only warned), and the
triton backend's outputs silently carried no gradient at all.
"""

import pytest
import torch

import lua_fast
from lua_fast import NotDifferentiableError, native
from lua_fast.kernels import triton_support
from lua_fast.ops import window_ops as W
from conftest import random_state_dict, tiny_config

CONFIG = tiny_config(4)
CPU = torch.device("cpu")


def native_ops(device):
    reason = native.unavailable_reason(device)
    if reason:
        pytest.skip(reason)
    return torch.ops.lua_fast.window_partition, torch.ops.lua_fast.window_merge


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shift", [0, 2])
def test_native_window_ops_gradcheck(device, shift):
    partition, merge = native_ops(torch.device(device))
    window = 4
    x = torch.randn(2, 8, 12, 3, dtype=torch.float64, device=device, requires_grad=True)
    torch.autograd.gradcheck(lambda t: partition(t, window, shift), (x,))
    torch.autograd.gradgradcheck(lambda t: partition(t, window, shift), (x,))
    w = torch.randn(2 * 6, window * window, 3, dtype=torch.float64, device=device, requires_grad=True)
    torch.autograd.gradcheck(lambda t: merge(t, 2, 8, 12, window, shift), (w,))
    torch.autograd.gradgradcheck(lambda t: merge(t, 2, 8, 12, window, shift), (w,))


@pytest.mark.parametrize("device", DEVICES)
def test_native_window_op_gradients_equal_the_fallbacks(device):
    """Against torch.roll + view/permute, with an expanded (stride 0) and a transposed gradient."""
    partition, merge = native_ops(torch.device(device))
    x = torch.randn(3, 8, 16, 5, device=device)
    for op, ref, args, inp in ((partition, W.torch_window_partition, (4, 3), x),
                               (merge, W.torch_window_merge, (3, 8, 16, 4, 1), W.torch_window_partition(x, 4, 1))):
        grads = []
        for fn in (op, ref):
            leaf = inp.clone().requires_grad_()
            out = fn(leaf, *args)
            (out.sum() + (out * torch.randn(out.shape[::-1], generator=torch.Generator().manual_seed(0))
                          .to(device).permute(*reversed(range(out.dim())))).sum()).backward()
            grads.append(leaf.grad)
        assert torch.equal(grads[0], grads[1])


@pytest.fixture(scope="module")
def weights():
    return random_state_dict(CONFIG, seed=21)


@pytest.mark.parametrize("native_window_ops", [True, False], ids=["native", "fallback"])
def test_torch_backend_gradients_equal_the_reference(weights, native_window_ops, monkeypatch):
    """Input and weight gradients in float64, odd size (padding), batch 2, both heads from one trunk."""
    if native_window_ops:
        native_ops(CPU)
    else:
        monkeypatch.setattr(W, "_native_ok", lambda device: False)
    z = torch.randn(2, 4, 7, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    result = {}
    for backend in ("reference", "torch"):
        up = lua_fast.load(weights, backend=backend, dtype=torch.float64)
        up.reference_model.requires_grad_(True)
        leaf = z.clone().requires_grad_()
        out = up.model(leaf, (2, 4))
        loss = sum((y * torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view(y.shape)).sum() for y in out.values())
        loss.backward()
        params = dict(up.reference_model.named_parameters())
        result[backend] = leaf.grad, {k: p.grad for k, p in params.items()}
    (grad_ref, params_ref), (grad, params) = result["reference"], result["torch"]
    assert ((grad - grad_ref).norm() / grad_ref.norm()).item() < 1e-12
    assert params.keys() == params_ref.keys()
    for k in params_ref:
        if params_ref[k] is None:
            assert params[k] is None, k
        else:
            assert ((params[k] - params_ref[k]).norm() / params_ref[k].norm().clamp_min(1e-300)).item() < 1e-12, k


def test_compiled_torch_backend_gradients_equal_the_reference(weights):
    """AOT autograd traces the window ops' registered gradients (fullgraph)."""
    z = torch.randn(1, 4, 8, 11, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    grads = []
    for backend, wrap in (("torch", lambda m: torch.compile(m, fullgraph=True, backend="aot_eager")),
                          ("reference", lambda m: m)):
        up = lua_fast.load(weights, backend=backend, dtype=torch.float64)
        leaf = z.clone().requires_grad_()
        torch._dynamo.reset()
        wrap(up.model)(leaf, (2,))[2].pow(2).sum().backward()
        grads.append(leaf.grad)
    assert ((grads[0] - grads[1]).norm() / grads[1].norm()).item() < 1e-12


def triton_upscaler(weights):
    reason = triton_support.unavailable_reason(CPU)
    if reason:
        pytest.skip(reason)
    return lua_fast.load(weights, backend="triton", precision="fp32")


def test_triton_backend_refuses_gradients(weights):
    up = triton_upscaler(weights)
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(7))
    with pytest.raises(NotDifferentiableError, match="triton backend has no backward.*backend='torch'"):
        up.model(z.clone().requires_grad_(), (2,))
    expected = up.upscale(z)
    # Grad mode on but nothing requiring grad, and upscale (no_grad) of a leaf that requires grad: run.
    assert torch.equal(up.model(z, (2,))[2], expected)
    assert torch.equal(up.upscale(z.clone().requires_grad_()), expected)
    up.reference_model.requires_grad_(True)  # weights to train: the packed copies would not see them
    try:
        with pytest.raises(NotDifferentiableError):
            up.model(z, (2,))
        with torch.no_grad():
            assert torch.equal(up.model(z, (2,))[2], expected)
    finally:
        up.reference_model.requires_grad_(False)


def test_kernel_ops_refuse_gradients():
    if triton_support.unavailable_reason(CPU):
        pytest.skip(triton_support.unavailable_reason(CPU))
    from lua_fast.kernels.layer_norm import add_layer_norm

    t = torch.randn(5, 32)
    w, b = torch.rand(32) + 0.5, torch.randn(32)
    with pytest.raises(NotDifferentiableError, match="lua_fast::add_layer_norm has no backward"):
        add_layer_norm(t.clone().requires_grad_(), w, b, 1e-5)
    with torch.no_grad():
        s, y = add_layer_norm(t.clone().requires_grad_(), w, b, 1e-5)
    assert torch.allclose(y, torch.nn.functional.layer_norm(t, (32,), w, b, 1e-5), atol=1e-5)
    assert issubclass(NotDifferentiableError, RuntimeError)
