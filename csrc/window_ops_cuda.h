// Torch-free launchers of the CUDA window kernels (window_ops_cuda.cu).
// Raw pointers, element sizes instead of dtypes (the gathers only move bytes),
// an explicit stream; each returns the launch's cudaError_t.
#pragma once

#include <cuda_runtime_api.h>
#include <stdint.h>

namespace lua_fast {

// (B, H, W, C) -> (B * nW, N, C), roll by (-shift, -shift) folded into the gather.
cudaError_t launch_window_partition(const void* src, void* dst, int64_t batch, int64_t height, int64_t width,
                                    int64_t channels, int64_t window, int64_t shift, int64_t element_size,
                                    cudaStream_t stream);

// (B * nW, N, C) -> (B, H, W, C), reverse roll by (+shift, +shift) folded into the gather.
cudaError_t launch_window_merge(const void* src, void* dst, int64_t batch, int64_t height, int64_t width,
                                int64_t channels, int64_t window, int64_t shift, int64_t element_size,
                                cudaStream_t stream);

// One launch writes both the additive mask (nW, N, N) (0 within a region, `masked_bits`
// across regions, elements of `element_size` bytes) and the region labels (nW, N) uint8.
cudaError_t launch_window_mask(void* mask, uint8_t* labels, int64_t height, int64_t width, int64_t window,
                               int64_t shift, uint64_t masked_bits, int64_t element_size, cudaStream_t stream);

}  // namespace lua_fast
