"""Rules every CUDA source file of the backend (native/cuda/) keeps, checked by reading the
source, so they hold on machines without a GPU (CI compiles the CUDA code but never runs it):

  - every kernel launch `k<<<grid, block, smem, stream>>>(...)` names an explicit stream
    (the context's; never the legacy default stream) and is followed by CCN_CUDA_LAUNCHED(),
    so a bad launch becomes an exception naming the file and line;
  - no synchronous default-stream copies or sets (cudaMemcpy, cudaMemset, cudaMemcpy2D, ...):
    the context's streams are non-blocking and do not wait for the legacy stream;
  - every CUDA runtime call is wrapped in CCN_CUDA_CHECK, except the few listed in
    UNCHECKED_OK (destructors, which must not throw; error helpers; device enumeration,
    which handles the error code itself).
"""

import os
import re
from collections import Counter

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CUDA_DIR = os.path.join(ROOT, "native", "cuda")

# (file, call) -> how many unchecked calls are allowed there.
UNCHECKED_OK = {
    ("context.cu", "cudaGetLastError"): 3,  # cuda_fail, the constructor's error path, the destructor
    ("context.cu", "cudaGetErrorName"): 1,  # cuda_fail
    ("context.cu", "cudaGetErrorString"): 2,  # cuda_fail, the constructor's error path
    ("context.cu", "cudaGetDeviceCount"): 1,  # the constructor checks the code itself
    ("context.cu", "cudaSetDevice"): 1,  # ~CudaCtx
    ("context.cu", "cudaStreamSynchronize"): 2,  # ~CudaCtx
    ("context.cu", "cudaFree"): 4,  # ~CudaCtx (2), ~DeviceArray, DeviceArray move assignment (noexcept)
    ("context.cu", "cudaFreeHost"): 2,  # ~CudaCtx, ~PinnedArray
    ("context.cu", "cudaStreamDestroy"): 3,  # ~CudaCtx (2), the constructor's cleanup when the 2nd stream fails
    ("context.cu", "cudaStreamCreateWithFlags"): 1,  # the 2nd stream: its error goes to cuda_fail by hand
    ("cuda_info.cu", "cudaGetDeviceCount"): 2,
    ("cuda_info.cu", "cudaGetLastError"): 4,
    ("cuda_info.cu", "cudaGetDevice"): 1,  # cuda_mem_info: asks, and never throws
    ("cuda_info.cu", "cudaSetDevice"): 2,
    ("cuda_info.cu", "cudaMemGetInfo"): 1,
    ("cuda_info.cu", "cudaGetDeviceProperties"): 1,
    ("cuda_info.cu", "cudaGetErrorString"): 1,
    ("cuda_info.cu", "cudaRuntimeGetVersion"): 1,
    ("cuda_info.cu", "cudaDriverGetVersion"): 1,
}

SYNC_COPIES = re.compile(r"\bcuda(Memcpy|Memset|Memcpy2D|Memcpy3D|MemcpyToSymbol|MemcpyFromSymbol|Memset2D)\s*\(")


def sources():
    out = {}
    for f in sorted(os.listdir(CUDA_DIR)):
        if f.endswith((".cu", ".cuh", ".h")):
            with open(os.path.join(CUDA_DIR, f)) as fh:
                out[f] = fh.read()
    return out


def strip_comments(text):
    """The code without comments and without the contents of string literals (messages may
    name CUDA calls); line numbers are kept."""
    text = re.sub(r"/\*.*?\*/", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.S)
    text = re.sub(r"//[^\n]*", "", text)
    return re.sub(r'"(?:[^"\\\n]|\\.)*"', '""', text)


def line_of(text, pos):
    return text.count("\n", 0, pos) + 1


def launches(text):
    """(position, config string, text after the launch statement) of every <<<...>>> launch."""
    for m in re.finditer(r"<<<(.*?)>>>", text, flags=re.S):
        # the argument list of the launch, then the statement's semicolon
        i = m.end()
        assert text[i] == "(", text[m.start():i + 20]
        depth = 0
        while True:
            if text[i] == "(":
                depth += 1
            elif text[i] == ")":
                depth -= 1
                if depth == 0:
                    break
            i += 1
        j = text.index(";", i) + 1
        yield m.start(), m.group(1), text[j:]


def split_top(cfg):
    """Split at the commas outside parentheses."""
    parts, depth, cur = [], 0, ""
    for ch in cfg:
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    return parts + [cur.strip()]


def test_there_are_kernels_to_check():
    n = sum(len(list(launches(strip_comments(t)))) for t in sources().values())
    assert n >= 40, f"found only {n} kernel launches in native/cuda: has the launch syntax changed?"


def test_every_launch_names_a_stream_and_is_checked():
    bad = []
    for f, text in sources().items():
        t = strip_comments(text)
        for pos, cfg, rest in launches(t):
            parts = split_top(cfg)
            where = f"native/cuda/{f}:{line_of(t, pos)}"
            if len(parts) != 4:
                bad.append(f"{where}: launch <<<{cfg}>>> does not give all four of grid, block, shared memory, stream")
            elif parts[3] in ("0", "nullptr", "NULL", "cudaStreamLegacy", "cudaStreamPerThread") or not re.search(
                    r"stream|\bst\b|STREAM", parts[3]):
                bad.append(f"{where}: launch on stream '{parts[3]}', not the context's stream")
            if not re.match(r"\s*CCN_CUDA_LAUNCHED\(\);", rest):
                bad.append(f"{where}: the launch is not followed by CCN_CUDA_LAUNCHED()")
    assert not bad, "\n".join(bad)


def test_no_synchronous_default_stream_copies():
    bad = []
    for f, text in sources().items():
        t = strip_comments(text)
        for m in SYNC_COPIES.finditer(t):
            bad.append(f"native/cuda/{f}:{line_of(t, m.start())}: {m.group(0)}...) runs on the legacy default "
                       "stream; use the Async form on the context's stream")
    assert not bad, "\n".join(bad)


def test_every_cuda_call_is_checked():
    seen = Counter()
    bad = []
    for f, text in sources().items():
        t = strip_comments(text)
        for m in re.finditer(r"\b(cuda[A-Z]\w*)\s*\(", t):
            call = m.group(1)
            before = t[max(0, m.start() - 16):m.start()]
            if before.rstrip().endswith("CCN_CUDA_CHECK("):
                continue
            if call in ("cudaError_t",):
                continue
            seen[(f, call)] += 1
            if seen[(f, call)] > UNCHECKED_OK.get((f, call), 0):
                bad.append(f"native/cuda/{f}:{line_of(t, m.start())}: {call}(...) is not wrapped in CCN_CUDA_CHECK")
    assert not bad, "\n".join(bad)
