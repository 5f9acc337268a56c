#!/usr/bin/env bash
# The prepared GPU check (issue 13), in two runs of at most ~5 minutes each on a lent H100/H200:
#   bash scripts/gpu_check.sh prove    # run 1: build + prewarm, GPU tests, x2 128x128 table
#   bash scripts/gpu_check.sh time     # run 2: the other e2e tables, attention vs FlexAttention, then the
#                                      # diagnostics: per-kernel times, timeline, ncu counters
#   bash scripts/gpu_check.sh extra    # headline (latent vs pixel path, diffusers VAE) + diffusers tests
#   bash scripts/gpu_check.sh STAGE... # any stages below, in order
# Results go under $OUT when set (the device tool's output folder), else benchmarks/results/gpu/;
# every stage appends to log.txt and writes its JSON as soon as it finishes, so a run cut short
# keeps what finished. At most 8 files come back from $OUT: keep it to log.txt, tests.log, the
# JSONs and the carry files.
#
# Runbook for a session that is lent a GPU (status: can_start_another true), in this order:
#   1. On the CPU, before any device call: bash scripts/build_gpu_carry.sh   (~9 min on 2 cores;
#      a new checkout has no .gpu_carry/ or .whl/, and the device would compile ~770 binaries)
#   2. run(kind="nvidia-h200", carry=[".gpu_carry", ".whl"], timeout_s=450,
#          command="bash scripts/gpu_check.sh prove")      # its build stage says "the carry matches"
#   3. At once, while the machine is warm: the same with command="bash scripts/gpu_check.sh time" and
#      timeout_s = what status says is left minus ~60 s (the close and idle count too)
#   4. give_back; python scripts/gpu_report.py <run 1's files_at> <run 2's files_at>; copy the JSONs
#      under benchmarks/results/, update README and NOTES, and quote the report in issue 13's note.
#
# Stage costs measured on an H200 (2026-11-26, first GPU session; torch 2.11, triton 3.6):
#   env 8 s; build (CUDA extension, ninja) alongside prewarm: 113 s (prewarm: 769 kernel variants,
#   91 s wall over 12 processes, 57 s of it recording fp32 forwards whose CPU GEMMs were not yet
#   skipped -- fixed since; the autotune configs for the LayerNorm GEMMs tripled since: expect
#   about the same wall time with the first-config-only "/1" cases below); carry 2 s;
#   table128 77 s (torch.compile's first call 12.7 s); kernels 25 s; attention + e2e_rest
#   (5 variants, no compile) 83 s together. tests: NOT finished in 210 s (run 1, 9 files) nor in
#   170 s (run 2, 4 files, -n 12: 3 failures and one test over 150 s, names lost to a tail -40):
#   hence the full log in tests.log, a per-test signal timeout and the durations table.
# Planned for the next session (15 min of device time in all; the last session's two calls took
# 673 s of it, the start, idle and close the other ~230 s, so ~670 s of commands): carry
# .gpu_carry/ (the extension built there on 2026-11-26 from the unchanged csrc/, and that
# session's Triton cache) and .whl/. Run 1 "prove" with the call's timeout_s ~420 (prewarm: 267
# distinct binaries now that jobs are deduplicated by JIT specialisation, not by argument value
# (the 769 "variants" of the first run held many duplicates; 934 with today's configs), ~40 s;
# tests <= 200 s; table128 ~80 s; kernels ~40 s), then at once, while the machine is warm, run 2
# "time" with ~240 (e2e_rest + attention ~85 s plus torch.compile at 64x64 ~30 s, ncu <= 150 s,
# expected ~40). "extra" only if time is left.
# Added since (fourth session of 2026-11-26, no GPU): every e2e table has two more bf16 rows,
# "+ PDL" with and without graphs (LUA_FAST_PDL=1; ~5-10 s per case), whose binaries the prewarm
# compiles from PDL_CASES (+115 jobs, ~+15 s); tests/test_gpu_backends.py checks PDL results
# bit-equal to plain launches (eager and 20 graph replays at 64x64); the attention autotuner has 3
# more configs (bias gathered from its table), so its first call per key tunes 14 instead of 11;
# one more fp32 row per table, "triton fp32 tf32x3" (LUA_FAST_FP32_DOTS=tf32x3, its binaries in
# the "fp32x3" prewarm cases: +36 jobs), and a GPU test that it keeps fp32's 1e-5 (2 sizes).
# Added in the first session of 2026-11-27 (no GPU): fewer launches per Swin block, both opt-in and
# read per forward: LUA_FAST_FUSED_MLP=1 (LN2 + fc1 + GELU + fc2 + residual as one launch) and
# LUA_FAST_FUSED_ATTN_PROJ=1 (attention + proj + residual as one launch): 199 -> 163 -> 127 launches
# per x2 forward. Five more bf16 rows per table ("+ graphs + fused MLP", "+ graphs + fused attn-proj",
# "+ 3 launches/block" with and without graphs, and with graphs + PDL), their binaries in the
# "+mlp+attn" prewarm and PDL cases (~+40 jobs), the kernels stage prints their per-site times (log
# only), and a GPU test holds both to the 2x-eager bound (bf16, mixed; 64x64 and 40x72).
# Budget with these rows (estimates, ~4-6 s per e2e row as measured on 2026-11-26): table128 now has
# 19 rows (~110-130 s, was 77 s for 11); e2e_rest 12 rows x 3 cases (~150-210 s, under its 240 s
# timeout; each row is written as it finishes). If run 1 runs out of time, "table128" and "kernels"
# can move to run 2 ahead of "attention" and "ncu", which only repeat the first session's figures.
# Predictions are a range (benchmarks/NOTES.md, "Both switches"): a two-parameter fit of the last
# H200 run (time = a x static bound + b x launches) gives anything from a small loss to, for the
# fused MLP, -0.3 ms at 64x64 and -0.7 ms at 128x128 with graphs; both switches -0.6 ms at 64x64,
# nothing at 128x128 (attn-proj's static bound is 2x the two launches' there). Read the graphed rows
# against "triton bf16 + graphs": they decide whether either switch becomes a default (or a size rule).
# Revised in the twelfth session of 2026-11-27 (no GPU) with the L2 model, which now covers both fused
# kernels (their weights, K and V re-read per 64 or 32 rows): with graphs, fused MLP -0.25 to -0.4 ms at
# 64x64 but +0.35 to +0.45 ms at 128x128; attention + proj within +-0.15 ms at both (NOTES.md).
# The same session added a conv_last tile (128x16x64: 2 more conv configs on Triton >= 3.9, 1 on 3.6)
# and rebuilt the carry at 9a2a90a: 778 Triton binaries, kernel-source hash 785c7889b3626142, 375 s of
# steps on the CPU (prewarm 203 s, test binaries 142 s).
# Thirteenth session (2026-11-28, no GPU): the conv's L1 choice became an int config value (A_L1; a
# string broke torch.compile with autotuning on) and LUA_FAST_AUTOTUNE=0 launches the first config that
# fits (on sm_90a the first, plus one extra launch per new key on Triton 3.6); traced launches keep the
# first only (torch 2.11 prunes them on fake tensors). Carry rebuilt at 0339f90: 787 Triton binaries,
# kernel-source hash 61f6dde6e0d3f591, 381 s of steps (prewarm 199 s, tests 152 s).
# Fourteenth session (2026-11-28, no GPU): no kernel changed. torch.compile of the reference backend
# is now one graph (the mask caches' lock broke it into 6 at the released config), so the "compiled
# bf16" peers of table128 measure a different, faster-or-equal compile than on 2026-11-26; the tests
# stage has one more GPU test (a compiled fp32 torch backend inside held TF32 switches, ~5-10 s).
# Carry rebuilt at 84cb634: 786 Triton binaries, kernel-source hash b7c78f585c7692ff, 411 s of steps
# (prewarm 213 s, tests 163 s).
# Added in the second session of 2026-11-27 (no GPU): eager launches no longer pass through
# wrap_triton's higher-order op (a host-time regression since f574988, ~250 us per launch, never run
# on a GPU) and tuned launches skip Autotuner.run: 40-50 us per launch on the dev CPU through a stub
# driver (the H200 ran 99 us). Prediction: the non-graph triton rows 19.7 -> ~10-13 ms at 64x64 and
# 29.4 -> ~11-14 ms at 128x128; graphed rows unchanged. The kernels stage prints the host path three ways,
# and every e2e row now has "host ms" (time for the call to return): ~10-13 ms predicted for non-graph
# triton bf16 at 64x64 (199 launches x 50-65 us), ~6.5-8.5 ms with 3 launches/block.
# Also added then: a "timeline" stage in run 2 after e2e_rest (~40-60 s estimated, 120 s timeout): per
# case (64x64, 128x128 x2 bf16), variant (plain, PDL, 3 launches/block) and mode (eager, graphed), the
# GPU span of one forward split into kernel time and the gaps between kernels, from torch.profiler.
# It answers what no static bound can: is the graphed 64x64 forward's ~22 us per launch kernels or gaps?
# Triton cache built ahead on the CPU (second session of 2026-11-27): a Python 3.12 venv at the GPU
# image's path (/opt/torch/.venv: the libdevice path is part of each binary's key) with triton 3.6.0
# from PyPI computes the GPU machine's cache keys exactly (12 of 12 checked against the first
# session's carried cache). So .gpu_carry/tcache.tgz.part-* now holds every PREWARM_CASES/PDL_CASES
# binary of this commit's kernels (422 jobs), built by
#   TRITON_CACHE_DIR=DIR /opt/torch/.venv/bin/python scripts/gpu_kernels.py prewarm --stub-driver \
#     --workers 2 --cases $PREWARM_CASES --pdl-cases $PDL_CASES
# and tarred as the carry stage does. Expected: the build stage's prewarm finds every binary (~20-30 s
# of recording, no compiling) instead of ~40-90 s; any kernel changed since compiles as before.
# Third session of 2026-11-27 (no GPU): the CPU suite run with torch 2.11.0+cu130 / Triton 3.6.0 (this
# machine's pair, Python 3.11) found and fixed three 2.11-only failures, one of them in GPU_TESTS
# (test_backends' no-graph-breaks test), and Triton 3.6's interpreter needed a backport under NumPy
# >= 2.4 (86 tests); the kernels' cache keys are unchanged (the carried cache still hits). Known and
# allowed: the shifted whole-window attention configs spill 8-24 B on Triton 3.6 (n_spills in kernels).
# Fourth session of 2026-11-27 (no GPU): the carried cache now also holds the GPU test run's own
# binaries. The kernel tests launch shapes, tiles and dtypes no forward does: through
# scripts/compile_only.py (a pytest plugin: stand-in sm_90 driver, real compiles, no launches) the
# GPU_TESTS files compile 375 kernels, 301 of them not in the prewarm's cache (237 s of compiling on
# 2 CPU cores; the tests stage's 12 workers would each have compiled what they met). Rebuilt as
#   cat .gpu_carry/tcache.tgz.part-* | tar xzf - -C DIR   # the prewarm binaries, built as above
#   TRITON_INTERPRET=0 TRITON_CACHE_DIR=DIR LUA_FAST_TEST_GPU_SHAPES=1 PYTHONPATH=scripts:benchmarks \
#     /opt/torch/.venv/bin/python -O -m pytest -p compile_only --assert=plain -q -p no:cacheprovider -n 2 $GPU_TESTS
# then tarred as the carry stage does, also leaving out *.autotune.json (the stand-in's untimed
# choices): 723 binaries, 27.5 MB in two parts. A second run against the extracted tarball compiled
# 0 new binaries (375 cache hits, 1 s). /opt/torch/.venv now holds the GPU image's torch 2.11.0 too.
# Expected: the tests stage compiles nothing a kernel test launches; what it still meets is GPU-only
# shapes the prewarm does not list. Any kernel edit (or a line added above a @triton.jit function)
# makes these binaries stale: rebuild both steps.
# Name kind "nvidia-h200" in the run calls: the released-style fp32 row allocated ~132 GB at 128x128
# on the H200 (unexplained; e2e_rest traces it), more than an H100's 80 GB, and the earlier figures
# are H200 figures. On an H100 that row (128x128 x2, x4, batch 4) now fails alone: bench_e2e records
# a failed row with its error and times the others (it used to end the whole table).
# Fifth session of 2026-11-27 (no GPU): a reading of the 132 GB. It does not grow with the batch (132340
# MiB at batch 1, 133385 at batch 4), grows with the latent's area (33349 MiB at 64x64), and the row's
# time behaves alike (659 ms at batch 1, 732 at batch 4; the triton fp32 row scales ~4x with the batch).
# No per-batch tensor (attention scores, masks) fits that; a per-layer workspace does. The fp32 mode's
# switches (precision.backend_flags) run the reference's cuDNN convs in IEEE fp32, and PyTorch takes
# the first cuDNN plan whose workspace it can allocate (an FFT plan's filter transform is batch-
# independent and grows with the padded area). Hypothesis, not seen: the largest allocation is a conv
# workspace of tens of GB; on an H100 those plans fail to allocate and PyTorch moves to the next plan,
# so the row runs there (with another time). PyTorch's default runs cuDNN convs in TF32, and the released
# code sets no switch, so the released code on a GPU runs TF32 convs: the new row "released fp32, TF32
# convs" (table128 and e2e_rest, ~5 s a case; both released rows' largest allocations traced) measures
# the released-style path that way. Prediction: its peak near 2x eager bf16's (~0.6 GB at 128x128), its
# time well under 659 ms, its error ~1e-3 (TF32). Its ratio is the one to quote against the released
# code; the IEEE row stays first (comparable with the first session's ratios).
# Budget for the next session, as of the fifth session of 2026-11-27 (15 min of device time: ~60-120 s
# start, 30 s idle after each call). Run 1 "prove", timeout_s ~450: env 8 s, build ~30-60 s (carried
# extension and cache), tests <= 220 s (SIGINT at 200), table128 ~130-160 s (20 rows), carry ~5 s.
# Run 2 "time" at once, timeout_s = what is left (~300 s): e2e_rest ~200-240 s (13 rows x 3 cases),
# attention ~60-80 s, convprobe ~10-20 s (one trunk conv three ways: tests the 132 GB reading and
# measures the fix, PyTorch's own conv); kernels (per-site times, registers, spills), timeline and ncu only if time
# is left (each writes its file when it finishes; the call's timeout ends the rest). "kernels" moved
# from run 1 to run 2 for this: the acceptance list needs the tests, table128, e2e_rest and attention.
# scripts/gpu_report.py prints issue 13's acceptance items (measured, target, verdict) and the open
# predictions from the results; the end of each run prints it for that run's files.
# What to read first in the results: the "+ PDL" rows against their plain rows (prediction: -0.2
# to -0.4 ms with graphs at 64x64 and 128x128, nothing without graphs: host-bound), the
# "fp32 tf32x3" row against "triton fp32" (prediction 120 -> 50-80 ms at 128x128 x2, error
# <= 1e-5), and in kernel_times.json whether attention picked a bias-table config.
# Sixth session of 2026-11-27 (no GPU): the graphed peers. Every graphed triton row was compared
# with eager rows only, which pay host time per PyTorch call (~1440 calls per eager forward), so
# the tables could not say how much of "3.88x with graphs" is the graphs' and how much the kernels'.
# table128 ends with three more rows (~20-35 s, torch.compile's reduce-overhead compile included):
# "eager bf16 + graphs", "torch bf16 + graphs", "compiled bf16 + graphs" (mode="reduce-overhead");
# e2e_rest has "eager bf16 + graphs" (~10 s over its 3 cases). gpu_report prints a peers table;
# predictions there. Row order (bench_e2e.GPU_VARIANTS) is now issue 13's rows first (released, eager,
# torch, triton bf16/mixed/fp32 with and without graphs, compiled bf16), then the diagnostic rows,
# most telling first: table128 has 23 rows and each new kernel key autotunes on its first call, so if
# the stage or the call runs out of time it loses diagnostics, not acceptance rows.
# The GPU test of cuda_graph=True now covers the torch and reference backends too (+2 tests, 64x64).
# table128 also has "triton bf16 + graphs, cuBLAS GEMMs" (LUA_FAST_TRITON_GEMMS=0, read at load: qkv, proj
# and fc2 on cuBLAS, 7 launches a block; ~5 s): the bf16 alternative never measured. Prediction 6-9 ms.
# The prewarm's fp32x3 cases had compiled the IEEE binaries twice and no tf32x3 one (fixed): the tf32x3
# rows would have compiled every config in the timed process. .gpu_carry's tarball now holds 767
# binaries (the 36 tf32x3 and 8 cuBLAS-path ones added; rebuilt as in the fourth session's commands).
# Autotuning times each config for 10 + 40 ms (was Triton's 25 + 100): ~280 binaries tuned per table.
# Budget after these changes (estimates): table128 23 rows, ~150-190 s (inside its 240 s); e2e_rest 14 rows x
# 3 cases plus three new size classes to tune, ~200-260 s: its 240 s timeout may cut the batch-4 case's
# last rows, which are diagnostics (acceptance rows come first in each case). Run 1 "prove" stays at
# timeout_s ~450, run 2 "time" gets what is left.
# The per-worker memory cap (fifth session) would have failed test_cuda_64bit_offsets (~16 GiB held):
# tests now declare such needs with @pytest.mark.gpu_memory_gib(n), which lifts that worker's cap.
# The released-style rows now clock their CPU masks (released_masks_per_forward: masks, ms building,
# ms copying, per forward): 16-18 ms per 128x128 mask on the development CPU x 18 a forward, ~300 of the
# IEEE row's 659 ms. Hence the TF32 row's prediction is now 250-700 ms (it was "well under 659").
# Seventh session of 2026-11-27 (no GPU): the kernels stage's table also prints each site's MUFU and
# tensor-pipe time, its pipe bound and memory floor, and measured / max(pipe, memory) (same cost);
# gpu_report prints it against the 2026-11-26 ratio (2.98; prediction 2.5-2.9). No kernel changed: the
# carried cache still matches.
# Eighth session of 2026-11-27 (no GPU): the carry does not outlive a session. A new session's checkout
# holds only what git tracks, so .gpu_carry/ and .whl/ were gone. scripts/build_gpu_carry.sh rebuilds
# both on the CPU in one command, before the first device call: 511-516 s on the 2-core development machine
# (venv with torch 2.11.0+cu130 and Triton 3.6.0 at /opt/torch/.venv 75 s, extension 27 s, prewarm 466
# jobs 211 s, the GPU tests' ~304 other binaries 193-195 s, pack 9 s, wheels 1 s): 770 binaries, 29.5 MB in
# two parts, the extension 4 MB, wheels 6 MB (38 MB of the 64 MiB carry limit). Its MANIFEST.txt names
# a hash of the kernel sources; the build stage below prints whether the carry matches them, or says
# that nothing was carried. The case lists and the tarball's packing live in scripts/gpu_common.sh.
# Tenth session of 2026-11-27 (no GPU): tests/test_gpu_backends.py has four more tests (CUDA graphs
# with threads, streams and evicted masks; a capture beside another thread's forwards; an upscaler on
# cuda:1, skipped with one GPU): ~10-20 s estimated, 64x64 triton bf16 binaries already carried. The
# carry was rebuilt at dbf8f08 (769 binaries, 418 s of steps on the CPU); no Triton kernel changed.
# Eleventh session of 2026-11-27 (no GPU): the fc2 GEMM has one more autotune config (256x128 tiles),
# the convs a taps-inner choice (Triton >= 3.9 only: not on this machine's 3.6, so not built here);
# carry rebuilt at 91579ab (772 binaries, kernel-source hash cc8411a41150b610; 484 s of steps on the
# CPU). tests/test_gpu_backends.py has one more test (bounded CUDA graphs: ~5-10 s). The kernels stage
# also prints each GEMM/conv site's L2 model and measured / it (benchmarks/NOTES.md, "L2 traffic"):
# the prediction is 1.0-1.4 for the fc2 and convs, more for sites short of programs.
# To spare a rerun on a fresh machine the build, "carry" copies the built extension and a tarball
# of Triton's cache (cubins and metadata only) into the results; put them in .gpu_carry/
# (git-ignored) and name it in the run's carry list.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
R=${OUT:-benchmarks/results/gpu}
mkdir -p "$R"
LOG="$R/log.txt"  # at most 8 files come back from $OUT: side logs go to $TMPD and into log.txt
TMPD=$(mktemp -d)
export TRITON_CACHE_DIR=${TRITON_CACHE_DIR:-/tmp/lua_fast_triton_cache}
export TORCHINDUCTOR_COMPILE_THREADS=${TORCHINDUCTOR_COMPILE_THREADS:-16}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=python3
expand() {  # a run's name -> its stages, word by word (a stage name such as "timeline" stays itself)
  case $1 in
    prove) echo "env build carry tests table128 carry" ;;
    time) echo "env e2e_rest attention convprobe kernels timeline ncu" ;;  # what issue 13 accepts first, diagnostics last
    extra) echo "env headline" ;;
    *) echo "$1" ;;
  esac
}
STAGES=$(for name in ${*:-prove}; do expand "$name"; done | xargs)
install_wheels() {  # packages the GPU image lacks (diffusers, for "extra") travel as wheels in .whl/
  # (git-excluded; name it in the call's carry list). Not a stage: PYTHONPATH must reach them all.
  if ls .whl/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
      && export PYTHONPATH="$PYTHONPATH:/tmp/site" && echo "carried wheels: $(ls .whl)"
  fi
}
. scripts/gpu_common.sh  # PREWARM_CASES, PDL_CASES, GPU_TESTS, pack_triton_cache

