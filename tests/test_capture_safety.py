"""What a CUDA graph needs from a forward, checked without a GPU: once its caches are warm, the
forward only runs device work. A copy from the host (a mask built on the CPU, a ``torch.tensor``
made from Python values) or a value read back (``.item()``, ``bool(t)``, ``nonzero``) cannot be
captured, and without graphs it stalls the host once per call.

The meta device stands in for CUDA: every op that moves data between the host and the device, or
reads a device value, is recorded. The reference and torch backends run here; the triton
backend's kernels cannot run on meta, so its capture is tested on the GPU
(test_gpu_backends.test_cuda_graph_replay_equals_eager, every backend)."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from lua_fast import LUAConfig, dispatch
from lua_fast.precision import resolve
from lua_fast.reference import LUA, windows

DEVICE = torch.device("meta")
# Ops that read a device value on the host, with a stand-in result (meta tensors hold no values).
READS = {torch.ops.aten._local_scalar_dense.default: lambda t: 0, torch.ops.aten.item.default: lambda t: 0,
         torch.ops.aten.is_nonzero.default: lambda t: False,
         torch.ops.aten.equal.default: lambda a, b: True,
         torch.ops.aten.nonzero.default: lambda t: torch.empty(0, t.dim(), dtype=torch.long, device=t.device)}


class HostTraffic(TorchDispatchMode):
    """Records (kind, op) for each host <-> device transfer and each device read; transfers run,
    reads return a stand-in."""

    def __init__(self) -> None:
        super().__init__()
        self.events = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in READS:
            self.events.append(("read", str(func)))
            return READS[func](*args)
        devices = {t.device.type for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor) and t.dim()}
        target = kwargs.get("device")
        if target is not None:
            devices.add(torch.device(target).type)
        if {"cpu", DEVICE.type} <= devices:
            self.events.append(("transfer", str(func)))
        return func(*args, **kwargs)


def tensors_from_python_values(monkeypatch, events):
    """``torch.tensor(values, device=...)`` copies from the host below the dispatcher's Python modes."""
    for name in ("tensor", "as_tensor"):
        real = getattr(torch, name)

        def make(*args, _real=real, _name=name, **kwargs):
            if kwargs.get("device") is not None and torch.device(kwargs["device"]).type != "cpu":
                events.append(("transfer", f"torch.{_name}"))
            return _real(*args, **kwargs)

        monkeypatch.setattr(torch, name, make)


def warm_forward_traffic(monkeypatch, backend: str, mode: str) -> list:
    """Host traffic of the second forward (x2 and x4, batch 2, odd latent: padding, shifted blocks)."""
    precision = resolve(mode, None)
    torch.manual_seed(0)
    model = LUA(LUAConfig.small()).to(precision.storage).eval().to(DEVICE)
    runner = dispatch.BACKENDS[backend].build(model, precision)
    x = torch.empty(2, 16, 13, 21, device=DEVICE, dtype=precision.storage)
    watch = HostTraffic()
    with torch.inference_mode():
        with HostTraffic():  # (a first call may move data: it fills the mask caches)
            first = runner(x, (2, 4))
        assert first[2].shape == (2, 16, 26, 42) and first[4].shape == (2, 16, 52, 84)
        tensors_from_python_values(monkeypatch, watch.events)
        with watch:
            runner(x, (2, 4))
    return watch.events


@pytest.mark.parametrize("backend", ["reference", "torch"])
@pytest.mark.parametrize("mode", ["fp32", "bf16"])
def test_warm_forward_runs_only_device_work(monkeypatch, backend, mode):
    assert warm_forward_traffic(monkeypatch, backend, mode) == []


def test_the_released_codes_per_call_mask_is_caught(monkeypatch):
    """The check can fail: the released code builds each shift mask on the CPU and copies it over
    in every shifted block (bench_e2e's released-style row does the same)."""

    def released_mask(height, width, window, shift, *, device, dtype, cache=None):
        return windows.build_shift_mask(height, width, window, shift, dtype=dtype).to(device)

    monkeypatch.setattr(windows, "shift_mask", released_mask)
    events = warm_forward_traffic(monkeypatch, "reference", "fp32")
    # one per shifted block: the small config has 2 groups of 2 blocks, every second one shifted
    assert events == [("transfer", "aten.to.dtype_layout")] * 2, events


def test_a_value_read_back_is_caught(monkeypatch):
    """... and sees a read of a device value (``bool(t)``, ``.item()``) inside the forward."""
    real = windows.shift_mask

    def checked_mask(*args, **kwargs):
        mask = real(*args, **kwargs)
        assert not bool(torch.isnan(mask).any()) and mask.min().item() >= -100  # two syncs per call on CUDA
        return mask

    monkeypatch.setattr(windows, "shift_mask", checked_mask)
    events = warm_forward_traffic(monkeypatch, "reference", "bf16")
    assert {op for _, op in events} == {"aten.is_nonzero.default", "aten.item.default"}, events
    assert {kind for kind, _ in events} == {"read"}
