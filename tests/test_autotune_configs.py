"""Every autotune config of every tuned kernel computes the right answer, not only the one a test
run happens to use.

The other kernel tests see one config per kernel: the interpreter's fixed tiles on the CPU, the
first config on a GPU (``LUA_FAST_AUTOTUNE=0``). Production runs whatever the autotuner picks,
so each config its prune hook keeps for a released-shape launch runs here once, on a poisoned
output, against the PyTorch composition. On the CPU (interpreter) configs that differ only in
warps or pipeline depth are the same computation and run once.
"""

import os
from unittest import mock

import pytest
import torch

from lua_fast.kernels import triton_support
from conftest import GPU_SHAPES, rel_err

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
if triton_support.unavailable_reason(DEVICE):
    pytest.skip(triton_support.unavailable_reason(DEVICE), allow_module_level=True)

from lua_fast.kernels import conv3x3 as CV  # noqa: E402
from lua_fast.kernels import attention_proj as AP  # noqa: E402
from lua_fast.kernels import fused_linear as FL  # noqa: E402
from lua_fast.kernels import fused_mlp as FM  # noqa: E402
from lua_fast.kernels import window_attention as WA  # noqa: E402

# bf16 is the production dtype; the interpreter's bf16 dots upcast, which its prune hooks treat
# as a different kernel (no register-resident rows), so the CPU checks fp16 operands instead.
LOW = torch.bfloat16 if GPU_SHAPES else torch.float16


class OneConfig:
    """Stands in for a kernel's autotuner: launches the kernel with the ``index``-th config the
    tuner's prune hook keeps for this launch (with tuning on, so all that apply)."""

    def __init__(self, tuner, index: int):
        self.tuner, self.index, self.used = tuner, index, None

    def kept(self, args, meta) -> list:
        named = dict(zip(self.tuner.fn.arg_names, args))
        with mock.patch.dict(os.environ, {triton_support.AUTOTUNE_ENV: "1"}):
            configs = self.tuner.early_config_prune(self.tuner.configs, named, **meta)
        if triton_support.INTERPRET:  # warps and stages do not exist in the interpreter
            configs = list({repr(sorted(c.kwargs.items())): c for c in configs}.values())
            # The convs' taps-inner loop is the same code at every tile (and the interpreter's
            # default, so every interpreted forward runs it): one taps-inner tile here is enough.
            inner = [c for c in configs if c.kwargs.get("TAP_INNER")]
            configs = [c for c in configs if c not in inner[1:]]
        return configs

    def __getitem__(self, grid):
        def run(*args, **meta):
            configs = self.kept(args, meta)
            if self.index >= len(configs):
                pytest.skip(f"the prune hook keeps {len(configs)} configs for this launch")
            self.used = config = configs[self.index]
            launch_grid = grid({**meta, **config.kwargs}) if callable(grid) else grid
            options = {} if triton_support.INTERPRET else {"num_warps": config.num_warps,
                                                           "num_stages": config.num_stages}
            self.tuner.fn[launch_grid](*args, **meta, **config.kwargs, **options)

        return run


@pytest.fixture
def one_config(monkeypatch):
    """``one_config(module, tuner_attr, index)``: that module's launches use config ``index``."""

    def force(module, attr, index):
        stand_in = OneConfig(getattr(module, attr), index)
        monkeypatch.setattr(module, attr, stand_in)
        monkeypatch.setattr(module, "INTERPRET", False)  # take the tuned launch path
        return stand_in

    return force


def poison_allocator() -> None:
    """Fill then free a block, so the caching allocator likely hands NaNs to the next outputs
    (on the GPU; the CPU allocator gives no such promise): a tile a config skips stays NaN."""
    torch.full((1 << 23,), float("nan"), device=DEVICE)


def indices(tuner) -> list[int]:
    return list(range(len(tuner.configs)))


def check(out, ref32, eager):
    assert torch.isfinite(out).all()
    if out.dtype == torch.float32:
        assert rel_err(out, ref32) <= 1e-5
    else:
        assert rel_err(out, ref32) <= 2 * rel_err(eager, ref32) + 1e-4, (rel_err(out, ref32), rel_err(eager, ref32))


# --------------------------------------------------------------------- GEMMs with glue
LINEAR_CASES = {  # released widths: K = 360 into qkv (LN), fc1 (LN + GELU), fc2 and proj (+ residual)
    "ln-qkv": dict(k=360, n=1152, ln=True, gelu=False, residual=False),
    "ln-fc1-gelu": dict(k=360, n=720, ln=True, gelu=True, residual=False),
    "fc2-residual": dict(k=720, n=360, ln=False, gelu=False, residual=True),
}


