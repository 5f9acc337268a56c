"""fp32 dots as three TF32 tensor-core products (``LUA_FAST_FP32_DOTS=tf32x3``).

Triton's interpreter computes every ``tl.dot`` in full fp32 whatever its ``input_precision``, so
on the CPU it cannot show what TF32 costs in accuracy. These tests replace its dot with a model of
the tensor cores (operands rounded to TF32 as ``cvt.rna.tf32.f32`` does; for tf32x3 each operand
split into a TF32 part and a TF32 remainder, the remainders' product dropped, as Triton's
decomposition does) and check: the model itself (TF32 ~1e-4, tf32x3 ~1e-7 per dot), that the
kernels really receive tf32x3 when asked, and that the released numerics then stay within the fp32
mode's 1e-5 of the official implementation's outputs. The GPU check measures the same on tensor
cores (tests/test_gpu_backends.py)."""

from pathlib import Path

import numpy as np
import pytest
import torch

import lua_fast
from lua_fast.kernels import triton_support
from conftest import rel_err

pytestmark = pytest.mark.skipif(not triton_support.INTERPRET, reason="models the interpreter's dot (CPU only)")
FIXTURES = Path(__file__).parent / "fixtures"


def tf32(x: np.ndarray) -> np.ndarray:
    """fp32 -> the nearest TF32 (10 mantissa bits), ties away from zero, kept in fp32."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    return ((bits + np.uint32(0x1000)) & np.uint32(0xFFFFE000)).view(np.float32)


def modelled_dot(a: np.ndarray, b: np.ndarray, precision: str) -> np.ndarray:
    """a @ b as the tensor cores compute it for ``precision`` (products and sums in float64: only
    the operand rounding is modelled)."""
    if precision == "tf32":
        return tf32(a).astype(np.float64) @ tf32(b).astype(np.float64)
    a_big, b_big = tf32(a), tf32(b)
    a_small, b_small = tf32(a - a_big), tf32(b - b_big)
    f64 = lambda t: t.astype(np.float64)  # noqa: E731
    return f64(a_big) @ f64(b_big) + f64(a_big) @ f64(b_small) + f64(a_small) @ f64(b_big)


@pytest.fixture
def tensor_core_dots(monkeypatch):
    """The interpreter's fp32 dots go through :func:`modelled_dot`; returns the precisions seen."""
    from triton._C.libtriton import ir
    from triton.runtime import interpreter

    names = {ir.INPUT_PRECISION.TF32: "tf32", ir.INPUT_PRECISION.TF32x3: "tf32x3"}
    original = interpreter.InterpreterBuilder.create_dot
    seen = []

    def create_dot(self, a, b, d, input_precision, max_num_imprecise_acc):
        name = names.get(input_precision)
        if name is None or a.data.dtype != np.float32 or b.data.dtype != np.float32:
            return original(self, a, b, d, input_precision, max_num_imprecise_acc)
        seen.append(name)
        out = modelled_dot(a.data, b.data, name) + d.data
        return interpreter.TensorHandle(out.astype(d.data.dtype), d.dtype.scalar)

    monkeypatch.setattr(interpreter.InterpreterBuilder, "create_dot", create_dot)
    return seen


def test_dot_precision_switch(monkeypatch):
    monkeypatch.delenv(triton_support.FP32_DOTS_ENV, raising=False)
    assert triton_support.dot_precision(torch.float32) == "ieee"
    assert triton_support.dot_precision(torch.bfloat16) is None
    monkeypatch.setenv(triton_support.FP32_DOTS_ENV, "TF32x3")
    assert triton_support.dot_precision(torch.float32) == "tf32x3"
    assert triton_support.fp32_operands({"INPUT_PRECISION": "tf32x3"})  # pruned like IEEE fp32
    assert not triton_support.fp32_operands({"INPUT_PRECISION": None})
    monkeypatch.setenv(triton_support.FP32_DOTS_ENV, "tf32")  # plain TF32 is the "tf32" mode, not fp32
    with pytest.raises(ValueError, match="LUA_FAST_FP32_DOTS"):
        triton_support.dot_precision(torch.float32)


def test_the_model_of_the_tensor_cores():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((64, 3240)).astype(np.float32), rng.standard_normal((3240, 64)).astype(np.float32)
    exact = a.astype(np.float64) @ b.astype(np.float64)
    err = {p: np.linalg.norm(modelled_dot(a, b, p) - exact) / np.linalg.norm(exact) for p in ("tf32", "tf32x3")}
    assert 1e-4 < err["tf32"] < 1e-3, err  # 10-bit mantissas: ~2^-11 per product, averaged down
    assert err["tf32x3"] < 1e-6, err  # only the remainders' product is dropped: ~2^-22
    assert tf32(np.float32([1 + 2**-11, 1 + 3 * 2**-12]))[0] == np.float32(1 + 2**-10)  # ties away from zero
    assert tf32(np.float32([1 + 2**-12]))[0] == 1.0


def test_tf32x3_keeps_the_fp32_mode_within_1e5_of_the_official_outputs(tensor_core_dots, monkeypatch):
    monkeypatch.setenv(triton_support.FP32_DOTS_ENV, "tf32x3")
    official = torch.load(FIXTURES / "official_small_io.pt", weights_only=True)
    up = lua_fast.load(FIXTURES / "official_small.pth", backend="triton", precision="fp32")
    got = up.upscale(official["z_16x16"], scale=2)  # (x4 measured too: 8.70e-7, against IEEE's 8.84e-7)
    assert tensor_core_dots and set(tensor_core_dots) == {"tf32x3"}  # every fp32 Triton dot got the split
    errors = {2: rel_err(got, official["x2_16x16"])}
    assert max(errors.values()) <= 1e-5, errors
