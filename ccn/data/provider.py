"""Data providers: prepared batches -> the matrices the data layers read (see /work/contract-provider.md).

``open_provider(path, batch_range, train=..., options=ProviderOptions(...))`` returns a
:class:`Provider`; ``load(batch_num, epoch)`` gives ``[images, labels]``:

* images: ``N x (C*inner*inner)`` float32, NCHW flat (x fastest), minus the mean. The mean is
  the centre ``inner x inner`` crop of ``data_mean`` (as cuda-convnet does, whatever the
  crop), or ``scalar_mean`` when given.
* labels: ``N x 1`` float32 class indices.

Training: random crops + flips (and colour noise when ``color_noise > 0``); testing: centre
crops, or with ``multiview`` the ten views (view v of case i at row ``i + v*cases``, labels
repeated). Randomness comes from a generator seeded by ``(seed, batch_num, epoch)`` and all
draws are made before any work is split across threads, so a result depends on nothing else.
JPEG batches are decoded by a thread pool (Pillow releases the GIL while decoding). ``load``
is thread-safe: it touches no mutable state but a lock-protected file cache.
``num_cases(b)`` is the number of images in batch b (rows of ``load`` are 10x that with multiview).
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ..batchrange import format_range
from ..errors import InputError
from . import augment as aug
from . import batchfmt as bf
from .images import BadImage, decode_jpeg_array


@dataclass
class ProviderOptions:
    inner_size: int = 0
    color_noise: float = 0.0
    scalar_mean: float | None = None
    multiview: bool = False
    seed: int = 0
    threads: int = 0


def available_batches(data_path: str) -> list[int]:
    meta = bf.read_meta(data_path)
    return sorted(int(b) for b in list(meta.get("train_batches", [])) + list(meta.get("test_batches", [])))


def open_provider(data_path: str, batch_range: list[int], *, train: bool, options: ProviderOptions) -> "Provider":
    return Provider(data_path, batch_range, train=train, options=options)


class Provider:
    def __init__(self, data_path: str, batch_range, *, train: bool, options: ProviderOptions):
        self.path = data_path
        self.meta = bf.read_meta(data_path)
        self.train = bool(train)
        self.options = options
        avail = available_batches(data_path)
        batch_range = [int(b) for b in batch_range]
        if not batch_range:
            raise InputError(f"no batches asked for from {data_path} (it has batches {format_range(avail)}).")
        missing = [b for b in batch_range if b not in avail]
        if missing:
            raise InputError(f"{data_path} has no batch {format_range(missing)}; it has batches {format_range(avail)} "
                             f"(training {format_range(sorted(self.meta.get('train_batches', [])))}, test "
                             f"{format_range(sorted(self.meta.get('test_batches', [])))}).")
        self.batch_nums = list(batch_range)
        self.label_names = list(self.meta["label_names"])
        self.num_classes = int(self.meta["num_classes"])
        self.channels = int(self.meta["channels"])
        h, w = (int(x) for x in self.meta["image_size"])
        self.img_h, self.img_w = h, w
        inner = int(options.inner_size or 0)
        if inner < 0:
            raise InputError(f"--inner-size must be positive (got {inner}).")
        if inner == 0:
            inner = min(h, w)
        if inner > min(h, w):
            raise InputError(f"--inner-size {inner} is larger than the images of {data_path} ({h} x {w}).")
        self.inner = inner
        if options.color_noise < 0:
            raise InputError(f"--color-noise must be >= 0 (got {options.color_noise}).")
        self.views = 10 if (options.multiview and not self.train) else 1
        if options.scalar_mean is not None:
            self.mean = np.float32(options.scalar_mean)
        else:
            m = bf.load_mean(data_path, self.meta)
            if m.shape != (self.channels, h, w):
                raise InputError(f"the mean image of {data_path} has shape {m.shape}; expected "
                                 f"{(self.channels, h, w)}.")
            y, x = aug.centre_offset(h, w, inner)
            self.mean = np.ascontiguousarray(m[:, y:y + inner, x:x + inner]).reshape(1, -1)
        pca = self.meta.get("color_pca") or {}
        self._stdevs = np.asarray(pca.get("stdevs", [0.0] * 3), np.float64)
        self._eigvecs = np.asarray(pca.get("eigenvectors", np.eye(3).tolist()), np.float64)
        self._files: dict[int, bf.BatchFile] = {}
        self._verified: set[int] = set()
        self._lock = threading.Lock()
        for b in self.batch_nums:  # open every file now: a missing or corrupt one is reported up front
            self._file(b)
        self._threads = int(options.threads) if options.threads else (os.cpu_count() or 1)
        self._pool = None

    # -- contract ---------------------------------------------------------------------------
    def data_dims(self) -> dict:
        return {0: (self.channels, self.inner, self.inner), 1: 1}

    def num_cases(self, batch_num: int) -> int:
        return self._file(batch_num).count

    def load(self, batch_num: int, epoch: int) -> list[np.ndarray]:
        return self._load(batch_num, epoch, None)

    def load_rows(self, batch_num: int, epoch: int, rows) -> list[np.ndarray]:
        """``load(batch_num, epoch)`` restricted to the cases ``rows`` (increasing indices),
        reading, decoding and augmenting only those: the same values as ``load(...)[k][rows]``
        (every random draw of the batch is still made, then indexed). For data-parallel ranks,
        which each need only their rows of every minibatch. Not with multiview."""
        rows = np.asarray(rows, np.int64).reshape(-1)
        n = self._file(batch_num).count
        if self.views != 1:
            raise ValueError("load_rows is for training batches (one view per case).")
        if rows.size and (rows.min() < 0 or rows.max() >= n or np.any(np.diff(rows) <= 0)):
            raise ValueError(f"load_rows: rows must increase within 0..{n - 1}.")
        return self._load(batch_num, epoch, rows)

    def _load(self, batch_num: int, epoch: int, rows) -> list[np.ndarray]:
        f = self._file(batch_num)
        self._verify(batch_num, f)
        n, c, inner = f.count, self.channels, self.inner
        rng = np.random.default_rng([int(self.options.seed) & 0xFFFFFFFFFFFF, int(batch_num), int(epoch) & 0xFFFFFFFF])
        if self.train:  # drawn for the whole batch, so a case's draws do not depend on which rows are read
            u = rng.random((n, 2))
            flips = rng.random(n) < 0.5
        idx = np.arange(n) if rows is None else rows  # output row j is case idx[j]
        m = len(idx)
        if rows is not None and self.train:
            u, flips = u[idx], flips[idx]
        out = np.empty((m * self.views, c * inner * inner), np.float32)
        if f.kind == "raw":
            px = f.pixels
            h, w = px.shape[2], px.shape[3]
            if self.train:
                ys = np.minimum((u[:, 0] * (h - inner + 1)).astype(np.int64), h - inner)
                xs = np.minimum((u[:, 1] * (w - inner + 1)).astype(np.int64), w - inner)
                src = np.asarray(px) if rows is None else np.asarray(px[idx])
                out[:] = aug.crop_many(src, ys, xs, inner, flips).reshape(m, out.shape[1])
            elif self.views == 1:
                y, x = aug.centre_offset(h, w, inner)
                src = px if rows is None else px[idx]
                out[:] = src[:, :, y:y + inner, x:x + inner].reshape(m, out.shape[1])
            else:
                for v, (y, x) in enumerate(aug.view_offsets(h, w, inner)):
                    crop = px[:, :, y:y + inner, x:x + inner]
                    out[v * n:(v + 1) * n] = crop.reshape(n, -1)
                    out[(v + 5) * n:(v + 6) * n] = crop[..., ::-1].reshape(n, -1)
        else:
            def work(lo, hi):
                for j in range(lo, hi):
                    i = int(idx[j])
                    try:
                        img = decode_jpeg_array(f.jpeg(i)).transpose(2, 0, 1)
                    except BadImage as e:
                        raise InputError(f"image {i} of {f.path} cannot be decoded ({e}); the batch file is "
                                         "damaged: prepare the data again.") from None
                    if c == 1:
                        img = img[:1]
                    h, w = img.shape[1], img.shape[2]
                    if min(h, w) < inner:
                        raise InputError(f"image {i} of {f.path} is {h} x {w}, smaller than the "
                                         f"{inner} x {inner} crop.")
                    if self.train:
                        y, x = aug.random_offsets(u[j], h, w, inner)
                        out[j] = aug.crop(img, y, x, inner, bool(flips[j])).reshape(-1)
                    elif self.views == 1:
                        y, x = aug.centre_offset(h, w, inner)
                        out[j] = aug.crop(img, y, x, inner).reshape(-1)
                    else:
                        for v, (y, x) in enumerate(aug.view_offsets(h, w, inner)):
                            cr = aug.crop(img, y, x, inner)
                            out[i + v * n] = cr.reshape(-1)
                            out[i + (v + 5) * n] = cr[..., ::-1].reshape(-1)

            step = max(1, -(-m // (self._threads * 4)))
            chunks = [(lo, min(m, lo + step)) for lo in range(0, m, step)]
            if self._threads <= 1 or len(chunks) <= 1:
                for lo, hi in chunks:
                    work(lo, hi)
            else:
                pool = self._get_pool()
                for fut in [pool.submit(work, lo, hi) for lo, hi in chunks]:
                    fut.result()
        out -= self.mean
        if self.train and self.options.color_noise > 0 and c == 3:
            noise = aug.color_noise(rng, n, self.options.color_noise, self._stdevs, self._eigvecs)
            if rows is not None:
                noise = noise[idx]
            out.reshape(m, 3, inner * inner)[:] += noise.astype(np.float32)[:, :, None]
        labels = np.asarray(f.labels).astype(np.float32).reshape(n, 1)
        if rows is not None:
            labels = labels[idx]
        labels = np.tile(labels, (self.views, 1))
        return [out, labels]

    # -- helpers ----------------------------------------------------------------------------
    def _get_pool(self):
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self._threads, thread_name_prefix="ccn-decode")
            return self._pool

    def _file(self, b: int) -> bf.BatchFile:
        with self._lock:
            f = self._files.get(b)
            if f is None:
                if b not in self.batch_nums:
                    raise InputError(f"batch {b} is not in this provider's range ({format_range(self.batch_nums)}).")
                f = bf.BatchFile(os.path.join(self.path, bf.batch_name(b)))
                want = self.meta.get("batch_counts", {}).get(str(b))
                if want is not None and int(want) != f.count:
                    raise InputError(f"{f.path} holds {f.count} images but {bf.META_NAME} says {want}.")
                if f.channels != self.channels:
                    raise InputError(f"{f.path} has {f.channels} channels but {bf.META_NAME} says {self.channels}.")
                self._files[b] = f
            return f

    def _verify(self, b: int, f: bf.BatchFile) -> None:
        """The first read of a batch in this process checks the whole file against the checksum
        prepare-data recorded, so that a file damaged since (a flipped bit, which no header
        check sees) is refused instead of trained on. One extra read of each file per run (per
        rank under data parallel, although a rank reads only its rows of a batch)."""
        with self._lock:
            if b in self._verified:
                return
        want = self.meta.get("checksums", {}).get(bf.batch_name(b))
        if want is not None:
            got = f.sha256()
            if "sha256:" + got != want:
                raise bf.checksum_error(f.path, got, want)
        with self._lock:
            self._verified.add(b)

    def get_plottable_data(self, images: np.ndarray) -> np.ndarray:
        """Rows of ``load``'s images -> N x inner x inner x C float32 in 0..1 (mean added back)."""
        x = (images + self.mean).reshape(-1, self.channels, self.inner, self.inner).transpose(0, 2, 3, 1)
        return np.clip(x / 255.0, 0, 1).astype(np.float32)

    def close(self):
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=False)
                self._pool = None
            for f in self._files.values():
                f.close()
            self._files.clear()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
