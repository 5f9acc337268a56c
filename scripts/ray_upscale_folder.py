"""Upscale a folder of latent files across every GPU of a Ray cluster.

    python scripts/ray_upscale_folder.py latents/ upscaled/ --weights lua_flux.pth --scale 2 \
        [--address auto] [--precision bf16] [--batch-size 8]

Each Ray actor loads the model once (one GPU per actor; without GPUs, one actor per node with
its cores); latents of the same size run as one batch; outputs are written as <stem>.x<scale>.safetensors. Files that cannot be upscaled are
listed at the end with the reason; the others are written regardless. See
lua_fast.integrations.ray.
"""

import argparse
import sys

from lua_fast.errors import LuaFastError
from lua_fast.integrations.ray import upscale_folder
from lua_fast.tiling import is_auto


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input_dir")
    parser.add_argument("output_dir")
    parser.add_argument("--weights", required=True, help="LUA checkpoint (.pth/.safetensors or hf://...)")
    parser.add_argument("--scale", type=int, default=2)
    parser.add_argument("--precision", default=None, help="fp32, bf16, fp16 or mixed (default: fp32)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--tile", type=lambda v: "auto" if is_auto(v) else int(v), default=None,
                        help="tile size in latent pixels, or 'auto' (default: untiled)")
    parser.add_argument("--actors", type=int, default=None,
                        help="actors (default: one per GPU; without GPUs, one per node)")
    parser.add_argument("--cpus-per-actor", type=float, default=None,
                        help="CPUs each actor reserves without GPUs, its PyTorch threads (default: its node's cores)")
    parser.add_argument("--address", default=None, help="Ray cluster address (default: start a local one)")
    parser.add_argument("--skip-existing", action="store_true",
                        help="resume: keep outputs already in output_dir and do not run their inputs again")
    args = parser.parse_args()
    try:  # (the job's arguments and the checkpoint are checked before the cluster starts)
        rows = upscale_folder(args.input_dir, args.output_dir, args.weights, scale=args.scale,
                              precision=args.precision, batch_size=args.batch_size, tile=args.tile,
                              actors=args.actors, num_cpus_per_actor=args.cpus_per_actor,
                              skip_existing=args.skip_existing, address=args.address)
    except (LuaFastError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    failed = [r for r in rows if r["error"]]
    for r in rows:
        print(f"{r['path']} -> {r['output'] or 'FAILED: ' + r['error']}" + (" (existing)" if r["skipped"] else ""))
    kept = sum(1 for r in rows if r["skipped"])
    print(f"{len(rows) - len(failed)} of {len(rows)} files upscaled" + (f" ({kept} kept from before)" if kept else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
