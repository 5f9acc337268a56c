"""The GPU machine's helper scripts, on what can be checked without a GPU: the Nsight Compute
summary reads ncu's CSV as ncu writes it (log lines first, one row per kernel x metric, units
chosen per kernel)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lua_fast.kernels import triton_support

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(triton_support.triton is None, reason="triton is not installed")

HEADER = ('"ID","Process ID","Process Name","Host Name","Kernel Name","Context","Stream","Block Size",'
          '"Grid Size","Device","CC","Section Name","Metric Name","Metric Unit","Metric Value"')


def row(kid, kernel, section, metric, unit, value):
    return (f'"{kid}","4242","python3","127.0.0.1","{kernel}","1","7","(256, 1, 1)","(384, 1, 1)","0","9.0",'
            f'"{section}","{metric}","{unit}","{value}"')


def test_ncu_summary_reads_ncu_csv(tmp_path):
    lines = ["==PROF== Connected to process 4242 (/usr/bin/python3.12)", "==PROF== Profiling \"_linear_kernel\"",
             HEADER,
             row(0, "_linear_kernel", "GPU Speed Of Light Throughput", "Duration", "usecond", "65.18"),
             row(0, "_linear_kernel", "GPU Speed Of Light Throughput", "Memory Throughput", "%", "41.20"),
             row(0, "_linear_kernel", "GPU Speed Of Light Throughput", "Compute (SM) Throughput", "%", "33.9"),
             row(0, "_linear_kernel", "Occupancy", "Achieved Occupancy", "%", "11.62"),
             row(0, "_linear_kernel", "Launch Statistics", "Registers Per Thread", "register/thread", "240"),
             row(1, "_window_attention_kernel", "GPU Speed Of Light Throughput", "Duration", "msecond", "1.25"),
             row(1, "_window_attention_kernel", "Warp State Statistics", "Warp Cycles Per Issued Instruction",
                 "cycle", "12.5"),
             row(2, "_conv3x3_kernel", "GPU Speed Of Light Throughput", "Duration", "nsecond", "98,800")]
    csv = tmp_path / "ncu.csv"
    csv.write_text("\n".join(lines) + "\n")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_kernels.py"), "ncu-summary", str(csv),
                             "--out", str(tmp_path / "ncu.json")], capture_output=True, text=True, env=env,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    kernels = json.loads((tmp_path / "ncu.json").read_text())["kernels"]
    assert [k["kernel"] for k in kernels] == ["_linear_kernel", "_window_attention_kernel", "_conv3x3_kernel"]
    assert [k["duration"] for k in kernels] == pytest.approx([65.18, 1250.0, 98.8])
    assert kernels[0]["mem_pct"] == 41.2 and kernels[0]["occupancy_pct"] == 11.62 and kernels[0]["registers"] == 240
    assert kernels[1]["cycles_per_issue"] == 12.5
    assert "| 0 | _linear_kernel | 65.2 | 33.9 | 41.2 |" in result.stdout, result.stdout


def test_prewarm_case_for_the_cublas_gemms_row():
    """table128's "cuBLAS GEMMs" row runs the triton backend with LUA_FAST_TRITON_GEMMS=0; its
    binaries come from the prewarm case "bf16+cublas:128:2": the Triton launches of that path
    (fc1 + GELU without its LayerNorm, add_layer_norm twice a block), none of the fused GEMMs."""
    text = (ROOT / "scripts" / "gpu_common.sh").read_text()
    assert 'PREWARM_CASES+=" bf16+cublas:128:2"' in text
    code = """
import collections, json, sys
sys.path.insert(0, "scripts")
import compile_kernels as ck
from lua_fast import LUAConfig
count = lambda case: collections.Counter(l.kernel for l in ck.record_forward(LUAConfig.flux(), case, 32, 2))
print(json.dumps([count("bf16+cublas"), count("bf16")]))
"""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    cublas, fused = json.loads(result.stdout.splitlines()[-1])
    assert cublas["fused_linear"] == 36 and cublas["layer_norm"] == 80 and fused["fused_linear"] == 144


def test_prewarm_jobs_are_one_per_jit_specialisation():
    """The prewarm compiles one job per binary: arguments that the JIT specialises alike (ints by
    ==1 / multiple of 16 / other and width, floats by type, tensors by dtype and alignment) make
    one job, whatever their values; each spec rebuilds to an argument with the same spec."""
    code = """
import sys, torch
sys.path.insert(0, "scripts")
import gpu_kernels as g
specs = [g._arg_spec(v) for v in (1, 16384, 4096, 7, 2**40 + 3, 2**40 + 16, 1e-5, 0.01, True,
                                  torch.empty(8), torch.empty(8)[1:], torch.empty(8, dtype=torch.bfloat16))]
