#!/usr/bin/env bash
# Build, on a CPU machine with nvcc, what a GPU session carries to the device for issue 13, so the
# device's 15 minutes are not spent compiling. Run it before the first device call, then name both
# folders in the run call's carry list: carry=[".gpu_carry", ".whl"].
#   .gpu_carry/_C.cpython-312-x86_64-linux-gnu.so  the CUDA extension, against torch 2.11.0's headers, sm_90
#   .gpu_carry/tcache.tgz.part-*   Triton 3.6.0's cache for sm_90: every prewarm binary (the forwards the
#                                  tables time) and every binary the GPU test files launch
#   .gpu_carry/MANIFEST.txt        commit, versions, counts, and a hash of the kernel sources
#   .whl/                          diffusers and importlib_metadata wheels (the "extra" stage)
# Why a script: git ignores these folders and a new session's checkout holds only what git tracks.
# On 2026-11-27 (eighth session) the carry built by earlier sessions was gone; without it the GPU
# check builds the extension and compiles ~770 Triton binaries on the device (run 1 of 2026-11-26:
# 113 s for the build and prewarm alone, then a tests stage that did not finish).
#
#   bash scripts/build_gpu_carry.sh            # everything (measured below)
#   bash scripts/build_gpu_carry.sh prewarm pack  # some steps, in order (the venv must exist)
#   DRY_RUN=1 bash scripts/build_gpu_carry.sh  # print the steps and what they would build
#
# The venv lives at the GPU image's path (/opt/torch/.venv), because the path of Triton's libdevice
# enters each binary's cache key: a venv elsewhere builds binaries the device never looks up. With
# the same path, Triton and Python minor version, the keys match the GPU machine's (12 of 12
# checked against a cache built there, second session of 2026-11-27). Any edit to a kernel file (a
# line added above a @triton.jit function included) makes the binaries stale: build again.
# Measured on the 2-core development machine (eighth session of 2026-11-27): 8 min 31 s from a clean
# clone with no venv (venv 73 s, extension 24 s, prewarm 211 s, tests 195 s, pack and wheels 8 s);
# the script prints each step's time and writes them into MANIFEST.txt. Details: benchmarks/NOTES.md.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/gpu_common.sh  # PREWARM_CASES, PDL_CASES, GPU_TESTS, pack_triton_cache, kernel_source_hash

TORCH_VERSION=2.11.0   # the GPU image's (torch 2.11.0+cu130, Triton 3.6.0, Python 3.12): keep in step with
TRITON_VERSION=3.6.0   # what gpu_check.sh's env stage prints there
WHEELS="diffusers==0.42.1 importlib_metadata==8.7.0"
VENV=${GPU_VENV:-/opt/torch/.venv}
JOBS=${JOBS:-$(nproc)}
STEPS=${*:-venv extension prewarm tests pack wheels}
WORK=${WORK:-$(mktemp -d /tmp/gpu_carry.XXXXXX)}
CACHE=$WORK/triton_cache
VPY=$VENV/bin/python

for step in $STEPS; do  # every name checked before any work
  case $step in venv|extension|prewarm|tests|pack|wheels) ;; *) echo "unknown step $step"; exit 2 ;; esac
done
if [ "${DRY_RUN:-0}" = 1 ]; then
  echo "steps: $STEPS"
  echo "venv: $VENV (Python 3.12, torch $TORCH_VERSION, triton $TRITON_VERSION)"
  echo "prewarm cases: $(echo $PREWARM_CASES | wc -w), PDL cases: $(echo $PDL_CASES | wc -w)"
  echo "GPU test files: $(echo $GPU_TESTS | wc -w)"
  echo "kernel sources: $(kernel_source_hash)"
  exit 0
fi

step_venv() {  # Python 3.12 with the GPU image's torch and Triton (torch's CUDA wheels: ~3 GB, ~2 min here)
  if [ ! -x "$VPY" ]; then
    local base="" c
    for c in ${PYTHON312:-} $(ls -d /root/.pyenv/versions/3.12*/bin/python3.12 2>/dev/null) python3.12; do
      # (a pyenv shim is on PATH but may refuse to run: try each candidate)
      if "$c" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' 2>/dev/null; then base=$c; break; fi
    done
    [ -n "$base" ] || { echo "no working python3.12 found: set PYTHON312"; return 1; }
    "$base" -m venv "$VENV"
  fi
  "$VPY" -m pip install -q "torch==$TORCH_VERSION" "triton==$TRITON_VERSION" numpy safetensors tqdm \
    pytest pytest-xdist pytest-timeout setuptools wheel ninja
  "$VPY" -c "import sys, torch, triton; print('venv:', sys.version.split()[0], torch.__version__, 'CUDA', torch.version.cuda, 'triton', triton.__version__)"
}