log() { echo "$@" | tee -a "$LOG"; }
run_stage() {  # name, command...: time it, keep going on failure, record the exit status
  local name=$1; shift
  local t0=$SECONDS
  log "== $name ($(date -u +%H:%M:%S))"
  "$@" 2>&1 | tee -a "$LOG"
  local rc=$?
  log "== $name: rc=$rc in $((SECONDS - t0)) s"
  echo "$name rc=$rc seconds=$((SECONDS - t0))" >> "$TMPD/stages.txt"
}

stage_env() {
  nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,memory.used,memory.total,temperature.gpu \
    --format=csv
  $PY -c "import sys, torch, triton; print(sys.version.split()[0], torch.__version__, torch.version.cuda, triton.__version__, torch.cuda.get_device_name())"
  nvcc --version | tail -2
  # pyproject's license table warns on setuptools >= 77 and stops building after 2027-02-18; an SPDX
  # string needs >= 77 here too (the editable install runs without build isolation)
  $PY -c "import setuptools; print('setuptools', setuptools.__version__)" 2>/dev/null || echo "setuptools: none"
}

stage_build() {
  report_carry .gpu_carry
  if ls .gpu_carry/_C*.so >/dev/null 2>&1; then  # a carried build from run 1 on the same image
    cp .gpu_carry/_C*.so lua_fast/ && echo "using the carried extension $(ls .gpu_carry/_C*.so)"
  fi
  if ls .gpu_carry/tcache.tgz.part-* >/dev/null 2>&1; then
    mkdir -p "$TRITON_CACHE_DIR" && cat .gpu_carry/tcache.tgz.part-* | tar xzf - -C "$TRITON_CACHE_DIR" \
      && echo "carried Triton cache: $(ls "$TRITON_CACHE_DIR" | wc -l) entries"
  fi
  # Prewarm (CPU-bound, 16 processes) alongside the extension build (nvcc/ninja).
  (LUA_FAST_REQUIRE_NATIVE=0 $PY scripts/gpu_kernels.py prewarm --workers 12 \
     --cases $PREWARM_CASES --pdl-cases $PDL_CASES > "$TMPD/prewarm.log" 2>&1; echo "prewarm rc=$?" >> "$TMPD/prewarm.log") &
  local prewarm=$!
  local rc=0
  if ls lua_fast/_C*.so >/dev/null 2>&1 && ! $PY -c "import sys, torch, lua_fast.native as n; \
      sys.exit(1 if n.unavailable_reason(torch.device('cuda')) else 0)" 2>/dev/null; then
    echo "the carried extension does not load here: rebuilding"; rm -f lua_fast/_C*.so
  fi
  if ! ls lua_fast/_C*.so >/dev/null 2>&1; then
    LUA_FAST_REQUIRE_NATIVE=1 $PY -m pip install --no-deps --no-build-isolation -e . > "$TMPD/build.log" 2>&1 || rc=$?
    tail -5 "$TMPD/build.log"
  fi
  wait $prewarm
  cat "$TMPD/prewarm.log"
  cat "$TMPD/build.log" >> "$LOG" 2>/dev/null
  LUA_FAST_REQUIRE_NATIVE=1 $PY -m lua_fast info > "$TMPD/info.txt" 2>&1; head -12 "$TMPD/info.txt"
  cat "$TMPD/info.txt" >> "$LOG"
  $PY -c "import sys, torch, lua_fast.native as n; r = n.unavailable_reason(torch.device('cuda')); print('native cuda ops:', r or 'loaded'); sys.exit(1 if r else 0)" || rc=1
  return $rc
}

