// Cases the CUDA simulator (tools/cudasim) must compute right or must catch, run one at a
// time by test_simulator.py:  sim_cases CASE  -> prints "name value" lines; a caught mistake
// shows as a CUDA error code (and the simulator's report on stderr), or as a crash for host
// code touching device memory.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <vector>

extern "C" {  // the cuBLAS v2 entry points libccnsim_rt.so exports
int cublasCreate_v2(void** h);
int cublasSetStream_v2(void* h, cudaStream_t s);
int cublasSgemm_v2(void* h, int ta, int tb, int m, int n, int k, const float* alpha, const float* A, int lda,
                   const float* B, int ldb, const float* beta, float* C, int ldc);
}

// x[i] = v for i < n (one element per thread)
__global__ void fill_kernel(float* x, int n, float v) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) x[i] = v;
}
// out[i] = 2 x[i]; no bounds check when `checked` is 0
__global__ void twice_kernel(const float* x, float* out, int n, int checked) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (checked && i >= n) return;
  out[i] = 2 * x[i];
}
// out[blockIdx.x] = sum of x[0..n) (shared memory tree reduction, 256 threads)
__global__ void block_sum_kernel(const float* x, float* out, int n) {
  __shared__ float sh[256];
  float s = 0;
  for (int i = threadIdx.x; i < n; i += blockDim.x) s += x[i];
  sh[threadIdx.x] = s;
  __syncthreads();
  for (int w = blockDim.x / 2; w > 0; w /= 2) {
    if ((int)threadIdx.x < w) sh[threadIdx.x] += sh[threadIdx.x + w];
    __syncthreads();
  }
  if (threadIdx.x == 0) out[blockIdx.x] = sh[0];
}
// out[i] = x[i] for i <= n: one element too many, copied from x's slack into out's
__global__ void copy_one_too_many_kernel(const float* x, float* out, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i <= n) out[i] = x[i];
}
// x[i] = x[i - 1] + 1 with no barrier: a race, whose result depends on the thread order
__global__ void racy_kernel(float* x, int n) {
  int i = threadIdx.x;
  if (i > 0 && i < n) x[i] = x[i - 1] + 1;
}
// writes x[-3]
__global__ void before_start_kernel(float* x) { x[-3] = 1; }

// out[i] = expf(x[i]), out[n + i] = powf(x[i], 0.75f) (the device's math functions)
__global__ void math_kernel(const float* x, float* out, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) {
    out[i] = expf(x[i]);
    out[n + i] = powf(fabsf(x[i]), 0.75f);
  }
}
// block 0 writes its shared array, every block reads its own after the barrier
__global__ void shared_leftover_kernel(float* out) {
  __shared__ float s[4];
  if (blockIdx.x == 0) s[threadIdx.x] = 7;
  __syncthreads();
  out[blockIdx.x * 4 + threadIdx.x] = s[threadIdx.x];
}
// half the threads return before the barrier the others wait at
__global__ void divergent_kernel(float* out) {
  if (threadIdx.x >= 16) return;
  __syncthreads();
  out[threadIdx.x] = 1;
}

static float* dev(int n) {
  float* p = nullptr;
  if (cudaMalloc(&p, n * sizeof(float)) != cudaSuccess) std::printf("cudaMalloc failed\n");
  return p;
}
static std::vector<float> get(const float* d, int n) {
  std::vector<float> h(n);
  cudaError_t e = cudaMemcpy(h.data(), d, n * sizeof(float), cudaMemcpyDeviceToHost);
  std::printf("copy_back %d\n", (int)e);
  return h;
}

