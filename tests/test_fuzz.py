"""Fuzzing (issue 16): mutated checkpoints and latent files end in a finite output or a
LuaFastError, never another exception, never a crash, within a stated memory bound.

The cases run in a child process (tests/fuzz_inputs.py), so a crash shows as its exit status and
its peak RSS is its own. The child's data segment is capped (RLIMIT_DATA) well above the bound,
so a regression that materialises an expanded tensor fails this test instead of the machine.
"""

import json
import resource
import subprocess
import sys
from pathlib import Path

import pytest

FUZZER = Path(__file__).with_name("fuzz_inputs.py")
PEAK_RSS_BOUND_MIB = 1024  # the whole child: torch, the model, every case (measured ~400 MiB)
DATA_CAP = 6 * 2**30


def _cap_memory():
    resource.setrlimit(resource.RLIMIT_DATA, (DATA_CAP, DATA_CAP))


@pytest.mark.parametrize("seed", [0, 1])
def test_mutated_inputs_keep_the_contract(seed):
    proc = subprocess.run(
        [sys.executable, str(FUZZER), "--seed", str(seed), "--checkpoints", "150", "--latents", "150"],
        capture_output=True, text=True, timeout=300, preexec_fn=_cap_memory,
    )
    assert proc.returncode == 0, f"the fuzzer crashed (status {proc.returncode}): {proc.stderr[-2000:]}"
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["broken"] == [], "\n".join(report["broken"])
    assert report["cases"] >= 250
    assert report["peak_rss_mib"] < PEAK_RSS_BOUND_MIB, report
    # The mutations reach every layer of checks, and valid mutations (permuted strides) still run.
    assert {"ok", "CheckpointError", "InputError", "NonFiniteInputError"} <= set(report["outcomes"]), report
