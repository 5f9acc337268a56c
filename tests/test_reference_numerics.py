"""The reference model and the public API against the independent slow oracle."""

import pytest
import torch

import lua_fast
from lua_fast.reference import LUA, windows
from slow_lua import slow_lua
from conftest import random_state_dict, rel_err, tiny_config


@pytest.mark.parametrize("channels", [4, 16])
@pytest.mark.parametrize("size", [(8, 8), (7, 10), (12, 5)])
def test_upscale_matches_slow_oracle(channels, size, backend):
    config = tiny_config(channels)
    sd = random_state_dict(config, seed=channels + size[0])
    x = torch.randn(2, channels, *size)
    out = lua_fast.load(sd, backend=backend).upscale(x, scale=(2, 4))
    assert sorted(out) == [2, 4]
    for scale in (2, 4):
        ref = slow_lua(sd, x, scale, window=4, heads=config.num_heads, depths=config.depths)
        assert out[scale].shape == (2, channels, scale * size[0], scale * size[1])
        assert out[scale].dtype == torch.float32
        assert rel_err(out[scale], ref) <= 1e-5


def test_window_8_odd_size_matches_slow_oracle(backend):
    config = tiny_config(4, window_size=8, img_size=16, depths=(2,), num_heads=(2,))
    sd = random_state_dict(config, seed=3)
    x = torch.randn(1, 4, 10, 17)
    out = lua_fast.load(sd, backend=backend).upscale(x, scale=2)
    ref = slow_lua(sd, x, 2, window=8, heads=(2,), depths=(2,))
    assert rel_err(out, ref) <= 1e-5


@pytest.mark.parametrize(
    "case",
    [
        # Logits spanning hundreds: the exact -100 (not -inf) mask value changes the output.
        dict(table_std=60.0, amplitude=1.0),
        # Near-constant tokens: LayerNorm's eps=1e-5 dominates the variance.
        dict(table_std=1.0, amplitude=1e-3),
    ],
    ids=["large-logits", "tiny-latents"],
)
def test_extreme_regimes_match_slow_oracle(case, backend):
    config = tiny_config(4)
    sd = random_state_dict(config, seed=11, table_std=case["table_std"])
    x = case["amplitude"] * torch.randn(2, 4, 8, 12)
    out = lua_fast.load(sd, backend=backend).upscale(x, scale=2)
    ref = slow_lua(sd, x, 2, window=4, heads=config.num_heads, depths=config.depths)
    assert rel_err(out, ref) <= 1e-5


def test_model_forward_returns_every_scale_from_one_trunk_pass(monkeypatch):
    config = tiny_config()
    model = LUA(config)
    model.load_state_dict(random_state_dict(config), strict=True)
    calls = []
    trunk = model.trunk
    monkeypatch.setattr(model, "trunk", lambda x: calls.append(1) or trunk(x))
    x = torch.randn(1, 4, 8, 8)
    out = model(x, scales=(4, 2))
    assert len(calls) == 1
    assert sorted(out) == [2, 4]
    torch.testing.assert_close(out[2], model(x, scales=(2,))[2], rtol=0, atol=0)
    with pytest.raises(ValueError, match="scale 3"):
        model(x, scales=(3,))


def test_shift_mask_is_not_a_no_op(monkeypatch, backend):
    """Dropping the shift mask must change the output, so the mask path is really exercised."""
    from lua_fast.ops import window_ops

    config = tiny_config()
    sd = random_state_dict(config, seed=5)
    x = torch.randn(1, 4, 8, 12)
    up = lua_fast.load(sd, backend=backend)
    with_mask = up.upscale(x)
    real, real_ops = windows.shift_mask, window_ops.window_mask
    monkeypatch.setattr(windows, "shift_mask", lambda *a, **k: torch.zeros_like(real(*a, **k)))
    monkeypatch.setattr(window_ops, "window_mask", lambda *a, **k: [torch.zeros_like(real_ops(*a, **k)[0])])
    assert rel_err(lua_fast.load(sd, backend=backend).upscale(x), with_mask) > 1e-3


def test_noncontiguous_and_other_float_dtype_inputs():
    config = tiny_config()
    sd = random_state_dict(config, seed=7)
    up = lua_fast.load(sd)
    x = torch.randn(2, 6, 9, 4).permute(0, 3, 1, 2)  # (2, 4, 6, 9), channels-last strides
    assert not x.is_contiguous()
    ref = up.upscale(x.contiguous())
    torch.testing.assert_close(up.upscale(x), ref, rtol=0, atol=0)
    out64 = up.upscale(x.double())  # cast to the upscaler's dtype
    assert out64.dtype == torch.float32
    torch.testing.assert_close(out64, ref, rtol=0, atol=0)


def test_bfloat16_upscaler_is_close_to_fp32():
    config = tiny_config()
    sd = random_state_dict(config, seed=8)
    x = torch.randn(1, 4, 8, 8)
    ref = lua_fast.load(sd).upscale(x)
    up = lua_fast.load(sd, dtype="bf16")
    out = up.upscale(x)
    assert up.dtype == torch.bfloat16 and out.dtype == torch.bfloat16
    assert rel_err(out, ref) < 5e-2


def test_deterministic(backend):
    sd = random_state_dict(tiny_config(), seed=9)
    up = lua_fast.load(sd, backend=backend)
    x = torch.randn(2, 4, 9, 7)
    assert torch.equal(up.upscale(x), up.upscale(x))
