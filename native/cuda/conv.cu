// ccn/native/cuda/conv.cu: type=conv (shared weights) by unfolding (im2col) + cuBLAS.
//
// Sizes (ConvGeom in kernels.h): N cases, image C x S x S, F filters in `groups` groups of
// Fg = F/groups, each filter sees Cf channels, filter fs x fs, modules M x M, MM = M*M,
// K = Cf*fs*fs rows of the weight matrix.
// Layouts:
//   in / din:   N x (C*S*S)        [n][c][y][x]
//   out / dout: N x (F*MM)         [n][f][my][mx]
//   W / dW:     K x F row-major    row k = c*fs*fs + fy*fs + fx, column f
//   col (the unfolded input of a chunk of Nc cases), in scratch:
//               [g][k][n][m]       col[g][k][n][m] = in[n0+n][chan(g,c)][my*st-pad+fy][mx*st-pad+fx]
//               (0 outside the image), so for each group, K x (Nc*MM) is one row-major matrix
//               (conv_unfold; rows r = g*K + k of Nc*MM columns).
//   outT (fprop) and doutT (bprop): [f][n][m], out / dout of the chunk with filters outermost,
//               so for each group, Fg x (Nc*MM) is one row-major matrix.
// Products per group g (W_g = columns g*Fg.. of W, leading dimension F), one GEMM each over
// all Nc*MM columns of the chunk (per-case products were 128 small GEMMs, with N = MM as
// small as 169 for AlexNet's conv3-5):
//   fprop:   outT[g] (Fg x Nc*MM)  = W_g^T col[g]     then outT is put back in out's layout
//   bprop:   doutT = dout of the chunk, filters outermost, for both products:
//            dcol[g] (K x Nc*MM)   = W_g doutT[g]     then folded back (col2im)
//            dW_g (K x Fg)        += col[g] doutT[g]^T
// Cases are processed in chunks so the scratch matrices stay within the budget
// (conv_chunk_cases: 256 MB, or CCN_UNFOLD_BYTES when set, as on the CPU).
#include "cuda/check.h"
#include "cuda/context.h"
#include "cuda/cublas.h"
#include "cuda/fastdiv.cuh"
#include "cuda/kernels.h"
#include "kernels/unfold.h"

