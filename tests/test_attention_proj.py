"""Attention + output projection + residual in one launch (``attention_proj``) against the two-launch
composition (window attention, then the projection GEMM with its residual epilogue): dtypes, the fp32
residual stream ("mixed"), shifted and unshifted windows, windows whose token count is not a
multiple of the query block (6x6 = 36), batch > 1, both attention paths (online softmax over key
blocks, all keys at once), one or two accumulator tiles, refusals, and the triton backend with it.

Kernels run through Triton's interpreter on CPU (conftest), on small shapes."""

import pytest
import torch

from lua_fast import LUAConfig
from lua_fast.kernels import triton_support
from conftest import rel_err

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
if triton_support.unavailable_reason(DEVICE):
    pytest.skip(triton_support.unavailable_reason(DEVICE), allow_module_level=True)

from lua_fast.kernels import attention_proj as AP  # noqa: E402
from lua_fast.kernels import window_attention as WA  # noqa: E402
from lua_fast.kernels.fused_linear import pack_linear, torch_fused_linear  # noqa: E402

LOW = [torch.bfloat16, torch.float16]
GEOMETRIES = {  # batch, H, W, heads, head_dim, window, shift
    "4-shifted-b2": (2, 8, 12, 2, 6, 4, 2),  # D = 12: one accumulator tile of 16 (4 columns masked)
    "8-unshifted": (1, 16, 16, 3, 10, 8, 0),  # D = 30: 16 + 16
    "6-shifted": (1, 12, 12, 2, 20, 6, 3),  # N = 36: partial query and key blocks; D = 40: 32 + 16
}


def case(geometry, dtype, seed, residual_dtype=None):
    b, h, w, heads, head_dim, window, shift = GEOMETRIES[geometry]
    gen = torch.Generator().manual_seed(seed)
    d = heads * head_dim
    qkv = torch.randn(b, h * w, 3 * d, generator=gen).to(DEVICE, dtype)
    table = (2 * torch.randn((2 * window - 1) ** 2, heads, generator=gen)).to(DEVICE)
    pw = (torch.randn(d, d, generator=gen) / d**0.5).to(DEVICE, dtype)
    pb = torch.randn(d, generator=gen).to(DEVICE, dtype)
    r = (3 * torch.randn(b * h * w, d, generator=gen) + 5).to(DEVICE, residual_dtype or dtype)
    geo = dict(heads=heads, window=window, shift=shift)
    packed = (WA.pack_activations(qkv, heads), WA.dense_log2_bias(table, window, WA.bias_dtype(dtype)).to(DEVICE),
              pack_linear(WA.pack_proj(pw, heads), pb, dtype))
    return qkv, table, pw, pb, r, (h, w), geo, packed


def references(qkv, table, pw, pb, r, size, geo):
    """(fp32 composition, same-dtype eager composition)."""
    d = pw.shape[0]
    a32 = WA.torch_window_attention(qkv.float(), *size, bias_table=table, **geo)
    ref32 = torch_fused_linear(a32.reshape(-1, d), pw.float(), pb.float(), residual=r.float())
    a = WA.torch_window_attention(qkv, *size, bias_table=table, **geo)
    eager = torch_fused_linear(a.reshape(-1, d), pw, pb, residual=r)
    return ref32, eager


def check(out, r, ref32, eager, exact=None):
    """exact (default: fp32 output): fp32 GEMMs, <= 1e-5; else within 2x the eager error."""
    assert torch.isfinite(out).all()
    if out.dtype == torch.float32 if exact is None else exact:
        assert rel_err(out, ref32) <= 1e-5
        assert rel_err(out - r.float(), ref32 - r.float()) <= 1e-5  # the attention's own contribution
    else:
        assert rel_err(out, ref32) <= 2 * rel_err(eager, ref32) + 1e-4, (rel_err(out, ref32), rel_err(eager, ref32))
        own, own_eager = rel_err(out.float() - r.float(), ref32 - r.float()), \
            rel_err(eager.float() - r.float(), ref32 - r.float())
        assert own <= 2 * own_eager + 1e-3, (own, own_eager)


@pytest.mark.parametrize("all_keys", [0, 1], ids=["key-blocks", "all-keys"])
@pytest.mark.parametrize("dtype", [torch.float32] + LOW, ids=str)
@pytest.mark.parametrize("geometry", list(GEOMETRIES))
def test_attention_proj_matches_the_composition(monkeypatch, geometry, dtype, all_keys):
    if triton_support.INTERPRET:
        monkeypatch.setattr(AP, "INTERPRET_CONFIG", dict(AP.INTERPRET_CONFIG, ALL_KEYS=all_keys))
    elif all_keys:
        pytest.skip("the autotuner picks the path on a GPU (test_autotune_configs runs each)")
    qkv, table, pw, pb, r, size, geo, (pq, bias, proj) = case(geometry, dtype, seed=len(geometry) + all_keys)
    out = AP.attention_proj(pq, bias, proj, r, *size, **geo)
    assert out.shape == r.shape and out.dtype == r.dtype
    check(out, r, *references(qkv, table, pw, pb, r, size, geo))


