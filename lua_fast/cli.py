"""The ``lua-fast`` command line (also ``python -m lua_fast``)."""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import sys
import time
from pathlib import Path

import torch

from ._version import __version__
from .errors import LuaFastError, NonFiniteInputError, UsageError, first_line
from .files import (LATENTS_KEY, SAFETENSORS_SUFFIXES, atomic_write, check_latents_suffix,  # noqa: F401
                    check_output_path, expand_inputs, one_latent_as_batch, output_name, read_latents, write_latents,
                    written_shape)


# --------------------------------------------------------------------- commands
def cmd_info(args) -> int:
    from .info import info

    report = info()
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"lua_fast {report['lua_fast']}  (python {report['python']}, {report['platform']})")
    for name in ("torch", "torch_cuda", "cudnn", "triton", "triton_kernels", "numpy", "safetensors"):
        untested = report["untested_versions"].get(name)
        print(f"  {name:12s} {report[name] or ('none (CPU-only build)' if name in ('torch_cuda', 'cudnn') else 'not installed')}"
              + (f"  (WARNING: {untested})" if untested else ""))
    print("devices:")
    cpu = report["cpu"]
    ram = cpu.get("memory_available")
    ram = f", {ram / 2**30:.1f} GiB RAM available" if ram is not None else ""
    print(f"  cpu     {cpu['name']} ({cpu['capability']}, {cpu['threads']} threads{ram})")
    quota = cpu.get("quota")
    fits = None if quota is None else max(1, math.ceil(quota))
    if fits is not None and cpu["threads"] > fits:
        print(f"          WARNING: a CPU quota of {quota:g} CPUs (cgroup) and {cpu['threads']} PyTorch threads: the kernel "
              f"throttles the extra threads; torch.set_num_threads({fits}) or OMP_NUM_THREADS={fits}")
    slow = [k for k, native in cpu.get("native_kernels", {}).items() if native is False]
    if slow:
        print(f"          no native {' / '.join(slow)} kernels: PyTorch's fallback loops, about 40x slower than fp32")
    for dev in report["cuda_devices"]:
        print(f"  cuda:{dev['index']}  {dev['name']} (sm {dev['capability']}, {dev['memory_gib']} GiB)")
        pdl = report["programmatic_dependent_launch"].get(f"cuda:{dev['index']}")
        if pdl:
            print(f"    programmatic dependent launch: {pdl}")
    ext = report["native_extension"]
    if ext["loaded"]:
        print(f"native extension: loaded ({'CPU + CUDA' if ext['cuda_kernels'] else 'CPU only'}) from {ext['path']}")
    else:
        print(f"native extension: not loaded: {ext['reason']}")
    print("ops (device: implementation):")
    for op, table in report["ops"].items():
        print(f"  {op}")
        for where, status in table.items():
            print(f"    {where:22s} {status}")
    print("backends (device/precision: status), in auto's priority order:")
    for name, table in report["backends"].items():
        print(f"  {name}")
        for where, status in table.items():
            print(f"    {where:22s} {status}")
    print("auto picks (fp32): " + ", ".join(f"{d} -> {b}" for d, b in report["auto_backend"].items()))
    for key, value in report["env"].items():
        print(f"env: {key}={value}")
    return 0


