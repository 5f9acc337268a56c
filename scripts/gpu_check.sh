#!/usr/bin/env bash
# The one prepared GPU check: run it in a single call on a lent GPU machine.
#   bash scripts/gpu_check.sh            (results under $OUT, else benchmarks/results/)
# Builds the CUDA extension, runs the test suite on the GPU, runs the benchmarks and
# prints a short table. Copy the JSON it writes into benchmarks/results/ and quote it.
set -uo pipefail
cd "$(dirname "$0")/.."
RESULTS=${OUT:-benchmarks/results}
mkdir -p "$RESULTS"
export LUA_FAST_REQUIRE_NATIVE=1

echo "== build"
python3 -m pip install --no-deps --no-build-isolation -e . > "$RESULTS/build.log" 2>&1 \
  || { tail -40 "$RESULTS/build.log"; exit 1; }
python3 -m lua_fast info | tee "$RESULTS/info.txt" | head -30

echo "== tests (GPU)"
python3 -m pytest -q -x tests/test_window_ops.py tests/test_window_attention.py tests/test_upsample_heads.py \
  tests/test_gpu_backends.py tests/test_native_build.py \
  2>&1 | tail -15 | tee "$RESULTS/tests.txt"

echo "== benchmarks"
python3 benchmarks/bench_window_attention.py --out "$RESULTS/window_attention_gpu.json"
python3 benchmarks/bench_heads.py --out "$RESULTS/heads_gpu.json"
python3 benchmarks/bench_window_ops.py --device cuda --out "$RESULTS/window_ops_gpu.json"
python3 benchmarks/bench_e2e.py --device cuda --full --repeat 10 \
  --out "$RESULTS/e2e_gpu.json"
