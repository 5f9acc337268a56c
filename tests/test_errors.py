"""Every error a user can cause is reported clearly (deliverable 5)."""

import pickle

from pathlib import Path

import pytest
import torch

import lua_fast
from lua_fast import BackendUnavailableError, CheckpointError, InputError, NonFiniteInputError
from conftest import random_state_dict, tiny_config

BLOCK = "layers.0.residual_group.blocks.1."


@pytest.fixture
def sd():
    return random_state_dict(tiny_config(), seed=1)


@pytest.fixture(scope="module")
def up():
    return lua_fast.load(random_state_dict(tiny_config(), seed=2))


# ---------------------------------------------------------------- checkpoints
def test_missing_keys_are_listed(sd):
    del sd[BLOCK + "mlp.fc1.bias"], sd["norm.weight"]
    with pytest.raises(CheckpointError, match="missing keys") as info:
        lua_fast.load(sd)
    assert set(info.value.missing) == {BLOCK + "mlp.fc1.bias", "norm.weight"}
    assert BLOCK + "mlp.fc1.bias" in str(info.value) and "norm.weight" in str(info.value)


def test_unexpected_keys_are_listed(sd):
    sd["layers.0.residual_group.blocks.0.attn.extra"] = torch.zeros(1)
    sd["module.head"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match="unexpected keys") as info:
        lua_fast.load(sd)
    assert set(info.value.unexpected) == {"layers.0.residual_group.blocks.0.attn.extra", "module.head"}


def test_shape_mismatch_names_key_expected_and_found(sd):
    sd[BLOCK + "attn.proj.weight"] = torch.zeros(16, 15)
    with pytest.raises(CheckpointError, match=r"attn.proj.weight: \(16, 16\), \(16, 15\)") as info:
        lua_fast.load(sd)
    assert info.value.mismatched == [(BLOCK + "attn.proj.weight", (16, 16), (16, 15))]


@pytest.mark.parametrize("key", ["attn.relative_position_index", "attn_mask"])
def test_inconsistent_derived_buffers(sd, key):
    sd[BLOCK + key] = sd[BLOCK + key].clone()
    sd[BLOCK + key].view(-1)[3] += 1
    with pytest.raises(CheckpointError, match="derived buffers disagree") as info:
        lua_fast.load(sd)
    assert BLOCK + key in str(info.value)


def test_wrong_dtypes_and_non_finite_weights(sd):
    bad = dict(sd)
    bad[BLOCK + "attn.relative_position_index"] = bad[BLOCK + "attn.relative_position_index"].float()
    bad["norm.bias"] = bad["norm.bias"].long()
    with pytest.raises(CheckpointError, match="wrong tensor dtypes"):
        lua_fast.load(bad)
    sd["conv_first.weight"][0, 0, 0, 0] = float("nan")
    with pytest.raises(CheckpointError, match="NaN or Inf: conv_first.weight"):
        lua_fast.load(sd)


class NotATensor:
    pass


@pytest.mark.parametrize(
    "payload, match",
    [
        ([1, 2, 3], "found a list"),
        ({"epoch": 3, "params": [1]}, "entries that are not tensors: epoch, params"),
        ({}, "it is empty"),
        ({"a": torch.zeros(2)}, "not a LUA state dict"),
    ],
)
def test_pickles_that_are_not_checkpoints(tmp_path, payload, match):
    path = tmp_path / "x.pth"
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=match):
        lua_fast.load(path)


def test_arbitrary_objects_are_refused_not_unpickled(tmp_path):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"params": NotATensor()}, f, protocol=2)
    with pytest.raises(CheckpointError, match="pickled Python objects.*needs test_errors.NotATensor.*never runs"):
        lua_fast.load(path)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="neither a safetensors nor a torch.save file"):
        lua_fast.load(garbage)
    bad_st = tmp_path / "bad.safetensors"
    bad_st.write_bytes(b"\x00" * 16)
    with pytest.raises(CheckpointError, match="safetensors"):
        lua_fast.load(bad_st)
    with pytest.raises(FileNotFoundError):
        lua_fast.load(tmp_path / "missing.pth")


