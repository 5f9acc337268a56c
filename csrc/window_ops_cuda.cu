// CUDA window partition / merge / mask kernels. Torch-free: raw pointers, an
// explicit stream, index math from window_index.h (shared with the CPU build).
#include <cuda_runtime.h>
#include <stdint.h>

#include "window_index.h"
#include "window_ops_cuda.h"

namespace lua_fast {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 65535;

int64_t blocks_for(int64_t total) {
  int64_t blocks = (total + kThreads - 1) / kThreads;
  return blocks < kMaxBlocks ? blocks : kMaxBlocks;
}

// Copies rows of `vecs_per_row` vectors; row r of dst comes from row gather_source_row(r) of src.
// kMerge selects the direction: partition gathers windows from the image, merge the reverse.
template <typename Vec, bool kMerge>
__global__ void gather_rows_kernel(const Vec* __restrict__ src, Vec* __restrict__ dst, WindowGeometry g,
                                   int64_t rows, int64_t vecs_per_row) {
  const int64_t total = rows * vecs_per_row;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t row = i / vecs_per_row;
    const int64_t v = i - row * vecs_per_row;
    dst[i] = src[gather_source_row(g, row, kMerge) * vecs_per_row + v];
  }
}

template <bool kMerge>
cudaError_t launch_gather(const void* src, void* dst, int64_t batch, int64_t height, int64_t width, int64_t channels,
                          int64_t window, int64_t shift, int64_t element_size, cudaStream_t stream) {
  const WindowGeometry g = make_geometry(height, width, window, shift);
  const int64_t rows = batch * height * width;
  const int64_t row_bytes = channels * element_size;
  if (rows == 0 || row_bytes == 0) return cudaSuccess;
  // The widest vector that divides the row and matches both pointers' alignment.
  const uintptr_t align = (uintptr_t)src | (uintptr_t)dst;
  int64_t vec = 16;
  while (vec > 1 && (row_bytes % vec != 0 || align % vec != 0)) vec /= 2;
  const int64_t vecs = row_bytes / vec;
  const int64_t blocks = blocks_for(rows * vecs);
  switch (vec) {
    case 16:
      gather_rows_kernel<uint4, kMerge><<<blocks, kThreads, 0, stream>>>((const uint4*)src, (uint4*)dst, g, rows, vecs);
      break;
    case 8:
      gather_rows_kernel<uint2, kMerge><<<blocks, kThreads, 0, stream>>>((const uint2*)src, (uint2*)dst, g, rows, vecs);
      break;
    case 4:
      gather_rows_kernel<uint32_t, kMerge>
          <<<blocks, kThreads, 0, stream>>>((const uint32_t*)src, (uint32_t*)dst, g, rows, vecs);
      break;
    case 2:
      gather_rows_kernel<uint16_t, kMerge>
          <<<blocks, kThreads, 0, stream>>>((const uint16_t*)src, (uint16_t*)dst, g, rows, vecs);
      break;
    default:
      gather_rows_kernel<uint8_t, kMerge>
          <<<blocks, kThreads, 0, stream>>>((const uint8_t*)src, (uint8_t*)dst, g, rows, vecs);
  }
  return cudaGetLastError();
}

template <typename Bits>
__global__ void window_mask_kernel(Bits* __restrict__ mask, uint8_t* __restrict__ labels, WindowGeometry g,
                                   Bits masked) {
  const int64_t n = g.tokens;
  const int64_t total = g.windows * n * n;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t w = i / (n * n);
    const int64_t a = (i / n) % n;
    const int64_t b = i % n;
    const uint8_t la = token_label(g, w, a);
    mask[i] = la == token_label(g, w, b) ? (Bits)0 : masked;
    if (b == 0) labels[w * n + a] = la;
  }
}

}  // namespace

cudaError_t launch_window_partition(const void* src, void* dst, int64_t batch, int64_t height, int64_t width,
                                    int64_t channels, int64_t window, int64_t shift, int64_t element_size,
                                    cudaStream_t stream) {
  return launch_gather<false>(src, dst, batch, height, width, channels, window, shift, element_size, stream);
}

cudaError_t launch_window_merge(const void* src, void* dst, int64_t batch, int64_t height, int64_t width,
                                int64_t channels, int64_t window, int64_t shift, int64_t element_size,
                                cudaStream_t stream) {
  return launch_gather<true>(src, dst, batch, height, width, channels, window, shift, element_size, stream);
}

cudaError_t launch_window_mask(void* mask, uint8_t* labels, int64_t height, int64_t width, int64_t window,
                               int64_t shift, uint64_t masked_bits, int64_t element_size, cudaStream_t stream) {
  const WindowGeometry g = make_geometry(height, width, window, shift);
  const int64_t total = g.windows * g.tokens * g.tokens;
  if (total == 0) return cudaSuccess;
  const int64_t blocks = blocks_for(total);
  switch (element_size) {
    case 2:
      window_mask_kernel<uint16_t><<<blocks, kThreads, 0, stream>>>((uint16_t*)mask, labels, g, (uint16_t)masked_bits);
      break;
    case 4:
      window_mask_kernel<uint32_t><<<blocks, kThreads, 0, stream>>>((uint32_t*)mask, labels, g, (uint32_t)masked_bits);
      break;
    case 8:
      window_mask_kernel<uint64_t><<<blocks, kThreads, 0, stream>>>((uint64_t*)mask, labels, g, masked_bits);
      break;
    default:
      return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

}  // namespace lua_fast
