"""Every lua_fast custom op passes ``torch.library.opcheck`` with the arguments the backends really
pass: the schema (no undeclared mutation, no aliasing, and no reads outside the inputs: opcheck
hands the op copies), the fake kernel (shapes, strides, dtypes), and AOTAutograd with dynamic
shapes. These are what torch.compile, torch.export and AOTInductor rely on.

The calls are recorded from real forwards (a dispatch mode sees each op call with its arguments),
so a new op, or a new way of calling one, is covered without listing it here. Before 2026-11-28
``conv3x3`` with ``padded_input`` failed the schema check: it read a border outside its input.
"""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import lua_fast
from lua_fast import native
from lua_fast.kernels import triton_support
from conftest import random_state_dict, tiny_config

CHECKS = ("test_schema", "test_faketensor", "test_aot_dispatch_dynamic")


class _RecordOps(TorchDispatchMode):
    """Keeps the first call of each lua_fast op per argument signature (shapes, dtypes, layouts,
    Python values), with copies of the tensors as they were before the call."""

    def __init__(self):
        super().__init__()
        self.calls = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func.namespace == "lua_fast":
            key = (func, tuple(self._signature(a) for a in args))
            if key not in self.calls:
                self.calls[key] = (func, torch.utils._pytree.tree_map(self._copy, args), kwargs)
        return func(*args, **kwargs)

    @staticmethod
    def _signature(a):
        if isinstance(a, torch.Tensor):
            return tuple(a.shape), a.dtype, a.stride()
        return a if isinstance(a, (int, float, bool, str, type(None), torch.dtype, torch.device)) else type(a).__name__

    @staticmethod
    def _copy(a):
        return a.clone() if isinstance(a, torch.Tensor) else a


def _recorded_calls(up, latents):
    recorder = _RecordOps()
    with torch.no_grad(), recorder:
        up.upscale(latents, scale=2, check_finite=False)  # (x4 only repeats x2's calls, larger)
    return list(recorder.calls.values())


def _poisoned(a, pad: int = 64):
    """A contiguous copy of ``a`` in the middle of a storage whose other elements are NaN (or an
    integer dtype's largest value): whatever reads outside the tensor reads poison."""
    if not isinstance(a, torch.Tensor) or a.numel() == 0:
        return a
    fill = float("nan") if a.is_floating_point() else True if a.dtype == torch.bool else torch.iinfo(a.dtype).max
    storage = torch.full((a.numel() + 2 * pad,), fill, dtype=a.dtype)
    inside = storage[pad:pad + a.numel()].view(a.shape)
    inside.copy_(a)
    return inside


def _check_all(calls):
    """opcheck, then the same call on inputs inside poisoned storage against plain contiguous copies
    (opcheck itself cannot see an op that reads past a view without failing on it)."""
    failures = []
    for func, args, kwargs in calls:
        try:
            result = torch.library.opcheck(func, args, kwargs, test_utils=CHECKS)
        except Exception as exc:  # noqa: BLE001 - opcheck raises on the first failing check
            failures.append(f"{func}: {type(exc).__name__}: {str(exc).splitlines()[0]}")
            continue
        failures += [f"{func}: {name}: {outcome}" for name, outcome in result.items() if outcome != "SUCCESS"]
        contiguous = torch.utils._pytree.tree_map(lambda a: a.contiguous() if isinstance(a, torch.Tensor) else a, args)
        want = func(*contiguous, **kwargs)
        got = func(*torch.utils._pytree.tree_map(_poisoned, args), **kwargs)
        for w, g in zip(torch.utils._pytree.tree_leaves(want), torch.utils._pytree.tree_leaves(got)):
            if isinstance(w, torch.Tensor) and not (w.shape == g.shape and (w == g) | (w.isnan() & g.isnan())).all():
                failures.append(f"{func}: reads outside its inputs (the poisoned call differs)")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("precision, fused", [("bf16", False), ("fp32", False), ("mixed", True)],
                         ids=["bf16", "fp32", "mixed-fused-mlp-attn-proj"])
def test_triton_backend_ops(precision, fused, monkeypatch):
    reason = triton_support.unavailable_reason(torch.device("cpu"))
    if reason:
        pytest.skip(reason)
    monkeypatch.setenv("LUA_FAST_FUSED_MLP", "1" if fused else "0")
    monkeypatch.setenv("LUA_FAST_FUSED_ATTN_PROJ", "1" if fused else "0")
    up = lua_fast.load(random_state_dict(tiny_config(), seed=11), backend="triton", precision=precision)
    latents = torch.randn(2, 4, 9, 7, generator=torch.Generator().manual_seed(1))  # padded; batch 2
    calls = _recorded_calls(up, latents)
    names = {str(func) for func, _, _ in calls}
    assert {"lua_fast.conv3x3.default", "lua_fast.window_attention.default" if not fused
            else "lua_fast.attention_proj.default"} <= names, names
    _check_all(calls)


def test_native_window_ops():
    if not native.status().loaded:
        pytest.skip(f"native extension not loaded: {native.status().reason}")
    up = lua_fast.load(random_state_dict(tiny_config(), seed=11), backend="torch")
    calls = _recorded_calls(up, torch.randn(2, 4, 9, 7, generator=torch.Generator().manual_seed(1)))
    assert {"lua_fast.window_partition.default", "lua_fast.window_merge.default"} <= {str(f) for f, _, _ in calls}
    x = torch.randn(2, 16, 24, 5)
    calls += [(torch.ops.lua_fast.window_partition.default, (x.transpose(1, 2).contiguous().transpose(1, 2), 8, 4), {}),
              (torch.ops.lua_fast.window_mask.default, (16, 24, 8, 4, torch.bfloat16, torch.device("cpu")), {})]
    _check_all(calls)
