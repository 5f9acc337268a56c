"""What differs between the Triton releases lua_fast supports (3.6-3.9) and is handled in code.

Triton 3.6's interpreter cannot use a program-id-derived tensor as a loop bound under NumPy >= 2.4
(86 tests failed that way on 3.6.0 with NumPy 2.4.6 before the backport in triton_support).
"""

import pytest
import torch

from lua_fast.kernels import triton_support

triton = pytest.importorskip("triton")
tl = triton.language

pytestmark = pytest.mark.skipif(not triton_support.INTERPRET, reason="checks the interpreter (TRITON_INTERPRET=1)")

VERSION = tuple(int(p) for p in triton.__version__.split("+")[0].split(".")[:2])


@triton.jit
def _sum_groups(x_ptr, out_ptr, n, GROUP: tl.constexpr):
    """out[pid] = sum of x over rows pid*GROUP .. min(pid*GROUP + GROUP, n): a loop whose bounds
    are tensors, as fused_linear's N-tile groups are."""
    pid = tl.program_id(0)
    last = tl.minimum(pid * GROUP + GROUP, n)
    total = tl.zeros([16], tl.float32)
    for row in range(pid * GROUP, last):
        total += tl.load(x_ptr + row * 16 + tl.arange(0, 16))
    tl.store(out_ptr + pid * 16 + tl.arange(0, 16), total)


def test_interpreter_takes_tensor_loop_bounds():
    x = torch.randn(7, 16)
    out = torch.full((3, 16), float("nan"))
    _sum_groups[(3,)](x, out, 7, GROUP=3)
    torch.testing.assert_close(out, torch.stack([x[0:3].sum(0), x[3:6].sum(0), x[6:7].sum(0)]))


def test_backport_applies_to_older_interpreters_only():
    assert triton_support.INTERPRET_INDEX_BACKPORTED == (VERSION < (3, 7))
    assert triton_support._backport_interpreter_index() is False  # once only, and never on >= 3.7


def test_kernel_wrappers_read_no_data_pointer_of_a_fake_tensor():
    """torch 2.11's Dynamo runs a triton_op on fake tensors while ``is_compiling()`` is False, and a
    fake tensor's ``data_ptr()`` then raises ("Cannot access data pointer of Tensor"); the
    alignment and border checks must read only sizes, strides and offsets of fake tensors."""
    import warnings

    from torch._subclasses.fake_tensor import FakeTensorMode

    from lua_fast.kernels import conv3x3

    with FakeTensorMode() as mode, warnings.catch_warnings():
        warnings.simplefilter("error")  # (2.13 only warns where 2.11's Dynamo raises)
        t = mode.from_tensor(torch.randn(4, 64, dtype=torch.bfloat16))
        assert conv3x3.alignment(t) == 16 and conv3x3.alignment(t[:, 1:]) == 1
        assert triton_support.without_data(t)
    assert not triton_support.without_data(torch.randn(2))


def test_without_data_sees_fake_tensors_inside_wrappers_of_the_plain_type():
    """``without_data`` skips ``is_fake`` for a plain ``torch.Tensor`` (host time per launch), but
    C++ functionalization and functorch wrap a tensor without changing its Python type: a fake
    tensor inside one must still count as data-less, and a real one inside one as data."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    real = torch.randn(4, 64)
    mode = FakeTensorMode()
    fake = mode.from_tensor(real)
    wrapped_fake = torch._to_functional_tensor(fake)
    wrapped_real = torch._to_functional_tensor(real)
    assert type(wrapped_fake) is torch.Tensor and torch._is_functional_tensor(wrapped_fake)
    assert triton_support.without_data(fake) and triton_support.without_data(wrapped_fake)
    assert not triton_support.without_data(real) and not triton_support.without_data(wrapped_real)
    seen = []

    def look(x):  # under vmap, x is a functorch BatchedTensor of the plain type
        seen.append((type(x) is torch.Tensor, triton_support.without_data(x)))
        return x * 2

    torch.func.vmap(look)(real)
    assert seen == [(True, False)]