assert specs[1] == specs[2] != specs[3] != specs[0] and specs[4] != specs[5] and specs[6] == specs[7], specs
for spec in specs:
    assert g._arg_spec(g._rebuild(spec)) == spec, spec
jobs = g.compile_jobs([g.parse_case("bf16:64:2/1"), g.parse_case("bf16:128:2/1")])
again = g.compile_jobs([g.parse_case("bf16:64:2/1")])
pdl = g.with_pdl(again)  # each binary again, as launched with LUA_FAST_PDL=1
assert len(pdl) == len(again) and not set(map(repr, pdl)) & set(map(repr, again))
assert all(dict(j[3])["PDL"] is True and dict(j[4])["launch_pdl"] is True for j in pdl)
assert all(dict(j[3])["PDL"] is False and "launch_pdl" not in dict(j[4]) for j in again)
# "fp32x3": the fp32 mode's binaries with their dots as three TF32 products, not the IEEE ones again
# (the prewarm once compiled the IEEE binaries twice and none of these)
dots = lambda case: {dict(j[3]).get("INPUT_PRECISION") for j in g.compile_jobs([g.parse_case(case)])} - {None}
assert dots("fp32:64:2/1") == {"ieee"} and dots("fp32x3:64:2/1") == {"tf32x3"}, (dots("fp32:64:2/1"), dots("fp32x3:64:2/1"))
print(len(jobs), len(again))
"""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    both, one = map(int, result.stdout.split()[-2:])
    assert both == one, "a 128x128 forward compiles nothing a 64x64 one does not (same specialisations)"


def test_gpu_check_script_parses_and_refuses_unknown_stages(tmp_path):
    """The GPU check is only ever run on a lent GPU machine: at least its shell must parse here,
    and a mistyped stage must stop it before any work (exit 2), writing only under $OUT."""
    script = ROOT / "scripts" / "gpu_check.sh"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    result = subprocess.run(["bash", str(script), "no_such_stage"], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "OUT": str(tmp_path)}, cwd=ROOT)
    assert result.returncode == 2 and "unknown stage no_such_stage" in result.stdout, result.stdout + result.stderr


def test_build_gpu_carry_lists_the_gpu_checks_own_cases_and_refuses_unknown_steps():
    """scripts/build_gpu_carry.sh (run on the CPU ahead of a GPU session) compiles what gpu_check.sh
    prewarms and tests: both read the lists from gpu_common.sh. A mistyped step stops it before any
    work (exit 2); its dry run names the kernel-source hash that gpu_check's build stage compares."""
    script = ROOT / "scripts" / "build_gpu_carry.sh"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    env = {**os.environ, "DRY_RUN": "1"}
    result = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=60, env=env, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    listed = dict(line.split(": ", 1) for line in result.stdout.splitlines())
    assert listed["steps"] == "venv extension prewarm tests pack wheels"
    count = subprocess.run(["bash", "-c", ". scripts/gpu_common.sh; echo $PREWARM_CASES | wc -w; "
                            "echo $GPU_TESTS | wc -w; kernel_source_hash"], capture_output=True, text=True,
                           timeout=60, cwd=ROOT).stdout.split()
    assert int(count[0]) >= 60 and listed["prewarm cases"].startswith(f"{count[0]},"), listed
    assert listed["GPU test files"] == count[1] and listed["kernel sources"] == count[2]
    assert int(count[1]) >= 10 and ". scripts/gpu_common.sh" in (ROOT / "scripts" / "gpu_check.sh").read_text()
    bad = subprocess.run(["bash", str(script), "venv", "no_such_step"], capture_output=True, text=True, timeout=60,
                         env=env, cwd=ROOT)
    assert bad.returncode == 2 and "unknown step no_such_step" in bad.stdout, bad.stdout + bad.stderr


