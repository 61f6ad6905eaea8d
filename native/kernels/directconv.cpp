// ccn/native/kernels/directconv.cpp: direct stride-1 convolution for AVX-512 (layouts and
// formulas in directconv.h).
//
// Every function that uses AVX-512 carries __attribute__((target("avx512f"))) instead of
// compiling this file with -mavx512f: inline library code (std::, instantiated templates)
// is then still emitted for the baseline ISA, so the linker cannot pick an AVX-512 copy of a
// shared COMDAT function for code that runs on CPUs without AVX-512.
//
// direct_fwd: output channels in the lanes, FV zmm (16*FV channels) x R output pixels of one
// row in FV*R accumulators; per tap (c, fy, fx) FV weight loads, R broadcasts of input
// pixels (embedded in the FMA) and FV*R FMAs. The input channels are taken in chunks whose
// packed weights fit L1; each tile's sums go to a lanes-last scratch (pixel-major, 16
// channels per pixel) between chunks, which is finally transposed 16 x 16 in registers and
// written (bias +) or added into the channel planes.
// direct_dw: filters in the lanes, accumulators for NY x NX taps x FV zmm of filters, summed
// over every output pixel of the case: per pixel FV loads of the gradient row and NY*NX
// broadcasts of input pixels for FV*NY*NX FMAs; added into dw (masked past nf) at the end.
#include "kernels/directconv.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <atomic>
#include <utility>

#include "core/error.h"

#define CCN_AVX512 __attribute__((target("avx512f")))
// The tap loops read overlapping pixels (tap fx, pixel r+1 is tap fx+1, pixel r). GCC's
// predictive commoning (-O3) then keeps the pixels in xmm registers and broadcasts them with
// register-source vbroadcastss, which issue on port 5, one of the two 512-bit FMA ports:
// a third of the FMA slots lost. Without it every broadcast is a load-port-only memory
// broadcast.
#if defined(__clang__)
#define CCN_KERNEL CCN_AVX512  // clang has no predictive commoning pass (nor this attribute)
#else
#define CCN_KERNEL CCN_AVX512 __attribute__((optimize("no-predictive-commoning")))
#endif

// GCC 12 reports its own _mm512_setzero_ps/_mm512_maskz_loadu_ps (the _mm512_undefined_ps
// inside) as "maybe uninitialized" once inlined: a known false positive.
#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace ccn {

namespace {

std::atomic<int64_t> g_counts[kConvCounters];

#if defined(__x86_64__)

// acc[v*abs + r*16 + lane] (+)= the taps of channels [0, cin) for R pixels of one row; the
// accumulators start from zero (first) or from acc.
template <int FV, int R>
CCN_KERNEL void fwd_tile(const float* src, int cin, int q, int fs, const float* wp, int64_t K, float* acc_buf,
                         int64_t abs, bool first) {
  __m512 acc[FV][R];
#pragma GCC unroll 16
  for (int v = 0; v < FV; ++v)
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) acc[v][r] = first ? _mm512_setzero_ps() : _mm512_load_ps(acc_buf + v * abs + r * 16);
  const int64_t plane = (int64_t)q * q;
  const int64_t bstride = K * 16;  // next block of 16 output channels
  const float* w = wp;
  for (int c = 0; c < cin; ++c) {
    const float* cp = src + c * plane;
    for (int fy = 0; fy < fs; ++fy) {
      const float* rp = cp + (int64_t)fy * q;
      for (int fx = 0; fx < fs; ++fx, w += 16) {
        __m512 wv[FV];
#pragma GCC unroll 16
        for (int v = 0; v < FV; ++v) wv[v] = _mm512_loadu_ps(w + v * bstride);
#pragma GCC unroll 16
        for (int r = 0; r < R; ++r) {
          const __m512 b = _mm512_set1_ps(rp[fx + r]);
#pragma GCC unroll 16
          for (int v = 0; v < FV; ++v) acc[v][r] = _mm512_fmadd_ps(wv[v], b, acc[v][r]);
        }
      }
    }
  }
#pragma GCC unroll 16
  for (int v = 0; v < FV; ++v)
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) _mm512_store_ps(acc_buf + v * abs + r * 16, acc[v][r]);
}

