"""Triton kernels on a real GPU: compile them all in parallel first, then time each call site.

    python scripts/gpu_kernels.py prewarm --cases bf16:128:2 fp32:40x72:4 ... [--workers 16]
    python scripts/gpu_kernels.py times --case bf16:128:2 --out kernel_times.json
    ncu --profile-from-start off ... python scripts/gpu_kernels.py profile --case bf16:128:2
    python scripts/gpu_kernels.py ncu-summary ncu.csv

prewarm: the autotuner compiles its configs one after another in the calling process (about a
second each; a forward of one precision mode has 40-60 of them). This records every launch of
the given forwards on the CPU (nothing runs; see compile_kernels.py), and compiles each distinct
(kernel, specialisation, config) through the JIT's own ``warmup`` path in a pool of processes,
so the later autotuning finds every binary in Triton's on-disk cache and only benchmarks.
Tensor arguments travel as (dtype, 16-byte aligned or not): that is all the JIT specialises on.

times: runs one forward with every launch recorded and executed, then times each distinct call
site alone (triton.testing.do_bench, median) with the config the autotuner chose, and reads that
binary's registers and spills (``n_regs``, ``n_spills``) and its static bounds (the same SASS
analysis as the kernel report: issue, wave, MUFU, tensor, pipe; and the memory floor) next to the
measurement, with measured / max(pipe bound, memory floor).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
import triton  # noqa: E402

import compile_kernels as ck  # noqa: E402
from lua_fast import LUAConfig  # noqa: E402
from lua_fast.kernels.triton_support import autotune_key  # noqa: E402


def parse_case(text: str):
    """'bf16:128:2', 'bf16:40x72:4', 'bf16:128:2:4' (batch 4); a '/1' suffix: the first autotune
    config only (a forward that runs with LUA_FAST_AUTOTUNE=0, e.g. in the tests); precision
    'fp32x3' (prewarm only): fp32 with LUA_FAST_FP32_DOTS=tf32x3
    -> (precision, (h, w), scale, batch, first_only)."""
    text, first_only = (text[:-2], True) if text.endswith("/1") else (text, False)
    parts = text.split(":")
    h, _, w = parts[1].partition("x")
    return parts[0], (int(h), int(w or h)), int(parts[2]), int(parts[3]) if len(parts) > 3 else 1, first_only


def _arg_spec(value):
    """What the JIT specialises a runtime argument on: a tensor's dtype and 16-byte alignment; an
    int's being 1, a multiple of 16 or neither, and its width; a float's type only. (Values that
    specialise alike share one binary: one compile job, not one per latent size.)"""
    if isinstance(value, torch.Tensor):
        return ("tensor", str(value.dtype).removeprefix("torch."), value.storage_offset() * value.element_size() % 16 == 0)
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        kind = "one" if value == 1 else "div16" if value % 16 == 0 else "any"
        return ("int", kind, -(2**31) <= value < 2**31)
    if isinstance(value, float):
        return ("float",)
    return value


def _rebuild(spec):
    """An argument the JIT specialises as ``spec`` says (see :func:`_arg_spec`)."""
    if isinstance(spec, tuple) and len(spec) == 3 and spec[0] == "tensor":
        base = torch.empty(64, dtype=getattr(torch, spec[1]))
        return base if spec[2] else base[1:]
    if isinstance(spec, tuple) and spec[:1] == ("int",):
        value = {"one": 1, "div16": 32, "any": 33}[spec[1]]
        return value if spec[2] or value == 1 else value + 2**32
    if spec == ("float",):
        return 0.5
    return spec


def _record(case) -> list[tuple]:
    """(kernel, module attr, args spec, kwargs, config kwargs) of every launch x config of a forward."""
    torch.set_num_threads(1)
    precision, size, scale, batch, first_only = case
    saved = {k: os.environ.get(k) for k in ("LUA_FAST_AUTOTUNE",)}
    os.environ["LUA_FAST_AUTOTUNE"] = "0" if first_only else "1"  # the prune hooks read it (pool workers are reused)
    # ("fp32x3", LUA_FAST_FP32_DOTS=tf32x3, goes to record_forward as it is: it sets the switch around
    # the forward itself, so a switch set here would be overridden by its "ieee")
    try:
        jobs = []
        for launch in ck.record_forward(LUAConfig.flux(), precision, size, scale, batch):
            attr = next(a for m, a, n in ck.KERNELS if n == launch.kernel)
            configs, _ = ck.configs_for(launch)
            # (an untimed forward launches the first config that fits: on sm_90a always the first)
            configs = configs[:1] if first_only else configs
            args = tuple(_arg_spec(a) for a in launch.args)
            for cfg in configs:
                jobs.append((launch.kernel, attr, args, tuple(sorted(launch.kwargs.items())),
                             tuple(sorted(cfg.all_kwargs().items()))))
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return jobs


def compile_jobs(cases, pool=None) -> list[tuple]:
    """Distinct compile jobs over every case's forward (recorded in ``pool`` when given)."""
    recorded = pool.map(_record, cases, chunksize=1) if pool is not None else map(_record, cases)
    jobs = {}
    for case_jobs in recorded:
        for job in case_jobs:
            jobs.setdefault(repr(job), job)
    return list(jobs.values())


