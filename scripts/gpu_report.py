"""Issue 13's acceptance list and the open predictions, read off a GPU run's result folders.

    python scripts/gpu_report.py /work/.device/N/files [/work/.device/M/files ...]

Reads what scripts/gpu_check.sh writes: log.txt (or run*_log.txt), tests.log, e2e_*.json,
window_attention.json, conv_workspace.json, kernel_times*.json, from every folder given. Prints
markdown: each acceptance item with its measured figure, target and verdict, then each prediction
written before the run next to what was measured. It only reads; a file that is missing makes its items "not run". Figures are computed
from the rows' medians, so two rows are compared only when they come from the same table (one
process, side by side).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

# (what, case, row, baseline row or None, predicted low, high, unit): written down before the next
# GPU run (benchmarks/NOTES.md); "ms" is the row's median, "delta ms" the row's minus the baseline's.
PREDICTIONS = [
    ("graphed bf16 forward after the kernel changes", "128x2", "triton bf16 + graphs", None, 6.0, 6.5, "ms"),
    ("non-graph bf16, host path cut to 40-50 us a launch", "128x2", "triton bf16", None, 11.0, 14.0, "ms"),
    ("non-graph bf16, host path cut to 40-50 us a launch", "64x2", "triton bf16", None, 10.0, 13.0, "ms"),
    ("PDL with graphs", "128x2", "triton bf16 + graphs + PDL", "triton bf16 + graphs", -0.4, -0.2, "delta ms"),
    ("fused MLP with graphs", "128x2", "triton bf16 + graphs + fused MLP", "triton bf16 + graphs", -0.7, 0.0,
     "delta ms"),
    ("3 launches/block with graphs", "64x2", "triton bf16 + graphs + 3 launches/block", "triton bf16 + graphs",
     -0.6, 0.0, "delta ms"),
    ("fp32 with tf32x3 dots", "128x2", "triton fp32 tf32x3", None, 50.0, 80.0, "ms"),
    # Revised in the sixth session of 2026-11-27 (was 0-659 ms, "well under the IEEE row"): the
    # released code's CPU masks, 16-18 ms per 128x128 mask on the development CPU x 18 shifted
    # blocks (~300 ms; 3.8 ms x 18 = 69 ms at 64x64, where the row took 97), are a floor that TF32
    # convs do not touch.
    ("released-style path under PyTorch's default switches", "128x2", "released fp32, TF32 convs", None, 250.0,
     700.0, "ms"),
    ("... its peak, with no IEEE cuDNN workspace", "128x2", "released fp32, TF32 convs", None, 0.0, 1024.0,
     "peak MiB"),
    ("released-style path: share of its time building masks on the CPU", "128x2", "released fp32", None, 0.3,
     0.9, "mask share"),
    ("released-style path: share of its time building masks on the CPU", "64x2", "released fp32", None, 0.3,
     0.9, "mask share"),
    # What graphs alone give (sixth session of 2026-11-27): eager bf16 at batch 4 ran 121.6 ms, ~30 ms
    # of GPU time per image at 128x128, so graphs cannot take the eager rows much below that there;
    # at 64x64 eager (14.7 ms, ~1440 PyTorch calls a forward) is mostly host time.
    ("eager bf16 replayed from a CUDA graph", "128x2", "eager bf16 + graphs", None, 25.0, 35.0, "ms"),
    ("eager bf16 replayed from a CUDA graph", "64x2", "eager bf16 + graphs", None, 7.0, 11.0, "ms"),
    ("lua_fast torch bf16 replayed from a CUDA graph", "128x2", "torch bf16 + graphs", None, 23.0, 33.0, "ms"),
    ("torch.compile mode=reduce-overhead", "128x2", "compiled bf16 + graphs", None, 20.0, 27.0, "ms"),
    # qkv, proj and fc2 on cuBLAS, LayerNorms and residual adds in add_layer_norm launches (7 a block)
    ("trunk GEMMs on cuBLAS, graphed", "128x2", "triton bf16 + graphs, cuBLAS GEMMs", None, 6.0, 9.0, "ms"),
]
# The graphed peers of "triton bf16 + graphs": CUDA graphs without lua_fast's kernels.
GRAPH_PEERS = ("eager bf16 + graphs", "torch bf16 + graphs", "compiled bf16 + graphs")


def load(folders: list[Path]) -> dict:
    found = {"logs": "", "tests": None, "rows": [], "attention": [], "convs": [], "kernels": []}
    for folder in folders:
        for path in sorted(folder.glob("*.txt")):
            if path.name == "tests.log" or "tests" in path.name:
                continue
            if path.name == "log.txt" or "log" in path.name:
                found["logs"] += path.read_text(errors="replace")
        for path in sorted(folder.glob("tests*.log")):
            found["tests"] = path.read_text(errors="replace")
        for path in sorted(folder.glob("e2e*.json")):
            found["rows"] += json.loads(path.read_text())["results"]
        convs = folder / "conv_workspace.json"
        if convs.exists():
            found["convs"] += json.loads(convs.read_text())["results"]
        attention = folder / "window_attention.json"
        if attention.exists():
            found["attention"] += json.loads(attention.read_text())["results"]
        for path in sorted(folder.glob("kernel_times*.json")):  # scripts/gpu_kernels.py times
            found["kernels"].append(json.loads(path.read_text()))
    return found


# Measured / bound of the sum over a forward's call sites, each timed alone with L2 flushed (bf16 x2
# 128x128) on the H200 on 2026-11-26, with the configs of then: 10.05 ms against 3.37 ms of
# max(pipe bound, memory floor), 2.70 ms of issue bound (benchmarks/NOTES.md, seventh session of
# 2026-11-27).
KERNELS_OVER_BOUND_BEFORE = "2026-11-26: 2.98 of max(pipe, memory), 3.72 of issue"


def kernel_sites(run: dict) -> list[str]:
    """One call-site table of ``gpu_kernels.py times``: measured against the site's tightest bound
    (max(pipe bound, memory floor); a file written before those bounds: the issue bound), and
    against the L2 model where the file has it (GEMMs and convs: an estimate at 6.5 TB/s, not a
    bound; a ratio well above 1 is a site short of programs or stalled on latency)."""
    c = run["case"]
    lines = [f"| {c['precision']} {c['latent'][0]}x{c['latent'][1]} x{c['scale']} b{c['batch']} | launches | "
             "measured us | bound us | which | measured / bound | share of the measured sum | L2 model us | "
             "measured / L2 model |",
             "|---|---|---|---|---|---|---|---|---|"]
    rows = sorted(run["sites"], key=lambda r: -r["measured_us"] * r["launches"])
    total = sum(r["measured_us"] * r["launches"] for r in rows) or 1.0
    bounds = 0.0
    for r in rows:
        if "bound_us" in r:
            bound = r["bound_us"]
            which = "pipe" if r["pipe_bound_us"] >= r["memory_floor_us"] else "memory"
        else:
            bound, which = r["issue_bound_us"], "issue"
        bounds += bound * r["launches"]
        l2 = r.get("l2_model_us")
        lines.append(f"| {r['site']} | {r['launches']} | {r['measured_us']:.1f} | {bound:.1f} | {which} | "
                     f"{r['measured_us'] / bound:.2f} | {r['measured_us'] * r['launches'] / total:.0%} | "
                     + (f"{l2:.1f} | {r['measured_us'] / l2:.2f} |" if l2 else "- | - |"))
    lines.append(f"| **sum** | {sum(r['launches'] for r in rows)} | {total / 1e3:.2f} ms | {bounds / 1e3:.2f} ms | | "
                 f"**{total / bounds:.2f}** ({KERNELS_OVER_BOUND_BEFORE}) | | | |")
    return lines


def test_summary(text: str | None) -> tuple[str, str]:
    """(measured, verdict) from pytest's output: the last summary counts, failures, interruption."""
    if text is None:
        return "no tests.log", "not run"
    counts = {}
    for line in text.splitlines():
        if re.search(r"\d+ (passed|failed)", line) and " in " in line:
            counts = {word: int(n) for n, word in re.findall(r"(\d+) (passed|failed|errors?|skipped)", line)}
    interrupted = "KeyboardInterrupt" in text or "Interrupted" in text
    failed = [line.split(" - ")[0] for line in text.splitlines() if line.startswith(("FAILED", "ERROR"))]
    measured = ", ".join(f"{n} {word}" for word, n in counts.items()) or "no summary line"
    if interrupted:
        measured += " (cut at the deadline)"
    if failed:
        measured += "; " + "; ".join(failed[:8]) + (" ..." if len(failed) > 8 else "")
    bad = counts.get("failed", 0) + counts.get("error", 0) + counts.get("errors", 0)
    ok = counts.get("passed", 0) > 0 and bad == 0 and not interrupted
    return measured, "met" if ok else "not met"


