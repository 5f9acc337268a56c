"""lua_fast.integrations.diffusers with tiny AutoencoderKLs built from configs (no downloads)."""

import pytest
import torch

diffusers = pytest.importorskip("diffusers", reason="diffusers is an optional extra (pip install diffusers)")

import lua_fast  # noqa: E402
from lua_fast import LUAConfig  # noqa: E402
from lua_fast.integrations import diffusers as integ  # noqa: E402
from lua_fast.reference import LUA  # noqa: E402

FLUX_VAE = dict(latent_channels=16, scaling_factor=0.3611, shift_factor=0.1159, use_quant_conv=False,
                use_post_quant_conv=False)
SDXL_MEAN = [0.1, -0.2, 0.3, 0.05]
SDXL_STD = [0.9, 1.1, 0.8, 1.2]


def tiny_vae(**config):
    """Four blocks (three downsamples: the 8x scale factor of the real VAEs), random weights."""
    torch.manual_seed(0)
    return diffusers.AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(8, 8, 16, 16), layers_per_block=1,
        norm_num_groups=8, **config,
    ).eval()


def upscaler(channels):
    torch.manual_seed(1)
    return lua_fast.load(LUA(LUAConfig.small(channels)).state_dict())


def test_flux_pack_unpack_round_trip_and_layout():
    z = torch.randn(2, 16, 6, 10)
    packed = integ.pack_flux_latents(z)
    assert packed.shape == (2, 15, 64)
    # Patch (i, j), channel c, sub-position (dy, dx) sits at feature c*4 + dy*2 + dx.
    assert torch.equal(packed[1, 1 * 5 + 3, 7 * 4 + 1 * 2 + 0], z[1, 7, 2 * 1 + 1, 2 * 3 + 0])
    assert torch.equal(integ.unpack_flux_latents(packed, 48, 80), z)
    with pytest.raises(ValueError, match="do not match a 64x80 image"):
        integ.unpack_flux_latents(packed, 64, 80)


@pytest.mark.parametrize("family,vae_config", [
    ("flux", FLUX_VAE),
    ("sd3", FLUX_VAE),
    ("sdxl", dict(latent_channels=4, scaling_factor=0.13025)),
    ("sdxl", dict(latent_channels=4, scaling_factor=0.13025, latents_mean=SDXL_MEAN, latents_std=SDXL_STD)),
], ids=["flux", "sd3", "sdxl", "sdxl-mean-std"])
def test_scaling_round_trips(family, vae_config):
    vae = tiny_vae(**vae_config)
    c = vae.config.latent_channels
    z = torch.randn(2, c, 6, 10, dtype=torch.float64)
    raw = integ.to_raw_latents(z, vae, family)
    torch.testing.assert_close(integ.from_raw_latents(raw, vae, family), z)
    cfg = vae.config
    if family in ("flux", "sd3"):
        torch.testing.assert_close(raw, z / cfg.scaling_factor + cfg.shift_factor)
    elif cfg.latents_mean is not None:
        mean = torch.tensor(SDXL_MEAN, dtype=z.dtype).view(1, 4, 1, 1)
        std = torch.tensor(SDXL_STD, dtype=z.dtype).view(1, 4, 1, 1)
        torch.testing.assert_close(raw, z * std / cfg.scaling_factor + mean)
    else:
        torch.testing.assert_close(raw, z / cfg.scaling_factor)
    if family == "flux":
        packed = integ.from_raw_latents(raw, vae, "flux", pack=True)
        torch.testing.assert_close(integ.to_raw_latents(packed, vae, "flux", height=48, width=80), raw)


def test_flux_pipeline_latents_to_decoded_2x_image():
    vae = tiny_vae(**FLUX_VAE)
    up = upscaler(16)
    packed = integ.pack_flux_latents(torch.randn(1, 16, 6, 10))  # what a 48x80 FLUX run returns
    raw2x, image = integ.upscale_pipeline_latents(up, packed, vae, "flux", height=48, width=80, decode_image=True)
    assert raw2x.shape == (1, 16, 12, 20) and raw2x.dtype == torch.float32
    assert image.shape == (1, 3, 96, 160) and torch.isfinite(image).all()
    assert not raw2x.is_inference() and not image.is_inference()  # the pipeline may update them in place
    raw = integ.to_raw_latents(packed, vae, "flux", height=48, width=80)
    assert torch.equal(raw2x, up.upscale(raw))


def test_sdxl_dtype_handling_and_tiling_passthrough():
    vae = tiny_vae(latent_channels=4, scaling_factor=0.13025).to(torch.bfloat16)
    up = upscaler(4)
    z = torch.randn(2, 4, 9, 7, dtype=torch.bfloat16)  # pipelines often hand back half-precision latents
    raw4x = integ.upscale_pipeline_latents(up, z, vae, "sdxl", scale=4)
    assert raw4x.shape == (2, 4, 36, 28) and raw4x.dtype == torch.float32  # the upscaler's dtype
    image = integ.decode(vae, raw4x)
    assert image.shape == (2, 3, 288, 224) and image.dtype == torch.bfloat16
    tiled = integ.upscale_pipeline_latents(up, z, vae, "sdxl", tile=8, overlap=0)  # (window 8: at most 0)
    assert tiled.shape == (2, 4, 18, 14)


