"""ImageNet (ILSVRC2012) for prepare-data, from the archives as distributed or an unpacked tree.

Archives (never unpacked): ``ILSVRC2012_img_train.tar`` (1000 per-synset tars),
``ILSVRC2012_img_val.tar`` (50000 flat JPEGs) and ``ILSVRC2012_devkit_t12.tar.gz``
(``data/meta.mat`` and ``data/ILSVRC2012_validation_ground_truth.txt``, whose IDs are
ILSVRC2012_IDs, i.e. the devkit's order, not sorted-WNID order). The tar headers are read to
index every image (offset and size); workers then read the images with ``pread``, so a seeded
shuffle across classes needs no extraction and no second copy. meta.mat is read by
:mod:`ccn.data.matv5` (no scipy).

Unpacked tree: ``ROOT/train/<wnid>/*.JPEG`` and ``ROOT/val/<wnid>/*.JPEG`` or a flat
``ROOT/val/*.JPEG`` plus the devkit (for the ground truth).

Labels: ``--label-order ilsvrc-id`` (label = ILSVRC2012_ID - 1, the devkit's order) or
``wnid`` (sorted WNIDs, like torchvision); recorded in the metadata with the WNIDs.
Like cuda-convnet's make-data: shorter side to ``--size`` (256), centre crop to a square
(``--no-crop`` keeps the aspect), JPEG re-encoded at ``--quality``, ``--batch-size`` 3072
training images per batch after a seeded shuffle (batches 0, 1, ..., as make-data numbered them:
0-417 for the whole training set), validation batches numbered from the next multiple of 1000.
"""

from __future__ import annotations

import gzip
import io
import os
import re
import tarfile

import numpy as np

from ..errors import InputError
from . import batchfmt as bf, pipeline
from .matv5 import MatError, loadmat
from .pipeline import Item
from .writer import DatasetWriter, fingerprint

_IMG_EXT = (".jpeg", ".jpg", ".png")


class _Slice(io.RawIOBase):
    """A read-only window [off, off+size) of a file, for tarfile."""

    def __init__(self, f, off, size):
        self.f, self.off, self.size, self.pos = f, off, size, 0

    def readable(self):
        return True

    def seekable(self):
        return True

    def tell(self):
        return self.pos

    def seek(self, pos, whence=0):
        self.pos = pos if whence == 0 else self.pos + pos if whence == 1 else self.size + pos
        return self.pos

    def readinto(self, b):
        n = max(0, min(len(b), self.size - self.pos))
        self.f.seek(self.off + self.pos)
        data = self.f.read(n)
        b[:len(data)] = data
        self.pos += len(data)
        return len(data)


def _tar_index(path: str, fileobj=None, base: int = 0, what: str = "archive"):
    """[(name, absolute offset, size)] of the regular members of a tar (headers only)."""
    out = []
    try:
        tf = tarfile.open(path if fileobj is None else None, mode="r:", fileobj=fileobj)
        with tf:
            for m in tf:
                if m.isfile():
                    out.append((m.name, base + m.offset_data, m.size))
    except (tarfile.TarError, OSError, EOFError) as e:
        raise InputError(f"{what} is not a readable tar archive (truncated or corrupt?): {e}.") from None
    return out


def _check_ranges(path, entries, what):
    size = os.path.getsize(path)
    for name, off, n in entries:
        if off + n > size:
            raise InputError(f"{what} is truncated: member {name} ends at byte {off + n}, the file has {size}.")


