// ccn/native/cuda/imgops.cu: the image-operation layers (href, crop, nailbed, blur, resize,
// rscale, rgb2yuv, rgb2lab), as native/layers/imgops.h and the layer files.
// Layout: `planes` = N*C contiguous image planes [plane][y][x] (x fastest): S x S inputs,
// T x T (or O x O) outputs; that is the NCHW row of every case, cases one after another.
// Colour layers: N cases of 3 planes of P pixels, channel k of pixel p at n*3P + k*P + p.
// Plain kernels, one thread per output element (grid-stride loops). Backward launchers ADD
// into din. Only resize's backward needs atomics (each target pixel feeds four sources).
#include "cuda/check.h"
#include "cuda/context.h"
#include "cuda/kernels.h"

namespace ccn::cuda {

#define CCN_GRID_LOOP(e, total) \
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < (total); e += (int64_t)gridDim.x * blockDim.x)

namespace {

// ---- href: e = r*S + i over rows*S elements.
__global__ void href_kernel(const float* src, float* dst, int64_t rows, int S, bool add) {
  CCN_GRID_LOOP(e, rows * S) {
    const int64_t r = e / S;
    const int i = (int)(e % S);
    const float v = src[r * S + (S - 1 - i)];
    dst[e] = add ? dst[e] + v : v;
  }
}

// ---- crop: one thread per output element e = (pl*T + y)*T + x.
__global__ void crop_kernel(const float* in, float* out, int64_t planes, int S, int T, int sy, int sx, bool back) {
  const int64_t TT = (int64_t)T * T;
  CCN_GRID_LOOP(e, planes * TT) {
    const int64_t pl = e / TT;
    const int y = (int)((e % TT) / T), x = (int)(e % T);
    const int64_t src = pl * S * S + (int64_t)(sy + y) * S + (sx + x);
    if (back)
      out[src] += in[e];  // in = dout (T x T planes), out = din (S x S): distinct pixels
    else
      out[e] = in[src];
  }
}

// ---- nailbed: one thread per output element e = (pl*O + oy)*O + ox.
__global__ void nailbed_kernel(const float* in, float* out, int64_t planes, int S, int O, int start, int stride,
                               bool back) {
  const int64_t OO = (int64_t)O * O;
  CCN_GRID_LOOP(e, planes * OO) {
    const int64_t pl = e / OO;
    const int oy = (int)((e % OO) / O), ox = (int)(e % O);
    const int64_t src = pl * S * S + (int64_t)(start + oy * stride) * S + (start + ox * stride);
    if (back)
      out[src] += in[e];  // in = dout, out = din: distinct pixels
    else
      out[e] = in[src];
  }
}

// ---- blur: one 1-D pass, one thread per element e = (pl*S + yy)*S + xx:
//   along x: acc = sum_{k0 <= k < k1} f[k] src[yy, xx + k - r],  k0..k1 keeps the pixel inside
//   along y: acc = sum f[k] src[yy + k - r, xx]
// dst[e] = acc, or += when add. (The layer's CPU loops, with pos = xx or yy.)
__global__ void blur_pass_kernel(BlurFilter f, const float* src, float* dst, int64_t planes, int S, bool along_y,
                                 bool add) {
  const int64_t SS = (int64_t)S * S;
  const int r = f.fs / 2;
  CCN_GRID_LOOP(e, planes * SS) {
    const int64_t pl = e / SS;
    const int yy = (int)((e % SS) / S), xx = (int)(e % S);
    const float* img = src + pl * SS;
    const int pos = along_y ? yy : xx;
    const int k0 = max(0, r - pos), k1 = min(f.fs, S - pos + r);
    float acc = 0;
    if (along_y)
      for (int k = k0; k < k1; ++k) acc += f.f[k] * img[(pos + k - r) * S + xx];
    else
      for (int k = k0; k < k1; ++k) acc += f.f[k] * img[yy * S + pos + k - r];
    dst[e] = add ? dst[e] + acc : acc;
  }
}

// ---- resize: one thread per target pixel e = (pl*T + py)*T + px.
__global__ void resize_fprop_kernel(ResizeTables t, const float* in, float* out, int64_t planes) {
  const int64_t TT = (int64_t)t.T * t.T;
  CCN_GRID_LOOP(e, planes * TT) {
    const int64_t pl = e / TT;
    const int py = (int)((e % TT) / t.T), px = (int)(e % t.T);
    const float* r0 = in + pl * t.S * t.S + (int64_t)t.lo[py] * t.S;
    const float* r1 = in + pl * t.S * t.S + (int64_t)t.hi[py] * t.S;
    const int l = t.lo[px], h = t.hi[px];
    const float u = t.u[px], w = t.w[py];
    const float c0 = u * (r0[l] - r0[h]) + r0[h];
    const float c1 = u * (r1[l] - r1[h]) + r1[h];
    out[e] = w * (c1 - c0) + c0;
  }
}
// The transpose: target pixel (py, px) adds its gradient g to its four source neighbours,
// (1-w)*g on row lo[py] and w*g on row hi[py], split u / (1-u) between columns lo[px] / hi[px].
__global__ void resize_bprop_kernel(ResizeTables t, const float* dout, float* din, int64_t planes) {
  const int64_t TT = (int64_t)t.T * t.T;
  CCN_GRID_LOOP(e, planes * TT) {
    const int64_t pl = e / TT;
    const int py = (int)((e % TT) / t.T), px = (int)(e % t.T);
    float* r0 = din + pl * t.S * t.S + (int64_t)t.lo[py] * t.S;
    float* r1 = din + pl * t.S * t.S + (int64_t)t.hi[py] * t.S;
    const int l = t.lo[px], h = t.hi[px];
    const float u = t.u[px], w = t.w[py];
    const float g0 = (1.0f - w) * dout[e], g1 = w * dout[e];
    atomicAdd(r0 + l, u * g0);
    atomicAdd(r0 + h, (1.0f - u) * g0);
    atomicAdd(r1 + l, u * g1);
    atomicAdd(r1 + h, (1.0f - u) * g1);
  }
}

// ---- colour: one thread per pixel e = n*P + p of the N*P pixels.
__global__ void color3_fprop_kernel(Color3 M, const float* x, float* y, int64_t N, int64_t P) {
  CCN_GRID_LOOP(e, N * P) {
    const int64_t n = e / P, p = e % P;
    const float* xi = x + n * 3 * P + p;  // xi[k*P] = channel k
    float* yo = y + n * 3 * P + p;
    const float r = xi[0], g = xi[P], b = xi[2 * P];
    for (int k = 0; k < 3; ++k) yo[k * P] = M.m[k][0] * r + M.m[k][1] * g + M.m[k][2] * b;
  }
}
__global__ void color3_bprop_kernel(Color3 M, const float* dout, float* din, int64_t N, int64_t P) {
  CCN_GRID_LOOP(e, N * P) {
    const int64_t n = e / P, p = e % P;
    const float* g = dout + n * 3 * P + p;
    float* d = din + n * 3 * P + p;
    const float g0 = g[0], g1 = g[P], g2 = g[2 * P];
    for (int k = 0; k < 3; ++k) d[k * P] += M.m[0][k] * g0 + M.m[1][k] * g1 + M.m[2][k] * g2;
  }
}

__device__ __forceinline__ float lab_f(const LabParams& L, float t) {
  return t > L.thr ? powf(t, L.expo) : L.slope * t + L.icept;
}
__device__ __forceinline__ float lab_fd(const LabParams& L, float t) {
  return t > L.thr ? L.expo * powf(t, L.expo - 1.0f) : L.slope;
}
__global__ void rgb2lab_fprop_kernel(LabParams L, const float* x, float* y, int64_t N, int64_t P) {
  CCN_GRID_LOOP(e, N * P) {
    const int64_t n = e / P, p = e % P;
    const float* xi = x + n * 3 * P + p;
    float* yo = y + n * 3 * P + p;
    const float r = xi[0], g = xi[P], b = xi[2 * P];
    float f[3];
    for (int k = 0; k < 3; ++k) f[k] = lab_f(L, L.xyz.m[k][0] * r + L.xyz.m[k][1] * g + L.xyz.m[k][2] * b);
    yo[0] = 116.0f * f[1] - 16.0f - L.off;
    yo[P] = 500.0f * (f[0] - f[1]);
    yo[2 * P] = 200.0f * (f[1] - f[2]);
  }
}
__global__ void rgb2lab_bprop_kernel(LabParams L, const float* x, const float* dout, float* din, int64_t N,
                                     int64_t P) {
  CCN_GRID_LOOP(e, N * P) {
    const int64_t n = e / P, p = e % P;
    const float* xi = x + n * 3 * P + p;
    const float* g = dout + n * 3 * P + p;
    float* d = din + n * 3 * P + p;
    float t[3];
    for (int k = 0; k < 3; ++k) t[k] = L.xyz.m[k][0] * xi[0] + L.xyz.m[k][1] * xi[P] + L.xyz.m[k][2] * xi[2 * P];
    const float gl = g[0], ga = g[P], gb = g[2 * P];
    // d/d f(X), f(Y), f(Z), then through f to X, Y, Z, then through the matrix to R, G, B
    const float gt[3] = {500.0f * ga * lab_fd(L, t[0]), (116.0f * gl - 500.0f * ga + 200.0f * gb) * lab_fd(L, t[1]),
                         -200.0f * gb * lab_fd(L, t[2])};
    for (int k = 0; k < 3; ++k)
      d[k * P] += L.xyz.m[0][k] * gt[0] + L.xyz.m[1][k] * gt[1] + L.xyz.m[2][k] * gt[2];
  }
}

}  // namespace