def upscale_targets(args) -> list[tuple[str, int, Path]]:
    """(input, scale, output) triples: ``--output`` for one input and one scale, or ``--output-dir``
    with each output named ``<stem>.x<scale>.safetensors`` (``.latent`` for a ComfyUI file) as the
    Ray job names them, one per input and scale.
    Checked whole before anything is read: a name two inputs would share, an output that is a file
    this command reads (an input, the weights; unless --force), a directory that cannot be written.
    A folder or a pattern in ``--input`` stands for its files (``files.expand_inputs``)."""
    if (args.output is None) == (args.output_dir is None):
        raise UsageError("give --output (one input) or --output-dir (one or more inputs)")
    folders = [Path(name) for name in args.input if Path(name).is_dir()]
    args.input = expand_inputs(args.input, skip=[args.weights])
    if args.output_dir is not None and any(f.resolve() == Path(args.output_dir).resolve() for f in folders):
        raise UsageError(f"--output-dir {args.output_dir} is an --input folder: write the outputs elsewhere "
                         "(a later run would read them as inputs)")
    if args.output is not None and len(args.input) != 1:
        raise UsageError(f"--output takes one --input, got {len(args.input)}; for several, pass --output-dir")
    if args.output is not None and len(args.scale) != 1:
        raise UsageError(f"--output writes one scale, got --scale {' '.join(map(str, args.scale))}; for several "
                         "(one trunk pass, an output each), pass --output-dir")
    if args.output is not None:
        targets = [(args.input[0], args.scale[0], Path(args.output))]
        option = "--output"
    else:
        out_dir = Path(args.output_dir)
        if out_dir.exists() and not out_dir.is_dir():
            raise UsageError(f"--output-dir {out_dir} is a file, not a directory")
        out_dir.mkdir(parents=True, exist_ok=True)
        targets = [(inp, scale, out_dir / output_name(inp, scale)) for inp in args.input for scale in args.scale]
        option = "--output-dir"
        by_target: dict[Path, list[str]] = {}
        for inp, _, target in targets:
            by_target.setdefault(target.resolve(), []).append(inp)
        # (once per group of inputs, whatever the number of scales they share names at)
        shared = list(dict.fromkeys(tuple(inputs) for inputs in by_target.values() if len(inputs) > 1))
        if shared:
            raise UsageError("these inputs would write the same output (<stem>.x<scale>.<suffix>): "
                             + "; ".join(", ".join(inputs) for inputs in shared))
    reads = [("--input", inp) for inp in args.input] + [("--weights", args.weights)]
    for _, _, target in targets:
        check_output_path(target, reads=reads, force=args.force, option=option)
        check_latents_suffix(target, option=option)
    return targets


def cmd_upscale(args) -> int:
    from . import load

    if args.overlap is not None and args.tile is None:
        raise UsageError("--overlap needs --tile (N or auto)")
    if args.memory_budget is not None and args.tile != "auto":
        raise UsageError("--memory-budget applies to --tile auto")
    if args.skip_existing and args.output_dir is None:
        raise UsageError("--skip-existing resumes an --output-dir run; with --output, leave the file out instead")
    # Everything about the outputs is checked before the weights are read or anything runs.
    args.scale = list(dict.fromkeys(args.scale or [2]))  # (--scale 2 4: both from one trunk pass)
    targets = upscale_targets(args)
    if args.skip_existing:  # outputs are written atomically: one that reads is whole
        kept = {triple for triple in targets if written_shape(triple[2]) is not None}
        for source, scale, target in targets:
            if (source, scale, target) in kept:
                print(f"{source} -> {target} exists (--skip-existing)")
        targets = [triple for triple in targets if triple not in kept]  # (an input runs its missing scales)
        if not targets:
            return 0
    jobs: dict[str, dict[int, Path]] = {}
    for source, scale, target in targets:
        jobs.setdefault(source, {})[scale] = target
    upscaler = load(args.weights, device=args.device, dtype=args.dtype, backend=args.backend,
                    precision=args.precision)
    # A scale the model lacks: one error here, not one per input file below
    upscaler._scales(args.scale[0] if len(args.scale) == 1 else tuple(args.scale))
    failed = 0
    for source, outputs in jobs.items():
        try:
            upscale_file(upscaler, source, outputs, args)
        except (LuaFastError, OSError, ValueError) as exc:
            if len(jobs) == 1:
                raise
            failed += 1  # one bad file does not lose the others (as in the Ray job)
            message = " ".join(str(exc).split()) or type(exc).__name__
            print(f"lua-fast upscale: error: {source}: {message}", file=sys.stderr)
    if failed:
        print(f"lua-fast upscale: {failed} of {len(jobs)} inputs failed", file=sys.stderr)
        return 2
    return 0


class _OutOfMemory(LuaFastError, RuntimeError):
    """An input the device could not hold, reported as one line (and, among several inputs, as that
    input's failure) instead of a traceback that ends the run."""