def test_a_directory_names_the_checkpoints_inside(tmp_path, sd):
    """A downloaded hub repository is a folder; the error names the files to pass (before
    2026-11-28 it only said "is a directory")."""
    torch.save({"params_ema": sd}, tmp_path / "lua_flux.pth")
    (tmp_path / "README.md").write_text("model card")
    with pytest.raises(CheckpointError, match=r"is a directory, not a checkpoint file; it holds lua_flux.pth: pass"):
        lua_fast.load(tmp_path)
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(CheckpointError, match=r"is a directory, not a checkpoint file$"):
        lua_fast.load(tmp_path / "empty_dir")


@pytest.mark.parametrize("source", ["", "  "])
def test_an_empty_path_is_no_checkpoint(source, tmp_path, sd, monkeypatch):
    """``load(os.environ.get("LUA_WEIGHTS", ""))`` with the variable unset: Path("") is the working
    directory, and before 2026-11-29 the error said ". is a directory, not a checkpoint file; it
    holds ...: pass one of them" (or loaded the folder's listing hint)."""
    torch.save({"params_ema": sd}, tmp_path / "lua_flux.pth")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match="no checkpoint given: the path is empty"):
        lua_fast.load(source)


def test_bad_backend_dtype_device(sd):
    with pytest.raises(BackendUnavailableError, match="unknown backend 'nope'"):
        lua_fast.load(sd, backend="nope")
    with pytest.raises(ValueError, match="unknown dtype"):
        lua_fast.load(sd, dtype="float8")
    with pytest.raises(ValueError, match="unsupported model dtype"):
        lua_fast.load(sd, dtype=torch.int32)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA|sees no GPU"):
            lua_fast.load(sd, device="cuda")


