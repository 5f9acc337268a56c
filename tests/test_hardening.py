"""Hardening (issue 16): no data loss, bounded memory on untrusted checkpoints, the CLI's exit
contract, dtype/layout refusals, non-finite outputs, layout-independent bits, tiling arguments."""

import dataclasses
import os
import re
import stat
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import lua_fast
from lua_fast import CheckpointError, InputError, NonFiniteInputError, NonFiniteOutputError
from lua_fast import checkpoint, files
from lua_fast.cli import main
from lua_fast.reference import LUA
from conftest import random_state_dict, tiny_config

CONFIG = tiny_config(4)
INDEX_KEY = "layers.0.residual_group.blocks.0.attn.relative_position_index"


@pytest.fixture(scope="module")
def sd():
    return random_state_dict(CONFIG, seed=21)


@pytest.fixture(scope="module")
def up(sd):
    return lua_fast.load(sd)


@pytest.fixture
def files_dir(tmp_path, sd):
    """weights.pth and latents in.pt (with a second tensor) in a fresh directory."""
    torch.save({"params_ema": sd}, tmp_path / "weights.pth")
    torch.save({"a": torch.randn(1, 4, 6, 7), "other": torch.arange(5)}, tmp_path / "in.pt")
    return tmp_path


def run_cli(args, capsys):
    """(exit status, stderr lines) of one CLI call, argparse exits included."""
    try:
        code = main([str(a) for a in args])
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    return code, [line for line in err.splitlines() if line.strip()]


# ----------------------------------------------------------------- 1. data loss
def test_output_over_the_input_or_the_weights_is_refused(files_dir, capsys):
    d = files_dir
    before = {p: p.read_bytes() for p in (d / "in.pt", d / "weights.pth")}
    base = ["upscale", "--weights", d / "weights.pth", "--input", d / "in.pt", "--key", "a"]
    for target, what in [(d / "in.pt", "--input"), (d / "weights.pth", "--weights"),
                         (d / "." / "in.pt", "--input")]:
        code, err = run_cli(base + ["--output", target], capsys)
        assert code == 2 and len(err) == 1 and f"same file as {what}" in err[0] and "--force" in err[0]
    assert {p: p.read_bytes() for p in before} == before  # nothing was touched
    # --force is the explicit opt-in
    code, _ = run_cli(base + ["--output", d / "in.pt", "--force"], capsys)
    assert code == 0 and set(torch.load(d / "in.pt", weights_only=True)) == {"a"}


def test_convert_refuses_to_overwrite_its_source(tmp_path, sd, capsys):
    src = tmp_path / "w.safetensors"
    save_file(sd, str(src))
    before = src.read_bytes()
    code, err = run_cli(["convert", src, src], capsys)
    assert code == 2 and len(err) == 1 and "same file as the source checkpoint" in err[0]
    assert src.read_bytes() == before



def test_convert_reads_its_source_as_load_does(tmp_path, sd, capsys, monkeypatch):
    """An empty source was ". is a directory ..." and a hub file "checkpoint not found: hf:/..." before
    2026-11-29: convert read files itself; it now reads what load reads."""
    code, err = run_cli(["convert", "", tmp_path / "out.safetensors"], capsys)
    assert code == 2 and err == ["lua-fast convert: error: no checkpoint given: the path is empty"]
    from lua_fast import hub

    torch.save({"params_ema": sd}, tmp_path / "cached.pth")
    monkeypatch.setattr(hub, "download", lambda path: str(tmp_path / "cached.pth"))  # (the Hub's cache)
    code, err = run_cli(["convert", "hf://owner/repo/lua.pth", tmp_path / "out.safetensors"], capsys)
    assert code == 0 and set(load_file(str(tmp_path / "out.safetensors"))) == set(sd)