def upscale_file(upscaler, source: str, outputs: dict[int, Path], args) -> None:
    """Upscale one latents file to each scale of ``outputs`` ({scale: target}), all from one trunk pass."""
    from .tiling import is_out_of_memory

    latents = read_latents(source, args.key)
    batch, single = one_latent_as_batch(latents, upscaler.config.in_channels)
    scales = "/".join(f"x{s}" for s in outputs)
    try:
        asked = tuple(outputs) if len(outputs) > 1 else next(iter(outputs))  # (one scale: its own error text)
        out = upscaler.upscale(batch.to(upscaler.device), scale=asked, check_finite=not args.no_check_finite,
                               tile=args.tile, overlap=args.overlap, memory_budget=args.memory_budget,
                               progress=True)
    except NonFiniteInputError as exc:
        exc.opt_out = "--no-check-finite"
        raise
    except RuntimeError as exc:  # torch.OutOfMemoryError, or the CPU allocator's refusal
        if not is_out_of_memory(exc):
            raise
        if upscaler.device.type == "cuda":
            torch.cuda.empty_cache()  # for the inputs after this one
        hint = ("even with --tile auto's smallest tiles" if args.tile == "auto" else
                "pass a smaller --tile" if args.tile is not None else "pass --tile auto to upscale it in tiles")
        raise _OutOfMemory(f"out of memory upscaling a {tuple(batch.shape)} latent {scales} on "
                           f"{upscaler.device} ({first_line(exc)}): {hint}") from None
    out = out if isinstance(out, dict) else {asked: out}
    for scale, target in outputs.items():
        result = out[scale][0] if single else out[scale]  # the rank it read
        write_latents(target, result, args.key)
        print(
            f"{tuple(latents.shape)} -> {tuple(result.shape)} x{scale} "
            f"[{upscaler.backend}, {upscaler.device}, {upscaler.precision}] -> {target}"
        )


def cmd_convert(args) -> int:
    from safetensors.torch import load_file, save_file

    from . import checkpoint
    from .upscaler import read_weights

    suffix = Path(args.output).suffix.lower()
    if suffix not in SAFETENSORS_SUFFIXES + checkpoint.TORCH_SUFFIXES:
        raise UsageError(f"the output must end in .safetensors or .sft (safetensors), or .pth, .pt, .bin or .ckpt "
                         f"(the released torch.save layout, params_ema), got {args.output}")
    dtype = args.dtype  # (None: keep the source's)
    check_output_path(args.output, reads=[("the source checkpoint", args.weights)], force=args.force,
                      option="output")
    state_dict = read_weights(args.weights)  # (a local file, or a hub file as load takes it)
    config, _ = checkpoint.validate_state_dict(state_dict)
    # As stored (no added buffers), contiguous; --dtype casts the floating tensors (the index stays int).
    state_dict = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).contiguous()
                  for k, v in state_dict.items()}
    if suffix in SAFETENSORS_SUFFIXES:
        metadata = {"format": "pt", "source": Path(args.weights).name}
        atomic_write(args.output, lambda tmp: save_file(state_dict, tmp, metadata=metadata))
        back = load_file(str(args.output))
    else:  # what the released lua_flux.pth holds, and the official loader and BasicSR read
        atomic_write(args.output, lambda tmp: torch.save({"params_ema": state_dict}, tmp))
        back = checkpoint.read_checkpoint(args.output)
    bad = [k for k in state_dict if k not in back or back[k].dtype != state_dict[k].dtype
           or not torch.equal(back[k], state_dict[k])]
    if bad or len(back) != len(state_dict):
        raise SystemExit(f"round trip failed for {bad or 'the key set'}; {args.output} is not trustworthy")
    dtypes = sorted({str(v.dtype).removeprefix("torch.") for v in back.values() if v.is_floating_point()})
    print(f"wrote {args.output}: {len(back)} tensors ({', '.join(dtypes)}), "
          f"{os.path.getsize(args.output) / 2**20:.1f} MiB, round trip verified bit-exact ({config})")
    return 0