def test_gpu_check_says_whether_its_carry_matches_the_kernel_sources(tmp_path):
    """gpu_check's build stage starts with report_carry: a carry built from these kernel sources is
    said to match, one built from others is called stale, and a missing one is named as such (the
    device then compiles everything: a new session's checkout has no ignored files)."""
    def report(carry: Path) -> str:
        result = subprocess.run(["bash", "-c", f". scripts/gpu_common.sh; report_carry {carry}"],
                                capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert result.returncode == 0, result.stderr
        return result.stdout

    now = subprocess.run(["bash", "-c", ". scripts/gpu_common.sh; kernel_source_hash"], capture_output=True,
                         text=True, timeout=60, cwd=ROOT).stdout.strip()
    assert len(now) == 16
    carry = tmp_path / "carry"
    assert report(carry).startswith("no carry (")
    carry.mkdir()
    manifest = "built: today\ncommit: abc\nkernel sources: {}\nversions: x\ntriton binaries: 770\n"
    (carry / "MANIFEST.txt").write_text(manifest.format(now))
    assert f"the carry matches these kernel sources ({now})" in report(carry)
    assert "triton binaries: 770" in report(carry)
    (carry / "MANIFEST.txt").write_text(manifest.format("0123456789abcdef"))
    assert "the carry may be STALE: built from kernel sources 0123456789abcdef" in report(carry)


def test_gpu_check_names_only_known_e2e_rows():
    """The e2e_rest stage picks rows by label: each must be one of bench_e2e's GPU variants (and
    bench_e2e refuses unknown labels, so a typo cannot silently drop a row of a GPU run)."""
    import re

    text = (ROOT / "scripts" / "gpu_check.sh").read_text()
    names = re.findall(r'"([^"]+)"', re.search(r"E2E_REST_VARIANTS=\((.*?)\)\n", text, re.S).group(1))
    labels = set(re.findall(r'Variant\("([^"]+)"', (ROOT / "benchmarks" / "bench_e2e.py").read_text()))
    assert len(names) >= 10 and set(names) <= labels, set(names) - labels
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_e2e.py"), "--variants", "no such row"],
                            capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 2 and "unknown variants" in result.stderr, result.stderr[-2000:]


def test_timeline_summary_splits_kernel_time_from_gaps():
    """gpu_kernels.py timeline's summary of a profiler trace: the last of N forwards, busy time as
    the union of activities (PDL lets a kernel start before its predecessor ends), gaps between."""
    code = """
import json, sys
sys.path.insert(0, "scripts")
import gpu_kernels as g
forward = [("conv", 0.0, 10.0), ("linear", 14.0, 20.0), ("attention", 30.0, 8.0), ("linear", 40.0, 5.0)]
events = [(n, t + 1000.0 * f, d) for f in range(3) for n, t, d in forward]
print(json.dumps(g.timeline_summary(events[::-1], 3)))
print(json.dumps(g.timeline_summary(events[:-1], 3)))
print(json.dumps(g.timeline_summary([], 3)))
"""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    full, short, empty = (json.loads(line) for line in result.stdout.splitlines()[-3:])
    # conv 0-10, gap 4, linear 14-34 overlapping attention 30-38 (busy to 38), gap 2, linear 40-45
    assert full["activities"] == 4 and not full["uneven"]
    assert full["span_us"] == 45 and full["busy_us"] == 39 and full["gap_us"] == 6
    assert [gap["us"] for gap in full["largest_gaps"]] == [4, 2]
    assert full["largest_gaps"][0]["before"] == "linear"
    assert full["by_name"][0] == {"name": "linear", "count": 2, "us": 25.0}
    assert short["uneven"] and short["activities"] == 3
    assert empty["activities"] == 0


def test_gpu_check_expands_run_names_word_by_word(tmp_path):
    """"prove", "time" and "extra" stand for lists of stages; a stage whose name contains one of
    them ("timeline") must stay itself (a substring substitution once turned it into garbage)."""
    def stages(*names):
        result = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), *names], capture_output=True,
                                text=True, timeout=60, env={**os.environ, "OUT": str(tmp_path), "LIST_STAGES": "1"},
                                cwd=ROOT)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout.split("stages:")[-1].split()

    assert stages("time") == ["env", "e2e_rest", "attention", "convprobe", "kernels", "timeline", "ncu"]
    assert stages("timeline") == ["timeline"]
    assert stages() == stages("prove") and "tests" in stages("prove") and stages("prove")[-1] == "carry"
    assert stages("extra", "kernels") == ["env", "headline", "kernels"]