def test_errors():
    vae = tiny_vae(**FLUX_VAE)
    with pytest.raises(ValueError, match="unknown pipeline family 'sd15'"):
        integ.to_raw_latents(torch.randn(1, 16, 4, 4), vae, "sd15")
    with pytest.raises(ValueError, match="need the image height and width"):
        integ.to_raw_latents(torch.randn(1, 4, 64), vae, "flux")
    with pytest.raises(ValueError, match="even latent sides"):
        integ.pack_flux_latents(torch.randn(1, 16, 5, 4))


def test_an_fp16_vae_that_asks_for_it_decodes_in_fp32():
    """diffusers' SDXL pipelines decode in float32 when an fp16 VAE's config sets force_upcast (SDXL's
    VAE overflows fp16: NaN images); decode() does the same and leaves the VAE as it found it."""
    vae16 = tiny_vae(latent_channels=4, scaling_factor=0.13025).half()  # force_upcast: AutoencoderKL's default
    assert vae16.config.force_upcast
    vae32 = tiny_vae(latent_channels=4, scaling_factor=0.13025).half().float()  # the same weights in fp32
    raw = torch.randn(1, 4, 6, 5)
    image = integ.decode(vae16, raw)
    assert image.dtype == torch.float32 and torch.isfinite(image).all()
    assert torch.equal(image, integ.decode(vae32, raw))
    assert vae16.dtype == torch.float16 and all(p.dtype == torch.float16 for p in vae16.parameters())
    assert integ.decode(vae16, raw, upcast=False).dtype == torch.float16
    vae16.register_to_config(force_upcast=False)  # e.g. the fp16-fix VAE: decoded in fp16, as the pipelines do
    assert integ.decode(vae16, raw).dtype == torch.float16
    up = upscaler(4)
    _, piped = integ.upscale_pipeline_latents(up, raw[..., :4, :4], vae16, "sdxl", decode_image=True,
                                              upcast_vae=True)
    assert piped.dtype == torch.float32


def test_several_scales_decode_to_a_dict_of_images():
    """scale=(2, 4) returns {scale: latents} as Upscaler.upscale does; decode_image=True decodes each
    (before 2026-11-29: AttributeError, 'dict' object has no attribute 'to', inside decode)."""
    vae = tiny_vae(**FLUX_VAE)
    up = upscaler(16)
    packed = integ.pack_flux_latents(torch.randn(1, 16, 6, 4))
    raws, images = integ.upscale_pipeline_latents(up, packed, vae, "flux", scale=(2, 4), height=48, width=32,
                                                  decode_image=True)
    assert sorted(raws) == sorted(images) == [2, 4]
    for s in (2, 4):
        assert raws[s].shape == (1, 16, 6 * s, 4 * s)
        assert images[s].shape == (1, 3, 48 * s, 32 * s)
        assert torch.equal(images[s], integ.decode(vae, raws[s]))


def test_family_names_in_any_case():
    vae = tiny_vae(**FLUX_VAE)
    z = torch.randn(1, 16, 4, 6)
    packed = integ.pack_flux_latents(z)
    for name in ("FLUX", "Flux"):
        assert torch.equal(integ.to_raw_latents(packed, vae, name, height=32, width=48),
                           integ.to_raw_latents(packed, vae, "flux", height=32, width=48))
    assert torch.equal(integ.from_raw_latents(z, vae, "SD3"), integ.from_raw_latents(z, vae, "sd3"))


def test_bf16_pipeline_latents_are_not_rounded_for_an_fp32_upscaler():
    """FLUX pipelines run in bfloat16 and hand back bfloat16 latents; the upscaler's default dtype is
    fp32. The scale and shift run in fp32 then, not in bfloat16 (whose rounding after the shift
    was the raw latents' largest error: 2.5e-3 relative, against 4e-8 in fp32)."""
    vae = tiny_vae(**FLUX_VAE)
    up = upscaler(16)
    packed = integ.pack_flux_latents(torch.randn(1, 16, 6, 4)).to(torch.bfloat16)
    got = integ.upscale_pipeline_latents(up, packed, vae, "flux", height=48, width=32)
    assert torch.equal(got, up.upscale(integ.to_raw_latents(packed.float(), vae, "flux", height=48, width=32)))
    # what each dtype's scale-and-shift costs, against float64
    exact = integ.to_raw_latents(packed.double(), vae, "flux", height=48, width=32)
    for dtype, low, high in ((torch.float32, 0, 1e-7), (torch.bfloat16, 1e-4, 1e-2)):
        raw = integ.to_raw_latents(packed.to(dtype), vae, "flux", height=48, width=32).double()
        assert low <= (raw - exact).norm() / exact.norm() <= high, dtype


