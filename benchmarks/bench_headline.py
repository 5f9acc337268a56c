"""The paper's headline: upscale in latent space, then decode once, versus decode then upscale pixels.

    python benchmarks/bench_headline.py --device cuda          # 1024 -> 2048 px, FLUX VAE config
    python benchmarks/bench_headline.py --quick                 # CPU: tiny sizes, logic check only

Latent path: LUA x2 on the (1, 16, h, w) latent, then one VAE decode at the target size.
Pixel path: VAE decode at the base size, then a pixel-space SwinIR x2 with the same trunk
architecture and 3 channels (the paper's comparison). The VAE is a diffusers AutoencoderKL
built from the FLUX VAE configuration with random weights (timing needs no trained weights).
Both paths use the same lua_fast backend and precision. The paper reports about 3x.
"""

from __future__ import annotations

import argparse

import torch

import lua_fast
from lua_fast import LUAConfig
from lua_fast.reference import LUA

from common import environment, time_call, write_json

FLUX_VAE = dict(in_channels=3, out_channels=3, latent_channels=16, block_out_channels=(128, 256, 512, 512),
                down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                layers_per_block=2, norm_num_groups=32, scaling_factor=0.3611, shift_factor=0.1159,
                use_quant_conv=False, use_post_quant_conv=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and models (CPU logic check)")
    parser.add_argument("--base", type=int, default=1024, help="base image side in pixels (target is 2x)")
    parser.add_argument("--precision", default=None, help="default: bf16 on CUDA, fp32 on CPU")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", default="benchmarks/results/headline.json")
    args = parser.parse_args()
    from diffusers import AutoencoderKL

    device = torch.device(args.device)
    precision = args.precision or ("bf16" if device.type == "cuda" else "fp32")
    dtype = torch.bfloat16 if precision in ("bf16",) else torch.float32
    base = 64 if args.quick else args.base
    vae_config = dict(FLUX_VAE, block_out_channels=(32, 32, 64, 64)) if args.quick else FLUX_VAE
    lua_config = LUAConfig.small() if args.quick else LUAConfig.flux()
    pixel_config = LUAConfig(**{**lua_config.to_dict(), "in_channels": 3, "out_channels": 3, "heads": (("x2", 2),)})
    torch.manual_seed(0)
    vae = AutoencoderKL(**vae_config).to(device, dtype).eval()
    lua = lua_fast.load(LUA(lua_config).state_dict(), device=device, backend=args.backend, precision=precision)
    swinir = lua_fast.load(LUA(pixel_config).state_dict(), device=device, backend=args.backend, precision=precision)
    z = torch.randn(1, 16, base // 8, base // 8, device=device, dtype=dtype)

    @torch.inference_mode()
    def latent_path():
        return vae.decode(lua.upscale(z, scale=2, check_finite=False).to(dtype)).sample

    @torch.inference_mode()
    def pixel_path():
        image = vae.decode(z).sample
        return swinir.upscale(image.to(swinir.dtype), scale=2, check_finite=False)

    @torch.inference_mode()
    def decode_base():
        return vae.decode(z).sample

    shapes = {"latent_path": tuple(latent_path().shape), "pixel_path": tuple(pixel_path().shape)}
    assert shapes["latent_path"] == shapes["pixel_path"] == (1, 3, 2 * base, 2 * base), shapes
    timings = {name: time_call(fn, device, warmup=1, repeat=args.repeat)
               for name, fn in [("latent_path", latent_path), ("pixel_path", pixel_path), ("vae_decode_base", decode_base)]}
    ratio = timings["pixel_path"]["median_ms"] / timings["latent_path"]["median_ms"]
    print(f"{base} -> {2 * base} px on {environment(device)['device_name']} ({lua.backend}, {precision})")
    print(f"  latent path (LUA x2 + decode at {2 * base}):   {timings['latent_path']['median_ms']:10.1f} ms")
    print(f"  pixel path (decode at {base} + SwinIR x2):  {timings['pixel_path']['median_ms']:10.1f} ms")
    print(f"  (decode at {base} alone:                    {timings['vae_decode_base']['median_ms']:10.1f} ms)")
    print(f"  pixel / latent = {ratio:.2f}x" + ("  [quick mode: tiny models, meaningless]" if args.quick else ""))
    write_json(args.out, {"benchmark": "headline", "quick": args.quick, "base_px": base, "target_px": 2 * base,
                          "backend": lua.backend, "precision": precision, "environment": environment(device),
                          "vae_config": {k: list(v) if isinstance(v, tuple) else v for k, v in vae_config.items()},
                          "timings": timings, "pixel_over_latent": ratio, "shapes": shapes})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