def test_prewarm_compiles_its_jobs_for_sm90_without_a_gpu(tmp_path):
    """``gpu_kernels.py prewarm --stub-driver``: the prewarm's workers (rebuild the arguments,
    ``JITFunction.warmup``) compile every job of a case, plain and as launched with PDL, for sm_90
    behind the stand-in driver of benchmarks/stub_gpu.py (warmup compiles, it never loads or
    launches). How a GPU session's Triton cache is built ahead on the CPU (see gpu_check.sh)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path / "cache")
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_kernels.py"), "prewarm", "--stub-driver",
                             "--workers", "2", "--cases", "bf16:64:2/1", "--pdl-cases", "bf16:64:2/1",
                             "--out", str(tmp_path / "prewarm.json")], capture_output=True, text=True, env=env,
                            cwd=ROOT, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "prewarm.json").read_text())
    assert summary["jobs"] == 24 and summary["n_errors"] == 0, summary
    assert len(list((tmp_path / "cache").rglob("*.cubin"))) == 24


def test_compile_only_plugin_compiles_a_gpu_tests_kernels_for_sm90_and_runs_none(tmp_path):
    """``scripts/compile_only.py`` (how the GPU test run's binaries join the carried Triton cache):
    a kernel test run through it compiles its launches for sm_90 into TRITON_CACHE_DIR, launches
    nothing (the poisoned output stays NaN, so the test's check fails), and a second run finds
    every binary in the cache."""
    test = "tests/test_fused_glue.py::test_add_layer_norm_matches_the_composition[add+norm-torch.float32]"
    env = {**os.environ, "TRITON_INTERPRET": "0", "TRITON_CACHE_DIR": str(tmp_path / "cache"),
           "LUA_FAST_TEST_GPU_SHAPES": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "scripts"), str(ROOT / "benchmarks"), str(ROOT)])}

    def run() -> str:
        result = subprocess.run([sys.executable, "-m", "pytest", "-p", "compile_only", "-q", "-p", "no:cacheprovider",
                                 "-p", "no:xdist", test], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
        assert "1 failed" in result.stdout, result.stdout[-3000:] + result.stderr[-2000:]  # no kernel ran
        return next(line for line in result.stdout.splitlines() if line.startswith("compile_only:"))

    first = run()
    assert "1 kernels compiled for sm_90 (1 new binaries" in first and "0 errors" in first, first
    (cubin,) = (tmp_path / "cache").rglob("*.cubin")
    assert json.loads(cubin.with_suffix(".json").read_text())["target"]["arch"] == 90
    second = run()
    assert "1 kernels compiled for sm_90 (0 new binaries" in second, second


def test_e2e_table_records_a_failed_row_and_goes_on(tmp_path, monkeypatch):
    """bench_e2e: a variant that raises (the released-style fp32 path needs ~132 GB at 128x128 on
    the GPU, more than an 80 GB H100 has) becomes a row with its error; the other rows are still
    timed and their ratios still taken, and the table prints it."""
    import torch

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import bench_e2e

    real = bench_e2e.run_variant

    def run_variant(variant, *args, **kwargs):
        if variant.label == "torch fp32":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(variant, *args, **kwargs)

    monkeypatch.setattr(bench_e2e, "run_variant", run_variant)
    out = tmp_path / "e2e.json"
    monkeypatch.setattr(sys, "argv", ["bench_e2e.py", "--cases", "16x2", "--repeat", "1", "--out", str(out)])
    bench_e2e.main()
    rows = {r["variant"]: r for r in json.loads(out.read_text())["results"]}
    assert rows["torch fp32"]["error"] == "OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"
    assert "median_ms" not in rows["torch fp32"]
    assert rows["reference bf16"]["median_ms"] > 0 and rows["torch bf16"]["speedup_vs_reference_fp32"] > 0
    assert "| 16x2 | torch fp32 | failed: OutOfMemoryError" in bench_e2e.table(list(rows.values()))


def test_released_row_under_pytorch_default_switches(monkeypatch):
    """bench_e2e's "released fp32, TF32 convs" row runs the released-style path under the TF32
    switches a fresh process has (cuDNN convs TF32, matmuls IEEE), as the released code does;
    "released fp32" keeps the fp32 mode's IEEE switches. Seen on the CPU by making the fp32 mode's
    switch context act as on CUDA (it only sets PyTorch's flags), and read inside the forward."""
    import torch

    from lua_fast import LUAConfig, dispatch, precision
    from lua_fast.reference import LUA

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import bench_e2e

    assert bench_e2e.PYTORCH_DEFAULT_SWITCHES == ("none", "tf32")  # PyTorch 2.9+'s defaults, untouched
    monkeypatch.setattr(dispatch, "backend_flags", lambda p, device: precision.backend_flags(p, torch.device("cuda")))
    variants = {v.label: v for v in bench_e2e.GPU_VARIANTS}
    torch.manual_seed(0)
    state = LUA(LUAConfig.small()).state_dict()
    x = torch.randn(1, 16, 16, 16)
    seen = {}
    for label in ("released fp32", "released fp32, TF32 convs"):
        _, timing, _, _ = bench_e2e.run_variant(variants[label], state, x, 2, torch.device("cpu"), repeat=1)
        seen[label] = timing["tf32_switches_in_forward"]
        # the host time of its masks, per forward: one per shifted block (2 in the small config)
        masks = timing["released_masks_per_forward"]
        assert masks["masks"] == 2 and masks["build_ms"] > 0 and masks["copy_ms"] >= 0, masks
    assert bench_e2e.windows.shift_mask.__name__ == "shift_mask"  # restored after each row
    assert seen["released fp32"] == {"matmul": "ieee", "cudnn_conv": "ieee"}
    assert seen["released fp32, TF32 convs"] == {"matmul": "none", "cudnn_conv": "tf32"}
    assert precision.tf32_switches() == ("none", "tf32")  # restored after each row


def test_graphed_peers_in_the_e2e_table(monkeypatch):
    """bench_e2e also times what CUDA graphs alone give, without lua_fast's kernels: eager bf16 and
    torch bf16 graphed by lua_fast, and torch.compile's own graphs (mode="reduce-overhead"). The
    compiled row clones its output (CUDA graph trees overwrite it on the next replay; the error is
    taken after the timing) and drops dynamo's cache, with its graph pool, after its row."""
    import torch

    from lua_fast import LUAConfig
    from lua_fast.reference import LUA

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import bench_e2e

    variants = {v.label: v for v in bench_e2e.GPU_VARIANTS}
    peers = {"eager bf16 + graphs": ("reference", False), "torch bf16 + graphs": ("torch", False),
             "compiled bf16 + graphs": ("reference", True)}
    assert {label: (variants[label].backend, variants[label].compile) for label in peers} == peers
    assert all(variants[label].cuda_graph and variants[label].precision == "bf16" for label in peers)
    modes, resets, held = [], [], {}

    def compile_like_graph_trees(model, mode=None):  # one output buffer, overwritten by every call
        modes.append(mode)

        def run(x, scales):
            for s, y in model(x, scales).items():
                held.setdefault(s, torch.empty_like(y)).copy_(y)
            return held
        return run

    monkeypatch.setattr(torch, "compile", compile_like_graph_trees)
    monkeypatch.setattr(torch._dynamo, "reset", lambda: resets.append(True))
    steps = []
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: steps.append(True))
    torch.manual_seed(0)
    state = LUA(LUAConfig.small()).state_dict()
    x = torch.randn(1, 16, 16, 16)
    out, _, _, _ = bench_e2e.run_variant(variants["compiled bf16 + graphs"], state, x, 2, torch.device("cpu"), repeat=2)
    assert modes == ["reduce-overhead"] and resets == [True] and len(steps) >= 4  # first, 2 warm-up, timed
    assert out.untyped_storage().data_ptr() != held[2].untyped_storage().data_ptr() and torch.equal(out, held[2])


def test_gpu_test_workers_cap_their_allocator(monkeypatch):
    """conftest: under xdist on a GPU each worker's allocator gets an even share of 80% of the GPU
    (LUA_FAST_TEST_GPU_MEMORY_GIB overrides, 0 = off), so one worker's huge cuDNN workspace cannot
    starve the others; one process is not capped."""
    from types import SimpleNamespace

    import torch
    from conftest import cap_gpu_memory_per_worker

    fractions = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: SimpleNamespace(total_memory=80 * 2**30))
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction", fractions.append)
    monkeypatch.delenv("LUA_FAST_TEST_GPU_MEMORY_GIB", raising=False)
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "12")
    assert cap_gpu_memory_per_worker() == pytest.approx(0.8 / 12)
    monkeypatch.setenv("LUA_FAST_TEST_GPU_MEMORY_GIB", "24")
    assert cap_gpu_memory_per_worker() == pytest.approx(0.3)
    monkeypatch.setenv("LUA_FAST_TEST_GPU_MEMORY_GIB", "500")
    assert cap_gpu_memory_per_worker() == 1.0
    monkeypatch.setenv("LUA_FAST_TEST_GPU_MEMORY_GIB", "0")
    assert cap_gpu_memory_per_worker() is None
    monkeypatch.delenv("LUA_FAST_TEST_GPU_MEMORY_GIB")
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "1")
    assert cap_gpu_memory_per_worker() is None
    assert fractions == [pytest.approx(0.8 / 12), pytest.approx(0.3), 1.0]