def with_pdl(jobs: list[tuple]) -> list[tuple]:
    """The same compile jobs as launched with ``LUA_FAST_PDL=1``: the kernels' PDL constexpr on and
    Triton's ``launch_pdl`` option (part of the binary's cache key) set."""
    out = []
    for kernel, attr, args, kwargs, cfg in jobs:
        kw = dict(kwargs)
        if "PDL" in kw:
            kw["PDL"] = True
            options = {**dict(cfg), "launch_pdl": True}
            out.append((kernel, attr, args, tuple(sorted(kw.items())), tuple(sorted(options.items()))))
    return out


def _warm(job) -> tuple[str, float, str | None]:
    kernel, attr, args, kwargs, cfg = job
    module = ck.MODULES[kernel]
    tuner = getattr(module, attr)
    fn = tuner.fn if hasattr(tuner, "configs") else tuner  # (a JITFunction's own .fn is the Python function)
    start = time.time()
    try:
        fn.warmup(*map(_rebuild, args), grid=(1,), **dict(kwargs), **dict(cfg))
    except Exception as exc:  # reported, not fatal: the real launch will say it again
        return kernel, time.time() - start, f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
    return kernel, time.time() - start, None


def _use_stub_driver() -> None:
    """Pool initializer: Triton's active driver becomes benchmarks/stub_gpu.py's stand-in (an sm_90
    target), so ``warmup`` compiles for sm_90 on a machine without a GPU."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from stub_gpu import _StubDriver
    from triton.runtime.driver import driver

    driver.set_active(_StubDriver())


def prewarm(cases, workers: int, pdl_cases=(), stub_driver: bool = False) -> dict:
    """Compile every job of ``cases``, and of ``pdl_cases`` as launched with PDL. ``stub_driver``:
    compile for sm_90 without a GPU (the binaries land in TRITON_CACHE_DIR under the keys a GPU
    process computes, given the same Triton build, Python, install path and TRITON_* environment)."""
    start = time.time()
    with mp.get_context("spawn").Pool(workers, initializer=_use_stub_driver if stub_driver else None) as pool:
        jobs = compile_jobs(cases, pool)
        if pdl_cases:
            jobs += with_pdl(compile_jobs(pdl_cases, pool))
        recorded = time.time() - start
        results = pool.map(_warm, jobs, chunksize=1)
    errors = [(k, e) for k, _, e in results if e]
    summary = {"cases": [list(map(str, c)) for c in cases], "pdl_cases": [list(map(str, c)) for c in pdl_cases],
               "jobs": len(jobs), "workers": workers,
               "record_s": round(recorded, 1), "wall_s": round(time.time() - start, 1),
               "compile_s_sum": round(sum(t for _, t, _ in results), 1), "errors": errors[:20],
               "n_errors": len(errors), "triton_cache_dir": os.environ.get("TRITON_CACHE_DIR")}
    print(f"prewarm: {len(jobs)} kernel variants compiled in {summary['wall_s']} s wall "
          f"({summary['compile_s_sum']} s of compiling over {workers} processes, recording {recorded:.1f} s), "
          f"{len(errors)} errors", flush=True)
    for kernel, err in errors[:10]:
        print(f"  {kernel}: {err}")
    return summary


def times(case) -> dict:
    """Per call site: chosen config, registers, spills, measured median us (alone, L2 flushed), and its
    static bounds: issue, wave, MUFU, tensor, pipe, and the memory floor."""
    from triton.testing import do_bench

    precision, size, scale, batch, _ = case
    launches = ck.record_forward(LUAConfig.flux(), precision, size, scale, batch, device="cuda")
    torch.cuda.synchronize()
    for launch in launches:
        named = dict(zip(launch.tuner.fn.arg_names, launch.args))
        launch.site, launch.flops = ck.describe(launch.kernel, named, launch.kwargs)
    sites: dict[tuple, dict] = {}
    for launch in launches:
        tuner = launch.tuner
        named = dict(zip(tuner.fn.arg_names, launch.args))
        if hasattr(tuner, "cache"):  # the autotuner's choice for this launch's key
            best = tuner.cache.get(autotune_key(tuner, launch.args, launch.kwargs)) or tuner.best_config
        else:
            best = tuner.config
        grid = tuple(launch.grid({**named, **launch.kwargs, **best.kwargs}))
        site_key = (launch.kernel, launch.site, grid, repr(best))
        if site_key in sites:
            sites[site_key]["launches"] += 1
            continue
        compiled = tuner.fn.warmup(*launch.args, grid=grid, **launch.kwargs, **best.all_kwargs())
        compiled._init_handles()  # (n_regs / n_spills are read when the binary is loaded)
        call = (lambda t=tuner, g=grid, a=launch.args, k=launch.kwargs: t[g](*a, **k)) if hasattr(tuner, "cache") \
            else (lambda f=tuner.fn, g=grid, a=launch.args, k=launch.kwargs, c=best.all_kwargs(): f[g](*a, **k, **c))
        measured = do_bench(call, warmup=5, rep=20, return_mode="median") * 1e3
        static = ck.analyse(compiled, ck.trip_count(launch, best), math.prod(grid), ck.loop_weights(launch, named))
        memory_floor = ck.launch_bytes(launch) / ck.HBM_BYTES_PER_S * 1e6
        l2 = ck.l2_model(launch, named, best.kwargs)  # (an estimate; none for the add + LayerNorm)
        sites[site_key] = {
            "kernel": launch.kernel, "site": launch.site, "launches": 1, "grid": list(grid),
            "config": {**best.kwargs, "num_warps": best.num_warps, "num_stages": best.num_stages},
            "n_regs": compiled.n_regs, "n_spills": compiled.n_spills, "shared_bytes": compiled.metadata.shared,
            "measured_us": measured, "issue_bound_us": static["issue_us"], "wave_bound_us": static["wave_us"],
            "mufu_us": static["mufu_us"], "tensor_us": static["tensor_us"], "pipe_bound_us": static["pipe_us"],
            "mma": static["mma"],
            "flop_floor_us": launch.flops / ck.BF16_PEAK * 1e6,
            "memory_floor_us": memory_floor,
            "bound_us": max(static["pipe_us"], memory_floor),  # timed alone, L2 flushed: both are hard
            "l2_bytes": l2.get("l2_bytes"), "l2_model_us": l2.get("l2_model_us"),
            "measured_over_issue_bound": measured / static["issue_us"] if static["issue_us"] else None,
            "measured_over_pipe_bound": measured / static["pipe_us"] if static["pipe_us"] else None,
        }
    rows = list(sites.values())
    total = sum(r["measured_us"] * r["launches"] for r in rows)
    bound = sum(r["issue_bound_us"] * r["launches"] for r in rows)
    pipe = sum(r["pipe_bound_us"] * r["launches"] for r in rows)
    print(f"{precision} {size[0]}x{size[1]} x{scale} b{batch}: {len(launches)} launches, {len(rows)} sites; "
          f"sum of isolated kernel times {total / 1e3:.2f} ms vs issue bound {bound / 1e3:.2f} ms, "
          f"pipe bound {pipe / 1e3:.2f} ms")
    print("| site | launches | config | regs | spills | measured us | issue bound us | wave bound us | MUFU us | "
          "tensor us | pipe bound us | memory floor us | measured / issue | measured / max(pipe, memory) | "
          "L2 model us | measured / L2 model |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in sorted(rows, key=lambda r: -r["measured_us"] * r["launches"]):
        print(f"| {r['site']} | {r['launches']} | {ck.config_label(r['config'])} | {r['n_regs']} | "
              f"{r['n_spills']} | {r['measured_us']:.1f} | {r['issue_bound_us']:.1f} | {r['wave_bound_us']:.1f} | "
              f"{r['mufu_us']:.1f} | {r['tensor_us']:.1f} | {r['pipe_bound_us']:.1f} | {r['memory_floor_us']:.1f} | "
              f"{(r['measured_over_issue_bound'] or 0):.2f} | {r['measured_us'] / r['bound_us']:.2f} | "
              + (f"{r['l2_model_us']:.1f} | {r['measured_us'] / r['l2_model_us']:.2f} |" if r["l2_model_us"] else "- | - |"))
    return {"case": {"precision": precision, "latent": list(size), "scale": scale, "batch": batch},
            "launches": len(launches), "sum_isolated_us": total, "sum_issue_bound_us": bound,
            "sum_pipe_bound_us": pipe, "sites": rows}


def profile(case, forwards: int = 1) -> None:
    """Warm up (autotune) a triton forward, then run ``forwards`` more between
    cudaProfilerStart/Stop: under ``ncu --profile-from-start off`` only those are profiled."""
    import lua_fast
    from lua_fast.reference import LUA

    precision, size, scale, batch, _ = case
    torch.manual_seed(0)
    up = lua_fast.load(LUA(LUAConfig.flux()).state_dict(), device="cuda", backend="triton", precision=precision)
    x = torch.randn(batch, 16, *size, device="cuda")
    for _ in range(2):
        up.upscale(x, scale=scale, check_finite=False)
    torch.cuda.synchronize()
    torch.cuda.profiler.start()
    for _ in range(forwards):
        up.upscale(x, scale=scale, check_finite=False)
    torch.cuda.synchronize()
    torch.cuda.profiler.stop()


# The timeline's variants: environment switches read per forward (graphs are captured per variant).
TIMELINE_VARIANTS = {"plain": {}, "PDL": {"LUA_FAST_PDL": "1"},
                     "3 launches/block": {"LUA_FAST_FUSED_MLP": "1", "LUA_FAST_FUSED_ATTN_PROJ": "1"}}


def timeline(cases, forwards: int = 3) -> list[dict]:
    """Where a forward's time goes on the GPU: per case, variant and mode (eager launches, CUDA-graph
    replays), the GPU activity of ``forwards`` forwards recorded by torch.profiler (CUPTI), summarised
    by :func:`timeline_summary`: kernel time against the gaps between kernels. On the H200 a graphed
    64x64 forward ran ~22 us per launch against a ~3.5 us wave bound: this says whether that is the
    kernels or the space between them."""
    import tempfile
    from unittest import mock

    import lua_fast
    from lua_fast.reference import LUA
    from torch.profiler import ProfilerActivity, profile as torch_profile

    rows = []
    for case in cases:
        precision, size, scale, batch, _ = case
        torch.manual_seed(0)
        up = lua_fast.load(LUA(LUAConfig.flux()).state_dict(), device="cuda", backend="triton", precision=precision)
        x = torch.randn(batch, 16, *size, device="cuda")
        for variant, env in TIMELINE_VARIANTS.items():
            for graphed in (False, True):
                row = {"case": f"{precision}:{size[0]}x{size[1]}:x{scale}:b{batch}", "variant": variant,
                       "mode": "CUDA graph" if graphed else "eager"}
                try:
                    with mock.patch.dict(os.environ, env), torch.inference_mode():
                        up.clear_cuda_graphs()
                        for _ in range(2):  # tune / capture outside the recording
                            up.upscale(x, scale=scale, check_finite=False, cuda_graph=graphed)
                        torch.cuda.synchronize()
                        with torch_profile(activities=[ProfilerActivity.CUDA]) as prof:
                            start = time.perf_counter()
                            for _ in range(forwards):
                                up.upscale(x, scale=scale, check_finite=False, cuda_graph=graphed)
                            torch.cuda.synchronize()
                            row["wall_ms_per_forward"] = (time.perf_counter() - start) * 1e3 / forwards
                        with tempfile.NamedTemporaryFile(suffix=".json") as trace:
                            prof.export_chrome_trace(trace.name)
                            events = json.loads(Path(trace.name).read_text())["traceEvents"]
                    gpu = [(e["name"], float(e["ts"]), float(e.get("dur", 0.0))) for e in events
                           if e.get("ph") == "X" and e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset")]
                    row.update(timeline_summary(gpu, forwards))
                except Exception as exc:  # noqa: BLE001  (one row's failure is recorded, the others run)
                    row["error"] = f"{type(exc).__name__}: {exc}"
                rows.append(row)
                print(timeline_line(row), flush=True)
        up.clear_cuda_graphs()
        up = None
    return rows


def timeline_summary(events: list[tuple[str, float, float]], forwards: int, top: int = 8) -> dict:
    """The last of ``forwards`` identical forwards in a list of GPU activities (name, start us,
    duration us; any order): its span from first start to last end, busy time (the union of the
    activities, so overlapping kernels under PDL count once), gaps (span - busy), the largest gaps
    with the activity they precede, and time per activity name. Activities that do not split
    evenly into ``forwards`` are reported, and the last ``len // forwards`` are used."""
    events = sorted(events, key=lambda e: e[1])
    per_forward = len(events) // max(forwards, 1)
    if per_forward == 0:
        return {"activities": 0, "note": "no GPU activity recorded"}
    last = events[-per_forward:]
    busy, gaps, end = 0.0, [], None
    for name, t0, dur in last:
        t1 = t0 + dur
        if end is None or t0 >= end:
            if end is not None:
                gaps.append((t0 - end, name))
            busy += dur
            end = t1
        elif t1 > end:
            busy += t1 - end
            end = t1
    span = end - last[0][1]
    by_name: dict[str, list] = {}
    for name, _, dur in last:
        entry = by_name.setdefault(name[:60], [0, 0.0])
        entry[0] += 1
        entry[1] += dur
    return {"activities": per_forward, "uneven": len(events) % max(forwards, 1) != 0, "span_us": span,
            "busy_us": busy, "gap_us": span - busy, "gap_us_per_activity": (span - busy) / per_forward,
            "largest_gaps": [{"us": g, "before": n[:60]} for g, n in sorted(gaps, reverse=True)[:top]],
            "by_name": [{"name": n, "count": c, "us": t} for n, (c, t) in
                        sorted(by_name.items(), key=lambda kv: -kv[1][1])[:top]]}