def test_interrupted_writes_leave_no_half_file(tmp_path, monkeypatch):
    target = tmp_path / "out.pt"
    target.write_bytes(b"previous result")

    def dies_halfway(obj, path, *a, **k):
        with open(path, "wb") as fh:
            fh.write(b"half")
        raise KeyboardInterrupt  # e.g. Ctrl-C or a full disk in the middle of the write

    monkeypatch.setattr(files.torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        files.write_latents(target, torch.zeros(1, 4, 2, 2))
    assert target.read_bytes() == b"previous result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.pt"]  # no temporary left behind


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
@pytest.mark.parametrize("name", ["out.safetensors", "out.pt", "out.latent"])
def test_written_files_get_the_permissions_open_would_give(tmp_path, umask, name):
    """A new output gets 0o666 less the umask, an overwritten one keeps its mode, and a symbolic
    link is written through. Before 2026-11-29 every output kept its temporary file's 0o600: other
    users (a ComfyUI or web service reading lua-fast's outputs) could not read them."""
    previous = os.umask(umask)
    try:
        files.write_latents(tmp_path / name, torch.ones(1, 4, 2, 2))
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask
        (tmp_path / name).chmod(0o640)
        files.write_latents(tmp_path / name, torch.zeros(1, 4, 2, 2))
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o640
        assert files.read_latents(tmp_path / name).sum() == 0
        link = tmp_path / ("link" + Path(name).suffix)
        link.symlink_to(tmp_path / name)
        files.write_latents(link, torch.ones(1, 4, 2, 2))
        assert link.is_symlink()
        assert files.read_latents(tmp_path / name).sum() == 16  # through the link
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o640
        assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]
    finally:
        os.umask(previous)


def test_a_read_only_output_is_refused_not_replaced(files_dir, capsys, monkeypatch):
    """Outputs are renamed over their target, which a read-only file does not stop (only its folder's
    permissions count), so a result the user had protected was replaced. (Root may write any file, as
    with open(); the test stands in for another user by answering os.access for the file.)"""
    target = files_dir / "protected.pt"
    target.write_bytes(b"kept")
    access = os.access
    monkeypatch.setattr(files.os, "access", lambda p, mode: False if Path(p) == target else access(p, mode))
    code, err = run_cli(["upscale", "--weights", files_dir / "weights.pth", "--input", files_dir / "in.pt",
                         "--key", "a", "--output", target], capsys)
    assert code == 2 and len(err) == 1 and "is read-only; it stays as it is" in err[0], err
    assert target.read_bytes() == b"kept"


@pytest.mark.parametrize("bad_output, message", [
    ("missing_dir/out.pt", "does not exist"), ("a_directory", "is a directory"),
    # a suffix promising a format lua-fast does not write (before 2026-11-28: a torch.save pickle)
    ("out.npy", "writes safetensors .* not .npy"), ("out", "not a file without a suffix")])
def test_the_output_path_is_checked_before_any_computation(files_dir, capsys, monkeypatch, bad_output, message):
    (files_dir / "a_directory").mkdir(exist_ok=True)
    monkeypatch.setattr(lua_fast, "load", lambda *a, **k: pytest.fail("weights were read before the output check"))
    code, err = run_cli(["upscale", "--weights", files_dir / "weights.pth", "--input", files_dir / "in.pt",
                         "--key", "a", "--output", files_dir / bad_output], capsys)
    assert code == 2 and len(err) == 1 and re.search(message, err[0]), err


def test_bench_refuses_an_existing_file_before_running(tmp_path, capsys, monkeypatch):
    from lua_fast import benchmark

    monkeypatch.setattr(benchmark, "run_suite", lambda *a, **k: pytest.fail("the suite ran before the check"))
    (tmp_path / "taken").write_text("x")
    code, err = run_cli(["bench", "--quick", "--device", "cpu", "--out", tmp_path / "taken"], capsys)
    assert code == 2 and len(err) == 1 and "existing file" in err[0]


# ------------------------------------------------------- 2. untrusted checkpoints
def _meta_layout(config):
    with torch.device("meta"):
        model = LUA(config)
    return {k: v for k, v in model.state_dict().items() if not checkpoint.is_derived(k)}


def test_stride_zero_expansions_are_refused_before_they_are_materialised(tmp_path):
    """A 16 KB file whose tensors expand one element to a config with a huge embed dim."""
    big = tiny_config(4, embed_dim=60000, num_heads=(1, 1), head_width=8)
    sd = {k: torch.zeros(1, dtype=v.dtype).expand(v.shape) for k, v in _meta_layout(big).items()}
    torch.save(sd, tmp_path / "expanded.pth")
    assert (tmp_path / "expanded.pth").stat().st_size < 64 * 1024
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match="overlapping or expanded strides"):
        lua_fast.load(tmp_path / "expanded.pth")
    assert time.perf_counter() - start < 5