#define STREAM_OF(cx) ((cudaStream_t)(cx).stream)

void href(CudaCtx& cx, const float* src, float* dst, int64_t rows, int S, bool add) {
  if (rows * S <= 0 || !dst) return;
  href_kernel<<<grid_for(rows * S), 256, 0, STREAM_OF(cx)>>>(src, dst, rows, S, add);
  CCN_CUDA_LAUNCHED();
}

void crop_fprop(CudaCtx& cx, const float* in, float* out, int64_t planes, int S, int T, int sy, int sx) {
  CCN_CHECK(T > 0 && sy >= 0 && sx >= 0 && sy + T <= S && sx + T <= S);
  if (planes <= 0) return;
  crop_kernel<<<grid_for(planes * T * T), 256, 0, STREAM_OF(cx)>>>(in, out, planes, S, T, sy, sx, false);
  CCN_CUDA_LAUNCHED();
}
void crop_bprop(CudaCtx& cx, const float* dout, float* din, int64_t planes, int S, int T, int sy, int sx) {
  CCN_CHECK(T > 0 && sy >= 0 && sx >= 0 && sy + T <= S && sx + T <= S);
  if (planes <= 0 || !din) return;
  crop_kernel<<<grid_for(planes * T * T), 256, 0, STREAM_OF(cx)>>>(dout, din, planes, S, T, sy, sx, true);
  CCN_CUDA_LAUNCHED();
}