// In-register transpose of a 16 x 16 block: r[i] lane j becomes r[j] lane i.
CCN_AVX512 inline void transpose16(__m512 r[16]) {
  __m512 t[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {
    r[4 * i + 0] = _mm512_shuffle_ps(t[4 * i + 0], t[4 * i + 2], 0x44);
    r[4 * i + 1] = _mm512_shuffle_ps(t[4 * i + 0], t[4 * i + 2], 0xEE);
    r[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
    r[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
  }
  for (int i = 0; i < 4; ++i) {
    t[i] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0x88);
    t[i + 4] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0xDD);
    t[i + 8] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0x88);
    t[i + 12] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0xDD);
  }
  for (int i = 0; i < 8; ++i) {
    r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
    r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xDD);
  }
}

typedef void (*FwdTileFn)(const float*, int, int, int, const float*, int64_t, float*, int64_t, bool);

constexpr int kMaxR1 = 16;  // pixels per tile with one zmm of channels
constexpr int kMaxR2 = 12;  // with two
constexpr int kMaxR4 = 6;   // with four (4 weight loads + R broadcasts per 4R FMAs)
// Channels per pass over the case: their packed weights for two zmm of output channels,
// cb * fs^2 * 128 bytes, stay within about 32 KB (L1) while every tile of the case uses them.
constexpr int64_t kFwdChunkBytes = 32 << 10;

template <int FV, int... Rs>
constexpr FwdTileFn fwd_pick(int R, std::integer_sequence<int, Rs...>) {
  FwdTileFn t[] = {fwd_tile<FV, Rs + 1>...};
  return t[R - 1];
}

FwdTileFn fwd_fn(int FV, int R) {
  if (FV == 1) return fwd_pick<1>(R, std::make_integer_sequence<int, kMaxR1>{});
  if (FV == 4) return fwd_pick<4>(R, std::make_integer_sequence<int, kMaxR4>{});
  return fwd_pick<2>(R, std::make_integer_sequence<int, kMaxR2>{});
}

// One block of the weight gradient of one case: taps (fy0 + iy, fx0 + ix), iy < NY, ix < NX,
// of one input channel, filters f0 .. f0 + 16*FV - 1 (nvalid of them real):
//   sp = padded plane + fy0*q + fx0 (q x q, x fastest), dT = lanes-last dout + f0 (mo*mo rows
//   of ldT floats), dw = dw + (c*fs*fs + fy0*fs + fx0)*ldw + f0 (row per tap, filters last):
//   dw[(iy*fs + ix)*ldw + lane] += sum_{y,x < mo} sp[(y+iy)*q + x+ix] * dT[(y*mo + x)*ldT + lane]
template <int FV, int NY, int NX>
CCN_KERNEL void dw_block(const float* sp, int q, int mo, const float* dT, int ldT, int nvalid, float* dw,
                         int64_t ldw, int fs) {
  __m512 acc[NY][NX][FV];
#pragma GCC unroll 16
  for (int iy = 0; iy < NY; ++iy)
#pragma GCC unroll 16
    for (int ix = 0; ix < NX; ++ix)
#pragma GCC unroll 16
      for (int v = 0; v < FV; ++v) acc[iy][ix][v] = _mm512_setzero_ps();
  for (int y = 0; y < mo; ++y) {
    const float* d = dT + (int64_t)y * mo * ldT;
    const float* p = sp + (int64_t)y * q;
    for (int x = 0; x < mo; ++x, d += ldT, ++p) {
      __m512 dv[FV];
#pragma GCC unroll 16
      for (int v = 0; v < FV; ++v) dv[v] = _mm512_loadu_ps(d + 16 * v);
#pragma GCC unroll 16
      for (int iy = 0; iy < NY; ++iy)
#pragma GCC unroll 16
        for (int ix = 0; ix < NX; ++ix) {
          const __m512 b = _mm512_set1_ps(p[iy * q + ix]);
#pragma GCC unroll 16
          for (int v = 0; v < FV; ++v) acc[iy][ix][v] = _mm512_fmadd_ps(b, dv[v], acc[iy][ix][v]);
        }
    }
  }
#pragma GCC unroll 16
  for (int v = 0; v < FV; ++v) {
    const int n = nvalid - 16 * v;
    const __mmask16 m = n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1);
#pragma GCC unroll 16
    for (int iy = 0; iy < NY; ++iy)
#pragma GCC unroll 16
      for (int ix = 0; ix < NX; ++ix) {
        float* o = dw + (int64_t)(iy * fs + ix) * ldw + 16 * v;
        const __m512 old = _mm512_maskz_loadu_ps(m, o);
        _mm512_mask_storeu_ps(o, m, _mm512_add_ps(old, acc[iy][ix][v]));
      }
  }
}