def timeline_line(row: dict) -> str:
    if "error" in row or "span_us" not in row:
        return f"{row['case']} {row['variant']} {row['mode']}: {row.get('error') or row.get('note')}"
    return (f"{row['case']} {row['variant']:16s} {row['mode']:10s} wall {row['wall_ms_per_forward']:7.2f} ms  "
            f"GPU span {row['span_us'] / 1e3:6.2f} ms = busy {row['busy_us'] / 1e3:6.2f} + gaps "
            f"{row['gap_us'] / 1e3:6.2f} ({row['activities']} activities, {row['gap_us_per_activity']:.1f} us "
            "of gap each)")


# Nsight Compute metrics the summary keeps (ncu --csv --page details: one row per kernel x metric).
NCU_METRICS = {
    "Duration": "duration", "Compute (SM) Throughput": "sm_pct", "Memory Throughput": "mem_pct",
    "DRAM Throughput": "dram_pct", "L2 Hit Rate": "l2_hit_pct", "Achieved Occupancy": "occupancy_pct",
    "Theoretical Occupancy": "theoretical_occupancy_pct", "Registers Per Thread": "registers",
    "Warp Cycles Per Issued Instruction": "cycles_per_issue", "Grid Size": "grid",
    "Block Size": "block", "Dynamic Shared Memory Per Block": "dynamic_smem",
}