def test_overlapping_views_are_refused(sd):
    bad = dict(sd)
    w = bad["conv_first.bias"]
    bad["conv_first.bias"] = torch.zeros(1).as_strided(w.shape, (0,))
    with pytest.raises(CheckpointError, match="conv_first.bias: overlapping"):
        lua_fast.load(bad)
    assert checkpoint.storage_problem(torch.zeros(4, 4)[:, :2]) is None  # a strided slice is fine
    assert "overlapping" in checkpoint.storage_problem(torch.zeros(8).as_strided((3, 3), (2, 1)))


def test_huge_windows_are_refused_before_derived_buffers_are_built(tmp_path, monkeypatch):
    """A valid ~1 MB safetensors with window 256 and no relative_position_index."""
    cfg = tiny_config(4, embed_dim=4, depths=(1,), num_heads=(1,), window_size=256, head_width=4, img_size=512)
    save_file({k: torch.zeros(v.shape) for k, v in _meta_layout(cfg).items()}, str(tmp_path / "w256.safetensors"))
    assert (tmp_path / "w256.safetensors").stat().st_size < 4 * 2**20
    monkeypatch.setattr(checkpoint, "derived_buffers", lambda c: pytest.fail("derived buffers were built"))
    with pytest.raises(CheckpointError, match="window size 256 exceeds lua_fast's limit of 32"):
        lua_fast.load(tmp_path / "w256.safetensors")


def test_declared_elements_are_bounded(sd, monkeypatch):
    monkeypatch.setattr(checkpoint, "MAX_ELEMENTS", 1000)
    with pytest.raises(CheckpointError, match="declares .* elements, over lua_fast's limit of 1,000"):
        lua_fast.load(sd)


# -------------------------------------------------- 4. fp8 and sparse tensors
@pytest.mark.parametrize("change,match", [
    (lambda t: t.to(torch.float8_e4m3fn), "dtype torch.float8_e4m3fn"),
    (lambda t: t.to(torch.float8_e5m2), "dtype torch.float8_e5m2"),
    (lambda t: t.to_sparse(), "layout torch.sparse_coo"),
    (lambda t: t.to(torch.complex64), "dtype torch.complex64"),
])
def test_fp8_sparse_and_complex_weights_are_checkpoint_errors(sd, change, match):
    bad = dict(sd)
    bad["conv_first.weight"] = change(bad["conv_first.weight"])
    with pytest.raises(CheckpointError, match=match):
        lua_fast.load(bad)


@pytest.mark.parametrize("latents,match", [
    (torch.randn(1, 4, 6, 6).to(torch.float8_e4m3fn), "float8_e4m3fn .*cast float8 latents up"),
    (torch.randn(1, 4, 6, 6).to_sparse(), "dense tensor"),
])
def test_fp8_and_sparse_latents_are_input_errors(up, latents, match):
    with pytest.raises(InputError, match=match):
        up.upscale(latents)


@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors is in prototype stage")
@pytest.mark.parametrize("layout", [torch.strided, torch.jagged])
def test_nested_latents_are_input_errors(up, layout):
    # A strided nested tensor passed the layout check, then failed inside torch with
    # "Internal error: NestedTensorImpl doesn't support sizes".
    latents = torch.nested.nested_tensor([torch.randn(4, 6, 6), torch.randn(4, 6, 8)], layout=layout)
    with pytest.raises(InputError, match="got a nested tensor.*unbind"):
        up.upscale(latents)


# ----------------------------------------------------------- 5. non-finite outputs
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_latents_that_overflow_in_the_cast_are_refused(sd, precision):
    up = lua_fast.load(sd, precision=precision)
    x = torch.randn(1, 4, 6, 6, dtype=torch.float64)
    x[0, 0, 0, 0] = 1e300  # finite in float64, Inf in float32 and bfloat16
    with pytest.raises(NonFiniteInputError, match="1 value.* too large for torch"):
        up.upscale(x)


def test_finite_latents_with_non_finite_outputs_raise(up):
    x = torch.randn(1, 4, 6, 6) * 1e30
    with pytest.raises(NonFiniteOutputError, match="fp32 overflowed") as info:
        up.upscale(x)
    assert isinstance(info.value, FloatingPointError)
    assert not torch.isfinite(up.upscale(x, check_finite=False)).all()  # the documented opt-out


