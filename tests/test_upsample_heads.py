"""Fused Triton 3x3 convs and whole pixel-shuffle heads vs the PyTorch composition and the
reference model's heads. On CPU the kernels run under TRITON_INTERPRET=1 (see conftest)."""

import pytest
import torch

from lua_fast.kernels import triton_support
from conftest import rel_err

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
if triton_support.unavailable_reason(DEVICE):
    pytest.skip(triton_support.unavailable_reason(DEVICE), allow_module_level=True)

from lua_fast.kernels.conv3x3 import _launch, conv3x3, pack_conv, torch_conv3x3  # noqa: E402
from lua_fast.kernels.upsample_head import PackedHead, fused_head, torch_fused_head  # noqa: E402
from lua_fast.reference.model import UpsampleHead  # noqa: E402

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
SMALL_TILES = {"BLOCK_M": 32, "BLOCK_N": 64, "BLOCK_K": 32}


@pytest.fixture(autouse=True)
def small_interpreter_tiles(monkeypatch):
    """Small interpreted tiles, so these small, odd shapes span several programs and K blocks (the
    model-level tests run the default large tiles; one test below runs them here too)."""
    from lua_fast.kernels import conv3x3 as C

    monkeypatch.setattr(C, "INTERPRET_CONFIG", SMALL_TILES)


def assert_parity(out, ref32, eager):
    """fp32: <= 1e-5; fp16/bf16: no worse than about twice the same-dtype eager error."""
    assert out.shape == ref32.shape
    if out.dtype == torch.float32:
        assert rel_err(out, ref32) <= 1e-5
    else:
        assert rel_err(out, ref32) <= 2 * rel_err(eager, ref32) + 1e-4


def conv_case(b, h, w, cin, cout, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(b, h, w, cin, generator=gen).to(DEVICE, dtype)
    weight = (torch.randn(cout, cin, 3, 3, generator=gen) / (9 * cin) ** 0.5).to(DEVICE)
    bias = torch.randn(cout, generator=gen).to(DEVICE)
    return x, weight, bias


VARIANTS = {
    "plain": {},
    "leaky": {"leaky_slope": 0.01},
    "residual": {"residual": True},
    "pixel_shuffle": {"pixel_shuffle": True},
}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("size", [(1, 1), (5, 17), (24, 5)], ids=str)
def test_conv_variants_match_pytorch(dtype, variant, size):
    x, weight, bias = conv_case(2, *size, 12, 20, dtype, seed=size[0] + size[1])
    kwargs = dict(VARIANTS[variant])
    if kwargs.get("residual"):
        kwargs["residual"] = torch.randn(2, *size, 20, device=DEVICE).to(dtype)
    out = conv3x3(x, weight, bias, **kwargs)
    up = {k: (v.float() if torch.is_tensor(v) else v) for k, v in kwargs.items()}
    ref32 = torch_conv3x3(x.float(), weight, bias, **up)
    assert out.dtype == dtype
    assert_parity(out, ref32, torch_conv3x3(x, weight, bias, **kwargs))


@pytest.mark.skipif(not triton_support.INTERPRET, reason="the interpreter's tiles (a GPU autotunes them)")
@pytest.mark.parametrize("tiles", [SMALL_TILES, {"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_K": 64},
                                   {**SMALL_TILES, "TAP_INNER": 0}], ids=["small", "large", "small-taps-outer"])
def test_conv_interpreted_tiles_with_partial_tiles_in_m_n_and_k(monkeypatch, tiles):
    """143 pixels, 80 input and 100 output channels: a partial last tile in M, K and N; the K loop
    with the taps inner (the interpreter's default) and outer."""
    from lua_fast.kernels import conv3x3 as C

    monkeypatch.setattr(C, "INTERPRET_CONFIG", tiles)
    x, weight, bias = conv_case(1, 11, 13, 80, 100, torch.float32, seed=5)
    out = conv3x3(x, weight, bias, leaky_slope=0.2)
    assert rel_err(out, torch_conv3x3(x, weight, bias, leaky_slope=0.2)) <= 1e-5


def test_conv_non_power_of_two_channels_and_17x24():
    x, weight, bias = conv_case(2, 17, 24, 36, 20, torch.float32, seed=1)
    out = conv3x3(x, weight, bias, leaky_slope=0.01)
    assert rel_err(out, torch_conv3x3(x, weight, bias, leaky_slope=0.01)) <= 1e-5


def test_conv_released_channel_counts():
    """360 -> 256 (conv_before), 256 -> 1024 + shuffle (upsample), 256 -> 16 (conv_last), tiny grid."""
    for cin, cout, kw in [(360, 256, {"leaky_slope": 0.01}), (256, 1024, {"pixel_shuffle": True}), (256, 16, {})]:
        x, weight, bias = conv_case(1, 2, 3, cin, cout, torch.float32, seed=cin)
        assert rel_err(conv3x3(x, weight, bias, **kw), torch_conv3x3(x, weight, bias, **kw)) <= 1e-5


def test_conv_reads_non_contiguous_and_token_layouts():
    b, h, w, c = 2, 5, 7, 12
    x, weight, bias = conv_case(b, h, w, c, 16, torch.float32, seed=2)
    want = torch_conv3x3(x, weight, bias)
    nchw = x.permute(0, 3, 1, 2).contiguous()  # channels-first storage, channels-last view below
    assert rel_err(conv3x3(nchw.permute(0, 2, 3, 1), weight, bias), want) <= 1e-5
    cl = x.permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1)
    assert rel_err(conv3x3(cl, weight, bias), want) <= 1e-5
    padded = torch.zeros(b, h, w + 3, c, device=DEVICE)
    padded[:, :, 1:-2] = x
    assert rel_err(conv3x3(padded[:, :, 1:-2], weight, bias), want) <= 1e-5  # row stride != W*C
    tokens = x.reshape(b, h * w, c)  # the trunk's (B, H*W, D) viewed as (B, H, W, D): no copy
    assert rel_err(conv3x3(tokens.view(b, h, w, c), weight, bias), want) <= 1e-5
    # channel stride H*W (an NCHW tensor permuted) is read in place too
    assert nchw.permute(0, 2, 3, 1).stride(-1) == h * w