namespace ccn::cuda {

namespace {
constexpr int64_t kScratchBytes = 256ll << 20;  // unfolded matrices per chunk, unless CCN_UNFOLD_BYTES

__device__ __forceinline__ int chan_of(const ConvGeom& g, int grp, int c) {
  return g.vchan ? g.vchan[grp * g.Cf + c] : grp * g.Cf + c;
}

// Row kernels (rows_grid in check.h): blockIdx.y walks the rows of the destination, each
// thread decodes its row once and then a few of its columns (kColsPerThread), splitting the
// indices with FastDiv (fastdiv.cuh): a plain 32-bit division is ~20 instructions on the GPU,
// and with one column per thread and a division for every part of the row and column index,
// the divisions, not the memory traffic, set these kernels' time.
constexpr int kColsPerThread = 4;

// The divisors of one conv geometry, made once per launch on the host.
struct ConvDivs {
  FastDiv K, fs2, fs, MM, M, Cf, SS, S, stride;
  explicit ConvDivs(const ConvGeom& g)
      : K(g.Cf * g.fs * g.fs), fs2(g.fs * g.fs), fs(g.fs), MM(g.M * g.M), M(g.M), Cf(g.Cf), SS(g.S * g.S), S(g.S),
        stride(g.stride) {}
};

// col row r = grp*K + k holds, for each (n, m) of the chunk (column j = n*MM + m), the input
// pixel that tap k = (c, fy, fx) of module m = (my, mx) reads: col[r*cols + j].
__global__ void im2col_kernel(ConvGeom g, ConvDivs dv, const float* in, int n0, int Nc, float* col) {
  const int MM = g.M * g.M, SS = g.S * g.S, cols = Nc * MM;
  const int64_t case_stride = (int64_t)g.C * SS;
  for (int r = blockIdx.y; r < g.groups * (int)dv.K.d; r += gridDim.y) {
    int grp, k, c, t, fy, fx;
    dv.K.divmod(r, grp, k);
    dv.fs2.divmod(k, c, t);
    dv.fs.divmod(t, fy, fx);
    const float* src = in + (int64_t)n0 * case_stride + (int64_t)chan_of(g, grp, c) * SS;
    float* dst = col + (int64_t)r * cols;
    for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < cols; j += gridDim.x * blockDim.x) {
      int n, m, my, mx;
      dv.MM.divmod(j, n, m);
      dv.M.divmod(m, my, mx);
      const int iy = my * g.stride - g.padding + fy, ix = mx * g.stride - g.padding + fx;
      float v = 0.f;
      if ((unsigned)iy < (unsigned)g.S && (unsigned)ix < (unsigned)g.S) v = src[n * case_stride + iy * g.S + ix];
      dst[j] = v;
    }
  }
}

// The modules covering input coordinate i along one axis: m0 .. m1 with m*st - pad <= i and
// i < m*st - pad + fs, i.e. m0 = max(0, ceil((i + pad - fs + 1) / st)), m1 = min(M-1, (i + pad) / st).
__device__ __forceinline__ void covering(const ConvGeom& g, const FastDiv& st, int i, int& m0, int& m1) {
  const int a = i + g.padding - g.fs + 1;
  m0 = a <= 0 ? 0 : st.div(a + g.stride - 1);
  m1 = min(g.M - 1, st.div(i + g.padding));
}

// Fold dcol back into din. Row r = grp*Cf + c (one filter channel), column j = n*SS + p (a
// case of the chunk and an input pixel p = (iy, ix)): the thread gathers every module
// (my, mx) whose window covers the pixel (my*st - pad + fy = iy with 0 <= fy < fs).
// Plain groups give each image channel one writer; a channel table may repeat channels,
// then writers add atomically.
__global__ void col2im_kernel(ConvGeom g, ConvDivs dv, const float* dcol, int n0, int Nc, float* din) {
  const int fs2 = g.fs * g.fs, K = g.Cf * fs2, MM = g.M * g.M, SS = g.S * g.S, cols = Nc * SS;
  const int64_t ncols = (int64_t)Nc * MM;  // one dcol row
  for (int r = blockIdx.y; r < g.groups * g.Cf; r += gridDim.y) {
    int grp, c;
    dv.Cf.divmod(r, grp, c);
    const float* rows = dcol + ((int64_t)grp * K + (int64_t)c * fs2) * ncols;  // row (grp, k = c*fs2)
    float* dst0 = din + (int64_t)n0 * g.C * SS + (int64_t)chan_of(g, grp, c) * SS;
    for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < cols; j += gridDim.x * blockDim.x) {
      int n, p, iy, ix, my0, my1, mx0, mx1;
      dv.SS.divmod(j, n, p);
      dv.S.divmod(p, iy, ix);
      covering(g, dv.stride, iy, my0, my1);
      covering(g, dv.stride, ix, mx0, mx1);
      float s = 0.f;
      for (int my = my0; my <= my1; ++my) {
        const int fy = iy + g.padding - my * g.stride;
        for (int mx = mx0; mx <= mx1; ++mx) {
          const int fx = ix + g.padding - mx * g.stride;
          s += rows[(int64_t)(fy * g.fs + fx) * ncols + n * MM + my * g.M + mx];
        }
      }
      float* dst = dst0 + (int64_t)n * g.C * SS + p;
      if (g.vchan)
        atomicAdd(dst, s);
      else
        *dst += s;
    }
  }
}

// doutT[f][n][m] = dout[n0+n][f][m]: row f, column j = n*MM + m.
__global__ void transpose_dout_kernel(const float* dout, int n0, int Nc, int F, FastDiv MM, float* doutT) {
  const int cols = Nc * (int)MM.d;
  for (int f = blockIdx.y; f < F; f += gridDim.y) {
    const float* src = dout + ((int64_t)n0 * F + f) * MM.d;
    float* dst = doutT + (int64_t)f * cols;
    for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < cols; j += gridDim.x * blockDim.x) {
      int n, m;
      MM.divmod(j, n, m);
      dst[j] = src[(int64_t)n * F * MM.d + m];
    }
  }
}

// out[n0+n][f][m] (= or +=) outT[f][n][m]: row f, column j = n*MM + m (transpose_dout's inverse).
__global__ void untranspose_out_kernel(const float* outT, int n0, int Nc, int F, FastDiv MM, float* out,
                                       bool accumulate) {
  const int cols = Nc * (int)MM.d;
  for (int f = blockIdx.y; f < F; f += gridDim.y) {
    const float* src = outT + (int64_t)f * cols;
    float* dst = out + ((int64_t)n0 * F + f) * MM.d;
    for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < cols; j += gridDim.x * blockDim.x) {
      int n, m;
      MM.divmod(j, n, m);
      float* o = dst + (int64_t)n * F * MM.d + m;
      *o = accumulate ? *o + src[j] : src[j];
    }
  }
}