def cmd_demo(args) -> int:
    from . import load
    from .config import LUAConfig
    from .reference import LUA

    torch.manual_seed(args.seed)
    config = LUAConfig.small() if args.small else LUAConfig.flux()
    size = args.size or (20 if args.small else 32)
    upscaler = load(LUA(config).state_dict(), device=args.device, dtype=args.dtype, backend=args.backend,
                    precision=args.precision)
    latents = torch.randn(args.batch, config.in_channels, size, size + 3, device=upscaler.device)
    cuda = upscaler.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(upscaler.device)
    times = []
    for _ in range(args.repeat + 1):  # the first run warms up
        if cuda:
            torch.cuda.synchronize(upscaler.device)
        start = time.perf_counter()
        out = upscaler.upscale(latents, scale=args.scale)
        if cuda:
            torch.cuda.synchronize(upscaler.device)
        times.append(time.perf_counter() - start)
    if cuda:
        peak = f"{torch.cuda.max_memory_allocated(upscaler.device) / 2**20:.1f} MiB (CUDA allocator peak)"
    else:
        import resource

        peak = f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f} MiB (process peak RSS)"
    params = sum(p.numel() for p in upscaler.model.parameters())
    print(f"model:   {'small test config' if args.small else 'released FLUX config'}, random weights, "
          f"{params / 1e6:.2f} M parameters")
    print(f"backend: {upscaler.backend} on {upscaler.device}, precision {upscaler.precision}")
    print(f"input:   {tuple(latents.shape)}  ->  output {tuple(out.shape)} (x{args.scale})")
    print(f"time:    {statistics.median(times[1:]) * 1e3:.1f} ms median of {args.repeat} (after 1 warm-up)")
    print(f"memory:  {peak}")
    print(f"output:  mean {out.float().mean():.4f}, std {out.float().std():.4f}, finite {bool(torch.isfinite(out).all())}")
    return 0


def cmd_bench(args) -> int:
    from . import benchmark

    from .upscaler import parse_device

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is an existing file; bench writes a directory of reports")
    if not out.exists() and not out.parent.is_dir():
        raise UsageError(f"--out {out}: directory {out.parent} does not exist")
    device = parse_device(args.device)
    if device.type == "cpu":
        print("lua-fast bench: CPU figures are a smoke test, not the product's target")
    config = None
    if args.config:
        from .config import LUAConfig

        config = getattr(LUAConfig, args.config)()
    report = benchmark.run_suite(device, quick=args.quick, repeat=args.repeat or None, config=config,
                                 state_dict=args.weights, sizes=args.sizes, scales=args.scales,
                                 precisions=args.precisions, backends=args.backends, batch=args.batch,
                                 cuda_graphs=not args.no_cuda_graph, ops=not args.no_ops)
    report["weights"] = args.weights  # (None: random weights of report["config"])
    print()
    print(benchmark.markdown(report))
    for path in benchmark.write_reports(report, args.out):
        print(f"wrote {path}")
    return 0


def cmd_export(args) -> int:
    from . import load
    from .export import export_onnx, export_package

    suffix = Path(args.output).suffix.lower()
    if suffix not in (".pt2", ".onnx"):
        raise UsageError(f"the output must end in .pt2 (AOTInductor) or .onnx, got {args.output}")
    check_output_path(args.output, reads=[("--weights", args.weights)], force=args.force)
    args.scales = [2, 4] if args.scales is None else args.scales
    up = load(args.weights, device=args.device, dtype=args.dtype, backend=args.backend, precision=args.precision)
    if suffix == ".onnx":
        if len(args.scales) != 1:
            raise UsageError("ONNX export takes one --scales value")
        export_onnx(up, args.output, scale=args.scales[0])
        print(f"wrote {args.output}: ONNX, reference numerics in {str(up.dtype).removeprefix('torch.')}"
              f"{' (mixed precision has no ONNX form)' if up.precision.mode == 'mixed' else ''}, x{args.scales[0]}, "
              "dynamic batch and sizes")
    else:
        export_package(up, args.output, scales=args.scales, max_batch=args.max_batch, max_side=args.max_side)
        print(f"wrote {args.output}: AOTInductor package, {up.backend} backend, {up.precision}, {up.device.type}, "
              f"scales {sorted(set(args.scales))}, batch <= {args.max_batch}, sides <= {args.max_side}; "
              "load it with lua_fast.load()")
    return 0


def cmd_comfyui(args) -> int:
    from .integrations.comfyui.install import install, uninstall

    if args.action == "uninstall":
        if args.force:
            raise UsageError("--force is for install; uninstall removes only the shim lua-fast wrote")
        for line in uninstall(args.path):
            print(line)
        return 0
    for line in install(args.path, force=args.force):
        print(line)
    print("restart ComfyUI; the nodes are under latent/upscaling")
    return 0


