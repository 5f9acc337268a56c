"""``import lua_fast`` and eager use import neither torch._dynamo nor Triton; compiles find the graph breaks.

``torch.compiler.disable`` imports Dynamo, and so do torch's Python meta kernels (a model built on
the meta device): before 2026-11-29 that was 1.2 s of every ``import lua_fast`` and every
``lua-fast`` command (3.2 s -> 2.2 s for the import, 3.5 s -> 2.2 s for ``lua-fast info`` on the
development CPU). ``lua_fast.untraced`` hands out the disabled functions once Dynamo is imported.
Triton's import (0.25 s) waits for a CUDA device, ``TRITON_INTERPRET=1`` or ``lua-fast info``.
Each check runs in a fresh interpreter: in this one, other tests have long imported Dynamo.
"""

import os
import subprocess
import sys
import textwrap

import pytest

from lua_fast import untraced

PRELUDE = """
import sys, torch, lua_fast
from lua_fast.reference import LUA
torch.manual_seed(0)
up = lua_fast.load(LUA(lua_fast.LUAConfig.small(4)).state_dict(), backend={backend!r})
z = torch.randn(2, 4, 9, 7)
"""


def run_fresh(code: str, backend: str = "torch", interpret: bool = True) -> str:
    """``code`` after PRELUDE in a new interpreter; ``interpret=False``: as a user's CPU machine runs,
    without the suite's TRITON_INTERPRET=1."""
    script = textwrap.dedent(PRELUDE.format(backend=backend)) + textwrap.dedent(code)
    env = {k: v for k, v in os.environ.items() if interpret or k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.parametrize("backend", ["auto", "reference"])
def test_import_load_and_eager_upscales_leave_dynamo_unimported(backend):
    out = run_fresh("""
        up.upscale(z)
        up.upscale(z, scale=(2, 4))
        up.upscale(torch.randn(1, 4, 40, 24), tile=16)
        up.upscale(z.double())                                   # the cast's overflow check
        print("dynamo" if "torch._dynamo" in sys.modules else "no dynamo")
        print("triton" if "triton" in sys.modules else "no triton")  # (a CPU upscaler never runs its kernels)
    """, backend, interpret=False)
    assert out.split() == ["no", "dynamo", "no", "triton"]


def test_the_cpu_reason_for_triton_is_the_kernels_own():
    """dispatch answers "not on a CPU" without importing Triton (0.25 s); the words are triton_support's."""
    out = run_fresh("""
        from lua_fast import dispatch
        assert up.backend == "torch" and "triton" not in sys.modules
        got = [dispatch._triton_reason(torch.device(d), up.precision) for d in ("cpu", "meta")]
        from lua_fast.kernels import triton_support
        if triton_support.triton is not None:
            assert got == [triton_support.unavailable_reason(torch.device(d)) for d in ("cpu", "meta")], got
        print(got[0])
    """, "auto", interpret=False)
    assert out.startswith("Triton kernels need CUDA tensors (got cpu;"), out


def test_graph_breaks_hold_when_dynamo_comes_after_eager_calls():
    """The checks ran eagerly first (plain functions, Dynamo absent); a compile imported later still
    breaks the graph there, with the reason, and the TF32 switches' frame is still left out."""
    out = run_fresh("""
        import functools
        from lua_fast import precision as P
        want = up.upscale(z)
        with P.backend_flags(P.resolve("fp32", None), torch.device("cuda")):  # (CPU: holds nothing)
            pass
        assert "torch._dynamo" not in sys.modules
        try:
            torch.compile(up.upscale, fullgraph=True, backend="eager")(z)
        except Exception as exc:
            assert "pass check_finite=False, or compile up.model" in str(exc), exc
        else:
            raise AssertionError("fullgraph compiled through the NaN/Inf check")
        compiled = torch.compile(up.upscale, backend="eager")
        assert torch.equal(compiled(z), want)
        one = torch.compile(functools.partial(up.upscale, check_finite=False), fullgraph=True, backend="eager")
        assert torch.equal(one(z), want)

        P._needs_switches = lambda precision, device: precision.storage == torch.float32 and precision.mode != "mixed"
        with P.backend_flags(P.resolve("fp32", None), torch.device("cpu")):   # eager: holds them
            assert P._switched[0] == "fp32"
        def region(x):
            with P.backend_flags(P.resolve("fp32", None), torch.device("cpu")):
                return x * 2
        torch._dynamo.reset()
        try:
            torch.compile(region, fullgraph=True, backend="eager")(torch.ones(3))
        except Exception as exc:
            assert "cannot be set inside a compiled graph" in str(exc), exc
        else:
            raise AssertionError("fullgraph compiled through the TF32 switches")
        print("ok")
    """)
    assert out.strip() == "ok"


def test_registry_hands_out_one_disabled_function_once_dynamo_is_here():
    import torch._dynamo  # noqa: F401  (here it is: other tests imported it, or this does)

    first = untraced.check_finite_input
    assert first is untraced.check_finite_input  # kept: the compile's guard sees one object
    assert first is not untraced._REGISTERED["check_finite_input"][0]
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        untraced.nothing_here
    with pytest.raises(ValueError, match="registered twice"):
        untraced.register()(untraced._REGISTERED["check_finite_output"][0])
