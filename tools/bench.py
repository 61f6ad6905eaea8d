#!/usr/bin/env python3
"""Training-step benchmark: ccn (CPU) against PyTorch CPU, same net, same machine, same run.

    python tools/bench.py [--nets cifar10-18pct,alexnet] [--mini 128] [--steps 5] [--threads N]
                          [--repeat R]

For each net, one subprocess times ccn's training step (forward, backward, update) and one
times the same net in PyTorch (built from the same layer-definition file, see torch_net()),
each after warm-up steps; each reports its median step time and its peak resident memory.
The table gives both times, the ratio ours/PyTorch (below 1.0 = ccn is faster) and both
peaks. Absolute times on shared machines are noise: read the ratios. With --repeat R the two
workers run alternately R times per net and each side's best median counts (the run least
disturbed by other processes); the times of every run are printed too.

Mapping to PyTorch (equal work, not bit-equal): conv -> Conv2d (with the extra bottom/right
zero padding that cuda-convnet's ceiling adds), pool -> max/avg pool with ceil_mode,
cmrnorm -> LocalResponseNorm, rnorm -> the same formula with a 2-D window, fc -> Linear,
dropout/dropout2 -> Dropout, softmax + cost.logreg -> log_softmax + nll_loss, neuron= ->
the activation. SGD with momentum 0.9 and weight decay, like ours.
"""

from __future__ import annotations

