"""Window partition / merge / mask: native CPU, native CUDA (when present) and the PyTorch
fallback, each against the reference composition (torch.roll + view/permute + the spec's
python-level mask labelling), exactly."""

import pytest
import torch

from lua_fast import native
from lua_fast.ops import window_ops as W
from slow_lua import _labels

NATIVE = native.status()
IMPLS = ["fallback", "native-cpu", "native-cuda"]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
GRIDS = [(16, 16), (16, 48), (32, 16)]  # square and non-square (both H > W and H < W)


def impl_device(impl):
    """(partition, merge, mask, device) for an implementation, or skip with the reason."""
    if impl == "fallback":
        return W.torch_window_partition, W.torch_window_merge, W.torch_window_mask, torch.device("cpu")
    device = torch.device("cuda" if impl == "native-cuda" else "cpu")
    if impl == "native-cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    reason = native.unavailable_reason(device)
    if reason:
        pytest.skip(reason)
    ops = torch.ops.lua_fast

    def mask(h, w, ws, shift, *, dtype, device):
        return ops.window_mask(h, w, ws, shift, dtype, device)

    return ops.window_partition, ops.window_merge, mask, device


def reference_partition(x, ws, shift):
    b, h, w, c = x.shape
    x = torch.roll(x, (-shift, -shift), (1, 2))
    return x.view(b, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, ws * ws, c)