stage_tests() {  # one config per kernel variant (no tuning): correctness, not speed; the whole log kept.
  # -v: each test's outcome is a line as it finishes; SIGINT at the deadline: pytest still prints its
  # summary (failures so far, durations), where SIGTERM left only dots (the first session's tail).
  LUA_FAST_AUTOTUNE=0 LUA_FAST_REQUIRE_NATIVE=1 timeout -s INT -k 20 200 $PY -m pytest -n 12 --timeout 100 \
    --timeout-method=signal -p no:cacheprovider -rfE --durations=30 -v $GPU_TESTS > "$R/tests.log" 2>&1
  local rc=$?
  grep -E "^(FAILED|ERROR)|passed|failed|Timeout" "$R/tests.log" | tail -40
  return $rc
}

stage_kernels() {  # per-site kernel times; host time per launch of a 64x64 forward, three launch paths (log only)
  timeout 120 $PY scripts/gpu_kernels.py times --case bf16:128:2 --out "$R/kernel_times.json"
  timeout 60 $PY scripts/gpu_kernels.py times --case bf16+mlp+attn:128:2 --out "$TMPD/kernel_times_fused.json" \
    | head -9
  LUA_FAST_AUTOTUNE=0 timeout 60 $PY benchmarks/bench_host_overhead.py --precision bf16 --size 64
}

