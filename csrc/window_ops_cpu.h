// Torch-free CPU implementations of the window ops, over a [begin, end) range so
// the caller can parallelise. Same index math as the CUDA kernels (window_index.h).
#pragma once

#include <stdint.h>
#include <string.h>

#include "window_index.h"

namespace lua_fast {

// Output rows [begin, end) of partition (rows of (B*nW, N, C)) or merge (rows of (B, H, W, C)).
inline void cpu_window_gather(const uint8_t* src, uint8_t* dst, const WindowGeometry& g, int64_t row_bytes,
                              bool merge, int64_t begin, int64_t end) {
  for (int64_t row = begin; row < end; ++row)
    memcpy(dst + row * row_bytes, src + gather_source_row(g, row, merge) * row_bytes, (size_t)row_bytes);
}

// Windows [begin, end) of the mask (nW, N, N) and labels (nW, N).
template <typename T>
void cpu_window_mask(T* mask, uint8_t* labels, const WindowGeometry& g, T masked, int64_t begin, int64_t end) {
  const int64_t n = g.tokens;
  for (int64_t w = begin; w < end; ++w) {
    uint8_t* lab = labels + w * n;
    for (int64_t t = 0; t < n; ++t) lab[t] = token_label(g, w, t);
    T* m = mask + w * n * n;
    for (int64_t a = 0; a < n; ++a)
      for (int64_t b = 0; b < n; ++b) m[a * n + b] = lab[a] == lab[b] ? T(0) : masked;
  }
}

}  // namespace lua_fast
