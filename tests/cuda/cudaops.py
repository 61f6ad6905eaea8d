"""Helpers for the CUDA tests: run one kernel launcher on NumPy arrays, float64 references."""

import numpy as np

from ccn._native import core


def op(name, arrays, **scalars):
    """Run CUDA test op `name` (native/cuda/testing_ops.cu); returns every array after the op."""
    arrs = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in arrays.items()}
    return core.cuda_test_op(name, arrs, {k: float(v) for k, v in scalars.items()}, 0)


def numgrad(f, x, dout, eps=1e-6):
    """d/dx sum(dout * f(x)) by central differences, in float64."""
    x = np.array(x, dtype=np.float64)
    g = np.zeros_like(x)
    flat, gf = x.reshape(-1), g.reshape(-1)
    for i in range(flat.size):
        v = flat[i]
        flat[i] = v + eps
        hi = np.sum(dout * f(x))
        flat[i] = v - eps
        lo = np.sum(dout * f(x))
        flat[i] = v
        gf[i] = (hi - lo) / (2 * eps)
    return g


def describe_diff(got, want, rtol=1e-4, atol=1e-5, what="values"):
    """None when `got` matches `want`, else one message saying what differs, by how much and where.

    The test: relative error ||got - want|| / ||want|| < rtol, or every |got - want| < atol.
    Non-finite values must sit where the reference has the same ones (NaN where NaN, +inf
    where +inf). The message names `what` (e.g. "GPU output of layer 'pool1'"), the relative
    error, the largest absolute and relative differences with their indices and both values
    there, and how many elements are off by more than atol + rtol * |want|."""
    a, b = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if a.shape != b.shape:
        if a.size == b.size:  # flat vs shaped views of the same values: compare anyway, say so
            a = a.reshape(b.shape)
        else:
            return f"{what}: shape {a.shape} (got) vs {b.shape} (wanted)"
    if a.size == 0:
        return None
    fa, fb = np.isfinite(a), np.isfinite(b)
    same_nonfinite = (np.isnan(a) & np.isnan(b)) | (~fa & ~fb & (a == b))
    bad_nf = (~fa | ~fb) & ~same_nonfinite
    if bad_nf.any():
        i = tuple(int(k) for k in np.argwhere(bad_nf)[0])
        return (f"{what}: {int(bad_nf.sum())} of {a.size} elements are non-finite on one side only; "
                f"first at {i}: got {a[i]!r}, wanted {b[i]!r}")
    m = fa & fb
    if not m.any():
        return None
    a0, b0 = np.where(m, a, 0.0), np.where(m, b, 0.0)
    d = np.abs(a0 - b0)
    err = np.linalg.norm(a0 - b0) / max(np.linalg.norm(b0), 1e-12)
    if err < rtol or d.max() < atol:
        return None
    at = np.unravel_index(np.argmax(d), d.shape)
    rel = d / np.maximum(np.abs(b0), 1e-30)
    rel_at = np.unravel_index(np.argmax(np.where(d > atol, rel, 0)), d.shape)
    n_off = int(np.sum(d > atol + rtol * np.abs(b0)))
    idx = lambda t: tuple(int(k) for k in t)  # noqa: E731
    return (f"{what}: relative error {err:.3g} (rtol {rtol:g}); max abs diff {d.max():.3g} at {idx(at)} "
            f"(got {a[at]:.7g}, wanted {b[at]:.7g}); max rel diff {rel[rel_at]:.3g} at {idx(rel_at)} "
            f"(got {a[rel_at]:.7g}, wanted {b[rel_at]:.7g}); {n_off} of {a.size} elements off by more than "
            f"atol {atol:g} + rtol*|wanted|")


def close(a, b, rtol=1e-4, atol=1e-5, what="values"):
    """Assert that `a` (the GPU's) matches `b` (the reference); see describe_diff."""
    msg = describe_diff(a, b, rtol, atol, what)
    assert msg is None, msg


