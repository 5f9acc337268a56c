"""The ComfyUI node pack (issue 14) on CPU, against stand-ins of ComfyUI's modules (comfy_stubs/)."""

import importlib
import shutil
import sys
from pathlib import Path


import pytest
import torch
from safetensors.torch import save_file

import lua_fast
from lua_fast import InputError
from lua_fast.cli import main
from lua_fast.tiling import estimate_peak_bytes
from conftest import random_state_dict, rel_err, tiny_config

STUBS = Path(__file__).parent / "comfy_stubs"
CONFIG = tiny_config(4)


@pytest.fixture
def comfy(tmp_path, monkeypatch):
    """ComfyUI's modules (fresh stand-ins) importable, with a temporary models folder."""
    monkeypatch.syspath_prepend(str(STUBS))
    for name in ("folder_paths", "comfy", "comfy.model_management", "comfy.utils"):
        sys.modules.pop(name, None)
    import folder_paths
    from comfy import model_management, utils

    monkeypatch.setattr(folder_paths, "models_dir", str(tmp_path / "models"))
    (tmp_path / "models" / "latent_upscale_models").mkdir(parents=True)
    yield folder_paths, model_management, utils
    for name in ("folder_paths", "comfy", "comfy.model_management", "comfy.utils"):
        sys.modules.pop(name, None)


@pytest.fixture(scope="module")
def sd():
    return random_state_dict(CONFIG, seed=31)


@pytest.fixture(scope="module")
def up(sd):
    return lua_fast.load(sd)


def nodes():
    return importlib.import_module("lua_fast.integrations.comfyui.nodes")


def latent(batch=2, channels=4, h=9, w=10, dtype=torch.float32):
    z = torch.randn(batch, channels, h, w, generator=torch.Generator().manual_seed(4)).to(dtype)
    return {"samples": z, "batch_index": [3, 7][:batch], "noise_mask": torch.ones(batch, 1, h, w),
            "extra": "kept"}


def test_upscale_node_latent_dict_semantics(comfy, up):
    node = nodes().LUAUpscaleLatent()
    src = latent()
    original = dict(src)
    (out,) = node.upscale(up, src, "x2", "off", 64)
    assert out is not src and src == original  # the input dict is not modified
    # Everything but samples kept, as ComfyUI's LatentUpscaleBy does: its samplers resize noise_mask
    # to the latent (dropped before 2026-11-28: a masked second pass then denoised everything).
    assert set(out) == {"samples", "batch_index", "noise_mask", "extra"}
    assert out["batch_index"] == [3, 7] and out["extra"] == "kept" and out["noise_mask"] is src["noise_mask"]
    assert torch.equal(out["samples"], up.upscale(src["samples"], scale=2))  # no scaling applied
    (out4,) = node.upscale(up, src, "x4", "off", 64)
    assert out4["samples"].shape == (2, 4, 36, 40)


def test_a_head_the_model_lacks_or_a_latent_without_samples_is_named(comfy, sd):
    """A checkpoint with an x2 head only, asked for x4 (the node's list offers both): before
    2026-11-29 an AttributeError ("'str' object has no attribute 'bit_length'") from the memory
    estimate; a LATENT without 'samples' was a KeyError."""
    x2_only = lua_fast.load({k: v for k, v in sd.items() if not k.startswith("heads.x4.")})
    node = nodes().LUAUpscaleLatent()
    with pytest.raises(InputError, match=r"this LUA model has heads \['x2'\], not 'x4'"):
        node.upscale(x2_only, latent(), "x4", "off", 64)
    assert node.upscale(x2_only, latent(), "x2", "off", 64)[0]["samples"].shape == (2, 4, 18, 20)
    with pytest.raises(InputError, match=r"a LATENT is a dict holding 'samples'; got dict with \['noise_mask'\]"):
        node.upscale(x2_only, {"noise_mask": torch.ones(1)}, "x2", "off", 64)


def test_device_and_dtype_round_trip(comfy, up):
    _, mm, _ = comfy
    src = latent(dtype=torch.float16)
    (out,) = nodes().LUAUpscaleLatent().upscale(up, src, "x2", "off", 64)
    assert out["samples"].dtype == torch.float16 and out["samples"].device == mm.intermediate_device()
    want = up.upscale(src["samples"].float(), scale=2).half()
    assert torch.equal(out["samples"], want)
    # memory is requested from ComfyUI before the pass, at least the activation estimate
    need, device = mm.freed[-1]
    assert device == up.device
    assert need >= estimate_peak_bytes(up.config, 9, 10, (2,), batch=2, element_size=4) + 2 * 4 * 4 * 9 * 10 * 4


