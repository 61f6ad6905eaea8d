"""Training checkpoints: format, atomic writing, loading and integrity checks.

No pickle anywhere: a checkpoint is a folder of plain files that NumPy and any JSON reader
can open, and nothing in it is ever executed.

Layout (``SAVE_PATH`` is the run folder given by ``--save-path``)::

    SAVE_PATH/
      3.2/               after epoch 3, data batch 2 (cuda-convnet's "epoch.batch" names)
        meta.json        everything but the arrays (below)
        arrays.npz       per parameter NAME (e.g. ``fc10.weights[0]``, ``fc10.biases``):
                           ``w/NAME``     the weights, cuda-convnet's matrix shape, float32
                           ``inc/NAME``   the momentum increment ("weightsInc")
                           ``grad/NAME``  the gradient accumulated towards the next update
                                          (non-zero only with ``updatePeriod`` > 1)
        layers.cfg       the layer-definition text the net was built from
        params.cfg       the layer-params text in force when it was saved
      3.4-mb7/           written by Ctrl-C: epoch 3, data batch 4 in progress,
                         its first 7 minibatches done
      .tmp-.../          a checkpoint being written (ignored; removed by the next save)
      .ccn-lock          the advisory lock of the run saving here (see lock_save_folder)

``meta.json`` holds: ``format`` (``"ccn-checkpoint"``), ``format_version``,
``ccn_version``, ``created`` (UTC, ISO 8601), ``options`` (every ``ccn train`` option),
``net`` (``layers_path``, ``params_path``, ``seed``, ``step`` -- the counter-based RNG
state of the core --, ``data_dims``, and per parameter its ``name``, ``shape`` and
``passes``, the minibatches accumulated since its last update), ``position`` (the
provider position: ``epoch``, ``index`` into the train range and ``mb`` minibatches done
of the next batch to train, ``batches_done``, ``test_index`` of the next test batch for
``--test-one``, the ``train_range``, the provider ``seed`` and the partial sums of an
interrupted batch), ``history`` (``train`` and ``test`` cost records: epoch, batch,
per cost layer the values summed over cases, number of cases), ``files`` (for each
other file its size and SHA-256) and ``sha256``, the SHA-256 of the canonical JSON
(sorted keys, no spaces) of ``meta.json`` without that key.

Writing is atomic: everything goes into a fresh temporary folder inside ``SAVE_PATH``,
each file is fsync'ed, the folder is fsync'ed, renamed to its final name and
``SAVE_PATH`` is fsync'ed. A crash or ``kill -9`` at any instant leaves either the old
set of checkpoints or the old set plus the complete new one. ``--max-filesize`` (MiB)
then deletes the oldest checkpoints until the rest fit, never the newest.

Loading checks the sizes and checksums of every file, the format version and the ccn
version, and reports a truncated, corrupted or foreign checkpoint as
:class:`ccn.errors.InputError` (exit code 2); a damaged one names the newest intact checkpoint
before it and how to go on from there. The read-only commands given a save folder use its newest
intact checkpoint (:func:`load_newest_intact`), warning about the damaged ones.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field

import numpy as np

from .errors import InputError
from .fsutil import fsync_dir, make_temp_dir, probe_writable, write_error

FORMAT = "ccn-checkpoint"
FORMAT_VERSION = 1
META = "meta.json"
ARRAYS = "arrays.npz"
LAYERS = "layers.cfg"
PARAMS = "params.cfg"
TMP_PREFIX = ".tmp-"
LOCK = ".ccn-lock"
_NAME_RE = re.compile(r"^(\d+)\.(\d+)(?:-mb(\d+))?$")


def ccn_version() -> str:
    from . import __version__

    return __version__


@dataclass
class Checkpoint:
    """A checkpoint in memory: the metadata dict, the arrays and the two net texts."""

    meta: dict
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    layers_text: str = ""
    params_text: str = ""
    path: str = ""

    @property
    def options(self) -> dict:
        return self.meta.get("options", {})

    @property
    def position(self) -> dict:
        return self.meta["position"]

    @property
    def net_meta(self) -> dict:
        return self.meta["net"]


# ---- naming ------------------------------------------------------------------------------
def checkpoint_name(epoch: int, batch: int, mb: int = 0) -> str:
    """``E.B`` once data batch B of epoch E is done; ``E.B-mbK`` with K minibatches of it done."""
    return f"{epoch}.{batch}" if mb == 0 else f"{epoch}.{batch}-mb{mb}"


def _order_key(name: str):
    m = _NAME_RE.match(name)
    if not m:
        return None
    e, b, k = int(m.group(1)), int(m.group(2)), m.group(3)
    # a finished batch comes after every partial state of that batch
    return (e, b, int(k) if k is not None else float("inf"))


def list_checkpoints(folder: str) -> list[str]:
    """The checkpoint folders in ``folder`` (complete ones only), oldest first."""
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    found = []
    for n in names:
        key = _order_key(n)
        if key is not None and os.path.isfile(os.path.join(folder, n, META)):
            found.append((key, n))
    return [os.path.join(folder, n) for _, n in sorted(found)]


def checkpoints_after(folder: str, path: str) -> list[str]:
    """The checkpoint folders of ``folder`` that come after the checkpoint ``path`` in the run's
    order (oldest first; none when ``path`` is not named EPOCH.BATCH)."""
    key = _order_key(os.path.basename(os.path.normpath(path)))
    return [] if key is None else [p for p in list_checkpoints(folder) if _order_key(os.path.basename(p)) > key]


def is_checkpoint(path: str) -> bool:
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, META))


def resolve(path: str) -> str:
    """A checkpoint folder itself, or a run folder's newest complete checkpoint."""
    if not os.path.exists(path):
        raise InputError(f"{path}: no such checkpoint or save folder.")
    from .legacy import is_original

    convert = (f"{path} looks like a checkpoint of the original cuda-convnet or cuda-convnet2 (a pickle), not a ccn "
               "checkpoint: convert it once with "
               f"'ccn import-checkpoint {path} --save-path DIR' (the original layer files are needed too), then "
               "give -f DIR.")
    if os.path.isfile(path):
        if os.path.basename(path) == META or os.path.isfile(os.path.join(os.path.dirname(path) or ".", META)):
            return os.path.dirname(path) or "."  # a file of a checkpoint folder (meta.json, arrays.npz, ...)
        if is_original(path):
            raise InputError(convert)
        raise InputError(f"{path}: expected a checkpoint folder (with {META}) or a save folder holding them, "
                         "found a file.")
    if is_checkpoint(path):
        return path
    found = list_checkpoints(path)
    if not found:
        if is_original(path):
            raise InputError(convert)
        raise InputError(f"{path}: the folder holds no complete checkpoint (folders named like 3.2 with a {META}).")
    return found[-1]


