"""`lua-fast bench --quick` runs on CPU and writes JSON, a markdown table and (with matplotlib) a plot."""

import json
from contextlib import nullcontext

import pytest
import torch

from lua_fast.cli import main


def test_bench_quick_on_cpu(tmp_path, capsys):
    assert main(["bench", "--quick", "--device", "cpu", "--repeat", "1", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "CPU figures are a smoke test" in out and "| latent | scale | backend |" in out
    report = json.loads((tmp_path / "bench.json").read_text())
    env = report["environment"]
    assert env["device"] == "cpu" and env["torch"] and "lua_fast" in env
    # The CPU by name where the system says it (before 2026-11-28 Linux gave "cpu": platform.processor()
    # is empty there), and the instruction set PyTorch's CPU kernels run.
    from pathlib import Path

    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists() and "model name" in cpuinfo.read_text():
        assert env["device_name"] not in ("", "cpu")
    assert env["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    from lua_fast.host_memory import cpu_quota

    assert env["cpu_quota"] == cpu_quota() and env["cpu_threads"] == torch.get_num_threads()
    from lua_fast.precision import tf32_switches

    assert env["tf32_switches"] == {"matmul": str(tf32_switches()[0]), "cudnn_conv": str(tf32_switches()[1])}
    backends = {(r["backend"], r["precision"]) for r in report["results"]}
    assert {("reference", "fp32"), ("torch", "fp32"), ("reference", "bf16")} <= backends
    for r in report["results"]:
        assert r["median_ms"] > 0 and r["min_ms"] <= r["median_ms"] <= r["max_ms"]
        if r["precision"] == "fp32":
            assert r["rel_err_vs_fp32_reference"] <= 1e-5
    ops = {o["op"] for o in report["ops"]}
    assert {"partition+roll", "merge+roll", "shift mask", "window attention", "x2 head"} <= ops
    assert (tmp_path / "bench.md").read_text().startswith("Device: ")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return
    assert (tmp_path / "bench.png").stat().st_size > 1000


def test_bench_times_what_is_asked_for(tmp_path, capsys):
    """Sizes, batch, scales, precisions, backends and the model are chosen on the command line
    (before 2026-11-29 the sweep was fixed: batch 1, the small config on the CPU, every backend);
    the fp32 reference is always timed beside them, the base of each row's ratio."""
    from lua_fast import LUAConfig
    from conftest import random_state_dict

    torch.save({"params_ema": random_state_dict(LUAConfig.small(), seed=3)}, tmp_path / "w.pth")
    args = ["bench", "--device", "cpu", "--repeat", "1", "--out", str(tmp_path / "r"), "--no-ops",
            "--weights", str(tmp_path / "w.pth"), "--sizes", "8x12", "--batch", "2", "--scales", "4",
            "--precisions", "BF16", "--backends", "Torch", "triton"]
    assert main(args) == 0
    report = json.loads((tmp_path / "r" / "bench.json").read_text())
    rows = [(r["backend"], r["precision"], r["latent"], r["scale"]) for r in report["results"]]
    assert rows == [("reference", "fp32", [2, 16, 8, 12], 4), ("torch", "bf16", [2, 16, 8, 12], 4)]
    assert report["batch"] == 2 and report["ops"] == [] and report["weights"] == str(tmp_path / "w.pth")
    assert report["results"][1]["speedup_vs_reference_fp32"] > 0
    # triton was named and cannot run here (no GPU; the interpreter is no timing tool): said, not dropped
    assert [(r["backend"], r["precision"]) for r in report["skipped"]] == [("triton", "bf16")]
    md = (tmp_path / "r" / "bench.md").read_text()
    assert "| 2x8x12 | x4 | torch | bf16 |" in md and "- triton bf16: " in md


@pytest.mark.parametrize("args, message", [
    (["--scales", "3"], "unsupported scales \\[3\\]"),
    (["--precisions", "bf17"], "unknown precision 'bf17'"),
    (["--backends", "cuda"], "unknown backends \\['cuda'\\]"),
    (["--backends", "triton"], "nothing to time on cpu: triton fp32: "),
    (["--precisions", "tf32"], "nothing to time on cpu: triton tf32: .*; reference tf32: tf32 needs CUDA"),
    (["--repeat", "-1"], "argument --repeat: expected an int >= 0, got -1"),
    (["--batch", "0"], "argument --batch: expected an int >= 1, got 0"),
    (["--sizes", "0x4"], "latent sides must be >= 1"),
    (["--sizes", "8by8"], "expected a latent size HxW"),
    (["--config", "flux", "--weights", "w.pth"], "not allowed with"),
    (["--device", "meta"], "the meta device holds shapes only"),
])
def test_bench_refuses_a_sweep_it_cannot_run_before_timing(tmp_path, capsys, args, message):
    import re

    parsing = ("not allowed" in message or "argument --" in message or "--sizes" in args
               or "--device" in args)  # (argparse's own errors: SystemExit)
    with pytest.raises(SystemExit) if parsing else nullcontext():
        assert main(["bench", "--device", "cpu", "--out", str(tmp_path / "r")] + args) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "r").exists()


def test_run_suite_refuses_what_it_cannot_time():
    from lua_fast import InputError
    from lua_fast.benchmark import run_suite

    with pytest.raises(InputError, match="the meta device holds shapes only"):
        run_suite("meta", quick=True)
    with pytest.raises(InputError, match="repeat must be an int >= 1, got -1"):
        run_suite("cpu", quick=True, repeat=-1)
    with pytest.raises(InputError, match="batch must be an int >= 1, got 0"):
        run_suite("cpu", quick=True, batch=0)


def test_run_suite_reads_scales_and_sizes_as_upscale_does():
    """Head names ("X4"), NumPy ints as scales, and an int as a square latent's side; before
    2026-11-29 "x4" was an unsupported scale, a NumPy scale an AttributeError in the memory estimate
    and an int size a TypeError."""
    import numpy as np

    from lua_fast import InputError
    from lua_fast.benchmark import run_suite

    report = run_suite("cpu", quick=True, repeat=1, scales=["X4", np.int64(2)], sizes=[8, (8, 12)],
                       precisions=["fp32"], backends=["reference"], ops=False, log=lambda line: None)
    rows = {(r["scale"], tuple(r["latent"][2:])) for r in report["results"]}
    assert rows == {(2, (8, 8)), (2, (8, 12)), (4, (8, 8)), (4, (8, 12))}
    assert all(type(r["scale"]) is int for r in report["results"])
    with pytest.raises(InputError, match=r"unsupported scales \['x3', 2.0\]: .* or its heads \['x2', 'x4'\]"):
        run_suite("cpu", quick=True, scales=["x3", 2.0, 2])


def test_the_cpu_rows_have_the_resident_peak():
    """CPU rows had no memory figure before 2026-11-29 ("-"); they now report the resident set's
    growth over the timed calls (glibc's freed heap trimmed and Linux's VmHWM reset first)."""
    from lua_fast import host_memory
    from lua_fast.benchmark import run_suite

    base = host_memory.reset_resident_peak()
    if base is None:
        pytest.skip("the peak resident set cannot be reset here (not Linux, or /proc refuses)")
    held = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
    grown = host_memory.resident_peak() - base
    del held
    assert 60 * 2**20 < grown < 80 * 2**20, grown
    assert host_memory.reset_resident_peak() < base + 16 * 2**20  # freed and trimmed: the peak starts again
    assert host_memory.resident_peak() < base + 16 * 2**20
    report = run_suite("cpu", quick=True, repeat=1, sizes=[(16, 16), (48, 48)], precisions=["fp32"],
                       backends=["torch"], ops=False, log=lambda line: None)
    peaks = {(r["backend"], r["latent"][2]): r["peak_mib"] for r in report["results"]}
    assert all(p is not None and p > 0 for p in peaks.values()), peaks
    assert peaks["torch", 48] > peaks["torch", 16]  # (9 windows' activations against one)