def ncu_summary(path: Path) -> list[dict]:
    """Per profiled kernel: name and the metrics above (values as ncu printed them, durations in us)."""
    import csv

    text = path.read_text(errors="replace")
    start = text.find('"ID"')  # ncu prints its own log lines before the CSV header
    if start < 0:
        raise SystemExit(f"{path}: no ncu CSV header found")
    kernels: dict[str, dict] = {}
    for row in csv.DictReader(text[start:].splitlines()):
        k = kernels.setdefault(row["ID"], {"id": int(row["ID"]), "kernel": row["Kernel Name"][:60]})
        key = NCU_METRICS.get(row.get("Metric Name", ""))
        if key is None:
            continue
        value, unit = row.get("Metric Value", "").replace(",", ""), row.get("Metric Unit", "")
        try:
            number = float(value)
        except ValueError:
            k[key] = value
            continue
        if key == "duration":  # ncu picks the unit per kernel
            number *= {"nsecond": 1e-3, "usecond": 1.0, "msecond": 1e3, "second": 1e6}.get(unit, 1.0)
        k[key] = number
    rows = sorted(kernels.values(), key=lambda r: r["id"])
    cols = ["duration", "sm_pct", "mem_pct", "dram_pct", "l2_hit_pct", "occupancy_pct", "registers",
            "cycles_per_issue"]
    print("| id | kernel | us | SM % | memory % | DRAM % | L2 hit % | occupancy % | regs | cycles/issue |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        cells = [f"{r[c]:.1f}" if isinstance(r.get(c), float) else str(r.get(c, "-")) for c in cols]
        print(f"| {r['id']} | {r['kernel']} | " + " | ".join(cells) + " |")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prewarm")
    p.add_argument("--cases", nargs="+", required=True)
    p.add_argument("--pdl-cases", nargs="*", default=[], help="cases also compiled as launched with LUA_FAST_PDL=1")
    p.add_argument("--workers", type=int, default=os.cpu_count())
    p.add_argument("--stub-driver", action="store_true", help="compile for sm_90 without a GPU (see prewarm())")
    p.add_argument("--out", default=None)
    t = sub.add_parser("times")
    t.add_argument("--case", default="bf16:128:2")
    t.add_argument("--out", default=None)
    f = sub.add_parser("profile", help="the forward an ncu run watches (see gpu_check.sh's ncu stage)")
    f.add_argument("--case", default="bf16:128:2")
    w = sub.add_parser("timeline", help="kernel time against the gaps between kernels, eager and graphed")
    w.add_argument("--cases", nargs="+", default=["bf16:64:2", "bf16:128:2"])
    w.add_argument("--forwards", type=int, default=3)
    w.add_argument("--out", default=None)
    n = sub.add_parser("ncu-summary", help="a table from ncu --csv --page details output")
    n.add_argument("csv", type=Path)
    n.add_argument("--out", default=None)
    args = parser.parse_args()
    failed = False
    if args.command == "profile":
        profile(parse_case(args.case))
        return 0
    if args.command == "ncu-summary":
        result = {"kernels": ncu_summary(args.csv)}
    elif args.command == "timeline":
        from lua_fast.benchmark import environment

        result = {"environment": environment(torch.device("cuda")),
                  "rows": timeline([parse_case(c) for c in args.cases], args.forwards)}
        failed = any("error" in row for row in result["rows"])
    elif args.command == "prewarm":
        result = prewarm([parse_case(c) for c in args.cases], args.workers, [parse_case(c) for c in args.pdl_cases],
                         stub_driver=args.stub_driver)
    else:
        from lua_fast.benchmark import environment

        result = {"environment": environment(torch.device("cuda")), **times(parse_case(args.case))}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1, default=str) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
