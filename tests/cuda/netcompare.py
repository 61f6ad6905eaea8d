"""Compare training runs of one net on two backends, with a tolerance measured on the CPU.

Two float32 runs of the same net on the CPU and the GPU differ by rounding (other summation
orders in GEMMs and reductions), and how far such differences grow over N steps depends on
the net. So the tolerance of every quantity is measured, not guessed:

    tolerance = max(floor, 10 x sensitivity)

where sensitivity is how far that quantity moves on the CPU after the same N steps under a
rounding-sized change, the larger of two: the input images of every minibatch nudged by one
ulp (``np.nextafter``), and every initial weight nudged by one ulp. The GPU rounds
differently in every layer, not only at the input; the weight nudge stands for that (with
the input nudge alone, AlexNet's conv5 bias increments differed from the CPU's by 12x their
input sensitivity on the CUDA simulator, after three steps, with gradients that agreed to
3e-7 after one).

The factor 10 can be raised per net (``factor=``), for a net shown to need it and with the
reason at the call. Today that is one net, layers-example.cfg (test_cuda_reference_nets.py). Its
conv32 and local32 layers have logistic outputs within ~1e-4 of 0.5 (initW 1e-5), which round
to a few levels, and a max pool picks among them. So the quantities upstream of the pool are
decided by near-ties: a one-ulp nudge flips one tie or none (conv32's increments move by ~1e-3
or by ~1e-7 on the CPU). The GPU's expf rounds one ulp away from glibc's in many elements at
once, so it flips several: on an H100 those quantities were 9.7-10.4x their one-flip
sensitivity after three steps, while every other quantity agreed to ~1e-7.

Quantities: each parameter's weights and momentum
increments (relative error ||a - b|| / ||b||) and the first value of each cost layer over all
steps (the summed log-probability; the error counts are integers that a near tie may flip).

    runs = train_runs(make, batches, steps=20, mini=32)   # make(device) -> ccn.Net
    failures, table = judge(runs)
    assert not failures, "\\n".join(failures)
"""

from __future__ import annotations

import numpy as np

FLOORS = {"w": 1e-4, "inc": 1e-3, "cost": 1e-4}  # relative; float32 after ~20 steps


def nudge(data):
    """The minibatch with its first matrix (the images) moved one ulp up; labels unchanged."""
    x = np.asarray(data[0], np.float32)
    return [np.nextafter(x, np.float32(np.inf)).astype(np.float32)] + list(data[1:])


def nudge_weights(net):
    """The net with every weight matrix moved one ulp up (returned for chaining)."""
    for p in net.params:
        w = np.asarray(net.get(p.name, "w"), np.float32)
        net.set(p.name, np.nextafter(w, np.float32(np.inf)).astype(np.float32))
    return net


def train(net, batches, steps: int, mini: int, nudged: bool = False) -> dict:
    """``steps`` training steps over ``batches`` (cycled); returns the quantities compared."""
    costs = []
    for k in range(steps):
        data = batches[k % len(batches)]
        if nudged:
            data = nudge(data)
        c = net.train_step(data, k / max(steps, 1), mini)
        costs.append([float(layer["values"][0]) for layer in c])
    out = {"cost": np.array(costs, np.float64)}
    for p in net.params:
        out[f"w/{p.name}"] = np.asarray(net.get(p.name, "w"), np.float64)
        out[f"inc/{p.name}"] = np.asarray(net.get(p.name, "inc"), np.float64)
    return out


def train_runs(make, batches, steps: int = 20, mini: int = 32, devices=("cpu", "cuda")) -> dict:
    """{"cpu": ..., "nudged": ... (CPU, inputs one ulp up), "nudged_w": ... (CPU, initial weights
    one ulp up), "cuda": ...}: same seed, same data."""
    runs = {d: train(make(d), batches, steps, mini) for d in devices}
    runs["nudged"] = train(make("cpu"), batches, steps, mini, nudged=True)
    runs["nudged_w"] = train(nudge_weights(make("cpu")), batches, steps, mini)
    return runs


def rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return float("inf")
    if not np.all(np.isfinite(a)):
        return float("inf")
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def sensitivity(ref: dict, *nudged: dict) -> dict:
    """Each quantity's largest relative move over the nudged runs."""
    return {k: max(rel(n[k], ref[k]) for n in nudged) for k in ref}


def tolerance(key: str, sens: dict, floors=None, factor: float = 10) -> float:
    floors = floors or FLOORS
    return max(floors[key.split("/")[0]], factor * sens.get(key, 0.0))


def compare(ref: dict, other: dict, sens: dict, floors=None, factor: float = 10) -> list[str]:
    """One line per quantity out of tolerance (empty: all agree)."""
    bad = []
    for k in ref:
        e, tol = rel(other[k], ref[k]), tolerance(k, sens, floors, factor)
        if not e <= tol:
            bad.append(f"{k}: relative error {e:.3g} > tolerance {tol:.3g} (1-ulp sensitivity {sens.get(k, 0):.3g})")
    return bad


def report(ref: dict, other: dict, sens: dict, floors=None, factor: float = 10) -> str:
    """Every quantity's error, tolerance and sensitivity, worst first (for logs)."""
    rows = sorted(((rel(other[k], ref[k]), tolerance(k, sens, floors, factor), sens.get(k, 0.0), k) for k in ref),
                  reverse=True)
    return "\n".join(f"{k:40} err {e:9.3g}  tol {t:9.3g}  sens {s:9.3g}" for e, t, s, k in rows)


def judge(runs: dict, factor: float = 10) -> tuple[list[str], str]:
    """train_runs' CUDA run against its CPU run, with the sensitivity of both nudged runs:
    (compare's failures, report's table)."""
    sens = sensitivity(runs["cpu"], runs["nudged"], runs["nudged_w"])
    return (compare(runs["cpu"], runs["cuda"], sens, factor=factor),
            report(runs["cpu"], runs["cuda"], sens, factor=factor))
