#!/usr/bin/env python3
"""NumPy transcriptions of the trickiest CUDA kernels' index arithmetic, run over a simulated
grid and checked against the CPU layers, so their logic is verified without a GPU.

The CUDA backend (native/cuda/) runs only where there is a GPU (tests/cuda there); this checks
the kernels' logic everywhere else, and before a kernel change first meets a GPU. Each kernel below is a line-by-line transcription of its .cu source (same variable
names, same C integer arithmetic, same loop bounds and order), executed by `launch`, which
simulates the launch the launcher makes: grid_for(total) blocks of 256 threads (or a smaller
grid, to exercise the grid-stride loops), every thread id e = blockIdx.x * blockDim.x +
threadIdx.x, e += gridDim.x * blockDim.x, all threads of one loop iteration vectorised; row
kernels (check.h rows_grid) by `launch_rows`: blockIdx.y walks the rows, x a grid-stride
loop over each row's columns.
While it runs, the simulator checks what a GPU would not tell us:
  - every element index of the loop is visited exactly once (grid size and stride);
  - every load and store is inside its buffer (no out-of-bounds access for odd sizes);
  - no address is written by two threads in one launch unless by atomicAdd (no races);
  - integer expressions the kernel computes in `int` stay within int32 (i32());
  - C's truncating / and % (cdiv, cmod), not Python's flooring ones.
The GEMM calls (cuBLAS through cublas.cu's row-major wrappers) are simulated from their
pointer offsets, leading dimensions and batch strides with bounds-checked gathers, so the
arguments are checked, not just the maths.

Transcribed: conv.cu (conv_chunk_cases, im2col, col2im, transpose_dout, the GEMMs of
conv_fprop / conv_bprop), pool.cu (max, maxabs, avg; forward and backward, in float32 as the
kernels compute), cmrnorm.cu (plain and blocked; forward, ratio, backward; bit for bit with the CPU layer for
pow 0.75, 0.5, 1), local.cu
(forward, input gradient, weight gradient; conv and local also with randSparse channel
tables, against a direct float64 reference, which exercises the atomic paths), rnorm.cu and cnorm.cu (2-D windows and their
transposes; cnorm's exact gradient through the window mean). References: the CPU layers
through ccn.Net.

Usage: python tools/cuda_transcribe.py [--trials N] [--seed S] [--threads T --cap B]
Prints one line per check and exits 1 if any fails. tests/cuda/test_cuda_transcribe.py runs
it on the CPU. When you change one of these kernels, change its transcription here too.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, replace

import numpy as np

THREADS = 256  # every launcher in native/cuda uses 256 threads per block
GRID_CAP = 65536  # check.h grid_for: at most 65536 blocks, grid-stride loops do the rest
INT32 = 2**31


class KernelError(AssertionError):
    """A transcribed kernel did something a GPU kernel must not (or a result is wrong)."""


# ---- C semantics ------------------------------------------------------------------------------
def cdiv(a, b):
    """C's a / b on integers: truncation toward zero (Python's // floors)."""
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    q = np.abs(a) // np.abs(b)
    return np.where((a < 0) != (b < 0), -q, q)


def cmod(a, b):
    """C's a % b: the sign of a."""
    return np.asarray(a, np.int64) - np.asarray(b, np.int64) * cdiv(a, b)


class FastDiv:
    """fastdiv.cuh FastDiv: n / d as (n * mul) >> shift (64-bit product), for 0 <= n < 2^31. Each
    use checks that precondition on every index the simulated grid gives it."""

    def __init__(self, d, what):
        if not 1 <= d < INT32:
            raise KernelError(f"FastDiv({what} = {d}): the divisor must be in [1, 2^31)")
        self.d, self.what = int(d), what
        l = 0
        while (1 << l) < d:
            l += 1
        self.shift = 31 + l
        self.mul = ((1 << self.shift) + d - 1) // d
        if self.mul >= 1 << 32:
            raise KernelError(f"FastDiv({what} = {d}): the multiplier does not fit in 32 bits")

    def div(self, n):
        n = np.asarray(n, np.int64)
        if n.size and (n.min() < 0 or n.max() >= INT32):
            raise KernelError(f"FastDiv({self.what}).div of {int(n.min() if n.min() < 0 else n.max())}: outside [0, 2^31)")
        q = (n.astype(np.uint64) * np.uint64(self.mul)) >> np.uint64(self.shift)  # < 2^63: no wrap
        return q.astype(np.int64)

    def divmod(self, n):
        q = self.div(n)
        return q, np.asarray(n, np.int64) - q * self.d


def i32(x, what):
    """An expression the kernel holds in `int`: it must fit."""
    x = np.asarray(x, np.int64)
    if x.size and (x.max() >= INT32 or x.min() < -INT32):
        raise KernelError(f"int overflow in {what}: value {int(x.max() if x.max() >= INT32 else x.min())}")
    return x


def grid_for(n, threads=THREADS, cap=GRID_CAP):
    """check.h grid_for."""
    b = (n + threads - 1) // threads
    return max(1, min(b, cap))


# ---- device memory and the launch simulator ----------------------------------------------------
class Buf:
    """A device buffer: loads and stores are bounds-checked, and stores of one launch are
    recorded, so two threads writing the same address (a race) is caught."""

    def __init__(self, name, data):
        self.name = name
        self.data = np.asarray(data).reshape(-1)  # a view where possible: Bufs may share memory (scratch)
        if not self.data.flags.writeable:
            self.data = self.data.copy()
        self.written = None

    def _check(self, idx, what):
        idx = np.asarray(idx, np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= self.data.size):
            bad = idx[(idx < 0) | (idx >= self.data.size)][0]
            raise KernelError(f"{what} of {self.name}[{int(bad)}] outside its {self.data.size} elements")
        return idx

    def load(self, idx, mask=None):
        """Values at idx (where mask; 0 elsewhere, without touching memory there)."""
        idx = np.asarray(idx, np.int64)
        if mask is None:
            return self.data[self._check(idx, "load")]
        out = np.zeros(idx.shape, self.data.dtype)
        out[mask] = self.data[self._check(idx[mask], "load")]
        return out

    def _record(self, idx):
        if self.written is None:
            return
        u, c = np.unique(idx, return_counts=True)
        again = u[(c > 1) | (self.written[u] > 0)] if u.size else u
        if again.size:
            raise KernelError(f"race: {self.name}[{int(again[0])}] written by more than one thread in one launch")
        self.written[u] += 1

    def store(self, idx, vals, mask=None):
        idx = np.asarray(idx, np.int64)
        vals = np.broadcast_to(np.asarray(vals, self.data.dtype), idx.shape)
        if mask is not None:
            idx, vals = idx[mask], vals[mask]
        self._check(idx, "store")
        self._record(idx)
        self.data[idx] = vals

    def atomic_add(self, idx, vals, mask=None):
        idx = np.asarray(idx, np.int64)
        vals = np.broadcast_to(np.asarray(vals, self.data.dtype), idx.shape)
        if mask is not None:
            idx, vals = idx[mask], vals[mask]
        np.add.at(self.data, self._check(idx, "atomicAdd"), vals)


@dataclass
class Launch:
    threads: int = THREADS
    cap: int = GRID_CAP


SIM = Launch()


def launch(name, total, body, writes=()):
    """Run `body(e)` over the grid-stride loop `for (e = tid; e < total; e += stride)` of a
    launch with grid_for(total, threads) blocks; each call of body gets the thread ids of one
    loop iteration. Checks that every e in [0, total) is visited once and records stores."""
    blocks = grid_for(total, SIM.threads, SIM.cap)
    stride = blocks * SIM.threads
    for b in writes:
        b.written = np.zeros(b.data.size, np.int32)
    visits = np.zeros(max(total, 0), np.int32)
    e = np.arange(stride, dtype=np.int64)  # blockIdx.x * (int64_t)blockDim.x + threadIdx.x
    while True:
        live = e[e < total]
        if live.size == 0:
            break
        body(live)
        visits[live] += 1
        e = e + stride
    for b in writes:
        b.written = None
    if total > 0 and not np.all(visits == 1):
        raise KernelError(f"{name}: grid-stride loop visits {int(np.sum(visits == 0))} elements never, "
                          f"{int(np.sum(visits > 1))} more than once")


