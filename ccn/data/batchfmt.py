"""The ccn batch format: a folder of numbered batch files plus ``batches.meta.json``.

No pickle anywhere; every file is random-access and written atomically.

Folder layout::

    DIR/batches.meta.json   metadata (JSON, below)
    DIR/data_mean.npy       the mean training image, float32 C x H x W (plain .npy)
    DIR/data_batch_1        batch files, numbered from 1 (ImageNet: from 0, as make-data did;
                            training first, then test)
    DIR/data_batch_2 ...

A batch file is one container: an 8-byte magic ``CCNBATCH``, a little-endian uint32 format
version, a uint32 header length, a UTF-8 JSON header, zero padding to a 64-byte boundary,
then its sections, each starting on a 64-byte boundary. The header says::

    {"kind": "raw" | "jpeg", "count": N, "channels": C, "height": H, "width": W,
     "sections": {"labels": [offset, nbytes], ...}}

Sections (offsets are from the start of the file):

* ``labels``: int32[N], class indices.
* ``pixels`` (raw): uint8[N, C, H, W], channels slowest and x fastest within an image, so the
  section can be memory-mapped and a case read without touching the others.
* ``offsets`` + ``bytes`` (jpeg): uint64[N+1] offsets into the ``bytes`` section; image i is
  ``bytes[offsets[i]:offsets[i+1]]``, a JPEG (baseline, RGB or grayscale). H and W in the
  header are the nominal size (shorter side); stored images may be wider or taller when
  they were not cropped to a square.
* ``names`` (optional): the source name of every image, UTF-8, one per line.

``batches.meta.json`` (``format_version`` 1) holds: ``label_names``, ``num_classes``,
``channels``, ``image_size`` [H, W], ``storage`` (raw or jpeg), ``train_batches`` and
``test_batches`` (batch numbers), ``batch_counts`` {num: cases}, ``num_train_cases``,
``num_test_cases``, ``data_mean`` (the .npy file name), ``data_mean_shape``,
``color_pca`` {eigenvalues, eigenvectors (columns), stdevs = sqrt(eigenvalues)} of the RGB
pixel values of the training images (0..255 scale), ``options`` (those prepare-data ran
with), ``seed``, ``counts`` {read, written, skipped}, ``skipped`` (path and reason, the first
100), ``checksums`` {file: "sha256:..."}, ``source`` and ``created_by``.

Writes go to a temporary name in the same folder, are fsync'ed and renamed into place, so a
batch file either exists whole or not at all. While prepare-data runs it keeps its
progress in ``.ccn-progress.json`` + ``.ccn-progress.npz`` (same atomic writes); a rerun with
the same source and options continues after the last complete batch.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import struct
import threading

import numpy as np

from ..errors import InputError
from ..fsutil import atomic_write

MAGIC = b"CCNBATCH"
CONTAINER_VERSION = 1
FORMAT_VERSION = 1
META_NAME = "batches.meta.json"
MEAN_NAME = "data_mean.npy"
ALIGN = 64


def batch_name(num: int) -> str:
    return f"data_batch_{num}"


def _pad(n: int) -> int:
    return (-n) % ALIGN


def text_name(s: str) -> str:
    """``s`` as valid UTF-8 text: the bytes of a file name that is not UTF-8 (which os.listdir and
    tarfile give as lone surrogates) become ``\\xNN``, and a backslash becomes ``\\\\``, so that
    the mapping is one-to-one (a name holding the text ``\\xff`` is stored as ``\\\\xff``, the
    byte 0xff as ``\\xff``)."""
    if "\\" not in s:
        try:
            s.encode("utf-8")
            return s
        except UnicodeEncodeError:
            pass
    out = []
    for ch in s:
        o = ord(ch)
        if ch == "\\":
            out.append("\\\\")
        elif 0xDC80 <= o <= 0xDCFF:  # a byte that is not UTF-8 (surrogateescape)
            out.append(f"\\x{o - 0xDC00:02x}")
        elif 0xD800 <= o <= 0xDFFF:  # any other lone surrogate
            out.append(f"\\u{o:04x}")
        else:
            out.append(ch)
    return "".join(out)


def _valid_text(s: str) -> str:
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        return text_name(s)


def encode_batch(kind: str, labels, *, channels: int, height: int, width: int, pixels=None, jpegs=None,
                 names=None) -> list:
    """Return the byte chunks of a batch container (see the module docstring)."""
    labels = np.ascontiguousarray(np.asarray(labels, dtype="<i4").reshape(-1))
    n = int(labels.shape[0])
    sections = []  # (name, chunks, nbytes)
    sections.append(("labels", [labels.tobytes()], labels.nbytes))
    if kind == "raw":
        px = np.ascontiguousarray(pixels, dtype=np.uint8)
        if px.shape != (n, channels, height, width):
            raise ValueError(f"pixels have shape {px.shape}, expected {(n, channels, height, width)}")
        sections.append(("pixels", [px], px.nbytes))
    elif kind == "jpeg":
        if len(jpegs) != n:
            raise ValueError("one JPEG per label expected")
        offs = np.zeros(n + 1, dtype="<u8")
        if n:
            offs[1:] = np.cumsum([len(j) for j in jpegs])
        sections.append(("offsets", [offs.tobytes()], offs.nbytes))
        sections.append(("bytes", list(jpegs), int(offs[-1])))
    else:
        raise ValueError(kind)
    if names is not None:
        # names come as text (sources.shown, imagenet: already escaped); one that is not valid UTF-8 is escaped
        nb = "\n".join(_valid_text(str(x)).replace("\n", " ") for x in names).encode()
        sections.append(("names", [nb], len(nb)))

    def header_for(base):
        pos = base
        table = {}
        for name, _, nbytes in sections:
            table[name] = [pos, nbytes]
            pos += nbytes + _pad(nbytes)
        return json.dumps({"kind": kind, "count": n, "channels": channels, "height": height, "width": width,
                           "sections": table}, sort_keys=True).encode()

    # the header length depends on the offsets it contains: iterate to a fixed point
    base = ALIGN
    while True:
        hdr = header_for(base)
        need = 16 + len(hdr)
        need += _pad(need)
        if need == base:
            break
        base = need
    out = [MAGIC, struct.pack("<II", CONTAINER_VERSION, len(hdr)), hdr, b"\0" * _pad(16 + len(hdr))]
    for _, chunks, nbytes in sections:
        out.extend(chunks)
        out.append(b"\0" * _pad(nbytes))
    return out


def write_batch(path: str, kind: str, labels, **kw) -> str:
    """Write one batch file atomically; returns its sha256 hex digest."""
    return atomic_write(path, encode_batch(kind, labels, **kw))


class BatchFile:
    """Random access to one batch file. Thread-safe (reads use pread / a read-only memmap)."""

    def __init__(self, path: str):
        self.path = path
        try:
            self._fd = os.open(path, os.O_RDONLY)
        except OSError as e:
            raise InputError(f"cannot open batch file {path}: {e.strerror or e}.") from None
        st = os.fstat(self._fd)
        if not stat.S_ISREG(st.st_mode):
            self.close()
            raise InputError(f"batch file {path} is a folder (or another non-file); expected a file written by "
                             "`ccn prepare-data`.")
        self.size = st.st_size
        try:
            head = os.pread(self._fd, 16, 0)
        except OSError as e:
            self.close()
            raise InputError(f"cannot read batch file {path}: {e.strerror or e}.") from None
        if len(head) < 16 or head[:8] != MAGIC:
            self.close()
            raise InputError(f"{path} is not a ccn batch file (bad magic); was it written by "
                             "`ccn prepare-data`?")
        ver, hlen = struct.unpack("<II", head[8:])
        if ver != CONTAINER_VERSION:
            self.close()
            raise InputError(f"{path} has batch container version {ver}; this ccn reads version "
                             f"{CONTAINER_VERSION}.")
        try:
            h = json.loads(os.pread(self._fd, hlen, 16).decode())
            self.kind = h["kind"]
            self.count = int(h["count"])
            self.channels, self.height, self.width = int(h["channels"]), int(h["height"]), int(h["width"])
            self.sections = {k: (int(v[0]), int(v[1])) for k, v in h["sections"].items()}
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            self.close()
            raise InputError(f"{path} has a corrupt header.") from None
        for name, (off, nb) in self.sections.items():
            if off + nb > self.size:
                self.close()
                raise InputError(f"{path} is truncated (section {name} ends at byte {off + nb}, the file "
                                 f"has {self.size}).")
        self.labels = self._array("labels", "<i4").copy()
        if self.labels.shape[0] != self.count:
            self.close()
            raise InputError(f"{path} has a corrupt header (label count).")
        self._pixels = None
        self._offsets = None
        self._lock = threading.Lock()
        if self.kind == "raw":
            off, nb = self.sections["pixels"]
            if nb != self.count * self.channels * self.height * self.width:
                self.close()
                raise InputError(f"{path} has a corrupt header (pixel section size).")
        elif self.kind == "jpeg":
            self._offsets = self._array("offsets", "<u8").astype(np.int64)
            if self._offsets.shape[0] != self.count + 1 or self._offsets[-1] != self.sections["bytes"][1]:
                self.close()
                raise InputError(f"{path} has a corrupt header (JPEG offsets).")
        else:
            self.close()
            raise InputError(f"{path} has an unknown batch kind {self.kind!r}.")

    def _array(self, name, dtype):
        off, nb = self.sections[name]
        return np.frombuffer(os.pread(self._fd, nb, off), dtype=dtype)

    @property
    def pixels(self) -> np.ndarray:
        """Raw batches: a read-only memmap N x C x H x W uint8."""
        if self.kind != "raw":
            raise InputError(f"{self.path} holds JPEGs, not raw pixels.")
        with self._lock:
            if self._pixels is None:
                off, _ = self.sections["pixels"]
                if self.count == 0:
                    self._pixels = np.zeros((0, self.channels, self.height, self.width), np.uint8)
                else:
                    self._pixels = np.memmap(self.path, dtype=np.uint8, mode="r", offset=off,
                                             shape=(self.count, self.channels, self.height, self.width))
            return self._pixels

    def jpeg(self, i: int) -> bytes:
        off, _ = self.sections["bytes"]
        a, b = int(self._offsets[i]), int(self._offsets[i + 1])
        return os.pread(self._fd, b - a, off + a)

    def sha256(self) -> str:
        """The hex SHA-256 of the whole file, read through this object's descriptor."""
        h = hashlib.sha256()
        pos = 0
        while pos < self.size:
            chunk = os.pread(self._fd, min(4 << 20, self.size - pos), pos)
            if not chunk:
                break
            h.update(chunk)
            pos += len(chunk)
        return h.hexdigest()

    def names(self) -> list[str] | None:
        if "names" not in self.sections:
            return None
        off, nb = self.sections["names"]
        return os.pread(self._fd, nb, off).decode().split("\n") if nb else [""] * self.count

    def close(self):
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_meta(path: str) -> dict:
    """Read ``batches.meta.json`` of a prepared folder (or the file itself)."""
    p = os.path.join(path, META_NAME) if os.path.isdir(path) else path
    if not os.path.exists(p):
        if os.path.isdir(path) and os.path.exists(os.path.join(path, "batches.meta")):
            raise InputError(f"{path} holds an original cuda-convnet (pickled) batches.meta; convert it with "
                             f"`ccn prepare-data cifar {path} --out NEWDIR` (CIFAR) or prepare it again.")
        if not os.path.exists(path):
            raise InputError(f"data folder {path} does not exist.")
        raise InputError(f"{path} is not a ccn data folder: it has no {META_NAME} (create one with "
                         "`ccn prepare-data`).")
    try:
        with open(p, "rb") as f:
            meta = json.loads(f.read().decode())
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read {p}: {e}.") from None
    if not isinstance(meta, dict) or meta.get("format") != "ccn-batches":
        raise InputError(f"{p} is not a ccn batches.meta.json.")
    if int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise InputError(f"{p} has format version {meta.get('format_version')}; this ccn reads up to "
                         f"{FORMAT_VERSION}.")
    for key, kind in _META_KEYS:
        v = meta.get(key)
        if not isinstance(v, kind) or (kind is list and key == "image_size" and len(v) != 2):
            raise InputError(f"{p} is damaged: its key '{key}' is " + ("missing" if v is None else f"{v!r}")
                             + "; prepare the data again with `ccn prepare-data`.")
    return meta