@pytest.mark.parametrize("family,vae_config", [
    ("flux", FLUX_VAE),
    ("sdxl", dict(latent_channels=4, scaling_factor=0.13025)),
    ("sdxl", dict(latent_channels=4, scaling_factor=0.13025, latents_mean=SDXL_MEAN, latents_std=SDXL_STD)),
], ids=["flux", "sdxl", "sdxl-mean-std"])
def test_the_family_is_read_from_the_vae_and_a_wrong_one_raises(family, vae_config):
    """family=None follows the VAE's config; a named family that does not match it raises (before
    2026-11-29 "sdxl" with FLUX's VAE dropped its shift_factor: every raw latent 0.1159 off, silently)."""
    vae = tiny_vae(**vae_config)
    c = vae.config.latent_channels
    z = torch.randn(1, c, 4, 6, dtype=torch.float64)
    assert torch.equal(integ.to_raw_latents(z, vae), integ.to_raw_latents(z, vae, family))
    assert torch.equal(integ.from_raw_latents(z, vae), integ.from_raw_latents(z, vae, family))
    if family == "flux":
        packed = integ.pack_flux_latents(z)
        assert torch.equal(integ.to_raw_latents(packed, vae, height=32, width=48),
                           integ.to_raw_latents(packed, vae, "flux", height=32, width=48))
        assert torch.equal(integ.from_raw_latents(z, vae, pack=True), integ.from_raw_latents(z, vae, "flux", pack=True))
        with pytest.raises(ValueError, match="has shift_factor=0.1159"):
            integ.to_raw_latents(z, vae, "sdxl")
    elif vae.config.latents_mean is not None:
        for wrong in ("flux", "sd3"):
            with pytest.raises(ValueError, match="ignores latents_mean / latents_std"):
                integ.from_raw_latents(z, vae, wrong)
    up = upscaler(c)
    assert torch.equal(integ.upscale_pipeline_latents(up, z.float(), vae), integ.upscale_pipeline_latents(up, z.float(), vae, family))


def test_wrong_inputs_raise_input_errors_and_decode_is_checked_before_the_upscale(monkeypatch):
    """Each of these was another exception before 2026-11-29 (AttributeError, TypeError, a
    broadcasting RuntimeError, an unpacking ValueError), and ``decode_image=True`` with the VAE's
    config instead of the VAE failed only after the upscale had run."""
    vae = tiny_vae(**FLUX_VAE)
    z = torch.randn(1, 16, 4, 6)
    for wrong in (z.numpy(), z.tolist()):
        for call in (lambda: integ.to_raw_latents(wrong, vae, "flux"),
                     lambda: integ.from_raw_latents(wrong, vae, "flux"),
                     lambda: integ.pack_flux_latents(wrong),
                     lambda: integ.unpack_flux_latents(wrong, 32, 48),
                     lambda: integ.upscale_pipeline_latents(upscaler(16), wrong, vae, "flux")):
            with pytest.raises(lua_fast.InputError, match="must be a torch.Tensor"):
                call()
    with pytest.raises(lua_fast.InputError, match=r"takes \(B, C, h, w\)"):
        integ.pack_flux_latents(z[0])
    with pytest.raises(lua_fast.InputError, match=r"raw latents must be \(B, C, h, w\)"):
        integ.from_raw_latents(z[0], vae, "flux", pack=True)
    for config in ({"shift_factor": 0.1}, {"scaling_factor": None, "shift_factor": 0.1},
                   {"scaling_factor": 0, "shift_factor": 0.1}, {"scaling_factor": "0.3", "shift_factor": 0.1}):
        for call in (integ.to_raw_latents, integ.from_raw_latents):
            with pytest.raises(lua_fast.InputError, match="positive scaling_factor"):
                call(z, config, "sd3")
    stats = dict(scaling_factor=0.5, latents_mean=SDXL_MEAN, latents_std=SDXL_STD)
    for call in (integ.to_raw_latents, integ.from_raw_latents):
        with pytest.raises(lua_fast.InputError, match="4 / 4 entries but the latents have 16 channels"):
            call(z, stats, "sdxl")

    up = upscaler(16)
    ran = []
    monkeypatch.setattr(type(up), "upscale", lambda self, *a, **k: ran.append(1))
    for not_a_vae in (vae.config, dict(FLUX_VAE)):
        with pytest.raises(lua_fast.InputError, match=r"needs the VAE itself .* got"):
            integ.upscale_pipeline_latents(up, z, not_a_vae, "flux", decode_image=True)
        with pytest.raises(lua_fast.InputError, match="needs the VAE itself"):
            integ.decode(not_a_vae, z)
    assert ran == []
