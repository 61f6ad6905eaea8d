#!/usr/bin/env python3
"""A scaling model for data-parallel (and "one weird trick" hybrid) training, and a check of it.

    python tools/scaling_model.py                        # AlexNet table: 2..64 GPUs, NVLink and 100 Gb/s
    python tools/scaling_model.py --step-time 0.25 --params 61e6 --mini 128
    python tools/scaling_model.py --measure              # + predict and measure 2 ranks on this machine

The model (Krizhevsky 2014, "One weird trick for parallelizing convolutional neural
networks", reasons the same way):

* one device does a step of the global minibatch M in ``T1`` seconds; forward is 1/3 of
  it, backward 2/3. Synchronous data parallelism over N devices at the same global M
  (strong scaling) gives each device ``T1/N`` of compute (``--weak``: each device keeps
  M cases, compute stays T1 and the global minibatch grows N-fold);
* the gradient all-reduce is a ring: ``2(N-1)/N * B / bw + 2(N-1) * lat`` for B bytes of
  gradients, bw the per-device link bandwidth in one direction, lat the per-message latency.
  Within one machine the link is NVLink; beyond 8 devices a ring crosses machines and runs
  at the network's speed (the slowest link sets a ring's pace; a hierarchical all-reduce
  does about the same when each machine has one NIC);
* overlap: with per-layer all-reduces started as soon as backward produced a layer's
  gradient (as frameworks do), communication hides behind the rest of backward; the model
  lets a fraction ``--overlap`` (default 0.8) of the backward time hide it. ccn's current
  implementation does one all-reduce after backward (``--overlap 0``), plus two copies of
  the gradients into and out of the flat buffer;
* hybrid (the paper's scheme): conv layers data parallel (all-reduce only their gradients,
  AlexNet ~2.3 M of 61 M parameters), fc layers model parallel: each device holds 1/N of
  each fc layer, and the fc inputs/outputs of all M cases are exchanged instead of the fc
  weights: per step about ``2 * M * (9216 + 4096 + 4096) * 4 * (N-1)/N`` bytes (forward
  activations and backward gradients of the three fc inputs), which does not shrink with N
  but is ~10x smaller than the fc weights at M=128;
* efficiency = T1 / (N * T_N) (strong) or T1 / T_N (weak);
* for the measured check, the reduction's additions and ccn's two gradient copies are
  charged at the measured memory-copy speed.

Assumptions worth stating: compute scales perfectly (no smaller-GEMM slowdown at M/N cases
per device, which in reality hurts below ~32 cases); the links are dedicated; latency terms
use 2(N-1) messages (ring) with per-message latency 5 us NVLink / 10 us RDMA network.

``--measure``: on this machine a "device" is one CPU core (one thread). It times a step of a
net with 16.8 M parameters on one process with one thread (T1), measures the MPI
point-to-point bandwidth and latency between two ranks and the memcpy bandwidth, predicts
the 2-rank step with the model above (overlap 0, plus the gradient copies), then runs the
2-rank step with ccn.parallel and prints both.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

LINKS = {  # name -> (bandwidth bytes/s one direction per device, latency s, max devices in one machine)
    "NVLink (H100, 450 GB/s)": (450e9, 5e-6, 8),
    "100 Gb/s network": (12.5e9, 10e-6, 1 << 30),  # one device per machine: every hop is the network
}
ALEXNET_PARAMS = 61.0e6
ALEXNET_CONV_PARAMS = 2.3e6
ALEXNET_FC_INPUTS = 9216 + 4096 + 4096


def allreduce_s(n: int, nbytes: float, bw: float, lat: float) -> float:
    return 0.0 if n <= 1 else 2 * (n - 1) / n * nbytes / bw + 2 * (n - 1) * lat


def link_for(n: int, name: str):
    bw, lat, per_machine = LINKS[name]
    if n > per_machine:  # the ring crosses machines: the network sets the pace
        return LINKS["100 Gb/s network"][:2]
    return bw, lat


def predict(n: int, t1: float, params: float, mini: int, link: str, overlap: float, weak: bool,
            hybrid: bool = False, copy_bw: float | None = None) -> tuple[float, float]:
    """(step time, efficiency) at n devices."""
    bw, lat = link_for(n, link)
    compute = t1 if weak else t1 / n
    backward = compute * 2 / 3
    if hybrid:
        m = mini * (n if weak else 1)
        comm = allreduce_s(n, ALEXNET_CONV_PARAMS * 4, bw, lat)
        comm += 2 * m * ALEXNET_FC_INPUTS * 4 * (n - 1) / n / bw + 6 * (n - 1) * lat
    else:
        comm = allreduce_s(n, params * 4, bw, lat)
    if copy_bw and n > 1:  # ccn's copies into and out of the flat buffer, and the reduction's additions
        comm += 2 * params * 4 / copy_bw + (n - 1) / n * params * 4 / copy_bw
    step = compute + max(0.0, comm - overlap * backward)
    eff = (t1 / step) if weak else t1 / (n * step)
    return step, eff


def table(t1: float, params: float, mini: int, overlap: float, weak: bool) -> None:
    print(f"single device: {t1 * 1000:.1f} ms per step of {mini} cases; {params / 1e6:.1f} M parameters = "
          f"{params * 4 / 1e6:.0f} MB of gradients per step; overlap {overlap:.0%} of backward; "
          f"{'weak' if weak else 'strong'} scaling")
    print(f"{'devices':>7}  {'link':<26} {'data parallel':>22}  {'hybrid (1 weird trick)':>24}")
    for link in LINKS:
        for n in (2, 4, 8, 16, 32, 64):
            dp = predict(n, t1, params, mini, link, overlap, weak)
            hy = predict(n, t1, params, mini, link, overlap, weak, hybrid=True)
            where = link if n <= LINKS[link][2] else link + " *"
            print(f"{n:>7}  {where:<26} {dp[0] * 1000:>9.1f} ms {dp[1]:>7.0%}    {hy[0] * 1000:>9.1f} ms "
                  f"{hy[1]:>7.0%}")
    print("* more devices than one machine holds: the ring runs at the network's 100 Gb/s")


# ---- measurement on this machine ----------------------------------------------------------
NET = """
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
filters=32
filterSize=5
padding=2
stride=1
initW=0.01
neuron=relu
[pool1]
type=pool
pool=max
inputs=conv1
sizeX=2
stride=2
channels=32
[fc1]
type=fc
inputs=pool1
outputs=2048
initW=0.01
neuron=relu
[fc2]
type=fc
inputs=fc1
outputs=10
initW=0.01
[probs]
type=softmax
inputs=fc2
[logprob]
type=cost.logreg
inputs=labels,probs
"""
PARAMS = "".join(f"[{l}]\nepsW=0.001\nepsB=0.002\nmomW=0.9\nmomB=0.9\nwc=0.0005\n" for l in ("conv1", "fc1", "fc2")) \
    + "[logprob]\ncoeff=1\n"


def _net():
    import ccn

    return ccn.Net("scaling.cfg", "scaling-params.cfg", data_dims={0: (3, 32, 32), 1: 1}, layers_text=NET,
                   params_text=PARAMS, seed=1)


def _data(mini):
    import numpy as np

    rng = np.random.default_rng(0)
    return [rng.standard_normal((mini, 3 * 32 * 32)).astype(np.float32),
            rng.integers(0, 10, (mini, 1)).astype(np.float32)]


def _time_steps(step, steps):
    step()  # warm-up
    t = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        t.append(time.perf_counter() - t0)
    t.sort()
    return t[len(t) // 2]


def worker(mini: int, steps: int) -> None:
    """Under mpiexec -n 2: link bandwidth/latency, then the real data-parallel step."""
    import numpy as np

    from ccn._native import core
    from ccn.parallel import DataParallelNet, init_world

    core.set_threads(1)
    world = init_world()
    comm, r = world.comm, world.rank
    peer = 1 - r
    out = {}
    for size, key in ((8, "lat"), (32 << 20, "bw")):
        a, b = np.ones(size // 4, np.float32), np.empty(size // 4, np.float32)
        comm.Barrier()
        reps = 200 if key == "lat" else 5
        t0 = time.perf_counter()
        for _ in range(reps):
            comm.Sendrecv(a, dest=peer, recvbuf=b, source=peer)
        dt = (time.perf_counter() - t0) / reps
        out[key] = dt if key == "lat" else size / dt
    net = _net()
    g = np.empty(net._net.grad_size, np.float32)
    t0 = time.perf_counter()
    for _ in range(5):
        net._net.read_grads(g)
    out["copy_bw"] = g.nbytes * 5 / (time.perf_counter() - t0)
    dp = DataParallelNet(net, world)
    data = _data(mini)
    comm.Barrier()
    out["step"] = _time_steps(lambda: dp.train_step(data, 0.0, mini), steps)
    buf = np.ones(net._net.grad_size, np.float32)
    out["allreduce"] = _time_steps(lambda: world.allreduce_sum(buf, "bench"), steps)
    out["params"] = int(net._net.grad_size)
    world.close()
    if r == 0:
        print("RESULT " + json.dumps(out), flush=True)


def measure(mini: int, steps: int) -> None:
    from ccn._native import core

    core.set_threads(1)
    net = _net()
    data = _data(mini)
    t1 = _time_steps(lambda: net.train_step(data, 0.0, mini), steps)
    exe = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or shutil.which("mpiexec")
    if exe is None:
        sys.exit("no mpiexec: pip install mpi4py mpich")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([exe, "-n", "2", sys.executable, __file__, "--worker", "--mini", str(mini), "--steps",
                        str(steps)], capture_output=True, text=True, env=env, timeout=600)
    line = next((l for l in r.stdout.splitlines() if l.startswith("RESULT ")), None)
    if r.returncode != 0 or line is None:
        sys.exit(f"the 2-rank run failed:\n{r.stdout}\n{r.stderr}")
    m = json.loads(line[7:])
    nbytes = m["params"] * 4
    LINKS["this machine (MPI shared memory)"] = (m["bw"], m["lat"], 2)
    pred, eff = predict(2, t1, m["params"], mini, "this machine (MPI shared memory)", 0.0, False, copy_bw=m["copy_bw"])
    print(f"\nthis machine, one core per rank: a net of {m['params'] / 1e6:.1f} M parameters ({nbytes / 1e6:.0f} MB of "
          f"gradients), minibatch {mini}")
    print(f"  measured: 1 process {t1 * 1000:.1f} ms/step; MPI link {m['bw'] / 1e9:.2f} GB/s, latency "
          f"{m['lat'] * 1e6:.1f} us; gradient copy {m['copy_bw'] / 1e9:.2f} GB/s; 2-rank all-reduce alone "
          f"{m['allreduce'] * 1000:.1f} ms (model: {allreduce_s(2, nbytes, m['bw'], m['lat']) * 1000:.1f} ms)")
    print(f"  2 ranks, predicted: {pred * 1000:.1f} ms/step (efficiency {eff:.0%})")
    print(f"  2 ranks, measured:  {m['step'] * 1000:.1f} ms/step (efficiency {t1 / (2 * m['step']):.0%})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--step-time", type=float, default=0.1,
                    help="single-device seconds per step (default 0.1, a guess for AlexNet at 128 on a recent GPU; "
                         "it was about 1.6 on the 2012 GTX 580)")
    ap.add_argument("--params", type=float, default=ALEXNET_PARAMS, help="parameters (gradient floats) per step")
    ap.add_argument("--mini", type=int, default=128, help="global minibatch (per device with --weak)")
    ap.add_argument("--overlap", type=float, default=0.8, help="fraction of backward that can hide communication")
    ap.add_argument("--weak", action="store_true", help="weak scaling: each device keeps --mini cases")
    ap.add_argument("--measure", action="store_true", help="also predict and measure 2 ranks on this machine")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        return worker(a.mini, a.steps)
    table(a.step_time, a.params, a.mini, a.overlap, a.weak)
    if a.measure:
        measure(64 if a.mini == 128 else a.mini, a.steps)


if __name__ == "__main__":
    main()
