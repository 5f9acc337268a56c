"""Compile the Triton kernels a forward pass really launches, for GPU targets, without a GPU.

    python scripts/compile_kernels.py --quick [--arch 80 90]     # compile check (the tests run this)
    python scripts/compile_kernels.py --report [--arch 90 80]     # the kernel report (below)
    python scripts/compile_kernels.py --report --cases bf16+mlp:128:2 --kernels fused_mlp   # one kernel

How it sees "what runs": the triton backend runs a forward of the released configuration on
CPU tensors with every kernel launch recorded instead of executed (and the cuBLAS GEMMs skipped:
only shapes matter), so each launch's real arguments are known. Each distinct launch is then
compiled the way Triton's JIT would specialise it on a GPU: integer arguments equal to 1 become
constants, integers divisible by 16 and 16-byte aligned pointers (CUDA allocations are 256-byte
aligned; views add their storage offset) get ``tt.divisibility=16``, and every autotune config
that survives the kernel's prune hook is compiled with its own num_warps / num_stages.

The report reads each cubin with the ``cuobjdump`` shipped in the triton wheel: registers, local
memory (spills) and STL/LDL instructions, shared memory, the MMA kind (HGMMA = wgmma, HMMA =
mma.sync), the main loop's global loads by width (LDG.128 / LDGSTS.128 = 16-byte vector / async
copies, UTMALDG = TMA), and the static warp-instructions per launch:
``(straight-line instructions + loop body x trip count) x warps x programs``. Divided by an
H200's issue rate (132 SMs x 4 schedulers x 1.75 GHz) that is a hard lower bound on the launch's
time (``issue_us``). The wave bound (``wave_us``) adds how the programs fall on the SMs: the
busiest SM runs ceil(programs / 132) of them at 4 warp-instructions a clock, so a launch of 32
programs is bounded by one program's time, not by a 132nd of all of them. An issue slot is not
the whole cost of every instruction: a MUFU instruction (exp2, rcp) holds the SM's 16 MUFU lanes
for 2 clocks per warp, and an MMA holds the tensor cores for its FLOPs / 4096 clocks (dense
bf16/fp16; tf32 at half rate), read from the HGMMA / HMMA shapes in the SASS, padding included.
``mufu_us`` and ``tensor_us`` are those pipes' whole-GPU times; the pipe bound (``pipe_us``) is
the largest of the three per busiest SM, still a hard lower bound, and the report's "best config"
is the one with the lowest pipe bound. The memory floor (``memory_floor_us``) is each distinct
tensor argument moved once at an H200's 4.8 TB/s (the attention's bias left out): hard for a launch
timed alone with L2 flushed, not for a forward whose activations may still sit in the 50 MB L2.
The L2 model (``l2_bytes``, ``l2_model_us``; every kernel whose module defines
``launch_l2_bytes``: GEMMs, convs, attention, the fused MLP and attention + proj, not the
add + LayerNorm) is an estimate, not a bound: the bytes the programs of this config load and
store, counting every re-read of an operand tile (A once per N tile, the weights once per row
block, K and V once per query block), at the rate the H200's per-kernel timings ran at (``L2_BYTES_PER_S``, 6.5 TB/s; the fc2
and the four large convs of 2026-11-26 ran at 6.6-7.6 TB/s of these bytes). ``model_us`` = max(pipe
bound, L2 model, or the memory floor where no model exists), and its per-forward sum takes the
config with the lowest one per site.
Writes ``benchmarks/results/kernel_report_sm90.json`` (per --arch) and prints a markdown table
for ``benchmarks/NOTES.md``. Must run without TRITON_INTERPRET. Like Triton's compiles, the
disassemblies are cached (``LUA_FAST_SASS_CACHE``, default ``~/.cache/lua_fast/sass``; see
``sass_text``).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

if os.environ.get("TRITON_INTERPRET") == "1":
    sys.exit("compile_kernels.py must run without TRITON_INTERPRET=1")

import torch  # noqa: E402
import triton  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

import lua_fast  # noqa: E402
from lua_fast import LUAConfig  # noqa: E402
from lua_fast.files import atomic_write  # noqa: E402
from lua_fast.backends.triton_backend import TritonBackendLUA  # noqa: E402
from lua_fast.kernels import conv3x3 as CV  # noqa: E402
from lua_fast.kernels import attention_proj as AP  # noqa: E402
from lua_fast.kernels import fused_linear as FL  # noqa: E402
from lua_fast.kernels import fused_mlp as FM  # noqa: E402
from lua_fast.kernels import layer_norm as LN  # noqa: E402
from lua_fast.kernels import window_attention as WA  # noqa: E402
from lua_fast.precision import resolve  # noqa: E402
from lua_fast.reference import LUA  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SMEM_LIMIT = {80: 163 * 1024, 90: 227 * 1024}  # max dynamic shared memory per block (A100, H100)
SMS, ISSUES_PER_CLOCK, CLOCK = 132, 4, 1.75e9  # an H200: SMs, warp schedulers per SM, SM clock (Hz)
ISSUE_RATE = SMS * ISSUES_PER_CLOCK * CLOCK  # warp-instructions per second an H200 can issue at most
MUFU_CLOCKS_PER_WARP_INSTRUCTION = 32 / 16  # SM clocks: 16 MUFU lanes per SM (CUDA guide, cc 9.0: exp2f, rcp)
TENSOR_FLOPS_PER_CLOCK = 4096  # dense bf16/fp16 per SM per clock on Hopper (989 TFLOP/s at 1.83 GHz, 132 SMs)
HBM_BYTES_PER_S = 4.8e12  # an H200's HBM3e (spec sheet)
# What the H200's GEMM and conv sites (timed alone, L2 flushed, 2026-11-26) ran at, in bytes of
# launch_l2_bytes per second: 6.6-7.6 TB/s at the fc2 and the four large convs; the LayerNorm GEMMs and
# the proj of then ran at 3-4 TB/s (latency: 128 programs, or 1.5 waves), so this is a best case.
L2_BYTES_PER_S = 6.5e12
# Tensor arguments left out of the memory floor: which one an attention config reads (the dense bias or
# its table) is the config's choice, and both are small next to qkv.
NOT_MOVED = {"window_attention": {"bias_ptr", "table_ptr"}, "attention_proj": {"bias_ptr"}}
BF16_PEAK = 772e12  # FLOP/s, dense bf16 on an H200 (as measured by the issue author)
BIN = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
TYPES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


# ------------------------------------------------------------------ recording launches
@dataclass
class Launch:
    kernel: str  # "window_attention" / "conv3x3"
    site: str  # which call site (derived from the arguments)
    tuner: object  # the triton Autotuner
    args: tuple
    kwargs: dict
    grid: object
    flops: int = 0
    count: int = 1
    key: tuple = field(default=())


class _Recorder:
    """Stands in for a kernel: ``rec[grid](*args, **kwargs)`` records and runs nothing, or with
    ``passthrough`` records and then launches the real kernel (GPU timing of what a forward runs).
    A plain (un-autotuned) kernel is recorded with a one-config tuner built from its launch options."""

    def __init__(self, name, tuner, sink, passthrough=False):
        self.name, self.tuner, self.sink, self.passthrough = name, tuner, sink, passthrough

    def __getitem__(self, grid):
        def record(*args, **kwargs):
            tuner = self.tuner
            if self.passthrough:
                tuner[grid](*args, **kwargs)
            kwargs = dict(kwargs)
            kwargs.pop("launch_pdl", None)  # a launch option, not an argument: PDL (constexpr) says it
            if not hasattr(tuner, "configs"):  # a plain @triton.jit kernel
                options = {k: kwargs.pop(k) for k in ("num_warps", "num_stages") if k in kwargs}
                tuner = _FixedTuner(tuner, triton.Config({}, **options))
            self.sink.append(Launch(self.name, "", tuner, args, kwargs, grid if callable(grid) else lambda _: grid))
        return record


@dataclass
class _FixedTuner:
    fn: object
    config: object
    early_config_prune = None

    @property
    def configs(self):
        return [self.config]


class _SkipGemms(TorchDispatchMode):
    """Return uninitialised outputs for GEMMs: the recording needs shapes, not values."""

    OPS = {torch.ops.aten.mm.default, torch.ops.aten.addmm.default, torch.ops.aten.bmm.default,
           torch.ops.aten.baddbmm.default}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten.linear.default:  # (seen undecomposed on the CPU: F.linear, weight (N, K))
            x, w = args[0], args[1]
            return torch.empty((*x.shape[:-1], w.shape[0]), dtype=x.dtype, device=x.device)
        if func in self.OPS:
            a, b = (args[1], args[2]) if func in (torch.ops.aten.addmm.default, torch.ops.aten.baddbmm.default) \
                else (args[0], args[1])
            return torch.empty((*a.shape[:-1], b.shape[-1]), dtype=a.dtype, device=a.device)
        return func(*args, **(kwargs or {}))


KERNELS = [(WA, "_window_attention_tuned", "window_attention"), (CV, "_conv3x3_tuned", "conv3x3"),
           (FL, "_linear_tuned", "fused_linear"), (LN, "_add_layer_norm_kernel", "layer_norm"),
           (FM, "_mlp_tuned", "fused_mlp"), (AP, "_attention_proj_tuned", "attention_proj")]
MODULES = {name: module for module, _, name in KERNELS}


@contextlib.contextmanager
def recording(sink, passthrough=False):
    saved = [(module, attr, getattr(module, attr)) for module, attr, _ in KERNELS]
    saved += [(module, "unavailable_reason", module.unavailable_reason) for module, _, _ in KERNELS]
    for module, attr, name in KERNELS:
        setattr(module, attr, _Recorder(name, getattr(module, attr), sink, passthrough))
        if not passthrough:
            module.unavailable_reason = lambda device: None
    try:
        yield
    finally:
        for module, attr, value in saved:
            setattr(module, attr, value)


def record_forward(config: LUAConfig, precision: str, size, scale: int, batch: int = 1,
                   device: str = "cpu") -> list[Launch]:
    """Every kernel launch of one triton-backend forward. On the CPU nothing is executed (and the
    cuBLAS GEMMs are skipped); on a GPU the kernels run as recorded. ``size``: side or (h, w).
    ``precision`` "fp32x3": the fp32 mode with its Triton dots as three TF32 products
    (``LUA_FAST_FP32_DOTS=tf32x3``); suffixes "+mlp" ("bf16+mlp": each block's MLP as one
    ``fused_mlp`` launch, ``LUA_FAST_FUSED_MLP=1``) and "+attn" (attention + proj as one
    ``attention_proj`` launch, ``LUA_FAST_FUSED_ATTN_PROJ=1``), alone or both ("bf16+mlp+attn"), and
    "+cublas" (qkv, proj and fc2 on cuBLAS, ``LUA_FAST_TRITON_GEMMS=0``: the fp32 default)."""
    precision, *extras = precision.split("+")
    if set(extras) - {"mlp", "attn", "cublas"}:
        raise ValueError(f"unknown case suffix in {extras} (want +mlp, +attn and/or +cublas)")
    dots = "tf32x3" if precision == "fp32x3" else "ieee"
    precision = "fp32" if precision == "fp32x3" else precision
    prec = resolve(precision, None)
    torch.manual_seed(0)
    model = LUA(config).to(device, prec.storage).eval().requires_grad_(False)
    env = {"LUA_FAST_FP32_DOTS": dots, "LUA_FAST_FUSED_MLP": "1" if "mlp" in extras else "0",
           "LUA_FAST_FUSED_ATTN_PROJ": "1" if "attn" in extras else "0"}
    backend = TritonBackendLUA(model, prec, fused_gemms=False if "cublas" in extras else None)
    height, width = (size, size) if isinstance(size, int) else size
    x = torch.randn(batch, config.in_channels, height, width, device=device)
    sink: list[Launch] = []
    on_gpu = torch.device(device).type == "cuda"
    with recording(sink, passthrough=on_gpu), _SkipGemms() if not on_gpu else contextlib.nullcontext(), \
            mock.patch.dict(os.environ, env), torch.inference_mode():
        backend(x, (scale,))
    for launch in sink:
        named = dict(zip(launch.tuner.fn.arg_names, launch.args))
        launch.site, launch.flops = describe(launch.kernel, named, launch.kwargs)
    return sink


def launch_bytes(launch: Launch) -> int:
    """Bytes a launch must move at least once: each distinct tensor argument (by address: the unused
    pointers the wrappers pass alias a real argument) read or written once, whole."""
    skip = NOT_MOVED.get(launch.kernel, set())
    seen, total = set(), 0
    for name, value in zip(launch.tuner.fn.arg_names, launch.args):
        if isinstance(value, torch.Tensor) and name not in skip and value.data_ptr() not in seen:
            seen.add(value.data_ptr())
            total += value.numel() * value.element_size()
    return total


def describe(kernel: str, named: dict, kwargs: dict) -> tuple[str, int]:
    """(call-site label, FLOPs) of a launch, from its arguments."""
    module = MODULES[kernel]
    return module.launch_site(named, kwargs), module.launch_flops(named, kwargs)


# ------------------------------------------------------------------ JIT specialisation
def specialise(launch: Launch):
    """(signature, constexprs, attrs) as Triton's JIT builds them from these argument values."""
    fn = launch.tuner.fn
    sig, consts, attrs = {}, dict(launch.kwargs), {}
    for i, (name, value) in enumerate(zip(fn.arg_names, launch.args)):
        if isinstance(value, torch.Tensor):
            sig[name] = "*" + TYPES[value.dtype]
            if value.storage_offset() * value.element_size() % 16 == 0:
                attrs[(i,)] = [["tt.divisibility", 16]]
        elif isinstance(value, bool):
            sig[name] = "i1"
        elif isinstance(value, int):
            if value == 1:
                sig[name], consts[name] = "constexpr", 1
                continue
            sig[name] = "i64" if not -(2**31) <= value < 2**31 else "i32"
            if value % 16 == 0:
                attrs[(i,)] = [["tt.divisibility", 16]]
        elif isinstance(value, float):
            sig[name] = "fp32"
        else:
            raise TypeError(f"{name}: cannot specialise a {type(value).__name__}")
    for name in launch.kwargs:
        sig[name] = "constexpr"
    return sig, consts, attrs


