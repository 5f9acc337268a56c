"""Precision modes: which dtypes a forward pass stores and computes in.

| mode  | weights & residual stream | GEMMs, attention, convs | norms |
|-------|---------------------------|-------------------------|-------|
| fp32  | float32                   | float32, IEEE (*)       | fp32  |
| tf32  | float32                   | TF32 tensor cores       | fp32  |
| bf16  | bfloat16                  | bfloat16                | bf16 in, fp32 inside |
| fp16  | float16                   | float16                 | fp16 in, fp32 inside |
| mixed | float32                   | bfloat16 (or float16)   | fp32  |

(*) ``LUA_FAST_FP32_DOTS=tf32x3``: the Triton kernels' fp32 dots as three TF32 tensor-core
products (about fp32's accuracy; see ``kernels.triton_support.dot_precision``).

"mixed" is the production default on GPUs: the residual stream and norms stay fp32,
the FLOPs run on bf16 tensor cores. SwinIR-style residual streams can exceed fp16's
range (65504). Every mode is guarded (``Upscaler.upscale(check_finite=True)``): an upscale
whose output holds Inf/NaN from finite latents raises ``NonFiniteOutputError`` (a
:class:`FloatingPointError`) instead of returning garbage; fp16 is where it happens in practice.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass

import torch

from .errors import InputError, SlowPrecisionWarning, warn_the_caller
from . import untraced

PRECISIONS = ("fp32", "tf32", "bf16", "fp16", "mixed")


@dataclass(frozen=True)
class Precision:
    mode: str
    storage: torch.dtype  # weights, residual stream, output
    compute: torch.dtype  # GEMM / attention / conv operands

    @property
    def guards_overflow(self) -> bool:
        return self.compute == torch.float16

    @property
    def activation_itemsize(self) -> int:
        """Bytes per activation element in memory estimates (``tiling.estimate_peak_bytes``): the
        wider of the storage and compute dtypes. "mixed" keeps its residual stream in fp32 and
        autocast's softmax returns fp32: estimated at bf16's 2 bytes (before 2026-11-29), a CPU
        forward's peak measured 1.10x (torch backend) and 1.41x (reference) the estimate."""
        return max(self.storage.itemsize, self.compute.itemsize)

    def __str__(self) -> str:
        return self.mode if self.mode != "mixed" else f"mixed({str(self.compute).removeprefix('torch.')})"


_STORAGE = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16,
            "mixed": torch.float32}
_BY_DTYPE = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16", torch.float64: "fp64"}


# A dtype's name for the mode that computes in it, as ``dtype=`` takes names: precision="bfloat16" or
# "BF16" read as "bf16" (before 2026-11-29 they were refused while dtype="bfloat16" / "BF16" worked).
_ALIASES = {"float32": "fp32", "float": "fp32", "bfloat16": "bf16", "float16": "fp16", "half": "fp16"}


def _canonical(precision) -> str:
    name = str(precision).strip().lower().removeprefix("torch.")
    return _ALIASES.get(name, name) if name else precision


def resolve(precision: str | None, dtype: torch.dtype | None, mixed_dtype: torch.dtype = torch.bfloat16) -> Precision:
    """The precision for ``load(dtype=..., precision=...)``: either may be given; they must agree."""
    if precision is None:
        dtype = dtype or torch.float32
        if dtype == torch.float64:
            return Precision("fp64", torch.float64, torch.float64)
        return Precision(_BY_DTYPE[dtype], dtype, dtype)
    precision = _canonical(precision)
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}; choose one of {PRECISIONS}")
    storage = _STORAGE[precision]
    if dtype is not None and dtype != storage:
        raise InputError(
            f"precision {precision!r} keeps weights and the residual stream in {storage}, "
            f"but dtype={dtype} was requested; pass only one of them or make them agree"
        )
    if mixed_dtype not in (torch.bfloat16, torch.float16):
        raise InputError(f"mixed precision computes in bfloat16 or float16, not {mixed_dtype}")
    compute = mixed_dtype if precision == "mixed" else storage
    return Precision(precision, storage, compute)