void nailbed_fprop(CudaCtx& cx, const float* in, float* out, int64_t planes, int S, int O, int start, int stride) {
  CCN_CHECK(O > 0 && stride > 0 && start >= 0 && start + (O - 1) * stride < S);
  if (planes <= 0) return;
  nailbed_kernel<<<grid_for(planes * O * O), 256, 0, STREAM_OF(cx)>>>(in, out, planes, S, O, start, stride, false);
  CCN_CUDA_LAUNCHED();
}
void nailbed_bprop(CudaCtx& cx, const float* dout, float* din, int64_t planes, int S, int O, int start, int stride) {
  CCN_CHECK(O > 0 && stride > 0 && start >= 0 && start + (O - 1) * stride < S);
  if (planes <= 0 || !din) return;
  nailbed_kernel<<<grid_for(planes * O * O), 256, 0, STREAM_OF(cx)>>>(dout, din, planes, S, O, start, stride, true);
  CCN_CUDA_LAUNCHED();
}

void blur_apply(CudaCtx& cx, const BlurFilter& f, const float* src, float* dst, int64_t planes, int S, bool transpose,
                bool add) {
  CCN_CHECK(f.fs >= 1 && f.fs <= 9 && S > 0);
  const int64_t n = planes * S * S;
  if (n <= 0 || !dst) return;
  float* t = cx.scratch((size_t)n);
  // forward: along x into t, then along y into dst; transpose: along y, then along x
  blur_pass_kernel<<<grid_for(n), 256, 0, STREAM_OF(cx)>>>(f, src, t, planes, S, transpose, false);
  CCN_CUDA_LAUNCHED();
  blur_pass_kernel<<<grid_for(n), 256, 0, STREAM_OF(cx)>>>(f, t, dst, planes, S, !transpose, add);
  CCN_CUDA_LAUNCHED();
}