def test_conv_fp32_output_of_low_precision_operands_with_fp32_residual():
    x, weight, bias = conv_case(2, 5, 6, 12, 16, torch.bfloat16, seed=5)
    residual = torch.randn(2, 5, 6, 16, device=DEVICE)
    out = conv3x3(x, weight, bias, residual=residual, out_dtype=torch.float32)
    assert out.dtype == torch.float32
    want = torch_conv3x3(x.float(), weight.bfloat16().float(), bias, residual=residual)  # fp32 bias
    assert rel_err(out, want) <= 1e-5


@pytest.mark.parametrize("pixel_shuffle", [False, True])
def test_poisoned_outputs_are_fully_written(pixel_shuffle):
    x, weight, bias = conv_case(2, 5, 3, 8, 16, torch.float32, seed=3)
    shape = (2, 10, 6, 4) if pixel_shuffle else (2, 5, 3, 16)
    out = torch.full(shape, float("nan"), device=DEVICE)
    packed = pack_conv(weight, bias, pixel_shuffle=pixel_shuffle)
    _launch(x, packed.weight, packed.bias, None, 16, 0.0, False, pixel_shuffle, out=out)
    assert not torch.isnan(out).any()
    assert rel_err(out, torch_conv3x3(x, weight, bias, pixel_shuffle=pixel_shuffle)) <= 1e-5


def make_head(dim, width, out_channels, scale, seed):
    torch.manual_seed(seed)
    head = UpsampleHead(dim, width, out_channels, scale).to(DEVICE).eval()
    with torch.no_grad():
        for p in head.parameters():
            p.normal_(0, 0.1)
    return head


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("scale", [2, 4])
@pytest.mark.parametrize("size", [(1, 1), (5, 17), (17, 5)], ids=str)
def test_whole_head_matches_reference_head(dtype, scale, size):
    dim, width, out_channels = 24, 16, 4
    head = make_head(dim, width, out_channels, scale, seed=scale)
    g = torch.randn(2, dim, *size, device=DEVICE)  # reference layout (B, D, H, W)
    with torch.no_grad():
        ref32 = head(g)
        features = g.permute(0, 2, 3, 1).to(dtype)  # channels-last view of the same data
        composed = torch_fused_head(g.permute(0, 2, 3, 1), head, scale)
        assert rel_err(composed, ref32) <= 1e-5
        out = fused_head(features, head, scale)
        assert out.shape == (2, out_channels, scale * size[0], scale * size[1]) and out.dtype == dtype
        eager = head.to(dtype)(g.to(dtype))  # converts the module in place: last use
        assert_parity(out, ref32, eager)


