#!/usr/bin/env python3
"""Per-layer conv timings: the direct AVX-512 kernels against the im2col + GEMM path.

    python tools/conv_kernel_bench.py [--nets cifar10-18pct,alexnet] [--mini 128] [--reps 3]
                                      [--threads 1] [--layers conv2,conv3] [--pairs 2]

For every conv layer of the nets (geometry read from the layer-definition file and the
shapes ccn infers), a one-layer net is built twice, with CCN_CONV_KERNEL=gemm and =direct
(read at setup), and its forward and backward (dx when the layer's input is not data, dW,
biases) are timed on random data. Each measurement is the median over --reps passes; the
two kernels alternate --pairs times and the best of each is kept. With --threads 1 (the
default) times are the calling thread's CPU time (time.thread_time: robust against other
processes sharing the cores); with more threads, wall time. The last column says which
kernel CCN_CONV_KERNEL=auto picks for the layer.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tools"))


def conv_layers(path, shape):
    """(name, section text with inputs=data, input shape C x S x S, whether dx is needed) per conv layer."""
    import ccn

    net = ccn.Net(path, None, {0: shape, 1: 1}, init=False)
    shapes = {d["name"]: d for d in net._net.layers()}
    text = open(path).read()
    out = []
    sections, cur = {}, None
    for line in text.splitlines():
        s = line.split(";")[0].split("#")[0].strip()
        if s.startswith("["):
            cur = s[1:-1]
            sections[cur] = []
        elif cur and s:
            sections[cur].append(s)
    for name, lines in sections.items():
        kv = dict(tuple(x.strip() for x in ln.split("=", 1)) for ln in lines if "=" in ln)
        if kv.get("type") != "conv":
            continue
        src = kv["inputs"].strip()
        ins = net.layer(src).shape if src in shapes else shape
        keep = [ln for ln in lines if ln.split("=")[0].strip() not in ("inputs", "neuron", "initW", "initB")]
        body = "\n".join([f"[{name}]", "inputs=data"] + keep) + "\n"
        out.append((name, body, tuple(ins), src != "data"))
    return out


def time_layer(kernel, name, body, ins, dx, mini, reps, cpu):
    import numpy as np

    import ccn
    from ccn._native import core

    os.environ["CCN_CONV_KERNEL"] = kernel
    net = ccn.Net("<bench>", None, {0: ins}, layers_text="[data]\ntype=data\ndataIdx=0\n" + body, seed=1)
    if dx:
        net._net.set_data_grads(True)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((mini, int(np.prod(ins)))).astype(np.float32)
    clock = time.thread_time if cpu else time.perf_counter
    core.reset_conv_kernel_counts()
    net.forward({0: x}, train=True)
    G = rng.standard_normal(net.output(name).shape).astype(np.float32)
    net.backward({name: G})
    ran = "direct" if core.conv_kernel_counts()["direct_fprop"] else "gemm"
    f, b = [], []
    for _ in range(reps):
        t = clock()
        net.forward({0: x}, train=True)
        f.append(clock() - t)
        t = clock()
        net.backward({name: G})
        b.append(clock() - t)
    return statistics.median(f), statistics.median(b), ran


def main():
    import bench

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nets", default="cifar10-18pct,alexnet")
    ap.add_argument("--mini", type=int, default=128)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--pairs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--layers", default="", help="only these conv layers (comma list)")
    args = ap.parse_args()

    from ccn._native import core

    core.set_threads(args.threads)
    cpu = args.threads == 1
    if "direct-avx512" not in core.build_info()["conv_kernels"]:
        print("this CPU has no AVX-512F: only the GEMM kernel runs here")
        return
    print(f"minibatch {args.mini}, {args.threads} thread(s), ms per pass "
          f"({'calling thread CPU time' if cpu else 'wall time'}), best of {args.pairs} alternating pairs")
    print(f"{'net':14} {'layer':7} {'geometry':30} {'gemm fwd':>9} {'direct':>8} {'gemm bwd':>9} {'direct':>8} "
          f"{'speedup':>8} {'auto':>7}")
    for net_name in args.nets.split(","):
        path, shape, _ = bench.NETS[net_name]
        for name, body, ins, dx in conv_layers(os.path.join(ROOT, path), shape):
            if args.layers and name not in args.layers.split(","):
                continue
            best = {}
            for _ in range(args.pairs):
                for k in ("gemm", "direct"):
                    r = time_layer(k, name, body, ins, dx, args.mini, args.reps, cpu)
                    if k not in best or r[0] + r[1] < best[k][0] + best[k][1]:
                        best[k] = r
            _, _, auto = time_layer("auto", name, body, ins, dx, 2, 1, cpu)
            g, d = best["gemm"], best["direct"]
            kv = dict(ln.split("=", 1) for ln in body.splitlines()[1:] if "=" in ln and not ln.startswith("inputs"))
            kv = {k.strip(): v.strip() for k, v in kv.items()}
            geo = (f"{ins[0]}x{ins[1]}x{ins[2]} f{kv.get('filters')} k{kv.get('filterSize')} "
                   f"s{kv.get('stride', 1)} g{kv.get('groups', 1)}")
            ran = "" if d[2] == "direct" else " (direct fell back to gemm)"
            print(f"{net_name:14} {name:7} {geo:30} {g[0] * 1e3:9.1f} {d[0] * 1e3:8.1f} {g[1] * 1e3:9.1f} "
                  f"{d[1] * 1e3:8.1f} {(g[0] + g[1]) / (d[0] + d[1]):7.2f}x {auto:>7}{ran}")


if __name__ == "__main__":
    main()