def row(rows: list[dict], case: str, label: str) -> dict | None:
    matches = [r for r in rows if r["case"] == case and r["variant"] == label and "median_ms" in r]
    return matches[-1] if matches else None


def best(rows: list[dict], case: str, keep) -> dict | None:
    candidates = [r for r in rows if r["case"] == case and "median_ms" in r and keep(r)]
    return min(candidates, key=lambda r: r["median_ms"]) if candidates else None


def ratio(base: dict | None, r: dict | None) -> str:
    return f"{base['median_ms'] / r['median_ms']:.2f}x" if base and r else "-"


def verdict(ok: bool | None) -> str:
    return "not run" if ok is None else ("met" if ok else "not met")


def acceptance(found: dict) -> list[tuple[str, str, str, str]]:
    """(item, measured, target, verdict) rows."""
    items = []
    native = re.findall(r"native cuda ops: (.*)", found["logs"])
    items.append(("CUDA extension builds and loads", native[-1] if native else "-", "loaded",
                  verdict(native[-1].strip() == "loaded" if native else None)))
    items.append(("GPU tests", *test_summary(found["tests"])[:1], "all pass", test_summary(found["tests"])[1]))

    rows = found["rows"]
    bf16 = lambda r: r["backend"] == "triton" and r["precision"] == "bf16"  # noqa: E731
    top = best(rows, "128x2", bf16)
    eager, compiled = row(rows, "128x2", "eager bf16"), row(rows, "128x2", "compiled bf16")
    released, released_tf32 = row(rows, "128x2", "released fp32"), row(rows, "128x2", "released fp32, TF32 convs")
    items.append(("x2 128x128 bf16, best triton row", f"{top['median_ms']:.2f} ms ({top['variant']})" if top else "-",
                  "<= 7 ms", verdict(top["median_ms"] <= 7.0 if top else None)))
    if top:
        items.append(("... its ratios", f"vs eager bf16 {ratio(eager, top)}, vs compiled bf16 {ratio(compiled, top)}, "
                      f"vs released fp32 {ratio(released, top)} (TF32 convs: {ratio(released_tf32, top)})", "-", "-"))
    fp32 = best(rows, "128x2", lambda r: r["backend"] == "triton" and r["precision"] == "fp32"
                and r["rel_err_vs_fp32_reference"] <= 1e-5)
    for label, base in (("released fp32", released), ("released fp32, TF32 convs", released_tf32)):
        gain = base["median_ms"] / fp32["median_ms"] if base and fp32 else None
        items.append((f"fp32 mode (err <= 1e-5) vs {label}",
                      f"{gain:.2f}x ({fp32['variant']}, {fp32['median_ms']:.1f} ms, err "
                      f"{fp32['rel_err_vs_fp32_reference']:.1e})" if gain else "-", ">= 5x",
                      verdict(gain >= 5 if gain else None)))
    graphed = best(rows, "64x2", lambda r: bf16(r) and r["cuda_graph"])
    eager64 = row(rows, "64x2", "eager bf16")
    gain = eager64["median_ms"] / graphed["median_ms"] if eager64 and graphed else None
    items.append(("x2 64x64 with CUDA graphs vs eager bf16",
                  f"{gain:.2f}x ({graphed['variant']}, {graphed['median_ms']:.2f} ms)" if gain else "-", ">= 8x",
                  verdict(gain >= 8 if gain else None)))
    for case in sorted({r["case"] for r in rows}):
        mine, theirs = row(rows, case, "triton bf16"), row(rows, case, "eager bf16")
        if mine and theirs and mine.get("peak_mib") is not None:
            items.append((f"peak memory {case}, triton bf16 vs eager bf16",
                          f"{mine['peak_mib']:.0f} vs {theirs['peak_mib']:.0f} MiB", "<=",
                          verdict(mine["peak_mib"] <= theirs["peak_mib"])))
    for r in found["attention"]:
        if r.get("dtype") == "bfloat16" and "flex_ms" in r:
            items.append((f"attention vs FlexAttention, shift {r['shift']}",
                          f"{r['fused_ms'] * 1e3:.1f} vs {r['flex_ms'] * 1e3:.1f} us ({r['flex_ms'] / r['fused_ms']:.2f}x; "
                          f"kernel only {r['flex_core_ms'] * 1e3:.1f} us)", "measured", "-"))
    for r in (released, released_tf32):  # the two baselines: what they cost besides time
        if r:
            reserved = f", {r['peak_reserved_mib']:.0f} MiB reserved" if "peak_reserved_mib" in r else ""
            masks = r.get("released_masks_per_forward")
            masks = (f", {masks['masks']:.0f} CPU masks a forward: {masks['build_ms']:.1f} ms building, "
                     f"{masks['copy_ms']:.1f} ms copying" if masks else "")
            items.append((f"baseline {r['variant']} (128x2)", f"{r['median_ms']:.1f} ms, peak {r['peak_mib']:.0f} MiB"
                          f"{reserved}, err {r['rel_err_vs_fp32_reference']:.1e}{masks}", "-", "-"))
    for r in rows:  # bench_e2e --trace-memory: the largest allocation of one more call, with its frames
        if isinstance(r.get("largest_allocations"), list) and r["largest_allocations"]:
            top_alloc = r["largest_allocations"][0]
            items.append((f"largest allocation {r['case']} {r['variant']}",
                          f"{top_alloc['mib']:.0f} MiB at {' < '.join(top_alloc['frames'][:3])}", "-", "-"))
    failed = [r for r in rows if "error" in r]
    for r in failed:
        items.append((f"failed row {r['case']} {r['variant']}", r["error"], "-", "-"))
    return items


