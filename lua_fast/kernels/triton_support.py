"""Whether Triton kernels can run, and why not.

Triton decides at decoration time whether a kernel is compiled for the GPU or run by
its interpreter (``TRITON_INTERPRET=1``, numpy on CPU tensors, ~1000x slower: for
tests on small shapes). ``LUA_FAST_DISABLE_TRITON=1`` simulates a missing Triton.
"""

from __future__ import annotations

import functools
import os
import threading

import torch
from torch.utils._python_dispatch import _get_current_dispatch_mode as _current_dispatch_mode

from .. import env

try:  # torch's switch between a traceable launch (higher-order op) and a direct kernel call
    from torch._library.triton import is_wrap_triton_enabled, set_wrap_triton_enabled
except ImportError:  # (present in torch 2.6-2.14; without it kernel ops always go through the op)
    is_wrap_triton_enabled, set_wrap_triton_enabled = (lambda: True), None

DISABLE_ENV = "LUA_FAST_DISABLE_TRITON"

try:
    import triton  # noqa: F401
    import triton.language as tl  # noqa: F401

    IMPORT_ERROR: str | None = None
    try:  # grid dependency control (Hopper's programmatic dependent launch): Triton >= 3.2
        from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait
    except ImportError:
        gdc_launch_dependents = gdc_wait = None
except Exception as exc:  # ImportError, or a broken install raising at import
    triton = None
    tl = None
    gdc_launch_dependents = gdc_wait = None
    IMPORT_ERROR = f"{type(exc).__name__}: {exc}"

# Read once, like Triton itself: kernels decorated in this process are interpreted or compiled.
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
AUTOTUNE_ENV = "LUA_FAST_AUTOTUNE"
PDL_ENV = "LUA_FAST_PDL"


