"""Every backend and precision mode available on CPU against the reference; dispatch, reasons,
environment overrides, torch.compile, threads, determinism, overflow guard (issue 6)."""

import os
import subprocess
import sys
import numpy as np
import pytest
import torch

import lua_fast
from lua_fast import BackendUnavailableError, dispatch
from lua_fast.kernels import triton_support
from lua_fast.precision import resolve
from conftest import random_state_dict, rel_err, run_in_threads, tiny_config
from slow_lua import slow_lua

CONFIG = tiny_config(4)
CPU = torch.device("cpu")
TRITON_OK = triton_support.unavailable_reason(CPU) is None  # interpreted under CI


@pytest.fixture(scope="module")
def weights():
    return random_state_dict(CONFIG, seed=13)


@pytest.fixture(scope="module")
def latents():
    return torch.randn(2, 4, 7, 10, generator=torch.Generator().manual_seed(3))


@pytest.fixture(scope="module")
def oracle(weights, latents):
    return {s: slow_lua(weights, latents, s, window=4, heads=CONFIG.num_heads, depths=CONFIG.depths) for s in (2, 4)}


@pytest.fixture(scope="module")
def eager(weights, latents):
    """Same-precision eager reference outputs, the yardstick for low-precision modes."""
    return {mode: lua_fast.load(weights, backend="reference", precision=mode).upscale(latents, scale=(2, 4))
            for mode in ("fp32", "bf16", "fp16", "mixed")}


CASES = [("reference", m) for m in ("fp32", "bf16", "fp16", "mixed")] + \
        [("torch", m) for m in ("fp32", "bf16", "fp16", "mixed")] + \
        [("triton", m) for m in ("fp32", "bf16", "fp16", "mixed")] + \
        [("triton-cublas", "mixed"), ("triton-cublas", "bf16"), ("triton-fused", "fp32")] + \
        [("triton-blocks", m) for m in ("fp16", "mixed")]  # GEMMS=0 / =1; FUSED_MLP=1 + FUSED_ATTN_PROJ=1


@pytest.mark.parametrize("backend,mode", CASES, ids=[f"{b}-{m}" for b, m in CASES])
def test_backend_and_precision_against_reference(backend, mode, weights, latents, oracle, eager, monkeypatch):
    if backend.startswith("triton") and not TRITON_OK:
        pytest.skip(triton_support.unavailable_reason(CPU))
    if backend in ("triton-cublas", "triton-fused", "triton-blocks"):
        monkeypatch.setenv("LUA_FAST_TRITON_GEMMS", "0" if backend == "triton-cublas" else "1")
        for switch in ("LUA_FAST_FUSED_MLP", "LUA_FAST_FUSED_ATTN_PROJ"):  # fewer launches per Swin block
            monkeypatch.setenv(switch, "1" if backend == "triton-blocks" else "0")
        backend = "triton"
    up = lua_fast.load(weights, backend=backend, precision=mode)
    if backend == "triton":  # fused Triton GEMMs by default in low precision, cuBLAS in fp32
        default = mode != "fp32"
        assert up.model.fused_gemms == (default if "LUA_FAST_TRITON_GEMMS" not in os.environ
                                        else os.environ["LUA_FAST_TRITON_GEMMS"] != "0")
        assert up.model.fused_mlp == up.model.fused_attn_proj == (os.environ.get("LUA_FAST_FUSED_MLP") == "1")
    assert up.backend == backend and up.precision.mode == mode
    out = up.upscale(latents, scale=(2, 4))
    again = up.upscale(latents, scale=(2, 4))
    for s in (2, 4):
        assert out[s].dtype == resolve(mode, None).storage
        assert out[s].shape == (2, 4, 7 * s, 10 * s)
        assert torch.equal(out[s], again[s])  # deterministic: bitwise
        if mode == "fp32":
            assert rel_err(out[s], oracle[s]) <= 1e-5
        else:
            assert rel_err(out[s], oracle[s]) <= 2 * rel_err(eager[mode][s], oracle[s]) + 1e-4


