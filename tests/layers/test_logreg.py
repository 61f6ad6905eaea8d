"""cost.logreg: values against NumPy float64, gradients against finite differences, on its own
(probabilities given as data) and fused with the softmax that feeds only it (cuda-convnet's
computeLogregSoftmaxGrad: dCost/dlogits = coeff * (p - onehot), and -log p from the logits),
including the saturated cases where p underflows to 0 and the unfused rule would give no
gradient at all."""

import numpy as np
import pytest

import ccn
from layercheck import assert_close, numeric_grads

FUSED = """
[logits]
type=data
dataIdx=0
[labels]
type=data
dataIdx=1
[probs]
type=softmax
inputs=logits
[cost]
type=cost.logreg
inputs=labels,probs
topk=2
"""
PARAMS = "[cost]\ncoeff=0.7\n"


def make(text, K, params=PARAMS):
    net = ccn.Net("layers.cfg", "params.cfg", {0: K, 1: 1}, layers_text=text, params_text=params)
    net._net.set_data_grads(True)
    return net


def costs_of(net):
    return {c["layer"]: c["values"] for c in net.costs()}


def softmax64(x):
    e = np.exp(x - x.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def nll64(x, y):
    m = x.max(1, keepdims=True)
    return np.sum(np.log(np.exp(x - m).sum(1)) - (x[np.arange(len(y)), y] - m[:, 0]))


def wrong(p32, y, k):
    """Top-k wrong count with the ties' shared credit (as the layer counts)."""
    total = 0.0
    for n in range(len(y)):
        py = p32[n, y[n]]
        g, e = np.sum(p32[n] > py), np.sum(p32[n] == py)
        total += 1 - (0.0 if g >= k else min(1.0, (k - g) / e))
    return total


@pytest.mark.parametrize("n,K", [(1, 2), (7, 5), (13, 11)])
def test_fused_values_and_gradient(n, K, rng):
    x = rng.standard_normal((n, K)).astype(np.float32) * 3
    y = rng.integers(0, K, n)
    net = make(FUSED, K)
    net.forward([x, y.reshape(-1, 1)], train=True)
    net.backward()
    x64 = x.astype(np.float64)
    p32 = net.output("probs")
    lp, err1, errk = costs_of(net)["cost"]
    assert_close(lp, nll64(x64, y), 1e-9, 1e-9, "sum -log p from the logits")
    assert err1 == pytest.approx(wrong(p32, y, 1)) and errk == pytest.approx(wrong(p32, y, 2))
    onehot = np.eye(K)[y]
    assert_close(net.output_grad("logits"), 0.7 * (softmax64(x64) - onehot), 1e-5, 1e-7, "coeff * (p - onehot)")
    num = numeric_grads(lambda a: 0.7 * nll64(a["x"], y), {"x": x64}, np.float64(1.0))["x"]
    assert_close(net.output_grad("logits"), num, 1e-4, 1e-6, "finite differences of coeff * sum -log p")


def test_saturated_cases_still_pull():
    # logit gaps of 200: float32 p of the true class is exactly 0 for the first three cases
    x = np.array([[200.0, 0.0, 0.0], [0.0, 0.0, 200.0], [0.0, 150.0, -60.0], [1.0, 2.0, 3.0]], np.float32)
    y = np.array([1, 0, 2, 2])
    net = make(FUSED, 3)
    net.forward([x, y.reshape(-1, 1)], train=True)
    net.backward()
    assert net.output("probs")[0, 1] == 0.0  # underflowed
    lp = costs_of(net)["cost"][0]
    assert np.isfinite(lp) and lp == pytest.approx(nll64(x.astype(np.float64), y), rel=1e-12)
    assert lp > 200 + 200 + 210  # not 3 x 87.5 from a clamped -log p
    g = net.output_grad("logits")
    assert_close(g, 0.7 * (softmax64(x.astype(np.float64)) - np.eye(3)[y]), 1e-5, 1e-7, "saturated gradient")
    assert g[0, 1] == pytest.approx(-0.7) and g[1, 0] == pytest.approx(-0.7)


TWO_CONSUMERS = FUSED + """
[cost2]
type=cost.logreg
inputs=labels,probs
"""


def test_a_softmax_with_two_consumers_is_not_fused(rng):
    # the original fuses only a softmax that feeds nothing but the cost; here each cost adds
    # -coeff/p through the softmax's Jacobian
    n, K = 6, 4
    x = rng.standard_normal((n, K)).astype(np.float32)
    y = rng.integers(0, K, n)
    net = make(TWO_CONSUMERS, K, PARAMS + "[cost2]\ncoeff=0.3\n")
    net.forward([x, y.reshape(-1, 1)], train=True)
    net.backward()
    x64 = x.astype(np.float64)
    p = softmax64(x64)
    c = costs_of(net)
    p32 = net.output("probs").astype(np.float64)
    assert_close(c["cost2"][0], -np.sum(np.log(p32[np.arange(n), y])), 1e-6, 0, "cost2: -log of the float p")
    assert_close(net.output_grad("logits"), 1.0 * (p - np.eye(K)[y]), 1e-4, 1e-6, "(0.7 + 0.3) * (p - onehot)")
    dp = np.zeros((n, K))
    dp[np.arange(n), y] = -1.0 / p32[np.arange(n), y]
    assert_close(net.output_grad("probs"), dp, 1e-5, 1e-7, "dCost/dprobs of the two costs")


def test_probabilities_given_directly_are_not_fused(rng):
    text = "[probs]\ntype=data\ndataIdx=0\n[labels]\ntype=data\ndataIdx=1\n[cost]\ntype=cost.logreg\ninputs=labels,probs\n"
    n, K = 9, 6
    p = rng.uniform(0.01, 1, (n, K))
    p = (p / p.sum(1, keepdims=True)).astype(np.float32)
    y = rng.integers(0, K, n)
    net = make(text, K)
    net.forward([p, y.reshape(-1, 1)], train=True)
    net.backward()
    p64 = p.astype(np.float64)
    assert_close(costs_of(net)["cost"][0], -np.sum(np.log(p64[np.arange(n), y])), 1e-6, 0, "sum -log p")
    dp = np.zeros((n, K))
    dp[np.arange(n), y] = -0.7 / p64[np.arange(n), y]
    assert_close(net.output_grad("probs"), dp, 1e-6, 1e-9, "-coeff / p at the label")


def test_seeded_backward_goes_through_the_softmax(rng):
    # bprop from given gradients (no cost layers): the softmax's own rule, not the fused one
    n, K = 5, 7
    x = rng.standard_normal((n, K)).astype(np.float32)
    y = rng.integers(0, K, n)
    net = make(FUSED, K)
    net.forward([x, y.reshape(-1, 1)], train=True)
    G = rng.standard_normal((n, K)).astype(np.float32)
    net.backward({"probs": G})
    num = numeric_grads(lambda a: softmax64(a["x"]), {"x": x.astype(np.float64)}, G.astype(np.float64))["x"]
    assert_close(net.output_grad("logits"), num, 1e-4, 1e-6, "softmax Jacobian^T G")


def test_training_recovers_from_saturation(rng):
    # a net pushed to confidently wrong answers keeps learning (the unfused rule gave them no
    # gradient and training stayed stuck at cost 87.5 x error)
    text = """
[data]
type=data
dataIdx=0
[labels]
type=data
dataIdx=1
[fc]
type=fc
inputs=data
outputs=3
initW=0
[probs]
type=softmax
inputs=fc
[cost]
type=cost.logreg
inputs=labels,probs
"""
    params = "[fc]\nepsW=0.05\nepsB=1\nmomW=0\nmomB=0\nwc=0\n[cost]\ncoeff=1\n"
    net = ccn.Net("layers.cfg", "params.cfg", {0: 2, 1: 1}, layers_text=text, params_text=params)
    net.set("fc.biases", np.array([[120.0, 0.0, 0.0]], np.float32))  # everything is class 0, p of 1 and 2 = 0
    y = np.arange(30) % 3
    x = (4 * np.eye(3)[y][:, :2] + 0.3 * rng.standard_normal((30, 2))).astype(np.float32)  # separable
    first = None
    for _ in range(300):
        c = net.train_step([x, y.reshape(-1, 1).astype(np.float32)], 0.0, 30)
        first = first if first is not None else c[0]["values"][1]
    assert first == 20  # two thirds wrong at the start
    assert c[0]["values"][1] <= 2 and net.get("fc.biases")[0, 0] < 60


def test_multiview_cost_from_the_views_log_probabilities(rng):
    """Multiview testing: -log of the mean over the views of p[label], from the logits when the
    softmax is fused (exact where every view's p underflows), else from the averaged p."""
    from ccn.testing import VIEWS, run_test

    n, K = 3, 4
    x = rng.standard_normal((VIEWS * n, K)).astype(np.float32)
    x[0::n] = [300.0, 0.0, 0.0, 0.0]  # case 0: every view sure of class 0; its label is 2
    y = np.array([2, 1, 3])
    labels = np.tile(y, VIEWS).reshape(-1, 1).astype(np.float32)

    class Views:
        def load(self, b, epoch):
            return [x, labels]

    net = make(FUSED, K)
    logreg = net.layer("cost")
    assert logreg.fused_logits == "logits"
    (mb,) = list(run_test(net, Views(), [1], mini=8, multiview=True, logreg=logreg))
    lp = np.stack([np.log(softmax64(x[v * n:(v + 1) * n].astype(np.float64))[np.arange(n), y]) for v in range(VIEWS)])
    with np.errstate(divide="ignore"):
        top = lp.max(axis=0)
    want = -np.sum(top + np.log(np.exp(lp - top).sum(axis=0)) - np.log(VIEWS))
    got = next(c for c in mb.costs if c["layer"] == "cost")["values"][0]
    assert np.isfinite(got) and got == pytest.approx(want, rel=1e-9) and got > 300
    two = make(TWO_CONSUMERS, K, PARAMS + "[cost2]\ncoeff=0.3\n")
    assert two.layer("cost").fused_logits is None