def cdiv(a: int, b: int) -> int:
    """ceil(a / b) for host code: ``triton.cdiv`` is a constexpr_function whose host call costs
    ~4 us (Triton 3.6-3.9), and a forward evaluates ~4 per launch."""
    return -(-a // b)


def next_pow2(n: int) -> int:
    """The smallest power of two >= n (n >= 1), for host code (see :func:`cdiv`)."""
    return 1 << (n - 1).bit_length()


def autotuning() -> bool:
    """Whether tuning rounds time their configs. False with ``LUA_FAST_AUTOTUNE=0`` and under
    ``torch.use_deterministic_algorithms(True)`` (as Inductor does): then each kernel runs its first
    config that fits, untimed. Timing picks between configs whose sums run in different orders (KV
    blocks of the online softmax, conv taps outer or inner), so two processes could pick differently
    on noise and differ in the last bits; the untimed choice is the same in every process with the
    same GPU and software. (No kernel uses atomics or split reductions: one config gives the same
    bits at every call.)"""
    return env.flag(AUTOTUNE_ENV, True) and not torch.are_deterministic_algorithms_enabled()


_AUTOTUNERS: list = []  # every tuned kernel (autotuned()), for forget_choices_of_another_mode()
_ROUNDS_MODE = [None]  # autotuning() during the tuning rounds behind the choices held (None: none yet)


def forget_choices_of_another_mode() -> None:
    """If the choices the tuned kernels hold were made in the other tuning mode (see
    :func:`autotuning`), forget them all, so each key is tuned again in this one: choices timed
    before ``torch.use_deterministic_algorithms(True)`` would otherwise outlive it. The triton
    backend calls this once per forward (a flag and an environment read); direct kernel-op calls
    keep what they hold."""
    held = _ROUNDS_MODE[0]
    if held is not None and held != autotuning():
        for tuner in _AUTOTUNERS:
            tuner.cache.clear()  # (a launch racing this finds no choice and runs a round, under its lock)
        _ROUNDS_MODE[0] = None


# With LUA_FAST_AUTOTUNE=0, whether the tuning round under way (per thread) has launched a config.
_UNTIMED_ROUND = threading.local()


def tuned(configs: list) -> list:
    """The autotune configs a prune hook keeps, in the order it prefers them; it calls this last.

    With ``LUA_FAST_AUTOTUNE=0`` (correctness runs on a GPU, where compiling every config of every
    test shape would dominate the time) this also starts an untimed round: :func:`bench_config`
    then launches the configs in this order only until one runs, so the kernel runs its first
    config that compiles and fits the device (Triton's autotuner gives a config that raises
    ``OutOfResources`` an infinite time), and no later config is compiled or timed. Keeping only
    the first config instead failed where it does not fit: the fp32 convs' first tiles take
    128 KiB of shared memory, an RTX 4090 allows 99 KiB per block. (Traced launches keep the
    first config only: :func:`autotuned`.)"""
    if not autotuning():
        _UNTIMED_ROUND.launched = False
    return configs


def size_class(n: int) -> int:
    """An autotune key for a launch's size (rows, pixels or tokens): 16 up to 4096, then 16 x the
    power of two at or above n / 4096. The tuned kernels take it as an unused argument
    (``size_key``) named in their keys, so a config tuned at a 64x64 latent is not reused at
    128x128 or at batch 4, while sizes of one class share a tuning. Always a multiple of 16, so
    the JIT specialises it one way only (one compile per config, as before)."""
    return 16 << max(0, (n - 1).bit_length() - 12)


def bench_config(kernel_call, quantiles):
    """How the autotuners time a config: ``do_bench`` with 10 ms of warm-up and 40 ms of runs (Triton's
    25 + 100 ms is thousands of runs of these 10-150 us kernels, and a GPU table tunes ~300 configs).
    With ``LUA_FAST_AUTOTUNE=0`` nothing is timed: the round's first config that launches (once)
    scores 0 and every config after it scores infinity without being compiled (see :func:`tuned`)."""
    if not autotuning():
        if getattr(_UNTIMED_ROUND, "launched", False):
            score = float("inf")
        else:
            kernel_call()  # compiles and launches; OutOfResources goes to Triton's autotuner (infinity)
            _UNTIMED_ROUND.launched = True
            score = 0.0
        return [score] * len(quantiles) if quantiles else score
    return triton.testing.do_bench(kernel_call, warmup=10, rep=40, quantiles=quantiles)


AUTOTUNE_CACHE_ENV = "LUA_FAST_AUTOTUNE_CACHE"


def autotune_cache() -> bool:
    """Whether the tuned kernels keep their choices on disk (Triton's ``cache_results``, in its
    cache directory, ``TRITON_CACHE_DIR``): on by default, ``LUA_FAST_AUTOTUNE_CACHE=0`` turns it off.
    A later process then skips the benchmarking (~10 s at a new shape on an H200) for every key
    tuned before. Triton keys each entry on its version, the target (arch), the kernel's source, its
    TRITON_* environment, the tuning key and the configs kept by the prune hook. Read when the
    kernels are decorated (at import), like Triton's own TRITON_CACHE_AUTOTUNING."""
    return env.flag(AUTOTUNE_CACHE_ENV, True)


def autotuned(kernel, configs: list, prune, key: list[str]):
    """``triton.autotune`` as every tuned kernel here uses it: the kernel's prune hook (which ends in
    :func:`tuned`), timing through :func:`bench_config`, a key that always holds the dot precision,
    the interpreter's upcast flag and the size class after the kernel's own names, and choices kept
    on disk (:func:`autotune_cache`) when they were timed: an untimed round (``LUA_FAST_AUTOTUNE=0``)
    keeps the same configs as a timed one, so its choice would land under the same disk-cache key
    and a later timed process would take it as tuned.

    A traced launch (torch.compile, export: torch calls the prune hook itself, on fake tensors,
    then builds its own autotuner from the configs kept, timed by Triton's default ``do_bench``,
    not :func:`bench_config`) keeps only the first config when tuning is off, so it is not timed."""
    def prune_round(configs, named_args, **kwargs):
        # (Autotuner.run prunes before it looks at cache_results, Triton 3.6-3.9)
        timed = autotuning()
        tuner.cache_results = keep_on_disk and timed
        _ROUNDS_MODE[0] = timed
        kept = prune(configs, named_args, **kwargs)
        if not timed and _traced(named_args):
            return kept[:1]
        return kept

    tuner = triton.autotune(configs=configs, key=[*key, "INPUT_PRECISION", "DOT_UPCAST", "size_key"],
                            prune_configs_by={"early_config_prune": prune_round}, do_bench=bench_config,
                            cache_results=autotune_cache())(kernel)
    keep_on_disk = tuner.cache_results  # (Triton's choice: never when interpreted)
    _AUTOTUNERS.append(tuner)
    return tuner


def _traced(named_args: dict) -> bool:
    """Whether a prune hook runs for a traced launch: under Dynamo (torch 2.13), or on fake tensors
    (torch 2.11 runs a triton_op's function on them with ``is_compiling()`` False)."""
    return tracing() or any(without_data(a) for a in named_args.values() if isinstance(a, torch.Tensor))


def unavailable_reason(device: torch.device) -> str | None:
    """None if this process's Triton kernels can run on tensors of ``device``, else why not."""
    if env.flag(DISABLE_ENV, False):
        return f"disabled by {DISABLE_ENV}={os.environ[DISABLE_ENV]}"
    if triton is None:
        return f"triton is not importable ({IMPORT_ERROR})"
    if INTERPRET:
        return None if device.type == "cpu" else f"TRITON_INTERPRET=1 runs kernels on CPU tensors, not {device}"
    if device.type != "cuda":
        return f"Triton kernels need CUDA tensors (got {device}; set TRITON_INTERPRET=1 to interpret on CPU)"
    return _cuda_reason(device)


def store_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype a kernel should write its output in (then cast to ``dtype`` by PyTorch).

    Triton 3.9's interpreter rounds fp32 -> bf16 toward zero (even with
    ``fp_downcast_rounding="rtne"``), doubling the output rounding error; compiled kernels
    round to nearest even. Interpreted bf16 kernels write fp32 and let PyTorch round (RNE).
    """
    return torch.float32 if INTERPRET and dtype == torch.bfloat16 else dtype


def dot_upcast(dtype: torch.dtype) -> bool:
    """Whether kernels must upcast bf16 ``tl.dot`` operands to fp32.

    Triton 3.9's interpreter computes ``tl.dot`` wrongly for bf16 operands (errors of ~1e10 on
    a 16x16 product seen here; fp16 and fp32 are right). Upcasting matches what tensor cores
    compute anyway (exact products, fp32 accumulation). Compiled kernels keep bf16 operands.
    """
    return INTERPRET and dtype == torch.bfloat16


FP32_DOTS_ENV = "LUA_FAST_FP32_DOTS"
FP32_DOTS = ("ieee", "tf32x3")


def dot_precision(dtype: torch.dtype):
    """``input_precision`` for ``tl.dot``: None (the dtype's own tensor-core product) except for fp32
    operands, where Triton would default to TF32. There: IEEE fp32 (FMA units, exact products), or
    with ``LUA_FAST_FP32_DOTS=tf32x3`` three TF32 tensor-core products per dot (each operand split
    into a TF32 part and a TF32 remainder; only the remainders' product is dropped, ~2^-22 of each
    product): about fp32's accuracy at tensor-core speed. Opt-in until a GPU has measured both."""
    if dtype != torch.float32:
        return None
    choice = os.environ.get(FP32_DOTS_ENV, "").strip().lower() or "ieee"
    if choice not in FP32_DOTS:
        raise ValueError(f"{FP32_DOTS_ENV}={choice!r}: choose one of {FP32_DOTS}")
    return choice


def fp32_operands(meta: dict) -> bool:
    """Whether a launch's dot operands are fp32 (IEEE or split TF32): 4-byte tiles in shared
    memory, and the register-hungry variants the prune hooks keep for 2-byte operands only."""
    return meta.get("INPUT_PRECISION") in FP32_DOTS


# ------------------------------------------------- programmatic dependent launch (PDL)
# With PDL (Hopper and later) a kernel's programs may start while the previous kernel in the stream
# is still finishing: their launch and set-up overlap its tail, which matters for a forward of ~200
# short launches (at a 64x64 latent each launch ran ~22 us on an H200, mostly latency). Safety rests
# on one rule, kept by every kernel launched with it: each program first waits for the previous
# grid (griddepcontrol.wait: it has completed and its writes are visible), and only then lets the
# next grid launch (griddepcontrol.launch_dependents). So a program never reads or writes memory
# before its predecessor is done, and a successor starts only after this grid's predecessor is
# done: completion stays transitive along the stream, whatever ran before (PyTorch kernels, cuBLAS,
# copies, events). Off by default until a GPU has measured it (``LUA_FAST_PDL=1`` turns it on).


@functools.lru_cache(maxsize=None)
def _capability(index: int) -> tuple[int, int]:
    return torch.cuda.get_device_capability(index)


def pdl_reason(device: torch.device) -> str | None:
    """None if this process's kernel launches on ``device`` use programmatic dependent launch,
    else why not."""
    if not env.flag(PDL_ENV, False):
        return f"off by default (set {PDL_ENV}=1; not yet measured on a GPU)"
    if triton is None or INTERPRET:
        return "needs compiled Triton kernels (not the interpreter)"
    if gdc_wait is None:
        return f"Triton {triton.__version__} has no grid dependency control (triton.language.extra.cuda.gdc_wait)"
    if device.type != "cuda":
        return f"needs a CUDA device (got {device})"
    major, minor = _capability(device.index if device.index is not None else torch.cuda.current_device())
    if major < 9:
        return f"needs compute capability >= 9.0 (Hopper), device has {major}.{minor}"
    if torch.compiler.is_compiling() or _current_dispatch_mode() is not None:  # (make_fx / export use a mode)
        return "not under torch.compile / export tracing or a dispatch mode (the traced kernel is launched later)"
    return None


def pdl_options(device: torch.device) -> dict:
    """The launch keywords that switch PDL for one launch: the kernels' ``PDL`` constexpr (the
    wait / launch-dependents pair, see :func:`grid_dependency_sync`) and Triton's ``launch_pdl``
    launch attribute, both on or both off."""
    return {"PDL": True, "launch_pdl": True} if pdl_reason(device) is None else {"PDL": False}


if triton is not None:

    @triton.jit
    def grid_dependency_sync(PDL: tl.constexpr):
        """First statement of every kernel: with PDL, wait for the previous grid, then allow the
        next one to launch (see the comment above :func:`pdl_reason`); nothing otherwise."""
        if PDL:
            gdc_wait()
            gdc_launch_dependents()
else:
    grid_dependency_sync = None


LAUNCH_OBSERVERS: list = []  # callables(name) told of every kernel launch (lua_fast.launches counts them)
DRY_RUN = [False]  # True: launches are observed but not executed (counting launches without running)
TUNED_FAST_PATH = [True]  # False: every tuned launch goes through Triton's Autotuner.run (benchmarks compare)


if triton is not None:
    from triton.runtime.autotuner import Autotuner, Heuristics
    from triton.runtime.jit import JITFunction

    _TRITON_KERNELS = (JITFunction, Autotuner, Heuristics)


class _NoLaunch:
    def __getitem__(self, grid):
        return lambda *args, **kwargs: None


def autotune_key(tuner, args: tuple, kwargs: dict) -> tuple:
    """The key under which ``tuner`` (a ``triton.autotune`` Autotuner) caches its choice for a launch
    with these arguments, built as ``Autotuner.run`` builds it (Triton 3.6-3.9): the key arguments'
    values, then the dtype of every tensor argument, in the kernel's argument order."""
    return _tuned(tuner).key(args, kwargs)


class _Tuned:
    """``launcher(tuner)[grid](*args, **kwargs)`` for an Autotuner, with the lookup of an already
    tuned key done here: ``Autotuner.run`` rebuilds dicts of all ~25 arguments per launch (~19 us
    of host time per launch on the development CPU, half of Triton's launch path before the JIT).
    A key not tuned yet, a config with a pre-hook, or ``TUNED_FAST_PATH[0] = False`` take Triton's
    own path; the JIT launch gets the same arguments either way (tests/test_host_launch.py).

    Triton's path runs under a lock per kernel: ``Autotuner.run`` keeps the launch's arguments in an
    attribute of the shared Autotuner while it tunes and clears it when done, so two threads tuning
    the same kernel at once fail with "TypeError: 'NoneType' object is not a mapping" (seen through
    the stub with 6 threads) and would time their configs against each other."""

    def __init__(self, tuner):
        self.tuner = tuner
        self.lock = threading.Lock()
        self.name_set = frozenset(tuner.arg_names)
        self.key_index = tuple((k, tuner.arg_names.index(k)) for k in tuner.keys if k in self.name_set)

    def key(self, args: tuple, kwargs: dict) -> tuple:
        # Autotuner.run merges the positional and keyword arguments into one dict of the kernel's
        # arguments (launch options such as launch_pdl are not arguments); a launch never names
        # one argument twice, so the merged order is: positional, then keyword in the given order.
        count = len(args)
        values = [kwargs[k] if k in kwargs else args[i] for k, i in self.key_index if k in kwargs or i < count]
        values += [str(v.dtype) for v in args if hasattr(v, "dtype")]
        values += [str(v.dtype) for k, v in kwargs.items() if k in self.name_set and hasattr(v, "dtype")]
        return tuple(values)

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            tuner = self.tuner
            configs = tuner.configs
            config = configs[0] if len(configs) == 1 else tuner.cache.get(self.key(args, kwargs))
            if config is None or config.pre_hook is not None or not TUNED_FAST_PATH[0]:
                with self.lock:
                    return tuner[grid](*args, **kwargs)
            tuner.best_config = config
            return tuner.fn.run(*args, grid=grid, warmup=False, **kwargs, **config.all_kwargs())

        return launch


_TUNED: dict = {}  # Autotuner -> its _Tuned


def _tuned(tuner) -> _Tuned:
    plan = _TUNED.get(tuner)
    if plan is None:
        plan = _TUNED.setdefault(tuner, _Tuned(tuner))  # (one per kernel, whichever thread comes first)
    return plan


def note_launch(name: str) -> None:
    """Tell the observers about a launch (Triton kernels, and PyTorch ops inside kernel ops)."""
    for observe in LAUNCH_OBSERVERS:
        observe(name)


def launcher(kernel):
    """``launcher(kernel)[grid](...)``: through ``torch.library.wrap_triton`` so torch.compile and
    torch.export see the kernel itself inside a ``triton_op`` (the interpreter's kernels, and
    stand-ins such as the kernel report's recorder, are called directly)."""
    if LAUNCH_OBSERVERS:
        note_launch(getattr(kernel, "__name__", None) or getattr(getattr(kernel, "fn", None), "__name__", "kernel"))
    if DRY_RUN[0]:
        return _NoLaunch()
    if INTERPRET or triton is None or not isinstance(kernel, _TRITON_KERNELS):
        return kernel
    if is_wrap_triton_enabled():  # tracing (make_fx, export, torch.compile): the launch must be seen
        return torch.library.wrap_triton(kernel)
    # Off in a triton_op's eager kernel and on kernel_op's plain eager calls: the kernel itself (what
    # wrap_triton's wrapper would call, without building two wrappers per launch).
    return _tuned(kernel) if isinstance(kernel, Autotuner) else kernel


def kernel_op(name: str, fake):
    """Register a Python function that launches Triton kernels as the op ``lua_fast::<name>``.

    Compiled kernels: ``torch.library.triton_op``, so torch.compile / AOTInductor trace into the
    function and see each Triton kernel (it must then be traceable with fake tensors: shapes,
    strides and storage offsets only). Interpreted kernels (``TRITON_INTERPRET=1``) cannot be
    traced, so there the function is an opaque ``custom_op`` with ``fake`` as its meta kernel.

    The returned callable runs ``fn`` directly on a plain eager call and goes through the op
    otherwise (see :func:`plain_eager`): the op's dispatch costs about 15 us per call on the
    host, and without CUDA graphs a forward of ~200 launches is host-bound. The direct call, like
    the op's own eager kernel, switches ``wrap_triton`` off: left on, every launch would go
    through its higher-order op (signature binding, pytree flattening and a dispatch, ~250 us of
    host time per launch measured here; benchmarks/NOTES.md, "Host time per launch").
    """

    def register(fn):
        # The op's own kernel switches device too: calls under a dispatch mode (launch counting, a
        # profiler's mode) take the op, and Triton launches on the current device, not the tensors'.
        on_its_device = functools.wraps(fn)(lambda *args: on_input_device(fn, args))
        if INTERPRET or triton is None:
            op = torch.library.custom_op(f"lua_fast::{name}", mutates_args=())(on_its_device)
            op.register_fake(fake)
        else:
            op = torch.library.triton_op(f"lua_fast::{name}", mutates_args=())(on_its_device)

        def call(*args):
            if torch.is_grad_enabled():
                refuse_gradients(f"lua_fast::{name}", args)
            if not plain_eager(args) or set_wrap_triton_enabled is None:
                return op(*args)
            index = other_cuda_device(args[0])
            if index is None:
                return without_wrap_triton(fn, args)
            with torch.cuda.device(index):  # Triton launches on the current device, not on the tensors'
                return without_wrap_triton(fn, args)

        call.op, call.__name__, call.__doc__ = op, fn.__name__, fn.__doc__
        return call

    return register


def refuse_gradients(what: str, args) -> None:
    """Raise where autograd would record a call with no backward: the kernels write plain output
    tensors, so a gradient asked through them would silently leave the inputs' part out."""
    if any(isinstance(a, torch.Tensor) and a.requires_grad for a in args):
        from ..errors import NotDifferentiableError

        raise NotDifferentiableError(
            f"{what} has no backward (lua_fast's Triton kernels are for inference) and an input requires "
            "grad: run it under torch.no_grad() or torch.inference_mode(), detach the input, or use "
            "backend='torch' or 'reference', which are differentiable")


def on_input_device(fn, args):
    """``fn(*args)`` with the first argument's CUDA device current, where it is a real tensor on a
    device other than the current one. Fake or traced tensors (no data, maybe no GPU at all) run
    ``fn`` as they are: tracing records the launch, and the compiled graph switches device itself."""
    first = args[0] if args else None
    if not isinstance(first, torch.Tensor) or without_data(first):
        return fn(*args)
    index = other_cuda_device(first)
    if index is None:
        return fn(*args)
    with torch.cuda.device(index):
        return fn(*args)


def plain_eager(args) -> bool:
    """True when an op's implementation may run without the op: no torch.compile / export tracing,
    no Python dispatch mode (fake tensors, launch counting, profilers that use one) and plain
    tensors only (not FakeTensor / FunctionalTensor or other subclasses). Otherwise the registered
    op runs, so tracers and modes see ``lua_fast::<name>`` as before."""
    if torch.compiler.is_compiling() or _current_dispatch_mode() is not None:
        return False
    return all(type(a) is torch.Tensor for a in args if isinstance(a, torch.Tensor))


def tracing() -> bool:
    """Whether the caller runs under torch.compile / export tracing (fake tensors: no data pointers)."""
    return torch.compiler.is_compiling()


from torch._subclasses.fake_tensor import is_fake  # noqa: E402 (here, below the jit functions: see the end)


def without_data(t: torch.Tensor) -> bool:
    """Whether t has no data to read (pointer, storage bytes): under tracing, or a fake tensor.
    (torch 2.11's Dynamo runs a triton_op on fake tensors with ``is_compiling()`` False, and then
    ``data_ptr()`` raises; 2.13 reports compiling there.) A plain ``torch.Tensor`` that wraps
    nothing (no C++ functionalization or functorch wrapper, which keep the plain type and may hold
    a fake tensor) is not fake: two C checks first spare ``is_fake`` on an eager launch (~1.4 us a
    call, ~2.4 calls a launch: -3.6 us of host time a launch measured, benchmarks/NOTES.md)."""
    if tracing():
        return True
    if type(t) is torch.Tensor and not torch._is_functional_tensor(t) and not _functorch_wrapped(t):
        return False
    return is_fake(t)


_functorch_wrapped = torch._C._functorch.is_functorch_wrapped_tensor


def _wrap_switch():
    """torch's thread-local behind ``set_wrap_triton_enabled``, if that context manager is a plain
    write of its ``value`` (checked once, here), else None. Writing it directly costs ~0.2 us where
    the context manager costs ~1.4 us, and an eager forward switches it once per launch."""
    try:
        from torch._library.triton import wrap_triton_enabled as switch
    except ImportError:
        return None
    before = is_wrap_triton_enabled()
    with set_wrap_triton_enabled(not before):
        flipped = getattr(switch, "value", None) is (not before) and is_wrap_triton_enabled() is (not before)
    return switch if flipped and is_wrap_triton_enabled() is before else None


_WRAP_SWITCH = _wrap_switch() if set_wrap_triton_enabled is not None else None


def without_wrap_triton(fn, args):
    """``fn(*args)`` with ``wrap_triton`` off (its launches call the kernels directly), restored after."""
    if _WRAP_SWITCH is None:
        with set_wrap_triton_enabled(False):
            return fn(*args)
    before = is_wrap_triton_enabled()
    _WRAP_SWITCH.value = False
    try:
        return fn(*args)
    finally:
        _WRAP_SWITCH.value = before


def other_cuda_device(t) -> int | None:
    """The index of t's CUDA device if that is not the current device, else None. Triton launches a
    kernel on the current device (its stream too) whatever device its tensors are on: on another
    device it faults, or, with peer access on, reads them unordered with their own stream."""
    if not (isinstance(t, torch.Tensor) and t.is_cuda):
        return None
    index = t.get_device()
    return None if index == torch.cuda.current_device() else index


# (Placed last: code added above a @triton.jit function shifts its first line, which is part of the
# cache key of every kernel calling it, so a Triton cache built ahead would miss.)
def triton_version() -> tuple[int, ...]:
    """(major, minor) of the installed Triton; () without one."""
    if triton is None:
        return ()
    return tuple(int(p) for p in triton.__version__.split("+")[0].split(".")[:2] if p.isdigit())


def _backport_interpreter_index() -> bool:
    """Triton 3.6's interpreter turns a tensor used as a loop bound (``range(pid * GROUP, last)``)
    into an int with ``int(array)``, and a program id is an array of shape (1,), which NumPy 2.4
    refuses ("only 0-dimensional arrays can be converted to Python scalars"; seen with 2.4.6).
    Triton 3.7 squeezes the array first; this applies that one-line fix to older interpreters, in
    the interpreter's own patch scope (restored after each kernel). True when applied."""
    try:
        from triton.runtime import interpreter
    except Exception:  # (an interpreter without this module has nothing to fix)
        return False
    original = getattr(interpreter, "_patch_lang_tensor", None)
    if original is None or triton_version() >= (3, 7) or getattr(original, "lua_fast_backport", False):
        return False

    def patch_lang_tensor(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.squeeze()))

    patch_lang_tensor.lua_fast_backport = True
    interpreter._patch_lang_tensor = patch_lang_tensor
    return True