void check_geom(const ConvGeom& g) {
  // (FastDiv divides by S, S*S, M, stride: all >= 1; covering() needs padding >= 0)
  CCN_CHECK(g.groups > 0 && g.F % g.groups == 0 && g.Cf > 0 && g.fs > 0 && g.stride > 0 && g.M > 0 && g.S > 0 &&
            g.padding >= 0);
  CCN_CHECK(g.vchan || g.Cf * g.groups == g.C, "plain groups need C = groups * Cf");
}

// The row kernels index a chunk's columns (Nc * MM, Nc * SS) and rows in int.
void check_chunk(const ConvGeom& g, int Nc) {
  const int64_t K = (int64_t)g.Cf * g.fs * g.fs;
  const int64_t most = (int64_t)Nc * std::max((int64_t)g.M * g.M, (int64_t)g.S * g.S);
  // (2^25 of headroom: a column index plus the grid's stride must stay an int too)
  CCN_CHECK(most + (1ll << 25) < (1ll << 31) && (int64_t)g.groups * K < (1ll << 31) && (int64_t)g.S * g.S < (1ll << 31),
            "a conv chunk of ", Nc, " cases is too large for the unfold kernels; lower CCN_UNFOLD_BYTES.");
}

}  // namespace

int conv_chunk_cases(const ConvGeom& g, bool bprop, bool with_din) {
  const int64_t K = (int64_t)g.Cf * g.fs * g.fs, MM = (int64_t)g.M * g.M;
  const int64_t per_case = (int64_t)g.groups * K * MM * (bprop && with_din ? 2 : 1) + (int64_t)g.F * MM;
  const int64_t bytes = per_case * (int64_t)sizeof(float);
  const int64_t c = bytes > 0 ? unfold_budget_bytes(kScratchBytes) / bytes : g.N;  // the CPU's conv_chunk rule
  return (int)std::max<int64_t>(1, std::min<int64_t>(g.N, c));
}

namespace {
// im2col of cases n0 .. n0+nc-1 (the geometry and chunk checked by the caller).
void unfold_chunk(CudaCtx& cx, const ConvGeom& g, const float* in, int n0, int nc, float* col) {
  const int64_t K = (int64_t)g.Cf * g.fs * g.fs;
  im2col_kernel<<<rows_grid(g.groups * K, (int64_t)nc * g.M * g.M, 256, kColsPerThread), 256, 0,
                  (cudaStream_t)cx.stream>>>(g, ConvDivs(g), in, n0, nc, col);
  CCN_CUDA_LAUNCHED();
}
}  // namespace

void conv_unfold(CudaCtx& cx, const ConvGeom& g, const float* in, int n0, int nc, float* col) {
  check_geom(g);
  CCN_CHECK(n0 >= 0 && nc >= 1 && n0 + nc <= g.N, "conv_unfold of cases ", n0, "..", n0 + nc - 1, " of ", g.N);
  check_chunk(g, nc);
  unfold_chunk(cx, g, in, n0, nc, col);
}

void conv_fprop(CudaCtx& cx, const ConvGeom& g, const float* in, const float* W, float* out, bool accumulate) {
  check_geom(g);
  const int K = g.Cf * g.fs * g.fs, MM = g.M * g.M, Fg = g.F / g.groups;
  const int Nc = conv_chunk_cases(g, false, false);
  check_chunk(g, Nc);
  const int64_t col_n = (int64_t)g.groups * K * Nc * MM;
  float* col = cx.scratch((size_t)(col_n + (int64_t)g.F * Nc * MM));
  float* outT = col + col_n;
  for (int n0 = 0; n0 < g.N; n0 += Nc) {
    const int nc = std::min(Nc, g.N - n0), cols = nc * MM;
    unfold_chunk(cx, g, in, n0, nc, col);
    for (int grp = 0; grp < g.groups; ++grp)
      sgemm(cx, true, false, Fg, cols, K, 1.f, W + grp * Fg, g.F, col + (int64_t)grp * K * cols, cols, 0.f,
            outT + (int64_t)grp * Fg * cols, cols);
    untranspose_out_kernel<<<rows_grid(g.F, cols, 256, kColsPerThread), 256, 0, (cudaStream_t)cx.stream>>>(
        outT, n0, nc, g.F, FastDiv(MM), out, accumulate);
    CCN_CUDA_LAUNCHED();
  }
}

