"""Dataset sources: CIFAR-10/100 python batches, MNIST-format IDX files, folders of class folders.

* CIFAR: the ``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz`` download or its
  extracted folder. The pickles are read by :mod:`ccn.data.safepickle` (no pickle code runs).
  Batches keep the source order: CIFAR-10's five training files become batches 1-5 and
  ``test_batch`` batch 6 (with the default ``--batch-size 10000``), as cuda-convnet used them.
  cuda-convnet2's wiki layout ``cifar-10-py-colmajor`` is read too: ``data_batch_1..6`` (no
  ``test_batch``), ``data`` stored 3072 x N (one column per image); its ``data_batch_6`` is
  the test batch, so the numbering (1-5 train, 6 test) is the same. Its ``data_mean`` is not
  needed: ccn computes the mean image of the training batches itself.
* MNIST / Fashion-MNIST: a folder with ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
  ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte`` (each optionally ``.gz``); 1 channel.
* Folder: ``SRC/<class>/<image>`` (a seeded, per-class ``--test-fraction`` goes to test) or
  ``SRC/train/<class>/...`` + ``SRC/val/<class>/...`` (or ``test/``). Class order: sorted names.
"""

from __future__ import annotations

import gzip
import os
import struct
import tarfile

import numpy as np

from ..errors import InputError
from . import pipeline, safepickle
from .writer import DatasetWriter, fingerprint


# -- CIFAR ----------------------------------------------------------------------------------
def _cifar_files(src: str) -> dict[str, bytes]:
    """basename -> bytes of the CIFAR files in a tar(.gz) or a folder."""
    wanted = {"data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "data_batch_6",
              "test_batch", "batches.meta", "train", "test", "meta"}
    files: dict[str, bytes] = {}
    if not os.path.exists(src):
        raise InputError(f"CIFAR source {src} does not exist.")
    if os.path.isdir(src):
        cands = [src] + [os.path.join(src, d) for d in sorted(os.listdir(src))
                         if os.path.isdir(os.path.join(src, d)) and d.startswith("cifar")]
        for d in cands:
            for n in wanted:
                p = os.path.join(d, n)
                if os.path.isfile(p) and n not in files:
                    try:
                        with open(p, "rb") as f:
                            files[n] = f.read()
                    except OSError as e:
                        raise InputError(f"cannot read {p}: {e.strerror or e}.") from None
    else:
        try:
            with tarfile.open(src, "r|*") as tf:
                for m in tf:
                    b = os.path.basename(m.name)
                    if m.isfile() and b in wanted:
                        if b in files:
                            raise InputError(f"{src} holds {b} twice ({m.name}); which one is meant is unclear.")
                        files[b] = tf.extractfile(m).read()
        except (tarfile.TarError, EOFError, OSError, gzip.BadGzipFile, ValueError) as e:
            raise InputError(f"{src} is not a readable tar archive (truncated or corrupt?): {e}.") from None
    return files