def read_devkit(path: str):
    """-> (synsets: list of (ilsvrc_id, wnid, words) for the 1000 leaves, val ground truth ids)."""
    if not os.path.exists(path):
        raise InputError(f"devkit {path} does not exist.")
    meta_bytes = gt_text = None
    if os.path.isdir(path):
        for dirpath, _, files in os.walk(path):
            if "meta.mat" in files and meta_bytes is None:
                meta_bytes = open(os.path.join(dirpath, "meta.mat"), "rb").read()
            if "ILSVRC2012_validation_ground_truth.txt" in files and gt_text is None:
                gt_text = open(os.path.join(dirpath, "ILSVRC2012_validation_ground_truth.txt"), "rb").read()
    else:
        try:
            with tarfile.open(path, "r|*") as tf:
                for m in tf:
                    b = os.path.basename(m.name)
                    if m.isfile() and b == "meta.mat" and "/data/" in "/" + m.name:
                        meta_bytes = tf.extractfile(m).read()
                    elif m.isfile() and b == "ILSVRC2012_validation_ground_truth.txt":
                        gt_text = tf.extractfile(m).read()
        except (tarfile.TarError, OSError, EOFError, gzip.BadGzipFile) as e:
            raise InputError(f"devkit {path} is not a readable tar archive (truncated or corrupt?): {e}.") from None
    if meta_bytes is None:
        raise InputError(f"devkit {path} has no data/meta.mat.")
    try:
        mat = loadmat(meta_bytes)
    except MatError as e:
        raise InputError(f"{path}: data/meta.mat cannot be read: {e}.") from None
    syn = mat.get("synsets")
    if not isinstance(syn, list) or not syn or "WNID" not in syn[0] or "ILSVRC2012_ID" not in syn[0]:
        raise InputError(f"{path}: data/meta.mat has no 'synsets' struct with ILSVRC2012_ID and WNID.")
    leaves = []
    for s in syn:
        nc = s.get("num_children")
        if nc is not None and np.size(nc) and float(np.asarray(nc).reshape(-1)[0]) != 0:
            continue
        sid = int(np.asarray(s["ILSVRC2012_ID"]).reshape(-1)[0])
        leaves.append((sid, str(s["WNID"]).strip(), str(s.get("words") or "").strip()))
    leaves.sort()
    ids = [x[0] for x in leaves]
    if ids != list(range(1, len(ids) + 1)):
        raise InputError(f"{path}: the leaf synsets' ILSVRC2012_IDs are not 1..{len(ids)}.")
    gt = None
    if gt_text is not None:
        try:
            gt = [int(x) for x in gt_text.decode().split()]
        except ValueError:
            raise InputError(f"{path}: ILSVRC2012_validation_ground_truth.txt holds something other than "
                             "numbers.") from None
    return leaves, gt


def _val_number(name: str) -> int | None:
    m = re.search(r"ILSVRC2012_val_(\d+)", os.path.basename(name))
    return int(m.group(1)) if m else None


def index_train(path: str):
    """-> {wnid: [(name, ref)]} from the training tar or an unpacked train/ folder."""
    out: dict[str, list] = {}
    if os.path.isdir(path):
        for wnid in sorted(os.listdir(path)):
            d = os.path.join(path, wnid)
            if wnid.startswith(".") or not os.path.isdir(d):
                continue
            files = sorted(f for f in os.listdir(d) if f.lower().endswith(_IMG_EXT))
            out[wnid] = [(f"{wnid}/{f}", ("file", os.path.join(d, f))) for f in files]
        return out
    outer = _tar_index(path, what=f"training archive {path}")
    _check_ranges(path, outer, f"training archive {path}")
    with open(path, "rb") as f:
        for name, off, size in outer:
            base = os.path.basename(name)
            if not base.endswith(".tar"):
                raise InputError(f"training archive {path} holds {name}; expected only per-synset tars "
                                 "(n01440764.tar, ...).")
            wnid = base[:-4]
            if wnid in out:
                raise InputError(f"training archive {path} holds {base} twice.")
            inner = _tar_index(None, _Slice(f, off, size), off, what=f"{base} in {path}")
            seen = set()
            lst = []
            for n, o, s in inner:
                if n in seen:
                    raise InputError(f"{base} in {path} holds {n} twice.")
                seen.add(n)
                if off + size < o + s:
                    raise InputError(f"{base} in {path} is truncated.")
                lst.append((f"{wnid}/{os.path.basename(n)}", ("range", os.path.abspath(path), o, s)))
            out[wnid] = sorted(lst)  # the same order as an unpacked tree, whatever the tar's order
    return out


def index_val(path: str):
    """-> [(name, ref, wnid or None)] from the validation tar, a flat folder or class folders."""
    if os.path.isdir(path):
        entries = sorted(os.listdir(path))
        subdirs = [e for e in entries if os.path.isdir(os.path.join(path, e)) and not e.startswith(".")]
        if subdirs:
            out = []
            for wnid in subdirs:
                d = os.path.join(path, wnid)
                out += [(f"{wnid}/{f}", ("file", os.path.join(d, f)), wnid)
                        for f in sorted(os.listdir(d)) if f.lower().endswith(_IMG_EXT)]
            return out
        return [(f, ("file", os.path.join(path, f)), None) for f in entries if f.lower().endswith(_IMG_EXT)]
    idx = _tar_index(path, what=f"validation archive {path}")
    _check_ranges(path, idx, f"validation archive {path}")
    names = [os.path.basename(n) for n, _, _ in idx]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise InputError(f"validation archive {path} holds {dup} twice.")
    return [(os.path.basename(n), ("range", os.path.abspath(path), o, s), None) for n, o, s in idx]


