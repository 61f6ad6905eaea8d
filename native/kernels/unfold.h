// ccn/native/kernels/unfold.h: unfold (im2col) and fold (col2im) for conv and local layers.
//
// An image batch is B cases of C x S x S floats (NCHW per case, x fastest), case b at
// imgs + b * ld. A filter of size fs is applied at modulesX x modulesX positions
// ("modules"); module (my, mx) covers the pixels
//     y = my * stride - pad + fy,  x = mx * stride - pad + fx,   0 <= fy, fx < fs,
// and pixels outside the image read as 0 (the bottom/right overhang may exceed `pad`).
//
// The filter sees "virtual channels": vchan[v] is the image channel read as filter channel
// v. With groups, v = g * filterChannels + c, so the rows of group g are one contiguous
// block; the plain case is vchan = 0..C-1; random-sparse connectivity repeats or permutes
// channels. One unfolded row per (v, fy, fx):
//     k = v * fs^2 + fy * fs + fx            (K = |vchan| * fs^2 rows)
//     m = my * modulesX + mx                 (P = modulesX^2 modules)
//
// Two column layouts:
//   image-major  col[(b * K + k) * P + m]   (per case a K x P matrix: conv GEMMs per case)
//   module-major col[(m * B + b) * K + k]   (per module a B x K matrix: local GEMMs per module)
// fold_* is the transpose of unfold_*: it ADDS each column entry into the pixel it came from
// (entries that fall outside the image are dropped).
//
// The module-major pair is parallelised with OpenMP; the image-major pair handles one case
// serially (conv calls it from its own per-case parallel loop). None calls BLAS.
#pragma once
#include <cstdint>
#include <vector>

namespace ccn {

// Bytes of unfolded columns a conv/local layer may hold at once: the environment variable
// CCN_UNFOLD_BYTES when it is a positive integer (tests use it to exercise the chunked
// paths on small tensors), else `default_bytes`. Read on every call. Shared by the CPU layers
// (layers/conv_common.h conv_chunk) and the CUDA conv (cuda/kernels.h conv_chunk_cases).
int64_t unfold_budget_bytes(int64_t default_bytes);

struct UnfoldGeom {
  int channels = 0;        // C, image channels
  int size = 0;            // S, image rows = cols
  int fsize = 1;           // fs
  int pad = 0;             // zero padding on the top/left (and at least that on the bottom/right)
  int stride = 1;
  int modules_x = 0;       // modulesX
  std::vector<int> vchan;  // virtual channel -> image channel

  int64_t rows() const { return (int64_t)vchan.size() * fsize * fsize; }  // K
  int64_t modules() const { return (int64_t)modules_x * modules_x; }     // P
  int64_t image_size() const { return (int64_t)channels * size * size; }
};

// Image-major, one case (img: C x S x S; col: K x P), serial (callers run one case per
// thread). q: scratch of padded_plane_size(g) floats, the caller's (no allocation here).
int64_t padded_plane_size(const UnfoldGeom& g);
void unfold_image_major(const UnfoldGeom& g, const float* img, float* col, float* q);
// fold: dimg += the columns' contributions; assign: dimg = them (every pixel written, +0
// where no column reads; the sums start at +0 as on a zeroed dimg, so bitwise the same).
void fold_image_major(const UnfoldGeom& g, const float* col, float* dimg, float* q, bool assign = false);
void unfold_module_major(const UnfoldGeom& g, const float* imgs, int64_t ld, int B, float* col);
void fold_module_major(const UnfoldGeom& g, const float* col, int B, float* dimgs, int64_t ld);

}  // namespace ccn