def configs_for(launch: Launch):
    tuner = launch.tuner
    named = dict(zip(tuner.fn.arg_names, launch.args))
    configs = tuner.configs
    if tuner.early_config_prune:
        configs = tuner.early_config_prune(configs, named, **launch.kwargs)
    return configs, named


def dedupe(launches: list[Launch]) -> list[Launch]:
    """One entry per distinct compiled kernel x grid, with how often a forward launches it."""
    out: dict[tuple, Launch] = {}
    for launch in launches:
        sig, consts, attrs = specialise(launch)
        configs, named = configs_for(launch)
        grids = tuple(tuple(launch.grid({**named, **launch.kwargs, **c.kwargs})) for c in configs)
        key = (launch.kernel, launch.site, tuple(sorted(sig.items())), tuple(sorted(map(str, consts.items()))),
               tuple(sorted(attrs)), grids)
        if key in out:
            out[key].count += 1
        else:
            launch.key = key
            out[key] = launch
    return list(out.values())


# ------------------------------------------------------------------ reading the cubin
SASS_LINE = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)([^;]*);")


def sass(cubin: bytes) -> list[tuple[int, str, str]]:
    """(address, opcode with modifiers, operands) of every instruction."""
    return [(int(m.group(1), 16), m.group(3), m.group(4)) for m in SASS_LINE.finditer(sass_text(cubin))]


