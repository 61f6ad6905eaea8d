"""Augmentation: random crops and flips, centre crops, the ten test views, PCA colour noise.

Images here are C x H x W uint8 (one) or N x C x H x W (many); an output row is the
C*inner*inner crop flattened with x fastest, then y, then channel.

* Training: a random ``inner x inner`` crop, uniformly placed, flipped left-right with
  probability 1/2 (cuda-convnet's training augmentation).
* Testing: the centre crop (offset ``(H - inner) // 2``).
* Multiview: ten views per image in the order top-left, top-right, bottom-left,
  bottom-right, centre, then the same five flipped; the provider puts view v of case i at
  row ``i + v * cases``.
* Colour noise (AlexNet §4.1): to every pixel of an image add ``E @ (alpha * s)``, where E holds
  the eigenvectors of the RGB covariance of the training pixels as columns, s their standard
  deviations (sqrt of the eigenvalues, 0..255 scale) and alpha ~ N(0, sigma^2) is drawn once
  per image. (cuda-convnet2 also scaled the result by 1/(1+sigma); we add the noise only, as
  in the paper.)
"""

from __future__ import annotations

import numpy as np

VIEW_NAMES = ["top-left", "top-right", "bottom-left", "bottom-right", "centre"]


def view_offsets(h: int, w: int, inner: int) -> list[tuple[int, int]]:
    """(y, x) of the five unflipped views."""
    bh, bw = h - inner, w - inner
    return [(0, 0), (0, bw), (bh, 0), (bh, bw), (bh // 2, bw // 2)]


def centre_offset(h: int, w: int, inner: int) -> tuple[int, int]:
    return (h - inner) // 2, (w - inner) // 2


def random_offsets(u: np.ndarray, h: int, w: int, inner: int) -> tuple[int, int]:
    """Map two uniform [0, 1) numbers to a crop position in an h x w image."""
    y = min(int(u[0] * (h - inner + 1)), h - inner)
    x = min(int(u[1] * (w - inner + 1)), w - inner)
    return y, x


def crop(img: np.ndarray, y: int, x: int, inner: int, flip: bool = False) -> np.ndarray:
    """img: C x H x W -> C x inner x inner (a view; copy before writing)."""
    c = img[:, y:y + inner, x:x + inner]
    return c[:, :, ::-1] if flip else c


def crop_many(imgs: np.ndarray, ys: np.ndarray, xs: np.ndarray, inner: int, flips: np.ndarray) -> np.ndarray:
    """N x C x H x W -> N x C x inner x inner, case i cropped at (ys[i], xs[i]), flipped where flips[i]."""
    n, c, h, w = imgs.shape
    if inner == h and inner == w:
        out = np.array(imgs)
    else:
        win = np.lib.stride_tricks.sliding_window_view(imgs, (inner, inner), axis=(2, 3))
        out = win[np.arange(n), :, ys, xs]  # n x C x inner x inner
    if flips.any():
        out[flips] = out[flips][..., ::-1]
    return out


def color_noise(rng: np.random.Generator, n: int, sigma: float, stdevs, eigvecs) -> np.ndarray:
    """n x 3 per-image RGB offsets: eigvecs @ (alpha * stdevs), alpha ~ N(0, sigma^2)."""
    alpha = rng.standard_normal((n, 3)) * sigma
    return (alpha * np.asarray(stdevs)[None, :]) @ np.asarray(eigvecs).T