void resize_fprop(CudaCtx& cx, const ResizeTables& t, const float* in, float* out, int64_t planes) {
  CCN_CHECK(t.S > 0 && t.T > 0 && t.lo && t.hi && t.u && t.w);
  if (planes <= 0) return;
  resize_fprop_kernel<<<grid_for(planes * t.T * t.T), 256, 0, STREAM_OF(cx)>>>(t, in, out, planes);
  CCN_CUDA_LAUNCHED();
}
void resize_bprop(CudaCtx& cx, const ResizeTables& t, const float* dout, float* din, int64_t planes) {
  CCN_CHECK(t.S > 0 && t.T > 0 && t.lo && t.hi && t.u && t.w);
  if (planes <= 0 || !din) return;
  resize_bprop_kernel<<<grid_for(planes * t.T * t.T), 256, 0, STREAM_OF(cx)>>>(t, dout, din, planes);
  CCN_CUDA_LAUNCHED();
}

void color3_fprop(CudaCtx& cx, const Color3& M, const float* x, float* y, int64_t N, int64_t P) {
  if (N * P <= 0) return;
  color3_fprop_kernel<<<grid_for(N * P), 256, 0, STREAM_OF(cx)>>>(M, x, y, N, P);
  CCN_CUDA_LAUNCHED();
}
void color3_bprop(CudaCtx& cx, const Color3& M, const float* dout, float* din, int64_t N, int64_t P) {
  if (N * P <= 0 || !din) return;
  color3_bprop_kernel<<<grid_for(N * P), 256, 0, STREAM_OF(cx)>>>(M, dout, din, N, P);
  CCN_CUDA_LAUNCHED();
}

void rgb2lab_fprop(CudaCtx& cx, const LabParams& L, const float* x, float* y, int64_t N, int64_t P) {
  if (N * P <= 0) return;
  rgb2lab_fprop_kernel<<<grid_for(N * P), 256, 0, STREAM_OF(cx)>>>(L, x, y, N, P);
  CCN_CUDA_LAUNCHED();
}
void rgb2lab_bprop(CudaCtx& cx, const LabParams& L, const float* x, const float* dout, float* din, int64_t N,
                   int64_t P) {
  if (N * P <= 0 || !din) return;
  rgb2lab_bprop_kernel<<<grid_for(N * P), 256, 0, STREAM_OF(cx)>>>(L, x, dout, din, N, P);
  CCN_CUDA_LAUNCHED();
}

}  // namespace ccn::cuda
