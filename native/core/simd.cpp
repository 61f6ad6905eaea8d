// ccn/native/core/simd.cpp: choosing the kernels' instruction-set path once (see simd.h).
#include "core/simd.h"

#include <cstdlib>
#include <cstring>

namespace ccn::simd {
namespace portable { extern const Kernels kernels; }
namespace avx2 { extern const Kernels kernels; }
namespace avx512 { extern const Kernels kernels; }

namespace {
bool cpu_has(const char* name) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (!std::strcmp(name, "avx2")) return __builtin_cpu_supports("avx2");
  if (!std::strcmp(name, "avx512"))
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
#endif
  return !std::strcmp(name, "portable");
}

const Kernels* choose() {
  const char* e = std::getenv("CCN_SIMD");
  if (e && *e) {
    if (const Kernels* k = path_kernels(e)) return k;
  }
  if (const Kernels* k = path_kernels("avx512")) return k;
  if (const Kernels* k = path_kernels("avx2")) return k;
  return &portable::kernels;
}
}  // namespace

const Kernels* path_kernels(const char* name) {
  if (!std::strcmp(name, "portable")) return &portable::kernels;
#if defined(__x86_64__)
  if (!std::strcmp(name, "avx2") && cpu_has("avx2")) return &avx2::kernels;
  if (!std::strcmp(name, "avx512") && cpu_has("avx512")) return &avx512::kernels;
#endif
  return nullptr;
}

const Kernels& k() {
  static const Kernels* chosen = choose();
  return *chosen;
}

}  // namespace ccn::simd