def test_e2e_rows_load_their_model_under_their_switches(monkeypatch):
    """LUA_FAST_TRITON_GEMMS is read when the triton backend is built, so bench_e2e's "cuBLAS GEMMs"
    row must load its model under it (the per-forward switches were only set around the calls); the
    other rows leave it empty, i.e. the backend's default for the precision."""
    import torch

    from lua_fast import precision
    from lua_fast.backends.triton_backend import fused_gemms_enabled

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import bench_e2e

    seen = {}

    class Loaded(Exception):
        pass

    def load(*args, **kwargs):
        seen["gemms"] = os.environ.get("LUA_FAST_TRITON_GEMMS")
        seen["fused"] = fused_gemms_enabled(precision.resolve(kwargs["precision"], None))
        raise Loaded

    monkeypatch.setattr(bench_e2e.lua_fast, "load", load)
    monkeypatch.delenv("LUA_FAST_TRITON_GEMMS", raising=False)
    variants = {v.label: v for v in bench_e2e.GPU_VARIANTS}
    for label, gemms, fused in (("triton bf16 + graphs, cuBLAS GEMMs", "0", False), ("triton bf16 + graphs", "", True),
                                ("triton fp32", "", False)):
        with pytest.raises(Loaded):
            bench_e2e.run_variant(variants[label], {}, torch.zeros(1), 2, torch.device("cpu"), repeat=1)
        assert seen == {"gemms": gemms, "fused": fused}, (label, seen)
    assert "LUA_FAST_TRITON_GEMMS" not in os.environ