step_extension() {  # built in a copy of the working tree, so the development venv's own build stays
  local src=$WORK/src
  mkdir -p "$src" .gpu_carry
  git ls-files -co --exclude-standard -z | tar --null -T - -cf - | tar -xf - -C "$src"
  local cuda=${CUDA_HOME:-}
  if [ -z "$cuda" ]; then  # a toolkit with its headers (/usr/local/bin/nvcc may be a wrapper whose
    # parent folder has none: torch would then take CUDA_HOME=/usr/local and miss cuda_runtime.h)
    # (a loop, not `... | head -1`: under pipefail, head closing the pipe early ended the script
    # with SIGPIPE, rc 141, where two toolkits had headers)
    local d
    for d in /usr/local/cuda /usr/local/cuda-*; do
      if [ -f "$d/include/cuda_runtime.h" ] && [ -x "$d/bin/nvcc" ]; then cuda=$d; break; fi
    done
  fi
  [ -n "$cuda" ] || { echo "no CUDA toolkit with headers found: set CUDA_HOME"; return 1; }
  echo "CUDA_HOME=$cuda ($("$cuda/bin/nvcc" --version | tail -1))"
  (cd "$src" && CUDA_HOME=$cuda TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=$JOBS LUA_FAST_REQUIRE_NATIVE=1 "$VPY" setup.py -q build_ext --inplace)
  # It must load beside that torch (no GPU is needed to load it, only to run its CUDA ops).
  (cd "$src" && "$VPY" -c "import sys, lua_fast.native as n; s = n.status(); print('extension:', s.reason or 'loads,',
    'CUDA kernels registered' if s.cuda else 'NO CUDA kernels'); sys.exit(0 if s.loaded and s.cuda else 1)")
  rm -f .gpu_carry/_C*.so
  cp "$src"/lua_fast/_C*.so .gpu_carry/
}

step_prewarm() {  # the forwards the tables time, behind the stand-in sm_90 driver (compiles, never launches)
  mkdir -p "$CACHE"
  TRITON_CACHE_DIR=$CACHE PYTHONPATH=$PWD LUA_FAST_REQUIRE_NATIVE=0 "$VPY" scripts/gpu_kernels.py prewarm \
    --stub-driver --workers "$JOBS" --cases $PREWARM_CASES --pdl-cases $PDL_CASES --out "$WORK/prewarm.json" | tail -3
  "$VPY" -c "import json, sys; s = json.load(open('$WORK/prewarm.json')); print('prewarm:', s['jobs'], 'jobs,', s['n_errors'], 'errors'); sys.exit(1 if s['n_errors'] else 0)"
}

step_tests() {  # the GPU test files' own launches (scripts/compile_only.py); their outcomes mean nothing here
  mkdir -p "$CACHE"
  TRITON_INTERPRET=0 TRITON_CACHE_DIR=$CACHE LUA_FAST_TEST_GPU_SHAPES=1 PYTHONPATH=scripts:benchmarks:$PWD \
    "$VPY" -O -m pytest -p compile_only --assert=plain -q -p no:cacheprovider -n "$JOBS" $GPU_TESTS \
    > "$WORK/compile_only.log" 2>&1 || true
  local summary
  summary=$(grep -A20 "^compile_only:" "$WORK/compile_only.log" || true)
  echo "${summary:-compile_only printed no summary: see $WORK/compile_only.log}"
  [[ $summary == *", 0 errors;"* ]]
}

step_pack() {  # the stand-in's autotune choices were never timed: left out
  mkdir -p .gpu_carry
  pack_triton_cache "$CACHE" .gpu_carry/tcache.tgz.part- --exclude='*.autotune.json'
  local cubins
  cubins=$(find "$CACHE" -name '*.cubin' | wc -l)
  {
    echo "built: $(date -u +%FT%TZ) by scripts/build_gpu_carry.sh"
    echo "commit: $(git rev-parse HEAD)$(git diff --quiet HEAD -- lua_fast csrc || echo ' (with uncommitted changes)')"
    echo "kernel sources: $(kernel_source_hash)"
    echo "versions: $("$VPY" -c "import sys, torch, triton; print(sys.version.split()[0], torch.__version__, triton.__version__)")"
    echo "triton binaries: $cubins"
    echo "extension: $(ls .gpu_carry/_C*.so 2>/dev/null | xargs -r -n1 basename)"
  } > .gpu_carry/MANIFEST.txt
  cat .gpu_carry/MANIFEST.txt
}

step_wheels() {  # packages the GPU image lacks, installed there by gpu_check.sh's install_wheels
  mkdir -p .whl
  "$VPY" -m pip download -q --no-deps -d .whl $WHEELS
  ls .whl
}

times=""
for step in $STEPS; do
  t0=$SECONDS
  echo "== $step ($(date -u +%H:%M:%S))"
  "step_$step"
  times+="$step $((SECONDS - t0)) s; "
  echo "== $step: $((SECONDS - t0)) s"
done
echo "step times: $times"
[ -f .gpu_carry/MANIFEST.txt ] && [[ " $STEPS " == *" pack "* ]] && echo "step times: $times" >> .gpu_carry/MANIFEST.txt
du -sh .gpu_carry .whl 2>/dev/null || true
echo "carry limit: 64 MiB in all (the device tool's); work files in $WORK"