def read_cifar(src: str, label_kind: str = "fine"):
    """-> (label_names, [train (N x 3 x 32 x 32 uint8, labels)], [test ...], kind)."""
    files = _cifar_files(src)

    def unpick(n):
        d = safepickle.load(files[n], os.path.join(src, n))
        if not isinstance(d, dict):
            raise InputError(f"{os.path.join(src, n)} is not a CIFAR batch (not a dict).")
        return d

    def arrays(n, key, colmajor=False):
        d = unpick(n)
        if "data" not in d or key not in d:
            raise InputError(f"{os.path.join(src, n)} is not a CIFAR batch (no 'data' or '{key}').")
        data = np.asarray(d["data"])
        labels = np.asarray(d[key], dtype=np.int64).reshape(-1)
        if colmajor:  # cuda-convnet's layout: 3072 x N, one column per image
            if data.dtype != np.uint8 or data.ndim != 2 or data.shape[0] != 3072 or data.shape[1] != labels.shape[0]:
                raise InputError(f"{os.path.join(src, n)} has data of shape {data.shape} ({data.dtype}) and "
                                 f"{labels.shape[0]} labels; cuda-convnet's CIFAR layout (data_batch_1..6, no "
                                 "test_batch) has 3072 x N uint8 and N labels.")
            data = np.ascontiguousarray(data.T)
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or data.shape[0] != labels.shape[0]:
            raise InputError(f"{os.path.join(src, n)} has data of shape {data.shape} ({data.dtype}) and "
                             f"{labels.shape[0]} labels; CIFAR has N x 3072 uint8 and N labels.")
        return data.reshape(-1, 3, 32, 32), labels

    if "data_batch_6" in files and "test_batch" in files:
        raise InputError(f"{src} holds both data_batch_6 and test_batch, so which one is the test batch is unclear: "
                         "the CIFAR-10 download has data_batch_1..5 + test_batch, cuda-convnet's "
                         "cifar-10-py-colmajor has data_batch_1..6 (6 for testing). Move the one you do not mean "
                         "out of the folder.")
    if "data_batch_6" in files:  # cuda-convnet2's cifar-10-py-colmajor
        missing = [n for n in ["batches.meta"] + [f"data_batch_{i}" for i in range(1, 7)] if n not in files]
        if missing:
            raise InputError(f"{src} looks like cuda-convnet's cifar-10-py-colmajor (data_batch_1..6) but lacks "
                             f"{', '.join(missing)}.")
        meta = unpick("batches.meta")
        names = [x.decode() if isinstance(x, bytes) else str(x) for x in meta.get("label_names", [])]
        train = [arrays(f"data_batch_{i}", "labels", colmajor=True) for i in range(1, 6)]
        test = [arrays("data_batch_6", "labels", colmajor=True)]
        kind = "CIFAR-10 (cuda-convnet's column-major batches)"
    elif "batches.meta" in files or "data_batch_1" in files:
        missing = [n for n in ["batches.meta", "data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4",
                               "data_batch_5", "test_batch"] if n not in files]
        if missing:
            raise InputError(f"{src} looks like CIFAR-10 but lacks {', '.join(missing)}.")
        meta = unpick("batches.meta")
        names = [x.decode() if isinstance(x, bytes) else str(x) for x in meta.get("label_names", [])]
        train = [arrays(f"data_batch_{i}", "labels") for i in range(1, 6)]
        test = [arrays("test_batch", "labels")]
        kind = "CIFAR-10"
    elif "meta" in files or "train" in files:
        missing = [n for n in ["meta", "train", "test"] if n not in files]
        if missing:
            raise InputError(f"{src} looks like CIFAR-100 but lacks {', '.join(missing)}.")
        meta = unpick("meta")
        key = f"{label_kind}_labels"
        names = [x.decode() if isinstance(x, bytes) else str(x) for x in meta.get(f"{label_kind}_label_names", [])]
        train = [arrays("train", key)]
        test = [arrays("test", key)]
        kind = f"CIFAR-100 ({label_kind} labels)"
    else:
        raise InputError(f"{src} holds no CIFAR python batches (expected data_batch_1..5, test_batch and "
                         "batches.meta, or train, test and meta, or cuda-convnet's data_batch_1..6 and "
                         "batches.meta).")
    if not names:
        raise InputError(f"{src}: the CIFAR meta file has no label names.")
    for data, labels in train + test:
        if labels.size and (labels.min() < 0 or labels.max() >= len(names)):
            raise InputError(f"{src}: a label is outside 0..{len(names) - 1}.")
    return names, train, test, kind


def _write_arrays(out, names, train, test, *, batch_size, plan_id, source, options, seed, overwrite, channels,
                  size, progress=None) -> dict:
    w = DatasetWriter(out, plan_id=plan_id, storage="raw", channels=channels, size=(size, size), overwrite=overwrite)
    if w.already_complete:
        return w.meta
    plan = []
    num = 1
    # each source file is split on its own, so CIFAR-10's files stay batches 1-5 and 6
    for x, y, train_ in [(x, y, True) for x, y in train] + [(x, y, False) for x, y in test]:
        for lo in range(0, len(x), batch_size):
            plan.append((num, train_, x[lo:lo + batch_size], y[lo:lo + batch_size]))
            num += 1
    for k, (num, train_, x, y) in enumerate(plan):
        if not w.done(num):
            w.commit(num, y, train=train_, pixels=x)
        if progress:
            progress(k + 1, len(plan))
    return w.finish(label_names=names, source=source, options=options, seed=seed)