def test_head_from_tokens_packed_once_and_state_dict_weights():
    dim, width, out_channels, (h, w) = 20, 16, 16, (5, 6)
    head = make_head(dim, width, out_channels, 4, seed=7)
    tokens = torch.randn(2, h * w, dim, device=DEVICE)
    with torch.no_grad():
        ref = head(tokens.transpose(1, 2).reshape(2, dim, h, w))
        packed = PackedHead.from_weights(head)
        assert packed.scale == 4 and packed.in_channels == dim and packed.out_channels == out_channels
        assert rel_err(fused_head(tokens, packed, height=h, width=w), ref) <= 1e-5
        assert rel_err(fused_head(tokens, head.state_dict(), 4, height=h, width=w), ref) <= 1e-5


def test_bad_inputs():
    head = make_head(12, 16, 4, 2, seed=1)
    x = torch.randn(1, 4, 4, 12, device=DEVICE)
    with pytest.raises(ValueError, match="features have 8 channels but the head expects 12"):
        fused_head(torch.randn(1, 4, 4, 8, device=DEVICE), head)
    with pytest.raises(ValueError, match="upsample by 2, not 4"):
        fused_head(x, head, 4)
    with pytest.raises(ValueError, match="upsample by 2, not 3"):
        torch_fused_head(x, head, 3)
    with pytest.raises(ValueError, match="features must be"):
        fused_head(x[0, 0], head)
    with pytest.raises(ValueError, match="need height and width"):
        fused_head(x.view(1, 16, 12), head)
    weight = torch.randn(8, 12, 3, 3, device=DEVICE)
    with pytest.raises(ValueError, match="x has 12 channels but the weight expects 5"):
        conv3x3(x, weight[:, :5])
    with pytest.raises(ValueError, match="channels-last \\(B, H, W, Cin\\)"):
        conv3x3(x[0], weight)
    with pytest.raises(ValueError, match="Cout divisible by 4"):
        conv3x3(x, weight[:6], pixel_shuffle=True)
    with pytest.raises(ValueError, match="residual must match"):
        conv3x3(x, weight, residual=torch.randn(1, 4, 4, 7, device=DEVICE))
    with pytest.raises(ValueError, match="empty input"):
        conv3x3(x[:0], weight)


def test_torch_compile_head_without_graph_breaks():
    head = make_head(12, 16, 4, 4, seed=2)
    packed = PackedHead.from_weights(head)
    x = torch.randn(1, 3, 5, 12, device=DEVICE)
    torch._dynamo.reset()
    compiled = torch.compile(lambda f: fused_head(f * 1.0, packed) + 1.0, fullgraph=True, backend="aot_eager")
    assert rel_err(compiled(x), fused_head(x, packed) + 1.0) <= 1e-6


def test_padded_chaining_passes_the_bordered_buffer():
    """``out_padded=True`` returns the zero-bordered buffer and ``padded_input=True`` takes it whole:
    the op reads nothing outside its inputs (before 2026-11-28 both used the interior view and the
    kernel read the border around it; torch.library.opcheck failed on such calls)."""
    x, weight, bias = conv_case(1, 6, 5, 8, 16, torch.float32, seed=5)
    with pytest.raises(ValueError, match=r"padded_input=True takes a bordered \(B, H\+2, W\+2, Cin\)"):
        conv3x3(x[:, :2], weight, bias, padded_input=True)
    full = conv3x3(x, weight, bias, out_padded=True)
    assert full.shape == (1, 8, 7, 16)
    assert full[:, 0].abs().max() == 0 and full[:, -1].abs().max() == 0 and full[:, :, 0].abs().max() == 0
    assert full[:, :, -1].abs().max() == 0
    assert rel_err(full[:, 1:-1, 1:-1], torch_conv3x3(x, weight, bias)) <= 1e-5
    w2 = torch.randn(8, 16, 3, 3, device=DEVICE) / 12
    want = torch_conv3x3(full[:, 1:-1, 1:-1].contiguous(), w2)
    assert rel_err(conv3x3(full, w2, padded_input=True), want) <= 1e-5  # halo read from the border
    # the bordered input may be a copy (as opcheck and tracers make): nothing outside it is read
    assert rel_err(conv3x3(full.clone(), w2, padded_input=True), want) <= 1e-5

