#!/usr/bin/env python3
"""Data-pipeline throughput: provider decode + augment, and prepare-data.

1. Provider: 256 x 256 JPEG batches (photo-like synthetic images) -> random 224 x 224 crops +
   flips + colour noise, float32 minus the mean; images/s with 1 thread and with all threads,
   and images/s per core.
2. prepare-data (image folder source, the ImageNet path minus the tar index): images/s for
   decode, resize to 256, centre crop, JPEG re-encode, with 1 worker and all cores.
3. Data parallel: one rank's load time and memory per batch when N ranks each read, decode and
   augment only their rows of every minibatch (``Provider.load_rows``).

Usage: PYTHONPATH=. python3 tools/bench_data.py [--images 600] [--threads N] [--mini 128] [--ranks 1 2 4 8]
       [--no-prepare]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ccn.data import batchfmt as bf  # noqa: E402
from ccn.data import sources  # noqa: E402
from ccn.data.images import encode_jpeg  # noqa: E402
from ccn.data.provider import ProviderOptions, open_provider  # noqa: E402
from ccn.data.writer import DatasetWriter, Stats  # noqa: E402


def photo(rng, w, h):
    """Smooth blobs + texture + noise: compresses like a photo, not like white noise."""
    small = rng.integers(0, 256, (h // 16 + 2, w // 16 + 2, 3), dtype=np.uint8)
    im = Image.fromarray(small).resize((w, h), Image.BICUBIC)
    a = np.asarray(im).astype(np.int16) + rng.integers(-12, 13, (h, w, 3))
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=600)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--mini", type=int, default=128)
    ap.add_argument("--ranks", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--no-prepare", action="store_true", help="skip the prepare-data part")
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    n = a.images
    cores = a.threads
    with tempfile.TemporaryDirectory() as d:
        # --- provider ---
        out = os.path.join(d, "prep")
        w = DatasetWriter(out, plan_id="bench", storage="jpeg", channels=3, size=(256, 256))
        jpegs = [encode_jpeg(photo(rng, 256, 256), 90) for _ in range(n)]
        w.commit(1, rng.integers(0, 1000, n), train=True, jpegs=jpegs,
                 stats=Stats(3, 256, 256))
        w.finish(label_names=[str(i) for i in range(1000)], source="bench", options={}, seed=0)
        print(f"provider: {n} JPEGs of 256x256 (mean {np.mean([len(j) for j in jpegs]) / 1024:.0f} KiB) "
              "-> 224x224 random crop + flip + colour noise")
        res = {}
        for t in sorted({1, cores}):
            p = open_provider(out, [1], train=True, options=ProviderOptions(inner_size=224, color_noise=0.1, threads=t))
            p.load(1, 0)
            t0 = time.perf_counter()
            reps = 2
            for e in range(reps):
                p.load(1, e + 1)
            dt = (time.perf_counter() - t0) / reps
            res[t] = n / dt
            print(f"  {t:2d} thread(s): {n / dt:8.0f} images/s  ({n / dt / t:.0f} images/s per core)")
            p.close()
        # --- data parallel: what one of N ranks loads per batch (its rows of each minibatch) ---
        from ccn.parallel import minibatch_shares

        p = open_provider(out, [1], train=True, options=ProviderOptions(inner_size=224, color_noise=0.1, threads=1))
        p.load(1, 0)
        print(f"data-parallel ranks, --mini {a.mini}, 1 thread each: one rank's time and memory per batch (before "
              "load_rows every rank loaded what 1 rank loads)")
        for ranks in a.ranks:
            rows, _ = minibatch_shares(n, a.mini, ranks, 0)
            dt = float("inf")
            for e in range(3):  # the best of three (the machine may be shared)
                t0 = time.perf_counter()
                x = (p.load_rows if ranks > 1 else lambda b, ep, r: p.load(b, ep))(1, e + 1, rows)[0]
                dt = min(dt, time.perf_counter() - t0)
            print(f"  {ranks:2d} rank(s): {dt:6.3f} s, {x.nbytes / 2**20:6.1f} MiB of images "
                  f"({len(rows)} of {n} cases)")
        p.close()
        # --- prepare-data ---
        if a.no_prepare:
            return
        src = os.path.join(d, "src")
        m = max(64, n // 3)
        for i in range(m):
            c = os.path.join(src, f"class{i % 4}")
            os.makedirs(c, exist_ok=True)
            ww, hh = int(rng.integers(300, 500)), int(rng.integers(300, 500))
            photo(rng, ww, hh).save(os.path.join(c, f"{i}.JPEG"), quality=90)
        print(f"prepare-data: {m} JPEGs of ~400x400 -> shorter side 256, centre crop, JPEG q90")
        for t in sorted({1, cores}):
            o = os.path.join(d, f"out{t}")
            t0 = time.perf_counter()
            sources.prepare_folder(src, o, size=256, storage="jpeg", batch_size=256, test_fraction=0.0, workers=t)
            dt = time.perf_counter() - t0
            print(f"  {t:2d} worker(s): {m / dt:8.0f} images/s  ({m / dt / t:.0f} images/s per core; includes "
                  "worker start-up)")


if __name__ == "__main__":
    main()
