#!/usr/bin/env bash
# The one prepared GPU check: run it in a single call on a lent GPU machine.
#   bash scripts/gpu_check.sh [build] [tests] [kernels] [e2e] [suite]   (default: all five, in order)
# Results go under $OUT when set (the device tool's output folder), else benchmarks/results/gpu/.
# Copy the JSON it writes into benchmarks/results/ and quote it in the closing note.
# Stage costs (rough, unmeasured): build 1-2 min; tests 2-4 min (the released-config parity
# tests dominate); kernels 1-2 min; e2e 2-4 min; suite 4-8 min. Split them over calls if needed.
set -uo pipefail
cd "$(dirname "$0")/.."
RESULTS=${OUT:-benchmarks/results/gpu}
mkdir -p "$RESULTS"
STAGES=${*:-build tests kernels e2e suite}
export LUA_FAST_REQUIRE_NATIVE=1

for stage in $STAGES; do
  echo "== $stage"
  case $stage in
    build)
      python3 -m pip install --no-deps --no-build-isolation -e . > "$RESULTS/build.log" 2>&1 \
        || { tail -40 "$RESULTS/build.log"; exit 1; }
      python3 -m lua_fast info | tee "$RESULTS/info.txt" | head -40 ;;
    tests)
      python3 -m pytest -q -x tests/test_official_parity.py tests/test_window_ops.py tests/test_window_attention.py tests/test_upsample_heads.py \
        tests/test_gpu_backends.py tests/test_native_build.py 2>&1 | tail -15 | tee "$RESULTS/tests.txt" ;;
    kernels)
      python3 benchmarks/bench_window_attention.py --out "$RESULTS/window_attention_gpu.json"
      python3 benchmarks/bench_heads.py --out "$RESULTS/heads_gpu.json"
      python3 benchmarks/bench_window_ops.py --device cuda --out "$RESULTS/window_ops_gpu.json" ;;
    e2e)
      python3 benchmarks/bench_e2e.py --device cuda --full --repeat 10 --out "$RESULTS/e2e_gpu.json"
      python3 benchmarks/bench_headline.py --device cuda --out "$RESULTS/headline_gpu.json" ;;
    suite)
      python3 -m lua_fast bench --device cuda --out "$RESULTS/bench" | tail -60 ;;
    *) echo "unknown stage $stage"; exit 2 ;;
  esac
done
