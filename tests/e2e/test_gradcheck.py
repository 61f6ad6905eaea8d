"""ccn.gradcheck on small nets: every matrix passes; the 2% rule itself is exercised."""

import numpy as np
import pytest

import ccn
from ccn import gradcheck

NET = """
[data]
type=data
dataIdx=0
[labels]
type=data
dataIdx=1
[fc1]
type=fc
inputs=data
outputs=5
neuron=logistic
[fc2]
type=fc
inputs=fc1,data
outputs=3
[probs]
type=softmax
inputs=fc2
[logprob]
type=cost.logreg
inputs=labels,probs
coeff=1
"""


def test_small_net_passes():
    net = ccn.Net("<gc>", None, {0: 7, 1: 1}, seed=3, layers_text=NET.replace("coeff=1\n", ""))
    for p in net.params:  # larger weights than the 0.01 default make a sharper test
        net.set(p.name, np.random.default_rng(1).standard_normal(p.shape) * 0.5)
    res = gradcheck.check_grads(net, cases=11, inputs=True)
    names = {(r.name, r.kind) for r in res}
    assert ("fc2.weights[1]", "weights") in names and ("data", "input") in names
    for r in res:
        assert r.passed, r
        assert r.rel_error < 0.01


def test_relative_error_rule():
    ok = gradcheck._result("w", "weights", np.array([1.0, 2.0]), np.array([1.01, 2.0]), 2, 0.02)
    bad = gradcheck._result("w", "weights", np.array([1.0, 2.0]), np.array([1.0, 2.2]), 2, 0.02)
    assert ok.passed and not bad.passed
    assert abs(bad.rel_error - 0.2 / np.linalg.norm([1.0, 2.2])) < 1e-12


PAIR = (1e-3, 4e-3)  # one neighbouring pair of gradcheck.STEPS


def _fd_runs(f, x0, steps=PAIR):
    """gradcheck's finite differences of a scalar function f at the points x0 (one entry each)."""
    flat = np.array(x0, dtype=np.float64)
    return [gradcheck._numeric(lambda: float(np.sum(f(flat))), flat, np.arange(len(flat)), h) for h in steps]


def test_usable_entries_smooth_kinked_and_noisy():
    steps = PAIR
    assert all(PAIR[i] in gradcheck.STEPS for i in (0, 1))
    # a steep smooth function (curvature makes the one-sided slopes differ a lot, in proportion
    # to the step): usable
    smooth = _fd_runs(lambda x: 300.0 * x ** 2 + 5.0 * x, [0.3, -0.2, 0.01])
    assert gradcheck._usable(smooth, steps).all()
    # |x| with the kink well inside the smallest step: the central differences agree with each
    # other (both near 0) but not with the slope; not usable
    kinked = _fd_runs(lambda x: np.abs(x - 1e-5) * 50.0, [0.0, 2e-6])
    assert not gradcheck._usable(kinked, steps).any()
    # a kink between the steps: the central differences disagree
    between = _fd_runs(lambda x: np.maximum(x - 2e-3, 0) * 50.0 + x, [0.0])
    assert not gradcheck._usable(between, steps).any()
    # a slope drowned in rounding: the objective moves in quanta of 1.2e-4 (float32 near 1000), the
    # slopes are 0.4 and 1e-4, so the steps' central differences disagree; a clean entry of the
    # same matrix (slope 3) is kept
    def quantised(x):
        return np.round((100.0 + np.array([0.4, 3.0, 1e-4]) * x) / 1.2e-4) * 1.2e-4
    runs = _fd_runs(quantised, [0.01234, 0.5, 0.2])
    assert gradcheck._usable(runs, steps).tolist() == [False, True, False]


RELU_NET = """
[data]
type=data
dataIdx=0
[labels]
type=data
dataIdx=1
[conv1]
type=conv
inputs=data
channels=2
filters=6
filterSize=3
padding=1
initW=0.0001
[pool1]
type=pool
pool=max
inputs=conv1
sizeX=3
stride=2
channels=6
neuron=relu
[fc]
type=fc
inputs=pool1
outputs=4
initW=0.01
[probs]
type=softmax
inputs=fc
[cost]
type=cost.logreg
inputs=labels,probs
"""
RELU_PARAMS = "[conv1]\nepsW=0.1\nepsB=0.1\nmomW=0\nmomB=0\nwc=0\n[fc]\nepsW=0.1\nepsB=0.1\nmomW=0\nmomB=0\nwc=0\n"


