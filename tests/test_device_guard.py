"""Triton launches a kernel on the *current* CUDA device, whatever device its tensors are on (PyTorch's
own ops switch to their tensors' device). So every kernel op, and the triton backend's forward once,
make the input's device current when it is another one. Checked here with a stand-in for a tensor
on cuda:1 and for torch.cuda's device switch; a two-GPU test (tests/test_gpu_backends.py) runs the
real thing where two GPUs exist."""

import contextlib

import pytest
import torch

from lua_fast.kernels import triton_support


class OnCuda(torch.Tensor):
    """A CPU tensor that answers like a tensor on cuda:``index``."""

    index = 1

    @property
    def is_cuda(self):
        return True

    def get_device(self):
        return self.index


@pytest.fixture
def devices(monkeypatch):
    """torch.cuda with device 0 current; returns the indices made current, in order."""
    entered = []

    @contextlib.contextmanager
    def device(index):
        entered.append(index)
        yield

    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "device", device)
    return entered


def test_other_cuda_device(devices):
    assert triton_support.other_cuda_device(torch.ones(2)) is None  # CPU tensors: nothing to switch
    assert triton_support.other_cuda_device(None) is None
    on1 = torch.ones(2).as_subclass(OnCuda)
    assert triton_support.other_cuda_device(on1) == 1
    OnCuda.index = 0
    try:
        assert triton_support.other_cuda_device(on1) is None  # already current
    finally:
        OnCuda.index = 1


def test_a_kernel_op_runs_with_its_input_device_current(devices, monkeypatch):
    monkeypatch.setattr(triton_support, "plain_eager", lambda args: True)  # the stand-in is a subclass
    ran_under = []

    @triton_support.kernel_op("_test_device_guard", fake=lambda x: torch.empty_like(x))
    def probe(x: torch.Tensor) -> torch.Tensor:
        ran_under.append(list(devices))
        return x.clone()

    probe(torch.ones(2).as_subclass(OnCuda))
    probe(torch.ones(2))
    assert ran_under == [[1], [1]]  # the first call inside cuda:1's context, the CPU call switched nothing


def test_the_op_itself_switches_device_under_a_dispatch_mode(devices):
    """A call under a Python dispatch mode (launch counting, a profiler's mode) or with a tensor
    subclass takes the registered op, not the direct call: the op's kernel switches device too."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Passthrough(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            return func(*args, **(kwargs or {}))

    ran_under = []

    @triton_support.kernel_op("_test_device_guard_op", fake=lambda x: torch.empty_like(x))
    def probe(x: torch.Tensor) -> torch.Tensor:
        ran_under.append(list(devices))
        return x.clone()

    with Passthrough():
        probe(torch.ones(2))
        assert ran_under == [[]]  # a CPU tensor: nothing switched
        probe(torch.ones(2).as_subclass(OnCuda))
    assert ran_under[1] == [1]
    probe(torch.ones(2).as_subclass(OnCuda))  # a subclass, no mode: the op path as well
    assert ran_under[2] == [1, 1]
