// torch.library bindings of the window ops (namespace lua_fast).
//
// Builds CPU-only by default; with -DWITH_CUDA it also binds the torch-free CUDA
// launchers of window_ops_cuda.cu on the current stream. Fake (meta) kernels are
// registered from Python (lua_fast/ops/window_ops.py) so torch.compile can trace.
//
// Only the ATen headers used here, not <ATen/ATen.h> (every operator's declaration): the
// build's compile took 32 s with it and 16 s without on the development CPU, paid by every
// install and CI run. The macro makes a use of an undeclared operator a compile error.
#define TORCH_ASSERT_ONLY_METHOD_OPERATORS
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>
#include <torch/version.h>

#include <cstring>
#include <tuple>

#include "window_index.h"
#include "window_ops_cpu.h"

#ifdef WITH_CUDA
// c10's stream and guard only need the CUDA runtime headers (ATen/cuda/CUDAContext.h
// would also pull in cuBLAS/cuSPARSE headers, which the binding does not use).
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "window_ops_cuda.h"
#endif

namespace lua_fast {
namespace {

void check_geometry(const char* op, int64_t height, int64_t width, int64_t window, int64_t shift) {
  TORCH_CHECK(window > 0, op, ": window must be positive, got ", window);
  TORCH_CHECK(shift >= 0 && shift < window, op, ": shift must be in [0, window), got shift=", shift,
              " with window=", window);
  TORCH_CHECK(height > 0 && width > 0 && height % window == 0 && width % window == 0, op,
              ": H and W must be positive multiples of the window (pad the input first), got H=", height,
              ", W=", width, ", window=", window);
}

#ifdef WITH_CUDA
void check_cuda(cudaError_t err, const char* op) {
  TORCH_CHECK(err == cudaSuccess, op, ": CUDA launch failed: ", cudaGetErrorString(err));
}
#endif

// The gather shared by partition and merge: `src` rows are permuted into `out`.
void gather(const at::Tensor& src, at::Tensor& out, int64_t batch, int64_t height, int64_t width, int64_t window,
            int64_t shift, bool merge, const char* op) {
  const int64_t channels = src.size(-1);
  const int64_t element_size = (int64_t)src.element_size();
  if (src.is_cuda()) {
#ifdef WITH_CUDA
    const c10::cuda::CUDAGuard guard(src.device());
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    check_cuda(merge ? launch_window_merge(src.data_ptr(), out.data_ptr(), batch, height, width, channels, window,
                                           shift, element_size, stream)
                     : launch_window_partition(src.data_ptr(), out.data_ptr(), batch, height, width, channels,
                                               window, shift, element_size, stream),
               op);
    return;
#else
    TORCH_CHECK(false, op, ": lua_fast's native extension was built without CUDA");
#endif
  }
  TORCH_CHECK(src.device().is_cpu(), op, ": unsupported device ", src.device());
  const WindowGeometry g = make_geometry(height, width, window, shift);
  const auto* in = static_cast<const uint8_t*>(src.data_ptr());
  auto* dst = static_cast<uint8_t*>(out.data_ptr());
  const int64_t row_bytes = channels * element_size;
  at::parallel_for(0, batch * height * width, 256, [&](int64_t begin, int64_t end) {
    cpu_window_gather(in, dst, g, row_bytes, merge, begin, end);
  });
}

at::Tensor window_partition(const at::Tensor& x, int64_t window, int64_t shift) {
  TORCH_CHECK(x.dim() == 4, "window_partition: expected x of shape (B, H, W, C), got ", x.sizes());
  const int64_t batch = x.size(0), height = x.size(1), width = x.size(2), channels = x.size(3);
  check_geometry("window_partition", height, width, window, shift);
  const at::Tensor src = x.contiguous();
  const int64_t windows = (height / window) * (width / window);
  at::Tensor out = at::empty({batch * windows, window * window, channels}, x.options());
  gather(src, out, batch, height, width, window, shift, /*merge=*/false, "window_partition");
  return out;
}

at::Tensor window_merge(const at::Tensor& windows, int64_t batch, int64_t height, int64_t width, int64_t window,
                        int64_t shift) {
  check_geometry("window_merge", height, width, window, shift);
  const int64_t count = batch * (height / window) * (width / window);
  TORCH_CHECK(windows.dim() == 3 && windows.size(0) == count && windows.size(1) == window * window,
              "window_merge: expected windows of shape (B*nW, N, C) = (", count, ", ", window * window,
              ", C) for B=", batch, ", H=", height, ", W=", width, ", window=", window, ", got ", windows.sizes());
  const at::Tensor src = windows.contiguous();
  at::Tensor out = at::empty({batch, height, width, windows.size(2)}, windows.options());
  gather(src, out, batch, height, width, window, shift, /*merge=*/true, "window_merge");
  return out;
}

#ifdef WITH_CUDA  // (a CPU-only build has no caller: it warned "defined but not used")
// Raw bits of -100 in the mask dtype, for the torch-free CUDA kernel.
uint64_t masked_bits(at::ScalarType dtype) {
  switch (dtype) {
    case at::kHalf:
      return c10::Half(-100.0f).x;
    case at::kBFloat16:
      return c10::BFloat16(-100.0f).x;
    case at::kFloat: {
      const float v = -100.0f;
      uint32_t bits;
      std::memcpy(&bits, &v, sizeof bits);
      return bits;
    }
    default: {
      const double v = -100.0;
      uint64_t bits;
      std::memcpy(&bits, &v, sizeof bits);
      return bits;
    }
  }
}
#endif

std::tuple<at::Tensor, at::Tensor> window_mask(int64_t height, int64_t width, int64_t window, int64_t shift,
                                               at::ScalarType dtype, at::Device device) {
  check_geometry("window_mask", height, width, window, shift);
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16 || dtype == at::kDouble,
              "window_mask: dtype must be float32, float16, bfloat16 or float64, got ", dtype);
  const WindowGeometry g = make_geometry(height, width, window, shift);
  const int64_t n = g.tokens;
  at::Tensor mask = at::empty({g.windows, n, n}, at::TensorOptions().dtype(dtype).device(device));
  at::Tensor labels = at::empty({g.windows, n}, at::TensorOptions().dtype(at::kByte).device(device));
  if (device.is_cuda()) {
#ifdef WITH_CUDA
    const c10::cuda::CUDAGuard guard(device);
    check_cuda(launch_window_mask(mask.data_ptr(), labels.data_ptr<uint8_t>(), height, width, window, shift,
                                  masked_bits(dtype), (int64_t)mask.element_size(),
                                  c10::cuda::getCurrentCUDAStream()),
               "window_mask");
    return {mask, labels};
#else
    TORCH_CHECK(false, "window_mask: lua_fast's native extension was built without CUDA");
#endif
  }
  TORCH_CHECK(device.is_cpu(), "window_mask: unsupported device ", device);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "window_mask", [&] {
    auto* m = mask.data_ptr<scalar_t>();
    auto* lab = labels.data_ptr<uint8_t>();
    const scalar_t masked = static_cast<scalar_t>(-100.0f);
    at::parallel_for(0, g.windows, 1, [&](int64_t begin, int64_t end) {
      cpu_window_mask<scalar_t>(m, lab, g, masked, begin, end);
    });
  });
  return {mask, labels};
}