def test_a_cuda_device_that_is_not_there_is_named(sd, monkeypatch):
    """Before 2026-11-28 a CUDA build on a machine without a working driver was told "CUDA is not
    available in this PyTorch build", and cuda:3 on a one-GPU machine failed later, in a copy, with
    "invalid device ordinal". (Stand-ins for the CUDA queries: this machine has no GPU.)"""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", None)
    with pytest.raises(ValueError, match="has no CUDA .*CPU wheel"):
        lua_fast.load(sd, device="cuda")
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    with pytest.raises(ValueError, match=r"built with CUDA 13.0\) sees no GPU: check the NVIDIA driver"):
        lua_fast.load(sd, device="cuda:0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match=r"cuda:3 requested but only 1 GPU\(s\) are visible \(cuda:0 to cuda:0"):
        lua_fast.load(sd, device="cuda:3")


def test_device_names_any_case_auto_and_a_cpu_index(sd, monkeypatch):
    """load(device="cpu:0") made an upscaler that refused every CPU tensor ("latents are on cpu but
    the upscaler is on cpu:0": CPU tensors carry no index); "CPU" was an unknown device; "auto"
    worked on the command line only. (Before 2026-11-29.)"""
    x = torch.randn(1, 4, 6, 7)
    want = lua_fast.load(sd).upscale(x)
    for name in ("cpu:0", "CPU", " Cpu ", torch.device("cpu", 0)):
        up = lua_fast.load(sd, device=name)
        assert up.device == torch.device("cpu") and torch.equal(up.upscale(x), want), name
    assert lua_fast.load(sd).to("cpu:0").upscale(x).device == x.device
    assert lua_fast.load(sd, device="meta:0").device == torch.device("meta")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert lua_fast.load(sd, device="auto").device == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    from lua_fast.upscaler import parse_device
    assert parse_device("AUTO") == parse_device("Cuda") == torch.device("cuda", 1)


def _unusable_device_types():
    """Device types PyTorch names but this build cannot allocate on (a CPU wheel: mps, xpu)."""
    found = []
    for kind in ("mps", "xpu", "hpu"):
        try:
            torch.empty(0, device=kind)
        except Exception:  # noqa: BLE001
            found.append(kind)
    return found


@pytest.mark.parametrize("kwargs, match", [
    (dict(dtype="float8"), "unknown dtype"),
    (dict(dtype=torch.int32), "unsupported model dtype"),
    (dict(device="npu"), "unknown device 'npu'"),
    (dict(precision="fp8"), "unknown precision"),
    (dict(precision="bf16", dtype=torch.float32), "make them agree"),
    (dict(precision="mixed", mixed_dtype=torch.float32), "bfloat16 or float16"),
] + [(dict(device=kind), f"device {kind} is not usable with this PyTorch") for kind in _unusable_device_types()])
def test_argument_errors_are_lua_fast_errors(sd, kwargs, match):
    """The README promises that every error derives from LuaFastError. Before 2026-11-28 load's
    dtype, device and precision checks raised a bare ValueError, and a device type this PyTorch
    build lacks failed mid-load with torch's own error (mps: RuntimeError, xpu: AssertionError)."""
    with pytest.raises(InputError, match=match):
        lua_fast.load(sd, **kwargs)


def test_diffusers_helpers_raise_lua_fast_errors():
    from lua_fast.integrations import diffusers as helpers

    with pytest.raises(InputError, match="unknown pipeline family"):
        helpers.to_raw_latents(torch.zeros(1, 16, 4, 4), {"scaling_factor": 1.0}, "sd9")
    with pytest.raises(InputError, match="even latent sides"):
        helpers.pack_flux_latents(torch.zeros(1, 16, 3, 4))
    with pytest.raises(InputError, match="packed patches do not match"):
        helpers.unpack_flux_latents(torch.zeros(1, 5, 64), 64, 64)


# -------------------------------------------------------------------- latents
@pytest.mark.parametrize(
    "latents, match",
    [
        (torch.randn(4, 8, 8), "4-D .* latents\\[None\\]"),
        (torch.randn(1, 1, 4, 8, 8), "4-D"),
        (torch.randn(1, 16, 8, 8), "16 channels but this model expects 4"),
        (torch.ones(1, 4, 8, 8, dtype=torch.int64), "floating-point .* torch.int64"),
        (torch.ones(1, 4, 8, 8, dtype=torch.bool), "floating-point .* torch.bool"),
        (torch.ones(1, 4, 8, 8, dtype=torch.complex64), "floating-point"),
        (torch.randn(0, 4, 8, 8), "non-empty"),
        (torch.randn(1, 4, 0, 8), "non-empty"),
        (torch.randn(1, 4, 8, 0), "non-empty"),
        (torch.randn(1, 4, 8, 8, device="meta"), "on meta but the upscaler is on cpu.*up.to\\(.meta.\\)"),
        ([[1.0]], "must be a torch.Tensor"),
    ],
)
def test_bad_latents(up, latents, match):
    with pytest.raises(InputError, match=match):
        up.upscale(latents)


@pytest.mark.parametrize("scale", [3, 8, 1, (2, 3), (), True, "2", 2.0, torch.tensor(2)])
def test_unsupported_scale(up, scale):
    with pytest.raises(InputError, match="unsupported scale"):
        up.upscale(torch.randn(1, 4, 8, 8), scale=scale)


@pytest.mark.parametrize("scale", [2.0, (4.0, 2), torch.tensor(2)])
def test_a_whole_number_that_is_not_an_int_is_named(up, scale):
    """Before 2026-11-29 "unsupported scale 2.0: this model has heads (('x2', 2), ...)" named no
    reason: 2.0 == 2. Floats stay refused (a float scale is usually a resize factor, not a head)."""
    with pytest.raises(InputError, match="unsupported scale .*scales are ints: pass [24], not (float|Tensor)"):
        up.upscale(torch.randn(1, 4, 8, 8), scale=scale)


def test_switches_given_as_strings_or_a_progress_that_is_neither_are_refused(up):
    """check_finite="false" (a config file's or a form's value) read as True, and progress=1 or "yes"
    as no progress, before 2026-11-29."""
    x = torch.randn(1, 4, 8, 8)
    for kwargs, says in ((dict(check_finite="false"), "check_finite takes True or False, got 'false'"),
                         (dict(check_finite=None), "check_finite takes True or False, got None"),
                         (dict(cuda_graph="no"), "cuda_graph takes True or False, got 'no'"),
                         (dict(progress=1), "progress takes True .* got 1"),
                         (dict(progress="yes", tile=8), "progress takes True .* got 'yes'")):
        with pytest.raises(InputError, match=says):
            up.upscale(x, **kwargs)
    calls = []
    want = up.upscale(x)
    for kwargs in (dict(check_finite=0), dict(progress=None), dict(progress=lambda *a: calls.append(a))):
        assert torch.equal(up.upscale(x, **kwargs), want)
    assert calls == [(1, 1)]


def test_integral_scales_of_other_types_are_scales(up):
    """NumPy integers (a scale read from an array or a config) count as the int they hold; the
    result is keyed by what was asked for."""
    import numpy as np

    x = torch.randn(1, 4, 8, 8)
    assert torch.equal(up.upscale(x, scale=np.int64(2)), up.upscale(x, scale=2))
    both = up.upscale(x, scale=(np.int32(4), 2))
    assert list(both) == [4, 2] and both[4].shape == (1, 4, 32, 32)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_latents_raise(up, value):
    x = torch.randn(1, 4, 8, 8)
    x[0, 1, 2, 3] = value
    with pytest.raises(NonFiniteInputError, match="1 NaN/Inf value"):
        up.upscale(x)
    out = up.upscale(x, check_finite=False)  # the caller opted out: no check, output is not finite
    assert not torch.isfinite(out).all()


@pytest.mark.parametrize("size", [(1, 1), (1, 3), (2, 5), (3, 3), (5, 1)])
def test_sides_too_small_for_reflect_padding_are_mirror_extended(up, size):
    """Window 4: sides 1..3 need pads >= side, where the released code crashes."""
    x = torch.randn(2, 4, *size)
    out = up.upscale(x, scale=(2, 4))
    assert out[2].shape == (2, 4, 2 * size[0], 2 * size[1])
    assert out[4].shape == (2, 4, 4 * size[0], 4 * size[1])
    assert torch.isfinite(out[4]).all()
    # Same as upscaling the explicitly mirror-extended input and cropping.
    from lua_fast.padding import pad_to_window_multiple

    padded = pad_to_window_multiple(x, 4)
    full = up.upscale(padded)
    torch.testing.assert_close(out[2], full[..., : 2 * size[0], : 2 * size[1]], rtol=0, atol=0)


def test_a_compiled_upscale_keeps_its_checks_and_says_what_stops_one_graph(up):
    """torch.compile(up.upscale): the NaN/Inf checks run eagerly between graphs and still raise; with
    fullgraph=True the error names the check and the way out (before 2026-11-28: Dynamo's "could not
    guard on data-dependent expression"); check_finite=False compiles as one graph."""
    import functools

    torch._dynamo.reset()
    z = torch.randn(2, 4, 9, 7)
    want = up.upscale(z)
    compiled = torch.compile(up.upscale, backend="eager")
    assert torch.equal(compiled(z), want)
    with pytest.raises(NonFiniteInputError):
        compiled(z.index_fill(-1, torch.tensor([2]), float("nan")))
    torch._dynamo.reset()  # (else the frames compiled above, with their graph breaks, are reused)
    with pytest.raises(Exception, match="pass check_finite=False, or compile up.model"):
        torch.compile(up.upscale, fullgraph=True, backend="eager")(z)
    one_graph = torch.compile(functools.partial(up.upscale, check_finite=False), fullgraph=True, backend="eager")
    assert torch.equal(one_graph(z), want)
    torch._dynamo.reset()


@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_a_meta_upscaler_gives_output_shapes_without_computing(backend):
    """device="meta": shapes and dtypes for planning, no data; the NaN/Inf checks (which read data)
    are skipped there instead of failing in Tensor.item()."""
    up = lua_fast.load(random_state_dict(tiny_config(), seed=2), device="meta", backend=backend)
    out = up.upscale(torch.randn(2, 4, 13, 21, device="meta"), scale=(2, 4))
    assert {s: (tuple(o.shape), o.device.type) for s, o in out.items()} == \
        {2: ((2, 4, 26, 42), "meta"), 4: ((2, 4, 52, 84), "meta")}


def test_inside_a_cuda_graph_capture_of_the_callers_the_checks_say_what_to_turn_off(up, monkeypatch):
    """A caller capturing upscale() in their own torch.cuda.graph: the NaN/Inf read-back (and a nested
    capture of ours) would fail inside CUDA with "operation not permitted when stream is capturing" and
    invalidate their capture; it raises first, naming the switches. (Stand-in: the capture state.)"""
    from lua_fast import upscaler as module

    z = torch.randn(1, 4, 8, 8)
    monkeypatch.setattr(module, "_capturing", lambda device: True)
    with pytest.raises(InputError, match="pass check_finite=False .* and cuda_graph=False"):
        up.upscale(z)
    with pytest.raises(InputError, match="captured into a CUDA graph of yours"):
        up.upscale(z, check_finite=False, cuda_graph=True)
    assert up.upscale(z, check_finite=False).shape == (1, 4, 16, 16)


def test_a_precision_without_native_cpu_kernels_is_warned_when_the_upscaler_is_made(monkeypatch):
    """bf16/fp16 on a CPU without oneDNN kernels for them runs PyTorch's fallback loops, about 40x
    slower than fp32 (fp16 here: 43.6 s against 1.08 s at 32x32): warned by load and to(), not
    discovered after a forward (new on 2026-11-28). Nothing else changes."""
    import warnings

    from lua_fast import SlowPrecisionWarning, precision
    from lua_fast.config import LUAConfig
    from lua_fast.reference import LUA

    sd = LUA(LUAConfig.small()).state_dict()
    native = {torch.bfloat16: True, torch.float16: False}
    monkeypatch.setattr(precision, "cpu_native_kernels", lambda dtype: native.get(dtype, True))
    with pytest.warns(SlowPrecisionWarning, match=r"precision fp16 computes in float16, and this CPU .* 40x slower"):
        up = lua_fast.load(sd, dtype=torch.float16)
    assert up.dtype == torch.float16
    with warnings.catch_warnings():
        warnings.simplefilter("error", SlowPrecisionWarning)
        up = lua_fast.load(sd, precision="mixed")  # bfloat16: native here
        lua_fast.load(sd, dtype=torch.float16, device="meta")  # not the CPU
        native[torch.bfloat16] = None  # unknown: no warning
        up.to(torch.bfloat16)
    native[torch.bfloat16] = False
    with pytest.warns(SlowPrecisionWarning, match=r"mixed\(bfloat16\) computes in bfloat16"):
        lua_fast.load(sd, precision="mixed")
    assert precision.cpu_native_kernels(torch.float32) is True
    assert monkeypatch.undo() or precision.cpu_native_kernels(torch.bfloat16) in (True, False, None)


def test_warnings_name_the_callers_line_whatever_the_entry_point(monkeypatch):
    """A warning names the user's line, so ``-W ignore::...:module`` filters and the printed location
    work. Before 2026-11-29 a fixed stacklevel named lua_fast's own wrapper when the call came
    through one (``official.upscale_latent``: lua_fast/official.py; ``up.to``: lua_fast/upscaler.py)."""
    import warnings

    from lua_fast import LowMemoryWarning, SlowPrecisionWarning, host_memory, official, precision, tiling
    from lua_fast.config import LUAConfig
    from lua_fast.reference import LUA

    sd = LUA(LUAConfig.small()).state_dict()
    monkeypatch.setattr(precision, "cpu_native_kernels", lambda dtype: dtype == torch.float32)
    monkeypatch.setattr(tiling, "RAM_CHECK_FLOOR", 0)
    monkeypatch.setattr(host_memory, "cpu_memory_available", lambda: 1)
    up, x = lua_fast.load(sd), torch.randn(1, 16, 8, 8)
    calls = [
        (SlowPrecisionWarning, lambda: lua_fast.load(sd, precision="mixed")),
        (SlowPrecisionWarning, lambda: lua_fast.load(sd).to(torch.bfloat16)),
        (SlowPrecisionWarning, lambda: official.load_model(sd, dtype=torch.float16)),
        (LowMemoryWarning, lambda: up.upscale(x)),
        (LowMemoryWarning, lambda: up.upscale(x, scale=(2, 4))),
        (LowMemoryWarning, lambda: official.upscale_latent(up, x)),
    ]
    for category, call in calls:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            call()
        assert [w.filename for w in seen if issubclass(w.category, category)] == [__file__], \
            [(w.category.__name__, w.filename, w.lineno) for w in seen]


def test_every_switch_reads_the_same_on_and_off_values(monkeypatch):
    """Before 2026-11-29 each switch had its own reading: LUA_FAST_PDL=false turned PDL on,
    LUA_FAST_DISABLE_NATIVE=false disabled the extension, LUA_FAST_AUTOTUNE=off kept timed tuning,
    and LUA_FAST_FUSED_MLP=maybe meant on. Now 1/true/yes/on and 0/false/no/off everywhere, any
    other value an error naming the variable."""
    from lua_fast import UsageError, env, native
    from lua_fast.kernels import fused_mlp, triton_support

    name = "LUA_FAST_SOME_SWITCH"
    monkeypatch.delenv(name, raising=False)
    assert env.flag(name, True) is True and env.flag(name, False) is False
    for value, expected in [("", None), ("1", True), ("true", True), (" YES ", True), ("On", True),
                            ("0", False), ("false", False), ("No", False), ("OFF ", False)]:
        monkeypatch.setenv(name, value)
        assert env.flag(name, True) is (True if expected is None else expected), value
        assert env.flag(name, False) is (False if expected is None else expected), value
    monkeypatch.setenv(name, "2")
    with pytest.raises(UsageError, match="LUA_FAST_SOME_SWITCH='2' is not a switch value"):
        env.flag(name, False)

    cpu = torch.device("cpu")
    monkeypatch.setenv(triton_support.PDL_ENV, "false")
    assert triton_support.pdl_reason(cpu).startswith("off by default")
    monkeypatch.setenv(triton_support.AUTOTUNE_ENV, "off")
    assert triton_support.autotuning() is False
    monkeypatch.setenv(triton_support.DISABLE_ENV, "no")
    assert not (triton_support.unavailable_reason(cpu) or "").startswith("disabled by")
    monkeypatch.setenv(native.DISABLE_ENV, "false")
    assert not (native._load().reason or "").startswith("disabled by")
    monkeypatch.setenv(native.DISABLE_ENV, "yes")
    assert native._load().reason == "disabled by LUA_FAST_DISABLE_NATIVE=yes"
    monkeypatch.setenv(fused_mlp.FUSED_MLP_ENV, "maybe")
    with pytest.raises(UsageError, match="LUA_FAST_FUSED_MLP='maybe'"):
        fused_mlp.fused_mlp_enabled()


@pytest.mark.parametrize("wrapper, prefix", [("state_dict", "model."), ("net_g", ""), ("ema", "")])
def test_a_training_checkpoint_says_where_its_weights_are_and_how_to_load_them(tmp_path, wrapper, prefix):
    """Lightning keeps the weights under 'state_dict' with its module's attribute ('model.') on every
    key; other trainers under 'net_g' or 'ema'. Before 2026-11-29 the error only listed the entries
    that are not tensors; now it names the one holding tensors and the line that loads it, which is
    then checked to work."""
    weights = random_state_dict(tiny_config(), seed=3)
    path = tmp_path / "trained.ckpt"
    torch.save({wrapper: {prefix + k: v for k, v in weights.items()}, "epoch": 7, "optimizer": {"lr": 1e-4}}, path)
    with pytest.raises(CheckpointError) as info:
        lua_fast.load(path)
    message = str(info.value)
    assert f"{wrapper!r} holds {len(weights)} tensors: a training checkpoint?" in message, message
    line = message.split("e.g. ", 1)[1][:-1]  # the suggested Python, run as a user would paste it
    scope = {"torch": torch, "lua_fast": lua_fast, "path": path}
    exec(line.replace("lua_fast.load(", "up = lua_fast.load(", 1), scope)
    assert scope["up"].config == lua_fast.load(weights).config