@pytest.mark.parametrize("index", indices(FL._linear_tuned) if hasattr(FL, "_linear_tuned") else [0])
@pytest.mark.parametrize("case", list(LINEAR_CASES))
def test_every_fused_linear_config(one_config, case, index):
    c = LINEAR_CASES[case]
    m = 208 if GPU_SHAPES else 80  # a partial last row block either way
    n = c["n"] if GPU_SHAPES else min(c["n"], 384)  # (the interpreter: fewer N tiles)
    gen = torch.Generator().manual_seed(index)
    x = (torch.randn(m, c["k"], generator=gen) * 3 + (20.0 if c["ln"] else 0.0)).to(DEVICE)
    w = (torch.randn(n, c["k"], generator=gen) / c["k"] ** 0.5).to(DEVICE, LOW)
    b = torch.randn(n, generator=gen).to(DEVICE, LOW)
    r = torch.randn(m, n, generator=gen).to(DEVICE, LOW) if c["residual"] else None
    ln = (1 + 0.3 * torch.randn(c["k"], generator=gen), 0.3 * torch.randn(c["k"], generator=gen), 1e-5) \
        if c["ln"] else None
    ln = tuple(v.to(DEVICE) if torch.is_tensor(v) else v for v in ln) if ln else None
    stand_in = one_config(FL, "_linear_tuned", index)
    poison_allocator()
    out = FL.fused_linear(x.to(LOW), FL.pack_linear(w, b, LOW, layer_norm=ln), gelu=c["gelu"], residual=r)
    assert stand_in.used is not None
    kw = dict(layer_norm=ln, gelu=c["gelu"])
    ref32 = FL.torch_fused_linear(x.to(LOW).float(), w.float(), b.float(),
                                  residual=None if r is None else r.float(), **kw)
    check(out, ref32, FL.torch_fused_linear(x.to(LOW), w, b, residual=r, **kw))


@pytest.mark.parametrize("index", indices(FM._mlp_tuned) if hasattr(FM, "_mlp_tuned") else [0])
def test_every_fused_mlp_config(one_config, index):
    """The released widths (D = 360 -> 720 -> 360: fc2 in tiles of 256 + 128 columns, 24 masked),
    a partial last row block."""
    m, d, hidden = (208 if GPU_SHAPES else 80), 360, 720
    gen = torch.Generator().manual_seed(index)
    x = (torch.randn(m, d, generator=gen) * 3 + 20.0).to(DEVICE, LOW)
    w1, b1 = (torch.randn(hidden, d, generator=gen) / d**0.5).to(DEVICE, LOW), torch.randn(hidden, generator=gen)
    w2, b2 = (torch.randn(d, hidden, generator=gen) / hidden**0.5).to(DEVICE, LOW), torch.randn(d, generator=gen)
    b1, b2 = b1.to(DEVICE, LOW), b2.to(DEVICE, LOW)
    ln = tuple(v.to(DEVICE) for v in (1 + 0.3 * torch.randn(d, generator=gen), 0.3 * torch.randn(d, generator=gen)))
    ln = (*ln, 1e-5)
    stand_in = one_config(FM, "_mlp_tuned", index)
    poison_allocator()
    out = FM.fused_mlp(x, FL.pack_linear(w1, b1, LOW, layer_norm=ln), FL.pack_linear(w2, b2, LOW))
    assert stand_in.used is not None
    up = [v.float() for v in (w1, b1, w2, b2)]
    check(out, FM.torch_fused_mlp(x.float(), *up, layer_norm=ln), FM.torch_fused_mlp(x, w1, b1, w2, b2, layer_norm=ln))


# --------------------------------------------------------------------- window attention
@pytest.mark.parametrize("index", indices(WA._window_attention_tuned) if hasattr(WA, "_window_attention_tuned")
                         else [0])
@pytest.mark.parametrize("shift", [0, 8])
def test_every_window_attention_config(one_config, shift, index):
    """Window 16 (256 tokens, the released size), head width 30 padded to 32, a border of windows
    that the shift masks."""
    heads, head_dim, window = 2, 30, 16
    batch, height, width = (2, 32, 48) if GPU_SHAPES else (1, 32, 32)  # (2x2 windows: 3 masked)
    gen = torch.Generator().manual_seed(index + shift)
    qkv = torch.randn(batch, height * width, 3 * heads * head_dim, generator=gen).to(DEVICE, LOW)
    table = (2.0 * torch.randn((2 * window - 1) ** 2, heads, generator=gen)).to(DEVICE)
    stand_in = one_config(WA, "_window_attention_tuned", index)
    poison_allocator()
    kw = dict(heads=heads, window=window, shift=shift, bias_table=table)
    out = WA.window_attention(qkv, height, width, **kw)
    assert stand_in.used is not None
    check(out, WA.torch_window_attention(qkv.float(), height, width, **kw),
          WA.torch_window_attention(qkv, height, width, **kw))


@pytest.mark.parametrize("index", indices(AP._attention_proj_tuned) if hasattr(AP, "_attention_proj_tuned")
                         else [0])