// The torch release whose headers compiled this library. PyTorch's C++ ABI may change between
// releases, so lua_fast.native refuses a library built against another one (torch upgraded after
// lua_fast was installed: it loaded and ran, undefined behaviour, until 2026-11-29).
std::vector<int64_t> built_against() { return {TORCH_VERSION_MAJOR, TORCH_VERSION_MINOR}; }

}  // namespace

TORCH_LIBRARY(lua_fast, m) {
  m.def("built_against() -> int[]", &built_against);
  m.def("window_partition(Tensor x, int window, int shift) -> Tensor");
  // Sizes are SymInt so torch.export / torch.compile with dynamic shapes keep them symbolic (an
  // `int` argument would specialise the graph to the traced size); the kernels receive int64_t.
  m.def("window_merge(Tensor windows, SymInt batch, SymInt height, SymInt width, int window, int shift) -> Tensor");
  m.def("window_mask(SymInt height, SymInt width, int window, int shift, ScalarType dtype, Device device) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(lua_fast, CPU, m) {
  m.impl("window_partition", &window_partition);
  m.impl("window_merge", &window_merge);
}

#ifdef WITH_CUDA
TORCH_LIBRARY_IMPL(lua_fast, CUDA, m) {
  m.impl("window_partition", &window_partition);
  m.impl("window_merge", &window_merge);
}
#endif

// No tensor inputs: one kernel that branches on the device argument.
TORCH_LIBRARY_IMPL(lua_fast, CompositeExplicitAutograd, m) { m.impl("window_mask", &window_mask); }

}  // namespace lua_fast
