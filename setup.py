"""Build script: the pure-Python package plus the optional native extension ``lua_fast._C``.

The extension (csrc/) is built with torch.utils.cpp_extension and ninja:
- a CUDA extension when torch has CUDA and nvcc is found (CUDA_HOME),
- a CPU-only extension otherwise, or when the CUDA build fails (e.g. nvcc's CUDA major release
  differs from torch's).

Environment:
- LUA_FAST_NO_NATIVE_BUILD=1   skip the extension (the package runs on its PyTorch fallbacks)
- LUA_FAST_NO_CUDA_BUILD=1     build the CPU-only extension even when CUDA is available
- TORCH_CUDA_ARCH_LIST         (PyTorch's) the GPU archs to build for; default: those of the visible GPUs,
                               or, with none visible, every arch the installed torch supports
- LUA_FAST_REQUIRE_NATIVE=1    make a failed or impossible extension build (torch not importable
                               at build time) fail the install; by default it only warns
Each LUA_FAST_ switch reads 1/true/yes/on or 0/false/no/off (unset or empty: off); any other value stops the build.

A failed or skipped build leaves the package importable: lua_fast.info() says why
the extension is missing.
"""

import os
import re
import sys
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).resolve().parent


# The vocabulary of lua_fast/env.py's runtime switches (setup.py cannot import the package before
# it is built). Before 2026-11-29 any other value read as off: LUA_FAST_NO_CUDA_BUILD=y built CUDA.
ON = ("1", "true", "yes", "on")
OFF = ("0", "false", "no", "off")


def _flag(name: str) -> bool:
    value = os.environ.get(name, "").strip().lower()
    if not value or value in OFF:
        return False
    if value in ON:
        return True
    raise SystemExit(f"lua_fast: {name}={os.environ[name]!r} is not a switch value: use one of {ON} or {OFF}")


def default_cuda_arch_list(torch) -> str | None:
    """The archs the installed torch ships kernels for ("7.5;8.0;...;12.0+PTX"), for a CUDA build on
    a machine that sees no GPU: a `docker build`, a CI builder, a cluster's login node. There,
    torch's own arch detection finds no device and fails (torch 2.11-2.14: an IndexError in
    _get_cuda_arch_flags), so until 2026-11-29 such builds fell back to the CPU-only extension with a
    warning pip hides. None when torch cannot say."""
    try:
        flags = torch._C._cuda_getArchFlags() or ""
    except (AttributeError, RuntimeError):
        return None
    archs = sorted({(int(m[0]), int(m[1])) for m in re.findall(r"\bsm_(\d+?)(\d)\b", flags)})
    if not archs:
        return None
    return ";".join(f"{major}.{minor}" for major, minor in archs) + "+PTX"  # PTX: newer GPUs JIT it