@pytest.mark.parametrize("channels,match", [(128, "16|4-channel .*128 channels \\(FLUX.2\\)"),
                                            (16, "takes 4-channel latents \\(SD1.5 / SDXL\\), but .* 16 channels")])
def test_channel_mismatch_is_a_clear_error(comfy, up, channels, match):
    with pytest.raises(InputError, match=match):
        nodes().upscale_latent_dict(up, latent(channels=channels))


def test_video_latents_are_refused(comfy, up):
    with pytest.raises(InputError, match="video latent"):
        nodes().upscale_latent_dict(up, {"samples": torch.randn(1, 4, 3, 8, 8)})


def test_tiling_modes_and_progress_bar(comfy, up):
    _, _, utils = comfy
    src = latent(h=24, w=40)
    out = nodes().upscale_latent_dict(up, src, "x2", "size", 16)
    assert torch.equal(out["samples"], up.upscale(src["samples"], scale=2, tile=16))
    bar = utils.bars[-1]
    assert bar.total > 1 and bar.updates[-1] == bar.total and bar.updates == sorted(bar.updates)
    auto = nodes().upscale_latent_dict(up, src, "x2", "auto", 16)  # CPU with RAM to spare: one pass
    assert torch.equal(auto["samples"], up.upscale(src["samples"], scale=2))
    with pytest.raises(InputError, match="tile must be an int >= the window size 4"):
        nodes().upscale_latent_dict(up, src, "x2", "size", 2)


def _device_holding(up, mm, monkeypatch, side: int) -> tuple[list, object]:
    """Make ``up`` raise ComfyUI's out-of-memory error above side x side latents. Returns the list
    the shapes it is asked for are appended to, and its real forward."""
    real, seen = up.model.forward, []

    def limited(x, scales):
        seen.append(tuple(x.shape[-2:]))
        if x.shape[-1] * x.shape[-2] > side * side:
            raise mm.OOM_EXCEPTION("CUDA out of memory (simulated)")
        return real(x, scales)

    monkeypatch.setattr(up.model, "forward", limited)
    return seen, real


def test_out_of_memory_retries_with_tiles(comfy, sd, monkeypatch):
    _, mm, utils = comfy
    up = lua_fast.load(sd)
    seen, real = _device_holding(up, mm, monkeypatch, 16)
    src = latent(batch=1, h=40, w=40)
    clears = mm.cache_clears
    out = nodes().upscale_latent_dict(up, src, "x2", "off", 64)
    # untiled, then tiles of 20 (still too big), then 8 (halved, a window multiple, >= 2 windows)
    assert seen[0] == (40, 40) and seen[1] == (20, 20) and set(seen[2:]) == {(8, 8)}
    assert mm.cache_clears >= clears + 2 and utils.bars  # emptied the cache per retry, showed progress
    monkeypatch.setattr(up.model, "forward", real)
    assert torch.equal(out["samples"], up.upscale(src["samples"], scale=2, tile=8))


def test_out_of_memory_retries_take_the_tile_of_least_work(comfy, sd, monkeypatch):
    """After an out-of-memory error the retry takes, up to half the latent, the tile of least work
    (as tile="auto" does): 64 x 64 at window 4 in 9 tiles of 28. Before 2026-11-29 it took the
    halved size, 32 (9 tiles too, the last overhanging by 24), which a device holding 28 x 28 failed,
    and then 16."""
    _, mm, _ = comfy
    up = lua_fast.load(sd)
    assert up.config.window_size == 4
    seen, real = _device_holding(up, mm, monkeypatch, 28)
    src = latent(batch=1, h=64, w=64)
    out = nodes().upscale_latent_dict(up, src, "x2", "off", 64)
    assert seen[0] == (64, 64) and set(seen[1:]) == {(28, 28)} and len(seen) == 1 + 9
    monkeypatch.setattr(up.model, "forward", real)
    assert torch.equal(out["samples"], up.upscale(src["samples"], scale=2, tile=28))