def test_non_finite_errors_name_the_batch_items(up):
    """A server batching requests can fail the bad ones alone: both errors name the items (message
    and ``batch_items``); before 2026-11-29 only the count. A batch of one says nothing more."""
    x = torch.randn(5, 4, 6, 6)
    x[3, 1, 2, 2] = float("nan")
    x[1, 0, 0, 0] = float("inf")
    with pytest.raises(NonFiniteInputError, match=r"2 NaN/Inf value\(s\) out of 720 in batch items \[1, 3\] of 5;") as info:
        up.upscale(x)
    assert info.value.batch_items == [1, 3] and info.value.count == 2
    with pytest.raises(NonFiniteInputError, match=r"1 NaN/Inf value\(s\) out of 144; the output") as info:
        up.upscale(x[3:4])
    assert info.value.batch_items == [0]
    y = torch.randn(3, 4, 6, 6)
    y[2] *= 1e30  # finite, overflows inside the model
    with pytest.raises(NonFiniteOutputError, match=r"holds NaN/Inf in batch item \[2\] of 3 \(") as info:
        up.upscale(y, scale=(2, 4))
    assert info.value.batch_items == [2]
    many = torch.full((12, 4, 6, 6), float("nan"))
    with pytest.raises(NonFiniteInputError, match=r"in batch items \[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, \.\.\. \(12 in all\)\] of 12"):
        up.upscale(many)
    import pickle  # (a worker process's error reaches its parent pickled)
    again = pickle.loads(pickle.dumps(info.value))
    assert isinstance(again, NonFiniteOutputError) and str(again) == str(info.value)


# ------------------------------------------------------------- 6. memory layouts
@pytest.mark.parametrize("backend", ["reference", "torch", "torch-no-native"], indirect=True)
def test_channels_last_and_strided_inputs_give_the_same_bits(sd, backend):
    up = lua_fast.load(sd, backend=backend)
    for shape in [(1, 4, 16, 16), (1, 4, 13, 21), (2, 4, 8, 12)]:
        x = torch.randn(shape)
        want = up.upscale(x, scale=(2, 4))
        for view in (x.to(memory_format=torch.channels_last), x.transpose(2, 3).contiguous().transpose(2, 3)):
            got = up.upscale(view, scale=(2, 4))
            assert all(torch.equal(got[s], want[s]) for s in (2, 4)), (shape, view.stride())


# ------------------------------------------------------- 6b. copies of an upscaler
@pytest.mark.parametrize("backend", ["reference", "torch", "triton"])
def test_an_upscaler_copies_and_pickles(sd, backend):
    """copy.deepcopy, pickle (multiprocessing's spawn) and torch.save failed on the caches' and
    CUDA graphs' locks ("cannot pickle '_thread.lock' object"). A copy keeps the weights, backend
    and graph bound and starts with empty caches; it is independent of the original."""
    import copy
    import io
    import pickle

    from lua_fast.kernels import triton_support

    if backend == "triton" and triton_support.unavailable_reason(torch.device("cpu")):
        pytest.skip(triton_support.unavailable_reason(torch.device("cpu")))
    up = lua_fast.load(sd, backend=backend)
    up.max_cuda_graphs = 3
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(8))
    want = up.upscale(x)
    buffer = io.BytesIO()
    torch.save(up, buffer)
    buffer.seek(0)
    copies = [copy.deepcopy(up), pickle.loads(pickle.dumps(up)), torch.load(buffer, weights_only=False)]
    for other in copies:
        assert (other.backend, other.precision, other.max_cuda_graphs) == (backend, up.precision, 3)
        assert other.cuda_graph_stats()["graphs"] == 0 and other._graphs.model is other.model
        assert torch.equal(other.upscale(x), want)
    with torch.no_grad():
        copies[0].reference_model.conv_first.weight.zero_()
    assert torch.equal(up.upscale(x), want)