INTERPRET_INDEX_BACKPORTED = INTERPRET and triton is not None and _backport_interpreter_index()


# (Below the jit functions, as triton_version: see there.)
MIN_CAPABILITY = (8, 0)


def _cuda_reason(device: torch.device) -> str | None:
    """Why the kernels cannot run on this CUDA device, if they cannot. They are written for
    compute capability >= 8.0 (tensor-core bf16/fp16 dots, async copies, >= 99 KiB of shared
    memory per block). For sm_75 (T4, RTX 20) Triton 3.9 still compiles them, but with no
    tensor-core instruction at all and 2.4-2.5 KB of spills per thread in every GEMM (kernel
    report, 2026-11-27), a T4 has 64 KiB of shared memory per block, and no GPU test has run
    there. So below 8.0 "auto" picks the torch backend (cuBLAS / cuDNN) and a forced triton
    backend raises this reason."""
    if not torch.cuda.is_available():
        return f"CUDA is not available to this process (torch {torch.__version__})"
    index = device.index if device.index is not None else torch.cuda.current_device()
    major, minor = _capability(index)
    if (major, minor) < MIN_CAPABILITY:
        return (f"Triton kernels need compute capability >= {MIN_CAPABILITY[0]}.{MIN_CAPABILITY[1]} (Ampere or "
                f"newer), {device} has {major}.{minor}")
    return None