@pytest.mark.parametrize("shift", [0, 8])
def test_every_attention_proj_config(one_config, shift, index):
    """The released widths: window 16, 12 heads of 30 (packed 32), D = 360 (accumulator tiles of
    256 + 128); the shifted case's windows all on the border (masked) on the CPU, some not on a GPU."""
    heads, head_dim, window = 12, 30, 16
    batch, height, width = (2, 32, 48) if GPU_SHAPES else (1, 16, 32)
    d = heads * head_dim
    gen = torch.Generator().manual_seed(index + shift)
    qkv = torch.randn(batch, height * width, 3 * d, generator=gen).to(DEVICE, LOW)
    table = (2.0 * torch.randn((2 * window - 1) ** 2, heads, generator=gen)).to(DEVICE)
    pw, pb = (torch.randn(d, d, generator=gen) / d**0.5).to(DEVICE, LOW), torch.randn(d, generator=gen).to(DEVICE, LOW)
    r = torch.randn(batch * height * width, d, generator=gen).to(DEVICE, LOW)
    stand_in = one_config(AP, "_attention_proj_tuned", index)
    poison_allocator()
    geo = dict(heads=heads, window=window, shift=shift)
    out = AP.attention_proj(WA.pack_activations(qkv, heads), WA.dense_log2_bias(table, window, WA.bias_dtype(LOW)),
                            FL.pack_linear(WA.pack_proj(pw, heads), pb, LOW), r, height, width, **geo)
    assert stand_in.used is not None
    a32 = WA.torch_window_attention(qkv.float(), height, width, bias_table=table, **geo).reshape(-1, d)
    a = WA.torch_window_attention(qkv, height, width, bias_table=table, **geo).reshape(-1, d)
    check(out, FL.torch_fused_linear(a32, pw.float(), pb.float(), residual=r.float()),
          FL.torch_fused_linear(a, pw, pb, residual=r))


# --------------------------------------------------------------------- 3x3 convs
CONV_CASES = {  # (c_in, c_out, epilogue): the trunk conv, the x2 head's shuffle conv, conv_last
    "360-360-residual": (360, 360, dict(residual=True)),
    "256-1024-shuffle": (256, 1024, dict(pixel_shuffle=True)),
    "256-16": (256, 16, dict()),
}


@pytest.mark.parametrize("index", indices(CV._conv3x3_tuned) if hasattr(CV, "_conv3x3_tuned") else [0])
@pytest.mark.parametrize("case", list(CONV_CASES))
def test_every_conv3x3_config(one_config, case, index):
    c_in, c_out, extra = CONV_CASES[case]
    c_in = c_in if GPU_SHAPES else 40  # (the interpreter: a short K loop, a partial K tile)
    b, h, w = (2, 19, 27) if GPU_SHAPES else (2, 9, 13)  # pixels not a multiple of any tile
    gen = torch.Generator().manual_seed(index)
    x = torch.randn(b, h, w, c_in, generator=gen).to(DEVICE, LOW)
    weight = (torch.randn(c_out, c_in, 3, 3, generator=gen) / (9 * c_in) ** 0.5).to(DEVICE)
    bias = torch.randn(c_out, generator=gen).to(DEVICE)
    kw = dict(extra)
    if kw.get("residual"):
        kw["residual"] = torch.randn(b, h, w, c_out, generator=gen).to(DEVICE, LOW)
    stand_in = one_config(CV, "_conv3x3_tuned", index)
    poison_allocator()
    out = CV.conv3x3(x, weight, bias, **kw)
    assert stand_in.used is not None
    up = {k: (v.float() if torch.is_tensor(v) else v) for k, v in kw.items()}
    check(out, CV.torch_conv3x3(x.float(), weight, bias, **up), CV.torch_conv3x3(x, weight, bias, **kw))


def test_tuning_is_per_size_class(one_config, monkeypatch):
    """The autotuners key on a size class (rows / pixels / tokens, by powers of two above 4096),
    so a choice tuned at one latent size is not reused at a 4x larger one."""
    from lua_fast.kernels.triton_support import size_class

    assert [size_class(n) for n in (1, 4096, 4097, 16384, 16385, 65536)] == [16, 16, 32, 64, 128, 256]
    for module, attr in ((FL, "_linear_tuned"), (CV, "_conv3x3_tuned"), (WA, "_window_attention_tuned"),
                         (FM, "_mlp_tuned"), (AP, "_attention_proj_tuned")):
        assert "size_key" in getattr(module, attr).keys, attr
    seen = []
    stand_in = one_config(FL, "_linear_tuned", 0)
    original = stand_in.kept
    monkeypatch.setattr(stand_in, "kept", lambda args, meta: seen.append(
        dict(zip(stand_in.tuner.fn.arg_names, args))["size_key"]) or original(args, meta))
    w, b = torch.randn(64, 40, device=DEVICE), torch.zeros(64, device=DEVICE)
    packed = FL.pack_linear(w, b, torch.float32)
    for m in (40, 4100):
        FL.fused_linear(torch.randn(m, 40, device=DEVICE), packed)
    assert seen == [16, 32]
