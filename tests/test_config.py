"""LUAConfig presets, validation and inference from state dicts."""

import pytest
import torch

from lua_fast import ConfigError, LUAConfig
from lua_fast.checkpoint import expected_shapes
from conftest import random_state_dict, tiny_config


def meta_state_dict(config):
    return {k: torch.empty(v, device="meta") for k, v in expected_shapes(config).items()}


def test_presets():
    flux = LUAConfig.flux()
    assert (flux.in_channels, flux.out_channels, flux.embed_dim) == (16, 16, 360)
    assert flux.depths == (6,) * 6 and flux.num_heads == (12,) * 6
    assert (flux.window_size, flux.mlp_ratio, flux.head_width, flux.img_size) == (16, 2.0, 256, 32)
    assert flux.heads == (("x2", 2), ("x4", 4)) and flux.scales == (2, 4)
    assert flux.embed_dim // flux.num_heads[0] == 30
    sdxl = LUAConfig.sdxl()
    assert (sdxl.in_channels, sdxl.out_channels) == (4, 4)
    assert sdxl.embed_dim == 360 and sdxl.depths == flux.depths


@pytest.mark.parametrize(
    "config",
    [
        LUAConfig.flux(),
        LUAConfig.sdxl(),
        LUAConfig.small(),
        tiny_config(3, depths=(1,), num_heads=(4,)),
        tiny_config(4, depths=(3, 2, 1), num_heads=(1, 2, 4), mlp_ratio=1.5),
        tiny_config(16, window_size=2, img_size=6, heads=(("x2", 2),)),
        tiny_config(16, heads=(("x4", 4),), head_width=12, mlp_ratio=4.0),
        tiny_config(8, heads=(("x2", 2), ("x4", 4), ("x8", 8)), window_size=8, img_size=24),
        tiny_config(4, heads={"up": 2}),
    ],
    ids=lambda c: f"D{c.embed_dim}-d{c.depths}-h{c.num_heads}-w{c.window_size}-{c.heads}",
)
def test_from_state_dict_round_trip(config):
    inferred = LUAConfig.from_state_dict(meta_state_dict(config))
    if not any(d > 1 for d in config.depths):  # no shifted block: no mask to read img_size from
        config = LUAConfig(**{**config.to_dict(), "img_size": None})
    assert inferred == config


def test_scale_of_reads_head_names_and_integral_values():
    import numpy as np

    c = LUAConfig.flux()
    assert [c.scale_of(k) for k in ("x2", " X4 ", 2, np.int64(4), np.int32(2))] == [2, 4, 2, 4, 2]
    assert [c.scale_of(k) for k in ("x3", 3, 2.0, True, None, "2", torch.tensor(2))] == [None] * 7


def test_from_state_dict_reads_any_checkpoint_load_takes(tmp_path):
    """README: "reads a configuration back from any checkpoint". The released file as torch.load
    returns it (under params_ema) said "key 'conv_first.weight' is missing" before 2026-11-29, as did
    a DataParallel prefix, a path, a module and an Upscaler."""
    import lua_fast
    from lua_fast.reference import LUA

    config = tiny_config()
    sd = random_state_dict(config, seed=4)
    torch.save({"params_ema": sd}, tmp_path / "w.pth")
    module = LUA(config)
    module.load_state_dict(sd)
    for source in (sd, {"params_ema": sd}, {"module." + k: v for k, v in sd.items()}, tmp_path / "w.pth",
                   str(tmp_path / "w.pth"), (tmp_path / "w.pth").read_bytes(), module, lua_fast.load(sd)):
        assert LUAConfig.from_state_dict(source) == config
    with pytest.raises(ConfigError, match="key 'conv_first.weight' is missing"):
        LUAConfig.from_state_dict({"x": torch.zeros(1)})
    with pytest.raises(lua_fast.CheckpointError, match="not a LUA checkpoint"):
        LUAConfig.from_state_dict(None)


@pytest.mark.parametrize("embed_dim, mlp_ratio", [(7, 8.75), (15, 1.5), (7, 16.5), (33, 4.9), (360, 2.0)])
def test_any_mlp_width_reads_back(embed_dim, mlp_ratio):
    """The ratio is read back as fc1's width / embed_dim; for 7 and 61 (mlp_ratio 8.75) the quotient
    is one ulp short (int(7 * (61 / 7)) is 60), and before 2026-11-29 such a checkpoint was refused
    ("mlp.fc1 width 61 is not int(embed_dim * ratio)"). The ratio itself cannot be recovered, only
    a ratio that gives the same width."""
    config = tiny_config(4, embed_dim=embed_dim, num_heads=(1, 1), mlp_ratio=mlp_ratio)
    inferred = LUAConfig.from_state_dict(meta_state_dict(config))
    assert inferred.mlp_hidden == config.mlp_hidden
    assert LUAConfig(**{**inferred.to_dict(), "mlp_ratio": mlp_ratio}) == config


