"""Rewrite one .cu file into C++ for the CUDA simulator (tools/cudasim/README.md).

    python3 tools/cudasim/transform.py native/cuda/pool.cu build/sim/gen/pool.cpp native/cuda/pool.cu

Every launch `kernel<<<grid, block[, smem[, stream]]>>>(args);` becomes
`ccnsim_launch("kernel", __FILE__, __LINE__, fibers, grid, block, smem, stream, kernel, args);`
with the original text of each part kept, newlines included, so every line keeps its number
(compiler messages and the file:line of ccn's CUDA errors point into the .cu file). `fibers`
is true for a kernel that reaches __syncthreads() (syncing_functions); the runtime stops with
a message if a kernel launched without fibers calls it after all. The third argument names
the file in #line (the path ccn's errors show). Each `__shared__` declaration also registers
its memory with the runtime (_shared_decls). Anything else in the file is left as it is.
"""

import os
import re
import sys


def _skip_back_ws(s, i):
    while i >= 0 and s[i].isspace():
        i -= 1
    return i


def _kernel_start(s, end):
    """Start of the kernel expression that ends just before index `end` (exclusive): a name,
    possibly qualified (a::b) and with template arguments (k<float, 3>)."""
    i = _skip_back_ws(s, end - 1)
    if s[i] == ">":  # template arguments: back to the matching '<'
        i = _skip_back_ws(s, _matching(s, i, "><", step=-1) - 1)
    while i >= 0 and (s[i].isalnum() or s[i] in "_:"):
        i -= 1
    return i + 1


def _split_top(text, sep=","):
    """Split at separators outside (), [] and {}. Template angle brackets are not tracked: no
    launch configuration in ccn holds a template argument list with a comma."""
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts


def _matching(s, i, pair="()", step=1):
    """Index of the bracket closing the one at s[i] (pair: the opening and closing characters;
    step -1 walks backwards, e.g. pair "><" from a template argument list's '>')."""
    depth = 0
    for j in range(i, len(s) if step > 0 else -1, step):
        if s[j] == pair[0]:
            depth += 1
        elif s[j] == pair[1]:
            depth -= 1
            if depth == 0:
                return j
    raise ValueError(f"unbalanced {pair} in the source")


_KEYWORDS = {"for", "if", "while", "switch", "catch", "return", "sizeof", "do", "else"}


def _bodies(src):
    """{function name: its body text} for every function defined in src (a name followed by a
    parameter list and a brace-enclosed body)."""
    out = {}
    for m in re.finditer(r"\b([A-Za-z_]\w*)\s*\(", src):
        if m.group(1) in _KEYWORDS:
            continue
        j = _matching(src, m.end() - 1) + 1
        while j < len(src) and (src[j].isspace() or src.startswith("const", j)):
            j += 5 if src.startswith("const", j) else 1
        if j >= len(src) or src[j] != "{":
            continue
        out[m.group(1)] = out.get(m.group(1), "") + src[j:_matching(src, j, "{}") + 1]
    return out


def syncing_functions(src):
    """Names of the functions that reach __syncthreads(), directly or through a call to one
    that does (a kernel among them runs its blocks' threads as fibers)."""
    bodies = _bodies(src)
    sync = {n for n, b in bodies.items() if re.search(r"\b__syncthreads\s*\(", b)}
    grew = True
    while grew:
        grew = False
        for n, b in bodies.items():
            if n not in sync and any(re.search(rf"\b{re.escape(f)}\s*[(<]", b) for f in sync):
                sync.add(n)
                grew = True
    return sync


_SHARED = re.compile(r"__shared__\s+([^;=(){}]+?)\s+(\w+)((?:\s*\[[^\]]*\])*)\s*;")


def _shared_decls(src):
    """`__shared__ T name[N];` -> `static T name[N]; ccnsim_shared(name, sizeof(name));` (on the
    same line): the runtime fills block-shared memory with NaN bytes before each block, as a
    GPU leaves it holding whatever was there."""
    def one(m):
        t, name, dims = m.group(1), m.group(2), m.group(3)
        addr = name if dims.strip() else f"&{name}"
        return f"static {t} {name}{dims}; ccnsim_shared({addr}, sizeof({name}));"

    return _SHARED.sub(one, src)


def transform(src, shown_path):
    sync = syncing_functions(src)
    src = _shared_decls(src)
    out, pos, count = [], 0, 0
    while True:
        a = src.find("<<<", pos)
        if a < 0:
            break
        b = src.find(">>>", a)
        if b < 0:
            raise ValueError(f"{shown_path}: '<<<' without '>>>'")
        k0 = _kernel_start(src, a)
        kernel = src[k0:a]
        cfg = _split_top(src[a + 3:b])
        if not 2 <= len(cfg) <= 4:
            raise ValueError(f"{shown_path}: a launch configuration needs 2 to 4 parts: <<<{src[a + 3:b]}>>>")
        cfg += ["0"] * (4 - len(cfg))
        p = b + 3
        while src[p].isspace():
            p += 1
        if src[p] != "(":
            raise ValueError(f"{shown_path}: no argument list after a launch of {kernel.strip()}")
        q = _matching(src, p)
        args = src[p + 1:q]
        name = re.sub(r"\s+", "", kernel)
        fibers = "true" if re.sub(r"<.*", "", name).split("::")[-1] in sync else "false"
        call = (f'ccnsim_launch("{name}", __FILE__, __LINE__, {fibers}, {cfg[0]}, {cfg[1]}, {cfg[2]}, {cfg[3]}, '
                f"{kernel}" + (f", {args}" if args.strip() else "") + ")")
        out.append(src[pos:k0])
        out.append(call)
        pos = q + 1
        count += 1
    out.append(src[pos:])
    header = f'#include <cuda_runtime.h>\n#line 1 "{shown_path}"\n'
    return header + "".join(out), count


def main(argv):
    if len(argv) != 4:
        sys.exit("usage: transform.py IN.cu OUT.cpp SHOWN_PATH")
    with open(argv[1], encoding="utf-8") as f:
        src = f.read()
    text, _ = transform(src, argv[3])
    tmp = argv[2] + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, argv[2])


if __name__ == "__main__":
    main(sys.argv)