stage_table128() {
  timeout 240 $PY benchmarks/bench_e2e.py --device cuda --full --cases 128x2 --out "$R/e2e_128x2.json"
}

# The other cases' rows: the ones issue 13 asks for, plus the two that decide this session's switches
# (~4-6 s a row: all 19 rows x 3 cases would not fit the call; table128 runs all of them).
E2E_REST_VARIANTS=("released fp32" "released fp32, TF32 convs" "eager bf16" "torch bf16" "triton bf16" "triton bf16 + graphs" "triton mixed"
  "triton mixed + graphs" "triton fp32" "triton fp32 + graphs" "compiled bf16"
  "triton bf16 + graphs + 3 launches/block" "triton bf16 + graphs + PDL + 3 launches/block" "eager bf16 + graphs")
stage_e2e_rest() {
  timeout 240 $PY benchmarks/bench_e2e.py --device cuda --full --cases 64x2 128x4 128x2b4 --compile-cases 64x2 \
    --variants "${E2E_REST_VARIANTS[@]}" --trace-memory "released fp32" "released fp32, TF32 convs" \
    --out "$R/e2e_rest.json"
}

stage_timeline() {  # GPU busy time against gaps in one forward (torch.profiler): 64x64 and 128x128 x2 bf16,
  # plain / PDL / 3 launches per block, eager and graphed; after e2e_rest, whose choices it reads from disk
  timeout 120 $PY scripts/gpu_kernels.py timeline --cases bf16:64:2 bf16:128:2 --out "$R/timeline.json"
}

