#!/usr/bin/env python3
"""The machine's single-precision GEMM rate, through the BLAS ccn links (scipy-openblas32).

    python tools/sgemm_rate.py [--n 2048] [--reps 5] [--threads 1,2]

Times C = A * B for square n x n float32 matrices with OpenBLAS's own threading at each
thread count and prints the best GFLOP/s of --reps runs (2 n^3 flops each). This is the
yardstick for the conv layers' forward rate in tools/layer_times.py: conv forward is a GEMM
plus an unfold, so its rate over this one is its efficiency.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import time

import numpy as np


def sgemm_rate(threads: int, n: int = 2048, reps: int = 5) -> float:
    """Best GFLOP/s of `reps` n x n x n SGEMMs with the BLAS's own `threads` threads. Leaves
    the BLAS single-threaded afterwards, as ccn runs it (also when ccn is loaded)."""
    import scipy_openblas32 as sob

    lib = ctypes.CDLL(os.path.join(sob.get_lib_dir(), sob.get_library(fullname=True)))
    gemm = lib.scipy_cblas_sgemm
    p = ctypes.c_void_p
    gemm.argtypes = [ctypes.c_int] * 6 + [ctypes.c_float, p, ctypes.c_int, p, ctypes.c_int, ctypes.c_float, p,
                                          ctypes.c_int]
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n)).astype(np.float32) for _ in range(2))
    c = np.zeros((n, n), np.float32)
    ROW_MAJOR, NO_TRANS = 101, 111
    lib.scipy_openblas_set_num_threads(threads)
    best = 0.0
    for _ in range(reps + 1):  # the first run warms up
        t0 = time.perf_counter()
        gemm(ROW_MAJOR, NO_TRANS, NO_TRANS, n, n, n, 1.0, a.ctypes.data, n, b.ctypes.data, n, 0.0, c.ctypes.data, n)
        best = max(best, 2.0 * n**3 / (time.perf_counter() - t0) / 1e9)
    lib.scipy_openblas_set_num_threads(1)
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2048)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", default=f"1,{os.cpu_count()}")
    args = ap.parse_args()
    for t in (int(x) for x in args.threads.split(",")):
        print(f"sgemm {args.n}x{args.n}x{args.n}, {t} thread(s): {sgemm_rate(t, args.n, args.reps):.1f} GFLOP/s")


if __name__ == "__main__":
    main()
