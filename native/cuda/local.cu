// ccn/native/cuda/local.cu: type=local, locally connected (unshared) filters, as
// native/layers/local.cpp. Plain direct kernels (no unfolding, no cuBLAS): each thread owns
// one output, one input pixel of one (group, filter channel), or one weight, and loops.
//
// Sizes (ConvGeom in kernels.h): N cases, image C x S x S, F filters in `groups` groups of
// Fg = F/groups, each filter sees Cf channels (image channel chan(g, c) = g*Cf + c, or
// vchan[g*Cf + c] with a channel table), filter fs x fs, modules M x M, P = M*M,
// Kg = Cf*fs*fs weight rows per module.
// Layouts:
//   in / din:   N x (C*S*S)   [n][c][y][x]
//   out / dout: N x (F*P)     [n][f][my][mx],  m = my*M + mx
//   W / dW:     (P*Kg) x F    row m*Kg + c*fs*fs + fy*fs + fx, column f (row-major)
// Module (my, mx), filter pixel (fy, fx) reads image pixel (my*stride - padding + fy,
// mx*stride - padding + fx); pixels outside the image read as 0 (and get no gradient).
#include "cuda/check.h"
#include "cuda/context.h"
#include "cuda/kernels.h"

namespace ccn::cuda {

namespace {

__device__ __forceinline__ int local_chan(const ConvGeom& g, int grp, int c) {
  return g.vchan ? g.vchan[grp * g.Cf + c] : grp * g.Cf + c;
}

__device__ __forceinline__ int ceil_div_s(int a, int b) {  // b > 0, any sign of a
  return a >= 0 ? (a + b - 1) / b : -((-a) / b);
}

// One thread per output element e = (n*F + f)*P + m (the layout of out).
__global__ void local_fprop_kernel(ConvGeom g, const float* in, const float* W, float* out, bool accumulate) {
  const int P = g.M * g.M, fs2 = g.fs * g.fs, Kg = g.Cf * fs2, Fg = g.F / g.groups, SS = g.S * g.S;
  const int64_t total = (int64_t)g.N * g.F * P;
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < total; e += (int64_t)gridDim.x * blockDim.x) {
    const int m = (int)(e % P);
    const int f = (int)((e / P) % g.F);
    const int64_t n = e / ((int64_t)P * g.F);
    const int grp = f / Fg;
    const int y0 = (m / g.M) * g.stride - g.padding, x0 = (m % g.M) * g.stride - g.padding;
    const float* Wm = W + (int64_t)m * Kg * g.F + f;  // W[m*Kg + k, f] = Wm[k*F]
    float s = 0.f;
    for (int c = 0; c < g.Cf; ++c) {
      const float* img = in + (n * g.C + local_chan(g, grp, c)) * SS;  // plane [y][x]
      for (int fy = 0; fy < g.fs; ++fy) {
        const int iy = y0 + fy;
        if (iy < 0 || iy >= g.S) continue;
        for (int fx = 0; fx < g.fs; ++fx) {
          const int ix = x0 + fx;
          if (ix < 0 || ix >= g.S) continue;
          s += Wm[(int64_t)(c * fs2 + fy * g.fs + fx) * g.F] * img[iy * g.S + ix];
        }
      }
    }
    out[e] = accumulate ? out[e] + s : s;
  }
}

// Input gradient. One thread per (grp, c, n, iy, ix), e = (((grp*Cf + c)*N + n)*S + iy)*S + ix:
// it gathers every module (my, mx) whose window covers (iy, ix), i.e. iy = my*stride -
// padding + fy with 0 <= fy < fs, and every filter f of group grp:
//   s = sum W[m*Kg + c*fs^2 + fy*fs + fx, f] * dout[n, f, m]
// and adds s to din[n, chan(grp, c), iy, ix]. Plain groups give each image channel one
// writer; a channel table may repeat channels, then writers add atomically.
__global__ void local_bprop_input_kernel(ConvGeom g, const float* W, const float* dout, float* din) {
  const int P = g.M * g.M, fs2 = g.fs * g.fs, Kg = g.Cf * fs2, Fg = g.F / g.groups, SS = g.S * g.S;
  const int64_t total = (int64_t)g.groups * g.Cf * g.N * SS;
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < total; e += (int64_t)gridDim.x * blockDim.x) {
    const int p = (int)(e % SS);
    int64_t r = e / SS;
    const int64_t n = r % g.N;
    r /= g.N;
    const int c = (int)(r % g.Cf);
    const int grp = (int)(r / g.Cf);
    const int iy = p / g.S, ix = p % g.S;
    const int my0 = max(0, ceil_div_s(iy + g.padding - g.fs + 1, g.stride));
    const int my1 = min(g.M - 1, (iy + g.padding) / g.stride);
    const int mx0 = max(0, ceil_div_s(ix + g.padding - g.fs + 1, g.stride));
    const int mx1 = min(g.M - 1, (ix + g.padding) / g.stride);
    const float* go = dout + n * g.F * P;  // case n: [f][m]
    float s = 0.f;
    for (int my = my0; my <= my1; ++my) {
      const int fy = iy + g.padding - my * g.stride;
      for (int mx = mx0; mx <= mx1; ++mx) {
        const int fx = ix + g.padding - mx * g.stride;
        const int m = my * g.M + mx;
        const float* Wr = W + ((int64_t)m * Kg + c * fs2 + fy * g.fs + fx) * g.F;  // row of W
        for (int f = grp * Fg; f < (grp + 1) * Fg; ++f) s += Wr[f] * go[(int64_t)f * P + m];
      }
    }
    float* dst = din + (n * g.C + local_chan(g, grp, c)) * SS + p;
    if (g.vchan)
      atomicAdd(dst, s);
    else
      *dst += s;
  }
}