def sass_cache_dir() -> Path | None:
    """Where disassemblies are kept: ``LUA_FAST_SASS_CACHE`` ("" or "0": nowhere), by default
    ``$XDG_CACHE_HOME/lua_fast/sass`` (``~/.cache/lua_fast/sass``)."""
    where = os.environ.get("LUA_FAST_SASS_CACHE")
    if where is None:
        return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lua_fast" / "sass"
    return Path(where) if where not in ("", "0") else None


@functools.cache
def disassembler_id() -> str:
    """cuobjdump's version line (3 ms): another disassembler may print another text."""
    return subprocess.run([str(BIN / "cuobjdump"), "--version"], capture_output=True, text=True,
                          check=True).stdout.strip()


def sass_text(cubin: bytes) -> str:
    """``cuobjdump -sass`` of ``cubin``, kept in ``sass_cache_dir()`` like Triton keeps its cubins.

    Why a cache: each call costs 0.4-0.6 s on the development CPU whatever the cubin's size (the
    disassembler's start-up), and the bf16 128x128 report reads 146 cubins: 71 of its 81 s (profiled). The key
    is the cubin's bytes and the disassembler's version, so a changed kernel or tool reads afresh;
    an unreadable entry is disassembled again and rewritten."""
    folder = sass_cache_dir()
    path = None
    if folder is not None:
        key = hashlib.sha256(disassembler_id().encode() + b"\0" + cubin).hexdigest()
        path = folder / key[:2] / f"{key}.sass.zlib"
        with contextlib.suppress(OSError, zlib.error, UnicodeDecodeError):
            return zlib.decompress(path.read_bytes()).decode()
    with tempfile.NamedTemporaryFile(suffix=".cubin") as fh:
        fh.write(cubin)
        fh.flush()
        text = subprocess.run([str(BIN / "cuobjdump"), "-sass", fh.name], capture_output=True, text=True,
                              check=True).stdout
    if path is not None:
        with contextlib.suppress(OSError):  # (a read-only home: no cache, same answer)
            path.parent.mkdir(parents=True, exist_ok=True)
            # a unique temporary name, then a rename: forked workers may write one key at once
            atomic_write(path, lambda tmp: Path(tmp).write_bytes(zlib.compress(text.encode(), 6)))
    return text