def test_a_test_marked_with_its_memory_lifts_its_workers_cap(monkeypatch):
    """conftest: a test marked gpu_memory_gib(n) (the 64-bit offsets partition holds ~16 GiB, above
    a worker's 9.3 GiB share of an H200 and 5.3 GiB of an H100) runs with its worker's cap lifted
    to n GiB; afterwards the worker's cache goes back to the driver and its cap is restored. A cap
    already above n is left alone."""
    from types import SimpleNamespace

    import torch
    from conftest import lifted_gpu_memory_cap

    calls = []
    cap = [0.8 / 12]
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: SimpleNamespace(total_memory=80 * 2**30))
    monkeypatch.setattr(torch.cuda, "get_per_process_memory_fraction", lambda index: cap[0])
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction", lambda f: calls.append(("cap", f)))
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: calls.append(("sync",)))
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append(("empty_cache",)))
    body = lifted_gpu_memory_cap(18)
    next(body)  # the test runs here
    assert calls == [("cap", 18 / 80)]
    with pytest.raises(StopIteration):
        next(body)
    assert calls == [("cap", 18 / 80), ("sync",), ("empty_cache",), ("cap", pytest.approx(0.8 / 12))]
    calls.clear()
    cap[0] = 0.5  # (40 GiB: enough)
    body = lifted_gpu_memory_cap(18)
    next(body)
    with pytest.raises(StopIteration):
        next(body)
    assert calls == []


