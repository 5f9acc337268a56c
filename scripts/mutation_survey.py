"""Can the tests fail? Plant one bug at a time and see whether the test files meant to guard that
code catch it (a hand-written mutation survey; no mutation-testing package is needed).

Each mutant is one exact text replacement in one source file, with the test files that should
catch it. The survey runs in a clone of the working tree (``--work``, default a temporary folder;
the native extension's built library is copied in), so the checkout itself is never edited:

    python scripts/mutation_survey.py                  # every mutant
    python scripts/mutation_survey.py --only R1 T3     # some
    python scripts/mutation_survey.py --full-suite     # survivors again against the whole suite

A mutant is *killed* when its tests fail (or time out), *survived* when they pass. The tests of
each group are run once unmutated first: a group that fails unmutated stops the survey. Results go
to ``--json`` (default ``benchmarks/results/mutation_survey.json``) with each mutant's first
failing test. Some mutants are meant to survive, documented as ``equivalent``: a change the
numerics cannot show (e.g. a mask of -1000 instead of the released -100: exp(-100) is already
below fp32's resolution next to 1). A survivor that is not marked so is a gap in the tests.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

REFERENCE = ("tests/test_official_parity.py", "tests/test_reference_numerics.py", "tests/test_windows.py")
WINDOW_OPS = ("tests/test_window_ops.py",)
TORCH = ("tests/test_torch_backend.py",)
TILING = ("tests/test_tiling.py",)
CHECKPOINTS = ("tests/test_checkpoint_format.py", "tests/test_errors.py", "tests/test_hardening.py")
UPSCALE = ("tests/test_errors.py", "tests/test_hardening.py")
ATTENTION = ("tests/test_window_attention.py",)
GLUE = ("tests/test_fused_glue.py",)
HEADS = ("tests/test_upsample_heads.py",)
DIFFUSERS = ("tests/test_diffusers_integration.py",)
COMFYUI = ("tests/test_comfyui.py",)
GRAPH_KEYS = ("tests/test_cuda_graph_keys.py", "tests/test_cuda_graph_safety.py")
LOADING = ("tests/test_backends.py", "tests/test_config.py", "tests/test_checkpoint_format.py")
CLI = ("tests/test_cli.py",)
CACHES = ("tests/test_windows.py", "tests/test_cuda_graph_safety.py")
FILES = ("tests/test_cli.py", "tests/test_hardening.py")
FORKING = ("tests/test_forking.py",)
MLP = ("tests/test_fused_mlp.py",)


@dataclass
class Mutant:
    id: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]
    what: str
    equivalent: str = ""  # why the numerics cannot show it, for mutants expected to survive


M = Mutant
MUTANTS = [
    # ---- reference model: the released numerics
    M("R1", "lua_fast/reference/windows.py", "MASK_VALUE = -100.0", "MASK_VALUE = -10.0", REFERENCE,
      "shift mask -10 instead of the released -100"),
    M("R2", "lua_fast/reference/windows.py", "MASK_VALUE = -100.0", "MASK_VALUE = -1000.0", REFERENCE,
      "shift mask -1000 instead of -100",
      equivalent="exp(-100) ~ 4e-44 is below fp32 resolution next to the in-region weights"),
    M("R3", "lua_fast/reference/windows.py", "(rows >= height - window).long()", "(rows > height - window).long()",
      REFERENCE, "row regions split one row late"),
    M("R4", "lua_fast/reference/windows.py", "return dy * (2 * window - 1) + dx", "return dy * (2 * window - 1) - dx",
      REFERENCE, "relative position index with dx negated (negative indices wrap silently)"),
    M("R5", "lua_fast/reference/windows.py",
      "x = windows.view(-1, height // window, width // window, window, window, c)\n    return x.permute(0, 1, 3, 2, 4, 5)",
      "x = windows.view(-1, height // window, width // window, window, window, c)\n    return x.permute(0, 2, 1, 3, 4, 5)",
      REFERENCE, "window_reverse swaps the window grid's rows and columns"),
    M("R6", "lua_fast/reference/model.py", "y = torch.roll(y, shifts=(self.shift, self.shift), dims=(1, 2))",
      "y = torch.roll(y, shifts=(-self.shift, -self.shift), dims=(1, 2))", REFERENCE, "reverse roll in the wrong direction"),
    M("R7", "lua_fast/reference/model.py", "self.scale = self.head_dim**-0.5", "self.scale = dim**-0.5", REFERENCE,
      "attention scale from the embedding width"),
    M("R8", "lua_fast/reference/model.py", "LEAKY_SLOPE = 0.01", "LEAKY_SLOPE = 0.02", REFERENCE, "LeakyReLU slope 0.02"),
    M("R9", "lua_fast/reference/model.py", "return self.fc2(F.gelu(self.fc1(x)))",
      "return self.fc2(F.gelu(self.fc1(x), approximate='tanh'))", REFERENCE, "tanh GELU instead of the exact one"),
    M("R10", "lua_fast/reference/model.py", "LAYER_NORM_EPS = 1e-5", "LAYER_NORM_EPS = 1e-3", REFERENCE,
      "LayerNorm eps 1e-3"),
    M("R11", "lua_fast/reference/model.py", "return t + tokens(self.conv(image(y, height, width)))",
      "return y + tokens(self.conv(image(y, height, width)))", REFERENCE, "RSTB residual from the blocks' output"),
    M("R12", "lua_fast/reference/model.py", "return self.conv_after_body(image(t, height, width)) + f",
      "return self.conv_after_body(image(t, height, width))", REFERENCE, "trunk's long skip dropped"),
    M("R13", "lua_fast/reference/model.py", "{s: head(g, s)[..., : s * height, : s * width] for s in scales}",
      "{s: head(g, s)[..., : s * height, : s * height] for s in scales}", REFERENCE,
      "output cropped square (wrong for wide latents)"),
    M("R14", "lua_fast/config.py", "return 0 if block % 2 == 0 else self.window_size // 2",
      "return 0 if block % 2 == 1 else self.window_size // 2", REFERENCE, "even blocks shift instead of odd"),
    M("R15", "lua_fast/reference/model.py", "scores = scores + self.relative_position_bias().unsqueeze(0)",
      "scores = scores + self.relative_position_bias().transpose(-1, -2).unsqueeze(0)", REFERENCE,
      "relative position bias transposed"),
    # ---- padding
    M("P1", "lua_fast/padding.py", 'return torch.nn.functional.pad(x, (0, pw, 0, ph), mode="reflect")',
      'return torch.nn.functional.pad(x, (0, pw, 0, ph), mode="replicate")', REFERENCE,
      "replicate padding instead of the released reflect"),
    M("P2", "lua_fast/padding.py", "return torch.where(idx < size, idx, period - idx)",
      "return torch.where(idx < size, idx, (period - idx - 1).clamp_min(0))", REFERENCE,
      "repeated mirror padding (short sides) off by one"),
    M("P3", "lua_fast/padding.py", "if ph < height and pw < width:", "if ph <= height and pw <= width:", REFERENCE,
      "reflect pad where it is undefined (pad == side)"),
    # ---- window ops' PyTorch fallbacks
    M("W1", "lua_fast/ops/window_ops.py", "x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))\n    return ref",
      "x = torch.roll(x, shifts=(shift, shift), dims=(1, 2))\n    return ref", WINDOW_OPS,
      "fallback partition rolls the wrong way"),
    M("W2", "lua_fast/ops/window_ops.py", "if not 0 <= shift < window:", "if not 0 <= shift <= window:", WINDOW_OPS,
      "shift == window accepted"),
    M("W3", "lua_fast/ops/window_ops.py", "return ref.window_partition(labels[None, :, :, None], window).squeeze(-1).to(torch.uint8)",
      "return ref.window_partition(labels[None, :, :, None].transpose(1, 2), window).squeeze(-1).to(torch.uint8)",
      WINDOW_OPS, "fallback region labels transposed"),
    # ---- torch backend
    M("T1", "lua_fast/backends/torch_backend.py", "bias = torch.index_select(wide.t(), 1, attn.relative_position_index.view(-1)).to(dtype)\n    return bias.view(attn.num_heads, n, n)",
      "bias = torch.index_select(wide.t(), 1, attn.relative_position_index.view(-1)).to(dtype)\n    return bias.view(attn.num_heads, n, n).transpose(-1, -2)",
      TORCH, "torch backend's bias transposed"),
    M("T2", "lua_fast/backends/torch_backend.py", "            if mask is not None:\n                scores += mask",
      "            if mask is not None and False:\n                scores += mask", TORCH,
      "in-place CPU path drops the shift mask"),
    M("T3", "lua_fast/backends/torch_backend.py", 'scores = (workspace or Workspace()).take("scores"',
      'scores = (workspace or Workspace()).take("qkv"', TORCH, "scores written over the qkv buffer they are computed from"),
    M("T4", "lua_fast/backends/torch_backend.py", "bias = bias if mask is None else bias.unsqueeze(0) + mask",
      "bias = bias if mask is None else bias.unsqueeze(0)", TORCH, "SDPA path drops the shift mask"),
    M("T5", "lua_fast/backends/torch_backend.py", "return mlp.fc2(torch.ops.aten.gelu_(hidden) if _reuse_memory(hidden) else F.gelu(hidden))",
      "return mlp.fc2(torch.ops.aten.gelu_(hidden, approximate='tanh') if _reuse_memory(hidden) else F.gelu(hidden))",
      TORCH, "in-place GELU approximated"),
    M("T6", "lua_fast/backends/torch_backend.py",
      "        if buf is None or buf.numel() < numel or buf.dtype != like.dtype or buf.device != like.device:",
      "        if buf is None or buf.numel() < numel or buf.device != like.device:", TORCH,
      "workspace reused across dtypes",
      equivalent="a workspace lives for one forward, whose buffers all hold its one activation dtype "
                 "(\"mixed\", under autocast, does not reuse memory)"),
    # ---- tiling
    M("L1", "lua_fast/tiling.py", "last = -(-(size - tile) // window) * window", "last = (size - tile) // window * window",
      TILING, "last tile stops short of the end"),
    M("L2", "lua_fast/tiling.py", "w[length - overlap_after:] = torch.minimum(", "w[length - overlap_after:] = torch.maximum(",
      TILING, "a tile's two ramps combined with max"),
    M("L3", "lua_fast/tiling.py", "oy0 = ys[iy - 1] + tile - y0 if iy > 0 else 0", "oy0 = ys[iy - 1] + tile - y0 - 1 if iy > 0 else 0",
      TILING, "overlap with the tile above one row short"),
    M("L4", "lua_fast/tiling.py", "BLEND_MARGIN = 0.375", "BLEND_MARGIN = 0.0", TILING,
      "blend ramps over the whole overlap (the pre-2026-11-29 blend)"),
    M("L5", "lua_fast/tiling.py", "for tile in range(smallest, largest + 1, window) if count(tile) <= most]",
      "for tile in range(smallest, largest + 1, window)]", TILING, "least_work_tile allows more tiles"),
    M("L6", "lua_fast/tiling.py", "chunk = max((c for c in range(1, batch) if self.estimate(height, width, c) + held <= self.budget),",
      "chunk = max((c for c in range(1, batch) if self.estimate(height, width, c) <= self.budget),", TILING,
      "batch chunks ignore the outputs held"),
    M("L7", "lua_fast/tiling.py", "        trunk += 2 * tokens * n * max(config.num_heads)  # scores and softmax",
      "        trunk += 0  # scores and softmax", TILING, "estimate forgets the eager attention scores"),
    M("L8", "lua_fast/tiling.py", "return sum(s * s * height * width * (batch * channels * (wide + element_size) + wide) for s in scales)",
      "return sum(s * s * height * width * (batch * channels * wide + wide) for s in scales)", TILING,
      "blend memory forgets the output it is divided into"),
    M("L9", "lua_fast/tiling.py", "overall, whole = start * total + done * n, self.batch * total",
      "overall, whole = start * total + done, self.batch * total", TILING, "batch progress counts an untiled chunk as one item"),
    M("L10", "lua_fast/tiling.py", "step = max(window, (tile - overlap) // window * window)", "step = max(window, (tile - overlap) // window * window + window)",
      TILING, "tile stride one window too long (overlaps below the asked one)"),
    # ---- upscale's contract
    M("U1", "lua_fast/upscaler.py", "        x = latents.to(self.dtype, memory_format=torch.contiguous_format)",
      "        x = latents.to(self.dtype)", UPSCALE + TORCH, "strided inputs not made contiguous"),
    M("U2", "lua_fast/upscaler.py", "    if all(bool(torch.isfinite(o).all()) for o in outputs.values()):\n        return",
      "    if True:\n        return", UPSCALE, "output NaN/Inf check disabled"),
    M("U3", "lua_fast/upscaler.py", "found.update((~torch.isfinite(t)).flatten(1).any(1).nonzero().flatten().tolist())",
      "found.update((~torch.isfinite(t)).flatten(1).any(0).nonzero().flatten().tolist()[:1])", UPSCALE,
      "wrong batch items named in NaN errors"),
    M("U4", "lua_fast/upscaler.py", "scales = tuple(dict.fromkeys(asked))", "scales = tuple(sorted(dict.fromkeys(asked)))",
      UPSCALE + TORCH, "scales reordered (first asked no longer first)",
      equivalent="each head reads the same trunk output, and the outputs are returned in the order asked"),
    # ---- checkpoints
    M("C1", "lua_fast/checkpoint.py", "non_finite = [k for k, v in state_dict.items() if v.is_floating_point() and not torch.isfinite(v).all()]",
      "non_finite = []", CHECKPOINTS, "NaN/Inf weights accepted"),
    M("C2", "lua_fast/checkpoint.py", "k for k, v in derived.items() if k in state_dict and not torch.equal(state_dict[k].to(v.dtype).cpu(), v)",
      "k for k, v in derived.items() if False", CHECKPOINTS, "derived buffers not compared with the spec"),
    M("C3", "lua_fast/checkpoint.py", "unexpected = [k for k in state_dict if k not in expected]", "unexpected = []",
      CHECKPOINTS, "unexpected keys accepted"),
    M("C4", "lua_fast/checkpoint.py", "return config, {**state_dict, **derived}", "return config, {**derived, **state_dict}",
      CHECKPOINTS, "checkpoint's own derived buffers kept (a uint8 index indexes as a mask)"),
    # ---- integrations
    M("I1", "lua_fast/integrations/diffusers.py", "x = packed.view(b, h // 2, w // 2, channels // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)",
      "x = packed.view(b, h // 2, w // 2, channels // 4, 2, 2).permute(0, 3, 1, 5, 2, 4)", DIFFUSERS,
      "FLUX unpacking swaps the 2x2 patch's axes"),
    M("I2", "lua_fast/integrations/diffusers.py", "        return latents * std / scaling + mean",
      "        return latents * std / scaling", DIFFUSERS, "SDXL latents_mean dropped"),
    M("I3", "lua_fast/integrations/diffusers.py", "        z = (raw - (getattr(cfg, \"shift_factor\", None) or 0.0)) * scaling",
      "        z = raw * scaling", DIFFUSERS, "FLUX shift_factor dropped on the way back"),
    M("I4", "lua_fast/integrations/comfyui/nodes.py", "    result = dict(latent)\n", "    result = {}\n", COMFYUI,
      "the LATENT's other entries (noise_mask, batch_index) dropped"),
    M("I5", "lua_fast/integrations/comfyui/nodes.py", "    result[\"samples\"] = out.to(model_management.intermediate_device(), dtype=samples.dtype)",
      "    result[\"samples\"] = out.to(model_management.intermediate_device())", COMFYUI,
      "output not cast back to the LATENT's dtype"),
    M("I6", "lua_fast/cuda_graphs.py", "return (tuple(x.shape), x.dtype, scales,", "return (tuple(x.shape), scales,", GRAPH_KEYS,
      "CUDA-graph key without the dtype"),
    # ---- loading, dispatch, precision, caches
    M("D1", "lua_fast/dispatch.py", "            if reason is None:\n                return BACKENDS[candidate]",
      "            if reason is None and candidate != \"torch\":\n                return BACKENDS[candidate]", LOADING,
      "auto skips the torch backend"),
    M("D2", "lua_fast/precision.py", "    if dtype is not None and dtype != storage:", "    if False:", LOADING,
      "precision and a disagreeing dtype accepted"),
    M("D3", "lua_fast/precision.py", '    compute = mixed_dtype if precision == "mixed" else storage',
      "    compute = storage", LOADING, '"mixed" computes in its storage dtype'),
    M("D4", "lua_fast/checkpoint.py", "        state_dict = {k[len(prefix):]: v for k, v in state_dict.items()}\n    prefix = _wrapper_prefix",
      "        state_dict = {k[len(prefix) + 1:]: v for k, v in state_dict.items()}\n    prefix = _wrapper_prefix",
      LOADING, "framework prefixes stripped one character too far"),
    M("D5", "lua_fast/lru.py", "        while len(self._items) > 1 and (len(self._items) > self.capacity",
      "        while len(self._items) > 1 and (len(self._items) > self.capacity + 1", CACHES,
      "caches keep one entry over their capacity"),
    M("D6", "lua_fast/lru.py", "                self._items.move_to_end(key)\n                return _hand_out",
      "                return _hand_out", CACHES, "cache hits not marked recent (FIFO, not LRU)"),
    M("D7", "lua_fast/cli.py", "    size = int(float(match.group(1)) * _BYTE_UNITS[match.group(2)])",
      "    size = int(float(match.group(1))) * _BYTE_UNITS[match.group(2)]", CLI, "1.5GB read as 1GB"),
    # ---- files, forking, CUDA-graph eviction
    M("F1", "lua_fast/files.py", "        os.chmod(tmp, mode)  # after the write", "        pass  # after the write", FILES,
      "outputs keep the temporary file's private mode"),
    M("F2", "lua_fast/files.py", "    if latents.dim() == 3 and latents.shape[0] == channels:", "    if latents.dim() == 3:",
      FILES, "any 3-D latent file taken as one latent (FLUX's packed ones too)"),
    M("F3", "lua_fast/files.py", "        tensors = {COMFYUI_KEY: latents, COMFYUI_VERSION_KEY: torch.zeros(0, dtype=torch.float32, device=\"cpu\")}",
      "        tensors = {COMFYUI_KEY: latents}", FILES,
      ".latent outputs without ComfyUI's version marker (LoadLatent would divide by 0.18215)"),
    M("F4", "lua_fast/forking.py", "    if _state[\"cpu_work\"] and torch.get_num_threads() > 1 and _libgomp_loaded():",
      "    if False:", FORKING, "forked children keep the pool that hangs"),
    M("G1", "lua_fast/cuda_graphs.py", "            with entry.lock:\n                entry.done.synchronize()\n            del self._graphs[key]",
      "            del self._graphs[key]", GRAPH_KEYS, "a graph evicted while its replay may still run"),
    M("G2", "lua_fast/cuda_graphs.py", "                    self._evict(keep=self._max_graphs - 1)", "                    self._evict(keep=self._max_graphs)",
      GRAPH_KEYS, "one graph over max_cuda_graphs"),
    # ---- Triton kernels (interpreted on the CPU)
    M("K1", "lua_fast/kernels/window_attention.py",
      "                s = tl.where(q_label[:, None] == k_label[None, :], s, s + MASK_LOG2)\n            if not EVEN:",
      "                s = tl.where(q_label[:, None] != k_label[None, :], s, s + MASK_LOG2)\n            if not EVEN:",
      ATTENTION, "key-block kernel masks the same-region pairs"),
    M("K7", "lua_fast/kernels/conv3x3.py", "edges = (py > 0).to(tl.int32) | ((py < height - 1).to(tl.int32) << 1)",
      "edges = (py > 0).to(tl.int32) | ((py < height).to(tl.int32) << 1)", HEADS,
      "conv reads the row below the last one (another image's, or past the end)"),
    M("K8", "lua_fast/kernels/layer_norm.py", "            xc = tl.where(ok, x - mean[:, None], 0.0)",
      "            xc = x - mean[:, None]", GLUE, "LayerNorm variance over the padded columns too"),
    M("K9", "lua_fast/kernels/layer_norm.py", "                s = s.to(t_ptr.dtype.element_ty)", "                pass", GLUE,
      "LayerNorm reads the unrounded residual sum (not the stream's bits)"),
    M("K10", "lua_fast/kernels/window_attention.py", "+ (x >= width - WINDOW).to(tl.int32) + (x >= width - SHIFT).to(tl.int32)",
      "+ (x >= width - WINDOW).to(tl.int32) + (x > width - SHIFT).to(tl.int32)", ATTENTION,
      "kernel's column regions split one column late"),
    M("K11", "lua_fast/kernels/fused_mlp.py", "            h = _bias_act(h, b1_ptr, offs_h, True, True).to(w2_ptr.dtype.element_ty)",
      "            h = _bias_act(h, b1_ptr, offs_h, True, False).to(w2_ptr.dtype.element_ty)", MLP,
      "whole-MLP kernel without its GELU"),
    M("K2", "lua_fast/kernels/window_attention.py", "factor = torch.tensor([scale * LOG2E, 1.0, 1.0]",
      "factor = torch.tensor([scale, 1.0, 1.0]", ATTENTION, "q not pre-scaled by log2(e) for exp2"),
    M("K3", "lua_fast/kernels/window_attention.py", "return tl.where(v >= size, v - size, v)",
      "return tl.where(v > size, v - size, v)", ATTENTION, "rolled coordinate wraps one late"),
    M("K4", "lua_fast/kernels/fused_linear.py", "acc = 0.5 * acc * (1.0 + tl.math.erf(acc * 0.7071067811865476))",
      "acc = 0.5 * acc * (1.0 + tl.math.erf(acc * 0.7))", GLUE, "GEMM epilogue GELU constant rounded"),
    M("K5", "lua_fast/kernels/layer_norm.py", "rstd = 1.0 / tl.sqrt(tl.sum(xc * xc, 1) / D + eps)",
      "rstd = 1.0 / tl.sqrt(tl.sum(xc * xc, 1) / (D - 1) + eps)", GLUE, "LayerNorm kernel's unbiased variance"),
    M("K6", "lua_fast/kernels/conv3x3.py", "if pixel_shuffle:  # column 4c + s -> s * Cout/4 + c",
      "if False:  # column 4c + s -> s * Cout/4 + c", HEADS, "pixel-shuffle conv columns not permuted"),
]


@dataclass
class Result:
    id: str
    what: str
    file: str
    tests: list[str]
    outcome: str  # killed / survived / timeout / equivalent-survived / equivalent-killed
    seconds: float
    first_failure: str = ""
    full_suite: str = ""
    equivalent: str = ""
    extra: dict = field(default_factory=dict)


def clone(work: Path) -> None:
    """The working tree (tracked and untracked, not ignored files) plus the built native library."""
    if work.exists():
        shutil.rmtree(work)
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout.split()
    for name in files:
        src = ROOT / name
        if src.is_file():
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, work / name)
    for lib in (ROOT / "lua_fast").glob("_C*.so"):
        shutil.copy2(lib, work / "lua_fast" / lib.name)


def run_tests(work: Path, tests, timeout: float, workers: int = 0) -> tuple[str, float, str]:
    env = {**os.environ, "PYTHONPATH": str(work), "PYTHONDONTWRITEBYTECODE": "1"}
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", *tests]
    if workers > 1:  # (tests spread one by one: a file's module fixtures are computed by each worker)
        cmd[3:3] = ["-n", str(workers), "--dist", "load"]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout", time.perf_counter() - start, ""
    seconds = time.perf_counter() - start
    failed = [line for line in proc.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
    return ("passed" if proc.returncode == 0 else "failed"), seconds, (failed[0] if failed else proc.stdout[-300:])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", help="mutant ids")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "lua_fast_mutants")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per mutant's tests")
    parser.add_argument("--full-suite", action="store_true", help="run the whole suite against each survivor")
    parser.add_argument("--workers", type=int, default=0, help="pytest-xdist workers per run (0: none)")
    parser.add_argument("--skip-unmutated", action="store_true",
                        help="do not run the groups unmutated first (they passed just before)")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "mutation_survey.json")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTANTS if not args.only or m.id in args.only]
    clone(args.work)
    for group in [] if args.skip_unmutated else sorted({m.tests for m in chosen}):
        status, seconds, failure = run_tests(args.work, group, args.timeout, args.workers)
        print(f"unmutated {' '.join(group)}: {status} ({seconds:.0f} s)", flush=True)
        if status != "passed":
            print(f"  {failure}\nfix the tests first", file=sys.stderr)
            return 1
    results = []
    for m in chosen:
        path = args.work / m.file
        source = path.read_text()
        if source.count(m.old) != 1:
            print(f"{m.id}: the text to replace occurs {source.count(m.old)} times in {m.file}", file=sys.stderr)
            return 1
        path.write_text(source.replace(m.old, m.new))
        try:
            status, seconds, failure = run_tests(args.work, m.tests, args.timeout, args.workers)
            outcome = {"failed": "killed", "timeout": "killed (timeout)", "passed": "survived"}[status]
            result = Result(m.id, m.what, m.file, list(m.tests), outcome, round(seconds, 1),
                            failure if status == "failed" else "", equivalent=m.equivalent)
            if status == "passed" and args.full_suite:
                full, full_seconds, full_failure = run_tests(args.work, ("tests",), 3 * args.timeout, args.workers)
                result.full_suite = f"{full} ({full_seconds:.0f} s) {full_failure if full == 'failed' else ''}".strip()
        finally:
            path.write_text(source)
        results.append(result)
        print(f"{m.id:4} {result.outcome:16} {seconds:6.1f} s  {m.what}"
              + (f"  [{result.first_failure}]" if result.first_failure else "")
              + (f"  full suite: {result.full_suite}" if result.full_suite else ""), flush=True)
    gaps = [r.id for r in results if r.outcome == "survived" and not r.equivalent]
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"mutants": [asdict(r) for r in results], "gaps": gaps}, indent=1) + "\n")
    print(f"{len(results)} mutants: {sum(r.outcome.startswith('killed') for r in results)} killed, "
          f"{len(gaps)} unexpected survivors {gaps}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
