"""Reading Python 2 pickles (the CIFAR python batches, cuda-convnet checkpoints) without
running pickle code.

Those files are Python 2 pickles of dicts holding lists, strings, ints and NumPy arrays.
:func:`load` unpickles with a whitelist: the only globals it resolves are NumPy's array
reconstruction (``_reconstruct`` of ``ndarray`` and ``dtype``), ``_frombuffer`` and numeric
``scalar``, each replaced by a checking wrapper that builds plain numeric values, plus the
callers' own inert :class:`Record` classes (``extra``; cuda-convnet's option objects); any
other global (``os.system``, ``builtins.eval``, ``copy_reg._reconstructor`` of some class, ...)
is refused with an :class:`InputError`. Dict keys and strings that come back as bytes are
decoded; objects the pickle shares (its memo) stay shared, cycles included.
"""

from __future__ import annotations

import io
import pickle

import numpy as np

from ..errors import InputError

_ALLOWED_KINDS = set("biufc")  # bool, int, uint, float, complex; no objects, no void


def _check_dtype(dt):
    dt = np.dtype(dt)
    if dt.kind not in _ALLOWED_KINDS or dt.fields is not None or dt.subdtype is not None:
        raise pickle.UnpicklingError(f"refusing NumPy dtype {dt!r}")
    return dt


def _reconstruct(cls, shape, dtype_code):
    if cls is not np.ndarray:
        raise pickle.UnpicklingError("refusing to reconstruct a subclass of ndarray")
    return _ArrayBuilder()


class _ArrayBuilder:
    """Stands in for the array until BUILD hands over its state (version, shape, dtype, fortran, data)."""

    def __setstate__(self, state):
        if len(state) == 5:
            _, shape, dtype, fortran, raw = state
        elif len(state) == 4:
            shape, dtype, fortran, raw = state
        else:
            raise pickle.UnpicklingError("unexpected ndarray state")
        if isinstance(dtype, _DtypeBuilder):
            dtype = dtype.__array_dtype__()
        if not isinstance(dtype, np.dtype):
            raise pickle.UnpicklingError("refusing an ndarray without a plain dtype")
        dt = _check_dtype(dtype)
        if isinstance(raw, str):  # a Python 2 str read with encoding='latin1'
            raw = raw.encode("latin1")
        if not isinstance(raw, (bytes, bytearray)):
            raise pickle.UnpicklingError("refusing a non-byte ndarray payload (object arrays are not allowed)")
        shape = tuple(int(s) for s in shape)
        n = int(np.prod(shape)) if shape else 1
        if len(raw) != n * dt.itemsize:
            raise pickle.UnpicklingError("ndarray payload size does not match its shape")
        arr = np.frombuffer(bytes(raw), dtype=dt)
        self.array = arr.reshape(shape, order="F" if fortran else "C")


def _dtype(obj, align=False, copy=False):
    if isinstance(obj, bytes):
        obj = obj.decode("latin1")
    if not isinstance(obj, str):
        raise pickle.UnpicklingError("refusing a dtype built from a non-string")
    return _DtypeBuilder(obj)


class _DtypeBuilder:
    def __init__(self, code):
        self.code = code
        self.order = "|"

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) >= 2 and isinstance(state[1], (str, bytes)):
            o = state[1].decode() if isinstance(state[1], bytes) else state[1]
            self.order = o

    def __array_dtype__(self):
        dt = np.dtype(self.code)
        if self.order in "<>" and dt.itemsize > 1:
            dt = dt.newbyteorder(self.order)
        return _check_dtype(dt)


def _frombuffer(buf, dtype, shape, order):
    dt = _resolve(dtype)
    if isinstance(dt, _DtypeBuilder):
        dt = dt.__array_dtype__()
    dt = _check_dtype(dt)
    return np.frombuffer(bytes(buf), dtype=dt).reshape(shape, order=order)