def reference_labels(h, w, ws, shift):
    lab = _labels(h, w, ws, shift)  # rolled frame: partitioned as is
    return lab.view(h // ws, ws, w // ws, ws).permute(0, 2, 1, 3).reshape(-1, ws * ws)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("ws", [8, 16])
@pytest.mark.parametrize("grid", GRIDS, ids=str)
@pytest.mark.parametrize("channels", [1, 3, 36, 360])
def test_partition_and_merge_equal_the_reference_composition(impl, dtype, ws, grid, channels):
    partition, merge, _, device = impl_device(impl)
    h, w = grid
    x = torch.randn(2, h, w, channels).to(device=device, dtype=dtype)
    for shift in (0, ws // 2):
        got = partition(x, ws, shift)
        want = reference_partition(x.cpu(), ws, shift)
        assert got.shape == want.shape and got.dtype == dtype and got.device == x.device
        assert torch.equal(got.cpu(), want)
        back = merge(got, 2, h, w, ws, shift)  # H != W exercises the merge index
        assert back.shape == x.shape and torch.equal(back, x)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", DTYPES + [torch.float64], ids=str)
@pytest.mark.parametrize("ws", [8, 16])
@pytest.mark.parametrize("grid", GRIDS, ids=str)
def test_mask_and_labels_equal_the_spec(impl, dtype, ws, grid):
    _, _, mask_fn, device = impl_device(impl)
    h, w = grid
    for shift in (0, ws // 2):
        mask, labels = mask_fn(h, w, ws, shift, dtype=dtype, device=device)
        want_labels = reference_labels(h, w, ws, shift)
        assert labels.dtype == torch.uint8 and labels.shape == want_labels.shape
        assert torch.equal(labels.cpu().long(), want_labels)
        differ = want_labels[:, :, None] != want_labels[:, None, :]
        assert mask.dtype == dtype and mask.shape == differ.shape
        assert torch.equal(mask.cpu(), torch.where(differ, -100.0, 0.0).to(dtype))
        assert bool(differ.any()) == (shift > 0)  # unshifted windows never mix regions


def test_partition_handles_non_contiguous_input():
    base = torch.randn(2, 5, 16, 24)  # (B, C, H, W)
    x = base.permute(0, 2, 3, 1)  # (B, H, W, C) view, not contiguous
    assert not x.is_contiguous()
    want = reference_partition(x.contiguous(), 8, 4)
    assert torch.equal(W.window_partition(x, 8, 4), want)
    assert torch.equal(W.torch_window_partition(x, 8, 4), want)
    merged = W.window_merge(want.transpose(0, 1).contiguous().transpose(0, 1), 2, 16, 24, 8, 4)
    assert torch.equal(merged, x)


def test_poisoned_outputs_are_fully_written():
    """Every output element is written: the result does not depend on what memory held before."""
    if native.unavailable_reason(torch.device("cpu")):
        pytest.skip(native.unavailable_reason(torch.device("cpu")))
    x = torch.randn(1, 16, 16, 7)
    first = torch.ops.lua_fast.window_partition(x, 8, 4)
    torch.empty(10**6).fill_(float("nan"))  # recycle allocator memory with NaNs
    for _ in range(3):
        assert torch.equal(torch.ops.lua_fast.window_partition(x, 8, 4), first)
        assert not torch.isnan(torch.ops.lua_fast.window_merge(first, 1, 16, 16, 8, 4)).any()


@pytest.mark.parametrize("use_native", [True, False])
def test_bad_inputs_get_clear_errors(use_native, monkeypatch):
    if not use_native:
        monkeypatch.setattr(native, "unavailable_reason", lambda device: "simulated")
    x = torch.randn(1, 16, 16, 4)
    with pytest.raises(ValueError, match="multiples of the window"):
        W.window_partition(torch.randn(1, 12, 16, 4), 8, 0)
    with pytest.raises(ValueError, match="multiples of the window"):
        W.window_mask(16, 20, 8, 4)
    with pytest.raises(ValueError, match=r"shift must be in \[0, window\)"):
        W.window_partition(x, 8, 8)
    with pytest.raises(ValueError, match="window must be positive"):
        W.window_partition(x, 0, 0)
    with pytest.raises(ValueError, match=r"expected x of shape \(B, H, W, C\)"):
        W.window_partition(torch.randn(16, 16, 4), 8, 0)
    with pytest.raises(ValueError, match=r"expected windows of shape \(B\*nW, N, C\) = \(8, 64, C\)"):
        W.window_merge(torch.randn(4, 64, 4), 2, 16, 16, 8, 0)
    with pytest.raises(ValueError, match="dtype must be one of"):
        W.window_mask(16, 16, 8, 4, dtype=torch.int32)


def test_native_ops_check_their_arguments_too():
    """The C++ ops validate on their own (callers may bypass the Python wrappers)."""
    if native.unavailable_reason(torch.device("cpu")):
        pytest.skip(native.unavailable_reason(torch.device("cpu")))
    ops = torch.ops.lua_fast
    with pytest.raises(RuntimeError, match="multiples of the window"):
        ops.window_partition(torch.randn(1, 5, 8, 3), 4, 0)
    with pytest.raises(RuntimeError, match="shift must be in"):
        ops.window_mask(8, 8, 4, 4, torch.float32, torch.device("cpu"))
    with pytest.raises(RuntimeError, match="expected windows of shape"):
        ops.window_merge(torch.randn(3, 16, 2), 1, 8, 8, 4, 0)
    if not torch.cuda.is_available() or not NATIVE.cuda:
        with pytest.raises(RuntimeError):
            ops.window_mask(8, 8, 4, 2, torch.float32, torch.device("cuda"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.gpu_memory_gib(18)  # input, output, the reference's roll and partition copies: 4 x 4.06 GiB
def test_cuda_64bit_offsets():
    """A partition whose element offsets exceed 2**31 (4 GiB of bf16)."""
    if native.unavailable_reason(torch.device("cuda")):
        pytest.skip(native.unavailable_reason(torch.device("cuda")))
    x = torch.randn(1, 2048, 2048, 520, device="cuda", dtype=torch.bfloat16)
    assert x.numel() > 2**31
    got = torch.ops.lua_fast.window_partition(x, 16, 8)
    assert torch.equal(got, reference_partition(x, 16, 8))
    assert torch.equal(torch.ops.lua_fast.window_merge(got, 1, 2048, 2048, 16, 8), x)


@pytest.mark.parametrize("use_native", [True, False])
def test_torch_compile_fullgraph(use_native, monkeypatch):
    if not use_native:
        monkeypatch.setattr(native, "unavailable_reason", lambda device: "simulated")
    elif native.unavailable_reason(torch.device("cpu")):
        pytest.skip(native.unavailable_reason(torch.device("cpu")))

    def fn(x):
        win = W.window_partition(x, 4, 2)
        mask, labels = W.window_mask(8, 12, 4, 2, dtype=x.dtype, device=x.device)
        return W.window_merge(win * 2, x.shape[0], 8, 12, 4, 2), mask, labels

    torch._dynamo.reset()
    x = torch.randn(2, 8, 12, 5)
    compiled = torch.compile(fn, fullgraph=True, backend="inductor" if use_native else "aot_eager")
    for got, want in zip(compiled(x), fn(x)):
        assert torch.equal(got, want)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_mask_for_a_new_size_is_one_launch_without_host_copies():
    if native.unavailable_reason(torch.device("cuda")):
        pytest.skip(native.unavailable_reason(torch.device("cuda")))
    from torch.profiler import ProfilerActivity, profile

    torch.ops.lua_fast.window_mask(64, 64, 16, 8, torch.bfloat16, torch.device("cuda"))  # warm up the op
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        torch.ops.lua_fast.window_mask(80, 112, 16, 8, torch.bfloat16, torch.device("cuda"))  # a new size
        torch.cuda.synchronize()
    names = [e.name for e in prof.events()]
    # (runtime or driver API, any suffix: cudaLaunchKernel, cudaLaunchKernelExC, cuLaunchKernelEx, ...)
    launches = [n for n in names if n.startswith(("cudaLaunchKernel", "cuLaunchKernel"))]
    copies = [n for n in names if "memcpy" in n.lower()]
    assert len(launches) == 1, names
    assert not copies, copies


def test_traced_masks_use_the_pytorch_composition():
    """Traced graphs never hold the native mask op: an AOTInductor package built by torch 2.11
    passed the op's dtype argument wrong (a float32 mask came back float64 and was read as float32:
    7e-2 error end to end), so tracing takes the composition, which gives the same values."""
    from torch.fx.experimental.proxy_tensor import make_fx

    def fn(x):
        mask, labels = W.window_mask(x.shape[1], x.shape[2], 4, 2, dtype=x.dtype, device=x.device)
        return mask + x.sum() * 0, labels

    x = torch.randn(1, 8, 12)
    graph = make_fx(fn, tracing_mode="symbolic")(x)
    assert not [n for n in graph.graph.nodes if "lua_fast" in str(n.target)], graph.graph
    for got, want in zip(graph(x), fn(x)):
        assert torch.equal(got, want)
    graph = make_fx(fn)(x)  # static sizes, under the proxy mode
    assert not [n for n in graph.graph.nodes if "lua_fast" in str(n.target)], graph.graph
    assert not W._traced()