def test_precision_and_dtype_must_agree(weights):
    with pytest.raises(ValueError, match="precision 'fp32' keeps weights .* in torch.float32"):
        lua_fast.load(weights, dtype=torch.bfloat16, precision="fp32")
    with pytest.raises(ValueError, match="unknown precision"):
        lua_fast.load(weights, precision="int8")
    assert lua_fast.load(weights, dtype="bf16").precision.mode == "bf16"
    # Spelled as dtype= takes it (before 2026-11-29 "BF16" and "bfloat16" were unknown precisions)
    for spelling, mode in [("BF16", "bf16"), ("bfloat16", "bf16"), (torch.bfloat16, "bf16"), (" Mixed", "mixed"),
                           ("float32", "fp32"), ("half", "fp16"), ("FP16", "fp16")]:
        assert lua_fast.load(weights, precision=spelling).precision.mode == mode, spelling
    assert lua_fast.load(weights, backend="Torch").backend == "torch"  # (and backends: "TRITON" was unknown)
    mixed = lua_fast.load(weights, precision="mixed", mixed_dtype="fp16")
    assert mixed.dtype == torch.float32 and mixed.precision.compute == torch.float16


def test_tf32_needs_cuda(weights):
    with pytest.raises(BackendUnavailableError, match="tf32 needs CUDA") as info:
        lua_fast.load(weights, backend="reference", precision="tf32")
    assert info.value.reasons == {"reference": "tf32 needs CUDA tensor cores"}
    with pytest.raises(BackendUnavailableError, match="no backend can run on cpu in tf32"):
        lua_fast.load(weights, precision="tf32")


def test_fp16_overflow_is_reported_not_returned(weights, latents):
    """SwinIR-style residual streams can exceed 65504: fp16 must not silently return inf."""
    hot = dict(weights)
    hot["conv_first.weight"] = weights["conv_first.weight"] * 3e4
    hot["heads.x2.conv_last.weight"] = weights["heads.x2.conv_last.weight"] * 3e4
    with pytest.raises(FloatingPointError, match="overflowed .* use precision='mixed'"):
        lua_fast.load(hot, precision="fp16").upscale(latents)
    assert torch.isfinite(lua_fast.load(hot, precision="mixed").upscale(latents)).all()


# ------------------------------------------------------------------- dispatch
def test_auto_on_cpu_and_reasons():
    reasons = dispatch.availability(CPU, "fp32", for_auto=True)
    assert reasons["torch"] is None and reasons["reference"] is None
    assert reasons["triton"]  # needs CUDA, or interpreted (auto passes it over)
    assert dispatch.select_backend("auto", CPU, "fp32").name == "torch"


