"""Writing a prepared dataset: batch files, running statistics, resumable progress, final metadata.

:class:`DatasetWriter` is used by every source (builtin, CIFAR, MNIST, folders, ImageNet). The
caller plans the batches up front (deterministically from the source and the seed) and
passes a fingerprint of that plan; the writer then

* refuses a folder that holds a different dataset (or a file where the folder should be),
* skips the batches a previous interrupted run completed (``done(num)``),
* writes each batch atomically, folding its statistics (the pixel sum for the mean image,
  RGB moments for the colour PCA, counts) into a progress file written atomically after it,
* writes ``data_mean.npy`` and ``batches.meta.json`` last and removes the progress files.

See :mod:`ccn.data.batchfmt` for the files themselves.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import time

import numpy as np

from .. import __version__, fsutil
from ..errors import InputError
from . import batchfmt as bf

PROGRESS_JSON = ".ccn-progress.json"
PROGRESS_NPZ = ".ccn-progress.npz"
PROGRESS_SKIPPED = ".ccn-progress-skipped.jsonl"  # the skipped images so far, appended to (one JSON pair a line)
SKIPPED_NAME = "skipped.txt"  # every skipped image and why (the metadata lists the first 100)


def fingerprint(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


PLAN_FORMAT = 2  # the plan's parts are stored (format 1: only the plan_id, no file sizes or dates)


def plan_difference(old: dict, parts: dict | None, legacy_ids=()) -> str:
    """Why the dataset (or progress) ``old`` is not the one planned now (``parts``), worded to
    follow "holds a prepared dataset ...". The parts: "format", "src", "options" (a dict),
    "names" and "files" ({class: hash of its images' names and labels / sizes and times}), "order"."""
    before = old.get("plan")
    if parts is None:
        return "made from another source or with other options"
    if not isinstance(before, dict):
        if old.get("plan_id") in legacy_ids:
            return ("made by an older ccn (the source's file dates and sizes were not recorded then): rerun with "
                    "--overwrite to rebuild it, or use it as it is")
        return "made by an older ccn, from another source or with other options"
    if before.get("format") != parts.get("format"):
        return f"made by another version of ccn (plan format {before.get('format')}, now {parts.get('format')})"
    why = []
    if before.get("src") != parts.get("src"):
        why.append(f"the source folder differs (was {before.get('src')})")
    bo, no = before.get("options") or {}, parts.get("options") or {}
    opts = [f"{k} {no.get(k)} (was {bo.get(k)})" for k in sorted(set(bo) | set(no)) if bo.get(k) != no.get(k)]
    if opts:
        why.append(f"other options ({', '.join(opts)})")
    bn, nn = before.get("names") or {}, parts.get("names") or {}
    classes = [c for c in sorted(set(bn) | set(nn)) if bn.get(c) != nn.get(c)]
    if classes:
        more = ", ..." if len(classes) > 5 else ""
        why.append(f"other images in {len(classes)} class folder{'s' if len(classes) > 1 else ''} (added, removed "
                   f"or renamed since, or other classes: {', '.join(classes[:5])}{more})")
    bf_, nf = before.get("files") or {}, parts.get("files") or {}
    changed = [c for c in sorted(set(bf_) & set(nf)) if c not in classes and bf_[c] != nf[c]]
    if changed:
        why.append(f"files changed since in {len(changed)} class folder{'s' if len(changed) > 1 else ''} "
                   f"({', '.join(changed[:5])}{', ...' if len(changed) > 5 else ''}: a size or modification time "
                   "differs; an image edited or touched, or the source copied)")
    if not why:
        why.append("another order of the images")
    return "that does not match this source and these options: " + "; ".join(why)


class Stats:
    """Running sums for the mean image (over size x size centre crops) and the RGB covariance."""

    def __init__(self, channels: int, h: int, w: int):
        self.shape = (channels, h, w)
        self.img_sum = np.zeros(self.shape, np.float64)
        self.n_img = 0
        self.px_sum = np.zeros(channels, np.float64)
        self.px_outer = np.zeros((channels, channels), np.float64)
        self.n_px = 0

    def add_images(self, imgs: np.ndarray, pixel_stride: int = 1) -> None:
        """imgs: N x C x H x W uint8 (already at the nominal size)."""
        if len(imgs) == 0:
            return
        self.img_sum += imgs.sum(axis=0, dtype=np.float64)
        self.n_img += len(imgs)
        px = imgs[:, :, ::pixel_stride, ::pixel_stride].transpose(1, 0, 2, 3).reshape(self.shape[0], -1)
        px = px.astype(np.float64)
        self.px_sum += px.sum(axis=1)
        self.px_outer += px @ px.T
        self.n_px += px.shape[1]

    def merge(self, other: "Stats") -> None:
        self.img_sum += other.img_sum
        self.n_img += other.n_img
        self.px_sum += other.px_sum
        self.px_outer += other.px_outer
        self.n_px += other.n_px

    def arrays(self) -> dict:
        return {"img_sum": self.img_sum, "n_img": np.array(self.n_img), "px_sum": self.px_sum,
                "px_outer": self.px_outer, "n_px": np.array(self.n_px)}

    def load_arrays(self, d) -> None:
        self.img_sum = d["img_sum"].astype(np.float64)
        self.n_img = int(d["n_img"])
        self.px_sum = d["px_sum"].astype(np.float64)
        self.px_outer = d["px_outer"].astype(np.float64)
        self.n_px = int(d["n_px"])

    def mean_image(self) -> np.ndarray:
        if self.n_img == 0:
            return np.zeros(self.shape, np.float32)
        return (self.img_sum / self.n_img).astype(np.float32)

    def color_pca(self) -> dict:
        c = self.shape[0]
        if self.n_px < 2:
            cov = np.zeros((c, c))
        else:
            mu = self.px_sum / self.n_px
            cov = self.px_outer / self.n_px - np.outer(mu, mu)
        vals, vecs = np.linalg.eigh((cov + cov.T) / 2)
        order = np.argsort(vals)[::-1]
        vals = np.maximum(vals[order], 0.0)
        vecs = vecs[:, order]
        for j in range(vecs.shape[1]):  # a deterministic sign: largest component positive
            if vecs[np.argmax(np.abs(vecs[:, j])), j] < 0:
                vecs[:, j] = -vecs[:, j]
        return {"eigenvalues": vals.tolist(), "eigenvectors": vecs.tolist(), "stdevs": np.sqrt(vals).tolist()}


def check_out_dir(out: str) -> None:
    if os.path.exists(out) and not os.path.isdir(out):
        raise InputError(f"output folder {out} exists and is not a folder.")
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create output folder {out}: {e.strerror or e}.") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise InputError(f"output folder {out} is not writable.")


class DatasetWriter:
    def __init__(self, out: str, *, plan_id: str, storage: str, channels: int, size: tuple[int, int],
                 overwrite: bool = False, plan_parts: dict | None = None, legacy_ids=(), warn=None):
        """``plan_parts`` (optional): the plan's parts (see plan_difference), stored beside the
        plan_id so that a refusal can say what differs; ``legacy_ids``: the plan_ids an older ccn
        gave this same plan."""
        self.out = out
        self.plan_id = plan_id
        self.plan_parts = plan_parts
        self.warn = warn or (lambda line: print(f"note: {line}", file=sys.stderr))
        self._skipped_saved = 0  # how many of self.skipped are in PROGRESS_SKIPPED
        self.storage = storage
        self.channels = channels
        self.size = tuple(size)
        check_out_dir(out)
        self.stats = Stats(channels, *self.size)
        self.test_stats = Stats(channels, *self.size)  # the mean's source when no training images are prepared
        self.batches: dict[str, dict] = {}  # str(num) -> {"count", "checksum", "train"}
        self.counts = {"read": 0, "written": 0, "skipped": 0}
        self.skipped: list[list[str]] = []
        self.resumed = 0
        self.already_complete = False
        meta_path = os.path.join(out, bf.META_NAME)
        prog = os.path.join(out, PROGRESS_JSON)
        if os.path.exists(meta_path):
            try:
                meta = bf.read_meta(out)
            except InputError:
                meta = {}
            if meta.get("plan_id") == plan_id and not overwrite:
                self.already_complete = True
                self.meta = dict(meta, already_complete=True)  # the flag is not stored
                return
            if not overwrite:
                why = plan_difference(meta, plan_parts, legacy_ids)
                if why.startswith("made by an older ccn (the source's"):
                    raise InputError(f"{out} already holds a prepared dataset {why}.")
                raise InputError(f"{out} already holds a prepared dataset {why}; choose a new folder or pass "
                                 "--overwrite.")
            self._clear()
        elif os.path.exists(prog):
            try:
                with open(prog) as f:
                    p = json.load(f)
                with np.load(os.path.join(out, PROGRESS_NPZ), allow_pickle=False) as d:
                    arrays = dict(d)
            except (OSError, ValueError, KeyError):
                p = None
            if p is not None and p.get("plan_id") == plan_id and not overwrite:
                self.batches = p["batches"]
                self.counts = p["counts"]
                self.stats.load_arrays(arrays)
                if "test_n_img" in arrays:  # (progress files of earlier versions kept no test sums)
                    self.test_stats.load_arrays({k[5:]: v for k, v in arrays.items() if k.startswith("test_")})
                self.resumed = len(self.batches)
                why = self._progress_mismatch(p)
                if why is None:
                    self.skipped = self._load_skipped(p)
                    if self.skipped is None:
                        why = f"{PROGRESS_SKIPPED} lacks skipped images that {PROGRESS_JSON} counts"
                if why is not None:
                    self.warn(f"{out}: the progress files of the interrupted run disagree ({why}); its statistics "
                              "cannot be trusted, so the preparation starts over.")
                # a listed batch file that has gone since cannot be un-merged from the sums: start over
                if why is not None or \
                        any(not os.path.isfile(os.path.join(out, bf.batch_name(int(k)))) for k in self.batches):
                    self.batches, self.skipped, self.resumed = {}, [], 0
                    self.counts = {"read": 0, "written": 0, "skipped": 0}
                    self.stats = Stats(channels, *self.size)
                    self.test_stats = Stats(channels, *self.size)
                    self._clear()
            elif p is not None and p.get("plan_id") != plan_id and not overwrite:
                raise InputError(f"{out} holds an interrupted preparation {plan_difference(p, plan_parts, ())}; "
                                 "rerun that command to finish it, choose a new folder, or pass --overwrite.")
            else:
                self._clear()
        else:
            stray = [n for n in os.listdir(out) if n.startswith("data_batch_")]
            if stray and not overwrite:
                raise InputError(f"{out} already holds batch files ({stray[0]}, ...) but no ccn metadata; choose "
                                 "a new folder or pass --overwrite.")
            self._clear()
        self.written_before = self.counts["written"]  # by an earlier, interrupted run of the same plan

    def _progress_mismatch(self, p: dict) -> str | None:
        """Why the statistics (.npz) do not go with the batch list (.json), or None: an interruption
        between the two replacements leaves one batch merged into the sums but not listed."""
        want = p.get("npz_sha256")
        if want is not None:
            try:
                got = bf.sha256_file(os.path.join(self.out, PROGRESS_NPZ))
            except OSError:
                got = None
            if got != want:
                return f"{PROGRESS_NPZ} is not the one {PROGRESS_JSON} was written with"
        # (and for progress files of earlier versions, which kept no check) the images in the sums
        n_train = sum(int(v["count"]) for v in self.batches.values() if v["train"])
        n_test = sum(int(v["count"]) for v in self.batches.values() if not v["train"])
        if self.stats.n_img != n_train or self.test_stats.n_img not in (0, n_test):
            return (f"the statistics hold {self.stats.n_img} training images, the {len(self.batches)} batches "
                    f"listed {n_train}")
        return None

    def _load_skipped(self, p: dict) -> list | None:
        if "skipped" in p:  # (earlier versions kept the list in the JSON)
            return [list(x) for x in p["skipped"]]
        n = int(p.get("skipped_count", 0))
        out = []
        try:
            with open(os.path.join(self.out, PROGRESS_SKIPPED), encoding="utf-8") as f:
                for line in f:
                    if len(out) == n:
                        break  # (lines of a batch whose progress was not written: dropped)
                    out.append(list(json.loads(line)))
        except (OSError, ValueError):
            return None if n else []
        if len(out) < n:
            return None
        fsutil.atomic_write(os.path.join(self.out, PROGRESS_SKIPPED),
                            ["".join(json.dumps(x) + "\n" for x in out).encode()])
        self._skipped_saved = n
        return out

    def _clear(self):
        self._skipped_saved = 0
        for n in os.listdir(self.out):
            if n.startswith("data_batch_") or n in (bf.META_NAME, bf.MEAN_NAME, PROGRESS_JSON, PROGRESS_NPZ,
                                                    PROGRESS_SKIPPED, SKIPPED_NAME) \
                    or (n.startswith(".data_batch_") and n.endswith(".tmp")):
                try:
                    os.unlink(os.path.join(self.out, n))
                except OSError as e:
                    raise InputError(f"cannot remove {os.path.join(self.out, n)}: {e.strerror or e}.") from None

    def done(self, num: int) -> bool:
        return str(num) in self.batches

    def skip(self, name: str, reason: str, read: bool = False) -> None:
        """Record a skipped image (all of them: finish() writes them to skipped.txt); ``read``:
        count it as read too (one the pipeline never reads, e.g. a second link to a file)."""
        self.counts["skipped"] += 1
        if read:
            self.counts["read"] += 1
        self.skipped.append([name, reason])

    def write_skipped(self) -> str | None:
        """Write every skipped image and why to skipped.txt (a tab between name and reason), atomically."""
        if not self.skipped:
            return None
        lines = "".join(f"{n}\t{' '.join(str(r).split())}\n" for n, r in self.skipped)
        fsutil.atomic_write(os.path.join(self.out, SKIPPED_NAME), [lines.encode("utf-8", "backslashreplace")])
        return SKIPPED_NAME

    def abandon(self) -> None:
        """Give this preparation up (the source cannot make a dataset): remove the batches and the
        progress files, keep skipped.txt."""
        self._clear()
        self.write_skipped()

    def commit(self, num: int, labels, *, train: bool, pixels=None, jpegs=None, names=None,
               stats: Stats | None = None, read: int | None = None, skipped=()) -> None:
        """Write batch ``num``; fold its statistics in: a training batch's (from ``stats``, or
        computed from ``pixels``), and a test batch's when ``stats`` are given (the pipeline gives
        them when there are no training batches: see finish)."""
        labels = np.asarray(labels)
        n = len(labels)
        h, w = self.size
        digest = bf.write_batch(os.path.join(self.out, bf.batch_name(num)), self.storage, labels,
                                channels=self.channels, height=h, width=w, pixels=pixels, jpegs=jpegs,
                                names=names)
        if train and stats is None:
            stats = Stats(self.channels, h, w)
            stats.add_images(pixels, pixel_stride=max(1, h // 32))
        if stats is not None:
            (self.stats if train else self.test_stats).merge(stats)
        for name, reason in skipped:
            self.skip(name, reason)
        self.counts["read"] += n + len(skipped) if read is None else read
        self.counts["written"] += n
        self.batches[str(num)] = {"count": int(n), "checksum": "sha256:" + digest, "train": bool(train)}
        self._save_progress()

    def _save_progress(self):
        # the skipped images new since the last batch are appended (the JSON says how many count); the
        # JSON names the .npz it goes with, so a resume can tell an interruption between the two
        new = self.skipped[self._skipped_saved:]
        if new:
            path = os.path.join(self.out, PROGRESS_SKIPPED)
            try:
                with open(path, "ab") as f:
                    f.write("".join(json.dumps([str(n), str(r)]) + "\n" for n, r in new).encode())
                    f.flush()
                    os.fsync(f.fileno())
            except OSError as e:
                raise InputError(f"cannot write {path}: {e.strerror or e}.") from None
            self._skipped_saved = len(self.skipped)
        buf = io.BytesIO()
        np.savez(buf, **self.stats.arrays(), **{f"test_{k}": v for k, v in self.test_stats.arrays().items()})
        digest = fsutil.atomic_write(os.path.join(self.out, PROGRESS_NPZ), [buf.getvalue()])
        fsutil.atomic_write_json(os.path.join(self.out, PROGRESS_JSON),
                                 {"plan_id": self.plan_id, "plan": self.plan_parts, "batches": self.batches,
                                  "counts": self.counts, "skipped_count": len(self.skipped),
                                  "npz_sha256": digest})

    def finish(self, *, label_names, source: str, options: dict, seed: int, extra: dict | None = None) -> dict:
        train = sorted(int(k) for k, v in self.batches.items() if v["train"])
        test = sorted(int(k) for k, v in self.batches.items() if not v["train"])
        if not train and not test:
            raise InputError(f"nothing to write to {self.out}: the source has no images.")
        if not any(int(v["count"]) for v in self.batches.values()):
            first = f" (the first: {self.skipped[0][0]}: {self.skipped[0][1]})" if self.skipped else ""
            self.abandon()
            if self.skipped:
                first += f"; all of them and why are listed in {os.path.join(self.out, SKIPPED_NAME)}"
            why = (f"all {self.counts['skipped']} images read from {source} were skipped{first}"
                   if self.counts.get("skipped") else f"{source} has no images")
            raise InputError(f"nothing to write to {self.out}: {why}.")
        # the mean image and colour PCA are the training images'; with none prepared (e.g. only
        # ImageNet's validation set, to test a trained net) the test images' stand in, and the
        # metadata says so, rather than a zero mean that would shift every input
        stats, mean_from = (self.stats, "train") if self.stats.n_img or not self.test_stats.n_img else \
            (self.test_stats, "test")
        skipped_file = self.write_skipped()  # before the metadata, which points to it
        mean = stats.mean_image()
        mean_digest = fsutil.atomic_save_npy(os.path.join(self.out, bf.MEAN_NAME), mean)
        checksums = {bf.batch_name(int(k)): v["checksum"] for k, v in self.batches.items()}
        checksums[bf.MEAN_NAME] = "sha256:" + mean_digest
        meta = {
            "format": "ccn-batches",
            "format_version": bf.FORMAT_VERSION,
            "created_by": f"ccn {__version__}",
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "source": source,
            "label_names": list(label_names),
            "num_classes": len(label_names),
            "channels": self.channels,
            "image_size": list(self.size),
            "storage": self.storage,
            "train_batches": train,
            "test_batches": test,
            "batch_counts": {str(k): self.batches[str(k)]["count"] for k in train + test},
            "num_train_cases": sum(self.batches[str(k)]["count"] for k in train),
            "num_test_cases": sum(self.batches[str(k)]["count"] for k in test),
            "data_mean": bf.MEAN_NAME,
            "data_mean_shape": list(mean.shape),
            "color_pca": stats.color_pca(),
            "mean_from": mean_from,
            "options": options,
            "seed": seed,
            "counts": self.counts,
            "skipped": self.skipped[:100],
            "skipped_file": skipped_file,
            "checksums": checksums,
            "plan_id": self.plan_id,
        }
        if self.plan_parts is not None:
            meta["plan"] = self.plan_parts
        meta.update(extra or {})
        fsutil.atomic_write_json(os.path.join(self.out, bf.META_NAME), meta)
        for n in (PROGRESS_JSON, PROGRESS_NPZ, PROGRESS_SKIPPED):
            try:
                os.unlink(os.path.join(self.out, n))
            except OSError:
                pass
        # (not stored) what this run itself did, for its images/s
        self.meta = dict(meta, resumed={"batches": self.resumed, "written": self.written_before})
        return self.meta


def verify(folder: str) -> list[str]:
    """Check every file's checksum against the metadata; return the names that differ."""
    meta = bf.read_meta(folder)
    bad = []
    for name, want in meta.get("checksums", {}).items():
        p = os.path.join(folder, name)
        if not os.path.exists(p) or "sha256:" + bf.sha256_file(p) != want:
            bad.append(name)
    return bad
