"""The built-in dataset: coloured shapes and textures, generated from a seed (no download).

Ten classes at 32 x 32 RGB (the size is an option): disc, square, triangle, ring, cross,
diamond, horizontal stripes, vertical stripes, diagonal stripes and checkerboard. Every
image draws its own position, scale, small rotation, foreground and background colours (with
enough contrast to see), a background gradient and pixel noise from a generator seeded by
``(seed, image index)``, so the same seed always gives the same images whatever the batch
size. A small convnet learns it to well under 10% error in minutes on a CPU, and its first
layer learns edge and colour-blob filters.

``ensure(DIR)`` prepares the default (5 training batches + 1 test batch of 2000 images)
unless DIR already holds it; ``ccn prepare-data builtin --out DIR`` does the same with options.
"""

from __future__ import annotations

import numpy as np

from . import batchfmt as bf
from .writer import DatasetWriter, fingerprint

LABEL_NAMES = ["disc", "square", "triangle", "ring", "cross", "diamond", "hstripes", "vstripes", "dstripes",
               "checker"]
MAX_BATCH_VALUES = 2**31 - 1
DEFAULTS = {"train_batches": 5, "test_batches": 1, "batch_size": 2000, "image_size": 32, "seed": 0}


def _colour_pair(rng):
    while True:
        bg = rng.uniform(0, 255, 3)
        fg = rng.uniform(0, 255, 3)
        lum = np.array([0.299, 0.587, 0.114])
        if abs(lum @ (fg - bg)) > 55 and np.abs(fg - bg).max() > 80:
            return fg, bg


def render(label: int, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """One image of class ``label``: uint8 3 x size x size."""
    s = float(size)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    fg, bg = _colour_pair(rng)
    textured = label >= 6
    half = rng.uniform(0.17, 0.30) * s if not textured else rng.uniform(0.28, 0.42) * s
    cx = rng.uniform(half * 0.8, s - half * 0.8)
    cy = rng.uniform(half * 0.8, s - half * 0.8)
    ang = np.deg2rad(rng.uniform(-15, 15))
    dx, dy = xx - cx, yy - cy
    ca, sa = np.cos(ang), np.sin(ang)
    u, v = ca * dx + sa * dy, -sa * dx + ca * dy  # rotated coordinates
    r = np.hypot(u, v)
    if label == 0:  # disc
        d = r - half
    elif label == 1:  # square
        d = np.maximum(np.abs(u), np.abs(v)) - half * 0.85
    elif label == 2:  # triangle, apex up
        h = half * 1.1
        e1 = v - h * 0.6  # bottom edge
        n = np.array([np.sqrt(3) / 2, -0.5])
        e2 = u * n[0] + v * n[1] - h * 0.55
        e3 = -u * n[0] + v * n[1] - h * 0.55
        d = np.maximum(e1, np.maximum(e2, e3))
    elif label == 3:  # ring
        d = np.abs(r - half * 0.8) - max(1.2, half * 0.22)
    elif label == 4:  # cross
        w = max(1.2, half * 0.28)
        d = np.minimum(np.maximum(np.abs(u) - w, np.abs(v) - half), np.maximum(np.abs(v) - w, np.abs(u) - half))
    elif label == 5:  # diamond
        d = (np.abs(u) + np.abs(v)) / np.sqrt(2) - half * 0.72
    else:  # textured square patch
        d = np.maximum(np.abs(u), np.abs(v)) - half
        period = rng.uniform(3.5, 6.5) * s / 32
        ph = rng.uniform(0, 2 * np.pi)
        k = 2 * np.pi / period
        if label == 6:
            t = np.sin(k * v + ph)
        elif label == 7:
            t = np.sin(k * u + ph)
        elif label == 8:
            t = np.sin(k * (u + v) / np.sqrt(2) + ph)
        else:
            t = np.sin(k * u + ph) * np.sin(k * v + rng.uniform(0, 2 * np.pi)) * 2
        tex = np.clip(t * 2 + 0.5, 0, 1)
    mask = np.clip(0.5 - d, 0.0, 1.0)
    if textured:
        mask = mask * tex
    g = rng.normal(0, 18, 2) / s
    grad = (xx - s / 2) * g[0] + (yy - s / 2) * g[1]
    img = bg[:, None, None] + grad[None] * (1 + rng.uniform(-0.3, 0.3, 3))[:, None, None]
    img = img * (1 - mask[None]) + fg[:, None, None] * mask[None]
    img += rng.normal(0, rng.uniform(2, 10), img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def generate(start: int, count: int, seed: int, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Images ``start .. start+count-1`` of the stream for ``seed``: (N x 3 x S x S uint8, labels int32)."""
    imgs = np.empty((count, 3, size, size), np.uint8)
    labels = np.empty(count, np.int32)
    for i in range(count):
        rng = np.random.default_rng([int(seed), int(start + i)])
        lab = int(rng.integers(0, len(LABEL_NAMES)))
        labels[i] = lab
        imgs[i] = render(lab, rng, size)
    return imgs, labels


def prepare(out: str, *, train_batches: int = 5, test_batches: int = 1, batch_size: int = 2000,
            image_size: int = 32, seed: int = 0, overwrite: bool = False, progress=None) -> dict:
    """Write the built-in dataset to ``out`` (resumable); return its metadata."""
    from ..errors import InputError

    if train_batches < 1:
        raise InputError(f"--train-batches must be at least 1 (got {train_batches}).")
    if test_batches < 0:
        raise InputError(f"--test-batches must be 0 or more (got {test_batches}).")
    if batch_size < 1:
        raise InputError(f"--batch-size must be at least 1 (got {batch_size}).")
    if not 8 <= image_size <= 512:
        raise InputError(f"--image-size must be between 8 and 512 (got {image_size}).")
    if batch_size * 3 * image_size * image_size > MAX_BATCH_VALUES:
        raise InputError(f"--batch-size {batch_size} with --image-size {image_size} makes batches of "
                         f"{batch_size * 3 * image_size * image_size} values; a batch holds at most "
                         f"{MAX_BATCH_VALUES} (the largest matrix ccn handles): give a smaller --batch-size.")
    options = {"train_batches": train_batches, "test_batches": test_batches, "batch_size": batch_size,
               "image_size": image_size, "seed": seed}
    w = DatasetWriter(out, plan_id=fingerprint({"source": "builtin", "v": 1, **options}), storage="raw",
                      channels=3, size=(image_size, image_size), overwrite=overwrite)
    if w.already_complete:
        return w.meta
    total = train_batches + test_batches
    for b in range(total):
        num = b + 1
        if not w.done(num):
            # test images come from a disjoint part of the stream (offset by 2**40)
            start = b * batch_size if b < train_batches else (1 << 40) + (b - train_batches) * batch_size
            imgs, labels = generate(start, batch_size, seed, image_size)
            w.commit(num, labels, train=b < train_batches, pixels=imgs)
        if progress:
            progress(b + 1, total)
    return w.finish(label_names=LABEL_NAMES, source="builtin: procedural shapes and textures", options=options,
                    seed=seed)


def ensure(out: str, **kw) -> str:
    """Prepare the default built-in dataset in ``out`` unless it is already there; return ``out``."""
    prepare(out, **kw)
    return out


__all__ = ["LABEL_NAMES", "DEFAULTS", "render", "generate", "prepare", "ensure", "bf"]
