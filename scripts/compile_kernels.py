"""Compile every Triton kernel variant for GPU targets, without a GPU.

    python scripts/compile_kernels.py [--quick] [--arch 80 90]

Triton's interpreter (how CI runs the kernels) checks logic, not compilation: this
compiles the real kernels to cubins for sm_80/sm_90 with Triton's bundled ptxas and
reports shared memory per variant, so a kernel that would not compile (or would not
fit an H100's 227 KiB of shared memory) is caught on a CPU-only machine. Exit status 1
if any variant fails to compile. Must run without TRITON_INTERPRET.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

if os.environ.get("TRITON_INTERPRET") == "1":
    sys.exit("compile_kernels.py must run without TRITON_INTERPRET=1")

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from lua_fast.kernels import conv3x3 as CV  # noqa: E402
from lua_fast.kernels import window_attention as WA  # noqa: E402

SMEM_LIMIT = {80: 163 * 1024, 90: 227 * 1024}  # max dynamic shared memory per block (A100, H100)
DTYPES = {"bf16": None, "fp16": None, "fp32": "ieee"}


def signature(fn, dtype: str, pointers: dict[str, str], floats: tuple[str, ...]) -> dict[str, str]:
    sig = {}
    for name in fn.arg_names:
        if name in pointers:
            sig[name] = pointers[name].replace("DT", dtype)
        elif name in floats:
            sig[name] = "fp32"
        elif name.isupper() or name == "sx_c":
            sig[name] = "constexpr"
        else:
            sig[name] = "i32"
    return sig


def variants(quick: bool):
    dtypes = ["bf16", "fp32"] if quick else list(DTYPES)
    blocks = [(64, 64)] if quick else [(64, 64), (64, 128), (128, 64), (128, 128)]
    for dt in dtypes:
        for shift in ((8,) if quick else (0, 8)):
            for bm, bn in blocks:
                consts = dict(WINDOW=16, SHIFT=shift, HEAD_DIM=30, HEAD_DIM_PAD=32, BLOCK_M=bm, BLOCK_N=bn,
                              DENSE_BIAS=False, INPUT_PRECISION=DTYPES[dt], USE_MASK=shift > 0, DOT_UPCAST=False)
                sig = signature(WA._window_attention_kernel, dt, {"qkv_ptr": "*DT", "out_ptr": "*DT",
                                                                   "bias_ptr": "*fp32"}, ("scale",))
                yield f"window_attention {dt} shift={shift} {bm}x{bn}", WA._window_attention_kernel, sig, consts
        conv_blocks = [(64, 64, 64)] if quick else [(128, 128, 32), (128, 64, 32), (64, 128, 64), (64, 64, 64)]
        epilogues = [("leaky", dict(HAS_LEAKY=True)), ("residual", dict(HAS_RESIDUAL=True)),
                     ("shuffle", dict(PIXEL_SHUFFLE=True))]
        for bm, bn, bk in conv_blocks:
            for label, flags in epilogues:
                # sx_c=1: the JIT specialises unit strides, and contiguity is what lets loads pipeline.
                consts = dict(sx_c=1, C_IN=360, HAS_BIAS=True, HAS_LEAKY=False, HAS_RESIDUAL=False, PIXEL_SHUFFLE=False, BLOCK_M=bm,
                              BLOCK_N=bn, BLOCK_K=bk, INPUT_PRECISION=DTYPES[dt], DOT_UPCAST=False)
                consts.update(flags)
                sig = signature(CV._conv3x3_kernel, dt, {"x_ptr": "*DT", "w_ptr": "*DT", "r_ptr": "*DT",
                                                         "out_ptr": "*DT", "b_ptr": "*fp32"}, ("slope",))
                yield f"conv3x3 {dt} {label} {bm}x{bn}x{bk}", CV._conv3x3_kernel, sig, consts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one variant per kernel and dtype class")
    parser.add_argument("--arch", type=int, nargs="+", default=[90])
    args = parser.parse_args()
    failures = 0
    print(f"triton {triton.__version__}")
    for arch in args.arch:
        for name, fn, sig, consts in variants(args.quick):
            start = time.time()
            try:
                kernel = triton.compile(ASTSource(fn=fn, signature=sig, constexprs=consts),
                                        target=GPUTarget("cuda", arch, 32))
            except Exception as exc:  # report every failing variant, then exit non-zero
                failures += 1
                print(f"sm_{arch} {name:42s} FAILED: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}")
                continue
            smem = kernel.metadata.shared
            fits = "" if smem <= SMEM_LIMIT[arch] else f"  (exceeds sm_{arch}'s {SMEM_LIMIT[arch] // 1024} KiB: " \
                                                       "the autotuner skips it)"
            print(f"sm_{arch} {name:42s} ok  {time.time() - start:5.1f}s  smem {smem // 1024:4d} KiB{fits}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