def test_out_of_memory_retries_a_batch_in_chunks_of_items(comfy, sd, monkeypatch):
    """A batch that runs out of memory is retried half at a time (the untiled result), as tile="auto"
    runs chunks; before 2026-11-29 the whole batch was tiled (here 4 x 20x20 tiles at batch 4)."""
    _, mm, _ = comfy
    up = lua_fast.load(sd)
    real, seen = up.model.forward, []

    def limited(x, scales):  # a device that holds two 40x40 latents
        seen.append((x.shape[0], *x.shape[-2:]))
        if x.shape[0] * x.shape[-1] * x.shape[-2] > 2 * 40 * 40:
            raise mm.OOM_EXCEPTION("CUDA out of memory (simulated)")
        return real(x, scales)

    monkeypatch.setattr(up.model, "forward", limited)
    src = latent(batch=4, h=40, w=40)
    out = nodes().upscale_latent_dict(up, src, "x2", "off", 64)
    assert seen == [(4, 40, 40), (2, 40, 40), (2, 40, 40)]
    monkeypatch.setattr(up.model, "forward", real)
    assert rel_err(out["samples"], up.upscale(src["samples"], scale=2)) < 1e-5


def test_a_pass_too_large_for_the_ram_tiles_on_the_cpu_whatever_the_tiling(comfy, up, monkeypatch):
    """With ComfyUI on the CPU (--cpu) a pass too large for the RAM raises nothing: the kernel's OOM
    killer ends ComfyUI. Before 2026-11-28 "auto" never tiled there and "off" ran the pass; both now
    tile within tile="auto"'s CPU budget."""
    from lua_fast import host_memory

    _, _, utils = comfy
    src = latent(batch=1, h=24, w=40)
    untiled = up.upscale(src["samples"], scale=2)
    activations = estimate_peak_bytes(up.config, 24, 40, (2,), batch=1, element_size=4)
    monkeypatch.setattr(host_memory, "cpu_memory_available", lambda: activations // 2)
    for tiling in ("off", "auto"):
        bars = len(utils.bars)
        out = nodes().upscale_latent_dict(up, src, "x2", tiling, 64)["samples"]
        assert out.shape == untiled.shape and not torch.equal(out, untiled), tiling
        # (a tiny random model with 4-pixel windows: small tiles, large seams)
        assert rel_err(out, untiled) < 0.25 and len(utils.bars) == bars + 1 and utils.bars[-1].total > 1, tiling
    monkeypatch.setattr(host_memory, "cpu_memory_available", lambda: 100 * activations)
    assert torch.equal(nodes().upscale_latent_dict(up, src, "x2", "off", 64)["samples"], untiled)


def test_the_cpu_allocators_refusal_retries_with_tiles(comfy, sd, monkeypatch):
    """Under `ulimit -v` PyTorch's CPU allocator raises a plain RuntimeError, not ComfyUI's
    OOM_EXCEPTION: "off" retries it with tiles too (before 2026-11-28 it surfaced); other errors
    still do."""
    up = lua_fast.load(sd)
    real = up.model.forward

    def limited(x, scales):
        if x.shape[-1] * x.shape[-2] > 16 * 16:
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't "
                               "allocate memory: you tried to allocate 123456789 bytes. Error code 12")
        return real(x, scales)

    monkeypatch.setattr(up.model, "forward", limited)
    src = latent(batch=1, h=40, w=40)
    out = nodes().upscale_latent_dict(up, src, "x2", "off", 64)
    monkeypatch.setattr(up.model, "forward", real)
    assert torch.equal(out["samples"], up.upscale(src["samples"], scale=2, tile=8))

    def broken(x, scales):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    monkeypatch.setattr(up.model, "forward", broken)
    with pytest.raises(RuntimeError, match="cannot be multiplied"):
        nodes().upscale_latent_dict(up, src, "x2", "off", 64)