def prepare_imagenet(out: str, *, train: str | None, val: str | None, devkit: str | None, label_order: str = "ilsvrc-id",
                     size: int = 256, crop: bool = True, quality: int = 90, batch_size: int = 3072, seed: int = 0,
                     workers: int = 0, overwrite: bool = False, progress=None) -> dict:
    if train is None and val is None:
        raise InputError("give the training data (--train), the validation data (--val) or both.")
    if not 16 <= size <= 4096:
        raise InputError(f"--size must be between 16 and 4096 (got {size}).")
    if batch_size < 1:
        raise InputError("--batch-size must be at least 1.")
    for what, p in (("training data", train), ("validation data", val)):
        if p is not None and not os.path.exists(p):
            raise InputError(f"{what} {p} does not exist.")
    leaves, gt = read_devkit(devkit) if devkit else (None, None)
    if label_order == "ilsvrc-id" and leaves is None:
        raise InputError("--label-order ilsvrc-id needs the devkit (--devkit ILSVRC2012_devkit_t12.tar.gz); "
                         "without it use --label-order wnid.")
    tr = index_train(train) if train else {}
    for wnid, lst in tr.items():
        if not lst:
            raise InputError(f"class {wnid} of {train} has no images.")
    if leaves is not None:
        wnids_by_id = [w for _, w, _ in leaves]
        words = {w: t for _, w, t in leaves}
        unknown = sorted(set(tr) - set(wnids_by_id))
        if unknown:
            raise InputError(f"{train} holds synset {unknown[0]}, which the devkit does not list.")
    else:
        wnids_by_id = None
        words = {}
    if label_order == "ilsvrc-id":
        wnids = wnids_by_id
    else:
        wnids = sorted(wnids_by_id) if wnids_by_id else sorted(tr)
    if not wnids:
        raise InputError("no classes: the training data is empty and there is no devkit.")
    label = {w: i for i, w in enumerate(wnids)}
    train_items = [Item(ref, label[w], bf.text_name(name)) for w in sorted(tr) for name, ref in tr[w]]
    val_items = []
    if val:
        for name, ref, wnid in index_val(val):
            if wnid is None:
                if gt is None:
                    raise InputError(f"{val} holds flat validation images; their labels come from the devkit's "
                                     "ILSVRC2012_validation_ground_truth.txt (--devkit).")
                k = _val_number(name)
                if k is None or not 1 <= k <= len(gt):
                    raise InputError(f"validation image {name} has no ground-truth line (expected names "
                                     f"ILSVRC2012_val_00000001.JPEG .. _{len(gt):08d}).")
                wnid = wnids_by_id[gt[k - 1] - 1]
            if wnid not in label:
                raise InputError(f"validation class {wnid} is not among the training classes.")
            val_items.append(Item(ref, label[wnid], bf.text_name(name)))
    opts = {"size": size, "crop": crop, "quality": quality, "batch_size": batch_size, "label_order": label_order}
    # numbered as make-data numbered them: training from 0 (ImageNet's 418 batches are 0-417, the
    # original recipes' --train-range), validation from the next multiple of 1000 (1000-1016)
    plan = pipeline.seeded_batches(train_items, batch_size, seed, 0, True)
    first_val = max(1000, -(-len(plan) // 1000) * 1000)
    plan += pipeline.seeded_batches(val_items, batch_size, seed, first_val, False, shuffle=False)
    # (first_batch: folders and progress files of ccn versions that numbered from 1 are another plan)
    plan_id = fingerprint({"source": "imagenet", "first_batch": 0, "train": [(i.name, i.label) for i in train_items],
                           "val": [(i.name, i.label) for i in val_items], "seed": seed, **opts})
    w = DatasetWriter(out, plan_id=plan_id, storage="jpeg", channels=3, size=(size, size), overwrite=overwrite)
    if w.already_complete:
        return w.meta
    pipeline.run(w, plan, size=size, crop=crop, storage="jpeg", quality=quality, workers=workers, progress=progress)
    names = [words.get(x) or x for x in wnids]
    return w.finish(label_names=names, source=f"ILSVRC2012 (train {train}, val {val}, devkit {devkit})",
                    options=opts, seed=seed, extra={"wnids": wnids, "label_order": label_order,
                                                    "first_val_batch": first_val if val_items else None})