void conv_bprop(CudaCtx& cx, const ConvGeom& g, const float* in, const float* W, const float* dout, float* din,
                float* dW) {
  check_geom(g);
  const int K = g.Cf * g.fs * g.fs, MM = g.M * g.M, Fg = g.F / g.groups;
  const int Nc = conv_chunk_cases(g, true, din != nullptr);
  check_chunk(g, Nc);
  const int64_t col_n = (int64_t)g.groups * K * Nc * MM;
  float* col = cx.scratch((size_t)(col_n * (din ? 2 : 1) + (int64_t)g.F * Nc * MM));
  float* dcol = col + col_n;
  float* doutT = col + col_n * (din ? 2 : 1);
  cudaStream_t st = (cudaStream_t)cx.stream;
  for (int n0 = 0; n0 < g.N; n0 += Nc) {
    const int nc = std::min(Nc, g.N - n0), cols = nc * MM;
    transpose_dout_kernel<<<rows_grid(g.F, cols, 256, kColsPerThread), 256, 0, st>>>(dout, n0, nc, g.F, FastDiv(MM),
                                                                                     doutT);
    CCN_CUDA_LAUNCHED();
    if (din) {
      for (int grp = 0; grp < g.groups; ++grp)
        sgemm(cx, false, false, K, cols, Fg, 1.f, W + grp * Fg, g.F, doutT + (int64_t)grp * Fg * cols, cols, 0.f,
              dcol + (int64_t)grp * K * cols, cols);
      col2im_kernel<<<rows_grid((int64_t)g.groups * g.Cf, (int64_t)nc * g.S * g.S, 256, kColsPerThread), 256, 0, st>>>(
          g, ConvDivs(g), dcol, n0, nc, din);
      CCN_CUDA_LAUNCHED();
    }
    if (dW) {
      unfold_chunk(cx, g, in, n0, nc, col);
      for (int grp = 0; grp < g.groups; ++grp)
        sgemm(cx, false, true, K, Fg, nc * MM, 1.f, col + (int64_t)grp * K * nc * MM, nc * MM,
              doutT + (int64_t)grp * Fg * nc * MM, nc * MM, 1.f, dW + grp * Fg, g.F);
    }
  }
}

// out: N x (F*MM); shared b: F, unshared b: F*MM. One thread per output element.
__global__ void conv_add_bias_kernel(float* out, const float* b, int N, int F, int MM, bool shared) {
  const int64_t total = (int64_t)N * F * MM;
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < total; e += (int64_t)gridDim.x * blockDim.x) {
    int64_t fm = e % ((int64_t)F * MM);
    out[e] += shared ? b[fm / MM] : b[fm];
  }
}
void conv_add_bias(CudaCtx& cx, float* out, const float* b, int N, int F, int MM, bool shared) {
  const int64_t total = (int64_t)N * F * MM;
  if (total <= 0) return;
  conv_add_bias_kernel<<<grid_for(total), 256, 0, (cudaStream_t)cx.stream>>>(out, b, N, F, MM, shared);
  CCN_CUDA_LAUNCHED();
}

// Shared biases: db[f] += sum over n, m of dout[n][f][m]. One block per filter, double sums;
// the block reads filter f's plane of each case in turn (coalesced, no index division).
__global__ void conv_shared_bias_grad_kernel(const float* dout, float* db, int N, int F, int MM) {
  __shared__ double sh[256];
  const int f = blockIdx.x;
  double s = 0;
  for (int n = 0; n < N; ++n) {
    const float* plane = dout + ((int64_t)n * F + f) * MM;
    for (int m = threadIdx.x; m < MM; m += blockDim.x) s += plane[m];
  }
  sh[threadIdx.x] = s;
  __syncthreads();
  for (int h = blockDim.x / 2; h > 0; h >>= 1) {
    if (threadIdx.x < h) sh[threadIdx.x] += sh[threadIdx.x + h];
    __syncthreads();
  }
  if (threadIdx.x == 0) db[f] += (float)sh[0];
}
void conv_bias_grad(CudaCtx& cx, const float* dout, float* db, int N, int F, int MM, bool shared) {
  if (N <= 0 || F <= 0) return;
  if (!shared) return add_col_sums(cx, dout, db, N, (int64_t)F * MM);  // db[f*MM + m] += sum_n
  conv_shared_bias_grad_kernel<<<F, 256, 0, (cudaStream_t)cx.stream>>>(dout, db, N, F, MM);
  CCN_CUDA_LAUNCHED();
}

}  // namespace ccn::cuda