def resources(cubin: bytes) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".cubin") as fh:
        fh.write(cubin)
        fh.flush()
        text = subprocess.run([str(BIN / "cuobjdump"), "-res-usage", fh.name], capture_output=True, text=True,
                              check=True).stdout
    m = re.search(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)", text)
    return {"registers": int(m.group(1)), "spill_bytes": int(m.group(2)) + int(m.group(4))}


def loops(code: list[tuple[int, str, str]]) -> list[tuple[int, int]]:
    """(start, end) addresses of each backward branch's body (the self-branch at the end excluded)."""
    found = []
    for addr, op, operands in code:
        if op.startswith("BRA"):
            m = re.search(r"0x([0-9a-f]+)", operands)
            if m and int(m.group(1), 16) < addr:
                found.append((int(m.group(1), 16), addr))
    return found


def load_widths(ops: list[str]) -> dict[str, int]:
    """Global loads by kind and width in bytes: LDG.32 ... LDG.128, LDGSTS.128 (cp.async), TMA."""
    out: dict[str, int] = {}
    for op in ops:
        base = op.split(".")[0]
        if base in ("LDG", "LDGSTS"):  # (not LDGDEPBAR, the cp.async group fence)
            kind = base
            width = next((w for w in ("128", "64") if f".{w}" in op), None)
            if width is None:
                width = "16" if (".U16" in op or ".S16" in op) else "8" if (".U8" in op or ".S8" in op) else "32"
            label = f"{kind}.{width}"
        elif op.startswith("UTMALDG"):
            label = "TMA"
        else:
            continue
        out[label] = out.get(label, 0) + 1
    return out