def test_gpu_report_reads_the_first_h200_run(tmp_path):
    """scripts/gpu_report.py on the committed H200 results (plus a made-up tests.log and traced
    allocation): the figures of benchmarks/NOTES.md, each target's verdict, the failures named."""
    import shutil

    folder = tmp_path / "run"
    shutil.copytree(ROOT / "benchmarks" / "results" / "gpu_h200", folder)
    (folder / "tests.log").write_text(
        "[gw0] [ 50%] PASSED tests/test_gpu_backends.py::test_a\n"
        "FAILED tests/test_gpu_backends.py::test_b[fp32] - AssertionError: 2e-3 > 1e-5\n"
        "======= 1 failed, 500 passed, 20 skipped in 190.20s (0:03:10) =======\n")
    rows = json.loads((folder / "e2e_rest.json").read_text())
    rows["results"][0]["largest_allocations"] = [{"mib": 41000.0, "frames": ["conv.py:548 _conv_forward",
                                                                              "model.py:131 forward"]}]
    rows["results"].append({"case": "64x2", "variant": "eager bf16 + graphs", "backend": "reference",
                            "precision": "bf16", "cuda_graph": True, "median_ms": 8.72, "peak_mib": 80.0,
                            "rel_err_vs_fp32_reference": 9.6e-3})  # (made up: the first run had no such row)
    (folder / "e2e_rest.json").write_text(json.dumps(rows))
    table128 = json.loads((folder / "e2e_128x2.json").read_text())
    assert table128["results"][0]["variant"] == "released fp32"
    table128["results"][0]["released_masks_per_forward"] = {"masks": 18, "build_ms": 505.0, "copy_ms": 30.0}
    (folder / "e2e_128x2.json").write_text(json.dumps(table128))
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_report.py"), str(folder)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = {line.split(" | ")[0].strip("| "): line for line in result.stdout.splitlines()}
    assert "| 1 failed, 500 passed, 20 skipped; FAILED tests/test_gpu_backends.py::test_b[fp32] | all pass | not met" \
        in lines["GPU tests"]
    assert "9.18 ms (triton bf16 + graphs) | <= 7 ms | not met" in lines["x2 128x128 bf16, best triton row"]
    assert "vs eager bf16 3.88x, vs compiled bf16 2.93x, vs released fp32 71.81x" in lines["... its ratios"]
    assert "5.51x (triton fp32 + graphs, 119.6 ms, err 2.6e-06) | >= 5x | met" in \
        lines["fp32 mode (err <= 1e-5) vs released fp32"]
    assert lines["fp32 mode (err <= 1e-5) vs released fp32, TF32 convs"].endswith("| not run |")
    assert "3.36x (triton bf16 + graphs, 4.36 ms) | >= 8x | not met" in lines["x2 64x64 with CUDA graphs vs eager bf16"]
    assert "130 vs 304 MiB | <= | met" in lines["peak memory 128x2, triton bf16 vs eager bf16"]
    assert "61.6 vs 147.2 us (2.39x" in lines["attention vs FlexAttention, shift 0"]
    assert ("658.9 ms, peak 132340 MiB, err 1.9e-06, 18 CPU masks a forward: 505.0 ms building, 30.0 ms copying"
            in lines["baseline released fp32 (128x2)"])
    assert "| 0.3 to 0.9 mask share | 0.77 | inside |" in \
        lines["released-style path: share of its time building masks on the CPU (128x2, released fp32)"]
    assert lines["released-style path: share of its time building masks on the CPU (64x2, released fp32)"].endswith(
        "| - | not recorded |")
    assert "41000 MiB at conv.py:548 _conv_forward < model.py:131 forward" in \
        lines["largest allocation 64x2 released fp32"]
    assert "| 9.18 | outside |" in lines["graphed bf16 forward after the kernel changes (128x2, triton bf16 + graphs)"]
    assert "| 64x2 | eager bf16 + graphs | 8.72 ms | 2.00x (4.36 ms) |" in result.stdout
    assert "| 7 to 11 ms | 8.72 | inside |" in lines["eager bf16 replayed from a CUDA graph (64x2, eager bf16 + graphs)"]
    assert "3.36x (triton bf16 + graphs" in lines["x2 64x64 with CUDA graphs vs eager bf16"]  # (not the peer)
    # per call site against its bound: the first run's file predates the pipe bound (issue bound then)
    assert "| LN+linear 360->1152 | 36 | 65.2 | 8.5 | issue | 7.65 | 23% |" in result.stdout
    assert "| **sum** | 193 | 10.05 ms | 2.70 ms | | **3.72** (2026-11-26: 2.98 of max(pipe, memory)" in result.stdout

    convs = [{"size": 128, "batch": 1, "mode": "ieee", "median_ms": 41.5, "peak_allocated_mib": 98000.0,
              "peak_reserved_mib": 98100.0, "rel_err_vs_ieee": 0.0},
             {"size": 128, "batch": 1, "mode": "ieee, cudnn off", "error": "OutOfMemoryError: ..."}]
    (folder / "conv_workspace.json").write_text(json.dumps({"results": convs}))
    site = {"launches": 36, "issue_bound_us": 8.5, "mufu_us": 0.2, "tensor_us": 15.3}
    (folder / "kernel_times_new.json").write_text(json.dumps({
        "case": {"precision": "bf16", "latent": [64, 64], "scale": 2, "batch": 1},
        "sites": [{**site, "site": "LN+linear 360->1152", "measured_us": 31.6, "pipe_bound_us": 15.8,
                   "memory_floor_us": 10.6, "bound_us": 15.8},
                  {**site, "site": "linear 384->360+residual", "measured_us": 15.2, "pipe_bound_us": 5.3,
                   "memory_floor_us": 7.6, "bound_us": 7.6, "l2_model_us": 12.2}]}))
    (folder / "tests.log").write_text("....\n==== 300 passed in 199.00s ====\nKeyboardInterrupt\n")
    made_up = {"case": "128x2", "backend": "triton", "cuda_graph": True, "peak_mib": 9.0}  # (switch rows)
    table128["results"] += [
        {**made_up, "variant": "triton bf16 + graphs, cuBLAS GEMMs", "precision": "bf16", "median_ms": 8.0,
         "rel_err_vs_fp32_reference": 8.4e-3},
        {**made_up, "variant": "triton bf16 + graphs + PDL", "precision": "bf16", "median_ms": 9.1,
         "rel_err_vs_fp32_reference": 8.4e-3},
        {**made_up, "variant": "triton fp32 tf32x3", "precision": "fp32", "median_ms": 60.0, "cuda_graph": False,
         "rel_err_vs_fp32_reference": 2e-5}]
    (folder / "e2e_128x2.json").write_text(json.dumps(table128))
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_report.py"), str(folder)],
                            capture_output=True, text=True, timeout=60)
    assert "| 300 passed (cut at the deadline) | all pass | not met |" in result.stdout
    assert "| 128x128 b1 ieee | 41.500 | 98000 | 98100 | 0.0e+00 |" in result.stdout
    assert "| 128x128 b1 ieee, cudnn off | failed: OutOfMemoryError: ... |" in result.stdout
    assert "| LN+linear 360->1152 | 36 | 31.6 | 15.8 | pipe | 2.00 | 68% |" in result.stdout
    assert "| linear 384->360+residual | 36 | 15.2 | 7.6 | memory | 2.00 | 32% | 12.2 | 1.25 |" in result.stdout
    assert "| LN+linear 360->1152 | 36 | 31.6 | 15.8 | pipe | 2.00 | 68% | - | - |" in result.stdout
    assert "| **sum** | 72 | 1.68 ms | 0.84 ms | | **2.00** (2026-11-26" in result.stdout
    # the switches a run decides, each beside its baseline row of the same table
    assert ("| LUA_FAST_TRITON_GEMMS=0 (cuBLAS GEMMs, bf16) | 128x2 | 8.00 ms | 9.18 ms | 15% faster: candidate "
            "default |") in result.stdout
    assert "| LUA_FAST_PDL=1 | 128x2 | 9.10 ms | 9.18 ms | within 2%: no change |" in result.stdout
    assert "| 60.00 ms | 120.69 ms | error 2.0e-05 > 1e-5: not for the fp32 mode |" in result.stdout
    assert "9.18 ms (triton bf16 + graphs) | <= 7 ms" not in result.stdout  # (the cuBLAS row is now the best)
    assert "8.00 ms (triton bf16 + graphs, cuBLAS GEMMs) | <= 7 ms | not met" in result.stdout


