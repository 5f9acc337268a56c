"""Programmatic dependent launch (PDL, ``LUA_FAST_PDL=1``): when it is used, and that every Triton
kernel launch carries the switch both ways (the kernels' ``PDL`` constexpr and Triton's
``launch_pdl`` launch option). That each kernel waits for the previous grid before its first memory
access is checked on the compiled PTX (tests/test_triton_compile.py); that PDL changes no result is
a GPU test (tests/test_gpu_backends.py)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lua_fast.kernels import (attention_proj, conv3x3, fused_linear, fused_mlp, layer_norm, triton_support,
                              window_attention)

pytestmark = pytest.mark.skipif(triton_support.triton is None, reason="triton is not installed")
CUDA = torch.device("cuda", 0)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def compiled_mode(monkeypatch):
    """As on a Hopper GPU: compiled kernels, capability 9.0, PDL switched on."""
    monkeypatch.setattr(triton_support, "INTERPRET", False)
    monkeypatch.setattr(triton_support, "_capability", lambda index: (9, 0))
    monkeypatch.setenv(triton_support.PDL_ENV, "1")


def test_off_by_default(monkeypatch):
    monkeypatch.delenv(triton_support.PDL_ENV, raising=False)
    assert "LUA_FAST_PDL=1" in triton_support.pdl_reason(CUDA)
    monkeypatch.setenv(triton_support.PDL_ENV, "0")
    assert triton_support.pdl_options(CUDA) == {"PDL": False}


@pytest.mark.skipif(triton_support.gdc_wait is None, reason="this Triton has no grid dependency control")
def test_used_only_where_it_can_run(compiled_mode, monkeypatch):
    assert triton_support.pdl_reason(CUDA) is None
    assert triton_support.pdl_options(CUDA) == {"PDL": True, "launch_pdl": True}
    assert "CUDA device" in triton_support.pdl_reason(torch.device("cpu"))
    monkeypatch.setattr(triton_support, "_capability", lambda index: (8, 0))  # griddepcontrol is sm_90+ PTX
    assert "9.0" in triton_support.pdl_reason(CUDA) and triton_support.pdl_options(CUDA) == {"PDL": False}
    monkeypatch.setattr(triton_support, "_capability", lambda index: (9, 0))
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)  # Inductor launches traced kernels
    assert "torch.compile" in triton_support.pdl_reason(CUDA)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: False)
    from torch.utils._python_dispatch import TorchDispatchMode

    class Tracing(TorchDispatchMode):  # make_fx / torch.export trace under such a mode
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            return func(*args, **(kwargs or {}))

    with Tracing():
        assert "dispatch mode" in triton_support.pdl_reason(CUDA)
    monkeypatch.setattr(triton_support, "INTERPRET", True)
    assert "interpreter" in triton_support.pdl_reason(CUDA)
    monkeypatch.setattr(triton_support, "INTERPRET", False)
    monkeypatch.setattr(triton_support, "gdc_wait", None)
    assert "grid dependency control" in triton_support.pdl_reason(CUDA)


class _Capture:
    """Stands in for ``launcher``: records each launch's keywords, runs nothing."""

    def __init__(self):
        self.launches = []

    def __call__(self, kernel):
        return self

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.launches.append(kwargs)


def _launch_each_kernel(monkeypatch):
    """One launch of each of the six Triton kernels through its compiled-kernel branch, on CPU
    tensors, with the pdl decision forced to 'yes' for any device; returns their keywords."""
    capture = _Capture()
    for module in (fused_linear, window_attention, conv3x3, layer_norm, fused_mlp, attention_proj):
        monkeypatch.setattr(module, "launcher", capture)
        monkeypatch.setattr(module, "INTERPRET", False, raising=False)
    torch.manual_seed(0)
    x = torch.randn(16, 32)
    fused_linear._launch(x, torch.randn(32 + 128, 128), None, None, None, None, 64, False, torch.float32, None)
    heads, window, pad = 2, 4, 16
    window_attention._launch(torch.randn(1, 64, 3 * heads * pad), torch.randn(heads, 16, 16), 8, 8, heads, window, 4)
    conv3x3._launch(torch.randn(1, 4, 4, 16), torch.randn(9 * 16 + 128, 128), None, None, 32, 0.0, False, False)
    layer_norm._launch(x, None, None, torch.ones(32), torch.zeros(32), 1e-5, torch.float32)
    w1, w2 = torch.randn(32 + 128, 128), torch.randn(64 + 128, 128)
    fused_mlp._launch(x, w1, torch.zeros(128), torch.zeros(128), w2, torch.zeros(128), 1e-5, 64, torch.float32, None)
    attention_proj._launch(torch.randn(1, 64, 3 * heads * pad), torch.randn(heads, 16, 16), torch.randn(heads * pad + 128, 128),
                           torch.zeros(128), torch.randn(64, 32), 8, 8, heads, window, 2, 32)
    return capture.launches


@pytest.mark.parametrize("on", [True, False])
def test_every_kernel_launch_carries_the_switch(monkeypatch, on):
    monkeypatch.setattr(triton_support, "pdl_reason", lambda device: None if on else "off")
    launches = _launch_each_kernel(monkeypatch)
    assert len(launches) == 6
    for kwargs in launches:
        assert kwargs["PDL"] is on
        assert kwargs.get("launch_pdl", False) is on  # the constexpr and the launch attribute agree


def test_kernel_report_recorder_drops_the_launch_option():
    """scripts/compile_kernels.py specialises every keyword as a constexpr: ``launch_pdl`` is not one
    (it runs compiled kernels only: a fresh process without TRITON_INTERPRET)."""
    code = """
import sys, torch
sys.path.insert(0, "scripts")
import compile_kernels as ck
from lua_fast.kernels import layer_norm
sink = []
ck._Recorder("layer_norm", layer_norm._add_layer_norm_kernel, sink)[(1,)](torch.ones(2), PDL=True, launch_pdl=True,
                                                                          num_warps=4)
assert sink[0].kwargs == {"PDL": True}, sink[0].kwargs
assert not ck.pdl_ordered("ld.global.b32; griddepcontrol.wait; griddepcontrol.launch_dependents;")
assert not ck.pdl_ordered("griddepcontrol.launch_dependents; griddepcontrol.wait; ld.global.b32")
assert ck.pdl_ordered("griddepcontrol.wait; griddepcontrol.launch_dependents; ld.global.b32; st.global")
assert not ck.pdl_ordered("ld.global.b32")
print("ok")
"""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT,
                            timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]
