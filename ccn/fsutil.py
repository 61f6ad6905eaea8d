"""Atomic, durable file writes shared by every writer in ccn (batches, metadata, checkpoints,
features, pictures): write to a temporary name in the same folder, fsync, rename over the
target, fsync the folder. A crash at any moment leaves either the old file or the new one."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile

import numpy as np

from .errors import InputError

_UMASK = os.umask(0o022)
os.umask(_UMASK)


def probe_writable(folder: str, prefix: str = ".ccn-probe-") -> None:
    """Create and remove a file in ``folder`` (OSError if that fails): permissions alone do not
    tell, e.g. on a read-only file system or for root."""
    fd, probe = tempfile.mkstemp(prefix=prefix, dir=folder)
    os.close(fd)
    os.unlink(probe)


def fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str, chunks) -> str:
    """Write the byte chunks to ``path`` atomically; return the sha256 hex digest."""
    d = os.path.dirname(os.path.abspath(path))
    h = hashlib.sha256()
    try:
        fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=d)
    except OSError as e:
        raise InputError(f"cannot write in {d}: {e.strerror or e}.") from None
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as f:
            for c in chunks:
                if not isinstance(c, bytes) and memoryview(c).nbytes == 0:
                    continue  # an empty array (memoryview cannot cast a zero-size view)
                mv = memoryview(c).cast("B") if not isinstance(c, bytes) else c
                h.update(mv)
                f.write(mv)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise InputError(f"cannot write {path}: {e.strerror or e}.") from None
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_dir(d)
    return h.hexdigest()


def atomic_write_json(path: str, obj) -> str:
    return atomic_write(path, [json.dumps(obj, indent=1, sort_keys=True).encode() + b"\n"])


def atomic_save_npy(path: str, arr: np.ndarray) -> str:
    import io

    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
    return atomic_write(path, [buf.getvalue()])