stage_attention() {
  timeout 150 $PY benchmarks/bench_window_attention.py --device cuda --sizes 128 --dtypes bfloat16 float32 \
    --no-compile --out "$R/window_attention.json"
}

stage_convprobe() {  # the 132 GB reading, tested on one trunk conv: IEEE cuDNN / TF32 cuDNN / IEEE without
  # cuDNN at 64x64 and 128x128, batch 1 and 4: time, peak allocated and reserved (~10-20 s expected)
  timeout 90 $PY benchmarks/probe_conv_workspace.py --device cuda --out "$R/conv_workspace.json"
}

stage_ncu() {  # Nsight Compute counters of one x2 128x128 bf16 forward's first kernels: conv_first and two
  # Swin blocks (qkv, attention unshifted/shifted, proj, fc1, fc2): why each runs 2-9x its static bound
  local ncu
  ncu=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
  [ -n "$ncu" ] || { echo "ncu not found"; return 1; }
  timeout 150 "$ncu" --profile-from-start off --clock-control none --launch-count 12 \
    --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats \
    --section MemoryWorkloadAnalysis --csv --page details --log-file "$R/ncu_bf16_128x2.csv" \
    $PY scripts/gpu_kernels.py profile --case bf16:128:2
  local rc=$?
  $PY scripts/gpu_kernels.py ncu-summary "$R/ncu_bf16_128x2.csv" | tee -a "$LOG"
  return $rc
}