def analyse(compiled, trips, programs: int, weights: list[float] | None = None) -> dict:
    """Static cost of a launch.

    ``trips(body_opcodes) -> int`` gives a loop's trip count from what its body holds (e.g. a loop
    that stores is a loop over output tiles; compilers unroll short loops, so position alone cannot
    tell which source loop a SASS loop is). An instruction runs (product of the trips of the loops around it) times per warp. With
    ``weights`` (one per top-level loop, ordered by body length) a top-level loop runs in that share
    of the programs only (a uniform branch between loop variants), else in all of them."""
    code = sass(compiled.asm["cubin"])
    ops = [op for _, op, _ in code]
    res = resources(compiled.asm["cubin"])
    found = loops(code)
    inner = {i for i, (s0, e0) in enumerate(found)
             for j, (s1, e1) in enumerate(found) if i != j and s1 <= s0 and e0 <= e1 and (s0, e0) != (s1, e1)}
    outer = {i for i, (s0, e0) in enumerate(found)
             for j, (s1, e1) in enumerate(found) if i != j and s0 <= s1 and e1 <= e0 and (s0, e0) != (s1, e1)}
    counts = [trips([op for addr, op, _ in code if s0 <= addr <= e0]) for s0, e0 in found]
    top = sorted((i for i in range(len(found)) if i not in inner), key=lambda i: found[i][1] - found[i][0])
    share = {i: 1.0 for i in range(len(found))}
    if weights is not None and len(weights) == len(top):
        share.update(dict(zip(top, weights)))
    per_warp = mufu_per_warp = mma_flops_per_warp = 0.0
    for addr, op, operands in code:
        mult = 1.0
        for i, (start, end) in enumerate(found):
            if start <= addr <= end:
                mult *= counts[i] * (share[i] if i in top else 1.0)
        per_warp += mult
        if op.startswith("MUFU"):
            mufu_per_warp += mult
        mma_flops_per_warp += mult * mma_flops(op, operands)
    body_ops = []
    if found:  # the main loop: the longest innermost one
        start, end = max((found[i] for i in range(len(found)) if i not in outer), key=lambda se: se[1] - se[0])
        body_ops = [op for addr, op, _ in code if start <= addr <= end]
    bodies = [sum(1 for addr, _, _ in code if s0 <= addr <= e0) for s0, e0 in found]
    warps = compiled.metadata.num_warps
    warp_instr = per_warp * warps * programs
    # The busiest SM runs ceil(programs / SMs) programs and issues at most 4 warp-instructions a
    # clock (one warp at most 1): a launch of 32 programs leaves 100 SMs idle, which the
    # whole-GPU issue bound above does not see. (per_warp is the programs' average.)
    wave_clocks = max(math.ceil(programs / SMS) * per_warp * warps / ISSUES_PER_CLOCK, per_warp)
    # The two pipes an issue slot does not pay for in full: the MUFU unit (exp2, rcp, ...: 16 lanes a clock
    # per SM, so a warp-instruction holds it 2 SM-clocks) and the tensor cores (dense bf16/fp16 at
    # TENSOR_FLOPS_PER_CLOCK per SM; tf32 at half). Each is a hard bound of its own: the pipe bound is
    # the largest of the three, per busiest SM as the wave bound.
    mufu_clocks = mufu_per_warp * warps * MUFU_CLOCKS_PER_WARP_INSTRUCTION
    mma_clocks = mma_flops_per_warp * warps / TENSOR_FLOPS_PER_CLOCK
    busiest = math.ceil(programs / SMS)
    pipe_clocks = max(wave_clocks, busiest * mufu_clocks, busiest * mma_clocks)
    mma = "wgmma" if any(op.startswith("HGMMA") for op in ops) else \
        "mma.sync" if any(op.startswith("HMMA") for op in ops) else "none"
    loop_loads = load_widths(body_ops)
    vector = bool(loop_loads) and all(k.endswith(".128") or k == "TMA" for k in loop_loads)
    return {
        **res,
        "spill_instructions": sum(op.startswith(("STL", "LDL")) for op in ops),
        "shared_bytes": compiled.metadata.shared,
        "mma": mma,
        "instructions": len(code),
        "loops": len(found),
        "loop_body": len(body_ops),
        "loop_bodies": bodies,
        "trips": counts,
        "loop_global_loads": loop_loads,
        "loop_loads_16B": vector,
        # 16-byte async copies that allocate in L1 (cp.async.ca: LDGSTS without BYPASS; Triton >= 3.9
        # keeps a load's ".ca" on them), e.g. the taps-inner convs' input (narrower copies always do)
        "loop_l1_async_copies_16B": sum(op.startswith("LDGSTS") and ".128" in op and "BYPASS" not in op
                                        for op in body_ops),
        "warps": warps,
        "stages": compiled.metadata.num_stages,
        "programs": programs,
        "warp_instructions": int(warp_instr),
        "issue_us": warp_instr / ISSUE_RATE * 1e6,
        "wave_us": wave_clocks / CLOCK * 1e6,
        "mufu_warp_instructions": int(mufu_per_warp * warps * programs),
        "mufu_us": mufu_clocks * programs / SMS / CLOCK * 1e6,
        "mma_flops": mma_flops_per_warp * warps * programs,
        "tensor_us": mma_clocks * programs / SMS / CLOCK * 1e6,
        "pipe_us": pipe_clocks / CLOCK * 1e6,
    }


MMA_SHAPE = re.compile(r"^(?:\.)?(\d+)x(\d+)x(\d+)")


def mma_flops(op: str, operands: str) -> float:
    """Tensor-core FLOPs one warp's copy of an MMA instruction stands for, in bf16/fp16-equivalent
    FLOPs (tf32 counts double: half the rate). HGMMA.64xNxK is one warpgroup's (4 warps') product;
    HMMA.MNK (e.g. HMMA.16816) one warp's. The SASS regex stops an opcode at the shape's lowercase
    'x', so HGMMA's shape is read from the start of its operand text."""
    tf32 = 2.0 if ".TF32" in op or ".TF32" in operands.split(" ")[0] else 1.0
    if op.startswith("HGMMA"):
        m = MMA_SHAPE.match(op[len("HGMMA"):] + operands)  # ".64" + "x64x16.F32.BF16 ..."
        if m:
            return 2.0 * int(m.group(1)) * int(m.group(2)) * int(m.group(3)) / 4 * tf32
    elif op.startswith("HMMA."):
        digits = op.split(".")[1]  # 16816 = m16 n8 k16, 1688 = m16 n8 k8
        shape = {"16816": (16, 8, 16), "1688": (16, 8, 8), "884": (8, 8, 4)}.get(digits)
        if shape:
            return 2.0 * math.prod(shape) * tf32
    return 0.0


