"""The fused MLP (LayerNorm + fc1 + GELU + fc2 + residual in one launch) against the two-launch
composition: dtypes, the fp32 residual stream into a low-precision GEMM ("mixed"), odd row counts,
hidden widths that are not a multiple of the chunk, one or two fc2 accumulator tiles, strided
rows, the second output dtype, refused shapes, and the triton backend's launch count with it.

Kernels run through Triton's interpreter on CPU (conftest), on small shapes."""

import pytest
import torch

from lua_fast import LUAConfig
from lua_fast.kernels import triton_support
from conftest import rel_err

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
if triton_support.unavailable_reason(DEVICE):
    pytest.skip(triton_support.unavailable_reason(DEVICE), allow_module_level=True)

from lua_fast.kernels import fused_mlp as FM  # noqa: E402
from lua_fast.kernels.fused_linear import pack_linear, resident_split  # noqa: E402
from lua_fast.kernels.fused_mlp import fused_mlp, mlp_reason, torch_fused_mlp  # noqa: E402

LOW = [torch.bfloat16, torch.float16]


def mlp_case(m, d, hidden, seed, mean=20.0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(m, d, generator=gen) * 3 + mean  # residual streams are not centred
    w1, b1 = torch.randn(hidden, d, generator=gen) / d**0.5, torch.randn(hidden, generator=gen)
    w2, b2 = torch.randn(d, hidden, generator=gen) / hidden**0.5, torch.randn(d, generator=gen)
    ln = (1 + 0.3 * torch.randn(d, generator=gen), 0.3 * torch.randn(d, generator=gen), 1e-5)
    to = lambda v: v.to(DEVICE) if torch.is_tensor(v) else v  # noqa: E731
    return to(x), to(w1), to(b1), to(w2), to(b2), tuple(to(v) for v in ln)


def packed(w1, b1, w2, b2, ln, dtype):
    return pack_linear(w1, b1, dtype, layer_norm=ln), pack_linear(w2, b2, dtype)


def check(out, x, w1, b1, w2, b2, ln, dtype):
    """fp32: <= 1e-5 against the fp32 composition; low precision: <= 2x the same-dtype eager error.
    The MLP's own contribution (out - x) is checked too: the residual would hide a small error."""
    ref32 = torch_fused_mlp(x.float(), w1.float(), b1.float(), w2.float(), b2.float(), layer_norm=ln)
    assert torch.isfinite(out).all()
    if dtype == torch.float32:
        assert rel_err(out, ref32) <= 1e-5
        assert rel_err(out - x.float(), ref32 - x.float()) <= 1e-5
    else:
        eager = torch_fused_mlp(x, w1, b1, w2, b2, layer_norm=ln, out_dtype=out.dtype)
        assert rel_err(out, ref32) <= 2 * rel_err(eager, ref32) + 1e-4, (rel_err(out, ref32), rel_err(eager, ref32))
        own, own_eager = rel_err(out.float() - x.float(), ref32 - x.float()), \
            rel_err(eager.float() - x.float(), ref32 - x.float())
        assert own <= 2 * own_eager + 1e-3, (own, own_eager)


@pytest.mark.parametrize("dtype", [torch.float32] + LOW, ids=str)
@pytest.mark.parametrize("m,d,hidden", [(77, 40, 88), (45, 64, 150), (33, 24, 48)], ids=str)
def test_fused_mlp_matches_the_composition(dtype, m, d, hidden):
    """d = 40: fc2 accumulates in tiles of 32 + 16 columns (8 masked); d = 64: one tile of 64;
    d = 24: 16 + 16 (8 masked: dot tiles are at least 16 wide). Hidden 88 / 150 / 48 are not multiples of the chunk."""
    assert resident_split(d) == {40: (32, 16), 64: (64, 0), 24: (16, 16)}[d]
    x, w1, b1, w2, b2, ln = mlp_case(m, d, hidden, seed=m + d)
    w1, b1, w2, b2 = (v.to(dtype) for v in (w1, b1, w2, b2))
    fc1, fc2 = packed(w1, b1, w2, b2, ln, dtype)
    out = fused_mlp(x.to(dtype), fc1, fc2)
    assert out.shape == (m, d) and out.dtype == dtype
    check(out, x.to(dtype), w1, b1, w2, b2, ln, dtype)


@pytest.mark.skipif(not triton_support.INTERPRET, reason="the interpreter's tiles (a GPU autotunes them)")
@pytest.mark.parametrize("block_h,block_k,static_k", [(16, 16, 0), (64, 32, 0), (128, 16, 0), (32, 16, 1)])
def test_any_hidden_chunk_and_k_tile(monkeypatch, block_h, block_k, static_k):
    """Hidden chunks of 16 (6 chunks, the last partly padding), 32, 64 and 128 (one chunk over the
    whole padded width), K tiles of 16 and 32 columns of D = 40 (the last one masked), the K loop
    as a loop or unrolled in the IR (STATIC_K)."""
    monkeypatch.setattr(FM, "INTERPRET_CONFIG", dict(FM.INTERPRET_CONFIG, BLOCK_H=block_h, BLOCK_K=block_k,
                                                     STATIC_K=static_k))
    x, w1, b1, w2, b2, ln = mlp_case(50, 40, 88, seed=block_h)
    out = fused_mlp(x, *packed(w1, b1, w2, b2, ln, torch.float32))
    check(out, x, w1, b1, w2, b2, ln, torch.float32)


@pytest.mark.parametrize("dtype", LOW, ids=str)
def test_fp32_stream_into_a_low_precision_mlp_with_a_second_output(dtype):
    """"mixed": the residual stream is fp32 and stays fp32; the GEMMs run in ``dtype``; the last
    block also writes its output in ``dtype`` for the RSTB conv (``also_in``), the same values."""
    x, w1, b1, w2, b2, ln = mlp_case(61, 40, 88, seed=4, mean=50.0)
    w1, b1, w2, b2 = (v.to(dtype) for v in (w1, b1, w2, b2))
    out, low = fused_mlp(x, *packed(w1, b1, w2, b2, ln, dtype), also_in=dtype)
    assert out.dtype == torch.float32 and low.dtype == dtype
    assert torch.equal(low, out.to(dtype)) or rel_err(low, out) <= 8e-3  # (interpreter: see store_dtype)
    ref32 = torch_fused_mlp(x, w1.float(), b1.float(), w2.float(), b2.float(), layer_norm=ln)
    # the eager yardstick: the same composition with the GEMMs in dtype, the stream in fp32
    h = FM.torch_fused_linear(x.to(dtype), w1, b1, layer_norm=ln, gelu=True)
    eager = FM.torch_fused_linear(h, w2, b2, residual=x)
    assert rel_err(out, ref32) <= 2 * rel_err(eager, ref32) + 1e-6, (rel_err(out, ref32), rel_err(eager, ref32))


def test_strided_rows_and_inputs_left_alone():
    x, w1, b1, w2, b2, ln = mlp_case(33, 40, 88, seed=5)
    wide = torch.zeros(33, 64, device=DEVICE)
    wide[:, 8:48] = x
    before = wide.clone()
    fc1, fc2 = packed(w1, b1, w2, b2, ln, torch.float32)
    weights = fc1.weight.clone(), fc2.weight.clone()
    out = fused_mlp(wide[:, 8:48], fc1, fc2)
    assert torch.equal(wide, before) and torch.equal(fc1.weight, weights[0]) and torch.equal(fc2.weight, weights[1])
    check(out, x, w1, b1, w2, b2, ln, torch.float32)


def test_refused_layers_say_why():
    x, w1, b1, w2, b2, ln = mlp_case(8, 40, 88, seed=1)
    fc1, fc2 = packed(w1, b1, w2, b2, ln, torch.float32)
    assert mlp_reason(fc1, fc2) is None
    plain_fc1 = pack_linear(w1, b1, torch.float32)
    assert "LayerNorm folded in" in mlp_reason(plain_fc1, fc2)
    assert "without a LayerNorm" in mlp_reason(fc1, pack_linear(w2, b2, torch.float32, layer_norm=(
        torch.ones(88), torch.zeros(88), 1e-5)))
    assert "do not chain" in mlp_reason(fc1, pack_linear(w2[:, :80], b2, torch.float32))
    assert "biases" in mlp_reason(fc1, pack_linear(w2, None, torch.float32))
    wide = pack_linear(torch.randn(64, 520), torch.randn(64), torch.float32,
                       layer_norm=(torch.ones(520), torch.zeros(520), 1e-5))
    assert "520 > 512" in mlp_reason(wide, pack_linear(torch.randn(520, 64), torch.randn(520), torch.float32))
    with pytest.raises(ValueError, match="LayerNorm folded in"):
        fused_mlp(x, plain_fc1, fc2)
    with pytest.raises(ValueError, match="x must be \\(M, 40\\)"):
        fused_mlp(x[:, :32], fc1, fc2)
    with pytest.raises(ValueError, match="different dtypes"):
        fused_mlp(x, fc1, pack_linear(w2, b2, torch.float16))
    with pytest.raises(ValueError, match="dtype torch.float64"):
        fused_mlp(x.double(), fc1, fc2)


def test_backend_runs_four_launches_per_block_with_the_switch(monkeypatch):
    """LUA_FAST_FUSED_MLP=1: the released config's forward has one ``_mlp_kernel`` per block in place
    of two ``_linear_kernel`` launches: 199 -> 163 launches at x2 (counted, not executed)."""
    from lua_fast.backends.triton_backend import TritonBackendLUA
    from lua_fast.launches import count_launches
    from lua_fast.precision import resolve
    from lua_fast.reference import LUA

    prec = resolve("bf16", None)
    torch.manual_seed(0)
    model = LUA(LUAConfig.flux()).to(DEVICE, prec.storage).eval()
    x = torch.randn(1, 16, 128, 128, device=DEVICE, dtype=prec.storage)
    monkeypatch.setenv(FM.FUSED_MLP_ENV, "1")
    backend = TritonBackendLUA(model, prec)
    assert backend.fused_mlp
    with torch.no_grad():
        launches = count_launches(backend, x, (2,), execute=False)
    assert launches.total == 163, str(launches)
    assert launches.by_name["_mlp_kernel"] == 36 and launches.by_name["_linear_kernel"] == 72
    monkeypatch.setenv(FM.FUSED_MLP_ENV, "0")  # read per forward
    assert not backend.fused_mlp
    with torch.no_grad():
        assert count_launches(backend, x, (2,), execute=False).total == 199
    monkeypatch.setenv(FM.FUSED_MLP_ENV, "1")
    assert not TritonBackendLUA(model, prec, fused_gemms=False).fused_mlp  # (cuBLAS path: no fused GEMMs)
    fp32 = resolve("fp32", None)  # fp32 operands would spill next to the accumulator: two launches stay
    assert not TritonBackendLUA(LUA(LUAConfig.flux()).eval(), fp32, fused_gemms=True).fused_mlp
