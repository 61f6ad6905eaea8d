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


def write_error(msg: str, e: OSError):
    """The error for a failed write: a full disk or quota, or an I/O error, is a failure at run
    time (exit 1); anything else (no permission, a read-only file system, a missing folder)
    says the path given cannot be written (exit 2)."""
    import errno

    from .errors import CcnRuntimeError

    run_time = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EFBIG}
    return (CcnRuntimeError if e.errno in run_time else InputError)(msg)


def make_temp_dir(prefix: str, folder: str) -> str:
    """``tempfile.mkdtemp`` with the mode a plain ``mkdir`` would give (mkdtemp makes it 0700, so
    a checkpoint renamed from it would be unreadable to the rest of a team on shared storage)."""
    import tempfile

    path = tempfile.mkdtemp(prefix=prefix, dir=folder)
    os.chmod(path, 0o777 & ~_UMASK)
    return path


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
        raise write_error(f"cannot write in {d}: {e.strerror or e}.", e) from None
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
        raise write_error(f"cannot write {path}: {e.strerror or e}.", e) from None
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
