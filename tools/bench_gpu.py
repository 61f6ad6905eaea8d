#!/usr/bin/env python3
"""GPU benchmark: an AlexNet-like training step at minibatch 128 in ccn (device="cuda") and
the same step in PyTorch on the same GPU, plus the conv kernels alone against cuDNN.

    python tools/bench_gpu.py [--mini 128] [--steps 10] [--json out.json]

Two ccn step times, each the median over --steps steps after warm-up, GPU synchronised:
  - "ccn": the step as `ccn train` runs it: minibatch k+1 is handed to prefetch() (copied to
    pinned memory and on to the GPU) while step k computes; timed over runs of --steps
    steps, synchronised at the end of each run. The ratio column uses this one.
  - "ccn+copy": train_step() given the minibatch, synchronised after each step, so the copy
    of the minibatch to the GPU is inside the step.
PyTorch's step (its input already on the GPU) is synchronised after each step. ccn's
train_step returns once the costs are known (end of the forward pass) while the backward
pass and the update still run, hence net.synchronize(). If the AlexNet-like net cannot run
on the GPU (a layer without CUDA code, no cuBLAS), that row says why; an fc-only net of the
same classifier size is timed on both sides as well. The AlexNet-like net's step is also
broken down (phases, then layers). Prints a short table last.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tools"))

ALEXNET = """
[data]
type=data
dataIdx=0
[labels]
type=data
dataIdx=1
[conv1]
type=conv
inputs=data
channels=3
filters=64
filterSize=11
stride=4
padding=2
initW=0.01
neuron=relu
[pool1]
type=pool
pool=max
inputs=conv1
channels=64
sizeX=3
stride=2
[rnorm1]
type=cmrnorm
inputs=pool1
channels=64
size=5
[conv2]
type=conv
inputs=rnorm1
channels=64
filters=192
filterSize=5
padding=2
initW=0.01
neuron=relu
[pool2]
type=pool
pool=max
inputs=conv2
channels=192
sizeX=3
stride=2
[rnorm2]
type=cmrnorm
inputs=pool2
channels=192
size=5
[conv3]
type=conv
inputs=rnorm2
channels=192
filters=384
filterSize=3
padding=1
initW=0.01
neuron=relu
[conv4]
type=conv
inputs=conv3
channels=384
filters=256
filterSize=3
padding=1
initW=0.01
neuron=relu
[conv5]
type=conv
inputs=conv4
channels=256
filters=256
filterSize=3
padding=1
initW=0.01
neuron=relu
[pool3]
type=pool
pool=max
inputs=conv5
channels=256
sizeX=3
stride=2
[fc6]
type=fc
inputs=pool3
outputs=4096
initW=0.005
neuron=relu
[drop6]
type=dropout2
inputs=fc6
[fc7]
type=fc
inputs=drop6
outputs=4096
initW=0.005
neuron=relu
[drop7]
type=dropout2
inputs=fc7
[fc8]
type=fc
inputs=drop7
outputs=1000
initW=0.01
[probs]
type=softmax
inputs=fc8
[logprob]
type=cost.logreg
inputs=labels,probs
"""

MLP = """
[data]
type=data
dataIdx=0
[labels]
type=data
dataIdx=1
[fc6]
type=fc
inputs=data
outputs=4096
initW=0.005
neuron=relu
[fc7]
type=fc
inputs=fc6
outputs=4096
initW=0.005
neuron=relu
[fc8]
type=fc
inputs=fc7
outputs=1000
initW=0.01
[probs]
type=softmax
inputs=fc8
[logprob]
type=cost.logreg
inputs=labels,probs
"""


def params_text(layers: str) -> str:
    import configparser

    cp = configparser.ConfigParser(strict=False)
    cp.optionxform = str
    cp.read_string(layers)
    out = []
    for s in cp.sections():
        t = cp[s]["type"]
        if t in ("conv", "fc"):
            out.append(f"[{s}]\nepsW=0.01\nepsB=0.02\nmomW=0.9\nmomB=0.9\nwc=0.0005\n")
        elif t in ("cmrnorm", "rnorm"):
            out.append(f"[{s}]\nscale=0.001\npow=0.75\n")
        elif t.startswith("cost."):
            out.append(f"[{s}]\ncoeff=1\n")
    return "\n".join(out)


def median_ms(step, warmup, steps, sync=None):
    for _ in range(warmup):
        step()
    if sync:
        sync()
    ts = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        if sync:
            sync()
        ts.append(time.perf_counter() - t)
    return 1000 * statistics.median(ts)


def time_ccn(layers, shape, mini, warmup, steps, profile=False):
    import numpy as np

    import ccn

    net = ccn.Net("bench.ini", "bench-params.ini", {0: shape, 1: 1}, seed=1, layers_text=layers,
                  params_text=params_text(layers), device="cuda")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((mini, int(np.prod(shape)))).astype(np.float32)
    y = rng.integers(0, 1000, (mini, 1)).astype(np.float32)
    # synchronize: wait for the backward pass and the update too, not only the forward pass
    with_copy = median_ms(lambda: net.train_step([x, y], 0.0, mini), warmup, steps, net.synchronize)

    def run():  # as ccn train does it: the next minibatch is staged while this step computes
        net.prefetch([x, y])  # (the first copy overlaps nothing, as at the start of a data batch)
        for k in range(steps):
            net.train_step(None, 0.0, mini)
            if k + 1 < steps:
                net.prefetch([x, y])
        net.synchronize()

    pipelined = median_ms(run, 1, 3) / steps
    mib = net._net.device_bytes / 2**20
    if profile:
        profile_ccn(net, x, y, mini)
    return pipelined, with_copy, mib


def profile_ccn(net, x, y, mini):
    """Where ccn's step goes: the phases one by one, and each layer (CCN_CUDA_LAYER_TIMES=1:
    the GPU is waited for around every layer)."""
    ph = {"copy+fwd": [], "bwd": [], "update": []}
    for _ in range(3):
        t = time.perf_counter()
        net.forward([x, y], train=True)
        net.synchronize()
        t1 = time.perf_counter()
        net.backward()
        net.synchronize()
        t2 = time.perf_counter()
        net.update(0.0, mini)
        net.synchronize()
        t3 = time.perf_counter()
        for k, v in zip(ph, (t1 - t, t2 - t1, t3 - t2)):
            ph[k].append(1000 * v)
    old = os.environ.get("CCN_CUDA_LAYER_TIMES")
    os.environ["CCN_CUDA_LAYER_TIMES"] = "1"
    try:
        net._net.reset_layer_times()
        reps = 3
        for _ in range(reps):
            net.train_step([x, y], 0.0, mini)
        net.synchronize()
    finally:  # later timings must not wait around every layer
        if old is None:
            del os.environ["CCN_CUDA_LAYER_TIMES"]
        else:
            os.environ["CCN_CUDA_LAYER_TIMES"] = old
    rows = [(n, 1000 * f / reps, 1000 * b / reps) for n, f, b in net._net.layer_times() if f or b]
    print("ccn phases, each waited for (ms): " + ", ".join(f"{k} {statistics.median(v):.2f}" for k, v in ph.items()))
    print(f"ccn layers, GPU waited for around each (ms per step; sum fwd {sum(r[1] for r in rows):.2f}, "
          f"bwd {sum(r[2] for r in rows):.2f}):")
    for n, f, b in sorted(rows, key=lambda r: -(r[1] + r[2])):
        print(f"  {n:10} fwd {f:7.2f}  bwd {b:7.2f}")


def time_torch(layers, shape, mini, warmup, steps):
    import torch

    from bench import torch_net

    with tempfile.NamedTemporaryFile("w", suffix=".ini", delete=False) as f:
        f.write(layers)
    model = torch_net(f.name, shape).cuda()
    os.unlink(f.name)
    opt = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9, weight_decay=0.0005)
    x = torch.randn(mini, *shape, device="cuda")
    if len(shape) == 1:
        x = x.view(mini, -1)
    y = torch.randint(0, 1000, (mini, 1), device="cuda").float()

    def step():
        opt.zero_grad(set_to_none=False)
        model(x, y).backward()
        opt.step()

    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    ms = median_ms(step, warmup, steps, torch.cuda.synchronize)
    return ms, torch.cuda.max_memory_allocated() / 2**20


def conv_kernels(mini, reps):
    """ccn's conv launchers (im2col + cuBLAS) against cuDNN, AlexNet's conv2 shape, fp32."""
    import numpy as np
    import torch

    from ccn._native import core

    N, C, S, F, fs, pad = mini, 64, 27, 192, 5, 2
    M = S + 2 * pad - fs + 1
    geo = dict(N=N, C=C, S=S, F=F, groups=1, Cf=C, fs=fs, stride=1, padding=pad, M=M)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, C * S * S)).astype(np.float32)
    W = (rng.standard_normal((C * fs * fs, F)) * 0.01).astype(np.float32)
    y = np.zeros((N, F * M * M), np.float32)
    sc = {k: float(v) for k, v in geo.items()}
    f = core.cuda_test_op("conv_fprop", {"x": x, "W": W, "y": y}, sc | {"accumulate": 0.0, "repeat": float(reps)})
    b = core.cuda_test_op("conv_bprop", {"x": x, "W": W, "dout": y, "din": np.zeros_like(x), "dW": np.zeros_like(W)},
                          sc | {"repeat": float(reps)})
    nu = min(32, N)  # the unfold alone, for up to 32 cases (a 150 MB col), scaled to the minibatch
    u = core.cuda_test_op("conv_unfold", {"x": x, "col": np.zeros((C * fs * fs, nu * M * M), np.float32)},
                          sc | {"n0": 0.0, "nc": float(nu), "repeat": float(reps)})
    tx = torch.randn(N, C, S, S, device="cuda", requires_grad=True)
    conv = torch.nn.Conv2d(C, F, fs, 1, pad, bias=False).cuda()
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = False
    out = conv(tx)
    g = torch.randn_like(out)
    tf = median_ms(lambda: conv(tx), 3, reps, torch.cuda.synchronize)
    tb = median_ms(lambda: torch.autograd.grad(conv(tx), (tx, conv.weight), g), 3, reps, torch.cuda.synchronize) - tf
    flops = 2.0 * N * F * M * M * C * fs * fs
    return {"ccn_fprop_ms": float(np.ravel(f["ms"])[0]), "ccn_bprop_ms": float(np.ravel(b["ms"])[0]), "torch_fprop_ms": tf,
            "torch_bprop_ms": tb, "gflop_fprop": flops / 1e9, "ccn_unfold_ms": float(np.ravel(u["ms"])[0]) * N / nu}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mini", type=int, default=128)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--json")
    args = ap.parse_args()
    import torch

    from ccn.errors import CcnError

    print(f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}", flush=True)
    rows, res = [], {}
    for name, layers, shape in (("alexnet-like", ALEXNET, (3, 224, 224)), ("fc-4096x2", MLP, (3 * 224 * 224,))):
        try:
            ours, ours_copy, ours_mib = time_ccn(layers, shape if len(shape) == 3 else (shape[0], 1, 1), args.mini,
                                                 args.warmup, args.steps, profile=name == "alexnet-like")
            note = ""
        except CcnError as e:
            ours, ours_copy, ours_mib, note = float("nan"), float("nan"), float("nan"), str(e).split(". ")[0][:110]
        try:
            theirs, theirs_mib = time_torch(layers, shape, args.mini, args.warmup, args.steps)
        except Exception as e:  # noqa: BLE001 - report and go on
            theirs, theirs_mib, note = float("nan"), float("nan"), note or f"torch: {e}"[:110]
        rows.append((name, ours, ours_copy, theirs, ours_mib, theirs_mib, note))
        res[name] = dict(ccn_ms=ours, ccn_copy_in_step_ms=ours_copy, torch_ms=theirs, ccn_mib=ours_mib,
                         torch_mib=theirs_mib, note=note)
        print(f"{name}: ccn {ours:.2f} ms (copy in the step: {ours_copy:.2f}), torch {theirs:.2f} ms {note}", flush=True)
    try:
        ck = conv_kernels(args.mini, args.steps)
    except Exception as e:  # noqa: BLE001
        ck = {"error": str(e)[:200]}
    res["conv2_kernels"] = ck
    print(f"\nTraining step, minibatch {args.mini}, fp32, median of {args.steps} (ms)")
    print(f"{'net':14} {'ccn':>9} {'ccn+copy':>9} {'torch':>9} {'ratio':>6} {'ccn MiB':>8} {'torch MiB':>9}  note")
    for name, o, oc, t, om, tm, note in rows:
        print(f"{name:14} {o:9.2f} {oc:9.2f} {t:9.2f} {o / t:6.2f} {om:8.0f} {tm:9.0f}  {note}")
    if "error" in ck:
        print(f"conv2 kernels: {ck['error']}")
    else:
        print(f"conv2 alone ({ck['gflop_fprop']:.0f} GFLOP fwd): ccn fprop {ck['ccn_fprop_ms']:.2f} / bprop "
              f"{ck['ccn_bprop_ms']:.2f} ms (its unfold {ck['ccn_unfold_ms']:.2f}); cuDNN fprop {ck['torch_fprop_ms']:.2f}"
              f" / bprop {ck['torch_bprop_ms']:.2f} ms")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
