#!/usr/bin/env python3
"""Per-layer time of ccn's training step (forward, backward), to see where a step goes.

    python tools/layer_times.py [--net cifar10-18pct|alexnet|PATH.ini] [--mini 128] [--steps 3]
                                [--threads N]

Builds the net as tools/bench.py does (random data, the net's layer-params file), runs one
warm-up step, then times --steps training steps and prints, per layer, the mean forward and
backward milliseconds, the share of the step, and for layers that report their operations
(show-net's flops_per_case: real FLOPs, a multiply-add counting 2) the forward rate in GFLOP/s.
"Other" is the rest of the step: the SGD update, zeroing gradients, the Python call.
With --sgemm, the machine's SGEMM rate (tools/sgemm_rate.py, square 2048, all threads) is
measured just before and after the timed steps, and the conv layers' forward rate is given as
a percentage of the mean of the two.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tools"))


def main():
    import bench

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--net", default="cifar10-18pct")
    ap.add_argument("--mini", type=int, default=128)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--sgemm", action="store_true", help="also measure the machine's SGEMM rate")
    args = ap.parse_args()

    import ccn
    from ccn._native import core
    from ccn.netfiles import find_params_file

    if args.threads:
        core.set_threads(args.threads)
    if args.net in bench.NETS:
        path, shape, classes = bench.NETS[args.net]
        path = os.path.join(ROOT, path)
    else:
        path, shape, classes = args.net, (3, 32, 32), 10
    net = ccn.Net(path, find_params_file(path), {0: shape, 1: 1}, seed=1)
    x, y = bench.batch(shape, classes, args.mini)
    data = [x.reshape(args.mini, -1), y]
    net.train_step(data, 0.0, args.mini)  # warm-up: buffers sized, pages touched
    raw = net._net
    threads = args.threads or os.cpu_count()
    if args.sgemm:
        from sgemm_rate import sgemm_rate

        rates = [sgemm_rate(threads)]
    raw.reset_layer_times()
    c = time.thread_time()
    t = time.perf_counter()
    for _ in range(args.steps):
        net.train_step(data, 0.0, args.mini)
    step = (time.perf_counter() - t) / args.steps
    cpu_step = (time.thread_time() - c) / args.steps
    if args.sgemm:
        rates.append(sgemm_rate(threads))
    flops = {d["name"]: d["flops_per_case"] for d in raw.layers()}
    rows = raw.layer_times()
    print(f"{'layer':12} {'fwd ms':>9} {'bwd ms':>9} {'share':>6} {'fwd GFLOP/s':>12}")
    for name, f, b in rows:
        f, b = f / args.steps * 1e3, b / args.steps * 1e3
        rate = flops[name] * args.mini / (f * 1e-3) / 1e9 if flops[name] > 1e5 and f > 0 else None
        print(f"{name:12} {f:9.1f} {b:9.1f} {100 * (f + b) / (step * 1e3):5.1f}% "
              f"{'' if rate is None else f'{rate:12.1f}'}")
    other = step * 1e3 - sum((f + b) / args.steps * 1e3 for _, f, b in rows)
    print(f"{'other':12} {other:9.1f} {'':9} {100 * other / (step * 1e3):5.1f}%")
    print(f"step: {step * 1e3:.1f} ms (mean of {args.steps}, minibatch {args.mini})")
    # The calling thread's CPU time: with --threads 1 the whole step runs on it, and unlike
    # the wall times above it does not grow when other processes share the cores.
    print(f"step CPU, main thread: {cpu_step * 1e3:.1f} ms"
          + ("" if threads == 1 else f" (with {threads} threads only the main thread's share)"))
    if args.sgemm:
        ref = sum(rates) / 2
        types = {d["name"]: d["type"] for d in raw.layers()}
        conv = [(n, f / args.steps) for n, f, _ in rows if types[n] == "conv"]
        flop = sum(flops[n] * args.mini for n, _ in conv)
        secs = sum(f for _, f in conv)
        print(f"SGEMM {threads} thread(s): {rates[0]:.1f} before, {rates[1]:.1f} after (GFLOP/s); conv forward "
              f"{flop / secs / 1e9:.1f} GFLOP/s = {100 * flop / secs / 1e9 / ref:.0f}% of it")


if __name__ == "__main__":
    main()
