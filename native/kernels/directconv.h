// ccn/native/kernels/directconv.h: direct (no im2col) stride-1 convolution kernels for
// AVX-512, used by type=conv (native/layers/conv.cpp) when CCN_CONV_KERNEL picks them.
//
// One building block per direction, each on ONE case, single-threaded (conv.cpp runs one
// case per OpenMP thread, as for the GEMM path). Every array is plain float, row-major.
//
// Layouts (the caller prepares the padded / transposed copies; see conv.cpp):
//   src   "padded planes": cin planes of q x q floats, plane c at src + c*q*q, pixel (Y, X)
//         at Y*q + X (x fastest), zeros wherever the real image (or dout) has no pixel.
//   dst   "channel planes" (NCHW of one case): channel ch at dst + ch*dst_ld, pixel (y, x)
//         of the mo x mo output at y*mo + x. conv's out_n (F x P) and din_n (C x S*S) are this.
//   wp    "lane-packed weights": nb blocks of K = cin*fs*fs rows of 16 floats,
//         wp[(b*K + k)*16 + j], k = c*fs*fs + fy*fs + fx, lane j = output channel b*16 + j
//         (zero past nout). Output channels sit in the vector lanes, 16 per zmm.
//   dT    "lanes-last gradient": mo*mo rows of ldT floats, dT[(y*mo + x)*ldT + f] (f < nf,
//         zero for nf <= f < round_up(nf, 16)).
//   dw    weights as conv stores them: dw[k*ldw + f], k = c*fs*fs + fy*fs + fx.
//
// direct_fwd (forward, and the input gradient as a "full" convolution of the padded dout
// with flipped, transposed weights):
//   dst[map[j]*dst_ld + y*mo + x] += sum_{c,fy,fx} wp[(b*K + k)*16 + j'] * src[c*q*q + (y+fy)*q + x+fx]
//   for every output channel j = b*16 + j' < nout, 0 <= y, x < mo  (q >= mo + fs - 1).
// direct_dw (weight gradient of one case):
//   dw[k*ldw + f] += sum_{y,x < mo} src[c*q*q + (y+fy)*q + x+fx] * dT[(y*mo + x)*ldT + f]   (f < nf)
//
// The AVX-512 code lives in directconv.cpp, compiled with function-level target attributes;
// call these only when direct_conv_available() (the CPU has AVX-512F). No allocation inside.
#pragma once
#include <cstdint>

namespace ccn {

bool direct_conv_available();  // AVX-512F on this CPU (checked once)

// accumulate: dst += the sums; otherwise dst = bias[map[j]] (0 when bias is null) + the sums.
// acc: scratch of direct_fwd_scratch(mo, nout) floats, 64-byte aligned.
void direct_fwd(const float* src, int cin, int q, int fs, int mo, const float* wp, int nout, const int* map,
                float* dst, int64_t dst_ld, const float* bias, bool accumulate, float* acc);
inline int64_t direct_fwd_scratch(int mo, int nout) { return (int64_t)mo * mo * ((nout + 15) / 16) * 16; }
// dst[m*dst_ld + f] = src[f*src_ld + m] for f < nrow, 0 for nrow <= f < nrow_pad (a multiple
// of 16), m < ncol: dout_n (F x P) to the lanes-last dT.
void direct_transpose(const float* src, int64_t src_ld, int nrow, int64_t ncol, float* dst, int64_t dst_ld,
                      int nrow_pad);
void direct_dw(const float* src, int cin, int q, int fs, int mo, const float* dT, int ldT, int nf, float* dw,
               int64_t ldw);

// sum over n < N, m < P of dout[n*ld + m] in double, in conv.cpp's order: 8 lanes (lane =
// m mod 8, each summed over n and m in order), then the lanes in order. Bitwise equal to the
// scalar loop in ConvLayer::bias_grad, 8 lanes per instruction.
double shared_bias_grad(const float* dout, int64_t ld, int N, int64_t P);

// lanes[m mod 8] += g[m] for m < P, in order, in double (one case of the above).
void bias_lanes_add(const float* g, int64_t P, double* lanes);

// Kernel-use counters (tests assert which kernel ran; `ccn info` lists the kernels).
enum ConvKernelCounter { kGemmFprop, kGemmBprop, kDirectFprop, kDirectBprop, kConvCounters };
void count_conv_kernel(ConvKernelCounter c);
int64_t conv_kernel_count(ConvKernelCounter c);
void reset_conv_kernel_counts();

}  // namespace ccn
