// Shifted-window index math shared by the CPU (C++) and CUDA implementations.
//
// Torch-free and usable from host and device code, so the CPU build exercises
// exactly the formulas the CUDA kernels run. Conventions follow LUA_SPEC.md:
// the feature map is cyclically shifted by (-shift, -shift), then cut into
// ws x ws windows ordered row-major over the window grid, tokens row-major
// inside a window. All offsets are 64-bit.
#pragma once

#include <stdint.h>

#if defined(__CUDACC__)
#define LUA_HD __host__ __device__ __forceinline__
#else
#define LUA_HD inline
#endif

namespace lua_fast {

struct WindowGeometry {
  int64_t height, width, window, shift;
  int64_t windows_x;  // windows per row of the window grid
  int64_t windows;    // windows per image
  int64_t tokens;     // tokens per window (window * window)
};

LUA_HD WindowGeometry make_geometry(int64_t height, int64_t width, int64_t window, int64_t shift) {
  WindowGeometry g;
  g.height = height;
  g.width = width;
  g.window = window;
  g.shift = shift;
  g.windows_x = width / window;
  g.windows = (height / window) * g.windows_x;
  g.tokens = window * window;
  return g;
}

// Position (yr, xr) of token t of window w in the rolled grid (windows tile it row-major).
LUA_HD void token_position(const WindowGeometry& g, int64_t w, int64_t t, int64_t* yr, int64_t* xr) {
  *yr = (w / g.windows_x) * g.window + t / g.window;
  *xr = (w % g.windows_x) * g.window + t % g.window;
}

// Pixel (y, x) of the un-shifted grid that token t of window w holds after the
// roll by (-shift, -shift): rolled[yr][xr] = original[(yr + shift) % H][(xr + shift) % W].
LUA_HD void token_to_pixel(const WindowGeometry& g, int64_t w, int64_t t, int64_t* y, int64_t* x) {
  int64_t yr, xr;
  token_position(g, w, t, &yr, &xr);
  *y = (yr + g.shift) % g.height;
  *x = (xr + g.shift) % g.width;
}

// Inverse of token_to_pixel: the window and token that hold pixel (y, x).
LUA_HD void pixel_to_token(const WindowGeometry& g, int64_t y, int64_t x, int64_t* w, int64_t* t) {
  const int64_t yr = (y - g.shift + g.height) % g.height;
  const int64_t xr = (x - g.shift + g.width) % g.width;
  *w = (yr / g.window) * g.windows_x + xr / g.window;
  *t = (yr % g.window) * g.window + xr % g.window;
}

// Row of the source tensor that output row `row` copies. Partition: rows of (B*nW, N, C) read
// rows of (B, H, W, C); merge (the inverse): rows of (B, H, W, C) read rows of (B*nW, N, C).
// Both row counts equal B * H * W.
LUA_HD int64_t gather_source_row(const WindowGeometry& g, int64_t row, bool merge) {
  const int64_t image_rows = g.height * g.width;  // == g.windows * g.tokens
  const int64_t b = row / image_rows;
  const int64_t r = row - b * image_rows;
  if (merge) {
    int64_t w, t;
    pixel_to_token(g, r / g.width, r % g.width, &w, &t);
    return (b * g.windows + w) * g.tokens + t;
  }
  int64_t y, x;
  token_to_pixel(g, r / g.tokens, r % g.tokens, &y, &x);
  return (b * g.height + y) * g.width + x;
}

// Region of coordinate v along a side of length n: [0, n-ws) -> 0, [n-ws, n-shift) -> 1, [n-shift, n) -> 2.
LUA_HD int64_t side_region(int64_t v, int64_t n, int64_t window, int64_t shift) {
  return (v >= n - window ? 1 : 0) + (v >= n - shift ? 1 : 0);
}

// The spec's region label (3 * row_region + col_region, in 0..8) of token t of window w. The
// released code labels positions of the ROLLED grid (the window grid itself), not the un-rolled
// pixel the token holds: the label depends only on (window, token), never on the shift's wrap.
LUA_HD uint8_t token_label(const WindowGeometry& g, int64_t w, int64_t t) {
  int64_t yr, xr;
  token_position(g, w, t, &yr, &xr);
  return (uint8_t)(3 * side_region(yr, g.height, g.window, g.shift) + side_region(xr, g.width, g.window, g.shift));
}

}  // namespace lua_fast
