// ccn/native/cuda/pool.cu: type=pool, max, maxabs or average over square windows.
// Layouts: in/din N x (C*S*S) [n][c][y][x]; out/dout N x (C*O*O) [n][c][oy][ox].
// Output (oy, ox) covers rows [start + oy*stride, start + oy*stride + sizeX) and the same
// columns, clipped to the image. max: the maximum (0 if no pixel is inside), reduced in the
// CPU layer's order (columns, then across) from the window's first pixel, not from -FLT_MAX; maxabs
// (max && abs): the value of largest magnitude, the last such in row-major window order; avg: the sum
// over the pixels inside divided by their number. Backward gathers, per input pixel, every
// output whose window holds it: max and maxabs add dout where in == out (ties all get it), avg adds
// dout / count. No atomics: one writer per input pixel.
#include "cuda/check.h"
#include "cuda/context.h"
#include "cuda/kernels.h"

namespace ccn::cuda {

namespace {
__device__ __forceinline__ int floor_div(int a, int b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
__device__ __forceinline__ int ceil_div(int a, int b) { return -floor_div(-a, b); }

// Column x of a window: rows [ya, yb) of the plane img (S wide), reduced top to bottom.
__device__ __forceinline__ float col_max(const float* img, int S, int x, int ya, int yb) {
  float v = img[ya * S + x];
  for (int y = ya + 1; y < yb; ++y) {
    const float w = img[y * S + x];
    v = v < w ? w : v;
  }
  return v;
}
__device__ __forceinline__ float col_sum(const float* img, int S, int x, int ya, int yb) {
  float v = img[ya * S + x];
  for (int y = ya + 1; y < yb; ++y) v += img[y * S + x];
  return v;
}

// One thread per output element.
__global__ void pool_fprop_kernel(PoolGeom g, const float* in, float* out) {
  const int OO = g.O * g.O;
  const int64_t total = (int64_t)g.N * g.C * OO;
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < total; e += (int64_t)gridDim.x * blockDim.x) {
    const int o = (int)(e % OO);
    const float* img = in + (e / OO) * g.S * g.S;  // (n, c) plane
    const int y0 = g.start + (o / g.O) * g.stride, x0 = g.start + (o % g.O) * g.stride;
    const int ya = max(y0, 0), yb = min(y0 + g.sizeX, g.S), xa = max(x0, 0), xb = min(x0 + g.sizeX, g.S);
    float r;
    if (ya >= yb || xa >= xb) {
      r = 0.f;
    } else if (g.max && g.abs) {
      // maxabs, as the CPU layer: start from the window's first pixel; a later pixel
      // replaces the kept value unless |kept| > |pixel| (so the last of equal magnitudes wins).
      r = img[ya * g.S + xa];
      for (int y = ya; y < yb; ++y)
        for (int x = xa; x < xb; ++x)
          if (!(fabsf(r) > fabsf(img[y * g.S + x]))) r = img[y * g.S + x];
    } else if (g.max) {
      // As the CPU layer: each column's maximum over the window's rows (top first), then the
      // maximum of those columns left to right, each step std::max's rule (a value replaces
      // the kept one only when kept < value). Starting from the window's own pixels, an all
      // -inf window gives -inf, and NaNs come out exactly as on the CPU (which keeps a NaN
      // only from the window's top-left pixel).
      r = col_max(img, g.S, xa, ya, yb);
      for (int x = xa + 1; x < xb; ++x) {
        const float c = col_max(img, g.S, x, ya, yb);
        r = r < c ? c : r;
      }
    } else {
      // As the CPU layer: column sums over the window's rows (top first), added left to
      // right, divided by the number of pixels inside: the same float operations in the
      // same order, so the same result.
      r = col_sum(img, g.S, xa, ya, yb);
      for (int x = xa + 1; x < xb; ++x) r += col_sum(img, g.S, x, ya, yb);
      r /= (float)((yb - ya) * (xb - xa));
    }
    out[e] = r;
  }
}

// One thread per input element.
__global__ void pool_bprop_kernel(PoolGeom g, const float* in, const float* out, const float* dout, float* din) {
  const int SS = g.S * g.S, OO = g.O * g.O;
  const int64_t total = (int64_t)g.N * g.C * SS;
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < total; e += (int64_t)gridDim.x * blockDim.x) {
    const int p = (int)(e % SS);
    const int64_t plane = e / SS;
    const int iy = p / g.S, ix = p % g.S;
    // outputs o with start + o*stride <= i < start + o*stride + sizeX
    const int oy0 = max(0, ceil_div(iy - g.start - g.sizeX + 1, g.stride));
    const int oy1 = min(g.O - 1, floor_div(iy - g.start, g.stride));
    const int ox0 = max(0, ceil_div(ix - g.start - g.sizeX + 1, g.stride));
    const int ox1 = min(g.O - 1, floor_div(ix - g.start, g.stride));
    const float v = in[e];
    // Added one by one into din's value in row-major window order, as the CPU layer adds
    // them (a separate partial sum added at the end would round differently).
    float s = din[e];
    for (int oy = oy0; oy <= oy1; ++oy)
      for (int ox = ox0; ox <= ox1; ++ox) {
        const int64_t o = plane * OO + oy * g.O + ox;
        if (g.max) {
          if (v == out[o]) s += dout[o];
        } else {
          const int y0 = g.start + oy * g.stride, x0 = g.start + ox * g.stride;
          const int cnt = (min(y0 + g.sizeX, g.S) - max(y0, 0)) * (min(x0 + g.sizeX, g.S) - max(x0, 0));
          s += dout[o] / (float)cnt;
        }
      }
    din[e] = s;
  }
}
}  // namespace

void pool_fprop(CudaCtx& cx, const PoolGeom& g, const float* in, float* out) {
  CCN_CHECK(g.sizeX > 0 && g.stride > 0 && g.O > 0 && g.S > 0);
  const int64_t total = (int64_t)g.N * g.C * g.O * g.O;
  if (total <= 0) return;
  pool_fprop_kernel<<<grid_for(total), 256, 0, (cudaStream_t)cx.stream>>>(g, in, out);
  CCN_CUDA_LAUNCHED();
}

void pool_bprop(CudaCtx& cx, const PoolGeom& g, const float* in, const float* out, const float* dout, float* din) {
  CCN_CHECK(g.sizeX > 0 && g.stride > 0 && g.O > 0 && g.S > 0);
  const int64_t total = (int64_t)g.N * g.C * g.S * g.S;
  if (total <= 0 || !din) return;
  pool_bprop_kernel<<<grid_for(total), 256, 0, (cudaStream_t)cx.stream>>>(g, in, out, dout, din);
  CCN_CUDA_LAUNCHED();
}

}  // namespace ccn::cuda
