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
  ``SRC/train/<class>/...`` + ``SRC/val/<class>/...`` (or ``test/``) with nothing else beside them.
  Class order: the folder names sorted by code point. Which files are read, the warnings and
  checks: see the folder section below and README.md ("Image folders").
"""

from __future__ import annotations

import gzip
import os
import stat
import struct
import tarfile

import numpy as np

from ..errors import InputError
from . import pipeline, safepickle
from .writer import PLAN_FORMAT, DatasetWriter, fingerprint


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
# Which files are images: those whose extension is one Pillow opens (JPEG's .jpg/.jpeg/.jpe/.jfif,
# .png, .gif, .bmp, .tif(f), .webp, .avif, .tga, .ppm/.pgm/.pbm, .ico, .psd, ...; see image_exts())
# and files without an extension; each is decoded by content, and one Pillow cannot decode is
# reported as skipped. Hidden files and system files (.DS_Store, Thumbs.db, desktop.ini) are
# ignored and counted; any other file is ignored, counted and named in a warning.
SYSTEM_FILES = {"thumbs.db", "ehthumbs.db", "desktop.ini", "icon\r"}
_EXTRA_EXTS = {".jpe", ".jfif", ".avif", ".avifs", ".heic", ".heif", ".jxl"}  # tried even if this Pillow lacks them


def image_exts() -> set[str]:
    from PIL import Image

    Image.init()
    return {e.lower() for e, f in Image.registered_extensions().items() if f in Image.OPEN} | _EXTRA_EXTS


def shown(s: str) -> str:
    """A name as ccn stores and prints it: a byte of a file name that is not UTF-8 (os.listdir
    gives it as a lone surrogate) becomes ``\\xNN``, and so does a control character (a newline
    in a file name), so names are always valid, one-line UTF-8; a backslash becomes ``\\\\``, so
    that two names never look the same."""
    from .batchfmt import text_name

    s = text_name(s)
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in s):
        s = "".join(f"\\x{ord(ch):02x}" if ord(ch) < 32 or ord(ch) == 127 else ch for ch in s)
    return s


class Listing:
    """What list_folder found besides the images: their sizes and times (for the plan), and the
    files it left out."""

    def __init__(self):
        self.files: dict[str, tuple] = {}  # shown name -> (size, mtime_ns)
        self.ignored: list[str] = []       # files in class folders that are not images (shown names)
        self.system = 0                    # hidden and system files in class folders
        self.loose: list[str] = []         # images not in a class folder
        self.links: list[str] = []         # symlinked sub-folders not followed (into SRC or above it)
        self.roots: tuple = ()             # (train root, test root or None)
        self.labels: dict[str, int] = {}   # shown name -> label of every image file listed


def _class_dirs(root: str) -> list[str]:
    try:
        names = sorted(n for n in os.listdir(root) if not n.startswith(".") and os.path.isdir(os.path.join(root, n)))
    except OSError as e:
        raise InputError(f"cannot list {shown(root)}: {e.strerror or e}.") from None
    return names


def _loose_images(root: str, exts: set) -> list[str]:
    try:
        names = sorted(os.listdir(root))
    except OSError:
        return []
    return [os.path.join(root, n) for n in names if not n.startswith(".") and n.lower() not in SYSTEM_FILES
            and os.path.splitext(n)[1].lower() in exts and os.path.isfile(os.path.join(root, n))]


def _images_in(d: str, listing: Listing | None = None, exts: set | None = None, src: str | None = None) -> list[str]:
    """The image files under class folder ``d``, in sorted order. Symlinked sub-folders are
    followed (as a symlinked class folder is), each real folder once (a link back up is not a loop)."""
    listing = Listing() if listing is None else listing
    exts = image_exts() if exts is None else exts
    out = []
    try:
        st = os.stat(d)
        visited = {(st.st_dev, st.st_ino)}
    except OSError:
        visited = set()
    inside = [os.path.realpath(x) for x in (src or d, d)]

    def within(a, b):
        return a == b or a.startswith(b.rstrip(os.sep) + os.sep)

    for dirpath, dirnames, filenames in os.walk(d, followlinks=True):
        keep = []
        for x in sorted(dirnames):
            if x.startswith("."):
                continue
            p = os.path.join(dirpath, x)
            if os.path.islink(p):
                # a link into SRC lists images that are listed where they are (in another class, too);
                # a link up to a folder above would loop
                t = os.path.realpath(p)
                if any(within(t, r) or within(r, t) for r in inside):
                    listing.links.append(shown(os.path.relpath(p, src or d)))
                    continue
            try:
                st = os.stat(p)
            except OSError:
                continue
            if (st.st_dev, st.st_ino) not in visited:
                visited.add((st.st_dev, st.st_ino))
                keep.append(x)
        dirnames[:] = keep
        for f in sorted(filenames):
            p = os.path.join(dirpath, f)
            if f.startswith(".") or f.lower() in SYSTEM_FILES:
                listing.system += 1
            elif os.path.splitext(f)[1].lower() in exts or not os.path.splitext(f)[1]:
                out.append(p)
            else:
                listing.ignored.append(shown(os.path.relpath(p, src or d)))
    return out


def _drop_repeats(items: list, seen: dict, repeats: list, listing: Listing | None = None) -> list:
    """``items`` without the files already listed under another name (a symlink, a hard link):
    one image in both the training and the test set would make the test error optimistic, and
    one in two class folders has two labels. ``seen`` maps (device, inode) to the first name;
    each dropped one is added to ``repeats`` as (name, reason). Not regular files (a FIFO would
    block the reader) go to ``listing.ignored``."""
    out = []
    for it in items:
        try:
            st = os.stat(it.ref[1])
        except OSError:
            out.append(it)  # (a dangling link: the reader reports it)
            continue
        if not stat.S_ISREG(st.st_mode):
            if listing is not None:
                listing.ignored.append(it.name)
            continue
        if listing is not None:
            listing.files[it.name] = (st.st_size, st.st_mtime_ns)
        key = (st.st_dev, st.st_ino)
        first = seen.setdefault(key, it.name)
        if first == it.name:
            out.append(it)
        else:
            repeats.append((it.name, f"the same file as {first} (a link to it); used once, as {first}"))
    return out


SPLIT_NAMES = ("train", "val", "valid", "validation", "test")


def _layout(src: str, top: list[str]):
    """-> (training root, test root or None): SRC/<class>/... or SRC/train/<class>/... + SRC/val/<class>/..."""
    split_dirs = [d for d in top if d.lower() in SPLIT_NAMES]
    if "train" in [d.lower() for d in split_dirs] and len(split_dirs) == len(top):
        tr_root = os.path.join(src, next(d for d in top if d.lower() == "train"))
        te_names = [d for d in top if d.lower() != "train"]
        if len(te_names) > 1:
            raise InputError(f"{shown(src)} has several test folders ({', '.join(map(shown, te_names))}); keep one.")
        return tr_root, (os.path.join(src, te_names[0]) if te_names else None)
    train = next((d for d in top if d.lower() == "train"), None)
    tests = [d for d in split_dirs if d.lower() != "train"]
    # train/ holding class folders beside a val/ (or test/, ...) folder is a train/val layout with
    # something else beside it; without a split folder beside it, train/ is a class (bus/ car/ train/)
    if train is not None and tests and _class_dirs(os.path.join(src, train)) and \
            not _loose_images(os.path.join(src, train), image_exts()):
        others = [d for d in top if d.lower() not in SPLIT_NAMES]
        splits = "/ and ".join(map(shown, [train] + tests)) + "/"
        raise InputError(
            f"{shown(src)} holds {splits} and also {'/, '.join(map(shown, others))}/, and {shown(train)}/ holds "
            "class folders: ccn reads either SRC/<class>/<images> (every top-level folder is a class; "
            "--test-fraction of each is held out for testing) or SRC/train/<class>/<images> with "
            "SRC/val/<class>/<images> (or test/) and no other folder beside them. Read as the first, "
            f"{splits} would become classes; so move the other folders out of the way (or give "
            f"{shown(os.path.join(src, train))} as SRC to use the training folder alone).")
    return src, None


def list_folder(src: str, test_fraction: float, seed: int, repeats: list | None = None,
                listing: Listing | None = None):
    """-> (class names, train items, test items). A file reached under several names is listed
    under the first (in sorted order, training folders first); the others go to ``repeats``.
    Class names are the folder names sorted by code point (as shown(): non-UTF-8 bytes as \\xNN)."""
    repeats = [] if repeats is None else repeats
    listing = Listing() if listing is None else listing
    seen: dict = {}
    if not os.path.isdir(src):
        raise InputError(f"image folder {shown(src)} does not exist or is not a folder.")
    exts = image_exts()
    top = _class_dirs(src)
    tr_root, te_root = _layout(src, top)
    listing.roots = (tr_root, te_root)
    for root in [src] if tr_root == src else [src, tr_root] + ([te_root] if te_root else []):
        listing.loose += [shown(os.path.relpath(p, src)) for p in _loose_images(root, exts)]
    raw_classes = _class_dirs(tr_root)
    if not raw_classes:
        raise InputError(f"{shown(tr_root)} has no class subfolders; expected {shown(tr_root)}/<class>/<image files>.")
    classes = [shown(c) for c in raw_classes]
    lower = {}
    for c in classes:
        if c.lower() in lower:
            raise InputError(f"{shown(tr_root)} has class folders {lower[c.lower()]} and {c} that differ only in case.")
        lower[c.lower()] = c
    idx = {c: i for i, c in enumerate(raw_classes)}
    train, test = [], []
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0xF01D])

    def items_of(d, label):
        files = _images_in(d, listing, exts, src)
        listing.labels.update((shown(os.path.relpath(p, src)), label) for p in files)
        return files, _drop_repeats([pipeline.Item(("file", p), label, shown(os.path.relpath(p, src)))
                                     for p in files], seen, repeats, listing)

    for c in raw_classes:
        files, items = items_of(os.path.join(tr_root, c), idx[c])
        if not files:
            raise InputError(f"class folder {shown(os.path.join(tr_root, c))} holds no images (files with an "
                             "image extension, e.g. .jpg, .png, or none).")
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
                raise InputError(f"test class folder {shown(os.path.join(te_root, c))} has no training counterpart "
                                 f"in {shown(tr_root)}.")
            test += items_of(os.path.join(te_root, c), idx[c])[1]
    return classes, train, test


def _few(names: list, n: int = 5) -> str:
    return ", ".join(names[:n]) + (f", ... ({len(names)} in all)" if len(names) > n else "")


def _listing_warnings(src: str, listing: Listing, warn) -> None:
    if listing.loose:
        where = "in " + " and ".join(sorted({shown(os.path.dirname(os.path.join(src, n))) for n in listing.loose}))
        warn(f"{len(listing.loose)} image file{'s' if len(listing.loose) > 1 else ''} {where} "
             f"{'are' if len(listing.loose) > 1 else 'is'} not in a class folder and not used "
             f"({_few(listing.loose)}); move {'them' if len(listing.loose) > 1 else 'it'} into a class folder "
             "to use it.")
    if listing.ignored or listing.system or listing.links:
        parts = []
        if listing.ignored:
            parts.append(f"{len(listing.ignored)} that are not images by their extension ({_few(listing.ignored)})")
        if listing.system:
            parts.append(f"{listing.system} hidden or system files (.DS_Store, Thumbs.db, ...)")
        if listing.links:
            n = len(listing.links)
            parts.append(f"{n} symlinked folder{'s' if n > 1 else ''} that point{'' if n > 1 else 's'} into "
                         f"{shown(src)} "
                         f"or to a folder above it, not followed (their images are read where they are, or would "
                         f"loop: {_few(listing.links)})")
        total = len(listing.ignored) + listing.system + len(listing.links)
        warn(f"ignored {total} {'entries' if listing.links else 'files'} in the class folders: {' and '.join(parts)}.")


def _class_check(w, plan, classes: list[str], listing: Listing, test_fraction: float, src: str, warn) -> dict:
    """Images per class as written; refuses a class left with none (all undecodable), warns of
    classes with no training or no test images. -> {"train": [...], "test": [...]}"""
    from . import batchfmt as bf

    counts = {"train": np.zeros(len(classes), np.int64), "test": np.zeros(len(classes), np.int64)}
    for num, train, _ in plan:
        f = bf.BatchFile(os.path.join(w.out, bf.batch_name(num)))
        try:
            counts["train" if train else "test"] += np.bincount(f.labels, minlength=len(classes))[:len(classes)]
        finally:
            f.close()
    total = counts["train"] + counts["test"]
    has_test = any(not t for _, t, _ in plan)
    if total.sum() and (total == 0).any():
        label_of = listing.labels
        tr_root = listing.roots[0]
        parts = []
        for c in np.flatnonzero(total == 0):
            reasons = [f"{n}: {r}" for n, r in w.skipped if label_of.get(n) == c]
            parts.append(f"class folder {shown(os.path.join(tr_root, classes[c]))} has no image that could be used "
                         f"(all {len(reasons)} skipped: {'; '.join(reasons[:3])}{'; ...' if len(reasons) > 3 else ''})")
        w.abandon()
        raise InputError(f"{'; '.join(parts)}. A class without images cannot be learned, and would still take a "
                         f"label; fix or remove {'that folder' if len(parts) == 1 else 'those folders'} and rerun "
                         f"(the batches prepared so far in {w.out} were removed; every skipped file and why is in "
                         f"{os.path.join(w.out, 'skipped.txt')}).")
    why = f" (--test-fraction {test_fraction})" if listing.roots[1] is None else ""
    no_train = [classes[c] for c in np.flatnonzero(counts["train"] == 0)]
    if no_train:
        warn(f"{len(no_train)} class{'es have' if len(no_train) > 1 else ' has'} no training images{why}: "
             f"{_few(no_train)}.")
    no_test = [classes[c] for c in np.flatnonzero(counts["test"] == 0)]
    if has_test and no_test:
        warn(f"{len(no_test)} class{'es have' if len(no_test) > 1 else ' has'} no test images{why}: {_few(no_test)}.")
    return {k: v.tolist() for k, v in counts.items()}


def prepare_folder(src: str, out: str, *, size: int = 64, crop: bool = True, storage: str = "auto",
                   quality: int = 90, batch_size: int = 10000, test_fraction: float = 0.1, seed: int = 0,
                   workers: int = 0, overwrite: bool = False, progress=None, warn=None) -> dict:
    """``warn(line)`` gets the warnings (files left out, classes without training or test images)."""
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
    warn = warn or (lambda line: None)
    repeats: list = []
    listing = Listing()
    classes, train, test = list_folder(src, test_fraction, seed, repeats, listing)
    _listing_warnings(src, listing, warn)
    if not train:
        raise InputError(f"{shown(src)}: no training images are left (--test-fraction {test_fraction} took them all).")
    if not test and test_fraction > 0:
        raise InputError(f"{shown(src)}: --test-fraction {test_fraction} leaves no test images (each class has too few "
                         "images to set a share aside): give a larger --test-fraction, a val/ folder beside train/, "
                         "or --test-fraction 0 for no test set.")
    opts = {"size": size, "crop": crop, "storage": storage, "quality": quality, "batch_size": batch_size,
            "test_fraction": test_fraction}
    plan = pipeline.seeded_batches(train, batch_size, seed, 1, True)
    plan += pipeline.seeded_batches(test, batch_size, seed + 1, len(plan) + 1, False)
    # the plan names the source folder and each file's size and modification time, so that another
    # folder with the same names, or images edited in place, is not taken for this dataset
    plan_id = fingerprint({"source": "folder", "src": os.path.realpath(src), "classes": classes,
                           "items": [(it.name, it.label, *listing.files.get(it.name, (None, None)))
                                     for _, _, b in plan for it in b],
                           "plan": [(n, t, len(b)) for n, t, b in plan], "seed": seed, **opts})
    # the plan's parts, stored too, so that a refusal can say what differs: the folder, the options,
    # the class folders whose images (names) or files (sizes, times) changed
    per_class_names: dict = {c: [] for c in classes}
    per_class_files: dict = {c: [] for c in classes}
    for it in sorted((it for _, _, b in plan for it in b), key=lambda it: it.name):
        per_class_names[classes[it.label]].append(it.name)
        per_class_files[classes[it.label]].append(listing.files.get(it.name, (None, None)))
    parts = {"format": PLAN_FORMAT, "src": os.path.realpath(src), "options": {**opts, "seed": seed},
             "names": {c: fingerprint(v)[:16] for c, v in per_class_names.items()},
             "files": {c: fingerprint(v)[:16] for c, v in per_class_files.items()},
             "order": fingerprint([(it.name, it.label) for _, _, b in plan for it in b])[:16]}
    # (what ccn before the plan format 2 called this plan: names, labels, batches and options only)
    legacy = fingerprint({"source": "folder", "items": [(it.name, it.label) for _, _, b in plan for it in b],
                          "plan": [(n, t, len(b)) for n, t, b in plan], "seed": seed, **opts})
    w = DatasetWriter(out, plan_id=plan_id, storage=storage, channels=3, size=(size, size), overwrite=overwrite,
                      plan_parts=parts, legacy_ids=(legacy,), warn=warn)
    if w.already_complete:
        return w.meta
    if not w.resumed:  # (a continued run has them in its progress file)
        for name, reason in repeats:
            w.skip(name, reason, read=True)
    pipeline.run(w, plan, size=size, crop=crop, storage=storage, quality=quality, workers=workers, progress=progress)
    extra = {"ignored": {"count": len(listing.ignored) + listing.system + len(listing.loose),
                         "files": (listing.loose + listing.ignored)[:100], "links_not_followed": listing.links[:100]}}
    if any(int(v["count"]) for v in w.batches.values()):
        extra["class_counts"] = _class_check(w, plan, classes, listing, test_fraction, src, warn)
    return w.finish(label_names=classes, source=f"image folder {shown(src)}", options=opts, seed=seed, extra=extra)
