"""A stand-in GPU for Triton's launch path, so its host cost can be measured on a machine without one.

    with stub_gpu() as stub:   # before any lua_fast kernel has launched; not under TRITON_INTERPRET
        backend(x, (2,))       # CPU tensors; every Triton launch runs its whole Python path

Inside, Triton's active driver reports an sm_90 device with stream 0, and ``triton.compile`` returns
a stub binary whose launch does nothing. So a triton-backend forward on CPU tensors runs lua_fast's
wrappers, the op dispatch, Triton's autotuner and the JIT's argument binding, specialisation and
cache lookup exactly as on a GPU, and stops short of the compiled launcher (C: a few us per launch)
and the CUDA driver. Nothing is compiled and no kernel runs: outputs hold whatever ``torch.empty``
gave. The autotuner takes each kernel's first config untimed (``LUA_FAST_AUTOTUNE=0``), or with
``autotune=True`` times every config the prune hooks keep with made-up (seeded) times, so it
picks configs other than the first.

Kernels keep their stub binaries for the life of the process: use it in a process of its own
(``bench_host_overhead.py`` and ``tests/test_host_launch.py`` do).
"""

from __future__ import annotations

import contextlib
import os
import random
from unittest import mock

import torch

from lua_fast.kernels import attention_proj, conv3x3, fused_linear, fused_mlp, layer_norm, triton_support, window_attention

# Where "can Triton kernels run on this device?" is asked (backend dispatch too): yes, on CPU tensors.
KERNEL_MODULES = (attention_proj, conv3x3, fused_linear, fused_mlp, layer_norm, window_attention, triton_support)
SM90_PROPERTIES = {"max_shared_mem": 232448, "multiprocessor_count": 132, "max_num_regs": 65536, "warpSize": 32,
                   "sm_clock_rate": 1980000, "mem_clock_rate": 3201000, "mem_bus_width": 6144}


class _StubUtils:
    def get_device_properties(self, device):
        return dict(SM90_PROPERTIES)


class _StubDriver:
    utils = _StubUtils()

    def get_current_device(self):
        return 0

    def get_current_stream(self, device=None):
        return 0

    def get_current_target(self):
        from triton.backends.compiler import GPUTarget

        return GPUTarget("cuda", 90, 32)

    def get_active_torch_device(self):
        return torch.device("cpu")

    def is_active(self):
        return True


class _StubBinary:
    """What ``triton.compile`` returns here: the attributes the JIT's launch reads, a no-op launch."""

    function = 0
    packed_metadata = ()

    def __init__(self, name: str, options: dict, stub: Stub):
        self.name, self.metadata, self.stub = name, options, stub

    def launch_metadata(self, grid, stream, *args):
        return None

    def run(self, *args):
        self.stub.launches += 1


class Stub:
    """Counts what crossed the stub: binaries 'compiled', launches that reached them, and configs
    the autotuner timed."""

    def __init__(self):
        self.compiles = self.launches = self.timed = 0


@contextlib.contextmanager
def stub_gpu(autotune: bool = False, seed: int = 0):
    """The stand-in GPU (see the module docstring); yields a :class:`Stub` counting what crossed it.
    A binary reports its launches to the Stub of the context that 'compiled' it."""
    if triton_support.INTERPRET:
        raise RuntimeError("stub_gpu needs compiled Triton kernels: run without TRITON_INTERPRET=1")
    import triton.compiler
    import triton.testing
    from triton.runtime.driver import driver

    stub = Stub()

    def compile_stub(src, target=None, options=None, **_):
        stub.compiles += 1
        return _StubBinary(getattr(src, "name", "kernel"), dict(options or {}), stub)

    times = random.Random(seed)

    def made_up_time(kernel_call, warmup=None, rep=None, quantiles=None, **_):
        kernel_call()
        stub.timed += 1
        t = times.random()
        return [t] * len(quantiles) if quantiles else t

    patches = [mock.patch.object(triton.compiler, "compile", compile_stub),
               mock.patch.object(triton.testing, "do_bench", made_up_time),
               mock.patch.dict(os.environ, {"LUA_FAST_AUTOTUNE": "1" if autotune else "0"})]
    patches += [mock.patch.object(module, "unavailable_reason", lambda device: None) for module in KERNEL_MODULES]
    previous = driver._active  # (None until a driver was needed; reset_active() would create the real one)
    active = _StubDriver()
    active.get_benchmarker = lambda: made_up_time  # (autotuners made without a do_bench: torch.compile's copies)
    driver.set_active(active)
    try:
        with contextlib.ExitStack() as stack:
            for patch in patches:
                stack.enter_context(patch)
            yield stub
    finally:
        driver._active = previous
