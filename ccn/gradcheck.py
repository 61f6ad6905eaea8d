"""Numerical gradient checks of a whole net, like cuda-convnet's ``--check-grads=1``.

For every weight matrix (and, on request, every data input) the analytic gradient of the
net's objective, sum over cost layers of coeff * cost, is compared with central finite
differences computed on the same float32 core. The relative error is
``||numeric - analytic|| / max(||numeric||, ||analytic||)`` over the checked entries; a
matrix passes when it is below the threshold (2%, the original's rule). Matrices larger
than ``samples`` entries are checked on a random subset of them.

Random numbers inside the net (dropout) depend only on (seed, step, layer, element), and
the step is held fixed, so every evaluation sees the same masks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import ConfigError
from .net import Net

THRESHOLD = 0.02


@dataclass
class GradCheckResult:
    name: str
    kind: str  # "weights", "biases" or "input"
    checked: int
    size: int
    rel_error: float
    passed: bool


def random_batch(net: Net, cases: int, rng: np.random.Generator) -> dict[int, np.ndarray]:
    """A random minibatch the net can eat: class indices for label inputs of cost layers,
    standard normal values for everything else."""
    layers = {l.name: l for l in net.layers}
    label_classes: dict[str, int] = {}
    for l in layers.values():
        if l.is_cost and l.type in ("cost.logreg",) and len(l.inputs) >= 2:
            label_classes[l.inputs[0]] = layers[l.inputs[1]].outputs
    data = {}
    for l in layers.values():
        if l.data_idx < 0:
            continue
        if l.name in label_classes:
            data[l.data_idx] = rng.integers(0, label_classes[l.name], size=(cases, 1)).astype(np.float32)
        else:
            data[l.data_idx] = rng.standard_normal((cases, l.outputs)).astype(np.float32)
    return data


def objective(net: Net) -> float:
    return float(sum(c["coeff"] * c["values"][0] for c in net.costs()))


def check_grads(net: Net, cases: int = 16, samples: int = 100, seed: int = 0, h: float = 1e-3,
                threshold: float = THRESHOLD, inputs: bool = False, data=None) -> list[GradCheckResult]:
    if not net.cost_layers():
        raise ConfigError(f"{net.layers_path}: the net has no cost layer, so there is no objective to check "
                          "gradients of.")
    rng = np.random.default_rng(seed)
    if data is None:
        data = random_batch(net, cases, rng)
    net._net.set_data_grads(inputs)
    net.forward(data, train=True)
    net._net.zero_param_grads()
    net.backward()
    results = []
    targets = [(p.name, "biases" if p.is_bias else "weights") for p in net.params]
    for name, kind in targets:
        analytic = net.get(name, "grad").astype(np.float64)
        w = net.get(name)
        flat = w.reshape(-1)
        idx = np.arange(flat.size) if flat.size <= samples else rng.choice(flat.size, samples, replace=False)
        num = np.empty(len(idx))
        for j, i in enumerate(idx):
            old = flat[i]
            flat[i] = old + h
            net.set(name, w)
            net.forward(data, train=True)
            fp = objective(net)
            flat[i] = old - h
            net.set(name, w)
            net.forward(data, train=True)
            fm = objective(net)
            flat[i] = old
            num[j] = (fp - fm) / (2 * h)
        net.set(name, w)
        results.append(_result(name, kind, num, analytic.reshape(-1)[idx], flat.size, threshold))
    if inputs:
        net.forward(data, train=True)
        net.backward()
        for l in net.layers:
            if l.data_idx < 0 or l.data_idx not in data:
                continue
            x = np.array(data[l.data_idx], dtype=np.float32)
            if x.shape[1] == 1 and np.all(x == np.round(x)):
                continue  # labels: not differentiable
            analytic = net.output_grad(l.name).astype(np.float64).reshape(-1)
            flat = x.reshape(-1)
            idx = np.arange(flat.size) if flat.size <= samples else rng.choice(flat.size, samples, replace=False)
            num = np.empty(len(idx))
            for j, i in enumerate(idx):
                old = flat[i]
                flat[i] = old + h
                net.forward({**data, l.data_idx: x}, train=True)
                fp = objective(net)
                flat[i] = old - h
                net.forward({**data, l.data_idx: x}, train=True)
                fm = objective(net)
                flat[i] = old
                num[j] = (fp - fm) / (2 * h)
            results.append(_result(l.name, "input", num, analytic[idx], flat.size, threshold))
    net._net.zero_param_grads()
    return results


def _result(name, kind, num, ana, size, threshold) -> GradCheckResult:
    denom = max(np.linalg.norm(num), np.linalg.norm(ana))
    err = 0.0 if denom == 0 else float(np.linalg.norm(num - ana) / denom)
    return GradCheckResult(name, kind, len(num), size, err, err < threshold)