def predictions(rows: list[dict]) -> list[tuple[str, str, str, str]]:
    out = []
    for what, case, label, base_label, lo, hi, unit in PREDICTIONS:
        r, base = row(rows, case, label), row(rows, case, base_label) if base_label else None
        if r is None or (base_label and base is None):
            out.append((f"{what} ({case}, {label})", f"{lo:g} to {hi:g} {unit}", "-", "not run"))
            continue
        masks = r.get("released_masks_per_forward")
        value = {"ms": r["median_ms"], "peak MiB": r.get("peak_mib"),
                 "mask share": masks["build_ms"] / r["median_ms"] if masks else None}.get(unit)
        if unit == "delta ms":
            value = r["median_ms"] - base["median_ms"]
        inside = value is not None and lo <= value <= hi
        out.append((f"{what} ({case}, {label})", f"{lo:g} to {hi:g} {unit}",
                    f"{value:.2f}" if value is not None else "-",
                    "not recorded" if value is None else ("inside" if inside else "outside")))
    return out


def graph_peers(rows: list[dict]) -> list[tuple[str, str, str]]:
    """(case, graphed row, its median and what triton bf16 + graphs gains over it): how much of the
    graphed triton rows' ratio to eager bf16 is the graphs' and how much the kernels'."""
    out = []
    for case in sorted({r["case"] for r in rows}):
        mine = row(rows, case, "triton bf16 + graphs")
        for label in GRAPH_PEERS:
            peer = row(rows, case, label)
            if peer:
                out.append((case, label, f"{peer['median_ms']:.2f} ms",
                            f"{ratio(peer, mine)} ({mine['median_ms']:.2f} ms)" if mine else "-"))
    return out