_META_KEYS = (("label_names", list), ("num_classes", int), ("channels", int), ("image_size", list),
              ("train_batches", list), ("test_batches", list))


def checksum_error(path: str, got: str, want: str) -> InputError:
    return InputError(f"{path} does not match the checksum that {META_NAME} records for it (sha256 {got[:12]}..., "
                      f"recorded {want.removeprefix('sha256:')[:12]}...): the file changed after `ccn prepare-data` "
                      "wrote it (damage on the disk or in a copy, or an edit). Copy it again from an intact "
                      "copy of the folder, or prepare the data again into a new folder.")


def load_mean(folder: str, meta: dict) -> np.ndarray:
    """The mean image, checked against its recorded checksum."""
    p = os.path.join(folder, meta.get("data_mean", MEAN_NAME))
    want = meta.get("checksums", {}).get(os.path.basename(p))
    if want is not None and os.path.isfile(p):
        got = sha256_file(p)
        if "sha256:" + got != want:
            raise checksum_error(p, got, want)
    try:
        m = np.load(p, allow_pickle=False)
    except (OSError, ValueError) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else "not a plain NumPy .npy array"
        raise InputError(f"cannot read the mean image {p} ({why}); prepare the data again with "
                         "`ccn prepare-data`.") from None
    return m.astype(np.float32)