# ------------------------------------------------------- 6c. moving an upscaler
@pytest.mark.parametrize("backend", ["reference", "torch", "triton"])
def test_to_moves_and_recasts_in_place_like_a_fresh_load(sd, backend):
    """``up.to(...)`` (offloading between uses, as pipelines do with their modules) failed with
    "'Upscaler' object has no attribute 'to'" before 2026-11-28. It works in place, returns the
    upscaler, and gives the bits a fresh load at the new device / precision gives."""
    from lua_fast.kernels import triton_support

    if backend == "triton" and triton_support.unavailable_reason(torch.device("cpu")):
        pytest.skip(triton_support.unavailable_reason(torch.device("cpu")))
    x = torch.randn(2, 4, 9, 7, generator=torch.Generator().manual_seed(5))
    up = lua_fast.load(sd, backend=backend)
    up.max_cuda_graphs = 3
    assert up.to("cpu") is up and up.to(torch.float32) is up  # no change: nothing rebuilt
    model = up.model
    for kwargs, args in [({"precision": "mixed"}, ()), ({"precision": "fp32"}, ()), ({"device": "cpu"}, (torch.float16,))]:
        target = lua_fast.load(sd, backend=backend, **kwargs, **({"dtype": args[0]} if args else {}))
        assert up.to(*args, **kwargs) is up and up.model is not model
        model = up.model
        assert (up.backend, up.precision, up.dtype, up.max_cuda_graphs) == (backend, target.precision, target.dtype, 3)
        assert up.reference_model.conv_first.weight.dtype == target.dtype
        assert torch.equal(up.upscale(x), target.upscale(x)), kwargs
    meta = lua_fast.load(sd, backend=backend if backend != "triton" else "torch").to("meta")
    assert meta.device.type == "meta" and meta.upscale(x.to("meta")).shape == (2, 4, 18, 14)


def test_to_another_device_returns_the_reference_masks_memory(sd):
    """Before 2026-11-28 offloading (``up.to("cpu")`` from CUDA) left the old device's shift masks in
    a cache shared by every reference model (up to 256 MiB); since 2026-11-29 each model owns its
    masks, and ``to`` builds a new model. (The CPU and meta devices stand in for CUDA and CPU.)"""
    import gc
    import weakref

    from lua_fast.lru import hold_values

    up = lua_fast.load(sd, backend="reference")
    with hold_values() as held:
        up.upscale(torch.randn(1, 4, 21, 13))  # shifted blocks: masks cached for the CPU
    masks = [weakref.ref(v) for v in held if isinstance(v, torch.Tensor) and v.device.type == "cpu"]
    assert masks
    del held
    up.to("meta")
    gc.collect()
    assert [m for m in masks if m() is not None] == []
    again = lua_fast.load(sd, backend="reference")  # another model on the old device rebuilds them
    x = torch.randn(1, 4, 21, 13)
    assert torch.equal(again.upscale(x), again.reference_model(x, (2,))[2])


def test_to_refuses_widening_weights_and_changes_nothing_when_it_fails(sd, monkeypatch):
    x = torch.randn(1, 4, 8, 8)
    up = lua_fast.load(sd, dtype=torch.bfloat16)
    want, model = up.upscale(x), up.model
    assert torch.equal(lua_fast.load(sd).to(torch.bfloat16).upscale(x), want)  # narrowing is a fresh load
    for target in (torch.float32, torch.float16, torch.float64):
        with pytest.raises(InputError, match=f"load the checkpoint again with dtype={target}"):
            up.to(target)
    with pytest.raises(InputError, match="load the checkpoint again with precision='mixed'"):
        up.to(precision="mixed")
    with pytest.raises(InputError, match="a device and/or a dtype"):
        up.to("cpu", "cpu")
    with pytest.raises(InputError, match="pass precision='mixed' too"):
        up.to(mixed_dtype=torch.float16)  # not silently ignored
    mixed = lua_fast.load(sd, precision="mixed")
    assert mixed.to(mixed_dtype=torch.float16).precision == lua_fast.load(sd, precision="mixed",
                                                                           mixed_dtype=torch.float16).precision
    # a backend named at load time that cannot run at the target: nothing changes
    ref = lua_fast.load(sd, backend="reference")
    backends = lua_fast.dispatch.BACKENDS
    monkeypatch.setitem(backends, "reference", dataclasses.replace(
        backends["reference"], unavailable_reason=lambda device, precision: "stand-in: not here"))
    with pytest.raises(lua_fast.BackendUnavailableError, match="stand-in"):
        ref.to(torch.bfloat16)
    assert ref.dtype == torch.float32 and up.model is model and torch.equal(up.upscale(x), want)
    # "auto" chooses again for the new place
    assert lua_fast.load(sd).to(torch.bfloat16).backend == lua_fast.load(sd, dtype=torch.bfloat16).backend


