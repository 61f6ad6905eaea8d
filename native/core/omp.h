// ccn/native/core/omp.h: OpenMP, or a single-threaded stand-in where the compiler has none
// (Apple's clang without Homebrew's libomp, a build with -DCCN_OPENMP=OFF). The `#pragma omp`
// lines are then ignored and these functions say "one thread", so every loop runs serially
// with the same results.
#pragma once
#ifdef _OPENMP
#include <omp.h>
#else
inline int omp_get_max_threads() { return 1; }
inline int omp_get_num_threads() { return 1; }
inline int omp_get_thread_num() { return 0; }
inline int omp_in_parallel() { return 0; }
inline void omp_set_num_threads(int) {}
#endif