@pytest.mark.skipif(not triton_support.INTERPRET, reason="the interpreter's tiles (a GPU autotunes them)")
@pytest.mark.parametrize("block_m,block_n", [(16, 16), (64, 16)])
def test_any_query_and_key_block(monkeypatch, block_m, block_n):
    """Query blocks of 16 (3 per 6x6 window, the last partial) or 64 (one, mostly padding), key
    blocks of 16."""
    monkeypatch.setattr(AP, "INTERPRET_CONFIG", dict(AP.INTERPRET_CONFIG, BLOCK_M=block_m, BLOCK_N=block_n))
    qkv, table, pw, pb, r, size, geo, (pq, bias, proj) = case("6-shifted", torch.float32, seed=block_m)
    check(AP.attention_proj(pq, bias, proj, r, *size, **geo), r, *references(qkv, table, pw, pb, r, size, geo))


@pytest.mark.parametrize("dtype", LOW, ids=str)
def test_fp32_residual_stream_into_a_low_precision_projection(dtype):
    """"mixed": the residual stream and the output are fp32; attention and projection in ``dtype``."""
    qkv, table, pw, pb, r, size, geo, (pq, bias, proj) = case("4-shifted-b2", dtype, seed=9,
                                                              residual_dtype=torch.float32)
    out = AP.attention_proj(pq, bias, proj, r, *size, **geo)
    assert out.dtype == torch.float32
    check(out, r, *references(qkv, table, pw, pb, r, size, geo), exact=False)


def test_refused_arguments_say_why():
    qkv, table, pw, pb, r, size, geo, (pq, bias, proj) = case("8-unshifted", torch.float32, seed=1)
    assert AP.attention_proj_reason(proj, 3, 16) is None
    assert "input width" in AP.attention_proj_reason(proj, 3, 32)
    assert "LayerNorm" in AP.attention_proj_reason(
        pack_linear(WA.pack_proj(pw, 3), pb, torch.float32, layer_norm=(torch.ones(48), torch.zeros(48), 1e-5)), 3, 16)
    assert "bias" in AP.attention_proj_reason(pack_linear(WA.pack_proj(pw, 3), None, torch.float32), 3, 16)
    wide = pack_linear(torch.randn(520, 48), torch.randn(520), torch.float32)
    assert "520 > 512" in AP.attention_proj_reason(wide, 3, 16)
    with pytest.raises(ValueError, match="residual must be"):
        AP.attention_proj(pq, bias, proj, r[:, :20], *size, **geo)
    with pytest.raises(ValueError, match="share the GEMM dtype"):
        AP.attention_proj(pq.half(), bias, proj, r, *size, **geo)
    with pytest.raises(ValueError, match="bias must be"):
        AP.attention_proj(pq, bias[:2], proj, r, *size, **geo)


@pytest.mark.parametrize("mlp,attn,expected", [(0, 1, 163), (1, 1, 127)])
def test_backend_launches_with_the_switches(monkeypatch, mlp, attn, expected):
    """x2 forward of the released config, counted (not executed): 5 launches per block by default,
    one fewer with each switch (199 -> 163 -> 127)."""
    from lua_fast.backends.triton_backend import TritonBackendLUA
    from lua_fast.launches import count_launches
    from lua_fast.precision import resolve
    from lua_fast.reference import LUA

    prec = resolve("bf16", None)
    torch.manual_seed(0)
    backend = TritonBackendLUA(LUA(LUAConfig.flux()).to(DEVICE, prec.storage).eval(), prec)
    monkeypatch.setenv("LUA_FAST_FUSED_MLP", str(mlp))
    monkeypatch.setenv(AP.FUSED_ATTN_PROJ_ENV, str(attn))
    assert backend.fused_attn_proj and backend.fused_mlp == bool(mlp)
    x = torch.randn(1, 16, 128, 128, device=DEVICE, dtype=prec.storage)
    with torch.no_grad():
        launches = count_launches(backend, x, (2,), execute=False)
    assert launches.total == expected, str(launches)
    assert launches.by_name["_attention_proj_kernel"] == 36 and "_window_attention_kernel" not in launches.by_name
