// ccn/native/kernels/unfold.cpp: unfold/fold for conv and local layers (layouts in unfold.h).
#include "kernels/unfold.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

namespace ccn {

int64_t unfold_budget_bytes(int64_t default_bytes) {
  if (const char* e = std::getenv("CCN_UNFOLD_BYTES")) {
    long long v = std::atoll(e);
    if (v > 0) return v;
  }
  return default_bytes;
}

namespace {

// Modules mx (or my) whose tap at filter offset f lands inside the image: [lo, hi).
// Tap position = mx * stride - pad + f.
struct Range {
  int lo, hi;
};
inline Range valid_range(int f, const UnfoldGeom& g) {
  const int first = g.pad - f;  // smallest allowed mx * stride
  int lo = first <= 0 ? 0 : (first + g.stride - 1) / g.stride;
  const int last = g.size - 1 + g.pad - f;  // largest allowed mx * stride
  int hi = last < 0 ? 0 : last / g.stride + 1;
  hi = std::min(hi, g.modules_x);
  lo = std::min(lo, hi);
  return {lo, hi};
}

// For each image channel, the virtual channels that read it (several with random-sparse
// connectivity), so folds can run in parallel over (case, image channel) without races.
std::vector<std::vector<int>> readers(const UnfoldGeom& g) {
  std::vector<std::vector<int>> r(g.channels);
  for (size_t v = 0; v < g.vchan.size(); ++v) r[g.vchan[v]].push_back((int)v);
  return r;
}

// d[i] = s[i * st] for 0 <= i < n. Strides 1, 2 and 4 (the common conv strides) get loops
// with a constant stride, which the compiler vectorises (loads and shuffles).
inline void strided_copy(float* d, const float* s, int n, int st) {
  switch (st) {
    case 1:  // rows are short (modulesX floats): an inlined loop beats a memcpy call
      for (int i = 0; i < n; ++i) d[i] = s[i];
      break;
    case 2:
      for (int i = 0; i < n; ++i) d[i] = s[2 * i];
      break;
    case 4:
      for (int i = 0; i < n; ++i) d[i] = s[4 * i];
      break;
    default:
      for (int i = 0; i < n; ++i) d[i] = s[(int64_t)i * st];
  }
}

// d[i * st] += s[i] for 0 <= i < n, the transpose of strided_copy (same constant strides).
inline void strided_add(float* d, const float* s, int n, int st) {
  switch (st) {
    case 1:
      for (int i = 0; i < n; ++i) d[i] += s[i];
      break;
    case 2:
      for (int i = 0; i < n; ++i) d[2 * i] += s[i];
      break;
    case 4:
      for (int i = 0; i < n; ++i) d[4 * i] += s[i];
      break;
    default:
      for (int i = 0; i < n; ++i) d[(int64_t)i * st] += s[i];
  }
}

}  // namespace

int64_t padded_plane_size(const UnfoldGeom& g) {
  const int64_t Q = (int64_t)(g.modules_x - 1) * g.stride + g.fsize;
  return Q * Q;
}

namespace {

// The padded plane: Q x Q with Q = (modulesX - 1) * stride + fs, pixel (y', x') holding image
// pixel (y' - pad, x' - pad), exactly the pixels the filter taps reach; pixels outside the
// image are 0 (pad_plane) or scratch (fold). Module (my, mx)'s tap (fy, fx) reads
// (my*st + fy, mx*st + fx): no range checks.
int padded_side(const UnfoldGeom& g) { return (g.modules_x - 1) * g.stride + g.fsize; }

// q (Q x Q) = plane (S x S) shifted by (pad, pad), 0 outside the image.
void pad_plane(const UnfoldGeom& g, const float* plane, float* q) {
  const int Q = padded_side(g), S = g.size, pad = g.pad;
  const int x_lo = std::min(pad, Q), x_hi = std::min(Q, S + pad);  // x' in [x_lo, x_hi) inside
  for (int yq = 0; yq < Q; ++yq) {
    float* qr = q + (int64_t)yq * Q;
    const int y = yq - pad;
    if (y < 0 || y >= S) {
      std::fill(qr, qr + Q, 0.f);
      continue;
    }
    const float* r = plane + (int64_t)y * S;
    for (int xq = 0; xq < x_lo; ++xq) qr[xq] = 0.f;
    for (int xq = x_lo; xq < x_hi; ++xq) qr[xq] = r[xq - pad];
    for (int xq = std::max(x_lo, x_hi); xq < Q; ++xq) qr[xq] = 0.f;
  }
}

}  // namespace

// col[k*P + m] = img[vchan[v], my*st - pad + fy, mx*st - pad + fx] (0 outside), one case:
// each virtual channel is padded into q, then every (fy, fx) row is M copies of M pixels.
void unfold_image_major(const UnfoldGeom& g, const float* img, float* col, float* q) {
  const int fs = g.fsize, M = g.modules_x, S = g.size, st = g.stride, Q = padded_side(g);
  const int V = (int)g.vchan.size();
  const int64_t P = g.modules();
  for (int v = 0; v < V; ++v) {
    pad_plane(g, img + (int64_t)g.vchan[v] * S * S, q);
    float* dst = col + (int64_t)v * fs * fs * P;
    for (int fy = 0; fy < fs; ++fy)
      for (int fx = 0; fx < fs; ++fx) {
        float* d = dst + (int64_t)(fy * fs + fx) * P;
        for (int my = 0; my < M; ++my) strided_copy(d + (int64_t)my * M, q + (int64_t)(my * st + fy) * Q + fx, M, st);
      }
  }
}

// dimg[vchan[v], y, x] += col[k*P + m] over every (k, m) that reads (y, x), one case. Per image
// channel: its gradient plane is copied into the padded q, the entries are added in the same
// order as without padding (v, fy, fx, my, mx; those outside the image land in q's border),
// and the image part is copied back: every pixel gets the same sums in the same order.
void fold_image_major(const UnfoldGeom& g, const float* col, float* dimg, float* q, bool assign) {
  const int fs = g.fsize, M = g.modules_x, S = g.size, st = g.stride, C = g.channels, Q = padded_side(g);
  const int64_t P = g.modules();
  const int lo = std::min(g.pad, Q), hi = std::min(Q, S + g.pad);  // q's rows/cols [lo, hi) are the image's
  for (int c = 0; c < C; ++c) {
    bool read = false;
    for (size_t v = 0; v < g.vchan.size() && !read; ++v) read = g.vchan[v] == c;
    float* plane = dimg + (int64_t)c * S * S;
    if (!read) {
      if (assign) std::fill(plane, plane + (int64_t)S * S, 0.f);
      continue;
    }
    if (assign) {  // q as pad_plane makes it from a zeroed plane; pixels q does not cover: 0
      std::fill(q, q + (int64_t)Q * Q, 0.f);
      if (lo != g.pad || hi - lo < S) std::fill(plane, plane + (int64_t)S * S, 0.f);
    } else {
      pad_plane(g, plane, q);
    }
    for (size_t v = 0; v < g.vchan.size(); ++v) {
      if (g.vchan[v] != c) continue;
      const float* src = col + (int64_t)v * fs * fs * P;
      for (int fy = 0; fy < fs; ++fy)
        for (int fx = 0; fx < fs; ++fx) {
          const float* s = src + (int64_t)(fy * fs + fx) * P;
          for (int my = 0; my < M; ++my)
            strided_add(q + (int64_t)(my * st + fy) * Q + fx, s + (int64_t)my * M, M, st);
        }
    }
    for (int yq = lo; yq < hi; ++yq) {
      float* r = plane + (int64_t)(yq - g.pad) * S;
      const float* qr = q + (int64_t)yq * Q;
      for (int xq = lo; xq < hi; ++xq) r[xq - g.pad] = qr[xq];
    }
  }
}

// col[(m*B + b)*K + k] = img_b[vchan[v], my*st - pad + fy, mx*st - pad + fx] (0 outside).
void unfold_module_major(const UnfoldGeom& g, const float* imgs, int64_t ld, int B, float* col) {
  const int fs = g.fsize, M = g.modules_x, S = g.size, st = g.stride;
  const int V = (int)g.vchan.size();
  const int64_t P = g.modules(), K = g.rows();
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t m = 0; m < P; ++m)
    for (int b = 0; b < B; ++b) {
      const int my = (int)(m / M), mx = (int)(m % M);
      const int y0 = my * st - g.pad, x0 = mx * st - g.pad;
      float* dst = col + (m * B + b) * K;
      const float* img = imgs + b * ld;
      for (int v = 0; v < V; ++v) {
        const float* src = img + (int64_t)g.vchan[v] * S * S;
        for (int fy = 0; fy < fs; ++fy) {
          float* d = dst + (int64_t)(v * fs + fy) * fs;
          const int y = y0 + fy;
          if (y < 0 || y >= S) {
            std::memset(d, 0, sizeof(float) * fs);
            continue;
          }
          for (int fx = 0; fx < fs; ++fx) {
            const int x = x0 + fx;
            d[fx] = (x >= 0 && x < S) ? src[(int64_t)y * S + x] : 0.f;
          }
        }
      }
    }
}