def native_extension():
    # Every switch read up front: a bad value fails at once, not only on the path that reads it.
    skip, cpu_only, required = (_flag(name) for name in ("LUA_FAST_NO_NATIVE_BUILD", "LUA_FAST_NO_CUDA_BUILD",
                                                         "LUA_FAST_REQUIRE_NATIVE"))
    if skip:
        print("lua_fast: LUA_FAST_NO_NATIVE_BUILD set, skipping the native extension", file=sys.stderr)
        return [], {}
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
    except ImportError as exc:
        text = (f"lua_fast: torch not importable at build time ({exc}); "
                "install torch first and build without isolation (--no-build-isolation)")
        if required:  # before 2026-11-29 this skipped the extension even with LUA_FAST_REQUIRE_NATIVE=1
            raise SystemExit(f"{text}. LUA_FAST_REQUIRE_NATIVE is set: not installing without the extension.")
        print(f"{text}. Skipping the native extension.", file=sys.stderr)
        return [], {}

    cpp = ["csrc/lua_fast_ops.cpp"]
    # Headers as dependencies: setuptools skips an extension whose sources are older than the built
    # library, so an edit to a header alone left a stale lua_fast._C after reinstalling.
    headers = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc").glob("*.h"))
    # No -std: cpp_extension picks the standard the installed torch needs (C++20 from 2.14). MSVC
    # (Windows) does not know "-O3" (warning D9002 at every file); its own flag is /O2.
    cxx = ["/O2"] if sys.platform == "win32" else ["-O3"]
    with_cuda = torch.version.cuda is not None and CUDA_HOME is not None and not cpu_only

    if with_cuda and not os.environ.get("TORCH_CUDA_ARCH_LIST") and torch.cuda.device_count() == 0:
        archs = default_cuda_arch_list(torch)
        if archs:
            os.environ["TORCH_CUDA_ARCH_LIST"] = archs
            print(f"lua_fast: no GPU visible at build time; building the CUDA kernels for the archs this torch "
                  f"supports ({archs}). Set TORCH_CUDA_ARCH_LIST to choose (e.g. 9.0 for H100/H200 only).",
                  file=sys.stderr)

    def cpu_extension():
        return CppExtension("lua_fast._C", cpp, include_dirs=[str(ROOT / "csrc")], depends=headers,
                            extra_compile_args={"cxx": cxx})

    if with_cuda:
        ext = CUDAExtension(
            "lua_fast._C",
            cpp + ["csrc/window_ops_cuda.cu"],
            include_dirs=[str(ROOT / "csrc")],
            define_macros=[("WITH_CUDA", None)],
            depends=headers,
            extra_compile_args={"cxx": cxx, "nvcc": ["-O3"]},
        )
    else:
        ext = cpu_extension()
    print(f"lua_fast: building the native extension ({'CUDA' if with_cuda else 'CPU-only'})", file=sys.stderr)

    def warn(what: str, exc: Exception) -> None:
        text = str(exc)
        if len(exc.args) > 1 and isinstance(exc.args[0], str):  # torch's logging-style ("%s", values)
            try:
                text = exc.args[0] % exc.args[1:]
            except (TypeError, ValueError):
                pass
        print(f"lua_fast: WARNING: {what} ({type(exc).__name__}: {text})", file=sys.stderr)

    class OptionalBuildExtension(BuildExtension.with_options(use_ninja=True)):
        """A broken native build warns instead of failing the install (unless required). A broken
        CUDA build falls back to the CPU-only extension first.

        Failures are caught around ``build_extensions``, not only ``build_extension``: torch checks
        the toolchain there, before building anything. An nvcc whose major version differs from
        torch's CUDA (a cu128 wheel beside a CUDA 13 toolkit) or a host compiler outside nvcc's
        bounds raised from it, and failed the whole install until 2026-11-28."""

        def build_extensions(self):
            try:
                super().build_extensions()
                return
            except Exception as exc:  # nvcc/torch CUDA mismatch, compiler missing, header mismatch, ...
                if required:
                    raise
                failure = exc
            if with_cuda:
                warn("the CUDA extension build failed; building the CPU-only one "
                     "(set LUA_FAST_REQUIRE_NATIVE=1 to see the failure as an error)", failure)
                # In place: setuptools has finalized this object (stub and path attributes).
                cpu = cpu_extension()
                for attr in ("sources", "include_dirs", "library_dirs", "runtime_library_dirs", "libraries",
                             "define_macros", "extra_compile_args", "extra_link_args", "language"):
                    setattr(self.extensions[0], attr, getattr(cpu, attr))
                try:
                    super().build_extensions()
                    return
                except Exception as exc:
                    failure = exc
            warn("native extension build failed; installing without it (PyTorch fallbacks will be used)",
                 failure)

    return [ext], {"build_ext": OptionalBuildExtension}


ext_modules, cmdclass = native_extension()
# The license is given here, not in pyproject.toml: setuptools >= 77 deprecates the table form
# `license = {text = ...}` (builds fail after 2027-02-18, it says), and the SPDX string that replaces
# it is an error before setuptools 77. This keyword works from 64 to 84 without a warning (checked
# with 64.0, 68.2, 76.1, 77.0 and 84.2).
setup(ext_modules=ext_modules, cmdclass=cmdclass, license="Apache-2.0")