def compile_config(launch: Launch, config, arch: int, pdl: bool = False):
    """One config of a launch compiled for sm_<arch>: the compiled kernel, or the error as a string."""
    sig, consts, attrs = specialise(launch)
    if pdl:
        consts["PDL"] = True
    src = ASTSource(fn=launch.tuner.fn, signature=sig, constexprs={**consts, **config.kwargs}, attrs=attrs)
    options = {"num_warps": config.num_warps, "num_stages": config.num_stages}
    try:
        return triton.compile(src, target=GPUTarget("cuda", arch, 32),
                              options={**options, "launch_pdl": True} if pdl else options)
    except Exception as exc:  # report every failing variant
        return f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"


def trip_count(launch: Launch, config):
    """``trips(body_opcodes)`` for :func:`analyse`, from the kernel module's description."""
    module, meta = MODULES[launch.kernel], {**launch.kwargs, **config.kwargs}
    if hasattr(module, "loop_trips"):
        return lambda body: module.loop_trips(meta, body)
    return lambda body: module.main_loop_trips(meta)


def loop_weights(launch: Launch, named: dict):
    weights = getattr(MODULES[launch.kernel], "loop_weights", None)
    return weights(named, launch.kwargs) if weights else None


# ------------------------------------------------------------------ the report
CASES = [("bf16", 128, 2), ("bf16", 128, 4), ("bf16", 64, 2), ("fp16", 128, 2), ("fp32", 128, 2), ("fp32x3", 128, 2),
         ("bf16+mlp", 128, 2), ("bf16+mlp", 64, 2), ("bf16+mlp+attn", 128, 2), ("bf16+mlp+attn", 64, 2)]


_TASKS: list = []  # what the forked workers compile: (launch, config, arch[, pdl]) by index


def _variant_stats(index: int):
    """Compile and analyse the report's ``index``-th variant: its stats, or the error string."""
    launch, cfg, arch = _TASKS[index]
    compiled = compile_config(launch, cfg, arch)
    if isinstance(compiled, str):
        return compiled
    named = dict(zip(launch.tuner.fn.arg_names, launch.args))
    grid = launch.grid({**named, **launch.kwargs, **cfg.kwargs})
    stats = analyse(compiled, trip_count(launch, cfg), math.prod(grid), loop_weights(launch, named))
    stats["fits_smem"] = stats["shared_bytes"] <= SMEM_LIMIT.get(arch, 227 * 1024)
    stats["flop_floor_us"] = launch.flops / BF16_PEAK * 1e6
    stats["bytes"] = launch_bytes(launch)
    stats["memory_floor_us"] = stats["bytes"] / HBM_BYTES_PER_S * 1e6
    stats.update(l2_model(launch, named, cfg.kwargs))
    stats["model_us"] = max(stats["pipe_us"], stats.get("l2_model_us", stats["memory_floor_us"]))
    return stats


def l2_model(launch: Launch, named: dict, config: dict) -> dict:
    """``{"l2_bytes", "l2_model_us"}`` of a launch under a config, for kernels whose module
    describes their operand re-reads (``launch_l2_bytes``), else ``{}``."""
    count = getattr(MODULES[launch.kernel], "launch_l2_bytes", None)
    if count is None:
        return {}
    l2_bytes = count(named, {**launch.kwargs, **config})
    return {"l2_bytes": l2_bytes, "l2_model_us": l2_bytes / L2_BYTES_PER_S * 1e6}