@pytest.mark.skipif(triton_support.triton is None, reason="triton not installed")
def test_auto_passes_triton_over_below_ampere(monkeypatch):
    """The kernels need compute capability 8.0 (bf16 tensor-core dots, async copies): on a T4 (7.5)
    or V100 (7.0) "auto" must pick the torch backend, not fail at the first compile, and a forced
    triton backend must say why it cannot run. A stand-in CUDA device answers the capability."""
    capability = {0: (7, 5), 1: (8, 0), 2: (9, 0)}
    monkeypatch.setattr(triton_support, "INTERPRET", False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(triton_support, "_capability", lambda index: capability[index])
    for index, expected in ((0, "torch"), (1, "triton"), (2, "triton")):
        assert dispatch.select_backend("auto", f"cuda:{index}", "bf16").name == expected
    assert dispatch.select_backend("auto", "cuda", "bf16").name == "torch"  # the current device: 0
    with pytest.raises(BackendUnavailableError, match=r"compute capability >= 8\.0 .*cuda:0 has 7\.5"):
        dispatch.select_backend("triton", "cuda:0", "fp16")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert "CUDA is not available" in triton_support.unavailable_reason(torch.device("cuda"))


def test_env_override_of_auto(weights, monkeypatch):
    monkeypatch.setenv("LUA_FAST_BACKEND", "reference")
    assert lua_fast.load(weights).backend == "reference"
    assert lua_fast.load(weights, backend="torch").backend == "torch"  # an explicit argument wins
    monkeypatch.setenv("LUA_FAST_BACKEND", "nope")
    with pytest.raises(BackendUnavailableError, match="LUA_FAST_BACKEND='nope'"):
        lua_fast.load(weights)


def test_forced_unavailable_backend_raises_with_reasons(weights, monkeypatch):
    monkeypatch.setenv("LUA_FAST_DISABLE_TRITON", "1")
    with pytest.raises(BackendUnavailableError, match="backend 'triton' cannot run on cpu") as info:
        lua_fast.load(weights, backend="triton")
    assert "disabled by LUA_FAST_DISABLE_TRITON" in info.value.reasons["triton"]


@pytest.mark.parametrize("env,picked,expect", [
    ({"LUA_FAST_DISABLE_TRITON": "1"}, "torch", "disabled by LUA_FAST_DISABLE_TRITON"),
    ({"LUA_FAST_DISABLE_NATIVE": "1"}, "torch", "PyTorch fallback (native extension disabled"),
    ({"LUA_FAST_DISABLE_TRITON": "1", "LUA_FAST_DISABLE_NATIVE": "1", "LUA_FAST_BACKEND": "reference"},
     "reference", "env: LUA_FAST_BACKEND=reference"),
])
def test_dispatch_reports_missing_pieces_in_a_fresh_process(env, picked, expect):
    """Absent Triton / extension simulated by environment variables, in a clean interpreter."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("LUA_FAST_") and k != "TRITON_INTERPRET"}
    run = lambda *args: subprocess.run([sys.executable, *args], capture_output=True, text=True,  # noqa: E731
                                       env={**base, **env}, check=True).stdout
    info = run("-m", "lua_fast", "info")
    assert expect in info
    assert f"cpu -> {picked}" in info
    code = ("import torch, lua_fast; from lua_fast.reference import LUA; "
            "up = lua_fast.load(LUA(lua_fast.LUAConfig.small()).state_dict()); "
            "print(up.backend, tuple(up.upscale(torch.randn(1, 16, 8, 8)).shape))")
    assert run("-c", code).split() == [picked, "(1,", "16,", "16,", "16)"]


# ------------------------------------------------------- compile, threads, graphs
@pytest.mark.skipif(not TRITON_OK, reason="Triton not usable here")
def test_torch_compile_of_the_fused_path_has_no_graph_breaks(weights, latents):
    up = lua_fast.load(weights, backend="triton")
    torch._dynamo.reset()
    compiled = torch.compile(up.model, fullgraph=True, backend="aot_eager")
    with torch.inference_mode():
        got = compiled(latents[:1], (2,))[2]
        want = up.model(latents[:1], (2,))[2]
    assert torch.equal(got, want)


@pytest.mark.skipif(not TRITON_OK, reason="Triton not usable here")
def test_each_triton_forward_checks_the_tuning_mode(weights, latents, monkeypatch):
    """Choices timed before torch.use_deterministic_algorithms(True) are dropped at the next forward
    (the check itself: tests/test_triton_compile.py)."""
    from lua_fast.backends import triton_backend

    calls = []
    monkeypatch.setattr(triton_backend, "forget_choices_of_another_mode", lambda: calls.append(1))
    up = lua_fast.load(weights, backend="triton")
    up.upscale(latents[:1, :, :5, :6])
    assert calls == [1]


@pytest.mark.parametrize("backend", ["reference", "torch", "triton"])
def test_the_callers_autocast_does_not_change_the_precision(weights, latents, backend):
    """Each mode decides its own dtypes: inside a caller's autocast region (a pipeline's), fp32 ran
    its GEMMs and convs in bf16 (reference and torch 7.9e-3, triton 2.5e-3 from fp32)."""
    if backend == "triton" and not TRITON_OK:
        pytest.skip(triton_support.unavailable_reason(CPU))
    interpreted = backend == "triton" and triton_support.INTERPRET  # (~1000x slower: one case per mode)
    x, scales = (latents[:1, :, :5, :6], (2,)) if interpreted else (latents, (2, 4))
    for mode in ("fp32", "mixed") if interpreted else ("fp32", "bf16", "mixed"):
        up = lua_fast.load(weights, backend=backend, precision=mode)
        want = up.upscale(x, scale=scales)
        for dtype in (torch.bfloat16,) if interpreted else (torch.bfloat16, torch.float16):
            with torch.autocast("cpu", dtype=dtype):
                got = up.upscale(x, scale=scales)
                assert torch.is_autocast_enabled("cpu")  # restored for the caller
            assert all(torch.equal(got[s], want[s]) for s in scales), (mode, dtype)


def row_invariant_interpreter_dots(monkeypatch) -> None:
    """Make the interpreter's ``tl.dot`` give a row the same bits wherever it sits in its block, as
    a GPU's MMA does. The interpreter computes it with NumPy's matmul, i.e. OpenBLAS, whose kernels
    on some CPUs do not: on an AMD EPYC without AVX-512 (OpenBLAS 0.3.31, Haswell kernels) a
    (128, 64) @ (64, 16) product gave rows 0-63 other bits (up to 4.8e-6) than the same rows at
    64-127, so a latent's pixels, which sit at other rows of a conv's block alone than in a batch,
    came out different (the batch test below failed there; it passed on the AVX-512 machines of
    earlier sessions). ``np.einsum`` without path optimisation sums each output over k in order."""
    from triton.runtime import interpreter

    original = interpreter.InterpreterBuilder.create_dot

    def create_dot(self, a, b, d, input_precision, max_num_imprecise_acc):
        if a.data.dtype != np.float32 or b.data.dtype != np.float32 or a.data.ndim != 2:
            return original(self, a, b, d, input_precision, max_num_imprecise_acc)
        out = np.einsum("mk,kn->mn", a.data, b.data, optimize=False) + d.data
        return interpreter.TensorHandle(out.astype(d.data.dtype), d.dtype.scalar)

    monkeypatch.setattr(interpreter.InterpreterBuilder, "create_dot", create_dot)


@pytest.mark.skipif(not TRITON_OK, reason="Triton unavailable on this machine")
@pytest.mark.parametrize("mode", ["fp32", "bf16"])
def test_triton_outputs_do_not_depend_on_the_rest_of_the_batch(weights, latents, mode, monkeypatch):
    """Each Triton kernel program reduces over its own rows, pixels or window, in an order no batch
    size changes (no split reductions, no batch-wide statistics), so for the same kernel configs a
    latent gives the same bits alone or in any batch: what a server that batches requests
    dynamically needs. (Library GEMMs may block by the batch: the eager backends, and the fp32
    mode's cuBLAS GEMMs, hence LUA_FAST_TRITON_GEMMS=1 here.) A split-K GEMM or a cross-row
    reduction added later fails this."""
    monkeypatch.setenv("LUA_FAST_TRITON_GEMMS", "1")
    if triton_support.INTERPRET:
        row_invariant_interpreter_dots(monkeypatch)
    up = lua_fast.load(weights, backend="triton", precision=mode)
    x = latents[:, :, :5, :6]
    together = up.upscale(x, scale=(2, 4))
    for i in range(x.shape[0]):
        alone = up.upscale(x[i:i + 1], scale=(2, 4))
        assert all(torch.equal(together[s][i:i + 1], alone[s]) for s in (2, 4)), (mode, i)


@pytest.mark.parametrize("device_type", ["cpu", "mps", "xpu"])
def test_the_callers_autocast_is_switched_off_on_other_device_types_too(device_type):
    """The eager backends' switch-off covered CPU and CUDA only: on a Mac (mps) a pipeline's
    autocast region stayed on for an fp32 or bf16 upscaler. (Checked through autocast's state: this
    machine has no MPS or XPU device to run a forward on.)"""
    from lua_fast.precision import autocast, resolve

    device = torch.device(device_type)
    with torch.autocast(device_type, dtype=torch.float16):
        for mode in ("fp32", "bf16"):
            with autocast(resolve(mode, None), device):
                assert not torch.is_autocast_enabled(device_type), mode
            assert torch.is_autocast_enabled(device_type)
    with autocast(resolve(None, torch.float32), torch.device("meta")):  # a type autocast does not know
        pass


@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_torch_compile_fullgraph_of_the_eager_backends(weights, backend):
    """The shift-mask caches take a lock Dynamo cannot enter: fullgraph compiles failed and plain
    ones broke the graph at every shifted block (the released config: 6 graphs instead of 1, the
    compiled peer of the benchmarks). Traced, the graph now builds its masks itself."""
    up = lua_fast.load(weights, backend=backend)
    x = torch.randn(2, 4, 9, 6, generator=torch.Generator().manual_seed(4))  # sizes no test cached
    torch._dynamo.reset()
    explained = torch._dynamo.explain(up.model)(x, (2, 4))
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons
    compiled = torch.compile(up.model, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        got, want = compiled(x, (2, 4)), up.model(x, (2, 4))
    for s in (2, 4):
        assert torch.equal(got[s], want[s])


def test_torch_compile_with_dynamic_shapes_at_sizes_off_the_window_grid(weights):
    """torch.compile turns shapes dynamic after the first recompile (a server seeing new sizes).
    The padded side was ``H + (window - H % window) % window``, a Mod expression Inductor could not
    divide by the window: the lowering failed ("ValueRangeError: Invalid ranges") at every size
    that needs padding. The padded side is now window * ceil(H / window)."""
    up = lua_fast.load(weights, backend="torch")
    torch._dynamo.reset()
    compiled = torch.compile(up.model, dynamic=True)
    x = torch.randn(2, 4, 7, 10, generator=torch.Generator().manual_seed(6))  # pads 1 and 2 rows
    with torch.no_grad():
        got, want = compiled(x, (2,))[2], up.model(x, (2,))[2]
    assert rel_err(got, want) <= 1e-5


@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_one_model_from_many_threads(weights, backend):
    up = lua_fast.load(weights, backend=backend)
    inputs = [torch.randn(1, 4, 5 + i, 9 - i, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    expected = [up.upscale(x, scale=(2, 4)) for x in inputs]
    (up.model.module._masks if backend == "torch" else up.model.module.masks).clear()  # threads race to build masks
    results = {}

    def work(i):
        for _ in range(3):
            results[i] = up.upscale(inputs[i], scale=(2, 4))

    assert not run_in_threads(work, 4)
    for i in range(4):
        for s in (2, 4):
            assert torch.equal(results[i][s], expected[i][s])


def test_cuda_graph_needs_cuda(weights, latents):
    with pytest.raises(lua_fast.InputError, match="cuda_graph=True needs a CUDA upscaler"):
        lua_fast.load(weights).upscale(latents, cuda_graph=True)


@pytest.mark.parametrize("mode,want", [("fp32", False), ("tf32", True)])
def test_tf32_switches_survive_the_new_per_backend_api(mode, want):
    """A caller who set conv and RNN TF32 differently through PyTorch's per-backend
    ``fp32_precision`` switches (reading the legacy cudnn.allow_tf32 then raises): an fp32/tf32
    forward still sets exact / TF32 GEMMs and convs for its duration and restores the caller's
    switches after. Only flags are touched, so this runs without a GPU."""
    from lua_fast.precision import backend_flags

    cudnn = torch.backends.cudnn
    switches = lambda: (torch.backends.cuda.matmul.fp32_precision, cudnn.conv.fp32_precision)  # noqa: E731
    if not hasattr(cudnn, "rnn") or not hasattr(cudnn.rnn, "fp32_precision"):
        pytest.skip("this PyTorch has only the legacy allow_tf32 switches")
    saved = (torch.backends.cuda.matmul.fp32_precision, cudnn.conv.fp32_precision, cudnn.rnn.fp32_precision)
    try:
        torch.backends.cuda.matmul.fp32_precision, cudnn.conv.fp32_precision, cudnn.rnn.fp32_precision = \
            "none", "tf32", "ieee"
        with pytest.raises(RuntimeError, match="mix of the legacy and new APIs"):
            cudnn.allow_tf32  # noqa: B018 -- the PyTorch behaviour this guards against
        with backend_flags(resolve(mode, None), torch.device("cuda")):
            assert switches() == (("tf32", "tf32") if want else ("ieee", "ieee"))
        assert switches() == ("none", "tf32") and cudnn.rnn.fp32_precision == "ieee"
    finally:
        torch.backends.cuda.matmul.fp32_precision, cudnn.conv.fp32_precision, cudnn.rnn.fp32_precision = saved
