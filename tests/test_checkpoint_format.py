"""Released checkpoint format: keys, shapes, wrappers, safetensors, derived buffers."""

import io
import re

import pytest
import torch
from safetensors.torch import save_file

import lua_fast
from lua_fast import LUAConfig
from lua_fast.checkpoint import expected_shapes
from lua_fast.reference import LUA
from spec_layout import released_layout
from conftest import random_state_dict, tiny_config


def test_released_layout_matches_spec_table():
    expected = released_layout()
    assert len(expected) == 556
    with torch.device("meta"):
        model = LUA(LUAConfig.flux())
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == expected
    assert list(got) == list(expected_shapes(LUAConfig.flux()))
    n_params = sum(p.numel() for p in model.parameters())
    assert 54.8e6 < n_params < 55.0e6
    assert model.state_dict()["layers.0.residual_group.blocks.0.attn.relative_position_index"].dtype == torch.int64


def test_sdxl_layout_matches_spec_table():
    with torch.device("meta"):
        model = LUA(LUAConfig.sdxl())
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == released_layout(c_in=4, c_out=4)


def test_released_config_loads_strictly_from_a_spec_built_state_dict():
    """A 556-entry state dict built from the spec table (zeros + correct derived buffers)."""
    layout = released_layout()
    derived = lua_fast.checkpoint.derived_buffers(LUAConfig.flux())
    sd = {k: derived[k] if k in derived else torch.zeros(v) for k, v in layout.items()}
    up = lua_fast.load({"params_ema": sd})
    assert up.config == LUAConfig.flux()
    assert up.backend == "torch" and up.dtype == torch.float32 and up.device == torch.device("cpu")
    out = up.upscale(torch.randn(1, 16, 3, 5), scale=(2, 4))
    assert out[2].shape == (1, 16, 6, 10) and out[4].shape == (1, 16, 12, 20)
    assert torch.count_nonzero(out[4]) == 0  # all-zero weights give zeros


@pytest.fixture
def tiny_sd():
    return random_state_dict(tiny_config(), seed=21)


def _assert_same_model(up, sd):
    x = torch.randn(1, 4, 9, 6, generator=torch.Generator().manual_seed(0))
    ref = lua_fast.load(sd).upscale(x, scale=(2, 4))
    out = up.upscale(x, scale=(2, 4))
    for s in (2, 4):
        assert torch.equal(out[s], ref[s])


@pytest.mark.parametrize("wrapper", ["params_ema", "params", None])
def test_pickle_wrappers(tmp_path, tiny_sd, wrapper):
    path = tmp_path / "lua.pth"
    torch.save({wrapper: tiny_sd, "iter": torch.tensor(5)} if wrapper else tiny_sd, path)
    _assert_same_model(lua_fast.load(path), tiny_sd)
    _assert_same_model(lua_fast.load(str(path)), tiny_sd)