# (switch, row with it, the same row without it): the opt-in switches and alternatives a GPU run decides
SWITCHES = [
    ("LUA_FAST_TRITON_GEMMS=0 (cuBLAS GEMMs, bf16)", "triton bf16 + graphs, cuBLAS GEMMs", "triton bf16 + graphs"),
    ("LUA_FAST_FUSED_MLP=1", "triton bf16 + graphs + fused MLP", "triton bf16 + graphs"),
    ("LUA_FAST_FUSED_ATTN_PROJ=1", "triton bf16 + graphs + fused attn-proj", "triton bf16 + graphs"),
    ("both fused-block switches", "triton bf16 + graphs + 3 launches/block", "triton bf16 + graphs"),
    ("both, without graphs", "triton bf16 + 3 launches/block", "triton bf16"),
    ("LUA_FAST_PDL=1", "triton bf16 + graphs + PDL", "triton bf16 + graphs"),
    ("LUA_FAST_PDL=1, without graphs", "triton bf16 + PDL", "triton bf16"),
    ("LUA_FAST_FP32_DOTS=tf32x3 (fp32 mode)", "triton fp32 tf32x3", "triton fp32"),
]
TIE = 0.02  # medians closer than this (relative) decide nothing


def switch_decisions(rows: list[dict]) -> list[tuple[str, str, str, str, str]]:
    """(switch, case, with, without, reading) for each switch row measured beside its baseline: a
    switch faster by more than TIE (and, in fp32, still within 1e-5) is a candidate default."""
    out = []
    for switch, label, base_label in SWITCHES:
        for case in sorted({r["case"] for r in rows}):
            mine, base = row(rows, case, label), row(rows, case, base_label)
            if not (mine and base):
                continue
            gain = base["median_ms"] / mine["median_ms"] - 1
            exact = mine["precision"] != "fp32" or mine["rel_err_vs_fp32_reference"] <= 1e-5
            if not exact:
                reading = f"error {mine['rel_err_vs_fp32_reference']:.1e} > 1e-5: not for the fp32 mode"
            elif gain > TIE:
                reading = f"{gain:.0%} faster: candidate default"
            elif gain < -TIE:
                reading = f"{-gain:.0%} slower: keep it off"
            else:
                reading = "within 2%: no change"
            out.append((switch, case, f"{mine['median_ms']:.2f} ms", f"{base['median_ms']:.2f} ms", reading))
    return out