typedef void (*DwBlockFn)(const float*, int, int, const float*, int, int, float*, int64_t, int);
constexpr int kMaxNX = 6, kMaxNY = 4;

template <int FV, int NY, int... NXs>
constexpr DwBlockFn dw_pick_x(int NX, std::integer_sequence<int, NXs...>) {
  DwBlockFn t[] = {dw_block<FV, NY, NXs + 1>...};
  return t[NX - 1];
}

template <int FV>
DwBlockFn dw_pick(int NY, int NX) {
  constexpr auto xs = std::make_integer_sequence<int, kMaxNX>{};
  switch (NY) {
    case 1: return dw_pick_x<FV, 1>(NX, xs);
    case 2: return dw_pick_x<FV, 2>(NX, xs);
    case 3: return dw_pick_x<FV, 3>(NX, xs);
    default: return dw_pick_x<FV, 4>(NX, xs);
  }
}

// n split into ceil(n / most) near-equal chunks: chunk i is [n*i/k, n*(i+1)/k).
inline int chunks(int n, int most) { return (n + most - 1) / most; }

}  // namespace

bool direct_conv_available() {
  static const bool ok = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") != 0;
  }();
  return ok;
}

CCN_AVX512 void direct_fwd(const float* src, int cin, int q, int fs, int mo, const float* wp, int nout,
                           const int* map, float* dst, int64_t dst_ld, const float* bias, bool accumulate,
                           float* acc) {
  const int64_t K = (int64_t)cin * fs * fs, P = (int64_t)mo * mo, abs = P * 16;
  const int nb = (nout + 15) / 16;
  const int64_t f2 = (int64_t)fs * fs;
  const int fvmax = nb >= 4 ? 4 : 2;
  int cb = (int)(kFwdChunkBytes / (f2 * 64 * fvmax));
  cb = cb < 1 ? 1 : cb > cin ? cin : cb;
  const int ncb = (cin + cb - 1) / cb;
  // acc[b*P*16 + m*16 + lane]: channel b*16 + lane of pixel m, summed over the channel chunks.
  for (int k = 0; k < ncb; ++k) {
    const int c0 = (int)((int64_t)cin * k / ncb), c1 = (int)((int64_t)cin * (k + 1) / ncb);
    for (int b = 0; b < nb;) {
      const int FV = nb - b >= 4 ? 4 : nb - b >= 2 ? 2 : 1;
      const int maxr = FV == 4 ? kMaxR4 : FV == 2 ? kMaxR2 : kMaxR1;
      const int nk = chunks(mo, maxr);
      const float* w = wp + (int64_t)b * K * 16 + c0 * f2 * 16;
      for (int y = 0; y < mo; ++y)
        for (int kx = 0; kx < nk; ++kx) {
          const int x0 = mo * kx / nk, R = mo * (kx + 1) / nk - x0;
          fwd_fn(FV, R)(src + (int64_t)c0 * q * q + (int64_t)y * q + x0, c1 - c0, q, fs, w, K,
                        acc + b * abs + ((int64_t)y * mo + x0) * 16, abs, k == 0);
        }
      b += FV;
    }
  }
  // Lanes-last to channel planes: 16 x 16 transposes, then add (or bias +) per channel.
  for (int b = 0; b < nb; ++b) {
    const int nl = nout - b * 16 < 16 ? nout - b * 16 : 16;
    const float* ab = acc + b * abs;
    for (int64_t m0 = 0; m0 < P; m0 += 16) {
      const int64_t np = P - m0 < 16 ? P - m0 : 16;
      const __mmask16 pm = np == 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << np) - 1);
      __m512 r[16];
      for (int i = 0; i < 16; ++i) r[i] = i < np ? _mm512_load_ps(ab + (m0 + i) * 16) : _mm512_setzero_ps();
      transpose16(r);
      for (int j = 0; j < nl; ++j) {
        const int ch = map[b * 16 + j];
        float* d = dst + ch * dst_ld + m0;
        const __m512 base = accumulate ? _mm512_maskz_loadu_ps(pm, d) : _mm512_set1_ps(bias ? bias[ch] : 0.f);
        _mm512_mask_storeu_ps(d, pm, _mm512_add_ps(base, r[j]));
      }
    }
  }
}

