"""Fused Triton window attention vs the PyTorch oracle vs the reference model's attention.

On CPU the kernel runs under TRITON_INTERPRET=1 (set in conftest), on small shapes.
"""

import pytest
import torch

from lua_fast.kernels import triton_support
from conftest import rel_err

if triton_support.unavailable_reason(torch.device("cuda" if torch.cuda.is_available() else "cpu")):
    pytest.skip(
        triton_support.unavailable_reason(torch.device("cuda" if torch.cuda.is_available() else "cpu")),
        allow_module_level=True,
    )

from lua_fast.kernels import window_attention as WA  # noqa: E402
from lua_fast.reference.model import SwinBlock  # noqa: E402
from lua_fast import LUAConfig  # noqa: E402

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def make_inputs(batch, height, width, heads, head_dim, window, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    dim = heads * head_dim
    qkv = torch.randn(batch, height * width, 3 * dim, generator=gen)
    table = 2.0 * torch.randn((2 * window - 1) ** 2, heads, generator=gen)
    return qkv.to(DEVICE, dtype), table.to(DEVICE)


def check_parity(qkv, height, width, heads, window, shift, table):
    kwargs = dict(heads=heads, window=window, shift=shift, bias_table=table)
    before = qkv.clone()
    out = WA.window_attention(qkv, height, width, **kwargs)
    assert torch.equal(qkv, before)  # packing copies: the caller's qkv is untouched
    ref32 = WA.torch_window_attention(qkv.float(), height, width, **kwargs)
    assert out.shape == ref32.shape and out.dtype == qkv.dtype
    if qkv.dtype == torch.float32:
        assert rel_err(out, ref32) <= 1e-5
    else:  # no worse than about twice the same-dtype eager error against the fp32 reference
        eager = WA.torch_window_attention(qkv, height, width, **kwargs)
        assert rel_err(out, ref32) <= 2 * rel_err(eager, ref32) + 1e-4
    return out


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("head_dim", [30, 32])
@pytest.mark.parametrize("window,grid", [(8, (16, 24)), (8, (16, 16)), (16, (16, 32)), (16, (32, 16))],
                         ids=["w8-16x24", "w8-16x16", "w16-16x32", "w16-32x16"])
def test_kernel_matches_oracle(dtype, head_dim, window, grid):
    height, width = grid
    heads = 2 if window == 8 else 1  # window 16 is 4x the interpreter work per head
    qkv, table = make_inputs(2, height, width, heads, head_dim, window, dtype, seed=head_dim + window)
    for shift in (0, window // 2):
        check_parity(qkv, height, width, heads, window, shift, table)


@pytest.mark.skipif(not triton_support.INTERPRET, reason="the interpreter's variant choice (a GPU autotunes it)")
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("head_dim,heads,window,grid", [(30, 2, 8, (16, 24)), (32, 1, 16, (32, 16)),
                                                        (24, 2, 6, (12, 18)), (16, 3, 4, (8, 12))],
                         ids=["w8", "w16", "w6-36-keys", "w4"])
@pytest.mark.parametrize("bias_from", ["dense", "table"])
def test_whole_window_variant(monkeypatch, dtype, head_dim, heads, window, grid, bias_from):
    """One program per (window, head), keys held for all query blocks, one-pass softmax, the bias
    read densely or gathered from its table: the same answer as the oracle, for key counts that are
    (64, 256) and are not (36 -> 64, 16) powers of two, query blocks that do not divide them,
    shifted (border windows masked) and not."""
    if bias_from == "table" and dtype != torch.bfloat16:
        pytest.skip("the table gather is index math, not dtype math: bf16 (the production dtype) covers it")
    monkeypatch.setattr(WA, "INTERPRET_WHOLE", 1)
    monkeypatch.setattr(WA, "INTERPRET_BIAS_TABLE", int(bias_from == "table"))
    height, width = grid
    qkv, table = make_inputs(2, height, width, heads, head_dim, window, dtype, seed=window + head_dim)
    for shift in (0, window // 2):
        check_parity(qkv, height, width, heads, window, shift, table)
    pad = WA.head_pad(head_dim)  # every output row written once (the interpreter's block is min(64, keys))
    out = torch.full((2, height * width, heads * pad), float("nan"), device=DEVICE)
    bias = WA.dense_log2_bias(table, window, torch.float32)
    WA._launch(WA.pack_activations(qkv.float(), heads), bias, height, width, heads, window, window // 2, out=out,
               table=WA.log2_bias_table(table, torch.float32))
    assert not torch.isnan(out).any()


@pytest.mark.parametrize("head_dim,heads,window", [(16, 3, 4), (20, 1, 8), (64, 1, 8), (24, 2, 6)])
def test_other_head_dims_windows_and_head_counts(head_dim, heads, window):
    height, width = 2 * window, 3 * window
    qkv, table = make_inputs(1, height, width, heads, head_dim, window, torch.float32, seed=head_dim)
    for shift in (0, window // 2):
        check_parity(qkv, height, width, heads, window, shift, table)


def test_exact_mask_value_with_large_logits():
    """Logits spanning hundreds make the spec's -100 (not -inf, not another constant) observable."""
    height, width, window, heads = 16, 24, 8, 2
    qkv, table = make_inputs(1, height, width, heads, 30, window, torch.float32, seed=9)
    check_parity(qkv, height, width, heads, window, 4, 30.0 * table)


def test_dense_bias_layout_matches_table_gather():
    height, width, window, heads = 16, 16, 8, 2
    qkv, table = make_inputs(1, height, width, heads, 30, window, torch.float32, seed=3)
    from lua_fast.reference import windows

    n = window * window
    index = windows.relative_position_index(window, DEVICE).view(-1)
    dense = table[index].view(n, n, heads).permute(2, 0, 1)
    for dtype in (torch.float32, torch.float16):  # the kernels' two bias layouts hold the same rounded values
        log2_table = WA.log2_bias_table(table, dtype)
        assert torch.equal(WA.dense_log2_bias(table, window, dtype), log2_table[:, index].view(heads, n, n))
    for shift in (0, 4):
        a = WA.window_attention(qkv, height, width, heads=heads, window=window, shift=shift, bias_table=table)
        b = WA.window_attention(qkv, height, width, heads=heads, window=window, shift=shift, bias_table=table,
                                dense_bias=dense)
        assert rel_err(a, b) <= 1e-6


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_fused_block_matches_reference_swin_block(dtype):
    """A Swin block whose attention core is the kernel equals the reference block."""
    config = LUAConfig(in_channels=4, out_channels=4, embed_dim=60, depths=(2,), num_heads=(2,), window_size=8,
                       head_width=16, img_size=16)
    torch.manual_seed(1)
    height, width, batch = 16, 24, 2
    for j in (0, 1):  # unshifted and shifted block
        block = SwinBlock(config, 2, j).to(DEVICE)
        with torch.no_grad():
            block.attn.relative_position_bias_table.normal_(0, 1.0)
            t = torch.randn(batch, height * width, 60, device=DEVICE)
            ref32 = block(t, height, width)

            def fused(blk, x):
                qkv = blk.attn.qkv(blk.norm1(x))
                core = WA.window_attention(qkv, height, width, heads=2, window=8, shift=blk.shift,
                                           bias_table=blk.attn.relative_position_bias_table)
                x = x + blk.attn.proj(core)
                return x + blk.mlp(blk.norm2(x))

            low = block.to(dtype)
            out = fused(low, t.to(dtype))
            if dtype == torch.float32:
                assert rel_err(out, ref32) <= 1e-5
            else:
                eager = low(t.to(dtype), height, width)
                assert rel_err(out, ref32) <= 2 * rel_err(eager, ref32) + 1e-4


def test_poisoned_output_is_fully_written():
    height, width, window, heads, head_dim = 16, 24, 8, 2, 30
    qkv, table = make_inputs(2, height, width, heads, head_dim, window, torch.float32, seed=4)
    pad = WA.head_pad(head_dim)
    w = torch.randn(3 * heads * head_dim, heads * head_dim, device=DEVICE)
    x = torch.randn(2, height * width, heads * head_dim, device=DEVICE)
    packed_w, packed_b = WA.pack_qkv(w, torch.zeros(3 * heads * head_dim, device=DEVICE), heads)
    bias = WA.dense_log2_bias(table, window, torch.float32)
    out = torch.full((2, height * width, heads * pad), float("nan"), device=DEVICE)
    WA._launch(x @ packed_w.T + packed_b, bias, height, width, heads, window, 4, out=out)  # masked + unmasked
    assert not torch.isnan(out).any()
    assert out.view(2, -1, heads, pad)[..., head_dim:].abs().max() == 0  # the padding is zeros
    ref = WA.torch_window_attention(x @ w.T, height, width, heads=heads, window=window, shift=4, bias_table=table)
    assert rel_err(out.view(2, -1, heads, pad)[..., :head_dim].reshape(ref.shape), ref) <= 1e-5


def test_shift_mask_really_matters():
    height, width, window, heads = 24, 24, 8, 2
    qkv, table = make_inputs(1, height, width, heads, 32, window, torch.float32, seed=5)
    kwargs = dict(heads=heads, window=window, shift=4, bias_table=table)
    masked = WA.window_attention(qkv, height, width, **kwargs)
    unmasked = WA.window_attention(qkv, height, width, **kwargs, _use_mask=False)
    assert rel_err(unmasked, masked) > 1e-2
    # Rolled window (0, 0) holds pixels [4, 12) x [4, 12), all in region 0: the mask is a no-op
    # there; the last rolled window wraps around (rows and columns 20..23 and 0..3) and mixes.
    diff = (unmasked - masked).abs().amax(-1).view(height, width)
    assert diff[4:12, 4:12].max() == 0 and diff[20:, 20:].min() > 0


def test_non_contiguous_qkv_and_token_order():
    height, width, window, heads, head_dim = 16, 16, 8, 2, 30
    qkv, table = make_inputs(2, height, width, heads, head_dim, window, torch.float32, seed=6)
    wide = torch.zeros(2, height * width, 3 * heads * head_dim + 8, device=DEVICE)
    wide[..., 4:-4] = qkv
    view = wide[..., 4:-4]  # row stride != 3D
    assert not view.is_contiguous()
    out = WA.window_attention(view, height, width, heads=heads, window=window, shift=4, bias_table=table)
    ref = WA.torch_window_attention(qkv, height, width, heads=heads, window=window, shift=4, bias_table=table)
    assert rel_err(out, ref) <= 1e-5


def test_bad_inputs(monkeypatch):
    qkv, table = make_inputs(1, 16, 16, 2, 30, 8, torch.float32)
    kw = dict(heads=2, window=8, shift=4, bias_table=table)
    with pytest.raises(ValueError, match="last dim 179 is not 3 \\* D"):
        WA.window_attention(qkv[..., :-1], 16, 16, **kw)
    with pytest.raises(ValueError, match="multiples of the window"):
        WA.window_attention(qkv[:, :12 * 16], 12, 16, **kw)
    with pytest.raises(ValueError, match="qkv has 256 tokens but H\\*W = 512"):
        WA.window_attention(qkv, 16, 32, **kw)
    with pytest.raises(ValueError, match="shift must be in"):
        WA.window_attention(qkv, 16, 16, heads=2, window=8, shift=8, bias_table=table)
    with pytest.raises(ValueError, match="bias_table must be"):
        WA.window_attention(qkv, 16, 16, heads=2, window=8, shift=4, bias_table=table[:, :1])
    big, big_table = make_inputs(1, 8, 8, 1, 80, 8, torch.float32)
    with pytest.raises(ValueError, match="head_dim 80 > 64"):
        WA.window_attention(big, 8, 8, heads=1, window=8, shift=0, bias_table=big_table)
    with pytest.raises(ValueError, match="qkv must be \\(B, H\\*W, 3D\\)"):
        WA.window_attention(qkv[0], 16, 16, **kw)
    packed, dense = WA.pack_activations(qkv, 2), WA.dense_log2_bias(table, 8, torch.float32)
    good = WA.log2_bias_table(table, torch.float32)
    WA.check_packed(packed, dense, 16, 16, 2, 8, 4, good)
    for bad in (good[:, :-1], good.t().contiguous().t(), good.half()):  # shape, layout, dtype
        with pytest.raises(ValueError, match="table must be a contiguous \\(heads, \\(2\\*window-1\\)\\^2\\)"):
            WA.check_packed(packed, dense, 16, 16, 2, 8, 4, bad)
    monkeypatch.setattr(triton_support, "INTERPRET", False)
    if DEVICE.type == "cpu":
        with pytest.raises(RuntimeError, match="Triton kernels need CUDA tensors"):
            WA.window_attention(qkv, 16, 16, **kw)


def test_torch_compile_block_without_graph_breaks():
    height, width, window, heads = 16, 16, 8, 2
    qkv, table = make_inputs(1, height, width, heads, 30, window, torch.float32, seed=7)
    proj = torch.nn.Linear(60, 60).to(DEVICE)

    def core(x):
        a = WA.window_attention(x * 1.0, height, width, heads=heads, window=window, shift=4, bias_table=table)
        return proj(a) + 1.0

    torch._dynamo.reset()
    compiled = torch.compile(core, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        assert rel_err(compiled(qkv), core(qkv)) <= 1e-6