def default_mixed_dtype(device: torch.device) -> torch.dtype:
    """"mixed"'s compute dtype when none is given: bfloat16, but float16 on GPUs before Ampere
    (GTX 10xx, RTX 20xx, T4, V100), which have float16 tensor cores and no bfloat16 ones (PyTorch
    emulates bf16 there, slowly). A float16 overflow raises NonFiniteOutputError, never NaN out."""
    if device.type == "cuda" and torch.cuda.get_device_capability(device)[0] < 8:
        return torch.float16
    return torch.bfloat16


def cpu_native_kernels(dtype: torch.dtype) -> bool | None:
    """Whether this CPU has oneDNN's convolution and GEMM kernels for ``dtype`` (bfloat16: AVX512 or
    AMX; float16: AVX512-FP16 or AMX-FP16), or None where PyTorch cannot tell. Without them
    PyTorch's CPU convs, GEMMs and batched matmuls fall back to reference loops: measured on the
    development CPU (released config, 32x32 latent, torch backend), fp16 43.6 s against fp32 1.08 s
    (AVX512 without FP16), and bf16 47.0 s against 1.10 s with oneDNN and PyTorch held to AVX2
    (``ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2``, as on most desktop CPUs)."""
    probe = {torch.bfloat16: "_is_mkldnn_bf16_supported", torch.float16: "_is_mkldnn_fp16_supported"}.get(dtype)
    if probe is None:
        return True
    try:
        return bool(getattr(torch.ops.mkldnn, probe)())
    except (AttributeError, RuntimeError):  # a build without oneDNN, or without the probe
        return None


def warn_if_slow_on_the_cpu(precision: Precision, device: torch.device) -> None:
    """A bf16/fp16 computing mode on a CPU without native kernels for it: warned (``SlowPrecisionWarning``)
    when the upscaler is made, not after a forward 40x slower than fp32."""
    if device.type != "cpu" or precision.compute not in (torch.bfloat16, torch.float16):
        return
    if cpu_native_kernels(precision.compute) is False:
        name = str(precision.compute).removeprefix("torch.")
        warn_the_caller(
            f"lua_fast: precision {precision} computes in {name}, and this CPU "
            f"({torch.backends.cpu.get_cpu_capability()}) has no native {name} kernels: PyTorch runs its fallback "
            f"loops, about 40x slower than fp32 (lua_fast.precision.cpu_native_kernels). precision='fp32' is the "
            "fast choice here.", SlowPrecisionWarning)


_tf32_lock = threading.RLock()
# PyTorch >= 2.9 has per-backend ``fp32_precision`` switches ("ieee" / "tf32" / "none" = inherit).
# Reading the legacy ``cudnn.allow_tf32`` raises once a caller has set conv and RNN differently
# through them, so where they exist they are the only ones read or written here.
_FP32_PRECISION_API = hasattr(torch.backends.cuda.matmul, "fp32_precision")


def tf32_switches() -> tuple:
    """The current TF32 switches for PyTorch's fp32 GEMMs and cuDNN convs (to restore later)."""
    if _FP32_PRECISION_API:
        return torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision
    return torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32


def set_tf32_switches(state) -> None:
    """Set both switches: ``True``/``False`` (TF32 on / exact IEEE fp32) or a ``tf32_switches()`` value."""
    if isinstance(state, bool):
        state = (("tf32" if state else "ieee"),) * 2 if _FP32_PRECISION_API else (state, state)
    if _FP32_PRECISION_API:
        torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision = state
    else:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = state


# The mode whose switches an eager backend_flags holds now (process-global, like the switches):
# a compiled graph traced inside such a block needs no switching of its own.
_switched: list = [None]
_dynamo_compiling = getattr(torch.compiler, "is_dynamo_compiling", torch.compiler.is_compiling)


