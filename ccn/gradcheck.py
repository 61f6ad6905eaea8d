"""Numerical gradient checks of a whole net, like cuda-convnet's ``--check-grads=1``.

For every weight matrix (and, on request, every data input) the analytic gradient of the
net's objective, sum over cost layers of coeff * cost, is compared with central finite
differences computed on the same float32 core. The relative error is
``||numeric - analytic|| / max(||numeric||, ||analytic||)`` over the checked entries; a
matrix passes when it is below the threshold (2%, the original's rule). Matrices larger
than ``samples`` entries are checked on a random subset of them.

Finite differences in float32 cannot be trusted everywhere: where a slope is tiny next to the
objective, rounding swamps it, and where a ReLU or max-pooling kink lies inside the step, the
central difference averages two slopes (and a conv weight moves thousands of ReLU and
max-pooling units at once: the small kinks add up to a few per cent at a step of 1e-3). The
original reported both as failures. Here every entry is differenced at five steps, 6.25e-5 to
1.6e-2; each pair of neighbouring steps compares only the entries
whose differences pass the tests of ``_usable``, and a matrix for which no pair has enough of
them is UNSURE instead of PASS or FAIL.

Random numbers inside the net (dropout) depend only on (seed, step, layer, element), and
the step is held fixed, so every evaluation sees the same masks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import CcnRuntimeError, ConfigError
from .net import LABEL_COSTS, Net

THRESHOLD = 0.02


@dataclass
class GradCheckResult:
    name: str
    kind: str  # "weights", "biases" or "input"
    checked: int  # entries compared (the usable ones among those sampled)
    size: int
    rel_error: float
    passed: bool
    sampled: int = 0  # entries whose finite differences were taken
    unsure: bool = False  # too few usable entries to say PASS or FAIL

    @property
    def verdict(self) -> str:
        return "UNSURE" if self.unsure else "PASS" if self.passed else "FAIL"


def random_batch(net: Net, cases: int, rng: np.random.Generator) -> dict[int, np.ndarray]:
    """A random minibatch the net can eat: what each cost layer expects in its label input
    (class indices for logreg, one-hot rows for crossent, 0/1 for bce and dce), and uniform
    values in [0, 1) (the range of pixels) everywhere else."""
    layers = {l.name: l for l in net.layers}
    label_kind: dict[str, tuple[str, int]] = {}
    for l in layers.values():
        if l.is_cost and len(l.inputs) >= 2 and l.type in LABEL_COSTS:
            label_kind[l.inputs[0]] = (l.type, layers[l.inputs[1]].outputs)
    data = {}
    for l in layers.values():
        if l.data_idx < 0:
            continue
        kind, classes = label_kind.get(l.name, ("", 0))
        if kind == "cost.logreg":
            data[l.data_idx] = rng.integers(0, classes, size=(cases, 1)).astype(np.float32)
        elif kind == "cost.crossent":
            data[l.data_idx] = np.eye(l.outputs, dtype=np.float32)[rng.integers(0, l.outputs, size=cases)]
        elif kind in ("cost.bce", "cost.dce"):
            data[l.data_idx] = rng.integers(0, 2, size=(cases, l.outputs)).astype(np.float32)
        else:
            data[l.data_idx] = rng.random((cases, l.outputs), dtype=np.float32)
    return data


def objective(net: Net) -> float:
    return float(sum(c["coeff"] * c["values"][0] for c in net.costs()))


STEPS = (6.25e-5, 2.5e-4, 1e-3, 4e-3, 1.6e-2)  # finite-difference steps; each pair of neighbours is judged on its own
AGREE = 0.05  # central differences at the steps further apart than this (relative): resolved by neither
KINK = 0.1  # one-sided slopes differing by more than this part of the slope at the first step ...
SMOOTH = 0.25  # ... and not in proportion to the step (within this): a kink lies inside the step
FLOOR = 1e-3  # ... both tests relative to the entry, or to this fraction of the largest central difference
MIN_USABLE = 0.25  # fewer usable entries than this fraction (or than 3) in every pair: UNSURE


def _numeric(evaluate, flat, idx, h):
    """Central differences of evaluate() w.r.t. flat[idx] (flat is modified and restored), and
    the differences of the one-sided slopes, (f(x+h) - 2 f(x) + f(x-h)) / h."""
    f0 = evaluate()
    fp, fm = np.empty(len(idx)), np.empty(len(idx))
    for j, i in enumerate(idx):
        old = flat[i]
        flat[i] = old + h
        fp[j] = evaluate()
        flat[i] = old - h
        fm[j] = evaluate()
        flat[i] = old
    return (fp - fm) / (2 * h), (fp - 2 * f0 + fm) / h


def _close(a, b, rel, floor):
    return np.abs(a - b) <= rel * np.maximum(np.abs(a), np.abs(b)) + floor


def _usable(runs, steps):
    """Entries whose central differences can be trusted. At every step they must agree with the
    first step's: float32 rounding does not swamp them, and no kink (ReLU, max pooling) lies
    between the steps. A kink inside even the smallest step shows another way: the one-sided
    slopes differ by a sizeable part of the slope, and by about as much at every step, where a
    smooth function's differ in proportion to the step."""
    floor = FLOOR * max(float(np.max(np.abs(num))) for num, _ in runs)
    num0, bend0 = runs[0]
    ok = np.ones(len(num0), bool)
    bent = np.abs(bend0) > KINK * np.abs(num0) + floor
    for h, (num, bend) in zip(steps, runs):
        ok &= _close(num, num0, AGREE, floor) & ~(bent & ~_close(bend, bend0 * (h / steps[0]), SMOOTH, floor))
    return ok