# ---- hashing and fsync ---------------------------------------------------------------------
def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def text_sha256(text: str) -> str:
    """SHA-256 of a text (UTF-8), e.g. of a layer-definition file as it was read."""
    return _sha256_bytes(text.encode("utf-8"))


def _meta_digest(meta: dict) -> str:
    body = {k: v for k, v in meta.items() if k != "sha256"}
    return _sha256_bytes(json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8"))


def _write_file(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _tree_size(path: str) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
    return total


# ---- writing --------------------------------------------------------------------------------
def check_writable(folder: str) -> None:
    """Create ``folder`` if needed and prove a file can be written there (InputError if not)."""
    try:
        os.makedirs(folder, exist_ok=True)
        probe_writable(folder, TMP_PREFIX + "probe-")
    except OSError as e:
        raise InputError(f"{folder}: cannot write checkpoints there ({e.strerror or e}). Give a writable "
                         "--save-path.") from e


def _clean_stale_temps(folder: str) -> None:
    for n in os.listdir(folder):
        if n.startswith(TMP_PREFIX):
            shutil.rmtree(os.path.join(folder, n), ignore_errors=True)


def write(folder: str, name: str, ckpt: Checkpoint, max_bytes: int | None = None) -> str:
    """Write ``ckpt`` atomically as ``folder/name``; then trim old ones to ``max_bytes``.

    Returns the final path. On failure nothing but a removed temporary folder changes and
    an :class:`InputError` names the folder.
    """
    final = os.path.join(folder, name)
    tmp = None
    try:
        os.makedirs(folder, exist_ok=True)
        _clean_stale_temps(folder)
        tmp = make_temp_dir(f"{TMP_PREFIX}{name}-", folder)
        buf = io.BytesIO()
        np.savez(buf, **ckpt.arrays)
        blobs = {ARRAYS: buf.getvalue(), LAYERS: ckpt.layers_text.encode("utf-8"),
                 PARAMS: ckpt.params_text.encode("utf-8")}
        meta = dict(ckpt.meta)
        meta["format"] = FORMAT
        meta["format_version"] = FORMAT_VERSION
        meta["ccn_version"] = ccn_version()
        meta["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        meta["files"] = {k: {"bytes": len(v), "sha256": _sha256_bytes(v)} for k, v in blobs.items()}
        meta.pop("sha256", None)
        meta["sha256"] = _meta_digest(meta)
        for k, v in blobs.items():
            _write_file(os.path.join(tmp, k), v)
        # meta.json last: a folder with a meta.json has every other file written.
        _write_file(os.path.join(tmp, META), (json.dumps(meta, indent=1, sort_keys=True) + "\n").encode("utf-8"))
        fsync_dir(tmp)
        old = None
        if os.path.exists(final):  # e.g. resumed from an older checkpoint of this folder
            old = tempfile.mkdtemp(prefix=f"{TMP_PREFIX}old-{name}-", dir=folder)
            os.rename(final, os.path.join(old, name))
        os.rename(tmp, final)
        tmp = None
        fsync_dir(folder)
        if old:
            shutil.rmtree(old, ignore_errors=True)
    except OSError as e:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
        prev = list_checkpoints(folder)
        keep = f" The previous checkpoint {prev[-1]} is intact." if prev else ""
        raise write_error(f"{final}: cannot write the checkpoint ({e.strerror or e}).{keep}", e) from e
    if max_bytes is not None:
        trim(folder, max_bytes)
    return final


def trim(folder: str, max_bytes: int) -> list[str]:
    """Delete the oldest checkpoints until all of them fit in ``max_bytes``; keep the newest."""
    found = list_checkpoints(folder)
    sizes = {p: _tree_size(p) for p in found}
    total = sum(sizes.values())
    removed = []
    for p in found[:-1]:
        if total <= max_bytes:
            break
        _remove(folder, p)
        total -= sizes[p]
        removed.append(p)
    return removed


def _remove(folder: str, path: str) -> None:
    """Delete a checkpoint so that a crash midway never leaves half of it under its name:
    rename it to a temporary name first (atomic), then delete that."""
    doomed = tempfile.mkdtemp(prefix=f"{TMP_PREFIX}del-", dir=folder)
    try:
        os.rename(path, os.path.join(doomed, os.path.basename(path)))
        fsync_dir(folder)
    except OSError:
        pass
    shutil.rmtree(doomed, ignore_errors=True)


# ---- one run per save folder ----------------------------------------------------------------
class SaveFolderLock:
    """An advisory lock (``flock``) on ``FOLDER/.ccn-lock``, held by the one run saving into
    FOLDER; the kernel drops it when the process ends, however it ends (kill -9 included), so a
    stale lock file never blocks anything. The file records who holds it (host, PID, since when)
    for the message another run gets; it stays in the folder (removing it would race with the
    next run's lock) and is ignored by everything else (its name is no checkpoint's)."""

    def __init__(self, folder: str, fd: int | None):
        self.folder, self._fd = folder, fd

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                import fcntl

                fcntl.flock(fd, fcntl.LOCK_UN)
            except (ImportError, OSError):
                pass
            os.close(fd)


def _holder_plausible(holder: dict, host: str) -> bool:
    """Whether the holder a lock file names may still be the holder: a run that could not write
    its own record (a read-only lock file) leaves an older one behind, so a process of this host
    that no longer exists is not named."""
    if holder.get("host") != host:
        return True
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return False
    except (OSError, ValueError, TypeError):
        return True
    return True


def lock_save_folder(folder: str, warn=None) -> SaveFolderLock:
    """Take the save folder's lock for this run, or refuse (InputError) when another run holds it.
    Where the file system cannot lock (some network file systems), ``warn`` is told and the run
    goes on unlocked."""
    import socket

    try:
        import fcntl
    except ImportError:  # (not POSIX)
        return SaveFolderLock(folder, None)
    path = os.path.join(folder, LOCK)
    try:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
            try:  # group-writable, so that a teammate's run can open it for writing too (NFS locks need that)
                if os.fstat(fd).st_uid == os.getuid():
                    os.fchmod(fd, 0o664)
            except OSError:
                pass
        except PermissionError:  # a teammate's lock file on shared storage: a read-only one locks as well
            fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        raise InputError(f"{folder}: cannot create the lock file {LOCK} there ({e.strerror or e}). Give a writable "
                         "--save-path.") from e
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            holder = json.loads(os.pread(fd, 4096, 0).decode("utf-8") or "{}")
        except (OSError, ValueError):
            holder = {}
        os.close(fd)
        who = ""
        if isinstance(holder, dict) and holder.get("pid") and _holder_plausible(holder, socket.gethostname()):
            who = f" (process {holder['pid']} on {holder.get('host', 'an unknown host')}" + (
                f", since {holder['started']}" if holder.get("started") else "") + ")"
        raise InputError(f"{folder} is in use by another ccn train{who}: two runs saving into one folder would "
                         "overwrite each other's checkpoints. Wait for that run to end (or stop it: Ctrl-C or "
                         "SIGTERM saves and stops it), then resume with -f; or give this run another --save-path.") \
            from None
    except OSError as e:  # the file system has no locks (ENOLCK, EOPNOTSUPP): go on without
        os.close(fd)
        if warn is not None:
            warn(f"warning: {folder}: cannot lock the save folder ({e.strerror or e}); nothing stops a second run "
                 "from saving there at the same time.")
        return SaveFolderLock(folder, None)
    me = {"host": socket.gethostname(), "pid": os.getpid(),
          "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    try:
        data = (json.dumps(me) + "\n").encode("utf-8")
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
    except OSError:
        pass  # the lock holds all the same; only the message naming its holder is the poorer
    return SaveFolderLock(folder, fd)


# ---- reading --------------------------------------------------------------------------------
class CorruptCheckpoint(InputError):
    """A checkpoint that fails verification (truncated, corrupted, incomplete)."""


def _corrupt(path: str, what: str, advise: bool = False) -> InputError:
    return CorruptCheckpoint(f"{path}: the checkpoint is truncated or corrupted ({what})."
                             + (recovery_routes(path) if advise else ""))


def aside_commands(paths: list[str]) -> str:
    """Shell commands moving checkpoint folders aside within their folder (``mv R/3.2 R/3.2.aside``):
    a name that is not EPOCH.BATCH is ignored by ccn (discovery, -f FOLDER, pruning)."""
    import shlex

    def aside(p: str) -> str:
        q, k = f"{p}.aside", 1
        while os.path.exists(q):  # never move a folder into an earlier one set aside
            k += 1
            q = f"{p}.aside{k}"
        return q

    return " && ".join(f"mv {shlex.quote(p)} {shlex.quote(aside(p))}" for p in paths)


def newest_intact(folder: str, before: str | None = None, check_version: bool = False):
    """(the newest checkpoint of ``folder`` older than ``before`` -- all of them if None -- that
    passes verification, or None; the ones newer than it, whatever their state)."""
    found = list_checkpoints(folder)
    if before is not None:
        key = _order_key(os.path.basename(os.path.normpath(before)))
        found = [p for p in found if key is None or _order_key(os.path.basename(p)) < key]
    good, _, failed = _newest_loadable(found, check_version, InputError)
    return (good, [p for p, _ in reversed(failed)]) if good is not None else (None, [])


def _newest_loadable(paths: list[str], check_version: bool, skip: type):
    """Walk the checkpoint folders ``paths`` (oldest first) from the newest: (the first that loads
    and verifies, its Checkpoint -- or None, None; [(path, error)] of the newer ones that raised
    ``skip``, newest first)."""
    failed = []
    for p in reversed(paths):
        try:
            return p, _load_verified(p, check_version), failed
        except skip as e:
            failed.append((p, e))
    return None, None, failed


def recovery_routes(path: str) -> str:
    """What to say after a damaged checkpoint ``path``: the newest intact one before it in its folder,
    and the two ways to go on from it (ccn train refuses, by design, to resume an older checkpoint
    in place beside newer ones: see ccn.cli.train._check_save_folder)."""
    path = os.path.normpath(path)
    folder = os.path.dirname(path) or "."
    if _order_key(os.path.basename(path)) is None:
        return ""
    try:
        good, _ = newest_intact(folder, before=path)
    except Exception:  # (only advice: never let it hide the error itself)
        return ""
    if good is None:
        return (f" No earlier checkpoint of {folder} is intact either: restore the folder from a backup, or start a "
                "new run.")
    newer = checkpoints_after(folder, good)
    if path not in newer:
        newer.append(path)
    return (f" The newest intact checkpoint before it is {good}. To go on from there in {folder}, first move the "
            f"newer checkpoint folder{'s' if len(newer) > 1 else ''} aside ({aside_commands(newer)}; a name that is "
            f"not EPOCH.BATCH is ignored by ccn), then ccn train -f {folder}; or branch from it into a new folder, "
            f"which starts with its history: ccn train -f {good} --save-path NEW_FOLDER. (ccn test, show-cost and "
            f"the other read-only commands given -f {folder} use {good} already.)")


def load(path: str, check_version: bool = True) -> Checkpoint:
    """Load and verify a checkpoint (a checkpoint folder, or a save folder: its newest)."""
    path = resolve(path)
    try:
        return _load_verified(path, check_version)
    except CorruptCheckpoint as e:
        raise CorruptCheckpoint(f"{e}{recovery_routes(path)}") from e.__cause__


def load_newest_intact(path: str, check_version: bool = True, warn=None) -> Checkpoint:
    """:func:`load` for the read-only commands (test, show-cost, ...): given a save folder whose newest
    checkpoint is damaged, the newest intact one instead, with a warning naming the damaged ones
    (``warn``, stderr by default). A checkpoint folder given itself is loaded as it is."""
    target = resolve(path)
    if os.path.isfile(path) or os.path.normpath(target) == os.path.normpath(path):
        return load(target, check_version)
    p, c, damaged = _newest_loadable(list_checkpoints(path), check_version, CorruptCheckpoint)
    if c is not None:
        if damaged:
            what = "; ".join(str(e).split(": the checkpoint is ", 1)[-1].rstrip(".") for _, e in damaged[:3])
            msg = (f"warning: the newest checkpoint{'s' if len(damaged) > 1 else ''} of {path}, "
                   f"{', '.join(q for q, _ in damaged)}, {'are' if len(damaged) > 1 else 'is'} damaged ({what}); "
                   f"using {p}, the newest intact one.")
            if warn is None:
                import sys

                print(msg, file=sys.stderr, flush=True)
            else:
                warn(msg)
        return c
    if damaged:
        raise CorruptCheckpoint(f"{damaged[0][1]} No checkpoint of {path} is intact.")
    return load(target, check_version)


def _load_verified(path: str, check_version: bool = True) -> Checkpoint:
    """Load and verify the checkpoint folder ``path`` (CorruptCheckpoint without advice if damaged)."""
    mpath = os.path.join(path, META)
    try:
        with open(mpath, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise InputError(f"{mpath}: cannot read the checkpoint metadata ({e.strerror}).") from e
    try:
        meta = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _corrupt(path, f"{META} is not valid JSON: {e}") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise InputError(f"{path}: not a ccn checkpoint ({META} lacks \"format\": \"{FORMAT}\").")
    if meta.get("sha256") != _meta_digest(meta):
        raise _corrupt(path, f"the checksum of {META} does not match its contents")
    if meta.get("format_version") != FORMAT_VERSION:
        raise InputError(f"{path}: checkpoint format version {meta.get('format_version')} is not the one this ccn "
                         f"reads ({FORMAT_VERSION}).")
    if check_version and meta.get("ccn_version") != ccn_version():
        raise InputError(f"{path}: the checkpoint was written by ccn {meta.get('ccn_version')}, this is ccn "
                         f"{ccn_version()}; resuming across versions is not supported (bitwise resume needs the "
                         "same build). Use that version of ccn to continue.")
    blobs = {}
    for fname, info in meta.get("files", {}).items():
        fpath = os.path.join(path, fname)
        try:
            with open(fpath, "rb") as f:
                data = f.read()
        except OSError as e:
            raise _corrupt(path, f"{fname} is missing or unreadable: {e.strerror}") from e
        if len(data) != info.get("bytes"):
            raise _corrupt(path, f"{fname} has {len(data)} bytes, expected {info.get('bytes')}")
        if _sha256_bytes(data) != info.get("sha256"):
            raise _corrupt(path, f"the SHA-256 of {fname} does not match")
        blobs[fname] = data
    for need in (ARRAYS, LAYERS, PARAMS):
        if need not in blobs:
            raise _corrupt(path, f"{META} lists no {need}")
    try:
        with np.load(io.BytesIO(blobs[ARRAYS]), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as e:  # a zip that passed the checksum but still fails: written wrongly
        why = "it is not a plain NumPy .npz archive" if "pickle" in str(e) else str(e).rstrip(".")
        raise _corrupt(path, f"{ARRAYS} cannot be read: {why}") from e
    return Checkpoint(meta=meta, arrays=arrays, layers_text=blobs[LAYERS].decode("utf-8"),
                      params_text=blobs[PARAMS].decode("utf-8"), path=path)


# ---- net state ------------------------------------------------------------------------------
def net_arrays(net) -> tuple[dict[str, np.ndarray], list[dict]]:
    """The arrays and per-parameter metadata that capture a net's learnable state."""
    arrays, plist = {}, []
    for p in net.params:
        arrays[f"w/{p.name}"] = net.get(p.name, "w")
        arrays[f"inc/{p.name}"] = net.get(p.name, "inc")
        arrays[f"grad/{p.name}"] = net.get(p.name, "grad")
        plist.append({"name": p.name, "shape": list(p.shape), "passes": int(p.passes)})
    return arrays, plist


def restore_net(net, ckpt: Checkpoint) -> None:
    """Put a checkpoint's weights, increments, gradients, passes and RNG state into ``net``."""
    saved = {p["name"]: p for p in ckpt.net_meta.get("params", [])}
    mine = {p.name: p for p in net.params}
    if set(saved) != set(mine):
        extra = sorted(set(saved) - set(mine))
        missing = sorted(set(mine) - set(saved))
        raise InputError(f"{ckpt.path}: the checkpoint belongs to another net (parameters only in the checkpoint: "
                         f"{', '.join(extra) or 'none'}; only in this net: {', '.join(missing) or 'none'}).")
    for name, p in mine.items():
        if tuple(saved[name]["shape"]) != tuple(p.shape):
            raise InputError(f"{ckpt.path}: the checkpoint belongs to another net (parameter '{name}' is "
                             f"{tuple(saved[name]['shape'])} there and {tuple(p.shape)} here).")
        for kind in ("w", "inc", "grad"):
            key = f"{kind}/{name}"
            if key not in ckpt.arrays:
                raise _corrupt(ckpt.path, f"{ARRAYS} lacks '{key}'", advise=True)
            arr = ckpt.arrays[key]
            if tuple(arr.shape) != tuple(p.shape) or arr.dtype != np.float32:
                raise _corrupt(ckpt.path, f"'{key}' is {arr.dtype} {arr.shape}, expected float32 {tuple(p.shape)}",
                               advise=True)
            net.set(name, arr, kind)
        net._net.set_passes(name, int(saved[name]["passes"]))
    net._net.seed = int(ckpt.net_meta["seed"])
    net._net.step = int(ckpt.net_meta["step"])
    net.seed = int(ckpt.net_meta["seed"])