def markdown(found: dict) -> str:
    lines = ["| acceptance item | measured | target | verdict |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in acceptance(found)]
    lines += ["", "| prediction | predicted | measured | |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in predictions(found["rows"])]
    peers = graph_peers(found["rows"])
    if peers:
        lines += ["", "| case | graphed peer (no lua_fast kernels) | median | triton bf16 + graphs over it |",
                  "|---|---|---|---|"]
        lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in peers]
    decisions = switch_decisions(found["rows"])
    if decisions:
        lines += ["", "| switch | case | with | without | reading |", "|---|---|---|---|---|"]
        lines += [f"| {a} | {b} | {c} | {d} | {e} |" for a, b, c, d, e in decisions]
    for run in found["kernels"]:
        lines += ["", *kernel_sites(run)]
    if found["convs"]:  # benchmarks/probe_conv_workspace.py: the 132 GB reading on one trunk conv
        lines += ["", "| conv probe (360->360 3x3, fp32) | ms | allocated MiB | reserved MiB | err vs ieee |",
                  "|---|---|---|---|---|"]
        for r in found["convs"]:
            if "error" in r:
                lines.append(f"| {r['size']}x{r['size']} b{r['batch']} {r['mode']} | failed: {r['error']} | | | |")
                continue
            lines.append(f"| {r['size']}x{r['size']} b{r['batch']} {r['mode']} | {r['median_ms']:.3f} | "
                         f"{r.get('peak_allocated_mib', 0):.0f} | {r.get('peak_reserved_mib', 0):.0f} | "
                         f"{r.get('rel_err_vs_ieee', 0):.1e} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", type=Path)
    args = parser.parse_args()
    print(markdown(load(args.folders)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
