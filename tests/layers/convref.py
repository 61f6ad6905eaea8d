"""Independent float64 references for conv and local layers, written from the definition.

For module (my, mx) and filter f of group g = f // (F // groups):
    out[n, f, my, mx] = sum_{c, fy, fx} W[c*fs^2 + fy*fs + fx, f] * x[n, chan(g, c), my*st - pad + fy, mx*st - pad + fx]
with pixels outside the image 0 and chan(g, c) = g*Cf + c (or a given table).
Local layers use a separate weight block per module: rows m*Kg .. (m+1)*Kg, m = my*M + mx.
"""

from __future__ import annotations

import math

import numpy as np


def modules_x(size, fs, pad, stride):
    return 1 + math.ceil((2 * pad + size - fs) / stride)


def windows(x, fs, pad, stride, M):
    """x: N x C x S x S -> patches[n, c, my, mx, fy, fx] = x[n, c, my*st - pad + fy, mx*st - pad + fx], 0 outside."""
    N, C, S, _ = x.shape
    big = max(S + pad, (M - 1) * stride + fs)  # far edge of the last window, in padded coordinates
    xp = np.zeros((N, C, big, big))
    xp[:, :, pad:pad + S, pad:pad + S] = x
    pos = np.arange(M)[:, None] * stride + np.arange(fs)[None, :]  # [module, tap] in padded coordinates
    return xp[:, :, pos[:, None, :, None], pos[None, :, None, :]]


def conv_ref(x, W, fs, pad, stride, groups, filters_total, table=None, local=False):
    """x: N x C x S x S, W: conv (Cf*fs^2) x F or local (M^2*Cf*fs^2) x F. Returns N x F x M x M."""
    N, C, S, _ = x.shape
    M = modules_x(S, fs, pad, stride)
    F = filters_total
    Fg = F // groups
    if table is None:
        cf = C // groups
        table = [list(range(g * cf, (g + 1) * cf)) for g in range(groups)]
    cf = len(table[0])
    p = windows(x, fs, pad, stride, M)  # n, c, my, mx, fy, fx
    out = np.zeros((N, F, M, M))
    for g in range(groups):
        pg = p[:, table[g]]  # n, c, my, mx, fy, fx with c the filter channel
        if local:
            w = W[:, g * Fg:(g + 1) * Fg].reshape(M, M, cf, fs, fs, Fg)  # row m*Kg + c*fs^2 + fy*fs + fx
            out[:, g * Fg:(g + 1) * Fg] = np.einsum("ncabyx,abcyxf->nfab", pg, w)
        else:
            w = W[:, g * Fg:(g + 1) * Fg].reshape(cf, fs, fs, Fg)  # row c*fs^2 + fy*fs + fx
            out[:, g * Fg:(g + 1) * Fg] = np.einsum("ncabyx,cyxf->nfab", pg, w)
    return out


def add_bias(out, b, shared):
    N, F, M, _ = out.shape
    if shared:
        return out + b.reshape(1, F, 1, 1)
    return out + b.reshape(1, F, M, M)  # index f*modules + m
