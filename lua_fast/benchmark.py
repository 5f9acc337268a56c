"""The benchmark suite behind ``lua-fast bench``: timing, environment record, sweep, reports.

    lua-fast bench --quick            # CPU or GPU, small sizes, a table in seconds
    lua-fast bench --device cuda      # released config: backends x precisions x sizes x scales

Writes ``bench.json`` (device, versions, shapes, dtypes, medians and spread, peak memory,
error against the fp32 reference), ``bench.md`` (a markdown table) and, when matplotlib
is installed, ``bench.png``. Timings are medians of repeated calls after warm-up, the
device synchronised around each call (CUDA: a synchronize after each call, so the
wall time covers the kernels). CPU figures are a smoke test, not the product's target.
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from pathlib import Path

import torch

from . import __version__, dispatch, host_memory
from .config import LUAConfig
from .flops import forward_flops
from .info import cpu_name
from .errors import BackendUnavailableError, InputError
from .precision import PRECISIONS, resolve, tf32_switches
from .tiling import is_integer


# ------------------------------------------------------------------ plumbing
def environment(device: torch.device) -> dict:
    env = {
        "lua_fast": __version__,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),  # the ISA PyTorch's CPU kernels use
        "cpu_threads": torch.get_num_threads(),
        "cpu_quota": host_memory.cpu_quota(),  # a container's CPU limit (None: none): CPU figures depend on it
        # cuDNN's version and the TF32 switches outside lua_fast's own (each precision mode sets
        # its own inside a forward; eager comparisons and cuDNN's plan choice depend on these)
        "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
        "tf32_switches": dict(zip(("matmul", "cudnn_conv"), map(str, tf32_switches()))),
    }
    try:
        import triton

        env["triton"] = triton.__version__
    except ImportError:
        env["triton"] = None
    return env


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn, device: torch.device, *, warmup: int = 1, repeat: int = 5, budget_ms: float | None = None) -> dict:
    """Median and spread of ``fn()`` in ms. On CUDA each call is timed with device events (the
    kernels' span, host launch gaps included) and synchronised; elsewhere by the host clock.
    With ``budget_ms``, repeats stop once that much time was spent (at least 5 calls). On CUDA
    also ``host_median_ms``: the time ``fn()`` takes to return (launching, not waiting), so a
    row shows whether it is host-bound (host close to the median) or GPU-bound."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times, host = [], []
    spent = 0.0
    for i in range(repeat):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            launched = time.perf_counter()
            fn()
            host.append((time.perf_counter() - launched) * 1e3)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            start = time.perf_counter()
            fn()
            synchronize(device)
            times.append((time.perf_counter() - start) * 1e3)
        spent += times[-1]
        if budget_ms is not None and i >= 4 and spent > budget_ms:
            break
    ordered = sorted(times)
    result = {"median_ms": statistics.median(times), "min_ms": ordered[0], "max_ms": ordered[-1],
              "p20_ms": ordered[len(ordered) // 5], "p80_ms": ordered[(4 * len(ordered)) // 5], "repeat": len(times)}
    if host:
        result["host_median_ms"] = statistics.median(host)
    return result


def write_json(path: str | Path, payload: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")


# --------------------------------------------------------------------- sweep
def _cases(device: torch.device, quick: bool):
    if device.type == "cuda" and not quick:
        return LUAConfig.flux(), [(64, 64), (128, 128), (40, 72)], [2, 4], list(PRECISIONS)
    if device.type == "cuda":
        return LUAConfig.flux(), [(64, 64)], [2], ["fp32", "bf16", "mixed"]
    return LUAConfig.small(), [(16, 16), (24, 24)] if quick else [(16, 16), (32, 32), (24, 40)], [2], ["fp32", "bf16"]


def _positive_int(value, what: str) -> int:
    if not is_integer(value) or value < 1:
        raise InputError(f"{what} must be an int >= 1, got {value!r}")
    return int(value)


def _selection(device: torch.device, quick: bool, config: LUAConfig | None, sizes, scales, precisions,
               backends) -> tuple:
    """The sweep: the defaults of ``_cases`` where a choice is None, each choice checked (an unknown
    name, a scale the model lacks, a size below 1 raise ``InputError`` before anything runs)."""
    default_config, default_sizes, default_scales, default_precisions = _cases(device, quick)
    config = config or default_config
    # (a side for a square latent, or (height, width); before 2026-11-29 an int was a TypeError)
    sizes = [(_positive_int(h, "a latent height"), _positive_int(w, "a latent width"))
             for h, w in ((s, s) if is_integer(s) else s for s in (default_sizes if sizes is None else sizes))]
    # (head names and NumPy ints as upscale reads them; before 2026-11-29 "x4" was refused and a NumPy
    # int failed in the memory estimate)
    asked = list(default_scales if scales is None else scales)
    scales = [config.scale_of(s) for s in asked]
    bad = [a for a, s in zip(asked, scales) if s is None]
    if bad or not scales:
        raise InputError(f"unsupported scales {bad}: choose among the model's {list(config.scales)} "
                         f"or its heads {[name for name, _ in config.heads]}")
    scales = list(dict.fromkeys(scales))
    if not sizes:
        raise InputError("choose at least one latent size")
    chosen = list(default_precisions if precisions is None else precisions)
    precisions = [resolve(p, None).mode for p in chosen]  # (any case; InputError naming the modes)
    if backends is not None:
        backends = [b.strip().lower() if isinstance(b, str) else b for b in backends]
        unknown = [b for b in backends if b not in dispatch.BACKENDS]
        if unknown or not backends:
            raise InputError(f"unknown backends {unknown}; choose among {list(dispatch.BACKENDS)}")
    return config, sizes, scales, list(dict.fromkeys(precisions)), backends


def run_suite(device: str | torch.device = "cpu", *, quick: bool = False, repeat: int | None = None,
              cuda_graphs: bool = True, log=print, config: LUAConfig | None = None,
              state_dict: dict | None = None, sizes=None, scales=None, precisions=None, backends=None,
              batch: int = 1, ops: bool = True) -> dict:
    """Sweep every backend that can run here x precisions x sizes x scales; return the report.

    Each of ``config`` (or ``state_dict``: a checkpoint's weights, its config inferred), ``sizes``
    ((height, width) latents), ``scales``, ``precisions`` and ``backends`` narrows the sweep; None
    keeps the default of ``quick`` and the device. The fp32 reference is always timed (every row's
    ratio is against it, measured in the same process). A backend named in ``backends`` that cannot
    run here in a precision is listed in the report's ``skipped`` with the reason (an unnamed one is
    left out silently); if none of them can run, ``BackendUnavailableError`` says why."""
    from .checkpoint import validate_state_dict
    from .reference import LUA
    from .upscaler import load, read_weights

    device = torch.device(device)
    if device.type == "meta":
        raise InputError("the meta device holds shapes only: nothing to time or compare; bench a cpu or cuda device")
    if state_dict is not None:  # (or anything load takes: a path, bytes, a module, a wrapped state dict)
        inferred, state_dict = validate_state_dict(read_weights(state_dict))
        if config is not None and config != inferred:
            raise InputError(f"config {config} is not the state dict's {inferred}: pass one of them")
        config = inferred
    config, sizes, scales, precisions, named = _selection(device, quick, config, sizes, scales, precisions,
                                                          backends)
    repeat = _positive_int(repeat or (3 if quick else 10), "repeat")
    batch = _positive_int(batch, "batch")
    plan, unavailable = [], []
    for precision in precisions:
        reasons = dispatch.availability(device, precision, for_auto=True)
        for backend, reason in reasons.items():
            if named is not None and backend not in named:
                continue
            if reason is None:
                plan.append((precision, backend))
            else:
                unavailable.append({"backend": backend, "precision": precision, "reason": reason})
    if not plan:
        raise BackendUnavailableError(f"nothing to time on {device}: " + "; ".join(
            f"{r['backend']} {r['precision']}: {r['reason']}" for r in unavailable))
    skipped = unavailable if named is not None else []  # (named ones are reported; the default sweep's are not)
    for r in skipped:
        log(f"skipped {r['backend']} {r['precision']}: {r['reason']}")
    if ("fp32", "reference") not in plan:  # (the base of every row's ratio, timed side by side)
        plan.insert(0, ("fp32", "reference"))
    if state_dict is None:
        torch.manual_seed(0)
        state_dict = LUA(config).state_dict()
    rows = []
    for height, width in sizes:
        x = torch.randn(batch, config.in_channels, height, width, device=device)
        for scale in scales:
            flops = batch * forward_flops(config, height, width, (scale,))
            ref = load(state_dict, device=device, backend="reference", precision="fp32").upscale(x, scale=scale)
            for precision, backend in plan:
                graphs = [False, True] if (cuda_graphs and device.type == "cuda" and backend == "triton") else [False]
                up = load(state_dict, device=device, backend=backend, precision=precision)
                for graph in graphs:
                    call = lambda: up.upscale(x, scale=scale, check_finite=False, cuda_graph=graph)  # noqa: E731
                    out = call()
                    if device.type == "cuda":
                        synchronize(device)
                        torch.cuda.reset_peak_memory_stats(device)
                        base = torch.cuda.memory_allocated(device)
                    else:  # the resident set's growth over the calls (None where it cannot be measured)
                        base = host_memory.reset_resident_peak() if device.type == "cpu" else None
                    timing = time_call(call, device, warmup=1, repeat=repeat)
                    if device.type == "cuda":
                        peak = (torch.cuda.max_memory_allocated(device) - base) / 2**20
                    else:
                        top = host_memory.resident_peak() if base is not None else None
                        peak = None if top is None else max(0, top - base) / 2**20
                    err = ((out.double() - ref.double()).norm() / ref.double().norm()).item()
                    rows.append({
                        "backend": backend, "precision": precision, "cuda_graph": graph,
                        "latent": [batch, config.in_channels, height, width], "scale": scale, **timing,
                        "tflops_per_s": flops / (timing["median_ms"] * 1e-3) / 1e12, "peak_mib": peak,
                        "rel_err_vs_fp32_reference": err,
                    })
                    log(_row_line(rows[-1]))
                up = None  # free the model before the next one loads
    _add_ratios(rows)
    return {
        "benchmark": "lua-fast bench", "quick": quick, "config": config.to_dict(), "batch": batch,
        "environment": environment(device), "results": rows, "skipped": skipped,
        "ops": run_ops(device, config, sizes, repeat, log) if ops else [],
        "note": None if device.type == "cuda" else "CPU figures are a smoke test, not the product's target",
    }


def run_ops(device: torch.device, config: LUAConfig, sizes, repeat: int, log=print) -> list[dict]:
    """Per-op rows: each fused op against the PyTorch composition it replaces, same inputs."""
    from . import native
    from .kernels import triton_support
    from .ops import window_ops as W

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    ws, shift, dim = config.window_size, config.window_size // 2, config.embed_dim
    rows = []

    def add(op, size, fused_name, fused, composed, skip=None):
        row = {"op": op, "latent": list(size), "dtype": str(dtype).removeprefix("torch."), "fused": fused_name}
        if skip:
            row["skipped"] = skip
        else:
            row["fused_ms"] = time_call(fused, device, warmup=1, repeat=repeat)["median_ms"]
            row["pytorch_ms"] = time_call(composed, device, warmup=1, repeat=repeat)["median_ms"]
            row["speedup"] = row["pytorch_ms"] / row["fused_ms"]
        rows.append(row)
        log(f"op {op:18s} {size[0]}x{size[1]}  " + (f"skipped: {skip}" if skip else
            f"{fused_name} {row['fused_ms']:.3f} ms vs PyTorch {row['pytorch_ms']:.3f} ms (x{row['speedup']:.2f})"))

    triton_reason = triton_support.unavailable_reason(device) or (
        "the Triton interpreter is not a timing tool" if triton_support.INTERPRET else None)
    native_reason = native.unavailable_reason(device)
    for height, width in sizes:
        h, w = -(-height // ws) * ws, -(-width // ws) * ws
        x = torch.randn(1, h, w, dim, device=device, dtype=dtype)
        win = W.torch_window_partition(x, ws, shift)
        add("partition+roll", (h, w), "native", lambda: W.window_partition(x, ws, shift),
            lambda: W.torch_window_partition(x, ws, shift), native_reason)
        add("merge+roll", (h, w), "native", lambda: W.window_merge(win, 1, h, w, ws, shift),
            lambda: W.torch_window_merge(win, 1, h, w, ws, shift), native_reason)
        add("shift mask", (h, w), "native", lambda: W.window_mask(h, w, ws, shift, dtype=dtype, device=device),
            lambda: W.torch_window_mask(h, w, ws, shift, dtype=dtype, device=device), native_reason)
        if triton_reason:
            add("window attention", (h, w), "triton", None, None, triton_reason)
            add("x2 head", (h, w), "triton", None, None, triton_reason)
            continue
        from .kernels.upsample_head import PackedHead, fused_head, torch_fused_head
        from .kernels.window_attention import (bias_dtype, dense_log2_bias, pack_activations, packed_window_attention,
                                               torch_window_attention)
        from .reference.model import UpsampleHead

        heads = config.num_heads[0]
        qkv = torch.randn(1, h * w, 3 * dim, device=device, dtype=dtype)
        table = torch.randn((2 * ws - 1) ** 2, heads, device=device)
        kw = dict(heads=heads, window=ws, shift=shift, bias_table=table)
        packed, bias = pack_activations(qkv, heads), dense_log2_bias(table, ws, bias_dtype(dtype))  # as the backend
        add("window attention", (h, w), "triton",
            lambda: packed_window_attention(packed, bias, h, w, heads=heads, window=ws, shift=shift),
            lambda: torch_window_attention(qkv, h, w, **kw))
        head = UpsampleHead(dim, config.head_width, config.out_channels, 2).to(device, dtype).eval()
        packed = PackedHead.from_weights(head, dtype)
        g = x  # (1, H, W, D) channels-last
        with torch.no_grad():
            add("x2 head", (h, w), "triton", lambda: fused_head(g, packed), lambda: torch_fused_head(g, head))
    return rows


def _case_key(row: dict) -> tuple:
    return tuple(row["latent"]), row["scale"]


def _add_ratios(rows: list[dict]) -> None:
    """Speedup of each row against the fp32 reference of the same case."""
    base = {_case_key(r): r["median_ms"] for r in rows if r["backend"] == "reference" and r["precision"] == "fp32"
            and not r["cuda_graph"]}
    for r in rows:
        if _case_key(r) in base:
            r["speedup_vs_reference_fp32"] = base[_case_key(r)] / r["median_ms"]


def _label(row: dict) -> str:
    return f"{row['backend']} {row['precision']}" + (" +graph" if row["cuda_graph"] else "")


def _latent(row: dict) -> str:
    """"HxW", or "BxHxW" for a batch over 1."""
    b, _, h, w = row["latent"]
    return f"{b}x{h}x{w}" if b > 1 else f"{h}x{w}"


def _row_line(row: dict) -> str:
    return (f"{_latent(row)} x{row['scale']}  {_label(row):24s} {row['median_ms']:10.2f} ms "
            f"[{row['min_ms']:.2f}-{row['max_ms']:.2f}]  err {row['rel_err_vs_fp32_reference']:.1e}")


def markdown(report: dict) -> str:
    env = report["environment"]
    lines = [
        f"Device: {env['device_name']} ({env['device']}); torch {env['torch']}, triton {env['triton']}, "
        f"lua_fast {env['lua_fast']}" + (f". {report['note']}." if report.get("note") else "."),
        "",
        "| latent | scale | backend | precision | CUDA graph | median ms | min-max ms | TFLOP/s | x vs reference fp32 "
        "| peak MiB | rel. err vs fp32 ref |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        peak = f"{r['peak_mib']:.0f}" if r["peak_mib"] is not None else "-"
        ratio = f"{r['speedup_vs_reference_fp32']:.2f}" if "speedup_vs_reference_fp32" in r else "-"
        lines.append(
            f"| {_latent(r)} | x{r['scale']} | {r['backend']} | {r['precision']} | {'yes' if r['cuda_graph'] else 'no'} "
            f"| {r['median_ms']:.2f} | {r['min_ms']:.2f}-{r['max_ms']:.2f} | {r['tflops_per_s']:.3f} | {ratio} "
            f"| {peak} | {r['rel_err_vs_fp32_reference']:.1e} |"
        )
    skipped = report.get("skipped") or []
    if skipped:
        lines += ["", "Asked for, cannot run here:", ""]
        lines += [f"- {r['backend']} {r['precision']}: {r['reason']}" for r in skipped]
    ops = report.get("ops") or []
    if ops:
        lines += ["", "| op | latent | dtype | fused | fused ms | PyTorch ms | x |", "|---|---|---|---|---|---|---|"]
        for o in ops:
            size = f"{o['latent'][0]}x{o['latent'][1]}"
            if "skipped" in o:
                lines.append(f"| {o['op']} | {size} | {o['dtype']} | {o['fused']} | skipped: {o['skipped']} | | |")
            else:
                lines.append(f"| {o['op']} | {size} | {o['dtype']} | {o['fused']} | {o['fused_ms']:.3f} "
                             f"| {o['pytorch_ms']:.3f} | {o['speedup']:.2f} |")
    return "\n".join(lines) + "\n"


def plot(report: dict, path: str | Path) -> str | None:
    """A bar chart of median ms per variant and case; returns None, or why it was not drawn."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install matplotlib)"
    rows = report["results"]
    cases = list(dict.fromkeys(_case_key(r) for r in rows))
    labels = list(dict.fromkeys(_label(r) for r in rows))
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(cases) * len(labels) / 3), 4.5))
    width = 0.8 / max(1, len(labels))
    for i, label in enumerate(labels):
        xs, ys = [], []
        for j, case in enumerate(cases):
            match = [r for r in rows if _case_key(r) == case and _label(r) == label]
            if match:
                xs.append(j + i * width)
                ys.append(match[0]["median_ms"])
        ax.bar(xs, ys, width=width, label=label)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(cases))])
    ax.set_xticklabels([f"{_latent({'latent': c[0]})} x{c[1]}" for c in cases])
    ax.set_ylabel("median ms (log)")
    ax.set_yscale("log")
    env = report["environment"]
    ax.set_title(f"lua_fast {env['lua_fast']} on {env['device_name']}")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return None


def write_reports(report: dict, out_dir: str | Path) -> list[str]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "bench.json", report)
    (out / "bench.md").write_text(markdown(report))
    written = [str(out / "bench.json"), str(out / "bench.md")]
    why_not = plot(report, out / "bench.png")
    if why_not is None:
        written.append(str(out / "bench.png"))
    else:
        written.append(f"(no plot: {why_not})")
    return written