@pytest.mark.parametrize("scale", [2, (2, 4)], ids=["one", "two"])
def test_outputs_are_ordinary_tensors_the_caller_may_update_in_place(up, scale):
    """upscale runs under no_grad, not inference_mode: the caller may scale or noise the result in
    place, or use it in autograd, as with any tensor. Inside inference_mode the caller gets
    inference tensors, as that mode gives."""
    x = torch.randn(1, CONFIG.in_channels, 6, 10)
    out = up.upscale(x, scale=scale)
    for o in out.values() if isinstance(out, dict) else [out]:
        assert not o.is_inference() and not o.requires_grad
    # no autograd graph even for an input that requires grad (no_grad is on the implementation)
    for o in (lambda r: r.values() if isinstance(r, dict) else [r])(up.upscale(x.requires_grad_(), scale=scale)):
        assert o.grad_fn is None and not o.requires_grad
        o.mul_(0.5)
        weight = torch.ones((), requires_grad=True)
        (o * weight).sum().backward()
        assert weight.grad is not None
    with torch.inference_mode():
        assert up.upscale(x).is_inference()


# ------------------------------------------------------------ 7. tiling arguments
@pytest.mark.parametrize("budget,match", [
    (0, "positive int"), (-1, "positive int"), (True, "positive int"), ("1GB", "positive int"),
    (2.5e9, "positive int"), (1, "below the estimated .* smallest automatic tile"),
])
def test_bad_memory_budgets_are_refused(up, budget, match):
    with pytest.raises(InputError, match=match):
        up.upscale(torch.randn(1, 4, 40, 40), tile="auto", memory_budget=budget)


@pytest.mark.parametrize("overlap", [-5, 2.5, "x", True])
@pytest.mark.parametrize("tile", ["auto", 16])
def test_bad_overlaps_are_refused_in_both_modes(up, tile, overlap):
    with pytest.raises(InputError, match="overlap must be an int"):
        up.upscale(torch.randn(1, 4, 20, 20), tile=tile, overlap=overlap)


def test_tiling_options_without_tiling_are_refused(up):
    with pytest.raises(InputError, match="only apply to tiled runs"):
        up.upscale(torch.randn(1, 4, 8, 8), overlap=4)
    with pytest.raises(InputError, match="only applies to tile='auto'"):
        up.upscale(torch.randn(1, 4, 8, 8), tile=8, memory_budget=2**30)


# ------------------------------------------------- 8. non-contiguous derived buffers
def test_a_non_contiguous_relative_position_index_loads_and_runs(sd):
    index = sd[INDEX_KEY]
    wide = torch.zeros(index.shape[0], 2 * index.shape[1], dtype=index.dtype)
    wide[:, : index.shape[1]] = index
    x = torch.randn(1, 4, 8, 8)
    want = lua_fast.load(sd).upscale(x)
    # same values: column-major (dense, permuted strides), and a slice with row stride 2N
    for view in (index.t().contiguous().t(), wide[:, : index.shape[1]]):
        assert not view.is_contiguous() and torch.equal(view, index)
        assert torch.equal(lua_fast.load({**sd, INDEX_KEY: view}).upscale(x), want)


# --------------------------------------------------- 3 and 9. the CLI exit contract
def _latent_file_cases(d):
    (d / "empty.pt").write_bytes(b"")
    (d / "truncated.pt").write_bytes((d / "in.pt").read_bytes()[:100])
    (d / "dir.pt").mkdir()
    torch.save({"latents": [1.0, 2.0]}, d / "list.pt")
    torch.save({"latents": {"x": torch.zeros(1, 4, 4, 4)}}, d / "dict.pt")
    torch.save([torch.zeros(1, 4, 4, 4)], d / "toplist.pt")
    torch.save(torch.zeros(1).expand(1, 4, 4000, 4000), d / "expanded.pt")
    torch.save(torch.randn(1, 4, 6, 6).to(torch.float8_e5m2), d / "fp8.pt")
    nan = torch.randn(1, 4, 6, 6)
    nan[0, 0, 0, 0] = float("nan")
    torch.save(nan, d / "nan.pt")
    return {
        "empty.pt": "could not be read", "truncated.pt": "could not be read", "dir.pt": "is a folder without latents files",  # (a folder's latents are its inputs)
        "list.pt": "holds a list under key 'latents'", "dict.pt": "holds a dict under key 'latents'",
        "toplist.pt": "holds a list, not a tensor", "expanded.pt": "overlapping or expanded",
        "fp8.pt": "float8_e5m2", "nan.pt": "pass --no-check-finite", "missing.pt": "not found",
    }