def _check(name, kind, evaluate, flat, analytic, rng, samples, steps, threshold) -> GradCheckResult:
    """Compare analytic and central-difference slopes of the sampled entries. Each pair of
    neighbouring steps is judged on its own, over the entries it finds usable (see _usable):
    no one step serves everywhere in float32, as a small one drowns in rounding where the
    objective is large and a large one crosses kinks and bends with curvature. A pair with
    enough usable entries (some of them nonzero, where any sampled entry is) that agree: PASS;
    one whose entries disagree: FAIL; neither (too few at every pair): UNSURE. Which entries
    are usable depends on the finite differences alone, never on the analytic gradient, so a
    wrong gradient cannot choose the entries it is judged on."""
    idx = np.arange(flat.size) if flat.size <= samples else rng.choice(flat.size, samples, replace=False)
    ana = analytic[idx]
    runs = [_numeric(evaluate, flat, idx, h) for h in steps]
    need = max(min(3, len(idx)), MIN_USABLE * len(idx))
    results, decided = [], []
    for k in range(max(1, len(steps) - 1)):
        pair_steps, pair = steps[k:k + 2], runs[k:k + 2]
        usable = _usable(pair, pair_steps)
        num = pair[0][0]
        r = _result(name, kind, num[usable], ana[usable], flat.size, threshold)
        r.sampled = len(idx)
        results.append(r)
        # entries zero both ways (a dead unit, weights that see only padding) agree but cannot be all
        nonzero = (num != 0) | (ana != 0)
        if r.checked >= need and (np.any(usable & nonzero) or not np.any(nonzero)):
            decided.append(r)
    for verdict in (True, False):  # a pair that passes, else one that fails
        found = [r for r in decided if r.passed == verdict]
        if found:
            return min(found, key=lambda r: r.rel_error) if verdict else max(found, key=lambda r: r.checked)
    best = max(results, key=lambda r: r.checked)
    best.unsure, best.passed = True, False
    return best


def check_grads(net: Net, cases: int = 16, samples: int = 100, seed: int = 0, steps=STEPS,
                threshold: float = THRESHOLD, inputs: bool = False, data=None) -> list[GradCheckResult]:
    if not net.cost_layers():
        raise ConfigError(f"{net.layers_path}: the net has no cost layer, so there is no objective to check "
                          "gradients of.")
    rng = np.random.default_rng(seed)
    if data is None:
        data = random_batch(net, cases, rng)
    net._net.set_data_grads(inputs)
    net.forward(data, train=True)
    f0 = objective(net)
    if not np.isfinite(f0):
        layer = net._net.first_nonfinite_layer()
        first = (f"layer '{layer}' is the first whose output is not finite" if layer else
                 "every layer's output is finite, so the cost itself overflowed")
        raise CcnRuntimeError(f"{net.layers_path}: the objective is {f0} at the starting point ({first}), so "
                              "there is no gradient to check. On these random inputs (uniform in [0, 1), random "
                              "labels) a neuron may get values outside its domain (sqrt or log of a negative "
                              "number) or weights may be too large.")
    net._net.zero_param_grads()
    net.backward()
    analytic = {p.name: net.get(p.name, "grad").astype(np.float64).reshape(-1) for p in net.params}
    data_grads = {}
    if inputs:
        for l in net.layers:
            if l.data_idx >= 0 and l.data_idx in data:
                data_grads[l.name] = net.output_grad(l.name).astype(np.float64).reshape(-1)
    results = []
    for p in net.params:
        w = net.get(p.name)
        flat = w.reshape(-1)

        def evaluate(name=p.name, w=w):
            net.set(name, w)
            net.forward(data, train=True)
            return objective(net)

        results.append(_check(p.name, "biases" if p.is_bias else "weights", evaluate, flat, analytic[p.name],
                              rng, samples, steps, threshold))
        net.set(p.name, w)
    for l in net.layers:
        if l.name not in data_grads:
            continue
        x = np.array(data[l.data_idx], dtype=np.float32)
        if np.all(x == np.round(x)):
            continue  # labels (class indices, one-hot or 0/1): not differentiable

        def evaluate(idx=l.data_idx, x=x):
            net.forward({**data, idx: x}, train=True)
            return objective(net)

        results.append(_check(l.name, "input", evaluate, x.reshape(-1), data_grads[l.name], rng, samples, steps,
                              threshold))
    net._net.zero_param_grads()
    return results


def _result(name, kind, num, ana, size, threshold) -> GradCheckResult:
    denom = max(np.linalg.norm(num), np.linalg.norm(ana)) if len(num) else 0.0
    err = 0.0 if denom == 0 else float(np.linalg.norm(num - ana) / denom)
    return GradCheckResult(name, kind, len(num), size, err, err < threshold, sampled=len(num))
