"""ccn.gradcheck on small nets: every matrix passes; the 2% rule itself is exercised."""

import numpy as np

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