# ---- cuBLAS through cublas.cu (row-major wrappers) -----------------------------------------------
def sgemm_batched(ta, tb, M, N, K, alpha, A, a_off, lda, sA, B, b_off, ldb, sB, beta, C, c_off, ldc, sC, batch):
    """C_b = alpha op(A_b) op(B_b) + beta C_b, row-major, matrix b at offset + b * stride;
    beta == 0 does not read C (cuBLAS semantics). Accumulates in float64."""
    for v, n in ((M, "M"), (N, "N"), (K, "K"), (lda, "lda"), (ldb, "ldb"), (ldc, "ldc"), (batch, "batch")):
        i32(v, f"sgemm argument {n}")
    if M == 0 or N == 0 or batch == 0:
        return
    # leading dimensions must cover the rows they stride over (cuBLAS rejects the call otherwise)
    if lda < (M if ta else K) or ldb < (K if tb else N) or ldc < N:
        raise KernelError(f"sgemm: leading dimension too small (lda {lda}, ldb {ldb}, ldc {ldc}; M {M} N {N} K {K})")
    i, j, k = np.arange(M)[:, None], np.arange(N)[None, :], np.arange(K)
    written = set()
    for b in range(batch):
        ia = a_off + b * sA + (k[None, :] * lda + np.arange(M)[:, None] if ta else np.arange(M)[:, None] * lda + k[None, :])
        ib = b_off + b * sB + (np.arange(N)[None, :] * ldb + k[:, None] if tb else k[:, None] * ldb + np.arange(N)[None, :])
        ic = c_off + b * sC + i * ldc + j
        a = A.load(ia).astype(np.float64)
        bm = B.load(ib).astype(np.float64)
        C._check(ic, "sgemm C")
        flat = set(ic.reshape(-1).tolist())
        if written & flat:
            raise KernelError(f"sgemm_batched: batches overlap in {C.name}")
        written |= flat
        r = alpha * (a @ bm)
        if beta != 0:
            r = r + beta * C.data[ic].astype(np.float64)
        C.data[ic] = r.astype(C.data.dtype)


def sgemm(ta, tb, M, N, K, alpha, A, a_off, lda, B, b_off, ldb, beta, C, c_off, ldc):
    sgemm_batched(ta, tb, M, N, K, alpha, A, a_off, lda, 0, B, b_off, ldb, 0, beta, C, c_off, ldc, 0, 1)


# ---- geometry (kernels.h) ----------------------------------------------------------------------
@dataclass
class ConvGeom:
    N: int
    C: int
    S: int
    F: int
    groups: int
    Cf: int
    fs: int
    stride: int
    padding: int
    M: int
    vchan: object = None  # device int array (Buf) or None