def test_a_home_relative_path_is_expanded(tmp_path, tiny_sd, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # what Path.expanduser reads on POSIX
    monkeypatch.setenv("USERPROFILE", str(tmp_path))  # and on Windows
    save_file({k: v.contiguous() for k, v in tiny_sd.items()}, str(tmp_path / "lua.safetensors"))
    _assert_same_model(lua_fast.load("~/lua.safetensors"), tiny_sd)


def test_params_ema_is_preferred_over_params(tmp_path, tiny_sd):
    other = random_state_dict(tiny_config(), seed=99)
    path = tmp_path / "both.pth"
    torch.save({"params": other, "params_ema": tiny_sd}, path)
    _assert_same_model(lua_fast.load(path), tiny_sd)


def test_safetensors(tmp_path, tiny_sd):
    path = tmp_path / "lua.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_sd.items()}, str(path))
    _assert_same_model(lua_fast.load(path), tiny_sd)


def _write(fmt, sd, path):
    if fmt == "safetensors":
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    elif fmt == "legacy":  # torch.save's pre-1.6 format: a plain pickle stream, no zip archive
        torch.save({"params_ema": sd}, path, _use_new_zipfile_serialization=False)
    else:
        torch.save({"params_ema": sd}, path)


@pytest.mark.parametrize("fmt", ["safetensors", "torch", "legacy"])
@pytest.mark.parametrize("name", ["lua.sft", "lua.ckpt", "lua.bin", "lua", "lua.safetensors", "lua.pth"])
def test_the_format_is_read_from_the_content_not_the_suffix(tmp_path, tiny_sd, fmt, name):
    """ComfyUI's FLUX files are ``.sft`` safetensors, ``.ckpt`` / ``.bin`` hold either kind, and a
    renamed file keeps its content: before 2026-11-28 everything but ``.safetensors`` went to
    torch.load ("could not be read as a weights-only PyTorch checkpoint") and a torch file named
    ``.safetensors`` to safetensors."""
    path = tmp_path / name
    _write(fmt, tiny_sd, path)
    _assert_same_model(lua_fast.load(path), tiny_sd)


@pytest.mark.parametrize("fmt", ["safetensors", "torch", "legacy"])
def test_bytes_and_open_binary_files_load(tmp_path, tiny_sd, fmt):
    """A checkpoint in memory (a download, a blob store) or an open file, as torch.load takes;
    before 2026-11-28 these were refused as "not a LUA checkpoint ... found a BytesIO"."""
    path = tmp_path / "lua.x"
    _write(fmt, tiny_sd, path)
    data = path.read_bytes()
    _assert_same_model(lua_fast.load(data), tiny_sd)
    _assert_same_model(lua_fast.load(bytearray(data)), tiny_sd)
    _assert_same_model(lua_fast.load(io.BytesIO(data)), tiny_sd)
    with open(path, "rb") as f:
        _assert_same_model(lua_fast.load(f), tiny_sd)


def test_a_module_loads_from_its_state_dict(tiny_sd):
    """A model object (lua_fast's reference LUA, or the official class with the same layout) was
    refused as "found a LUA" before 2026-11-28."""
    module = LUA(tiny_config())
    module.load_state_dict(tiny_sd)
    _assert_same_model(lua_fast.load(module), tiny_sd)
    with pytest.raises(lua_fast.CheckpointError, match="not a LUA state dict"):
        lua_fast.load(torch.nn.Linear(2, 2))


def test_unreadable_streams_say_what_is_wrong(tmp_path, tiny_sd):
    with pytest.raises(lua_fast.CheckpointError, match="the given BytesIO is empty"):
        lua_fast.load(io.BytesIO())
    # A buffer just written stands at its end (before 2026-11-29 this said "the given BytesIO is empty")
    written = io.BytesIO()
    torch.save(tiny_sd, written)
    with pytest.raises(lua_fast.CheckpointError, match=rf"has nothing left to read: it stands at byte {written.tell()}, "
                                                      r"its end .*call \.seek\(0\)"):
        lua_fast.load(written)
    written.seek(0)
    _assert_same_model(lua_fast.load(written), tiny_sd)
    with pytest.raises(lua_fast.CheckpointError, match="binary mode"):
        lua_fast.load(io.StringIO("params_ema"))
    path = tmp_path / "lua.safetensors"
    _write("safetensors", tiny_sd, path)
    data = path.read_bytes()
    with pytest.raises(lua_fast.CheckpointError, match="safetensors"):
        lua_fast.load(data[: len(data) // 2])  # truncated
    with pytest.raises(lua_fast.CheckpointError, match="neither a safetensors nor a torch.save file"):
        lua_fast.load(b"not a checkpoint at all")


def _cut_short(fmt, sd, tmp_path):
    path = tmp_path / f"whole.{fmt}"
    _write(fmt, sd, path)
    data = path.read_bytes()
    return data[: len(data) * 2 // 3]


LFS_POINTER = b"version https://git-lfs.github.com/spec/v1\noid sha256:4d7a21\nsize 219676532\n"
WEB_PAGE = b"\n<!DOCTYPE html>\n<html lang='en'><head><title>lua_flux.safetensors</title></head></html>\n"


@pytest.mark.parametrize("content, says", [
    (b"", "the file is empty (0 bytes"),
    (LFS_POINTER, "it is a Git LFS pointer, not the tensors"),
    (WEB_PAGE, "it is a web page, not a tensor file"),
    (b"epoch,loss\n1,0.5\n", "it is neither a safetensors nor a torch.save file (it begins b'epoch,loss"),
    ("pth", "the torch.save file looks truncated"),
    ("safetensors", "the safetensors file looks truncated"),
], ids=["empty", "lfs-pointer", "web-page", "text", "truncated-pth", "truncated-safetensors"])
@pytest.mark.parametrize("name", ["lua.safetensors", "lua.pth"])
def test_a_file_that_holds_no_tensors_is_named_for_what_it_is(content, says, name, tmp_path, tiny_sd):
    """What failed downloads and clones without Git LFS leave behind. Before 2026-11-29 the readers'
    own words reached the user: "EOFError", "KeyError: 101", safetensors' "header too large",
    torch's "failed finding central directory"; the latents reader quoted the same."""
    from lua_fast.files import read_latents

    if isinstance(content, str):
        content = _cut_short(content, tiny_sd, tmp_path)
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(lua_fast.CheckpointError, match=re.escape(f"{path}: {says}")):
        lua_fast.load(path)
    if content:  # (empty bytes are refused before they are read)
        with pytest.raises(lua_fast.CheckpointError, match=re.escape(says)):
            lua_fast.load(content)
    with pytest.raises(lua_fast.InputError, match=re.escape(f"could not be read as a latents file ({says}")):
        read_latents(path)


class _Pickled:  # any class: torch.load(weights_only=True) refuses what it needs to import
    pass


@pytest.mark.parametrize("holds", ["module", "extras"])
def test_a_file_of_pickled_objects_says_so_and_what_to_do(holds, tmp_path, tiny_sd):
    """A whole model saved with torch.save, or a training checkpoint with other objects beside the
    tensors. Before 2026-11-29 torch's first line came through, escape codes and all: "Weights only
    load failed. This file can still be loaded, to do so you have two options, \x1b[1mdo those
    steps only if you trust the source of the checkpoint\x1b[0m." (the options cut off)."""
    from lua_fast.files import read_latents

    if holds == "module":
        obj, needs = LUA(tiny_config(4)), "lua_fast.reference.model.LUA"
    else:
        obj, needs = {"params_ema": tiny_sd, "latents": torch.ones(1, 4, 2, 2), "opt": _Pickled()}, \
            f"{__name__}._Pickled"
    path = tmp_path / "lua.pth"
    torch.save(obj, path)
    says = f"it holds pickled Python objects, not only tensors: loading it needs {needs} "
    with pytest.raises(lua_fast.CheckpointError, match=re.escape(f"{path}: {says}")) as caught:
        lua_fast.load(path)
    assert "\x1b" not in str(caught.value) and "weights_only=False" in str(caught.value)
    with pytest.raises(lua_fast.InputError, match=re.escape(f"could not be read as a latents file ({says}")):
        read_latents(path)


def test_derived_buffers_are_optional(tiny_sd):
    learned = {k: v for k, v in tiny_sd.items() if not k.endswith(("relative_position_index", "attn_mask"))}
    assert len(learned) < len(tiny_sd)
    _assert_same_model(lua_fast.load(learned), tiny_sd)


@pytest.mark.parametrize("dtype", [torch.int32, torch.int16, torch.uint8])
def test_a_narrow_integer_index_loads_as_the_spec_index(tiny_sd, dtype):
    """Any integer dtype holding the right values is accepted; the model then uses the spec's int64
    index (a uint8 one kept as is would index the bias table as a boolean mask: an IndexError, or
    wrong values where the sizes happen to agree; found by the fuzzer, seed 108)."""
    narrow = {k: v.to(dtype) if k.endswith("relative_position_index") else v for k, v in tiny_sd.items()}
    up = lua_fast.load(narrow)
    indices = [b for name, b in up.reference_model.named_buffers() if name.endswith("relative_position_index")]
    assert indices and all(b.dtype == torch.int64 for b in indices)
    _assert_same_model(up, tiny_sd)


def test_half_precision_checkpoint_is_upcast(tiny_sd):
    half = {k: v.half() if v.is_floating_point() else v for k, v in tiny_sd.items()}
    up = lua_fast.load(half)
    assert up.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in up.model.parameters())
    rounded = {k: v.float() if v.is_floating_point() else v for k, v in half.items()}
    _assert_same_model(up, rounded)


def test_load_does_not_alias_the_callers_tensors(tiny_sd):
    up = lua_fast.load(tiny_sd)
    x = torch.randn(1, 4, 8, 8)
    before = up.upscale(x)
    tiny_sd["conv_first.weight"].add_(1.0)
    assert torch.equal(up.upscale(x), before)


def test_module_strict_load_of_released_format(tiny_sd):
    model = LUA(tiny_config())
    result = model.load_state_dict(tiny_sd, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    x = torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        assert torch.equal(model(x)[2], lua_fast.load(tiny_sd).upscale(x))


@pytest.mark.parametrize("prefix", ["module.", "_orig_mod.", "module._orig_mod."])
def test_keys_under_a_training_wrappers_prefix_load(tmp_path, prefix):
    """A fine-tune saved from DataParallel / DDP ("module.", stripped by BasicSR's own loader too) or
    from a torch.compile'd module ("_orig_mod."): the prefix every key carries is dropped."""
    sd = random_state_dict(tiny_config(), seed=8)
    z = torch.randn(1, 4, 9, 7)
    want = lua_fast.load(sd).upscale(z)
    wrapped = {prefix + k: v for k, v in sd.items()}
    assert torch.equal(lua_fast.load(wrapped).upscale(z), want)
    torch.save({"params_ema": wrapped}, tmp_path / "w.pth")
    assert torch.equal(lua_fast.load(str(tmp_path / "w.pth")).upscale(z), want)


@pytest.mark.parametrize("backend", ["reference", "torch", "triton"])
def test_an_upscaler_its_backend_module_and_their_state_dicts_load(tmp_path, backend):
    """What a user holds after ``load``: the Upscaler, ``up.model`` (the backend's module, which
    keeps the reference as ``module`` / ``model``), its state dict saved with torch.save, and the
    state dict of ``torch.compile(up.model)``. Before 2026-11-29 only the reference backend's loaded;
    the others were "not a LUA checkpoint" or a hint to strip 'model.' by hand."""
    sd = random_state_dict(tiny_config(), seed=9)
    up = lua_fast.load(sd, backend=backend)
    z = torch.randn(2, 4, 9, 7)
    want = lua_fast.load(sd).upscale(z)
    torch.save(up.model.state_dict(), tmp_path / "model.pth")
    compiled = {"_orig_mod." + k: v for k, v in up.model.state_dict().items()}  # torch.compile's keys
    for source in (up, up.model, up.model.state_dict(), str(tmp_path / "model.pth"), compiled,
                   {"model." + k: v for k, v in sd.items()}):
        assert torch.equal(lua_fast.load(source).upscale(z), want)
    assert lua_fast.load(up, precision="bf16").dtype == torch.bfloat16 and up.dtype == torch.float32
    package = lua_fast.Upscaler.from_runner(up.model, up.config, up.device, up.precision, backend)  # as a .pt2 is
    with pytest.raises(lua_fast.InputError, match="an exported package holds no weights"):
        lua_fast.load(package)


def test_a_prefix_on_some_keys_or_of_another_wrapper_is_refused_with_a_hint():
    sd = random_state_dict(tiny_config(), seed=8)
    partly = {("module." + k if k.startswith("layers.") else k): v for k, v in sd.items()}
    with pytest.raises(lua_fast.CheckpointError, match="no 'layers.\\*' keys"):
        lua_fast.load(partly)
    with pytest.raises(lua_fast.CheckpointError, match="every key starts with 'model.net.'"):
        lua_fast.load({"model.net." + k: v for k, v in sd.items()})