// Weight gradient. One thread per weight e = (m*Kg + k)*F + f (the layout of W), k =
// c*fs^2 + fy*fs + fx: dW[e] += sum_n in[n, chan(g, c), iy, ix] * dout[n, f, m] with
// g = f / Fg, (iy, ix) the pixel that weight reads in module m; nothing when it is outside.
__global__ void local_bprop_weight_kernel(ConvGeom g, const float* in, const float* dout, float* dW) {
  const int P = g.M * g.M, fs2 = g.fs * g.fs, Kg = g.Cf * fs2, Fg = g.F / g.groups, SS = g.S * g.S;
  const int64_t total = (int64_t)P * Kg * g.F;
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < total; e += (int64_t)gridDim.x * blockDim.x) {
    const int f = (int)(e % g.F);
    const int64_t row = e / g.F;
    const int k = (int)(row % Kg);
    const int m = (int)(row / Kg);
    const int c = k / fs2, fy = (k % fs2) / g.fs, fx = k % g.fs;
    const int iy = (m / g.M) * g.stride - g.padding + fy;
    const int ix = (m % g.M) * g.stride - g.padding + fx;
    if (iy < 0 || iy >= g.S || ix < 0 || ix >= g.S) continue;
    const int ch = local_chan(g, f / Fg, c);
    float s = 0.f;
    for (int64_t n = 0; n < g.N; ++n)
      s += in[(n * g.C + ch) * SS + iy * g.S + ix] * dout[(n * g.F + f) * P + m];
    dW[e] += s;
  }
}

void check_local_geom(const ConvGeom& g) {
  CCN_CHECK(g.groups > 0 && g.F % g.groups == 0 && g.Cf > 0 && g.fs > 0 && g.stride > 0 && g.M > 0 && g.S > 0);
  CCN_CHECK(g.vchan || g.Cf * g.groups == g.C, "plain groups need C = groups * Cf");
}
}  // namespace

void local_fprop(CudaCtx& cx, const ConvGeom& g, const float* in, const float* W, float* out, bool accumulate) {
  check_local_geom(g);
  const int64_t total = (int64_t)g.N * g.F * g.M * g.M;
  if (total <= 0) return;
  local_fprop_kernel<<<grid_for(total), 256, 0, (cudaStream_t)cx.stream>>>(g, in, W, out, accumulate);
  CCN_CUDA_LAUNCHED();
}

void local_bprop(CudaCtx& cx, const ConvGeom& g, const float* in, const float* W, const float* dout, float* din,
                 float* dW) {
  check_local_geom(g);
  if (g.N <= 0) return;
  cudaStream_t st = (cudaStream_t)cx.stream;
  if (din) {
    const int64_t total = (int64_t)g.groups * g.Cf * g.N * g.S * g.S;
    local_bprop_input_kernel<<<grid_for(total), 256, 0, st>>>(g, W, dout, din);
    CCN_CUDA_LAUNCHED();
  }
  if (dW) {
    const int64_t total = (int64_t)g.M * g.M * g.Cf * g.fs * g.fs * g.F;
    local_bprop_weight_kernel<<<grid_for(total), 256, 0, st>>>(g, in, dout, dW);
    CCN_CUDA_LAUNCHED();
  }
}

}  // namespace ccn::cuda
