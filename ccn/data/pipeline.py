"""The parallel image pipeline of prepare-data for file sources (image folders, ImageNet).

The caller plans the batches: ``[(num, train, [Item, ...]), ...]`` in a deterministic
(seeded) order. Worker processes (all cores by default) read each image's bytes (a file, or
a byte range of an archive read with ``pread``, so archives are never unpacked), decode it by
content, force RGB, scale the shorter side to ``size``, optionally centre-crop to a square,
and re-encode it as JPEG (or keep raw pixels). Undecodable images are reported and skipped.
Results come back in order; each batch is committed atomically as soon as it is complete, so
an interrupted run resumes after the last complete batch.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context

import numpy as np

from .images import BadImage, encode_jpeg, prepare_image
from .writer import DatasetWriter, Stats


@dataclass(frozen=True)
class Item:
    ref: tuple        # ("file", path) or ("range", archive_path, offset, size)
    label: int
    name: str


_FDS: dict[str, int] = {}


def read_ref(ref) -> bytes:
    if ref[0] == "file":
        with open(ref[1], "rb") as f:
            return f.read()
    if ref[0] == "range":
        path, off, size = ref[1], ref[2], ref[3]
        fd = _FDS.get(path)
        if fd is None:
            fd = _FDS[path] = os.open(path, os.O_RDONLY)
        data = os.pread(fd, size, off)
        if len(data) != size:
            raise OSError(f"{path} ends inside this member (truncated archive)")
        return data
    if ref[0] == "bytes":
        return ref[1]
    raise ValueError(ref)


def _die_with_parent(parent: int) -> None:
    """Worker initializer: end this worker when the parent process dies (killed, or gone without
    shutting the pool down), instead of waiting forever for work: each worker holds both ends of
    the pool's queues, so it would never see them close. Linux: PR_SET_PDEATHSIG; elsewhere (and
    as a fallback) a thread that polls the parent's pid."""
    import signal
    import sys
    import threading
    import time

    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG = 1
        except (OSError, AttributeError):
            pass

    def watch():
        while True:
            if os.getppid() != parent:
                os._exit(1)
            time.sleep(1.0)

    if os.getppid() != parent:  # (the parent died before prctl took effect)
        os._exit(1)
    threading.Thread(target=watch, daemon=True, name="ccn-parent-watch").start()


def _stop_workers(ex: ProcessPoolExecutor) -> None:
    """End the workers now (an interrupt or SIGTERM must not wait for queued or running work)."""
    procs = list((getattr(ex, "_processes", None) or {}).values())
    ex.shutdown(wait=False, cancel_futures=True)
    for p in procs:
        try:
            p.terminate()
        except (OSError, ValueError, AttributeError):
            pass
    for p in procs:
        try:
            p.join(timeout=5)
        except (OSError, ValueError, AttributeError, AssertionError):
            pass


def _work(args):
    items, size, crop, storage, quality, want_stats = args
    out = []
    stats = Stats(3, size, size) if want_stats else None
    for it in items:
        try:
            data = read_ref(it.ref)
            im = prepare_image(data, size, crop)
        except BadImage as e:
            out.append((False, f"cannot decode ({e})"))
            continue
        except OSError as e:
            out.append((False, f"cannot read ({e.strerror or e})"))
            continue
        arr = np.asarray(im).transpose(2, 0, 1)
        if stats is not None:
            h, w = arr.shape[1:]
            y, x = (h - size) // 2, (w - size) // 2
            stats.add_images(arr[None, :, y:y + size, x:x + size], pixel_stride=max(1, size // 32))
        if storage == "jpeg":
            out.append((True, encode_jpeg(im, quality)))
        else:
            out.append((True, np.ascontiguousarray(arr)))
    return out, stats


def run(writer: DatasetWriter, plan, *, size: int, crop: bool, storage: str, quality: int, workers: int = 0,
        chunk: int = 64, progress=None) -> None:
    """Process and commit every batch of ``plan`` that ``writer`` has not done yet."""
    todo = [(num, train, items) for num, train, items in plan if not writer.done(num)]
    total_imgs = sum(len(items) for _, _, items in plan)
    done_imgs = total_imgs - sum(len(items) for _, _, items in todo)
    if progress:
        progress(done_imgs, total_imgs)
    if not todo:
        return
    workers = workers or os.cpu_count() or 1
    # statistics of the training batches (the mean image, colour PCA); of the test batches only when
    # there are no training batches, whose mean the test images' then stand in for (writer.finish)
    test_only = not any(train for _, train, _ in plan)
    jobs = []  # (batch index in todo, chunk args)
    for bi, (num, train, items) in enumerate(todo):
        for lo in range(0, len(items), chunk):
            jobs.append((bi, (items[lo:lo + chunk], size, crop, storage, quality, train or test_only)))
        if not items:
            jobs.append((bi, ([], size, crop, storage, quality, train or test_only)))

    def results():
        if workers <= 1:
            for bi, a in jobs:
                yield bi, a, _work(a)
            return
        ex = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"), initializer=_die_with_parent,
                                 initargs=(os.getpid(),))
        try:
            window = workers * 3
            pending = []
            it = iter(jobs)
            for bi, a in it:
                pending.append((bi, a, ex.submit(_work, a)))
                if len(pending) >= window:
                    break
            while pending:
                bi, a, fut = pending.pop(0)
                nxt = next(it, None)
                if nxt is not None:
                    pending.append((nxt[0], nxt[1], ex.submit(_work, nxt[1])))
                yield bi, a, fut.result()
        except BaseException:
            _stop_workers(ex)  # an interrupt (Ctrl-C, SIGTERM) must not wait for queued work
            raise
        ex.shutdown(wait=True)

    cur, acc, stats = None, [], None
    jobs_left = {}
    for bi, _ in jobs:
        jobs_left[bi] = jobs_left.get(bi, 0) + 1
    gen = results()
    try:
        for bi, a, (res, st) in gen:
            if cur != bi:
                cur, acc, stats = bi, [], Stats(3, size, size)
            acc.extend(zip(a[0], res))
            if st is not None:
                stats.merge(st)
            done_imgs += len(a[0])
            jobs_left[bi] -= 1
            if jobs_left[bi] == 0:
                num, train, items = todo[bi]
                ok = [(it, payload) for it, (good, payload) in acc if good]
                bad = [(it.name, payload) for it, (good, payload) in acc if not good]
                labels = np.array([it.label for it, _ in ok], np.int32)
                names = [it.name for it, _ in ok]
                if storage == "jpeg":
                    writer.commit(num, labels, train=train, jpegs=[p for _, p in ok], names=names,
                                  stats=stats if train or test_only else None, read=len(acc), skipped=bad)
                else:
                    px = np.stack([p for _, p in ok]) if ok else np.zeros((0, 3, size, size), np.uint8)
                    writer.commit(num, labels, train=train, pixels=px, names=names,
                                  stats=stats if train or test_only else None, read=len(acc), skipped=bad)
            if progress:
                progress(done_imgs, total_imgs)
    finally:
        gen.close()


def seeded_batches(items: list, batch_size: int, seed: int, first_num: int, train: bool, shuffle: bool = True):
    """Split ``items`` (in a fixed order) into batches after a seeded shuffle."""
    order = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0x5EED]).permutation(len(items)) if shuffle \
        else np.arange(len(items))
    items = [items[i] for i in order]
    return [(first_num + k, train, items[lo:lo + batch_size])
            for k, lo in enumerate(range(0, len(items), batch_size))]