def _needs_switches(precision: Precision, device: torch.device) -> bool:
    return device.type == "cuda" and precision.storage == torch.float32 and precision.mode != "mixed"


@untraced.register(reason=(
    "lua_fast: PyTorch's TF32 switches (which an fp32/tf32 model on CUDA sets for its cuBLAS GEMMs and "
    "cuDNN convs) cannot be set inside a compiled graph. For one graph, call the compiled model inside "
    "`with lua_fast.precision.backend_flags(up.precision, up.device):`"))
def switch_tf32_outside_the_graph() -> None:
    """A graph break where the switches are not held yet (a non-fullgraph compile then runs the
    switching frame eagerly, as PyTorch does for any graph break in a context manager)."""


@contextlib.contextmanager
def backend_flags(precision: Precision, device: torch.device):
    """On CUDA, for PyTorch-executed GEMMs/convs: TF32 on in "tf32", off in "fp32" (exact; cuDNN
    allows TF32 by default), restored after.

    These switches are process-global in PyTorch; the lock keeps concurrent lua_fast calls from
    interleaving (it serialises fp32/tf32 forwards on CUDA), but other code running at the same
    time sees them too.

    torch.compile cannot set them inside a graph: a compiled call of an fp32/tf32 CUDA model runs
    as one graph when the caller holds this context around it (the graph's cuBLAS / cuDNN calls read
    the switches when they run), else the switching frame breaks the graph and runs eagerly
    (``fullgraph=True`` then raises, saying so). Without either, the convs would silently run in
    cuDNN's default TF32.
    """
    if not _needs_switches(precision, device):
        yield
        return
    if _dynamo_compiling():  # (non-strict torch.export runs this Python for real: it switches as eager)
        if _switched[0] != precision.mode:
            untraced.switch_tf32_outside_the_graph()
        yield
        return
    held = untraced.hold_tf32_switches(precision.mode)
    try:
        yield
    finally:
        untraced.release_tf32_switches(held)


@untraced.register()  # (eager: where a graph break left the switching frame, Dynamo need not look in)
def hold_tf32_switches(mode: str) -> tuple:
    _tf32_lock.acquire()
    try:
        held = tf32_switches(), _switched[0]
        set_tf32_switches(mode == "tf32")
    except BaseException:
        _tf32_lock.release()
        raise
    _switched[0] = mode
    return held


@untraced.register()
def release_tf32_switches(held: tuple) -> None:
    try:
        set_tf32_switches(held[0])
        _switched[0] = held[1]
    finally:
        _tf32_lock.release()


def autocast(precision: Precision, device: torch.device):
    """autocast for eager backends in "mixed" mode (GEMMs in low precision, norms in fp32); in every
    other mode, the caller's autocast switched off: an fp32 upscaler called inside a pipeline's
    ``torch.autocast`` region ran its GEMMs and convs in bf16 (7.9e-3 error instead of 1e-6)."""
    if precision.mode == "mixed":
        return torch.autocast(device_type=device.type, dtype=precision.compute)
    return without_autocast(device)


def _autocast_device_types() -> frozenset:
    found = set()
    for name in ("cpu", "cuda", "mps", "xpu", "hpu", "mtia", "xla", torch._C._get_privateuse1_backend_name()):
        try:
            if torch.amp.is_autocast_available(name):
                found.add(name)
        except (RuntimeError, ValueError):
            pass
    return frozenset(found)


# Any device type autocast knows (MPS, XPU, ...), not only CPU and CUDA: a Mac pipeline's mps
# autocast would otherwise recast an fp32 upscaler's matmuls there. Asked once, here: Dynamo on
# torch 2.11 cannot trace torch.amp.is_autocast_available (a fullgraph compile failed on it).
AUTOCAST_DEVICE_TYPES = _autocast_device_types()


def without_autocast(device: torch.device):
    """The caller's autocast off for ``device`` (the precision mode decides every dtype)."""
    if device.type in AUTOCAST_DEVICE_TYPES and torch.is_autocast_enabled(device.type):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()