def prepare_cifar(src: str, out: str, *, batch_size: int = 10000, labels: str = "fine", overwrite: bool = False,
                  progress=None) -> dict:
    if batch_size < 1:
        raise InputError("--batch-size must be at least 1.")
    names, train, test, kind = read_cifar(src, labels)
    opts = {"batch_size": batch_size, "labels": labels}
    return _write_arrays(out, names, train, test, batch_size=batch_size,
                         plan_id=fingerprint({"source": "cifar", "src": os.path.abspath(src), "size": _size(src), **opts}),
                         source=f"{kind} from {src}", options=opts, seed=0, overwrite=overwrite, channels=3, size=32,
                         progress=progress)


def _size(p):
    try:
        if os.path.isdir(p):
            return sorted((n, os.path.getsize(os.path.join(p, n))) for n in os.listdir(p)
                          if os.path.isfile(os.path.join(p, n)))
        return os.path.getsize(p)
    except OSError:
        return None


# -- MNIST ----------------------------------------------------------------------------------
FASHION_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                 "Ankle boot"]


def read_idx(path: str) -> np.ndarray:
    try:
        with open(path, "rb") as f:
            raw = f.read()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise InputError(f"cannot read {path}: {getattr(e, 'strerror', None) or e} (truncated or corrupt?).") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise InputError(f"{path} is not an IDX file (bad magic number).")
    types = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if raw[2] not in types:
        raise InputError(f"{path} has an unknown IDX element type 0x{raw[2]:02x}.")
    nd = raw[3]
    if len(raw) < 4 + 4 * nd:
        raise InputError(f"{path} is truncated (header).")
    dims = struct.unpack(f">{nd}I", raw[4:4 + 4 * nd])
    dt = np.dtype(types[raw[2]])
    need = int(np.prod(dims)) * dt.itemsize
    body = raw[4 + 4 * nd:]
    if len(body) < need:
        raise InputError(f"{path} is truncated: its header promises {need} bytes of data, it has {len(body)}.")
    return np.frombuffer(body[:need], dtype=dt).reshape(dims)


def _find(src: str, stem: str) -> str:
    for cand in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        p = os.path.join(src, cand)
        if os.path.isfile(p):
            return p
    raise InputError(f"{src} has no {stem} (or {stem}.gz); an MNIST folder holds train-images-idx3-ubyte, "
                     "train-labels-idx1-ubyte, t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte.")


