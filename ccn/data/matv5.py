"""A small reader for MATLAB level-5 MAT-files (enough for the ILSVRC2012 devkit's meta.mat).

Supports compressed elements (miCOMPRESSED), numeric arrays, char arrays, cell arrays and
struct arrays; not sparse, object or function-handle arrays. ``loadmat(bytes)`` returns
{name: value}: numeric -> NumPy array (MATLAB dims, column-major order honoured), char -> str
(rows joined by newlines), cell -> NumPy object array of values, struct -> list of dicts (in
column-major element order). scipy is not needed.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

_MI = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 9: "f8", 12: "i8", 13: "u8"}
MI_MATRIX, MI_COMPRESSED, MI_UTF8, MI_UTF16 = 14, 15, 16, 17
MX_CELL, MX_STRUCT, MX_OBJECT, MX_CHAR, MX_SPARSE = 1, 2, 3, 4, 5


class MatError(Exception):
    pass


class _Reader:
    def __init__(self, data: bytes, endian: str):
        self.d = data
        self.e = endian
        self.p = 0

    def tag(self):
        if self.p + 8 > len(self.d):
            raise MatError("truncated data element")
        t, n = struct.unpack_from(self.e + "II", self.d, self.p)
        if t >> 16:  # small data element: 4 bytes of data packed into the tag
            n, t = t >> 16, t & 0xFFFF
            body = self.d[self.p + 4:self.p + 4 + n]
            self.p += 8
            return t, body
        start = self.p + 8
        if start + n > len(self.d):
            raise MatError("truncated data element")
        body = self.d[start:start + n]
        self.p = start + n + ((-n) % 8 if t != MI_COMPRESSED else 0)
        return t, body

    def numeric(self):
        t, body = self.tag()
        if t in (MI_UTF8,):
            return np.frombuffer(body, np.uint8)
        if t == MI_UTF16:
            return np.frombuffer(body, self.e + "u2")
        if t not in _MI:
            raise MatError(f"unsupported data type {t}")
        return np.frombuffer(body, self.e + _MI[t])


def _matrix(body: bytes, endian: str):
    r = _Reader(body, endian)
    if not body:
        return None
    flags = r.numeric()
    cls = int(flags[0]) & 0xFF
    complex_ = bool(int(flags[0]) & 0x800)
    dims = [int(x) for x in r.numeric()]
    name = bytes(r.numeric().astype(np.uint8)).decode("latin1")
    n = int(np.prod(dims)) if dims else 0
    if cls == MX_STRUCT:
        flen = int(r.numeric()[0])
        raw = bytes(r.numeric().astype(np.uint8))
        fields = [raw[i:i + flen].split(b"\0", 1)[0].decode("latin1") for i in range(0, len(raw), flen)] if flen else []
        out = []
        for _ in range(n):
            elem = {}
            for f in fields:
                t, b = r.tag()
                if t != MI_MATRIX:
                    raise MatError("struct field is not a matrix")
                elem[f] = _matrix(b, endian)[1] if b else None
            out.append(elem)
        return name, out
    if cls == MX_CELL:
        vals = np.empty(n, dtype=object)
        for i in range(n):
            t, b = r.tag()
            if t != MI_MATRIX:
                raise MatError("cell element is not a matrix")
            vals[i] = _matrix(b, endian)[1] if b else None
        return name, vals.reshape(dims, order="F") if dims else vals
    if cls == MX_CHAR:
        codes = r.numeric() if n else np.zeros(0, np.uint16)
        if codes.dtype == np.uint8 and n and len(codes) != n:  # UTF-8 encoded
            s = bytes(codes).decode("utf-8")
            return name, s
        a = codes.astype(np.uint32).reshape(dims, order="F") if n else np.zeros((0,), np.uint32)
        if a.ndim == 2:
            rows = ["".join(chr(c) for c in row) for row in a]
            return name, "\n".join(rows)
        return name, "".join(chr(c) for c in a.reshape(-1))
    if cls in (MX_OBJECT, MX_SPARSE) or cls > 15:
        raise MatError(f"unsupported MATLAB array class {cls}")
    re_ = r.numeric() if n else np.zeros(0)
    if complex_:
        im = r.numeric()
        re_ = re_.astype(np.complex128) + 1j * im
    return name, np.asarray(re_).reshape(dims, order="F")


def loadmat(data: bytes) -> dict:
    if len(data) < 128:
        raise MatError("too short for a MAT-file header")
    if data[:6] == b"MATLAB" and b"7.3" in data[:20]:
        raise MatError("a MATLAB 7.3 (HDF5) file; only level-5 MAT-files are supported")
    endian = "<" if data[126:128] == b"IM" else ">" if data[126:128] == b"MI" else None
    if endian is None:
        raise MatError("not a level-5 MAT-file (bad endian indicator)")
    r = _Reader(data, endian)
    r.p = 128
    out = {}
    while r.p < len(data):
        t, body = r.tag()
        if t == MI_COMPRESSED:
            try:
                body = zlib.decompress(body)
            except zlib.error as e:
                raise MatError(f"corrupt compressed element ({e})") from None
            inner = _Reader(body, endian)
            t, body = inner.tag()
        if t != MI_MATRIX:
            continue
        name, val = _matrix(body, endian)
        out[name] = val
    return out