def report(archs: list[int], cases, out_dir: Path, name: str = "kernel_report_sm{arch}.json", jobs: int = 1,
           kernels=None) -> int:
    """Every variant compiled and analysed, ``jobs`` at a time (forked processes: compiling is
    CPU-bound, ~0.5 s a variant, and the variants are independent). ``kernels``: only these
    kernels' launches (the forward totals then cover only them)."""
    failures = 0
    config = LUAConfig.flux()
    for arch in archs:
        rows, totals = [], []
        for precision, size, scale in cases:
            launches = [launch for launch in dedupe(record_forward(config, precision, size, scale))
                        if kernels is None or launch.kernel in kernels]
            _TASKS[:] = [(launch, cfg, arch) for launch in launches for cfg in configs_for(launch)[0]]
            results = in_processes(_variant_stats, len(_TASKS), jobs)
            best, best_wave, best_pipe, best_model, memory = {}, {}, {}, {}, {}
            for (launch, cfg, _), stats in zip(_TASKS, results):
                row = {"precision": precision, "latent": size, "scale": scale, "kernel": launch.kernel,
                       "site": launch.site, "launches": launch.count,
                       "config": {**cfg.kwargs, "num_warps": cfg.num_warps, "num_stages": cfg.num_stages}}
                if isinstance(stats, str):
                    failures += 1
                    rows.append({**row, "error": stats})
                    print(f"sm_{arch} {launch.site} {cfg}: FAILED {stats}")
                    continue
                rows.append({**row, **stats})
                if stats["fits_smem"]:
                    key = id(launch)
                    best[key] = min(best.get(key, (float("inf"), 0))[0], stats["issue_us"]), launch.count
                    best_wave[key] = min(best_wave.get(key, (float("inf"), 0))[0], stats["wave_us"]), launch.count
                    best_pipe[key] = min(best_pipe.get(key, (float("inf"), 0))[0], stats["pipe_us"]), launch.count
                    best_model[key] = min(best_model.get(key, (float("inf"), 0))[0], stats["model_us"]), launch.count
                    memory[key] = stats["memory_floor_us"], launch.count
            total = sum(us * count for us, count in best.values())
            wave_total = sum(us * count for us, count in best_wave.values())
            pipe_total = sum(us * count for us, count in best_pipe.values())
            memory_total = sum(us * count for us, count in memory.values())
            model_total = sum(us * count for us, count in best_model.values())
            totals.append({"precision": precision, "latent": size, "scale": scale,
                           "triton_issue_us_per_forward": total, "triton_wave_us_per_forward": wave_total,
                           "triton_pipe_us_per_forward": pipe_total, "triton_memory_us_per_forward": memory_total,
                           "triton_model_us_per_forward": model_total})
            print(f"sm_{arch} {precision} {size}x{size} x{scale}: sum over launches of the best config's "
                  f"issue bound = {total:.0f} us, wave bound = {wave_total:.0f} us, pipe bound = {pipe_total:.0f} us; "
                  f"memory floor = {memory_total:.0f} us; L2 model = {model_total:.0f} us")
        out = {
            "what": "static cost of every Triton kernel variant the released config launches (see the script)",
            "triton": triton.__version__, "torch": torch.__version__, "lua_fast": lua_fast.__version__,
            "arch": f"sm_{arch}{'a' if arch == 90 else ''}", "issue_rate_per_s": ISSUE_RATE,
            "bf16_peak_flops": BF16_PEAK, "mufu_clocks_per_warp_instruction": MUFU_CLOCKS_PER_WARP_INSTRUCTION,
            "tensor_flops_per_clock": TENSOR_FLOPS_PER_CLOCK, "hbm_bytes_per_s": HBM_BYTES_PER_S,
            "l2_bytes_per_s": L2_BYTES_PER_S,
            "forward_totals": totals, "variants": rows,
        }
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / name.format(arch=arch, triton=triton.__version__)
        path.write_text(json.dumps(out, indent=1) + "\n")
        print(f"wrote {path}")
        print(markdown(out))
    return failures


def config_label(cfg: dict) -> str:
    """'128x128x64 g3 resident w8 s3': tile, the kernel's own switches when set, warps, stages."""
    tile = "x".join(str(cfg[k]) for k in ("BLOCK_M", "BLOCK_N", "BLOCK_H", "BLOCK_K") if k in cfg)
    flags = [f"g{cfg['N_GROUP']}"] if cfg.get("A_RESIDENT") is not None and cfg.get("N_GROUP", 1) != 1 else []
    flags += [name for key, name in (("A_RESIDENT", "resident"), ("R_PREFETCH", "r-prefetch"), ("WHOLE", "whole"),
                                     ("BIAS_TABLE", "bias-table")) if cfg.get(key)]
    return " ".join([tile, *flags, f"w{cfg['num_warps']} s{cfg['num_stages']}"])