def test_conv_probe_runs_its_three_modes_and_restores_the_switches(tmp_path):
    """benchmarks/probe_conv_workspace.py (gpu_check's convprobe stage) on the CPU: one row per mode,
    equal outputs (no cuDNN or TF32 here), and cuDNN's switch and the TF32 switches restored."""
    out = tmp_path / "conv.json"
    script = ROOT / "benchmarks" / "probe_conv_workspace.py"
    code = (f"import sys, runpy, torch; from lua_fast.precision import tf32_switches; before = tf32_switches(); "
            f"sys.argv = ['probe', '--sizes', '8', '--batches', '1', '--channels', '8', '--repeat', '1', "
            f"'--out', {str(out)!r}]; sys.path.insert(0, {str(script.parent)!r}); "
            f"runpy.run_path({str(script)!r}, run_name='__main__'); "
            f"assert tf32_switches() == before and torch.backends.cudnn.enabled, (tf32_switches(), before)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads(out.read_text())["results"]
    assert [r["mode"] for r in rows] == ["ieee", "tf32", "ieee, cudnn off"]
    assert all(r["median_ms"] > 0 and r["rel_err_vs_ieee"] == 0.0 for r in rows)


def test_kernel_times_rows_and_table_without_a_gpu(tmp_path):
    """``gpu_kernels.py times`` (the GPU run's kernels stage) end to end on the CPU: the forward is
    recorded on CPU tensors with each launch's autotune choice set to its first config, every site's
    binary is compiled for sm_90 behind the stand-in driver, and the timer returns 10 us. The rows
    carry every bound the table prints (issue, wave, MUFU, tensor, pipe, memory floor) and the
    printed ratio is measured / max(pipe, memory)."""
    code = """
import json, sys
from unittest import mock
sys.path.insert(0, "scripts")
import torch, triton.testing
from triton.compiler.compiler import CompiledKernel
import compile_kernels as ck, gpu_kernels as g
from lua_fast.kernels.triton_support import autotune_key

g._use_stub_driver()
record = ck.record_forward

def on_cpu(*args, device=None, **kwargs):
    launches = record(*args, **kwargs)
    for launch in launches:
        if hasattr(launch.tuner, "cache"):  # the autotuner's "choice": the first config its prune keeps
            launch.tuner.cache[autotune_key(launch.tuner, launch.args, launch.kwargs)] = ck.configs_for(launch)[0][0]
    return launches

def no_handles(self):
    self.n_regs, self.n_spills = 96, 0

with mock.patch.object(ck, "record_forward", on_cpu), mock.patch.object(torch.cuda, "synchronize", lambda: None), \\
        mock.patch.object(triton.testing, "do_bench", lambda *a, **k: 0.010), \\
        mock.patch.object(CompiledKernel, "_init_handles", no_handles):
    out = g.times(g.parse_case("bf16:32:2"))
print(json.dumps(out))
"""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path / "cache")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT,
                            timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.splitlines()[-1])
    rows = out["sites"]
    assert out["launches"] == sum(r["launches"] for r in rows) > 150 and len(rows) >= 10
    for r in rows:
        assert r["measured_us"] == pytest.approx(10.0) and r["n_regs"] == 96, r
        assert r["pipe_bound_us"] >= max(r["wave_bound_us"], r["mufu_us"], r["tensor_us"]) * (1 - 1e-9), r
        assert r["bound_us"] == max(r["pipe_bound_us"], r["memory_floor_us"]) > 0, r
    attention = [r for r in rows if r["kernel"] == "window_attention"]
    assert attention and all(r["mufu_us"] > 0 and r["tensor_us"] > 0 for r in attention)
    assert out["sum_pipe_bound_us"] >= out["sum_issue_bound_us"]
    table = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    assert "memory floor us" in table[0] and "measured / max(pipe, memory)" in table[0]
    first = next(r for r in rows if r["site"] in table[2])
    assert f"| {10.0 / first['bound_us']:.2f} | " in table[2], (table[2], first)
    # every kernel but the add + LayerNorm also gets the L2 model (an estimate) and measured / it; it a dash
    assert "L2 model us" in table[0]
    for r in rows:
        assert (r["l2_model_us"] is not None) == (r["kernel"] != "layer_norm"), r
    assert next(line for line in table if line.startswith("| layernorm")).endswith("| - | - |")
    assert table[2].endswith(f"| {first['l2_model_us']:.1f} | {10.0 / first['l2_model_us']:.2f} |"), table[2]
