"""Count the kernel launches of a forward pass, on any device (the CPU included).

``count_launches(fn, *args)`` runs ``fn`` and returns a :class:`Launches` with the total and the
count per kernel/op name. It counts what a GPU would launch:
- every PyTorch operator that computes (views, reshapes and allocations launch nothing and are
  not counted), through a ``TorchDispatchMode``;
- every Triton kernel launched by lua_fast's kernel ops, and the PyTorch fills inside them,
  through ``triton_support.LAUNCH_OBSERVERS`` (the ops themselves are not counted twice).
Interpreted kernels (``TRITON_INTERPRET=1``) are counted like compiled ones, so CI can check the
launch budget without a GPU. cuBLAS may split one GEMM into more than one kernel: counted as one.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from .kernels import triton_support

_ALLOCATIONS = {
    torch.ops.aten.empty.memory_format, torch.ops.aten.empty_strided.default, torch.ops.aten.empty_like.default,
    torch.ops.aten.new_empty.default, torch.ops.aten.new_empty_strided.default, torch.ops.aten.lift_fresh.default,
}


@dataclass
class Launches:
    total: int
    by_name: Counter

    def __str__(self) -> str:
        return f"{self.total} launches: " + ", ".join(f"{k} x{v}" for k, v in self.by_name.most_common())


class _Counter(TorchDispatchMode):
    def __init__(self, counts: Counter):
        super().__init__()
        self.counts = counts

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        namespace = func.namespace
        if namespace != "lua_fast" and not func.is_view and func not in _ALLOCATIONS:
            self.counts[f"aten.{func.__name__}" if namespace == "aten" else str(func)] += 1
        return func(*args, **(kwargs or {}))


def count_launches(fn, *args, execute: bool = True, **kwargs) -> Launches:
    """Run ``fn(*args, **kwargs)`` and count its launches. ``execute=False`` skips the Triton kernels
    themselves (their outputs stay uninitialised): a count in seconds even through the interpreter."""
    if torch.is_inference_mode_enabled():
        # Seen with torch 2.13: under inference_mode, dtype casts bypass Python dispatch modes, so
        # they would go uncounted. no_grad() is enough here.
        raise RuntimeError("count_launches: call it under torch.no_grad(), not torch.inference_mode()")
    counts: Counter = Counter()

    def observe(name: str) -> None:
        counts[name] += 1

    triton_support.LAUNCH_OBSERVERS.append(observe)
    triton_support.DRY_RUN[0] = not execute
    try:
        with _Counter(counts):
            fn(*args, **kwargs)
    finally:
        triton_support.DRY_RUN[0] = False
        triton_support.LAUNCH_OBSERVERS.remove(observe)
    return Launches(sum(counts.values()), counts)