def launch_rows(name, rows, cols, body, writes=(), cols_per_thread=1):
    """A row kernel's launch (check.h rows_grid): blockIdx.y = r0 walks rows r0, r0 + gridDim.y,
    ...; in each row, threads j = blockIdx.x * blockDim.x + threadIdx.x walk the columns with
    stride gridDim.x * blockDim.x (gridDim.x sized for ~cols_per_thread columns per thread).
    `body(r, j)` gets one row and the column ids of one loop iteration. Checks that every
    (row, column) is visited once and records stores per launch."""
    cap = min(SIM.cap, 65535)
    per_block = SIM.threads * cols_per_thread
    bx = max(1, min((cols + per_block - 1) // per_block, cap))
    by = max(1, min(rows, cap))
    stride = bx * SIM.threads
    i32(rows, f"{name}: rows")
    i32(cols, f"{name}: columns")
    for b in writes:
        b.written = np.zeros(b.data.size, np.int32)
    visits = np.zeros((max(rows, 0), max(cols, 0)), np.int32)
    for r0 in range(by):
        for r in range(r0, rows, by):
            j = np.arange(stride, dtype=np.int64)
            while True:
                live = j[j < cols]
                if live.size == 0:
                    break
                body(r, live)
                visits[r, live] += 1
                j = j + stride
    for b in writes:
        b.written = None
    if rows > 0 and cols > 0 and not np.all(visits == 1):
        raise KernelError(f"{name}: row launch visits {int(np.sum(visits == 0))} elements never, "
                          f"{int(np.sum(visits > 1))} more than once")


def chan_of(g, grp, c):
    """conv.cu chan_of / local.cu local_chan."""
    return g.vchan.load(grp * g.Cf + c) if g.vchan is not None else grp * g.Cf + c


# ---- conv.cu -----------------------------------------------------------------------------------
K_SCRATCH_BYTES = 256 << 20


def conv_chunk_cases(g, bprop, with_din, budget=K_SCRATCH_BYTES):
    """conv.cu conv_chunk_cases (budget = unfold_budget_bytes(256 MB))."""
    K, MM = g.Cf * g.fs * g.fs, g.M * g.M
    per_case = g.groups * K * MM * (2 if bprop and with_din else 1) + g.F * MM
    nbytes = per_case * 4
    c = budget // nbytes if nbytes > 0 else g.N
    return max(1, min(g.N, c))


def check_chunk(g, Nc):
    """conv.cu check_chunk: the row kernels' int column and row counts."""
    K = g.Cf * g.fs * g.fs
    if Nc * max(g.M * g.M, g.S * g.S) + (1 << 25) >= INT32 or g.groups * K >= INT32 or g.S * g.S >= INT32:
        raise KernelError("conv chunk too large for the unfold kernels")


def check_geom(g):
    """conv.cu check_geom."""
    if not (g.groups > 0 and g.F % g.groups == 0 and g.Cf > 0 and g.fs > 0 and g.stride > 0 and g.M > 0 and g.S > 0
            and g.padding >= 0):
        raise KernelError("conv geometry rejected by check_geom")
    if g.vchan is None and g.Cf * g.groups != g.C:
        raise KernelError("plain groups need C = groups * Cf")


K_COLS_PER_THREAD = 4  # conv.cu kColsPerThread


class ConvDivs:
    """conv.cu ConvDivs: the divisors of one geometry, made on the host per launch."""

    def __init__(self, g):
        self.K, self.fs2, self.fs = FastDiv(g.Cf * g.fs * g.fs, "K"), FastDiv(g.fs * g.fs, "fs2"), FastDiv(g.fs, "fs")
        self.MM, self.M, self.Cf = FastDiv(g.M * g.M, "MM"), FastDiv(g.M, "M"), FastDiv(g.Cf, "Cf")
        self.SS, self.S, self.stride = FastDiv(g.S * g.S, "SS"), FastDiv(g.S, "S"), FastDiv(g.stride, "stride")


def im2col_kernel(g, inp, n0, Nc, col):
    dv = ConvDivs(g)
    MM, SS = i32(g.M * g.M, "MM"), i32(g.S * g.S, "SS")
    cols = i32(Nc * MM, "cols")
    case_stride = g.C * SS  # int64_t

    def body(r, j):
        grp, k = dv.K.divmod(r)
        c, t = dv.fs2.divmod(k)
        fy, fx = dv.fs.divmod(t)
        src = n0 * case_stride + int(chan_of(g, grp, c)) * SS
        dst = r * cols
        n, m = dv.MM.divmod(j)
        my, mx = dv.M.divmod(m)
        iy = i32(my * g.stride - g.padding + fy, "iy")
        ix = i32(mx * g.stride - g.padding + fx, "ix")
        inside = (iy >= 0) & (iy < g.S) & (ix >= 0) & (ix < g.S)  # the kernel's unsigned compares
        i32(iy * g.S + ix, "iy * S + ix")
        col.store(dst + j, inp.load(src + n * case_stride + iy * g.S + ix, inside))

    launch_rows("im2col_kernel", i32(g.groups * g.Cf * g.fs * g.fs, "groups * K"), cols, body, writes=[col],
                cols_per_thread=K_COLS_PER_THREAD)


def ceil_div_signed(a, b):  # local.cu (conv.cu had it before FastDiv)
    return np.where(a >= 0, cdiv(a + b - 1, b), -cdiv(-a, b))


def covering_modules(g, iy, ix):
    """The modules [my0, my1] x [mx0, mx1] whose windows cover input pixel (iy, ix): the range
    local.cu's input-gradient kernel computes (conv.cu's col2im computes it with FastDiv,
    `covering`, and is checked against this)."""
    my0 = np.maximum(0, ceil_div_signed(iy + g.padding - g.fs + 1, g.stride))
    my1 = np.minimum(g.M - 1, cdiv(iy + g.padding, g.stride))
    mx0 = np.maximum(0, ceil_div_signed(ix + g.padding - g.fs + 1, g.stride))
    mx1 = np.minimum(g.M - 1, cdiv(ix + g.padding, g.stride))
    return my0, my1, mx0, mx1


def covering(g, st, i):
    """conv.cu covering: the modules m0 .. m1 covering input coordinate i along one axis, with
    FastDiv (for padding >= 0, which check_geom requires; covering_modules is the signed rule)."""
    a = i + g.padding - g.fs + 1
    m0 = np.where(a <= 0, 0, st.div(np.maximum(a, 0) + g.stride - 1))
    m1 = np.minimum(g.M - 1, st.div(i + g.padding))
    return m0, m1


def col2im_kernel(g, dcol, n0, Nc, din):
    dv = ConvDivs(g)
    fs2, K, MM, SS = g.fs * g.fs, g.Cf * g.fs * g.fs, g.M * g.M, i32(g.S * g.S, "SS")
    cols = i32(Nc * SS, "cols")
    ncols = Nc * MM  # int64_t: one dcol row

    def body(r, j):
        grp, c = dv.Cf.divmod(r)
        rows = (grp * K + c * fs2) * ncols  # row (grp, k = c*fs2)
        dst0 = n0 * g.C * SS + int(chan_of(g, grp, c)) * SS
        n, p = dv.SS.divmod(j)
        iy, ix = dv.S.divmod(p)
        my0, my1 = covering(g, dv.stride, iy)
        mx0, mx1 = covering(g, dv.stride, ix)
        want = covering_modules(g, iy, ix)  # the signed rule local.cu keeps: the same ranges
        if not all(np.array_equal(u, v) for u, v in zip((my0, my1, mx0, mx1), want)):
            raise KernelError("col2im_kernel: covering differs from the signed ceil-division rule")
        s = np.zeros(j.shape, dcol.data.dtype)
        span = cdiv(g.fs + g.stride - 1, g.stride) + 1  # at most this many modules cover a pixel
        for jy in range(int(span)):
            my = my0 + jy
            fy = iy + g.padding - my * g.stride
            for jx in range(int(span)):
                mx = mx0 + jx
                live = (my <= my1) & (mx <= mx1)
                fx = ix + g.padding - mx * g.stride
                if np.any(live & ((fy < 0) | (fy >= g.fs) | (fx < 0) | (fx >= g.fs))):
                    raise KernelError("col2im_kernel: a gathered module does not cover the pixel")
                i32(n * MM + my * g.M + mx, "n * MM + my * M + mx")
                s = s + dcol.load(rows + (fy * g.fs + fx) * ncols + n * MM + my * g.M + mx, live)
        dst = dst0 + n * g.C * SS + p
        if g.vchan is not None:
            din.atomic_add(dst, s)
        else:
            din.store(dst, din.load(dst) + s)

    launch_rows("col2im_kernel", i32(g.groups * g.Cf, "groups * Cf"), cols, body,
                writes=[] if g.vchan is not None else [din], cols_per_thread=K_COLS_PER_THREAD)


def transpose_dout_kernel(dout, n0, Nc, F, MM, doutT):
    fMM = FastDiv(MM, "MM")
    cols = i32(Nc * MM, "cols")

    def body(f, j):
        src = (n0 * F + f) * MM
        n, m = fMM.divmod(j)
        doutT.store(f * cols + j, dout.load(src + n * F * MM + m))

    launch_rows("transpose_dout_kernel", F, cols, body, writes=[doutT], cols_per_thread=K_COLS_PER_THREAD)


def untranspose_out_kernel(outT, n0, Nc, F, MM, out, accumulate):
    fMM = FastDiv(MM, "MM")
    cols = i32(Nc * MM, "cols")

    def body(f, j):
        src = f * cols
        dst = (n0 * F + f) * MM
        n, m = fMM.divmod(j)
        o = dst + n * F * MM + m
        out.store(o, out.load(o) + outT.load(src + j) if accumulate else outT.load(src + j))

    launch_rows("untranspose_out_kernel", F, cols, body, writes=[out], cols_per_thread=K_COLS_PER_THREAD)


def conv_fprop(g, inp, W, out, accumulate, budget=K_SCRATCH_BYTES):
    K, MM, Fg = g.Cf * g.fs * g.fs, g.M * g.M, g.F // g.groups
    check_geom(g)
    Nc = conv_chunk_cases(g, False, False, budget)
    check_chunk(g, Nc)
    col_n = g.groups * K * Nc * MM
    scratch = Buf("scratch", np.full(col_n + g.F * Nc * MM, np.nan, np.float32))
    col = Buf("scratch(col)", scratch.data[:col_n])
    outT = Buf("scratch(outT)", scratch.data[col_n:])
    for n0 in range(0, g.N, Nc):
        nc = min(Nc, g.N - n0)
        cols = nc * MM
        im2col_kernel(g, inp, n0, nc, col)  # unfold_chunk
        for grp in range(g.groups):
            sgemm(True, False, Fg, cols, K, 1.0, W, grp * Fg, g.F, col, grp * K * cols, cols, 0.0,
                  outT, grp * Fg * cols, cols)
        untranspose_out_kernel(outT, n0, nc, g.F, MM, out, accumulate)


def conv_bprop(g, inp, W, dout, din, dW, budget=K_SCRATCH_BYTES):
    K, MM, Fg = g.Cf * g.fs * g.fs, g.M * g.M, g.F // g.groups
    check_geom(g)
    Nc = conv_chunk_cases(g, True, din is not None, budget)
    check_chunk(g, Nc)
    col_n = g.groups * K * Nc * MM
    scratch = Buf("scratch", np.full(col_n * (2 if din is not None else 1) + g.F * Nc * MM, np.nan, np.float32))
    col_off, dcol_off, doutT_off = 0, col_n, col_n * (2 if din is not None else 1)
    doutT = Buf("scratch(doutT)", scratch.data[doutT_off:doutT_off + g.F * Nc * MM])
    for n0 in range(0, g.N, Nc):
        nc = min(Nc, g.N - n0)
        cols = nc * MM
        transpose_dout_kernel(dout, n0, nc, g.F, MM, doutT)
        if din is not None:
            dcol = Buf("scratch(dcol)", scratch.data[dcol_off:dcol_off + col_n])
            for grp in range(g.groups):
                sgemm(False, False, K, cols, Fg, 1.0, W, grp * Fg, g.F, doutT, grp * Fg * cols, cols, 0.0,
                      dcol, grp * K * cols, cols)
            col2im_kernel(g, dcol, n0, nc, din)
        if dW is not None:
            col = Buf("scratch(col)", scratch.data[col_off:col_off + col_n])
            im2col_kernel(g, inp, n0, nc, col)  # unfold_chunk
            for grp in range(g.groups):
                sgemm(False, True, K, Fg, nc * MM, 1.0, col, grp * K * nc * MM, nc * MM, doutT, grp * Fg * nc * MM,
                      nc * MM, 1.0, dW, grp * Fg, g.F)


# ---- pool.cu (float32, as the kernels compute) ---------------------------------------------------
@dataclass
class PoolGeom:
    N: int
    C: int
    S: int
    O: int
    sizeX: int
    start: int
    stride: int
    max: bool = True
    abs: bool = False


def floor_div(a, b):  # pool.cu
    return np.where(a >= 0, cdiv(a, b), -cdiv(-a + b - 1, b))


def ceil_div(a, b):
    return -floor_div(-a, b)


def pool_fprop_kernel(g, inp, out):
    OO = g.O * g.O
    total = g.N * g.C * OO
    f32 = np.float32

    def col_reduce(base, x, ya, yb, live, op):
        v = inp.load(base + ya * g.S + x, live)
        for jy in range(1, g.sizeX):
            y = ya + jy
            m = live & (y < yb)
            w = inp.load(base + y * g.S + x, m)
            if op == "max":
                v = np.where(m & (v < w), w, v)
            else:
                v = np.where(m, (v + w).astype(f32), v)
        return v

    def body(e):
        o = cmod(e, OO)
        base = cdiv(e, OO) * g.S * g.S  # img = in + (e / OO) * S * S
        y0 = g.start + cdiv(o, g.O) * g.stride
        x0 = g.start + cmod(o, g.O) * g.stride
        ya, yb = np.maximum(y0, 0), np.minimum(y0 + g.sizeX, g.S)
        xa, xb = np.maximum(x0, 0), np.minimum(x0 + g.sizeX, g.S)
        empty = (ya >= yb) | (xa >= xb)
        ok = ~empty
        r = np.zeros(e.shape, f32)
        if g.max and g.abs:
            r = inp.load(base + ya * g.S + xa, ok)
            for jy in range(g.sizeX):
                for jx in range(g.sizeX):
                    y, x = ya + jy, xa + jx
                    m = ok & (y < yb) & (x < xb)
                    v = inp.load(base + y * g.S + x, m)
                    r = np.where(m & ~(np.abs(r) > np.abs(v)), v, r)
        else:
            op = "max" if g.max else "sum"
            r = col_reduce(base, xa, ya, yb, ok, op)
            for jx in range(1, g.sizeX):
                x = xa + jx
                m = ok & (x < xb)
                c = col_reduce(base, x, ya, yb, m, op)
                r = np.where(m & (r < c), c, r) if g.max else np.where(m, (r + c).astype(f32), r)
            if not g.max:
                r = np.where(ok, (r / ((yb - ya) * (xb - xa)).astype(f32)).astype(f32), r)
        out.store(e, np.where(empty, f32(0), r))

    launch("pool_fprop_kernel", total, body, writes=[out])


def pool_bprop_kernel(g, inp, out, dout, din):
    SS, OO = g.S * g.S, g.O * g.O
    total = g.N * g.C * SS
    f32 = np.float32

    def body(e):
        p = cmod(e, SS)
        plane = cdiv(e, SS)
        iy, ix = cdiv(p, g.S), cmod(p, g.S)
        oy0 = np.maximum(0, ceil_div(iy - g.start - g.sizeX + 1, g.stride))
        oy1 = np.minimum(g.O - 1, floor_div(iy - g.start, g.stride))
        ox0 = np.maximum(0, ceil_div(ix - g.start - g.sizeX + 1, g.stride))
        ox1 = np.minimum(g.O - 1, floor_div(ix - g.start, g.stride))
        v = inp.load(e)
        s = din.load(e)
        span = (g.sizeX + g.stride - 1) // g.stride + 1
        for jy in range(span):
            oy = oy0 + jy
            for jx in range(span):
                ox = ox0 + jx
                live = (oy <= oy1) & (ox <= ox1)
                o = plane * OO + oy * g.O + ox
                if g.max:
                    m = live & (v == out.load(o, live))
                    s = np.where(m, (s + dout.load(o, m)).astype(f32), s)
                else:
                    y0, x0 = g.start + oy * g.stride, g.start + ox * g.stride
                    cnt = (np.minimum(y0 + g.sizeX, g.S) - np.maximum(y0, 0)) * (
                        np.minimum(x0 + g.sizeX, g.S) - np.maximum(x0, 0))
                    if np.any(live & (cnt <= 0)):
                        raise KernelError("pool_bprop_kernel: a gathered window holds no pixel")
                    q = (dout.load(o, live) / np.where(live, cnt, 1).astype(f32)).astype(f32)
                    s = np.where(live, (s + q).astype(f32), s)
        din.store(e, s)

    launch("pool_bprop_kernel", total, body, writes=[din])


# ---- cmrnorm.cu (float32 apart from powf) ------------------------------------------------------------
@dataclass
class NormGeom:
    N: int
    C: int
    S: int
    size: int
    a: float
    pow: float
    minDiv: float
    blocked: bool = False
    pow_case: int = 0
    f2: float = 0.0


def norm_geom(N, C, S, size, alpha, pw, min_div, blocked=False):
    """kernels.h norm_geom: float fields from the layer's doubles, inv_pow's case, f2 in double."""
    f32 = np.float32
    pc = 1 if pw == 0.75 else 2 if pw == 0.5 else 3 if pw == 1.0 else 0
    return NormGeom(N, C, S, size, f32(alpha), f32(pw), f32(min_div), blocked, pc, f32(-2.0 * alpha * pw))


def inv_pow(d, g):
    """norm_common.cuh inv_pow (layers/norm.h's rule), float32."""
    f32 = np.float32
    d = np.asarray(d, f32)
    if g.pow_case == 1:
        r = (f32(1) / np.sqrt(d)).astype(f32)
        return (r * np.sqrt(r)).astype(f32)
    if g.pow_case == 2:
        return (f32(1) / np.sqrt(d)).astype(f32)
    if g.pow_case == 3:
        return (f32(1) / d).astype(f32)
    return np.power(d, f32(-g.pow)).astype(f32)


def window_of(p, N, L):  # norm_common.cuh
    return np.maximum(0, p - N // 2), np.minimum(L, p - N // 2 + N)


def holders_of(p, N, L):
    return np.maximum(0, p + N // 2 - N + 1), np.minimum(L, p + N // 2 + 1)


def chan_window(g, c):
    if g.blocked:
        lo = c - cmod(c, g.size)
        return lo, np.minimum(g.C, lo + g.size)
    return window_of(c, g.size, g.C)


def chan_holders(g, c):
    return chan_window(g, c) if g.blocked else holders_of(c, g.size, g.C)


def cmrnorm_fprop_kernel(g, x, y, d):
    SS = g.S * g.S
    total = g.N * g.C * SS
    f32 = np.float32

    def body(e):
        p = cmod(e, SS)
        c = cmod(cdiv(e, SS), g.C)
        xp = e - c * SS - p + p  # channel 0 at this pixel
        c0, c1 = chan_window(g, c)
        s = np.zeros(e.shape, f32)
        for j in range(g.size):
            k = c0 + j
            live = k < c1
            v = x.load(xp + k * SS, live)
            s = np.where(live, (s + (v * v).astype(f32)).astype(f32), s)
        den = (g.minDiv + (g.a * s).astype(f32)).astype(f32)
        d.store(e, den)
        y.store(e, (x.load(e) * inv_pow(den, g)).astype(f32))

    launch("cmrnorm_fprop_kernel", total, body, writes=[y, d])


def ratio_kernel(gr, y, d, t, n):
    launch("ratio_kernel", n, lambda e: t.store(e, ((gr.load(e) * y.load(e)).astype(np.float32) / d.load(e))),
           writes=[t])


def cmrnorm_bprop_kernel(g, x, d, dout, t, din):
    SS = g.S * g.S
    total = g.N * g.C * SS
    f32 = np.float32

    def body(e):
        p = cmod(e, SS)
        c = cmod(cdiv(e, SS), g.C)
        tp = e - c * SS - p + p
        k0, k1 = chan_holders(g, c)
        acc = (din.load(e) + (dout.load(e) * inv_pow(d.load(e), g)).astype(f32)).astype(f32)
        fx = (g.f2 * x.load(e)).astype(f32)
        for j in range(g.size):
            k = k0 + j
            live = k < k1
            acc = np.where(live, (acc + (fx * t.load(tp + k * SS, live)).astype(f32)).astype(f32), acc)
        din.store(e, acc)

    launch("cmrnorm_bprop_kernel", total, body, writes=[din])


def cmrnorm_fprop(g, x, y, denoms):
    if g.N * g.C * g.S * g.S > 0:
        cmrnorm_fprop_kernel(g, x, y, denoms)


def cmrnorm_bprop(g, x, y, denoms, dout, din):
    n = g.N * g.C * g.S * g.S
    t = Buf("scratch(t)", np.full(n, np.nan, np.float32))
    ratio_kernel(dout, y, denoms, t, n)
    cmrnorm_bprop_kernel(g, x, denoms, dout, t, din)


# ---- rnorm.cu and cnorm.cu (2-D windows; float32 apart from powf) -------------------------------------
def _box(g, buf, base, py, px, fn, square=False):
    """norm_common.cuh box_sum over the rows [y0, y1) and columns [x0, x1) that fn(py/px)
    gives: each row summed left to right from 0, the row sums added from 0; float32."""
    f32 = np.float32
    y0, y1 = fn(py, g.size, g.S)
    x0, x1 = fn(px, g.size, g.S)
    s = np.zeros(py.shape, f32)
    for jy in range(g.size):
        yy = y0 + jy
        r = np.zeros(py.shape, f32)
        for jx in range(g.size):
            xx = x0 + jx
            live = (yy < y1) & (xx < x1)
            v = buf.load(base + yy * g.S + xx, live)
            if square:
                v = (v * v).astype(f32)
            r = np.where(live, (r + v).astype(f32), r)
        s = np.where(yy < y1, (s + r).astype(f32), s)
    return s


def inv_count(g, py, px):  # cnorm.cu
    a0, a1 = window_of(py, g.size, g.S)
    b0, b1 = window_of(px, g.size, g.S)
    return (np.float32(1) / ((a1 - a0) * (b1 - b0)).astype(np.float32)).astype(np.float32)


def rnorm_fprop(g, x, y, d):
    SS = g.S * g.S
    f32 = np.float32

    def body(e):
        p = cmod(e, SS)
        s = _box(g, x, e - p, cdiv(p, g.S), cmod(p, g.S), window_of, square=True)
        den = (g.minDiv + (g.a * s).astype(f32)).astype(f32)
        d.store(e, den)
        y.store(e, (x.load(e) * inv_pow(den, g)).astype(f32))

    launch("rnorm_fprop_kernel", g.N * g.C * SS, body, writes=[y, d])


def rnorm_bprop(g, x, y, d, dout, din):
    SS, n = g.S * g.S, g.N * g.C * g.S * g.S
    f32 = np.float32
    t = Buf("scratch(t)", np.full(n, np.nan, f32))
    ratio_kernel(dout, y, d, t, n)

    def body(e):
        p = cmod(e, SS)
        s = _box(g, t, e - p, cdiv(p, g.S), cmod(p, g.S), holders_of)
        a = (dout.load(e) * inv_pow(d.load(e), g)).astype(f32)
        b = ((g.f2 * x.load(e)).astype(f32) * s).astype(f32)
        din.store(e, (din.load(e) + (a + b).astype(f32)).astype(f32))

    launch("rnorm_bprop_kernel", n, body, writes=[din])


def cnorm_fprop(g, x, y, state):
    SS, n = g.S * g.S, g.N * g.C * g.S * g.S
    f32 = np.float32
    d = Buf("state(d)", state.data[:n])
    u = Buf("state(u)", state.data[n:2 * n])

    def mean(e):
        p = cmod(e, SS)
        py, px = cdiv(p, g.S), cmod(p, g.S)
        s = _box(g, x, e - p, py, px, window_of)
        u.store(e, (x.load(e) - (s * inv_count(g, py, px)).astype(f32)).astype(f32))

    launch("cnorm_mean_kernel", n, mean, writes=[u])

    def fprop(e):
        p = cmod(e, SS)
        s = _box(g, u, e - p, cdiv(p, g.S), cmod(p, g.S), window_of, square=True)
        den = (g.minDiv + (g.a * s).astype(f32)).astype(f32)
        d.store(e, den)
        y.store(e, (x.load(e) * inv_pow(den, g)).astype(f32))

    launch("cnorm_fprop_kernel", n, fprop, writes=[d, y])


def cnorm_bprop(g, x, y, state, dout, din):
    SS, n = g.S * g.S, g.N * g.C * g.S * g.S
    f32 = np.float32
    d = Buf("state(d)", state.data[:n])
    u = Buf("state(u)", state.data[n:2 * n])
    scratch = np.full(3 * n, np.nan, f32)
    t, v, w = Buf("scratch(t)", scratch[:n]), Buf("scratch(v)", scratch[n:2 * n]), Buf("scratch(w)", scratch[2 * n:])
    launch("ratio_kernel", n, lambda e: t.store(e, (dout.load(e) * y.load(e)).astype(f32) / d.load(e)), writes=[t])

    def vk(e):
        p = cmod(e, SS)
        s = _box(g, t, e - p, cdiv(p, g.S), cmod(p, g.S), holders_of)
        v.store(e, ((g.f2 * u.load(e)).astype(f32) * s).astype(f32))

    launch("cnorm_v_kernel", n, vk, writes=[v])

    def wk(e):
        p = cmod(e, SS)
        w.store(e, (v.load(e) * inv_count(g, cdiv(p, g.S), cmod(p, g.S))).astype(f32))

    launch("cnorm_w_kernel", n, wk, writes=[w])

    def dk(e):
        p = cmod(e, SS)
        s = _box(g, w, e - p, cdiv(p, g.S), cmod(p, g.S), holders_of)
        a = ((dout.load(e) * inv_pow(d.load(e), g)).astype(f32) + v.load(e)).astype(f32)
        din.store(e, ((din.load(e) + a).astype(f32) - s).astype(f32))

    launch("cnorm_din_kernel", n, dk, writes=[din])


# ---- local.cu ------------------------------------------------------------------------------------
def local_fprop_kernel(g, inp, W, out, accumulate):
    P, fs2 = g.M * g.M, g.fs * g.fs
    Kg, Fg, SS = g.Cf * fs2, g.F // g.groups, g.S * g.S
    total = g.N * g.F * P

    def body(e):
        m = cmod(e, P)
        f = cmod(cdiv(e, P), g.F)
        n = cdiv(e, P * g.F)
        grp = cdiv(f, Fg)
        y0 = cdiv(m, g.M) * g.stride - g.padding
        x0 = cmod(m, g.M) * g.stride - g.padding
        Wm = m * Kg * g.F + f
        s = np.zeros(e.shape, np.float64)
        for c in range(g.Cf):
            img = (n * g.C + chan_of(g, grp, c)) * SS
            for fy in range(g.fs):
                iy = y0 + fy
                for fx in range(g.fs):
                    ix = x0 + fx
                    live = (iy >= 0) & (iy < g.S) & (ix >= 0) & (ix < g.S)
                    s = s + W.load(Wm + (c * fs2 + fy * g.fs + fx) * g.F, live) * inp.load(img + iy * g.S + ix, live)
        out.store(e, out.load(e) + s if accumulate else s)

    launch("local_fprop_kernel", total, body, writes=[out])


def local_bprop_input_kernel(g, W, dout, din):
    P, fs2 = g.M * g.M, g.fs * g.fs
    Kg, Fg, SS = g.Cf * fs2, g.F // g.groups, g.S * g.S
    total = g.groups * g.Cf * g.N * SS

    def body(e):
        p = cmod(e, SS)
        r = cdiv(e, SS)
        n = cmod(r, g.N)
        r = cdiv(r, g.N)
        c = cmod(r, g.Cf)
        grp = cdiv(r, g.Cf)
        iy, ix = cdiv(p, g.S), cmod(p, g.S)
        my0, my1, mx0, mx1 = covering_modules(g, iy, ix)
        go = n * g.F * P
        s = np.zeros(e.shape, np.float64)
        span = (g.fs + g.stride - 1) // g.stride + 1
        for jy in range(span):
            my = my0 + jy
            fy = iy + g.padding - my * g.stride
            for jx in range(span):
                mx = mx0 + jx
                fx = ix + g.padding - mx * g.stride
                live = (my <= my1) & (mx <= mx1)
                m = my * g.M + mx
                Wr = (m * Kg + c * fs2 + fy * g.fs + fx) * g.F
                for j in range(Fg):
                    f = grp * Fg + j
                    s = s + W.load(Wr + f, live) * dout.load(go + f * P + m, live)
        dst = (n * g.C + chan_of(g, grp, c)) * SS + p
        if g.vchan is not None:
            din.atomic_add(dst, s)
        else:
            din.store(dst, din.load(dst) + s)

    launch("local_bprop_input_kernel", total, body, writes=[] if g.vchan is not None else [din])


def local_bprop_weight_kernel(g, inp, dout, dW):
    P, fs2 = g.M * g.M, g.fs * g.fs
    Kg, Fg, SS = g.Cf * fs2, g.F // g.groups, g.S * g.S
    total = P * Kg * g.F

    def body(e):
        f = cmod(e, g.F)
        row = cdiv(e, g.F)
        k = cmod(row, Kg)
        m = cdiv(row, Kg)
        c, fy, fx = cdiv(k, fs2), cdiv(cmod(k, fs2), g.fs), cmod(k, g.fs)
        iy = cdiv(m, g.M) * g.stride - g.padding + fy
        ix = cmod(m, g.M) * g.stride - g.padding + fx
        live = (iy >= 0) & (iy < g.S) & (ix >= 0) & (ix < g.S)  # `continue` for the others
        ch = chan_of(g, cdiv(f, Fg), c)
        s = np.zeros(e.shape, np.float64)
        for n in range(g.N):
            s = s + inp.load((n * g.C + ch) * SS + iy * g.S + ix, live) * dout.load((n * g.F + f) * P + m, live)
        dW.store(e[live], dW.load(e[live]) + s[live])

    launch("local_bprop_weight_kernel", total, body, writes=[dW])


def local_fprop(g, inp, W, out, accumulate):
    if g.N * g.F * g.M * g.M > 0:
        local_fprop_kernel(g, inp, W, out, accumulate)


def local_bprop(g, inp, W, dout, din, dW):
    if g.N <= 0:
        return
    if din is not None:
        local_bprop_input_kernel(g, W, dout, din)
    if dW is not None:
        local_bprop_weight_kernel(g, inp, dout, dW)


# ---- the CPU layers as references ------------------------------------------------------------------
def _cpu_net(text, dims):
    import ccn

    net = ccn.Net("<cuda_transcribe>", None, dims, seed=0, layers_text=text)
    net._net.set_data_grads(True)
    return net


def _cpu_run(net, layer, x, dout, weights=None):
    """Forward and backward (output gradient dout) of `layer` on the CPU; weights by name,
    biases zero. Returns out, d data, {param: grad}."""
    for p in net.params:
        w = np.zeros(p.shape, np.float32) if weights is None or p.name not in weights else weights[p.name]
        net.set(p.name, np.asarray(w, np.float32).reshape(p.shape))
    net._net.zero_param_grads()
    net.forward([np.ascontiguousarray(x, np.float32)], train=True)
    out = net.output(layer).copy()
    net.backward({layer: np.ascontiguousarray(dout, np.float32)})
    return out, net.output_grad("data").copy(), {p.name: net.get(p.name, "grad").copy() for p in net.params}


def _max_rel(a, b):
    a, b = np.asarray(a, np.float64).reshape(-1), np.asarray(b, np.float64).reshape(-1)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30)) if a.size else 0.0


def _expect_close(what, got, want, tol):
    err = _max_rel(got, want)
    if not err <= tol:
        d = np.abs(np.asarray(got, np.float64).reshape(-1) - np.asarray(want, np.float64).reshape(-1))
        i = int(np.argmax(d))
        raise KernelError(f"{what}: max diff / max |ref| = {err:.3g} > {tol:g}; worst at flat index {i}: "
                          f"transcription {np.asarray(got).reshape(-1)[i]:.7g}, CPU {np.asarray(want).reshape(-1)[i]:.7g}")
    return err


def _expect_same(what, got, want):
    a, b = np.asarray(got, np.float32).reshape(-1), np.asarray(want, np.float32).reshape(-1)
    eq = (a == b) | (np.isnan(a) & np.isnan(b))
    if not eq.all():
        i = int(np.argmax(~eq))
        raise KernelError(f"{what}: {int((~eq).sum())} of {a.size} values differ from the CPU layer; first at "
                          f"flat index {i}: transcription {a[i]!r}, CPU {b[i]!r}")


# ---- checks: random small geometries against the CPU layers ----------------------------------------
def _conv_geometry(rng):
    groups = int(rng.choice([1, 2, 3]))
    Cf = int(rng.integers(1, 4))
    fs = int(rng.integers(1, 6))
    stride = int(rng.integers(1, fs + 1))
    padding = int(rng.integers(0, fs))
    S = int(rng.integers(max(1, fs - 2 * padding), 10))
    M = 1 + (2 * padding + S - fs + stride - 1) // stride
    return dict(N=int(rng.integers(1, 6)), C=groups * Cf, S=S, Fpg=int(rng.integers(1, 4)), groups=groups, Cf=Cf,
                fs=fs, stride=stride, padding=padding, M=M)


def _conv_text(kind, d):
    return (f"[data]\ntype=data\ndataIdx=0\n[L]\ntype={kind}\ninputs=data\nchannels={d['C']}\nfilters={d['Fpg']}\n"
            f"groups={d['groups']}\nfilterSize={d['fs']}\npadding={d['padding']}\nstride={d['stride']}\ninitW=0.1\n"
            + ("sharedBiases=1\n" if kind == "conv" else ""))


def check_conv(rng, budget_cases=None):
    """im2col + GEMMs (forward), GEMMs + col2im and im2col + transpose + GEMM (backward)."""
    d = _conv_geometry(rng)
    F = d["Fpg"] * d["groups"]
    g = ConvGeom(d["N"], d["C"], d["S"], F, d["groups"], d["Cf"], d["fs"], d["stride"], d["padding"], d["M"])
    K, MM = g.Cf * g.fs * g.fs, g.M * g.M
    x = rng.standard_normal((g.N, g.C * g.S * g.S)).astype(np.float32)
    W = rng.standard_normal((K, F)).astype(np.float32)
    dout = rng.standard_normal((g.N, F * MM)).astype(np.float32)
    net = _cpu_net(_conv_text("conv", d), {0: (g.C, g.S, g.S)})
    out_c, din_c, grads = _cpu_run(net, "L", x, dout, {"L.weights[0]": W})
    # the chunk budget: one chunk, or chunks of `budget_cases` cases (the last one partial)
    per_case_b = 4 * (g.groups * K * MM * 2 + F * MM)
    budget = K_SCRATCH_BYTES if budget_cases is None else per_case_b * budget_cases
    out = Buf("out", np.full(g.N * F * MM, np.nan, np.float32))
    conv_fprop(g, Buf("in", x), Buf("W", W), out, False, budget)
    e1 = _expect_close("conv forward", out.data, out_c, 1e-5)
    acc = Buf("out", out.data.copy())
    conv_fprop(g, Buf("in", x), Buf("W", W), acc, True, budget)
    _expect_close("conv forward, accumulating", acc.data, 2 * out_c.reshape(-1), 1e-5)
    din0 = rng.standard_normal(x.size).astype(np.float32)
    dW0 = rng.standard_normal(W.size).astype(np.float32)
    din, dW = Buf("din", din0.copy()), Buf("dW", dW0.copy())
    conv_bprop(g, Buf("in", x), Buf("W", W), Buf("dout", dout), din, dW, budget)
    e2 = _expect_close("conv input gradient (added)", din.data - din0, din_c, 1e-4)
    e3 = _expect_close("conv weight gradient (added)", dW.data - dW0, grads["L.weights[0]"], 1e-4)
    return f"conv {d} chunk {conv_chunk_cases(g, True, True, budget)}: rel err {max(e1, e2, e3):.1e}"


def check_local(rng):
    d = _conv_geometry(rng)
    F = d["Fpg"] * d["groups"]
    g = ConvGeom(d["N"], d["C"], d["S"], F, d["groups"], d["Cf"], d["fs"], d["stride"], d["padding"], d["M"])
    P, Kg = g.M * g.M, g.Cf * g.fs * g.fs
    x = rng.standard_normal((g.N, g.C * g.S * g.S)).astype(np.float32)
    W = rng.standard_normal((P * Kg, F)).astype(np.float32)
    dout = rng.standard_normal((g.N, F * P)).astype(np.float32)
    net = _cpu_net(_conv_text("local", d), {0: (g.C, g.S, g.S)})
    out_c, din_c, grads = _cpu_run(net, "L", x, dout, {"L.weights[0]": W})
    out = Buf("out", np.full(g.N * F * P, np.nan, np.float32))
    local_fprop(g, Buf("in", x), Buf("W", W), out, False)
    e1 = _expect_close("local forward", out.data, out_c, 1e-5)
    din0 = rng.standard_normal(x.size).astype(np.float32)
    din, dW = Buf("din", din0.copy()), Buf("dW", np.zeros(W.size, np.float32))
    local_bprop(g, Buf("in", x), Buf("W", W), Buf("dout", dout), din, dW)
    e2 = _expect_close("local input gradient (added)", din.data - din0, din_c, 1e-4)
    e3 = _expect_close("local weight gradient", dW.data, grads["L.weights[0]"], 1e-4)
    return f"local {d}: rel err {max(e1, e2, e3):.1e}"


def check_pool(rng):
    op = str(rng.choice(["max", "maxabs", "avg"]))
    S = int(rng.integers(1, 10))
    size = int(rng.integers(1, S + 1))
    stride = int(rng.integers(1, size + 1))
    start = int(rng.integers(-size + 1, 1)) if rng.random() < 0.6 else int(rng.integers(0, max(1, S - size + 1)))
    O = -(-(S - start - size) // stride) + 1
    if O < 1 or start >= S or start + (O - 1) * stride >= S:
        return check_pool(rng)
    N, C = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    g = PoolGeom(N, C, S, O, size, start, stride, op != "avg", op == "maxabs")
    # small integers: many ties (backward: all tied maxima get the gradient), and some -inf/NaN
    x = rng.integers(-3, 4, (N, C * S * S)).astype(np.float32)
    if op != "avg" and x.size > 3:
        x.reshape(-1)[rng.choice(x.size, 2, replace=False)] = [np.nan, -np.inf]
    dout = rng.standard_normal((N, C * O * O)).astype(np.float32)
    text = (f"[data]\ntype=data\ndataIdx=0\n[L]\ntype=pool\npool={op}\ninputs=data\nchannels={C}\nsizeX={size}\n"
            f"stride={stride}\nstart={start}\n")
    out_c, din_c, _ = _cpu_run(_cpu_net(text, {0: (C, S, S)}), "L", x, dout)
    out = Buf("out", np.full(N * C * O * O, np.nan, np.float32))
    pool_fprop_kernel(g, Buf("in", x), out)
    _expect_same(f"pool={op} forward", out.data, out_c)
    din = Buf("din", np.zeros(x.size, np.float32))
    pool_bprop_kernel(g, Buf("in", x), out, Buf("dout", dout), din)
    _expect_same(f"pool={op} backward", din.data, din_c)
    return f"pool={op} N={N} C={C} S={S} sizeX={size} stride={stride} start={start} O={O}: bit for bit"


def _norm_pow(rng):
    """The exponents with inv_pow's exact paths (0.75 is the reference nets'), or any other."""
    return float(rng.choice([0.75, 0.5, 1.0, float(rng.uniform(0.5, 0.9))]))


def _expect_norm(kind, g, y, y_cpu, din, din_cpu):
    """Bit for bit with the CPU layer where D^-pow takes an exact path; else within float error."""
    if g.pow_case:
        _expect_same(f"{kind} forward", y, y_cpu)
        _expect_same(f"{kind} backward", din, din_cpu)
        return "bit for bit"
    e1 = _expect_close(f"{kind} forward", y, y_cpu, 2e-6)
    e2 = _expect_close(f"{kind} backward", din, din_cpu, 5e-5)
    return f"rel err {max(e1, e2):.1e} (powf)"


def check_cmrnorm(rng):
    C = int(rng.integers(1, 9))
    size = int(rng.integers(1, C + 1))
    blocked = bool(rng.random() < 0.4)
    N, S = int(rng.integers(1, 4)), int(rng.integers(1, 6))
    scale, pw, md = float(rng.uniform(0.1, 2)), _norm_pow(rng), float(rng.uniform(0.5, 2))
    g = norm_geom(N, C, S, size, scale / size, pw, md, blocked)
    x = rng.standard_normal((N, C * S * S)).astype(np.float32)
    dout = rng.standard_normal(x.shape).astype(np.float32)
    text = (f"[data]\ntype=data\ndataIdx=0\n[L]\ntype=cmrnorm\ninputs=data\nchannels={C}\nsize={size}\n"
            f"blocked={int(blocked)}\nscale={scale!r}\npow={pw!r}\nminDiv={md!r}\n")
    out_c, din_c, _ = _cpu_run(_cpu_net(text, {0: (C, S, S)}), "L", x, dout)
    y, den = Buf("y", np.full(x.size, np.nan, np.float32)), Buf("denoms", np.full(x.size, np.nan, np.float32))
    cmrnorm_fprop(g, Buf("x", x), y, den)
    din = Buf("din", np.zeros(x.size, np.float32))
    cmrnorm_bprop(g, Buf("x", x), y, den, Buf("dout", dout), din)
    how = _expect_norm("cmrnorm", g, y.data, out_c, din.data, din_c)
    return f"cmrnorm N={N} C={C} S={S} size={size} blocked={blocked} pow={pw:.3g}: {how}"


# ---- channel tables (randSparse): against a direct float64 reference ----------------------------------
def _direct(x, W, g, vchan, local):
    """out, and for output gradient dout the exact din and dW (as functions), of conv (W: K x F)
    or local (W: (P*K) x F) with filter channel c of group grp reading image channel
    vchan[grp*Cf + c]; float64, straight from the definition (kernels.h)."""
    N, C, S, M, fs, st, pad = g.N, g.C, g.S, g.M, g.fs, g.stride, g.padding
    K, Fg = g.Cf * fs * fs, g.F // g.groups
    big = S + 2 * pad + fs + M * st
    xp = np.zeros((N, C, big, big))
    xp[:, :, pad:pad + S, pad:pad + S] = x.reshape(N, C, S, S)

    def patch(grp, my, mx):  # N x K, row k = c*fs^2 + fy*fs + fx
        ch = [int(vchan[grp * g.Cf + c]) for c in range(g.Cf)]
        return xp[:, ch, my * st:my * st + fs, mx * st:mx * st + fs].reshape(N, K)

    def wmat(m, grp):
        r0 = m * K if local else 0
        return W[r0:r0 + K, grp * Fg:(grp + 1) * Fg].astype(np.float64)

    out = np.zeros((N, g.F, M * M))
    for my in range(M):
        for mx in range(M):
            m = my * M + mx
            for grp in range(g.groups):
                out[:, grp * Fg:(grp + 1) * Fg, m] = patch(grp, my, mx) @ wmat(m, grp)

    def grads(dout):
        dout = dout.reshape(N, g.F, M * M).astype(np.float64)
        dxp, dW = np.zeros_like(xp), np.zeros(W.shape)
        for my in range(M):
            for mx in range(M):
                m = my * M + mx
                for grp in range(g.groups):
                    gd = dout[:, grp * Fg:(grp + 1) * Fg, m]  # N x Fg
                    r0 = m * K if local else 0
                    dW[r0:r0 + K, grp * Fg:(grp + 1) * Fg] += patch(grp, my, mx).T @ gd
                    dp = (gd @ wmat(m, grp).T).reshape(N, g.Cf, fs, fs)
                    for c in range(g.Cf):
                        dxp[:, int(vchan[grp * g.Cf + c]), my * st:my * st + fs, mx * st:mx * st + fs] += dp[:, c]
        return dxp[:, :, pad:pad + S, pad:pad + S].reshape(N, -1), dW

    return out.reshape(N, -1), grads


def check_channel_table(rng):
    """conv and local with a channel table (randSparse: channels repeated across and within
    groups), so col2im's and local's input-gradient atomics and chan_of are exercised."""
    local = bool(rng.random() < 0.5)
    d = _conv_geometry(rng)
    C = int(rng.integers(1, 5))
    vchan = rng.integers(0, C, d["groups"] * d["Cf"])
    F = d["Fpg"] * d["groups"]
    g = ConvGeom(d["N"], C, d["S"], F, d["groups"], d["Cf"], d["fs"], d["stride"], d["padding"], d["M"],
                 Buf("vchan", vchan.astype(np.int64)))
    K, MM = g.Cf * g.fs * g.fs, g.M * g.M
    x = rng.standard_normal((g.N, C * g.S * g.S)).astype(np.float32)
    W = rng.standard_normal(((MM if local else 1) * K, F)).astype(np.float32)
    dout = rng.standard_normal((g.N, F * MM)).astype(np.float32)
    ref, grads = _direct(x, W, g, vchan, local)
    din_ref, dW_ref = grads(dout)
    out = Buf("out", np.full(g.N * F * MM, np.nan, np.float32))
    din, dW = Buf("din", np.zeros(x.size, np.float32)), Buf("dW", np.zeros(W.size, np.float32))
    if local:
        local_fprop(g, Buf("in", x), Buf("W", W), out, False)
        local_bprop(g, Buf("in", x), Buf("W", W), Buf("dout", dout), din, dW)
    else:
        budget = 4 * (g.groups * K * MM * 2 + F * MM) * int(rng.integers(1, 3))
        conv_fprop(g, Buf("in", x), Buf("W", W), out, False, budget)
        conv_bprop(g, Buf("in", x), Buf("W", W), Buf("dout", dout), din, dW, budget)
    kind = "local" if local else "conv"
    e1 = _expect_close(f"{kind} forward with a channel table", out.data, ref, 1e-5)
    e2 = _expect_close(f"{kind} input gradient with a channel table", din.data, din_ref, 1e-4)
    e3 = _expect_close(f"{kind} weight gradient with a channel table", dW.data, dW_ref, 1e-4)
    return f"{kind} with table {vchan.tolist()} C={C} {d}: rel err {max(e1, e2, e3):.1e}"


# ---- int32 audit: conv's int-typed launch and GEMM arguments at full scale ----------------------------
# AlexNet as layer-defs/alexnet.ini (224 x 224 input), and cuda-convnet's two-tower original.
ALEXNET_CONVS = {
    "conv1": ConvGeom(0, 3, 224, 64, 1, 3, 11, 4, 0, 55),
    "conv2": ConvGeom(0, 64, 27, 192, 1, 64, 5, 1, 2, 27),
    "conv3": ConvGeom(0, 192, 13, 384, 1, 192, 3, 1, 1, 13),
    "conv4": ConvGeom(0, 384, 13, 256, 1, 384, 3, 1, 1, 13),
    "conv5": ConvGeom(0, 256, 13, 256, 1, 256, 3, 1, 1, 13),
    "2012-conv2": ConvGeom(0, 96, 27, 256, 2, 48, 5, 1, 2, 27),
}


def int32_audit(N=256, budgets=(K_SCRATCH_BYTES, 1 << 50)):
    """The values conv.cu holds in `int` (GEMM sizes and leading dimensions, nc*MM, the
    kernels' per-thread indices) for each AlexNet conv layer at minibatch N, with the default
    chunk budget and with an unlimited one (CCN_UNFOLD_BYTES huge: the whole minibatch in one
    chunk). Returns [(layer, expression, value)]; every value must stay below 2^31."""
    rows = []
    for name, g0 in ALEXNET_CONVS.items():
        g = replace(g0, N=N)
        K, MM, Fg = g.Cf * g.fs * g.fs, g.M * g.M, g.F // g.groups
        for budget in budgets:
            for bprop, din in ((False, False), (True, True)):
                nc = conv_chunk_cases(g, bprop, din, budget)
                tag = f"{'bprop' if bprop else 'fprop'}, chunk {nc}"
                rows += [(name, f"nc * MM ({tag})", nc * MM), (name, "K", K), (name, "MM", MM),
                         (name, "grp * Fg", (g.groups - 1) * Fg), (name, "F * MM (a case of out)", g.F * MM),
                         (name, "iy * S + ix", g.S * g.S - 1), (name, "Cf * fs^2 * ... k", K - 1)]
    return rows


def check_rnorm_cnorm(rng):
    kind = str(rng.choice(["rnorm", "cnorm"]))
    S = int(rng.integers(1, 8))
    size = int(rng.integers(1, S + 1))
    N, C = int(rng.integers(1, 3)), int(rng.integers(1, 4))
    scale, pw, md = float(rng.uniform(0.1, 2)), _norm_pow(rng), float(rng.uniform(0.5, 2))
    g = norm_geom(N, C, S, size, scale / size**2, pw, md)
    x = rng.standard_normal((N, C * S * S)).astype(np.float32)
    dout = rng.standard_normal(x.shape).astype(np.float32)
    text = (f"[data]\ntype=data\ndataIdx=0\n[L]\ntype={kind}\ninputs=data\nchannels={C}\nsize={size}\n"
            f"scale={scale!r}\npow={pw!r}\nminDiv={md!r}\n")
    out_c, din_c, _ = _cpu_run(_cpu_net(text, {0: (C, S, S)}), "L", x, dout)
    y = Buf("y", np.full(x.size, np.nan, np.float32))
    state = Buf("state", np.full(x.size * (2 if kind == "cnorm" else 1), np.nan, np.float32))
    din = Buf("din", np.zeros(x.size, np.float32))
    if kind == "rnorm":
        rnorm_fprop(g, Buf("x", x), y, state)
        rnorm_bprop(g, Buf("x", x), y, state, Buf("dout", dout), din)
    else:
        cnorm_fprop(g, Buf("x", x), y, state)
        cnorm_bprop(g, Buf("x", x), y, state, Buf("dout", dout), din)
    how = _expect_norm(kind, g, y.data, out_c, din.data, din_c)
    return f"{kind} N={N} C={C} S={S} size={size} pow={pw:.3g}: {how}"


CHECKS = {"conv": check_conv, "local": check_local, "pool": check_pool, "cmrnorm": check_cmrnorm,
          "rnorm/cnorm": check_rnorm_cnorm, "channel-table": check_channel_table}


def run(trials=20, seed=0, threads=THREADS, cap=GRID_CAP, checks=tuple(CHECKS), verbose=True):
    """Every check `trials` times on random geometries; returns the failures (messages)."""
    SIM.threads, SIM.cap = threads, cap
    rng = np.random.default_rng(seed)
    failures = []
    try:
        for t in range(trials):
            for name in checks:
                try:
                    msg = CHECKS[name](rng) if name != "conv" or t % 3 else check_conv(rng, budget_cases=1 + t % 2)
                    if verbose:
                        print(f"ok   {msg}")
                except KernelError as e:
                    failures.append(f"{name} (trial {t}): {e}")
                    if verbose:
                        print(f"FAIL {name} (trial {t}): {e}")
    finally:
        SIM.threads, SIM.cap = THREADS, GRID_CAP
    return failures


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=THREADS, help="threads per block of the simulated launches")
    ap.add_argument("--cap", type=int, default=GRID_CAP,
                    help="most blocks per launch (small values make the grid-stride loops iterate)")
    ap.add_argument("--only", choices=sorted(CHECKS), action="append")
    a = ap.parse_args(argv)
    fails = run(a.trials, a.seed, a.threads, a.cap, tuple(a.only or CHECKS))
    print(f"{len(fails)} failure(s)")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