def _relu_net(tmp_path):
    (tmp_path / "relu.cfg").write_text(RELU_NET)
    (tmp_path / "relu-params.cfg").write_text(RELU_PARAMS)
    net = ccn.Net(str(tmp_path / "relu.cfg"), str(tmp_path / "relu-params.cfg"), {0: (2, 7, 7), 1: 1}, seed=2)
    net.init_weights(2)
    return net


def test_relu_net_with_tiny_weights_has_no_false_failure(tmp_path):
    # zero biases and initW=1e-4 under ReLU and max pooling: the original's check failed such
    # layers by finite differences alone; here they pass or are UNSURE, never FAIL
    res = gradcheck.check_grads(_relu_net(tmp_path), cases=9, samples=40, inputs=True)
    verdicts = {r.name: r.verdict for r in res}
    assert "FAIL" not in verdicts.values(), verdicts
    assert verdicts["fc.weights[0]"] == "PASS"


def test_wrong_gradient_cannot_hide_among_untrusted_entries(tmp_path, monkeypatch):
    # a gradient 30% off on every entry fails wherever the finite differences are usable, and is
    # never reported as a pass: which entries are usable never depends on the analytic gradient
    orig = gradcheck._check

    def wrong(name, kind, evaluate, flat, analytic, *rest):
        return orig(name, kind, evaluate, flat, analytic * 1.3, *rest)
    monkeypatch.setattr(gradcheck, "_check", wrong)
    res = gradcheck.check_grads(_relu_net(tmp_path), cases=9, samples=40, inputs=True)
    assert all(r.verdict in ("FAIL", "UNSURE") for r in res)
    assert sum(r.verdict == "FAIL" for r in res) >= 3


def test_a_two_output_bias_can_pass():
    # two entries are all there are: enough to decide
    net = ccn.Net("<gc2>", None, {0: 4, 1: 1}, seed=3,
                  layers_text=NET.replace("outputs=3", "outputs=2").replace("coeff=1\n", ""))
    for p in net.params:
        net.set(p.name, np.random.default_rng(2).standard_normal(p.shape) * 0.5)
    res = {r.name: r for r in gradcheck.check_grads(net, cases=7, samples=30)}
    assert res["fc2.biases"].size == 2 and res["fc2.biases"].verdict == "PASS", res["fc2.biases"]


@pytest.mark.slow
@pytest.mark.parametrize("seed", [2, 6])
def test_gradcheck_ini_is_decided_where_the_smallest_step_drowns(seed):
    # seeds whose objective is large (about 120): the 1e-3 differences of conv1flip's biases
    # drown in float32 rounding, the larger steps decide
    import os
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    path = os.path.join(root, "layer-defs", "gradcheck.ini")
    net = ccn.Net(path, os.path.join(root, "layer-defs", "gradcheck-params.ini"),
                  {0: (3, 8, 8), 1: 1, 2: (10, 1, 1)}, seed=seed, init=False)
    net.init_weights(seed)
    res = {r.name: r for r in gradcheck.check_grads(net, cases=8, samples=60, seed=seed, inputs=True)}
    assert res["conv1flip.biases"].verdict == "PASS", res["conv1flip.biases"]
    assert all(r.verdict == "PASS" for r in res.values()), [r for r in res.values() if r.verdict != "PASS"]


@pytest.mark.slow
def test_relu_max_pool_convs_pass_and_a_3_percent_error_fails(monkeypatch):
    # layer-defs/mnist-small.ini: ReLU convs and max pooling, where a conv weight moves thousands
    # of kinks at once (2-4% at the 1e-3 step); the small steps decide, and still catch 3%
    import os
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    path = os.path.join(root, "layer-defs", "mnist-small.ini")

    def check(factor):
        net = ccn.Net(path, os.path.join(root, "layer-defs", "mnist-small-params.ini"), {0: (1, 28, 28), 1: 1},
                      seed=1, init=False)
        net.init_weights(1)
        orig = gradcheck._check

        def scaled(name, kind, evaluate, flat, analytic, *rest):
            return orig(name, kind, evaluate, flat, analytic * (factor if name == "conv2.weights[0]" else 1.0), *rest)
        monkeypatch.setattr(gradcheck, "_check", scaled)
        try:
            return {r.name: r.verdict for r in gradcheck.check_grads(net, cases=4, samples=60, seed=1)}
        finally:
            monkeypatch.setattr(gradcheck, "_check", orig)
    right = check(1.0)
    assert set(right.values()) == {"PASS"}, right
    assert check(1.03)["conv2.weights[0]"] == "FAIL"
