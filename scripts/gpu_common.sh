# Shared by scripts/gpu_check.sh (on the GPU machine) and scripts/build_gpu_carry.sh (on a CPU
# machine, ahead of a GPU session): what the prewarm compiles, which test files run on the GPU, and
# how Triton's cache is packed for the device tool's carry list. Sourced, never run.

# Every forward the tables time (all autotune configs) and the tests run ("/1": the first config
# only, as LUA_FAST_AUTOTUNE=0 runs them): compiled once, in parallel, before anything tunes.
PREWARM_CASES="bf16:128:2 bf16:128:4 bf16:64:2 bf16:128:2:4 mixed:128:2 mixed:128:4 mixed:64:2 mixed:128:2:4
  fp32:128:2 fp32:128:4 fp32:64:2 fp32:128:2:4 fp32x3:128:2 fp32x3:128:4 fp32x3:64:2 fp32x3:128:2:4
  fp32x3:64:2/1 fp32x3:64:4/1 fp32x3:40x72:2/1 fp32x3:40x72:4/1"
for mode in bf16 mixed fp32 fp16 tf32; do
  for size in 64 128 40x72; do PREWARM_CASES+=" $mode:$size:2/1 $mode:$size:4/1"; done
done
PREWARM_CASES+=" bf16:32x48:2/1 bf16:40x48:2/1 bf16:48x48:2/1 bf16:56x48:2/1 bf16:256:4/1"  # threads, tiling tests
PREWARM_CASES+=" bf16+cublas:128:2"  # table128's "triton bf16 + graphs, cuBLAS GEMMs" row (LUA_FAST_TRITON_GEMMS=0)
# The tables' fused-block rows and their GPU test (LUA_FAST_FUSED_MLP=1, LUA_FAST_FUSED_ATTN_PROJ=1: the
# _mlp_kernel's and _attention_proj_kernel's binaries; the other kernels' jobs are the plain cases')
PREWARM_CASES+=" bf16+mlp+attn:128:2 bf16+mlp+attn:128:4 bf16+mlp+attn:64:2 bf16+mlp+attn:128:2:4"
for mode in bf16 mixed; do
  for size in 64 40x72; do PREWARM_CASES+=" $mode+mlp+attn:$size:2/1 $mode+mlp+attn:$size:4/1"; done
done
# Also compiled as launched with LUA_FAST_PDL=1 (a separate binary each): the tables' "+ PDL" rows and
# the PDL test (64x64, first config only).
PDL_CASES="bf16:128:2 bf16:128:4 bf16:64:2 bf16:64:2/1 bf16:64:4/1 bf16+mlp+attn:128:2 bf16+mlp+attn:128:4
  bf16+mlp+attn:64:2"
GPU_TESTS="tests/test_official_parity.py tests/test_gpu_backends.py tests/test_window_ops.py
  tests/test_window_attention.py tests/test_upsample_heads.py tests/test_fused_glue.py tests/test_native_build.py
  tests/test_backends.py tests/test_tiling.py tests/test_autotune_configs.py tests/test_fused_mlp.py
  tests/test_attention_proj.py"

# pack_triton_cache CACHE_DIR DEST_PREFIX [tar options...]: cubins and metadata only, in 15 MB parts
# (DEST_PREFIXaa, ab, ...), small enough for the device tool's output and carry limits.
pack_triton_cache() {
  local cache=$1 dest=$2; shift 2
  rm -f "$dest"*
  tar czf - -C "$cache" --exclude='*.llir' --exclude='*.ttir' --exclude='*.ttgir' --exclude='*.ptx' \
    --exclude='*.source' "$@" . | split -b 15m - "$dest"
}

# kernel_source_hash: one hash of what a Triton binary's cache key and the extension depend on here
# (the kernel modules and csrc/). A carry built from other sources may be stale, in part or not at all.
kernel_source_hash() {
  cat lua_fast/kernels/*.py csrc/* | sha256sum | cut -c1-16
}

# report_carry DIR: what the GPU check was handed in DIR (.gpu_carry): the manifest that
# build_gpu_carry.sh wrote, and whether its binaries were built from these kernel sources.
report_carry() {
  local dir=$1 built now
  if [ -f "$dir/MANIFEST.txt" ]; then
    built=$(sed -n 's/^kernel sources: //p' "$dir/MANIFEST.txt"); now=$(kernel_source_hash)
    sed -n '1,2p;5p' "$dir/MANIFEST.txt"
    if [ "$built" = "$now" ]; then echo "the carry matches these kernel sources ($now)"
    else echo "the carry may be STALE: built from kernel sources $built, these are $now (a changed kernel" \
      "compiles here; an edit outside @triton.jit code, below them, changes no binary)"; fi
  elif ! ls "$dir"/tcache.tgz.part-* >/dev/null 2>&1; then
    echo "no carry ($dir/): the extension and every Triton binary compile here;" \
      "build it on the CPU first (bash scripts/build_gpu_carry.sh) and name it in the run's carry list"
  fi
}