import argparse
import configparser
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NETS = {  # name -> (layer-definition file, image shape, classes)
    "cifar10-18pct": ("layer-defs/cifar10-18pct.ini", (3, 32, 32), 10),
    "cifar10-80sec": ("layer-defs/cifar10-80sec.ini", (3, 32, 32), 10),
    "alexnet": ("layer-defs/alexnet.ini", (3, 224, 224), 1000),
}


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def batch(shape, classes, mini, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((mini, *shape)).astype(np.float32)
    y = rng.integers(0, classes, size=(mini, 1)).astype(np.float32)
    return x, y


def time_steps(step, warmup, steps, cpu=None):
    """Wall seconds per step; with a list `cpu`, also the calling thread's CPU seconds per step
    (time.thread_time: with one thread the whole step runs there, and unlike wall time it does
    not grow when other processes share the cores)."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        c = time.thread_time()
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
        if cpu is not None:
            cpu.append(time.thread_time() - c)
    return times


def worker_ccn(net_name, mini, warmup, steps, threads):
    sys.path.insert(0, ROOT)
    import ccn
    from ccn._native import core
    from ccn.netfiles import find_params_file

    if threads:
        core.set_threads(threads)
    path, shape, classes = NETS[net_name]
    path = os.path.join(ROOT, path)
    net = ccn.Net(path, find_params_file(path), {0: shape, 1: 1}, seed=1)
    x, y = batch(shape, classes, mini)
    data = [x.reshape(mini, -1), y]
    cpu = []
    times = time_steps(lambda: net.train_step(data, 0.0, mini), warmup, steps, cpu)
    return {"times": times, "cpu_times": cpu, "peak_mib": peak_rss_mib()}


# ---- PyTorch twin -------------------------------------------------------------------
def torch_net(path, shape):
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    cp = configparser.ConfigParser(inline_comment_prefixes=(";", "#"), strict=False)
    cp.optionxform = str.lower
    with open(path) as f:
        cp.read_string(f.read())
    secs = {s: dict(cp[s]) for s in cp.sections()}

    def ints(v):
        return [int(t) for t in v.split(",")]

    def act(name):
        n = (name or "ident").split("[")[0]
        return {"ident": None, "relu": nn.ReLU(), "logistic": nn.Sigmoid(), "tanh": nn.Tanh(),
                "softrelu": nn.Softplus(), "abs": None}.get(n)

    class Twin(nn.Module):
        def __init__(self):
            super().__init__()
            self.order, self.mods, self.shapes, self.spec = [], nn.ModuleDict(), {}, {}
            done = set()

            def visit(n):
                if n in done:
                    return
                for i in [t.strip() for t in secs[n].get("inputs", "").split(",") if t.strip()]:
                    visit(i)
                done.add(n)
                self.order.append(n)

            for n in secs:
                visit(n)
            for n in self.order:
                s = secs[n]
                t = s["type"]
                ins = [i.strip() for i in s.get("inputs", "").split(",") if i.strip()]
                if t == "data":
                    self.shapes[n] = shape if s.get("dataidx", "0") == "0" else (1,)
                    continue
                inshape = self.shapes[ins[0]]
                if t == "conv":
                    c, f, st, p = ints(s["channels"])[0], ints(s["filtersize"])[0], ints(s.get("stride", "1"))[0], ints(s.get("padding", "0"))[0]
                    size = inshape[1]
                    m = 1 + math.ceil((2 * p + size - f) / st)
                    extra = (m - 1) * st + f - (size + 2 * p)
                    self.mods[n] = nn.Conv2d(c, int(s["filters"]), f, st, 0, groups=int(s.get("groups", "1")))
                    self.spec[n] = ("conv", p, extra)
                    self.shapes[n] = (int(s["filters"]), m, m)
                elif t == "pool":
                    k, st = int(s["sizex"]), int(s.get("stride", "1"))
                    size = inshape[1]
                    o = math.ceil((size - k) / st) + 1
                    self.spec[n] = ("pool", s["pool"], k, st)
                    self.shapes[n] = (inshape[0], o, o)
                elif t in ("cmrnorm", "rnorm"):
                    size = int(s.get("size", s.get("sizex", "5")))
                    self.spec[n] = (t, size)
                    self.shapes[n] = inshape
                elif t == "fc":
                    fan_in = sum(math.prod(self.shapes[i]) for i in ins)
                    self.mods[n] = nn.Linear(fan_in, int(s["outputs"]))
                    self.spec[n] = ("fc",)
                    self.shapes[n] = (int(s["outputs"]),)
                elif t in ("dropout", "dropout2"):
                    self.spec[n] = ("dropout",)
                    self.shapes[n] = inshape
                elif t == "softmax":
                    self.spec[n] = ("softmax",)
                    self.shapes[n] = inshape
                elif t == "cost.logreg":
                    self.spec[n] = ("logreg",)
                    self.shapes[n] = (1,)
                elif t == "neuron":
                    self.spec[n] = ("neuron",)
                    self.shapes[n] = inshape
                else:
                    raise SystemExit(f"bench: no PyTorch twin for layer type {t} ({n})")
                self.spec[n] = self.spec[n] + (ins, act(s.get("neuron")))

        def forward(self, x, y):
            vals = {}
            loss = None
            for n in self.order:
                if n not in self.spec:
                    vals[n] = x if self.shapes[n] != (1,) else y
                    continue
                sp = self.spec[n]
                kind, ins, a = sp[0], sp[-2], sp[-1]
                v = vals[ins[0]] if ins else None
                if kind == "conv":
                    p, extra = sp[1], sp[2]
                    v = F.pad(v, (p, p + extra, p, p + extra))
                    v = self.mods[n](v)
                elif kind == "pool":
                    _, how, k, st = sp[:4]
                    v = (F.max_pool2d if how == "max" else F.avg_pool2d)(v, k, st, ceil_mode=True)
                elif kind == "cmrnorm":
                    v = F.local_response_norm(v, sp[1], alpha=0.001, beta=0.75, k=1.0)
                elif kind == "rnorm":
                    size = sp[1]
                    d = F.avg_pool2d(v * v, size, 1, padding=size // 2, count_include_pad=True)
                    d = d[..., : v.shape[2], : v.shape[3]]
                    v = v / (1.0 + 0.001 * d) ** 0.75
                elif kind == "fc":
                    v = self.mods[n](torch.cat([vals[i].flatten(1) for i in ins], 1))
                elif kind == "dropout":
                    v = F.dropout(v, 0.5, self.training)
                elif kind == "softmax":
                    v = F.log_softmax(v, 1)  # fused with the nll below
                elif kind == "logreg":
                    loss = F.nll_loss(vals[ins[1]], vals[ins[0]].long().view(-1), reduction="sum")
                    continue
                if a is not None:
                    v = a(v)
                vals[n] = v
            return loss

    return Twin()


def worker_torch(net_name, mini, warmup, steps, threads):
    import torch

    if threads:
        torch.set_num_threads(threads)
    path, shape, classes = NETS[net_name]
    model = torch_net(os.path.join(ROOT, path), shape)
    opt = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9, weight_decay=0.0005)
    x, y = batch(shape, classes, mini)
    x, y = torch.from_numpy(x), torch.from_numpy(y)

    def step():
        opt.zero_grad(set_to_none=False)
        loss = model(x, y)
        loss.backward()
        opt.step()

    cpu = []
    times = time_steps(step, warmup, steps, cpu)
    return {"times": times, "cpu_times": cpu, "peak_mib": peak_rss_mib(), "torch": torch.__version__,
            "threads": torch.get_num_threads()}


def run_worker(kind, net, args):
    cmd = [sys.executable, __file__, "--worker", kind, "--nets", net, "--mini", str(args.mini),
           "--steps", str(args.steps), "--warmup", str(args.warmup), "--threads", str(args.threads)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        return {"error": (r.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nets", default="cifar10-18pct,alexnet")
    ap.add_argument("--mini", type=int, default=128)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="0 = all cores")
    ap.add_argument("--repeat", type=int, default=1, help="alternate the two workers this many times")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument("--worker", choices=["ccn", "torch"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        fn = worker_ccn if args.worker == "ccn" else worker_torch
        print(json.dumps(fn(args.nets, args.mini, args.warmup, args.steps, args.threads)))
        return
    try:
        import torch  # noqa: F401

        have_torch = not args.no_torch
    except ImportError:
        have_torch = False
        print("PyTorch is not installed (pip install torch==2.13.0): timing ccn alone.")
    def best(runs):  # the run with the lowest median step time (errors only if all failed)
        ok = [r for r in runs if r and "times" in r]
        return min(ok, key=lambda r: statistics.median(r["times"])) if ok else runs[-1]

    def med(r, key="times"):  # one run's median, for the per-run lines
        return f"{statistics.median(r[key]):.3f}" if r and key in r else "-"

    def best_cpu(runs):  # the lowest median main-thread CPU time of the runs (nan: none)
        got = [statistics.median(r["cpu_times"]) for r in runs if r and "cpu_times" in r]
        return min(got) if got else float("nan")

    rows = []
    rows_runs = {}
    for net in args.nets.split(","):
        ours_runs, peer_runs = [], []
        for _ in range(max(1, args.repeat)):
            ours_runs.append(run_worker("ccn", net, args))
            peer_runs.append(run_worker("torch", net, args) if have_torch else None)
        if args.repeat > 1:
            print(f"{net}: ccn runs {[med(r) for r in ours_runs]}, torch runs {[med(r) for r in peer_runs]}")
            if args.threads == 1:
                print(f"{net}: main-thread CPU s, ccn runs {[med(r, 'cpu_times') for r in ours_runs]}, "
                      f"torch runs {[med(r, 'cpu_times') for r in peer_runs]}")
        rows.append((net, best(ours_runs), best(peer_runs) if have_torch else None))
        rows_runs[net] = (ours_runs, peer_runs)
    print(f"\nTraining step, minibatch {args.mini}, median of {args.steps} after {args.warmup} warm-up "
          f"(threads: {args.threads or os.cpu_count()})")
    print(f"{'net':16} {'ccn s':>9} {'torch s':>9} {'ratio':>7} {'ccn MiB':>9} {'torch MiB':>10}")
    out = []
    for net, ours, peer in rows:
        o = statistics.median(ours["times"]) if "times" in ours else float("nan")
        p = statistics.median(peer["times"]) if peer and "times" in peer else float("nan")
        ratio = o / p if p == p and o == o else float("nan")
        print(f"{net:16} {o:9.3f} {p:9.3f} {ratio:7.2f} {ours.get('peak_mib', float('nan')):9.0f} "
              f"{(peer or {}).get('peak_mib', float('nan')):10.0f}")
        for who, r in (("ccn", ours), ("torch", peer)):
            if r and "error" in r:
                print(f"  {who} failed on {net}: {r['error']}")
        if args.threads == 1 and "cpu_times" in ours:
            # One thread: the step's CPU time, robust against other processes on the cores.
            oc, pc = best_cpu(rows_runs[net][0]), best_cpu(rows_runs[net][1])
            print(f"{'':16} main-thread CPU s: ccn {oc:.3f}, torch {pc:.3f}, ratio {oc / pc if pc == pc else float('nan'):.2f}")
        out.append({"net": net, "ccn": ours, "torch": peer, "ratio": ratio})
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