void direct_dw(const float* src, int cin, int q, int fs, int mo, const float* dT, int ldT, int nf, float* dw,
               int64_t ldw) {
  const int nb = (nf + 15) / 16;
  const int64_t plane = (int64_t)q * q;
  for (int b = 0; b < nb;) {
    const int FV = nb - b >= 2 ? 2 : 1;
    const int nvalid = nf - b * 16;
    const int nkx = chunks(fs, kMaxNX);
    for (int kx = 0; kx < nkx; ++kx) {
      const int fx0 = fs * kx / nkx, NX = fs * (kx + 1) / nkx - fx0;
      int most_y = 24 / (FV * NX);
      most_y = most_y < 1 ? 1 : most_y > kMaxNY ? kMaxNY : most_y;
      const int nky = chunks(fs, most_y);
      for (int ky = 0; ky < nky; ++ky) {
        const int fy0 = fs * ky / nky, NY = fs * (ky + 1) / nky - fy0;
        const DwBlockFn fn = FV == 2 ? dw_pick<2>(NY, NX) : dw_pick<1>(NY, NX);
        for (int c = 0; c < cin; ++c)
          fn(src + c * plane + (int64_t)fy0 * q + fx0, q, mo, dT + b * 16, ldT, nvalid,
             dw + ((int64_t)c * fs * fs + (int64_t)fy0 * fs + fx0) * ldw + b * 16, ldw, fs);
      }
    }
    b += FV;
  }
}

// src: nrow rows of ncol floats (stride src_ld, NCHW channel planes); dst: ncol rows of
// nrow_pad floats (stride dst_ld, lanes last), in 16 x 16 blocks through transpose16.
CCN_AVX512 void direct_transpose(const float* src, int64_t src_ld, int nrow, int64_t ncol, float* dst, int64_t dst_ld,
                                 int nrow_pad) {
  for (int f0 = 0; f0 < nrow_pad; f0 += 16)
    for (int64_t m0 = 0; m0 < ncol; m0 += 16) {
      const int64_t nc = ncol - m0 < 16 ? ncol - m0 : 16;
      const __mmask16 cm = nc == 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << nc) - 1);
      __m512 r[16];
      for (int i = 0; i < 16; ++i)
        r[i] = f0 + i < nrow ? _mm512_maskz_loadu_ps(cm, src + (f0 + i) * src_ld + m0) : _mm512_setzero_ps();
      transpose16(r);
      for (int64_t i = 0; i < nc; ++i) _mm512_storeu_ps(dst + (m0 + i) * dst_ld + f0, r[i]);
    }
}

CCN_AVX512 void bias_lanes_add(const float* g, int64_t P, double* lanes) {
  __m512d acc = _mm512_loadu_pd(lanes);
  int64_t m = 0;
  for (; m + 8 <= P; m += 8) acc = _mm512_add_pd(acc, _mm512_cvtps_pd(_mm256_loadu_ps(g + m)));
  _mm512_storeu_pd(lanes, acc);
  for (; m < P; ++m) lanes[m % 8] += g[m];
}

// dout: N rows of ld floats (one filter's P modules at the start of each); see directconv.h.
// One case at a time through bias_lanes_add: the same additions per lane, in the same order.
double shared_bias_grad(const float* dout, int64_t ld, int N, int64_t P) {
  double lanes[8] = {};
  for (int n = 0; n < N; ++n) bias_lanes_add(dout + n * ld, P, lanes);
  double s = 0;
  for (int j = 0; j < 8; ++j) s += lanes[j];
  return s;
}

#else  // not x86-64 (e.g. ARM): no AVX-512, so no direct kernels; conv uses im2col + GEMM

}  // namespace

bool direct_conv_available() { return false; }
[[noreturn]] static void no_direct() { runtime_error("the direct conv kernels need an x86-64 CPU with AVX-512F."); }
void direct_fwd(const float*, int, int, int, int, const float*, int, const int*, float*, int64_t, const float*, bool,
                float*) { no_direct(); }
void direct_transpose(const float*, int64_t, int, int64_t, float*, int64_t, int) { no_direct(); }
void direct_dw(const float*, int, int, int, int, const float*, int, int, float*, int64_t) { no_direct(); }
void bias_lanes_add(const float*, int64_t, double*) { no_direct(); }
double shared_bias_grad(const float*, int64_t, int, int64_t) { no_direct(); }

#endif  // x86-64

void count_conv_kernel(ConvKernelCounter c) { g_counts[c].fetch_add(1, std::memory_order_relaxed); }
int64_t conv_kernel_count(ConvKernelCounter c) { return g_counts[c].load(std::memory_order_relaxed); }
void reset_conv_kernel_counts() {
  for (auto& c : g_counts) c.store(0, std::memory_order_relaxed);
}

}  // namespace ccn