int main(int argc, char** argv) {
  const char* c = argc > 1 ? argv[1] : "";
  if (!std::strcmp(c, "reduce")) {  // 3 blocks each sum 1..1000
    std::vector<float> h(1000);
    for (int i = 0; i < 1000; ++i) h[i] = (float)(i + 1);
    float *x = dev(1000), *out = dev(3);
    cudaMemcpy(x, h.data(), sizeof(float) * 1000, cudaMemcpyHostToDevice);
    block_sum_kernel<<<3, 256>>>(x, out, 1000);
    std::printf("launch %d\n", (int)cudaGetLastError());
    for (float v : get(out, 3)) std::printf("sum %.1f\n", v);
  } else if (!std::strcmp(c, "math")) {  // expf and powf against the nearest float, twice
    const int n = 4000;
    std::vector<float> h(n);
    for (int i = 0; i < n; ++i) h[i] = -20.f + 40.f * (float)i / (float)n + 1e-3f * (float)(i % 7);
    h[0] = 0.f;  // expf(0) = 1 exactly
    float *x = dev(n), *out = dev(2 * n);
    cudaMemcpy(x, h.data(), sizeof(float) * n, cudaMemcpyHostToDevice);
    std::vector<float> first;
    for (int run = 0; run < 2; ++run) {
      math_kernel<<<(n + 255) / 256, 256>>>(x, out, n);
      std::vector<float> r = get(out, 2 * n);
      int off = 0, far = 0;
      for (int i = 0; i < 2 * n; ++i) {
        const double exact = i < n ? std::exp((double)h[i]) : std::pow(std::fabs((double)h[i - n]), 0.75);
        const float near = (float)exact;
        if (r[i] != near) ++off;
        if (r[i] != near && r[i] != std::nextafter(near, exact > (double)near ? INFINITY : -INFINITY)) ++far;
      }
      if (run == 0) {
        first = r;
        std::printf("off %d\nfar %d\nexp0 %.9g\n", off, far, r[0]);
      } else {
        std::printf("same %d\n", (int)(r == first));
      }
    }
  } else if (!std::strcmp(c, "uninitialised")) {  // nothing wrote the allocation
    float* x = dev(5);
    for (float v : get(x, 5)) std::printf("value %f\n", v);
  } else if (!std::strcmp(c, "past_end_write") || !std::strcmp(c, "slack_write")) {
    // 1024 floats fill the allocation's pages up to the guard page, and a fifth block reads
    // past them; 1000 floats leave 96 bytes of slack before it, which the fourth block's last
    // threads write into
    const bool guard = !std::strcmp(c, "past_end_write");
    const int n = guard ? 1024 : 1000;
    float *x = dev(n), *out = dev(n);
    fill_kernel<<<8, 128>>>(x, n, 1.f);
    twice_kernel<<<guard ? 5 : 4, 256>>>(x, out, n, 0);
    std::printf("launch %d\n", (int)cudaGetLastError());
    std::printf("sync %d\n", (int)cudaDeviceSynchronize());
    std::printf("sync_again %d\n", (int)cudaDeviceSynchronize());
    std::printf("error_string %s\n", cudaGetErrorString(cudaErrorIllegalAddress));
  } else if (!std::strcmp(c, "copy_one_too_many")) {
    float *x = dev(10), *out = dev(10);
    fill_kernel<<<1, 10>>>(x, 10, 1.f);
    copy_one_too_many_kernel<<<1, 32>>>(x, out, 10);
    std::printf("sync %d\n", (int)cudaDeviceSynchronize());
  } else if (!std::strcmp(c, "bad_config")) {
    float* x = dev(4);
    fill_kernel<<<1, 2048>>>(x, 4, 1.f);
    std::printf("launch %d\n", (int)cudaGetLastError());
    std::printf("error_string %s\n", cudaGetErrorString(cudaErrorInvalidConfiguration));
    fill_kernel<<<dim3(1, 70000), 32>>>(x, 4, 1.f);
    std::printf("launch %d\n", (int)cudaGetLastError());
    fill_kernel<<<0, 32>>>(x, 4, 1.f);
    std::printf("launch %d\n", (int)cudaGetLastError());
  } else if (!std::strcmp(c, "divergent")) {
    float* x = dev(32);
    divergent_kernel<<<1, 32>>>(x);
    std::printf("sync %d\n", (int)cudaDeviceSynchronize());
  } else if (!std::strcmp(c, "host_touch")) {
    float* x = dev(8);
    fill_kernel<<<1, 8>>>(x, 8, 3.f);
    cudaDeviceSynchronize();
    std::printf("about to read\n");
    std::fflush(stdout);
    std::printf("read %f\n", x[2]);  // device memory read by the host: faults
  } else if (!std::strcmp(c, "streams")) {
    // a copy on one stream, a kernel reading its result on another: without an event the
    // kernel runs first (stale NaN), with cudaStreamWaitEvent it sees the copy
    cudaStream_t compute, copy;
    cudaStreamCreateWithFlags(&compute, cudaStreamNonBlocking);
    cudaStreamCreateWithFlags(&copy, cudaStreamNonBlocking);
    cudaEvent_t copied;
    cudaEventCreateWithFlags(&copied, cudaEventDisableTiming);
    float* pinned = nullptr;
    cudaMallocHost(&pinned, 4 * sizeof(float));
    for (int wait = 0; wait < 2; ++wait) {
      float *x = dev(4), *out = dev(4);
      for (int i = 0; i < 4; ++i) pinned[i] = 7.f;
      cudaMemcpyAsync(x, pinned, 4 * sizeof(float), cudaMemcpyHostToDevice, copy);
      cudaEventRecord(copied, copy);
      if (wait) cudaStreamWaitEvent(compute, copied, 0);
      twice_kernel<<<1, 4, 0, compute>>>(x, out, 4, 1);
      cudaStreamSynchronize(compute);
      std::vector<float> h(4);
      cudaMemcpyAsync(h.data(), out, 4 * sizeof(float), cudaMemcpyDeviceToHost, compute);
      std::printf("%s %f\n", wait ? "with_wait" : "without_wait", h[0]);
      cudaDeviceSynchronize();
    }
  } else if (!std::strcmp(c, "pinned_reuse")) {
    // the host rewrites a pinned buffer while a copy from it is still queued: the copy sees
    // the new value unless the host waits for the copy first
    cudaStream_t copy;
    cudaStreamCreateWithFlags(&copy, cudaStreamNonBlocking);
    float* pinned = nullptr;
    cudaMallocHost(&pinned, sizeof(float));
    for (int wait = 0; wait < 2; ++wait) {
      float* x = dev(1);
      pinned[0] = 1.f;
      cudaMemcpyAsync(x, pinned, sizeof(float), cudaMemcpyHostToDevice, copy);
      if (wait) cudaStreamSynchronize(copy);
      pinned[0] = 2.f;
      cudaStreamSynchronize(copy);
      std::printf("%s %.0f\n", wait ? "with_wait" : "without_wait", get(x, 1)[0]);
    }
  } else if (!std::strcmp(c, "memcpy_kind")) {
    float* x = dev(4);
    float h[4] = {0, 0, 0, 0};
    std::printf("wrong_kind %d\n", (int)cudaMemcpy(x, h, sizeof h, cudaMemcpyDeviceToHost));
    std::printf("past_end %d\n", (int)cudaMemcpy(x, h, 2 * sizeof h, cudaMemcpyHostToDevice));
  } else if (!std::strcmp(c, "gemm")) {
    // column-major C(2x3) = A(2x4) B(4x3) with A and B given transposed, against a loop
    const int m = 2, n = 3, k = 4;
    float At[k * m], Bt[n * k], want[m * n];  // At: k x m (lda = k), Bt: n x k (ldb = n)
    for (int i = 0; i < k * m; ++i) At[i] = (float)(i % 5) - 1.5f;
    for (int i = 0; i < n * k; ++i) Bt[i] = (float)(i % 7) * 0.5f;
    for (int i = 0; i < m; ++i)
      for (int j = 0; j < n; ++j) {
        double s = 0;
        for (int l = 0; l < k; ++l) s += (double)At[l + i * k] * Bt[j + l * n];
        want[i + j * m] = (float)s;
      }
    float *dA = dev(k * m), *dB = dev(n * k), *dC = dev(m * n);
    cudaMemcpy(dA, At, sizeof At, cudaMemcpyHostToDevice);
    cudaMemcpy(dB, Bt, sizeof Bt, cudaMemcpyHostToDevice);
    void* h = nullptr;
    cublasCreate_v2(&h);
    const float one = 1.f, zero = 0.f;
    std::printf("status %d\n", cublasSgemm_v2(h, 1, 1, m, n, k, &one, dA, k, dB, n, &zero, dC, m));
    std::vector<float> got = get(dC, m * n);
    double err = 0;
    for (int i = 0; i < m * n; ++i) err = std::fmax(err, std::fabs(got[i] - want[i]));
    std::printf("max_error %g\n", err);
    std::printf("bad_lda %d\n", cublasSgemm_v2(h, 1, 1, m, n, k, &one, dA, k - 1, dB, n, &zero, dC, m));
    // B read as 4 x 4 (ldb 4, n 4): past the end of its allocation
    std::printf("status %d\n", cublasSgemm_v2(h, 0, 0, m, 4, k, &one, dA, m, dB, k, &zero, dC, m));
    std::printf("sync %d\n", (int)cudaDeviceSynchronize());
  } else if (!std::strcmp(c, "host_pointer_arg")) {
    std::vector<float> host(4, 0.f);
    fill_kernel<<<1, 4>>>(host.data(), 4, 5.f);
    std::printf("launch %d\n", (int)cudaGetLastError());
    std::printf("sync %d\n", (int)cudaDeviceSynchronize());
    std::printf("host %.0f\n", host[0]);
  } else if (!std::strcmp(c, "before_start")) {
    float* x = dev(25);
    before_start_kernel<<<1, 1>>>(x);
    std::printf("sync %d\n", (int)cudaDeviceSynchronize());
  } else if (!std::strcmp(c, "shared_leftover")) {
    float* out = dev(8);
    shared_leftover_kernel<<<2, 4>>>(out);
    std::vector<float> h = get(out, 8);
    std::printf("block0 %f\nblock1 %f\n", h[0], h[4]);
  } else if (!std::strcmp(c, "race")) {
    float* x = dev(8);
    cudaMemset(x, 0, 8 * sizeof(float));
    racy_kernel<<<1, 8>>>(x, 8);
    std::printf("last %.0f\n", get(x, 8)[7]);
  } else if (!std::strcmp(c, "pageable_staged")) {
    // a pageable source is taken at the call (the caller may reuse it at once), and the copy
    // still runs in stream order: the kernel on another stream without a wait sees NaN
    cudaStream_t compute, copy;
    cudaStreamCreateWithFlags(&compute, cudaStreamNonBlocking);
    cudaStreamCreateWithFlags(&copy, cudaStreamNonBlocking);
    std::vector<float> host(4, 7.f);
    float *x = dev(4), *out = dev(4);
    cudaMemcpyAsync(x, host.data(), 4 * sizeof(float), cudaMemcpyHostToDevice, copy);
    host[0] = 100.f;
    twice_kernel<<<1, 4, 0, compute>>>(x, out, 4, 1);
    cudaStreamSynchronize(compute);
    std::printf("without_wait %f\n", get(out, 4)[0]);
    cudaStreamSynchronize(copy);
    std::printf("copied %.0f\n", get(x, 4)[0]);
  } else if (!std::strcmp(c, "event_query")) {
    cudaStream_t st;
    cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking);
    cudaEvent_t e;
    cudaEventCreateWithFlags(&e, cudaEventDisableTiming);
    float* x = dev(4);
    fill_kernel<<<1, 4, 0, st>>>(x, 4, 1.f);
    cudaEventRecord(e, st);
    std::printf("query %d\n", (int)cudaEventQuery(e));
    std::printf("query %d\n", (int)cudaEventQuery(e));
    std::printf("query %d\n", (int)cudaEventQuery(e));
    float ms = 0;
    std::printf("elapsed %d\n", (int)cudaEventElapsedTime(&ms, e, e));
  } else {
    std::printf("unknown case %s\n", c);
    return 2;
  }
  return 0;
}