# ----------------------------------------------------------------------- parser
class _Parser(argparse.ArgumentParser):
    """argparse with the CLI's error contract: one line on stderr, exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _tile(value: str):
    from .tiling import is_auto

    if is_auto(value):
        return "auto"
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a tile size in latent pixels or 'auto', got {value!r}") from None


_BYTE_UNITS = {"": 1, "b": 1, "k": 2**10, "kib": 2**10, "m": 2**20, "mib": 2**20, "g": 2**30, "gib": 2**30,
               "t": 2**40, "tib": 2**40, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}


def _byte_size(value: str) -> int:
    """An argparse type for a memory size: bytes, or a number with a unit (KiB/MiB/GiB/TiB and K/M/G/T
    binary, KB/MB/GB/TB decimal, any case): ``8GiB``, ``8g``, ``1.5GB``, ``500000000``."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([a-z]*)\s*", value.lower())
    if not match or match.group(2) not in _BYTE_UNITS:
        raise argparse.ArgumentTypeError(f"expected a size such as 8GiB, 512MiB, 1.5GB or a number of bytes, "
                                         f"got {value!r}")
    size = int(float(match.group(1)) * _BYTE_UNITS[match.group(2)])
    if size < 1:
        raise argparse.ArgumentTypeError(f"a memory budget must be at least one byte, got {value!r}")
    return size


def _weights_dtype(value: str) -> torch.dtype:
    """An argparse type for ``convert --dtype``: float32, bfloat16 or float16 under any of their names
    (float64 gains nothing: a float32 checkpoint holds float32's rounding already)."""
    from .upscaler import DTYPES

    dtype = DTYPES.get(value.strip().lower().removeprefix("torch."))
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise argparse.ArgumentTypeError(f"expected float32, bfloat16 or float16 (or fp32, bf16, fp16), got {value!r}")
    return dtype


def _at_least(minimum: int):
    """An argparse type: an int >= ``minimum`` (a count or a size), refused while parsing, not as a
    traceback later (before 2026-11-29 `demo --repeat -1` ended in an UnboundLocalError)."""
    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an int, got {value!r}") from None
        if number < minimum:
            raise argparse.ArgumentTypeError(f"expected an int >= {minimum}, got {number}")
        return number

    return parse