def test_derived_buffers_are_not_needed_for_inference():
    config = LUAConfig.small()
    sd = {k: v for k, v in meta_state_dict(config).items() if not k.endswith(("_index", "attn_mask"))}
    assert LUAConfig.from_state_dict(sd) == LUAConfig(**{**config.to_dict(), "img_size": None})


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(embed_dim=30, num_heads=(4,), depths=(2,)), "not divisible"),
        (dict(depths=(2, 2), num_heads=(2,)), "num_heads has 1 entries"),
        (dict(heads=(("x3", 3),)), "powers of two"),
        (dict(heads=(("x2", 2), ("y2", 2))), "unique"),
        (dict(window_size=16, img_size=24), "multiple of window_size"),
        (dict(window_size=16, img_size=16), "larger than it"),
        (dict(depths=()), "depths"),
        (dict(mlp_ratio=0.0), "mlp_ratio"),
    ],
)
def test_invalid_configs(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        LUAConfig(**kwargs)


def _tiny_sd():
    return random_state_dict(tiny_config())


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda sd: sd.pop("conv_first.weight"), "conv_first.weight"),
        (lambda sd: [sd.pop(k) for k in list(sd) if k.startswith("heads.")], "no 'heads"),
        (lambda sd: [sd.pop(k) for k in list(sd) if k.startswith("layers.")], "no 'layers"),
        (
            lambda sd: sd.__setitem__(
                "layers.1.residual_group.blocks.1.attn.relative_position_bias_table", torch.zeros(49, 3)
            ),
            r"layers.1 mixes head counts",
        ),
        (lambda sd: sd.__setitem__("heads.x2.upsample.2.weight", torch.zeros(32, 8, 3, 3)), "'x2' has 2 upsample"),
        (lambda sd: sd.__setitem__("heads.x2.conv_before.0.weight", torch.zeros(9, 16, 3, 3)), "feature width"),
        (lambda sd: sd.__setitem__("heads.x4.conv_last.weight", torch.zeros(3, 8, 3, 3)), "output channels"),
        (
            lambda sd: [sd.pop(k) for k in list(sd) if k.startswith("layers.1.residual_group.blocks.0.")],
            r"block indices of layers.1",
        ),
        (
            lambda sd: sd.__setitem__("layers.0.residual_group.blocks.1.attn_mask", torch.zeros(3, 16, 16)),
            "not a square training size",
        ),
    ],
)
def test_from_state_dict_names_the_inconsistency(mutate, match):
    sd = _tiny_sd()
    mutate(sd)
    with pytest.raises(ConfigError, match=match):
        LUAConfig.from_state_dict(sd)


def _as_swinir(sd):
    """SwinIR's layout (the image super-resolution model LUA's trunk comes from): the same trunk
    keys, one top-level pixel-space head."""
    heads = [k for k in sd if k.startswith("heads.")]
    for k in heads:
        head, rest = k.split(".", 2)[1:]
        if head == "x2":
            sd[rest.replace("conv_before", "conv_before_upsample")] = sd[k]
        del sd[k]


def test_a_swinir_checkpoint_is_named_as_such():
    """Before 2026-11-29 only "no 'heads.*' keys": a SwinIR checkpoint (pixels, 3 channels) shares
    LUA's trunk keys, so the message now says what the file is."""
    sd = _tiny_sd()
    _as_swinir(sd)
    with pytest.raises(ConfigError, match="no 'heads.*SwinIR checkpoint, which works on pixels"):
        LUAConfig.from_state_dict(sd)
    sd = _tiny_sd()
    [sd.pop(k) for k in list(sd) if k.startswith("heads.")]
    with pytest.raises(ConfigError, match=r"no upsampling head\)$"):  # no SwinIR head: no such claim
        LUAConfig.from_state_dict(sd)


def test_a_problem_shared_by_every_layer_is_reported_once():
    with pytest.raises(ConfigError) as info:
        LUAConfig(in_channels=4, out_channels=4, embed_dim=15, depths=(2, 2, 2), num_heads=(2, 2, 2), window_size=8)
    assert str(info.value) == "invalid LUAConfig: embed_dim 15 is not divisible by num_heads 2"
