"""`lua-fast bench --quick` runs on CPU and writes JSON, a markdown table and (with matplotlib) a plot."""

import json

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
