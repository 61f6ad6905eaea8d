// ccn/native/cuda/cublas.cu: run-time loading of cuBLAS (see cublas.h for why and where).
#include <dlfcn.h>

#include <cstdlib>
#include <mutex>

#include "cuda/check.h"
#include "cuda/context.h"
#include "cuda/cublas.h"

namespace ccn::cuda {

namespace {

// The subset of the cuBLAS v2 C API that ccn uses, declared by us (values from cublas_api.h).
using cublasStatus = int;            // CUBLAS_STATUS_SUCCESS = 0
using cublasHandle = void*;          // cublasHandle_t (opaque pointer)
enum cublasOp : int { OP_N = 0, OP_T = 1 };
using fn_create = cublasStatus (*)(cublasHandle*);
using fn_destroy = cublasStatus (*)(cublasHandle);
using fn_set_stream = cublasStatus (*)(cublasHandle, cudaStream_t);
using fn_version = cublasStatus (*)(cublasHandle, int*);
using fn_sgemm = cublasStatus (*)(cublasHandle, cublasOp, cublasOp, int, int, int, const float*, const float*, int,
                                  const float*, int, const float*, float*, int);
using fn_status_string = const char* (*)(cublasStatus);

struct Api {
  bool tried = false, ok = false;
  std::string path, why;
  int version = 0;
  fn_create create = nullptr;
  fn_destroy destroy = nullptr;
  fn_set_stream set_stream = nullptr;
  fn_version get_version = nullptr;
  fn_sgemm sgemm = nullptr;
  fn_status_string status_string = nullptr;
};

std::mutex g_mu;
Api g_api;
std::vector<std::string> g_dirs;

void* try_open(const std::string& dir, const std::string& name) {
  std::string full = dir.empty() ? name : dir + "/" + name;
  if (!dir.empty()) {  // its sibling libcublasLt first, so libcublas's dependency resolves
    std::string lt = name;
    size_t at = lt.find("libcublas");
    if (at != std::string::npos) {
      lt.replace(at, 9, "libcublasLt");
      dlopen((dir + "/" + lt).c_str(), RTLD_NOW | RTLD_GLOBAL);
    }
  }
  return dlopen(full.c_str(), RTLD_NOW | RTLD_LOCAL);
}

void load_locked() {
  if (g_api.tried) return;
  g_api.tried = true;
  const char* names[] = {"libcublas.so.13", "libcublas.so.12", "libcublas.so"};
  std::vector<std::string> dirs = g_dirs;
  dirs.push_back("");  // the loader's own search
  if (const char* h = std::getenv("CUDA_HOME")) dirs.push_back(std::string(h) + "/lib64");
  dirs.push_back("/usr/local/cuda/lib64");
  void* lib = nullptr;
  std::string tried;
  if (const char* p = std::getenv("CCN_CUBLAS")) {
    lib = dlopen(p, RTLD_NOW | RTLD_LOCAL);
    tried = std::string("$CCN_CUBLAS=") + p;
    if (lib) g_api.path = p;
  }
  for (size_t d = 0; !lib && d < dirs.size(); ++d)
    for (const char* n : names) {
      lib = try_open(dirs[d], n);
      std::string full = dirs[d].empty() ? n : dirs[d] + "/" + n;
      if (lib) {
        g_api.path = full;
        break;
      }
      if (!tried.empty()) tried += ", ";
      tried += full;
    }
  if (!lib) {
    g_api.why = "no cuBLAS library could be loaded (tried " + tried +
                "). Install it with `pip install nvidia-cublas` (CUDA 13) or set CCN_CUBLAS to the path of "
                "libcublas.so.13.";
    return;
  }
  auto sym = [&](const char* s) { return dlsym(lib, s); };
  g_api.create = (fn_create)sym("cublasCreate_v2");
  g_api.destroy = (fn_destroy)sym("cublasDestroy_v2");
  g_api.set_stream = (fn_set_stream)sym("cublasSetStream_v2");
  g_api.get_version = (fn_version)sym("cublasGetVersion_v2");
  g_api.sgemm = (fn_sgemm)sym("cublasSgemm_v2");
  g_api.status_string = (fn_status_string)sym("cublasGetStatusString");
  if (!g_api.create || !g_api.destroy || !g_api.set_stream || !g_api.sgemm) {
    g_api.why = "the cuBLAS library at " + g_api.path + " lacks the entry points ccn needs (cublasCreate_v2, "
                "cublasSgemm_v2); it is too old or not cuBLAS.";
    return;
  }
  g_api.ok = true;
}

const Api& api() {
  std::lock_guard<std::mutex> lock(g_mu);
  load_locked();
  if (!g_api.ok) runtime_error("CUDA backend: ", g_api.why);
  return g_api;
}

void check(cublasStatus s, const char* what, const char* file, int line) {
  if (s == 0) return;
  const char* msg = g_api.status_string ? g_api.status_string(s) : "";
  runtime_error("cuBLAS error at ", file, ":", line, ": ", what, " returned status ", s, msg && *msg ? " (" : "",
                msg ? msg : "", msg && *msg ? ")" : "", ".");
}
#define CCN_CUBLAS_CHECK(call) check((call), #call, __FILE__, __LINE__)

}  // namespace

void cublas_add_search_dir(const std::string& dir) {
  std::lock_guard<std::mutex> lock(g_mu);
  g_dirs.push_back(dir);
}

std::string cublas_describe() {
  std::lock_guard<std::mutex> lock(g_mu);
  load_locked();
  if (!g_api.ok) return g_api.why;
  return "cuBLAS at " + g_api.path;
}

void* cublas_create(void* stream) {
  const Api& a = api();
  cublasHandle h = nullptr;
  CCN_CUBLAS_CHECK(a.create(&h));
  CCN_CUBLAS_CHECK(a.set_stream(h, (cudaStream_t)stream));
  return h;
}

void cublas_destroy(void* handle) {
  if (handle && g_api.ok) g_api.destroy(handle);
}

// Row-major C (M x N) = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: swap the
// operands and the sizes, keep each operand's own transpose flag and leading dimension.
void sgemm(CudaCtx& cx, bool ta, bool tb, int M, int N, int K, float alpha, const float* A, int lda, const float* B,
           int ldb, float beta, float* C, int ldc) {
  if (M == 0 || N == 0) return;
  const Api& a = api();
  CCN_CUBLAS_CHECK(a.sgemm(cx.cublas(), tb ? OP_T : OP_N, ta ? OP_T : OP_N, N, M, K, &alpha, B, ldb, A, lda, &beta,
                           C, ldc));
}

}  // namespace ccn::cuda
