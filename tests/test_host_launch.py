"""The host path of a compiled-kernel launch (what a GPU forward without CUDA graphs waits on).

Plain eager calls must reach Triton directly: through ``torch.library.wrap_triton`` every launch
becomes a higher-order-op dispatch (~250 us of host time each here, 10x a forward's own cost).
Tuned launches look their config up in lua_fast (``triton_support._Tuned``) and must hand the JIT
exactly the arguments Triton's ``Autotuner.run`` would. Checked in a process of its own, with
compiled-mode kernels behind ``benchmarks/stub_gpu.py`` (no GPU needed, nothing compiled).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lua_fast.kernels import triton_support

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(triton_support.triton is None, reason="triton is not installed")


def run_stubbed(script: str, *argv: str, cache_dir, **env_vars) -> str:
    """Run ``script`` in a fresh process with compiled-mode kernels (no TRITON_INTERPRET),
    ``benchmarks/`` importable (stub_gpu) and Triton's cache in ``cache_dir`` (nothing tuned before);
    its stdout."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.update(PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "benchmarks"), env.get("PYTHONPATH", "")]),
               TRITON_CACHE_DIR=str(cache_dir), **env_vars)
    proc = subprocess.run([sys.executable, "-c", script, *argv], capture_output=True, text=True, env=env,
                          timeout=900, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def result_line(stdout: str) -> dict:
    return json.loads(next(line for line in stdout.splitlines() if line.startswith("RESULT"))[len("RESULT"):])

FORWARDS = r"""
import json, sys, torch
from unittest import mock
from triton.runtime.autotuner import Autotuner
from triton.runtime.jit import JITFunction
from stub_gpu import stub_gpu
from lua_fast import LUAConfig
from lua_fast.backends.triton_backend import TritonBackendLUA
from lua_fast.kernels import triton_support
from lua_fast.precision import resolve
from lua_fast.reference import LUA

def describe(value):
    if isinstance(value, torch.Tensor):
        return ["tensor", value.data_ptr() % 16, list(value.shape), list(value.stride()), str(value.dtype)]
    return repr(value)

calls, tuner_runs, wrapped = [], [0], [0]
real_jit_run, real_tuner_run, real_wrap = JITFunction.run, Autotuner.run, torch.library.wrap_triton

def jit_run(self, *args, grid, warmup, **kwargs):
    named = {**dict(zip(self.arg_names, args)), **kwargs}
    calls.append([self.__name__, [describe(a) for a in args], {k: describe(v) for k, v in sorted(kwargs.items())},
                  list(grid(named) if callable(grid) else grid), warmup])
    return real_jit_run(self, *args, grid=grid, warmup=warmup, **kwargs)

def tuner_run(self, *args, **kwargs):
    tuner_runs[0] += 1
    return real_tuner_run(self, *args, **kwargs)

def wrap(kernel):
    wrapped[0] += 1
    return real_wrap(kernel)

fakes, real_is_fake = [0], triton_support.is_fake

def is_fake(t):
    fakes[0] += 1
    return real_is_fake(t)

prec = resolve(sys.argv[1], None)
torch.manual_seed(0)
model = LUA(LUAConfig.flux()).to(prec.storage).eval().requires_grad_(False)
backend = TritonBackendLUA(model, prec)
x = torch.randn(2, 16, 20, 28)
result = {}
with stub_gpu(autotune=True) as stub, torch.inference_mode(), mock.patch.object(JITFunction, "run", jit_run), \
        mock.patch.object(Autotuner, "run", tuner_run), mock.patch.object(torch.library, "wrap_triton", wrap), \
        mock.patch.object(triton_support, "is_fake", is_fake):
    out = backend(x, (2,))  # tunes (made-up times: any config may win) and stub-compiles
    result["chosen"] = sorted({str(t.best_config) for t in triton_support._TUNED})
    result["first"] = sorted({str(t.configs[0]) for t in triton_support._TUNED})
    for name, fast in (("fast", True), ("autotuner", False)):
        calls.clear(); tuner_runs[0] = wrapped[0] = fakes[0] = 0
        triton_support.TUNED_FAST_PATH[0] = fast
        out = backend(x, (2,))
        result[name] = {"calls": [c for c in calls], "tuner_runs": tuner_runs[0], "wrapped": wrapped[0],
                        "is_fake": fakes[0]}
    triton_support.TUNED_FAST_PATH[0] = True
    result["binary_launches"], result["compiles"] = stub.launches, stub.compiles
    result["output_shape"] = list(out[2].shape)
print("RESULT" + json.dumps(result))
"""


def run_forwards(precision: str, cache_dir) -> dict:
    return result_line(run_stubbed(FORWARDS, precision, cache_dir=cache_dir))


def test_eager_launches_skip_the_higher_order_op_and_the_autotuner_hands_the_same_arguments(tmp_path):
    result = run_forwards("bf16", tmp_path)  # (the other modes' launch paths: the sweep below)
    fast, slow = result["fast"], result["autotuner"]
    assert result["output_shape"] == [2, 16, 40, 56]
    assert len(fast["calls"]) > 50  # every Triton launch of an x2 forward reached the JIT
    assert fast["wrapped"] == 0 and slow["wrapped"] == 0, "plain eager launches went through wrap_triton's HOP"
    # ~1.4 us a call, ~2.4 calls a launch: plain tensors are known to hold data without asking
    assert fast["is_fake"] == 0 and slow["is_fake"] == 0, "an eager launch asked is_fake of a plain tensor"
    tuned = slow["tuner_runs"]
    assert tuned > 30, "Autotuner.run was not reached with the fast path off"
    assert fast["tuner_runs"] == 0, f"{fast['tuner_runs']} tuned launches missed their cached config"
    assert fast["calls"] == slow["calls"], "the JIT got different arguments on the two paths"
    assert len(set(result["chosen"]) - set(result["first"])) >= 2, "the made-up timings chose first configs only"


def test_autotune_key_is_built_as_the_autotuner_builds_it():
    """The reference is Autotuner.run's own construction (Triton 3.6-3.9), written out."""
    import torch

    class Tuner:  # what _Tuned reads of an Autotuner
        arg_names = ["x_ptr", "w_ptr", "m", "stride", "eps", "size_key", "K", "N", "FLAG", "INPUT_PRECISION"]
        keys = ["K", "N", "FLAG", "missing", "size_key", "INPUT_PRECISION"]

    def reference(tuner, args, kwargs):
        nargs = dict(zip(tuner.arg_names, args))
        all_args = {**nargs, **kwargs}
        given = {k: v for (k, v) in all_args.items() if k in tuner.arg_names}
        key = [given[k] for k in tuner.keys if k in given]
        key += [str(v.dtype) for v in given.values() if hasattr(v, "dtype")]
        return tuple(key)

    x, w = torch.ones(4, dtype=torch.bfloat16), torch.ones(4)
    cases = [((x, w, 8, 4, 1e-5, 16), dict(K=360, N=1152, FLAG=True, INPUT_PRECISION=None, launch_pdl=True)),
             ((x, w, 8), dict(stride=4, size_key=32, N=720, K=360, FLAG=False, eps=0.5)),
             ((x,), dict(INPUT_PRECISION="ieee", w_ptr=w, K=16, m=3)),
             ((x, w, 8, 4, 1e-5, 16, 360, 1152, True, "tf32x3"), {})]
    for args, kwargs in cases:
        assert triton_support._Tuned(Tuner).key(args, kwargs) == reference(Tuner, args, kwargs)


TUNING = r"""
import json, sys, torch
from stub_gpu import stub_gpu
from lua_fast import LUAConfig
from lua_fast.backends.triton_backend import TritonBackendLUA
from lua_fast.kernels import triton_support
from lua_fast.precision import resolve
from lua_fast.reference import LUA

prec = resolve("bf16", None)
model = LUA(LUAConfig.flux()).to(prec.storage).eval().requires_grad_(False)
with stub_gpu(autotune=True, seed=int(sys.argv[1])) as stub, torch.inference_mode():
    TritonBackendLUA(model, prec)(torch.randn(1, 16, 20, 28), (2,))
chosen = {f"{tuner.fn.__name__} {key}": str(config) for tuner in triton_support._TUNED
          for key, config in tuner.cache.items()}
print("RESULT" + json.dumps({"timed": stub.timed, "chosen": chosen}))
"""


def tune_in_a_process(seed: int, cache_dir, **env_vars) -> dict:
    return result_line(run_stubbed(TUNING, str(seed), cache_dir=cache_dir, **env_vars))


def test_autotune_choices_persist_across_processes(tmp_path):
    """A second process finds every choice on disk and times nothing, even where its own (made-up)
    timings would choose differently; LUA_FAST_AUTOTUNE_CACHE=0 tunes again."""
    first = tune_in_a_process(1, tmp_path)
    assert first["timed"] > 30 and len(first["chosen"]) > 5
    again = tune_in_a_process(2, tmp_path)
    assert again["timed"] == 0
    assert again["chosen"] == first["chosen"]
    off = tune_in_a_process(2, tmp_path, LUA_FAST_AUTOTUNE_CACHE="0")
    assert off["timed"] == first["timed"] and off["chosen"].keys() == first["chosen"].keys()
    assert off["chosen"] != first["chosen"], "seeds 1 and 2 made the same choices: the test shows nothing"


SWEEP = r"""
import itertools, os, sys, torch
from unittest import mock
from stub_gpu import stub_gpu
from lua_fast import LUAConfig
from lua_fast.backends.triton_backend import TritonBackendLUA
from lua_fast.precision import resolve
from lua_fast.reference import LUA

x = torch.randn(2, 16, 20, 28)
with stub_gpu(autotune=True) as stub, torch.inference_mode():  # (binaries report to the stub that made them)
    for name in ["bf16", "mixed", "fp32", "tf32"]:  # (fp16 launches what bf16 does, in another dtype)
        prec = resolve(name, None)
        backend = TritonBackendLUA(LUA(LUAConfig.flux()).to(prec.storage).eval().requires_grad_(False), prec)
        for fused, dots in itertools.product("01", ["ieee", "tf32x3"] if name == "fp32" else ["ieee"]):
            env = {"LUA_FAST_FUSED_MLP": fused, "LUA_FAST_FUSED_ATTN_PROJ": fused, "LUA_FAST_FP32_DOTS": dots}
            launches, timed = stub.launches, stub.timed
            with mock.patch.dict(os.environ, env):
                out = backend(x, (2, 4))
            assert out[2].shape == (2, 16, 40, 56) and out[4].shape == (2, 16, 80, 112), (name, env)
            print(name, fused, dots, stub.launches - launches, stub.timed - timed)
    # PDL (needs sm_90 and a CUDA device, so forced here): the JIT must take the launch option
    from lua_fast.kernels import triton_support
    prec = resolve("bf16", None)
    backend = TritonBackendLUA(LUA(LUAConfig.flux()).to(prec.storage).eval().requires_grad_(False), prec)
    launches = stub.launches
    with mock.patch.object(triton_support, "pdl_reason", lambda device: None), \
            mock.patch.dict(os.environ, {"LUA_FAST_FUSED_MLP": "1", "LUA_FAST_FUSED_ATTN_PROJ": "1"}):
        backend(x, (2, 4))
    print("PDL", stub.launches - launches)
"""


def test_compiled_launch_paths_of_the_precision_modes_with_any_tuned_config(tmp_path):
    """What the interpreter never runs: the precision modes' launches as compiled kernels (autotuned
    kernels, prune hooks, grids evaluated on the chosen config's meta-parameters), with configs
    chosen by made-up timings, x2 and x4 heads, both fused-block switches, both fp32 dot modes, and
    one forward with PDL forced on (the JIT must accept the launch option)."""
    stdout = run_stubbed(SWEEP, cache_dir=tmp_path)
    rows = [line.split() for line in stdout.splitlines() if line.split()[:1] in (["bf16"], ["mixed"], ["fp32"],
                                                                                      ["tf32"])]
    assert len(rows) == 10
    assert all(int(launches) > 50 for *_, launches, _ in rows), rows  # (a forward's launches + the timing runs)
    assert all(int(timed) > 0 for _, fused, _, _, timed in rows if fused == "0"), rows  # (each mode: new keys)
    assert int(next(line for line in stdout.splitlines() if line.startswith("PDL")).split()[1]) > 50


THREADS = r"""
import threading, torch
from unittest import mock
import triton.testing
from stub_gpu import stub_gpu
from lua_fast import LUAConfig
from lua_fast.backends.triton_backend import TritonBackendLUA
from lua_fast.precision import resolve
from lua_fast.reference import LUA

prec = resolve("bf16", None)
backend = TritonBackendLUA(LUA(LUAConfig.flux()).to(prec.storage).eval().requires_grad_(False), prec)
a_timing, b_done, errors = threading.Event(), threading.Event(), []
with stub_gpu(autotune=True), torch.inference_mode():
    made_up = triton.testing.do_bench

    def timing(*args, **kwargs):  # thread A's first config timing waits (1 s at most) for thread B's forward
        if threading.current_thread().name == "A" and not a_timing.is_set():
            a_timing.set()
            b_done.wait(1.0)
        return made_up(*args, **kwargs)

    def forward(shape, after=None):
        try:
            if after is not None:
                after.wait(5.0)
            backend(torch.randn(*shape), (2,))
        except Exception as exc:
            errors.append(f"{threading.current_thread().name}: {type(exc).__name__}: {exc}")
        finally:
            b_done.set() if threading.current_thread().name == "B" else None

    with mock.patch.object(triton.testing, "do_bench", timing):
        threads = [threading.Thread(target=forward, args=((1, 16, 16, 24),), name="A"),
                   threading.Thread(target=forward, args=((1, 16, 96, 96), a_timing), name="B")]
        [t.start() for t in threads]
        [t.join() for t in threads]
print("ERRORS", errors)
"""


def test_two_threads_tuning_one_kernel_at_once(tmp_path):
    """Thread A is timing its first config of the first kernel when thread B runs a whole forward
    at another size (new keys for the same kernels). Triton's Autotuner keeps a launch's arguments
    on the shared object and clears them when its run ends: without lua_fast's lock per kernel, A's
    next config fails on B's cleared arguments (TypeError)."""
    stdout = run_stubbed(THREADS, cache_dir=tmp_path)
    assert "ERRORS []" in stdout, stdout[-2000:]


TRACED = r"""
import json, sys, torch
from collections import Counter
from stub_gpu import stub_gpu
from lua_fast import LUAConfig
from lua_fast.backends.triton_backend import TritonBackendLUA
from lua_fast.precision import resolve
from lua_fast.reference import LUA

prec = resolve("bf16", None)
backend = TritonBackendLUA(LUA(LUAConfig.small()).to(prec.storage).eval().requires_grad_(False), prec)
x = torch.randn(1, 16, 16, 16, dtype=torch.bfloat16)
result = {}
with stub_gpu(autotune=sys.argv[1] == "1") as stub, torch.no_grad():
    backend(x, (2,))  # (its untimed tuning rounds launch each kernel's first config that runs once more)
    tuned = stub.launches
    backend(x, (2,))
    eager = stub.launches - tuned
    compiled = torch.compile(lambda x: backend(x, (2,))[2], backend="aot_eager", fullgraph=True)
    result["shape"] = list(compiled(x).shape)
    before = stub.launches
    compiled(x)
    result["compiled_launches"], result["eager_launches"] = stub.launches - before, eager
    result["timed"] = stub.timed  # configs timed, eager and traced (torch's own autotuner copies too)

    class Model(torch.nn.Module):
        def forward(self, x):
            return backend(x, (2,))[2]

    program = torch.export.export(Model(), (x,), strict=False)
    result["exported_ops"] = dict(Counter(str(n.target) for n in program.graph.nodes if n.op == "call_function"
                                          and str(n.target).startswith("lua_fast.")))
print("RESULT" + json.dumps(result))
"""


@pytest.mark.parametrize("autotune,fused", [("1", False), ("0", False), ("1", True)],
                         ids=["tuned", "untimed", "tuned-fused-blocks"])
def test_traced_launch_paths_with_compiled_kernels(tmp_path, autotune, fused):
    """torch.compile (fullgraph, AOT autograd: the triton_op traced into wrap_triton's higher-order op
    and run) and torch.export with compiled-mode kernels, which the interpreter's opaque custom ops
    never exercise: the compiled forward launches every kernel the eager one does, and the exported
    graph holds the lua_fast ops. With tuning on (the default), a launch keeps several configs, and
    torch writes a grid function that tests each config's values: a string-valued config (the
    conv's cache modifier, until 2026-11-28) made it a SyntaxError. The fused block kernels
    (LUA_FAST_FUSED_MLP=1, LUA_FAST_FUSED_ATTN_PROJ=1) take the same path."""
    switches = {"LUA_FAST_FUSED_MLP": "1", "LUA_FAST_FUSED_ATTN_PROJ": "1"} if fused else {}
    result = result_line(run_stubbed(TRACED, autotune, cache_dir=tmp_path, **switches))
    assert result["shape"] == [1, 16, 32, 32]
    assert result["compiled_launches"] == result["eager_launches"] > 0
    # Untimed (LUA_FAST_AUTOTUNE=0): nothing is timed, traced launches included (they keep one config)
    assert (result["timed"] > 0) == (autotune == "1"), result["timed"]
    ops = result["exported_ops"]
    assert ops.get("lua_fast.fused_linear.default", 0) > 0 and ops.get("lua_fast.conv3x3.default", 0) > 0
    attention = "lua_fast.attention_proj.default" if fused else "lua_fast.window_attention.default"
    assert ops.get(attention, 0) > 0 and (ops.get("lua_fast.fused_mlp.default", 0) > 0) == fused, ops


def test_kernel_ops_switch_wrap_triton_off_for_their_call_only():
    """An eager kernel-op call runs with ``wrap_triton`` off (its launches call the kernels, no
    higher-order op), by writing torch's thread-local directly (~0.2 us against the context
    manager's ~1.4 us a launch): off inside, restored after, also when the call raises, nested in
    torch's own switch, and per thread."""
    import threading

    from torch._library.triton import is_wrap_triton_enabled, set_wrap_triton_enabled

    assert triton_support._WRAP_SWITCH is not None, "torch's switch changed: kernel ops take the slower path"
    seen = []

    def fn(x):
        seen.append(is_wrap_triton_enabled())
        if x is None:
            raise ValueError("the call failed")
        return x

    assert is_wrap_triton_enabled()
    assert triton_support.without_wrap_triton(fn, (1,)) == 1
    with pytest.raises(ValueError, match="the call failed"):
        triton_support.without_wrap_triton(fn, (None,))
    assert seen == [False, False] and is_wrap_triton_enabled()
    with set_wrap_triton_enabled(False):
        triton_support.without_wrap_triton(fn, (2,))
        assert not is_wrap_triton_enabled()
    assert is_wrap_triton_enabled()
    other = []
    inside = threading.Event()
    release = threading.Event()

    def held():
        inside.set()
        release.wait(10)
        return 3

    thread = threading.Thread(target=lambda: other.append(triton_support.without_wrap_triton(held, ())))
    thread.start()
    assert inside.wait(10)
    assert is_wrap_triton_enabled(), "another thread's kernel op switched this thread's wrap_triton off"
    release.set()
    thread.join(10)
    assert other == [3] and is_wrap_triton_enabled()