stage_headline() {  # the paper's comparison (needs diffusers: carried wheels); the diffusers tests on the GPU
  timeout 200 $PY benchmarks/bench_headline.py --device cuda --out "$R/headline.json"
  timeout 120 $PY -m pytest -q -p no:cacheprovider -rfE tests/test_diffusers_integration.py 2>&1 | tail -15
}

stage_carry() {  # the built extension and Triton's cache, for a rerun on a fresh machine
  cp lua_fast/_C*.so "$R/" 2>/dev/null
  pack_triton_cache "$TRITON_CACHE_DIR" "$R/tcache.tgz.part-"
  ls -la "$R" | tail -n +2
}

for stage in $STAGES; do  # every name checked before any work
  if ! declare -F "stage_$stage" >/dev/null; then echo "unknown stage $stage"; exit 2; fi
done
if [ "${LIST_STAGES:-0}" = 1 ]; then echo "stages: $STAGES"; exit 0; fi  # (what would run; tests use it)
install_wheels
for stage in $STAGES; do
  run_stage "$stage" "stage_$stage"
done
cat "$TMPD/stages.txt" | tee -a "$LOG"
# Issue 13's acceptance items and the open predictions, from this run's files (both runs' folders
# together, on the development machine: python scripts/gpu_report.py RUN1_FILES RUN2_FILES)
$PY scripts/gpu_report.py "$R" 2>&1 | tee -a "$LOG"