def prepare_mnist(src: str, out: str, *, batch_size: int = 10000, fashion: bool = False, overwrite: bool = False,
                  progress=None) -> dict:
    if not os.path.isdir(src):
        raise InputError(f"MNIST source {src} is not a folder.")
    if batch_size < 1:
        raise InputError("--batch-size must be at least 1.")
    parts = []
    for split in ("train", "t10k"):
        ip, lp = _find(src, f"{split}-images-idx3-ubyte"), _find(src, f"{split}-labels-idx1-ubyte")
        x, y = read_idx(ip), read_idx(lp)
        if x.ndim != 3 or x.dtype != np.uint8:
            raise InputError(f"{ip} holds {x.dtype} of shape {x.shape}; MNIST images are N x H x W uint8.")
        if y.ndim != 1 or y.shape[0] != x.shape[0]:
            raise InputError(f"{lp} holds {y.shape[0] if y.ndim else 0} labels for {x.shape[0]} images in {ip}.")
        if x.shape[1] != x.shape[2]:
            raise InputError(f"{ip} holds {x.shape[1]} x {x.shape[2]} images; ccn needs square images.")
        parts.append((x[:, None], y.astype(np.int64)))
    if len(parts[0][1]) == 0:
        raise InputError(f"{_find(src, 'train-images-idx3-ubyte')} holds no images: there would be nothing to train on.")
    k = int(max(parts[0][1].max(initial=0), parts[1][1].max(initial=0))) + 1
    empty = np.setdiff1d(np.arange(k), parts[0][1])
    # mostly empty classes beyond 9 mean a stray label (EMNIST-style sets have more classes, nearly all with
    # images; EMNIST Letters leaves only class 0 empty)
    if k > 10 and len(empty) > k // 2:
        from ..batchrange import format_range

        raise InputError(f"{_find(src, 'train-labels-idx1-ubyte')}: labels go up to {k - 1}, but classes "
                         f"{format_range(empty.tolist())} have no training images: a damaged labels file? It would "
                         f"make a {k}-class dataset.")
    names = FASHION_NAMES if fashion else [str(i) for i in range(max(10, k))]
    if k > len(names):
        raise InputError(f"{src}: labels go up to {k - 1} but there are {len(names)} class names.")
    opts = {"batch_size": batch_size, "fashion": fashion}
    return _write_arrays(out, names, [parts[0]], [parts[1]], batch_size=batch_size,
                         plan_id=fingerprint({"source": "mnist", "src": os.path.abspath(src), "size": _size(src), **opts}),
                         source=f"{'Fashion-MNIST' if fashion else 'MNIST'} from {src}", options=opts, seed=0,
                         overwrite=overwrite, channels=1, size=int(parts[0][0].shape[2]), progress=progress)


# -- folders of class folders ---------------------------------------------------------------
IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".jfif"}


def _class_dirs(root: str) -> list[str]:
    try:
        names = sorted(n for n in os.listdir(root) if not n.startswith(".") and os.path.isdir(os.path.join(root, n)))
    except OSError as e:
        raise InputError(f"cannot list {root}: {e.strerror or e}.") from None
    return names


def _images_in(d: str) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(d):
        dirnames[:] = sorted(x for x in dirnames if not x.startswith("."))
        for f in sorted(filenames):
            if not f.startswith(".") and os.path.splitext(f)[1].lower() in IMAGE_EXTS:
                out.append(os.path.join(dirpath, f))
    return out


def _drop_repeats(items: list, seen: dict, repeats: list) -> list:
    """``items`` without the files already listed under another name (a symlink, a hard link):
    one image in both the training and the test set would make the test error optimistic, and
    one in two class folders has two labels. ``seen`` maps (device, inode) to the first name;
    each dropped one is added to ``repeats`` as (name, reason)."""
    out = []
    for it in items:
        try:
            st = os.stat(it.ref[1])
        except OSError:
            out.append(it)  # (a dangling link: the reader reports it)
            continue
        key = (st.st_dev, st.st_ino)
        first = seen.setdefault(key, it.name)
        if first == it.name:
            out.append(it)
        else:
            repeats.append((it.name, f"the same file as {first} (a link to it); used once, as {first}"))
    return out