def test_loader_and_upscale_end_to_end(comfy, sd, tmp_path):
    folder_paths, mm, _ = comfy
    torch.save({"params_ema": sd}, tmp_path / "models" / "latent_upscale_models" / "lua_tiny.pth")
    (tmp_path / "models" / "latent_upscale_models" / "notes.txt").write_text("not a model")
    # ComfyUI names safetensors ".sft" (its FLUX files): listed and loaded (by content) since 2026-11-28
    save_file(sd, str(tmp_path / "models" / "latent_upscale_models" / "lua_tiny.sft"))
    mod = nodes()
    spec = mod.LUALoader.INPUT_TYPES()["required"]
    assert spec["model_name"][0] == ["lua_tiny.pth", "lua_tiny.sft"]
    (model,) = mod.LUALoader().load("lua_tiny.sft", "auto", "fp32", "default")
    assert torch.equal(model.upscale(latent()["samples"]), lua_fast.load(sd).upscale(latent()["samples"]))
    assert spec["precision"][0] == ["mixed", "bf16", "fp16", "fp32"] and spec["device"][0][0] == "default"
    (model,) = mod.LUALoader().load("lua_tiny.pth", "auto", "fp32", "default")
    assert model.device == mm.get_torch_device() and model.config == CONFIG
    (out,) = mod.NODE_CLASS_MAPPINGS["LUAUpscaleLatent"]().upscale(model, latent(), "x2", "off", 64)
    assert torch.equal(out["samples"], lua_fast.load(sd).upscale(latent()["samples"], scale=2))
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        mod.LUALoader().load("missing.pth", "auto", "fp32", "default")


@pytest.mark.parametrize("capability, want", [((7, 5), torch.float16), ((6, 1), torch.float16),
                                               ((8, 6), torch.bfloat16), ((9, 0), torch.bfloat16)])
def test_mixed_computes_in_float16_on_gpus_without_bfloat16_tensor_cores(comfy, sd, tmp_path, monkeypatch,
                                                                         capability, want):
    """The node's default, "mixed", computed in bfloat16 everywhere: PyTorch emulates it (slowly) on
    a T4, V100, RTX 20xx or GTX 10xx, which have float16 tensor cores. lua_fast.load's default
    mixed dtype now follows the GPU, and the node leaves it to load. (The GPU is a stand-in.)"""
    from lua_fast.precision import default_mixed_dtype

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert default_mixed_dtype(torch.device("cuda", 0)) == want
    assert default_mixed_dtype(torch.device("cpu")) == torch.bfloat16
    _, mm, _ = comfy
    torch.save({"params_ema": sd}, tmp_path / "models" / "latent_upscale_models" / "lua_tiny.pth")
    mod = nodes()
    calls = []
    monkeypatch.setattr(mod, "load", lambda path, **kwargs: calls.append(kwargs))
    monkeypatch.setattr(mm, "torch_device", torch.device("cuda", 0))
    mod.LUALoader().load("lua_tiny.pth", "auto", "mixed", "default")
    assert calls[-1] == {"device": torch.device("cuda", 0), "backend": "auto", "precision": "mixed"}


def test_install_writes_a_working_shim(tmp_path, comfy, capsys):
    root = tmp_path / "ComfyUI"
    (root / "custom_nodes").mkdir(parents=True)
    (root / "models").mkdir()
    assert main(["comfyui", "install", str(root)]) == 0
    shim = root / "custom_nodes" / "lua_fast_nodes" / "__init__.py"
    assert shim.is_file() and (root / "models" / "latent_upscale_models").is_dir()
    namespace = {}
    exec(compile(shim.read_text(), str(shim), "exec"), namespace)  # what ComfyUI does on start
    assert set(namespace["NODE_CLASS_MAPPINGS"]) == {"LUALoader", "LUAUpscaleLatent"}
    assert main(["comfyui", "install", str(root)]) == 0  # idempotent
    shim.write_text("# someone else's node pack\n")
    assert main(["comfyui", "install", str(root)]) == 2  # not ours: refused without --force
    (tmp_path / "elsewhere").mkdir()
    assert main(["comfyui", "install", str(tmp_path / "elsewhere")]) == 2  # not a ComfyUI tree
    assert "does not look like a ComfyUI tree" in capsys.readouterr().err