def _scalar(dtype, raw=None):
    # a NumPy scalar (numpy.core.multiarray.scalar): its dtype and its bytes
    dt = _resolve(dtype)
    if isinstance(dt, _DtypeBuilder):
        dt = dt.__array_dtype__()
    dt = _check_dtype(dt)
    if isinstance(raw, str):
        raw = raw.encode("latin1")
    if not isinstance(raw, (bytes, bytearray)) or len(raw) != dt.itemsize:
        raise pickle.UnpicklingError("refusing a NumPy scalar without its bytes")
    return np.frombuffer(bytes(raw), dtype=dt)[0]


def _codecs_encode(text, encoding="utf-8", errors="strict"):
    # how Python 3 writes bytes at protocol 2; harmless, but only the two encodings it uses
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1", "utf-8", "utf8"):
        raise pickle.UnpicklingError("refusing _codecs.encode with unexpected arguments")
    return text.encode(encoding)


_GLOBALS = {
    ("_codecs", "encode"): _codecs_encode,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _dtype,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("numpy.core.multiarray", "scalar"): _scalar,
    ("numpy._core.multiarray", "scalar"): _scalar,
}


class Record:
    """An inert stand-in for an instance of some class of the pickling program (e.g. cuda-convnet's
    ``options.Option``): it only keeps the attributes the pickle gives it. Callers subclass it
    and name the subclasses they accept in :func:`load`'s ``extra``."""

    def __init__(self, *args):
        if args:
            raise pickle.UnpicklingError(f"refusing {type(self).__name__} built from arguments")

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 2:  # (dict, slots)
            state = {**(state[0] or {}), **(state[1] or {})}
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(f"refusing {type(self).__name__} with a non-dict state")
        self.__dict__.update({(k.decode("latin1") if isinstance(k, bytes) else str(k)): v for k, v in state.items()})

    def __repr__(self):
        return f"{type(self).__name__}({self.__dict__!r})"


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, extra=None, **kw):
        super().__init__(file, **kw)
        self._extra = extra or {}

    def find_class(self, module, name):
        f = _GLOBALS.get((module, name)) or self._extra.get((module, name))
        if f is None:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        return f


def _resolve(x, memo=None):
    """The unpickled object with arrays and dtypes made real; shared objects stay shared."""
    if memo is None:
        memo = {}
    if isinstance(x, _ArrayBuilder):
        if not hasattr(x, "array"):
            raise pickle.UnpicklingError("an ndarray without data")
        return x.array
    if isinstance(x, _DtypeBuilder):
        return x.__array_dtype__()
    if not isinstance(x, (dict, list, tuple, Record)):
        return x
    if id(x) in memo:
        return memo[id(x)]
    if isinstance(x, tuple):  # a tuple cannot hold itself without a list or dict in between
        out = memo[id(x)] = tuple(_resolve(v, memo) for v in x)
        return out
    if isinstance(x, list):
        out = memo[id(x)] = []
        out.extend(_resolve(v, memo) for v in x)
        return out
    if isinstance(x, Record):
        memo[id(x)] = x
        x.__dict__.update({k: _resolve(v, memo) for k, v in x.__dict__.items()})
        return x
    out = memo[id(x)] = {}
    for k, v in x.items():
        out[k.decode("latin1") if isinstance(k, bytes) else k] = _resolve(v, memo)
    return out


def load(data: bytes, name: str, what: str = "a readable CIFAR python batch", extra: dict | None = None):
    """Unpickle ``data`` (read from ``name``) allowing only plain containers, numeric arrays and
    the :class:`Record` classes in ``extra`` ({(module, name): class}); an :class:`InputError`
    saying that ``name`` is not ``what`` otherwise."""
    try:
        obj = _Unpickler(io.BytesIO(data), extra=extra, encoding="latin1").load()
        return _resolve(obj)
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            MemoryError, OverflowError, RecursionError) as e:
        raise InputError(f"{name} is not {what}: {e}.") from None