def _scale(value: str) -> int:
    """"4", or the head name "x4" (any case) as the Python API and the official functions name it."""
    text = value.strip().lower()
    try:
        return int(text[1:] if text.startswith("x") else text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a scale such as 2 or x2, got {value!r}") from None


def _latent_size(value: str) -> tuple[int, int]:
    """"64x64" (or "64") -> (64, 64)."""
    parts = value.lower().split("x")
    try:
        h, w = (int(parts[0]), int(parts[0])) if len(parts) == 1 else map(int, parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a latent size HxW such as 64x64, got {value!r}") from None
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"latent sides must be >= 1, got {value!r}")
    return h, w


def _device(value: str) -> str:
    """``auto``: ``lua_fast.upscaler.auto_device()``, resolved while parsing, so ``args.device``
    names the device used (the default stays the CPU, as ``lua_fast.load``'s does)."""
    if value.strip().lower() == "auto":
        from .upscaler import auto_device

        return auto_device()
    if value.strip().lower().split(":")[0] == "meta":  # (the API's shapes-only device: nothing to write or time)
        raise argparse.ArgumentTypeError("the meta device holds shapes only, no values to write, show or time; "
                                         "choose cpu, cuda or auto")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="lua-fast", description="Fast LUA latent upscaling.")
    parser.add_argument("--version", action="version",
                        version=f"lua-fast {__version__} (torch {torch.__version__}; `lua-fast info` for the rest)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("info", help="versions, devices, backends and why not")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_info)

    def runtime_options(p, scale: bool = True):
        p.add_argument("--device", default="cpu", type=_device,
                       help="cpu, cuda, cuda:1, ..., or auto: cuda when a GPU is visible, else cpu (default: cpu)")
        p.add_argument("--dtype", default=None, help="float32, bfloat16, float16 (default: float32)")
        p.add_argument("--precision", default=None, help="fp32, tf32, bf16, fp16 or mixed (instead of --dtype)")
        p.add_argument("--backend", default="auto", help="auto or a backend name from 'lua-fast info'")
        if scale:
            p.add_argument("--scale", type=_scale, default=2, help="upscaling factor, 2 or 4 (or x2, x4; default: 2)")

    p = sub.add_parser("upscale", help="upscale a latents file")
    p.add_argument("--weights", required=True, help="LUA checkpoint: a torch.save or safetensors file (told apart by content), or hf://owner/repo/file (or that file's https://huggingface.co link)")
    # "extend": `--input a --input b` is both files (with argparse's default "store" only b was read,
    # and a was skipped without a word, before 2026-11-29)
    p.add_argument("--input", required=True, nargs="+", action="extend", help=f"one or more latents files, each (B, C, H, W) or "
                   f"(C, H, W): safetensors or torch.save under key '{LATENTS_KEY}', or ComfyUI .latent files; a "
                   "folder stands for its latents files (.safetensors, .sft, .pt, .pth, .latent), and a pattern "
                   "such as 'latents/*.pt' for the files it matches (for shells that do not expand it)")
    p.add_argument("--output", help="where to write the upscaled latents of one input, in the input's rank (.safetensors "
                   "or .sft: safetensors; .latent: ComfyUI's latent file; .pt, .pth, .bin, .ckpt: torch.save)")
    p.add_argument("--output-dir", help="a folder for the outputs of one or more inputs (created if missing): "
                   "<stem>.x<scale>.safetensors, or .latent for a .latent input; the model is loaded once")
    p.add_argument("--key", default=LATENTS_KEY, help=f"tensor key in the input/output files (default: {LATENTS_KEY}; "
                   "ComfyUI's latent_tensor or samples, or a file's one tensor, is found without it)")
    p.add_argument("--no-check-finite", action="store_true", help="skip the NaN/Inf input check")
    p.add_argument("--tile", type=_tile, default=None, help="tile size in latent pixels, or 'auto' (see lua_fast.tiling)")
    p.add_argument("--overlap", type=int, default=None, help="least tile overlap in latent pixels, at most the tile "
                   "less one window (default 2 windows, at most half a tile)")
    p.add_argument("--memory-budget", type=_byte_size, default=None, metavar="SIZE",
                   help="with --tile auto: the memory a pass may take (8GiB, 512MiB, 1.5GB, bytes; default: 90%% "
                        "of what the GPU has free, 75%% of the RAM the process can still take)")
    p.add_argument("--force", action="store_true", help="allow --output to overwrite --input or --weights")
    p.add_argument("--skip-existing", action="store_true", help="with --output-dir: keep outputs already there "
                   "(a rerun after an interruption) and upscale only the other inputs")
    runtime_options(p, scale=False)
    p.add_argument("--scale", type=_scale, nargs="+", action="extend", default=None,
                   help="upscaling factor, 2 or 4 (or x2, x4; default: 2); with --output-dir several (--scale 2 4) "
                   "share one trunk pass and each gets its output")
    p.set_defaults(func=cmd_upscale)

    p = sub.add_parser("convert", help="convert a checkpoint to .safetensors or .pth (round trip verified)")
    p.add_argument("weights", help="source checkpoint (any format lua_fast.load reads; an hf:// file too)")
    p.add_argument("output", help="destination: .safetensors or .sft (safetensors), .pth, .pt, .bin or .ckpt "
                                  "(torch.save, the state dict under params_ema as released)")
    p.add_argument("--dtype", type=_weights_dtype, default=None, help="cast the weights: float32, bfloat16 or float16 "
                                                 "(default: keep the source's)")
    p.add_argument("--force", action="store_true", help="allow the output to overwrite the source")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("bench", help="benchmark every available backend x precision (JSON, markdown, plot)")
    p.add_argument("--quick", action="store_true", help="small sizes: a table in seconds")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", type=_device,
                   help="cpu, cuda, cuda:1, ... or auto (default: cuda when a GPU is visible, else cpu)")
    p.add_argument("--repeat", type=_at_least(0), default=0, help="timed calls per row (default 3 quick, 10 full)")
    p.add_argument("--out", default="bench-results", help="directory for bench.json / bench.md / bench.png")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--config", choices=("flux", "sdxl", "small"), default=None,
                      help="model configuration, random weights (default: flux on CUDA, small on the CPU)")
    what.add_argument("--weights", default=None, help="a checkpoint to time instead (its configuration and weights)")
    p.add_argument("--sizes", type=_latent_size, nargs="+", action="extend", default=None, metavar="HxW",
                   help="latent sizes, e.g. 64x64 128x128 (default: by device and --quick)")
    p.add_argument("--batch", type=_at_least(1), default=1, help="latents per forward (default: 1)")
    p.add_argument("--scales", type=_scale, nargs="+", action="extend", default=None,
                   help="scales to time, 2 4 or x2 x4 (default: by device)")
    p.add_argument("--precisions", nargs="+", action="extend", default=None,
                   help="precision modes to time (default: by device); the fp32 reference is always timed")
    p.add_argument("--backends", nargs="+", action="extend", default=None,
                   help="backends to time (default: every one that runs here); one that cannot run is listed as skipped")
    p.add_argument("--no-cuda-graph", action="store_true", help="no CUDA-graph rows for the triton backend")
    p.add_argument("--no-ops", action="store_true", help="no per-op table")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("export", help="export to an AOTInductor package (.pt2) or ONNX (.onnx)")
    p.add_argument("--weights", required=True, help="LUA checkpoint: a torch.save or safetensors file, or hf://owner/repo/file (or that file's https://huggingface.co link)")
    p.add_argument("--output", required=True, help="model.pt2 (AOTInductor, any backend) or model.onnx (reference)")
    p.add_argument("--device", default="cpu", type=_device, help="the device the package will run on (default: cpu)")
    p.add_argument("--dtype", default=None, help="float32, bfloat16, float16 (default: float32)")
    p.add_argument("--precision", default=None, help="fp32, bf16, fp16 or mixed (instead of --dtype)")
    p.add_argument("--backend", default="auto", help="auto or a backend name from 'lua-fast info'")
    p.add_argument("--scales", type=_scale, nargs="+", action="extend", default=None,  # (None: extend adds to a default)
                   help="heads to include, 2 4 or x2 x4 (default: 2 4)")
    p.add_argument("--max-batch", type=_at_least(1), default=16, help="largest batch the package accepts (default: 16)")
    p.add_argument("--max-side", type=_at_least(1), default=512, help="largest padded latent side (default: 512)")
    p.add_argument("--force", action="store_true", help="allow --output to overwrite --weights")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("comfyui", help="install (or uninstall) the ComfyUI node pack in a ComfyUI tree")
    p.add_argument("action", choices=["install", "uninstall"])
    p.add_argument("path", help="the ComfyUI folder (holding custom_nodes/ and models/)")
    p.add_argument("--force", action="store_true", help="replace an existing custom_nodes/lua_fast_nodes")
    p.set_defaults(func=cmd_comfyui)

    p = sub.add_parser("demo", help="upscale a synthetic latent with random weights (no download)")
    p.add_argument("--small", action="store_true", help="a small config instead of the released one")
    p.add_argument("--size", type=_at_least(0), default=0, help="latent height (width is height+3; 0: 20 small, 32 released)")
    p.add_argument("--batch", type=_at_least(1), default=1)
    p.add_argument("--repeat", type=_at_least(1), default=2, help="timed runs after one warm-up")
    p.add_argument("--seed", type=int, default=0)
    runtime_options(p)
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        status = args.func(args)
        sys.stdout.flush()  # (here, so that a closed pipe is caught below, not at exit)
        return status
    except BrokenPipeError:
        # The reader went away (`lua-fast info | head`): not this command's error. Later writes,
        # Python's own flush at exit included, go to /dev/null; the status is the shell's for a
        # writer killed by SIGPIPE, as `yes | head` gives. (Before 2026-11-28: an error message, 2.)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + 13
    except (LuaFastError, OSError, ValueError) as exc:  # OSError: missing files, permissions, full disks
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"lua-fast {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # Ctrl-C: one line and the shell's status for SIGINT, not a traceback through torch (before
        # 2026-11-29). Outputs already written stay whole (atomic writes); --skip-existing resumes.
        print(f"lua-fast {args.command}: interrupted", file=sys.stderr)
        return 128 + 2


if __name__ == "__main__":
    raise SystemExit(main())