def test_malformed_input_files_exit_2_with_one_line(files_dir, capsys):
    d = files_dir
    for name, expected in _latent_file_cases(d).items():
        code, err = run_cli(["upscale", "--weights", d / "weights.pth", "--input", d / name,
                             "--output", d / "o.pt"], capsys)
        assert code == 2 and len(err) == 1 and expected in err[0], (name, err)
        assert "Traceback" not in err[0]
    assert not (d / "o.pt").exists()


BAD_INVOCATIONS = [
    (["--device", "foo"], "unknown device 'foo'"),
    (["--tile", "abc"], "argument --tile"),
    (["--overlap", "4"], "--overlap needs --tile"),
    (["--tile", "8", "--overlap", "9"], "overlap must be an int in [0, tile - window]"),
    (["--scale", "3"], "unsupported scale 3"),
    (["--backend", "nope"], "nope"),
]


@pytest.mark.parametrize("extra,expected", BAD_INVOCATIONS, ids=[" ".join(e) for e, _ in BAD_INVOCATIONS])
def test_bad_options_exit_2_with_one_line(files_dir, capsys, extra, expected):
    d = files_dir
    code, err = run_cli(["upscale", "--weights", d / "weights.pth", "--input", d / "in.pt", "--key", "a",
                         "--output", d / "o.pt"] + extra, capsys)
    assert code == 2 and len(err) == 1 and expected in err[0], err


def test_bad_weights_and_convert_targets_exit_2_with_one_line(files_dir, capsys):
    d = files_dir
    (d / "wdir").mkdir()
    code, err = run_cli(["upscale", "--weights", d / "wdir", "--input", d / "in.pt", "--key", "a",
                         "--output", d / "o.pt"], capsys)
    assert code == 2 and len(err) == 1 and "is a directory" in err[0] and "not found" not in err[0]
    (d / "out.safetensors").mkdir()
    code, err = run_cli(["convert", d / "weights.pth", d / "out.safetensors"], capsys)
    assert code == 2 and len(err) == 1 and "is a directory" in err[0]
    code, err = run_cli(["convert", d / "weights.pth", d / "nowhere" / "w.safetensors"], capsys)
    assert code == 2 and len(err) == 1 and "does not exist" in err[0]
    code, err = run_cli(["demo", "--small", "--device", "foo"], capsys)
    assert code == 2 and len(err) == 1 and "unknown device" in err[0]


def test_the_readme_states_the_limits():
    text = (Path(__file__).parents[1] / "README.md").read_text()
    assert f"window size <= {checkpoint.MAX_WINDOW}" in text
    assert checkpoint.MAX_ELEMENTS == 2**30 and "2^30 declared elements" in text
    assert "unless you\n  pass `--force`" in text


@pytest.mark.parametrize("backend", ["reference", "torch", "triton"])
def test_torch_global_defaults_do_not_reach_the_upscaler(sd, backend):
    """A notebook's torch.set_default_device / set_default_dtype: loading and upscaling (tiled too)
    give the same bits. Before 2026-11-28 the derived buffers were built on the default device (the
    checkpoint check failed), the tile ramps too, and the triton backend packed its q weights with a
    float64 factor under a float64 default. (meta stands in for "cuda" as a default that is not the
    upscaler's device.)"""
    z = torch.randn(2, 4, 9, 7, generator=torch.Generator().manual_seed(5))
    try:
        want = lua_fast.load(sd, backend=backend)
    except lua_fast.BackendUnavailableError as exc:
        pytest.skip(str(exc))
    want = (want.upscale(z), want.upscale(z, tile=8, overlap=4))
    torch.set_default_device("meta")
    torch.set_default_dtype(torch.float64)
    try:
        up = lua_fast.load(sd, backend=backend)
        got = (up.upscale(z), up.upscale(z, tile=8, overlap=4))
    finally:
        torch.set_default_device(None)
        torch.set_default_dtype(torch.float32)
    for g, w in zip(got, want):
        assert g.device.type == "cpu" and torch.equal(g, w)
