"""The torch backend's reused memory on the CPU, timed side by side in one process.

    python benchmarks/bench_cpu_attention.py [--sizes 32 64] [--repeat 5] [--out results/cpu_attention_inplace.json]

Variants, released FLUX config, random weights, batch 1, x2: the reference backend; the torch
backend as it runs now (every block's (windows, heads, N, N) scores, qkv and MLP hidden
activations in buffers the forward reuses; bias add, mask add, softmax and GELU in place); the
torch backend with that switched off (a new tensor per op: the path autograd and traced graphs
take); and the torch backend as it was before 2026-11-28 (that, with the reference's permuted bias
view). Calls of the four alternate, so a drift of the machine meets each alike. Every output is
compared bit for bit with the reference's. CPU only: on CUDA the switch is off
(lua_fast.backends.torch_backend._reuse_memory).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from pathlib import Path
from unittest import mock

import torch

import lua_fast
from lua_fast import LUAConfig
from lua_fast.backends import torch_backend
from lua_fast.reference import LUA

from common import environment, write_json


def out_of_place():
    return mock.patch.object(torch_backend, "_reuse_memory", lambda *tensors: False)


def as_before():
    """Out of place, with the reference's permuted (heads, N, N) bias view."""
    stack = contextlib.ExitStack()
    stack.enter_context(out_of_place())
    stack.enter_context(mock.patch.object(torch_backend, "relative_position_bias",
                                          lambda attn, dtype: attn.relative_position_bias().to(dtype)))
    return stack


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "cpu_attention_inplace.json"))
    args = parser.parse_args()

    torch.manual_seed(0)
    state = LUA(LUAConfig.flux()).state_dict()
    rows = []
    for dtype_name in args.dtypes:
        dtype = getattr(torch, dtype_name)
        reference = lua_fast.load(state, backend="reference", dtype=dtype)
        backend = lua_fast.load(state, backend="torch", dtype=dtype)
        variants = {"reference": (reference, contextlib.nullcontext),
                    "torch, memory reused": (backend, contextlib.nullcontext),
                    "torch, memory not reused": (backend, out_of_place),
                    "torch before 2026-11-28 (permuted bias, out of place)": (backend, as_before)}
        for size in args.sizes:
            x = torch.randn(1, 16, size, size)
            times = {name: [] for name in variants}
            outputs = {}
            for call in range(args.repeat + 1):  # the first round warms up
                for name, (up, patch) in variants.items():
                    with patch():
                        start = time.perf_counter()
                        outputs[name] = up.upscale(x)
                        if call:
                            times[name].append((time.perf_counter() - start) * 1e3)
            medians = {name: statistics.median(t) for name, t in times.items()}
            for name, t in times.items():
                rows.append({
                    "variant": name, "dtype": dtype_name, "latent": [1, 16, size, size], "scale": 2,
                    "median_ms": round(medians[name], 1), "min_ms": round(min(t), 1), "max_ms": round(max(t), 1),
                    "vs_reference": round(medians["reference"] / medians[name], 3),
                    "vs_out_of_place": round(medians["torch, memory not reused"] / medians[name], 3),
                    "vs_before": round(medians["torch before 2026-11-28 (permuted bias, out of place)"] / medians[name], 3),
                    "bit_equal_to_reference": bool(torch.equal(outputs[name], outputs["reference"])),
                })
                print(f"{dtype_name} {size}x{size} {name:54s} {medians[name]:8.1f} ms (x{rows[-1]['vs_before']:.2f} "
                      f"vs before, x{rows[-1]['vs_reference']:.2f} vs reference, bit-equal "
                      f"{rows[-1]['bit_equal_to_reference']})", flush=True)
            write_json(args.out, {"environment": environment(torch.device("cpu")), "config": "flux (released)",
                                  "repeat": args.repeat, "rows": rows})


if __name__ == "__main__":
    main()