def list_folder(src: str, test_fraction: float, seed: int, repeats: list | None = None):
    """-> (class names, train items, test items). A file reached under several names is listed
    under the first (in sorted order, training folders first); the others go to ``repeats``."""
    repeats = [] if repeats is None else repeats
    seen: dict = {}
    if not os.path.isdir(src):
        raise InputError(f"image folder {src} does not exist or is not a folder.")
    top = _class_dirs(src)
    split_dirs = [d for d in top if d.lower() in ("train", "val", "valid", "validation", "test")]
    if "train" in [d.lower() for d in split_dirs] and len(split_dirs) == len(top):
        tr_root = os.path.join(src, next(d for d in top if d.lower() == "train"))
        te_names = [d for d in top if d.lower() != "train"]
        if len(te_names) > 1:
            raise InputError(f"{src} has several test folders ({', '.join(te_names)}); keep one.")
        te_root = os.path.join(src, te_names[0]) if te_names else None
    else:
        tr_root, te_root = src, None
    classes = _class_dirs(tr_root)
    if not classes:
        raise InputError(f"{tr_root} has no class subfolders; expected {tr_root}/<class>/<image files>.")
    lower = {}
    for c in classes:
        if c.lower() in lower:
            raise InputError(f"{tr_root} has class folders {lower[c.lower()]} and {c} that differ only in case.")
        lower[c.lower()] = c
    idx = {c: i for i, c in enumerate(classes)}
    train, test = [], []
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0xF01D])
    for c in classes:
        files = _images_in(os.path.join(tr_root, c))
        if not files:
            raise InputError(f"class folder {os.path.join(tr_root, c)} holds no images "
                             f"({', '.join(sorted(IMAGE_EXTS))}).")
        items = _drop_repeats([pipeline.Item(("file", p), idx[c], os.path.relpath(p, src)) for p in files],
                              seen, repeats)
        if te_root is None and test_fraction > 0:
            perm = rng.permutation(len(items))
            k = int(round(len(items) * test_fraction))
            test += [items[i] for i in sorted(perm[:k])]
            train += [items[i] for i in sorted(perm[k:])]
        else:
            train += items
    if te_root is not None:
        for c in _class_dirs(te_root):
            if c not in idx:
                raise InputError(f"test class folder {os.path.join(te_root, c)} has no training counterpart in "
                                 f"{tr_root}.")
            test += _drop_repeats([pipeline.Item(("file", p), idx[c], os.path.relpath(p, src))
                                   for p in _images_in(os.path.join(te_root, c))], seen, repeats)
    return classes, train, test


def prepare_folder(src: str, out: str, *, size: int = 64, crop: bool = True, storage: str = "auto",
                   quality: int = 90, batch_size: int = 10000, test_fraction: float = 0.1, seed: int = 0,
                   workers: int = 0, overwrite: bool = False, progress=None) -> dict:
    if not 4 <= size <= 4096:
        raise InputError(f"--size must be between 4 and 4096 (got {size}).")
    if not 0 <= test_fraction < 1:
        raise InputError(f"--test-fraction must be in [0, 1) (got {test_fraction}).")
    if batch_size < 1:
        raise InputError("--batch-size must be at least 1.")
    if storage == "auto":  # raw pixels for small square images, JPEG otherwise
        storage = "raw" if size <= 64 and crop else "jpeg"
    if storage == "raw" and not crop:
        raise InputError("raw storage needs square images: drop --no-crop or use --storage jpeg.")
    repeats: list = []
    classes, train, test = list_folder(src, test_fraction, seed, repeats)
    if not train:
        raise InputError(f"{src}: no training images are left (--test-fraction {test_fraction} took them all).")
    if not test and test_fraction > 0:
        raise InputError(f"{src}: --test-fraction {test_fraction} leaves no test images (each class has too few images "
                         "to set a share aside): give a larger --test-fraction, a val/ folder beside train/, or "
                         "--test-fraction 0 for no test set.")
    opts = {"size": size, "crop": crop, "storage": storage, "quality": quality, "batch_size": batch_size,
            "test_fraction": test_fraction}
    plan = pipeline.seeded_batches(train, batch_size, seed, 1, True)
    plan += pipeline.seeded_batches(test, batch_size, seed + 1, len(plan) + 1, False)
    plan_id = fingerprint({"source": "folder", "items": [(it.name, it.label) for _, _, b in plan for it in b],
                           "plan": [(n, t, len(b)) for n, t, b in plan], "seed": seed, **opts})
    w = DatasetWriter(out, plan_id=plan_id, storage=storage, channels=3, size=(size, size), overwrite=overwrite)
    if w.already_complete:
        return w.meta
    if not w.resumed:  # (a continued run has them in its progress file)
        for name, reason in repeats:
            w.skip(name, reason)
    pipeline.run(w, plan, size=size, crop=crop, storage=storage, quality=quality, workers=workers, progress=progress)
    return w.finish(label_names=classes, source=f"image folder {src}", options=opts, seed=seed)