def test_install_names_the_folder_to_pass_and_uninstall_removes_only_its_shim(tmp_path, comfy, capsys):
    """Before 2026-11-29 every wrong path said "does not look like a ComfyUI tree" (a missing one, a
    file, the tree's custom_nodes/ folder, the portable build's outer folder), and nothing removed
    the node pack."""
    root = tmp_path / "ComfyUI_windows_portable" / "ComfyUI"
    (root / "custom_nodes").mkdir(parents=True)
    (root / "models").mkdir()
    (tmp_path / "a_file").write_text("")
    for path, says in ((tmp_path / "missing", "missing does not exist; pass the ComfyUI folder"),
                       (tmp_path / "a_file", "a_file is a file; pass the ComfyUI folder"),
                       ("", "no ComfyUI folder given"),
                       (root / "custom_nodes", f"is not the ComfyUI folder itself, but {root} is: pass that"),
                       (root / "models", f"but {root} is: pass that"),
                       (root.parent, f"but {root} is: pass that")):
        for action in ("install", "uninstall"):
            assert main(["comfyui", action, str(path)]) == 2
            assert says in capsys.readouterr().err
    assert not (root / "custom_nodes" / "lua_fast_nodes").exists()

    shim_dir = root / "custom_nodes" / "lua_fast_nodes"
    assert main(["comfyui", "install", str(root)]) == 0
    (shim_dir / "__pycache__").mkdir()  # what ComfyUI's import leaves
    (root / "models" / "latent_upscale_models" / "lua_flux.pth").write_bytes(b"weights")
    capsys.readouterr()
    assert main(["comfyui", "uninstall", str(root)]) == 0
    assert f"removed {shim_dir}" in capsys.readouterr().out
    assert not shim_dir.exists() and (root / "models" / "latent_upscale_models" / "lua_flux.pth").is_file()
    assert main(["comfyui", "uninstall", str(root)]) == 0  # idempotent
    assert "nothing to remove" in capsys.readouterr().out

    shim_dir.mkdir()
    (shim_dir / "__init__.py").write_text("# someone else's node pack\n")
    assert main(["comfyui", "uninstall", str(root)]) == 2 and shim_dir.is_dir()
    assert "was not written by lua-fast" in capsys.readouterr().err
    assert main(["comfyui", "install", str(root), "--force"]) == 0
    (shim_dir / "extra.py").write_text("")  # the user's own file beside the shim stays
    assert main(["comfyui", "uninstall", str(root)]) == 2 and (shim_dir / "extra.py").is_file()
    assert "also holds extra.py" in capsys.readouterr().err
    shutil.rmtree(shim_dir)
    shim_dir.write_text("")  # a file of the shim's name: replaced with --force
    assert main(["comfyui", "install", str(root), "--force"]) == 0 and (shim_dir / "__init__.py").is_file()


@pytest.mark.parametrize("native", [False, True, None])
def test_mixed_runs_in_fp32_on_cpus_without_native_bfloat16(comfy, sd, tmp_path, monkeypatch, capsys, native):
    """The loader's default, "mixed", computes in bfloat16; on a CPU without native bfloat16 kernels
    (AVX2: most desktops) PyTorch's fallback loops ran it 43x slower than fp32 (47.0 s against 1.10 s
    for a 32x32 latent, measured with oneDNN held to AVX2). Since 2026-11-28 the default means fp32
    there; an explicit bf16 is kept (and warned about by lua_fast.load)."""
    import warnings

    from lua_fast import SlowPrecisionWarning, precision

    torch.save({"params_ema": sd}, tmp_path / "models" / "latent_upscale_models" / "lua_tiny.pth")
    monkeypatch.setattr(precision, "cpu_native_kernels", lambda dtype: native)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SlowPrecisionWarning)
        (model,) = nodes().LUALoader().load("lua_tiny.pth", "auto", "mixed", "default")
    assert model.precision.mode == ("fp32" if native is False else "mixed")
    assert ("no native bfloat16 kernels" in capsys.readouterr().out) == (native is False)
    if native is False:
        with pytest.warns(SlowPrecisionWarning, match="no native bfloat16 kernels"):
            (model,) = nodes().LUALoader().load("lua_tiny.pth", "auto", "bf16", "default")
        assert model.precision.mode == "bf16"


def test_tiles_of_a_given_size_ask_comfyui_for_one_tiles_memory(comfy, up):
    """With tiling "size" the node asks ComfyUI to free one tile's memory and the blend's, not the
    whole pass's (before 2026-11-29), which unloaded models, the sampler's among them, that the
    tiles left room for."""
    from lua_fast.tiling import blend_bytes

    _, mm, _ = comfy
    src = latent(batch=1, h=64, w=64)
    nodes().upscale_latent_dict(up, src, "x2", "off", 16)
    whole, _ = mm.freed[-1]
    nodes().upscale_latent_dict(up, src, "x2", "size", 14)  # (widened to 16, the window grid)
    need, _ = mm.freed[-1]
    assert need == estimate_peak_bytes(up.config, 16, 16, (2,)) + blend_bytes(1, 4, 64, 64, (2,), 4) < whole / 3