// dimg_b[vchan[v], y, x] += col[(m*B + b)*K + k] over every (m, k) that reads (y, x).
void fold_module_major(const UnfoldGeom& g, const float* col, int B, float* dimgs, int64_t ld) {
  const int fs = g.fsize, M = g.modules_x, S = g.size, st = g.stride, C = g.channels;
  const int64_t P = g.modules(), K = g.rows();
  const auto rd = readers(g);
#pragma omp parallel for collapse(2) schedule(static)
  for (int b = 0; b < B; ++b)
    for (int c = 0; c < C; ++c) {
      float* dimg = dimgs + b * ld + (int64_t)c * S * S;
      for (int64_t m = 0; m < P; ++m) {
        const int my = (int)(m / M), mx = (int)(m % M);
        const int y0 = my * st - g.pad, x0 = mx * st - g.pad;
        const float* src = col + (m * B + b) * K;
        for (int v : rd[c])
          for (int fy = 0; fy < fs; ++fy) {
            const int y = y0 + fy;
            if (y < 0 || y >= S) continue;
            const float* s = src + (int64_t)(v * fs + fy) * fs;
            float* dr = dimg + (int64_t)y * S;
            for (int fx = 0; fx < fs; ++fx) {
              const int x = x0 + fx;
              if (x >= 0 && x < S) dr[x] += s[fx];
            }
          }
      }
    }
}

}  // namespace ccn