def same_bits(a, b, what="values"):
    """Assert float32 equality element by element (NaN where NaN), naming the first difference."""
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32).reshape(np.shape(a))
    eq = (a == b) | (np.isnan(a) & np.isnan(b))
    if not eq.all():
        i = tuple(int(k) for k in np.argwhere(~eq)[0])
        raise AssertionError(f"{what}: {int((~eq).sum())} of {a.size} elements differ; first at {i}: "
                             f"got {a[i]!r}, wanted {b[i]!r}")


# ---- float64 references (layouts as the kernels: rows = cases, NCHW per case) ----
def conv_ref(x, W, N, C, S, F, groups, Cf, fs, stride, padding, M, vchan=None):
    x = x.reshape(N, C, S, S)
    Fg = F // groups
    out = np.zeros((N, F, M, M))
    big = np.zeros((N, C, S + 2 * padding + fs + M * stride, S + 2 * padding + fs + M * stride))
    big[:, :, padding:padding + S, padding:padding + S] = x
    for g in range(groups):
        chans = [vchan[g * Cf + c] if vchan is not None else g * Cf + c for c in range(Cf)]
        Wg = W[:, g * Fg:(g + 1) * Fg].reshape(Cf, fs, fs, Fg)
        for my in range(M):
            for mx in range(M):
                patch = big[:, chans, my * stride:my * stride + fs, mx * stride:mx * stride + fs]
                out[:, g * Fg:(g + 1) * Fg, my, mx] = np.einsum("ncyx,cyxf->nf", patch, Wg)
    return out.reshape(N, -1)


def pool_ref(x, N, C, S, O, sizeX, start, stride, is_max):
    x = x.reshape(N, C, S, S)
    out = np.zeros((N, C, O, O))
    for oy in range(O):
        for ox in range(O):
            y0, x0 = start + oy * stride, start + ox * stride
            ya, yb, xa, xb = max(y0, 0), min(y0 + sizeX, S), max(x0, 0), min(x0 + sizeX, S)
            if ya >= yb or xa >= xb:
                continue
            w = x[:, :, ya:yb, xa:xb]
            out[:, :, oy, ox] = w.max(axis=(2, 3)) if is_max else w.mean(axis=(2, 3))
    return out.reshape(N, -1)


def _win(p, size, L):
    return max(0, p - size // 2), min(L, p - size // 2 + size)


def rnorm_ref(x, N, C, S, size, a, pw, minDiv):
    x = x.reshape(N, C, S, S)
    d = np.zeros_like(x)
    for py in range(S):
        for px in range(S):
            y0, y1 = _win(py, size, S)
            x0, x1 = _win(px, size, S)
            d[:, :, py, px] = minDiv + a * np.sum(x[:, :, y0:y1, x0:x1] ** 2, axis=(2, 3))
    return (x * d ** -pw).reshape(N, -1)


def cmrnorm_ref(x, N, C, S, size, a, pw, minDiv, blocked=False):
    x = x.reshape(N, C, S, S)
    d = np.zeros_like(x)
    for c in range(C):
        if blocked:
            c0 = c - c % size
            c1 = min(C, c0 + size)
        else:
            c0, c1 = _win(c, size, C)
        d[:, c] = minDiv + a * np.sum(x[:, c0:c1] ** 2, axis=1)
    return (x * d ** -pw).reshape(N, -1)


def cnorm_ref(x, N, C, S, size, a, pw, minDiv):
    x = x.reshape(N, C, S, S)
    u = np.zeros_like(x)
    for py in range(S):
        for px in range(S):
            y0, y1 = _win(py, size, S)
            x0, x1 = _win(px, size, S)
            u[:, :, py, px] = x[:, :, py, px] - x[:, :, y0:y1, x0:x1].mean(axis=(2, 3))
    d = np.zeros_like(x)
    for py in range(S):
        for px in range(S):
            y0, y1 = _win(py, size, S)
            x0, x1 = _win(px, size, S)
            d[:, :, py, px] = minDiv + a * np.sum(u[:, :, y0:y1, x0:x1] ** 2, axis=(2, 3))
    return (x * d ** -pw).reshape(N, -1)