def markdown(report_json: dict) -> str:
    """The best config per (case, site) as a table, for benchmarks/NOTES.md."""
    lines = [f"Triton {report_json['triton']}, {report_json['arch']}; best autotune config per call site "
             "(lowest pipe bound that fits shared memory; MUFU and tensor us per launch, whole GPU):", "",
             "| case | site | launches | config | programs | regs | spill B | smem KiB | mma | loop loads | "
             "warp-instr/launch | issue us/launch | wave us/launch | MUFU us | tensor us | pipe us/launch | "
             "FLOP floor us | memory floor us | L2 MB | L2 model us |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    best: dict[tuple, dict] = {}
    for row in report_json["variants"]:
        if "error" in row or not row["fits_smem"]:
            continue
        key = (row["precision"], row["latent"], row["scale"], row["site"])
        if key not in best or bound_us(row) < bound_us(best[key]):
            best[key] = row
    for (prec, size, scale, site), row in best.items():
        loads = ", ".join(f"{k}:{v}" for k, v in sorted(row["loop_global_loads"].items())) or "-"
        lines.append(f"| {prec} {size}x{size} x{scale} | {site} | {row['launches']} | {config_label(row['config'])} | "
                     f"{row['programs']} | {row['registers']} | {row['spill_bytes']} | "
                     f"{row['shared_bytes'] // 1024} | {row['mma']} | {loads} | {row['warp_instructions'] / 1e6:.1f} M | "
                     f"{row['issue_us']:.1f} | {row.get('wave_us', float('nan')):.1f} | "
                     f"{row.get('mufu_us', float('nan')):.1f} | {row.get('tensor_us', float('nan')):.1f} | "
                     f"{bound_us(row):.1f} | {row['flop_floor_us']:.1f} | {row.get('memory_floor_us', float('nan')):.1f} | "
                     + (f"{row['l2_bytes'] / 1e6:.0f} | {row['l2_model_us']:.1f} |" if "l2_bytes" in row else "- | - |"))
    lines.append("")
    for t in report_json["forward_totals"]:
        wave, pipe = t.get("triton_wave_us_per_forward"), t.get("triton_pipe_us_per_forward")
        memory, model = t.get("triton_memory_us_per_forward"), t.get("triton_model_us_per_forward")
        lines.append(f"- {t['precision']} {t['latent']}x{t['latent']} x{t['scale']}: Triton kernels' issue bound "
                     f"per forward {t['triton_issue_us_per_forward'] / 1e3:.2f} ms"
                     + (f", wave bound {wave / 1e3:.2f} ms" if wave is not None else "")
                     + (f", pipe bound {pipe / 1e3:.2f} ms" if pipe is not None else "")
                     + (f"; memory floor {memory / 1e3:.2f} ms" if memory is not None else "")
                     + (f"; L2 model (best per site) {model / 1e3:.2f} ms" if model is not None else ""))
    return "\n".join(lines)


def bound_us(row: dict) -> float:
    """A variant's tightest static bound: the pipe bound, or for reports written before it, the wave
    (then issue) bound."""
    return row.get("pipe_us", row.get("wave_us", row["issue_us"]))


def _quick_status(index: int) -> str:
    """Compile the quick check's ``index``-th launch (its first config): "ok ..." or "FAILED: why"."""
    launch, cfg, arch, pdl = _TASKS[index]
    start = time.time()
    compiled = compile_config(launch, cfg, arch, pdl)
    if isinstance(compiled, str):
        return f"FAILED: {compiled}"
    if pdl and not pdl_ordered(compiled.asm["ptx"]):
        return "FAILED: no griddepcontrol.wait before the first memory access and griddepcontrol.launch_dependents"
    return f"ok  smem {compiled.metadata.shared // 1024:4d} KiB {time.time() - start:4.1f}s"


def quick_check(archs: list[int], cases, pdl: bool = False, jobs: int = 1, kernels=None) -> int:
    """Compile one config of each distinct launch of each case's forward (``pdl``: the PDL variant,
    which must wait for the previous grid before it lets the next one launch), ``jobs`` at a time."""
    print(f"triton {triton.__version__}")
    labels = []
    _TASKS.clear()
    for arch in archs:
        for precision, size, scale in cases:
            for launch in dedupe(record_forward(LUAConfig.flux(), precision, size, scale)):
                if kernels is not None and launch.kernel not in kernels:
                    continue
                _TASKS.append((launch, configs_for(launch)[0][0], arch, pdl))
                labels.append(f"sm_{arch} {precision} {launch.site:44s}")
    statuses = in_processes(_quick_status, len(_TASKS), jobs)
    for label, status in zip(labels, statuses):
        print(f"{label} {status}")
    return sum(status.startswith("FAILED") for status in statuses)


def in_processes(fn, n: int, jobs: int) -> list:
    """[fn(0), ..., fn(n - 1)], in ``jobs`` forked processes when jobs > 1 (they see ``_TASKS``)."""
    if jobs <= 1:
        return [fn(i) for i in range(n)]
    import multiprocessing as mp

    with mp.get_context("fork").Pool(jobs) as pool:
        return pool.map(fn, range(n), chunksize=1)


def pdl_ordered(ptx: str) -> bool:
    """The PDL rule in a kernel's PTX: one griddepcontrol.wait, before any global memory access and
    before griddepcontrol.launch_dependents."""
    wait, launch = ptx.find("griddepcontrol.wait"), ptx.find("griddepcontrol.launch_dependents")
    first_access = min((i for i in (ptx.find("ld.global"), ptx.find("st.global"), ptx.find("cp.async"))
                        if i >= 0), default=len(ptx))
    return 0 <= wait < launch and wait < first_access and ptx.count("griddepcontrol.wait") == 1


def main() -> int:
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # (here only: the JIT's cache key includes it)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="compile check only (one config per launch)")
    parser.add_argument("--report", action="store_true", help="the full report (JSON + markdown)")
    parser.add_argument("--arch", type=int, nargs="+", default=[90])
    parser.add_argument("--cases", nargs="+", default=None,
                        help="precision:size:scale, e.g. bf16:128:2 (default: the released-config set)")
    parser.add_argument("--jobs", type=int, default=1, help="variants compiled in parallel (processes)")
    parser.add_argument("--pdl", action="store_true", help="--quick: the programmatic-dependent-launch variants")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--name", default="kernel_report_sm{arch}.json", help="report file name ({arch}, {triton})")
    parser.add_argument("--kernels", nargs="+", default=None, choices=sorted(MODULES),
                        help="only these kernels' launches")
    args = parser.parse_args()
    cases = [(p, int(s), int(k)) for p, s, k in (c.split(":") for c in args.cases)] if args.cases else None
    if args.report:
        failures = report(args.arch, cases or CASES, Path(args.out), args.name, args.jobs, args.kernels)
    else:
        failures = quick_check(args.arch, cases or [("bf16", 32, 4), ("fp32", 32, 4)], pdl=args.pdl, jobs=args.jobs,
                               kernels=args.kernels)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
