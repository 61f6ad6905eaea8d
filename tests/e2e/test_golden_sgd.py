"""Whole-net golden test: 10 SGD steps of a small net against a NumPy float64 implementation
of the same net and of cuda-convnet's update rule, weights compared after every step."""

import numpy as np

import ccn

LAYERS = """
[data]
type=data
dataIdx=0
[labels]
type=data
dataIdx=1
[hidden]
type=fc
inputs=data
outputs=9
neuron=tanh[1.7159,0.6666]
initW=0.3
[out]
type=fc
inputs=hidden,data
outputs=4
initW=0.2,0.1
initB=0.5
[probs]
type=softmax
inputs=out
[logprob]
type=cost.logreg
inputs=labels,probs
"""
PARAMS = """
[hidden]
epsW=dexp[base=0.05;tgtFactor=10;numSteps=3]
epsB=0.02
momW=0.9
momB=0.5
wc=0.01
[out]
epsW=0.04,linear[base=0.03;tgtFactor=4]
epsB=exp[base=0.05;tgtFactor=2]
momW=0.8,0.7
momB=0.9
wc=0.002,0.0
[logprob]
coeff=1.5
"""


def dexp(base, tgt, steps, p):
    rates = [base * (1 / tgt) ** (i / (steps - 1)) for i in range(steps - 1)] + [base / tgt]
    for i, r in enumerate(rates):
        if p <= (i + 1) / len(rates):
            return r
    return rates[-1]


EPS = {
    "hidden.weights[0]": lambda p: dexp(0.05, 10, 3, p),
    "hidden.biases": lambda p: 0.02,
    "out.weights[0]": lambda p: 0.04,
    "out.weights[1]": lambda p: 0.03 * (1 - p) + 0.03 / 4 * p,
    "out.biases": lambda p: 0.05 * 0.5 ** p,
}
MOM = {"hidden.weights[0]": 0.9, "hidden.biases": 0.5, "out.weights[0]": 0.8, "out.weights[1]": 0.7,
       "out.biases": 0.9}
WC = {"hidden.weights[0]": 0.01, "out.weights[0]": 0.002, "out.weights[1]": 0.0}


def numpy_grads(W, x, y, coeff=1.5):
    a, b = 1.7159, 0.6666
    z1 = x @ W["hidden.weights[0]"] + W["hidden.biases"]
    h = a * np.tanh(b * z1)
    z2 = h @ W["out.weights[0]"] + x @ W["out.weights[1]"] + W["out.biases"]
    e = np.exp(z2 - z2.max(1, keepdims=True))
    p = e / e.sum(1, keepdims=True)
    onehot = np.eye(p.shape[1])[y]
    cost = -coeff * np.sum(np.log(p[np.arange(len(y)), y]))
    dz2 = coeff * (p - onehot)  # d(sum -coeff log p_y)/dz2
    g = {"out.weights[0]": h.T @ dz2, "out.weights[1]": x.T @ dz2, "out.biases": dz2.sum(0, keepdims=True)}
    dh = dz2 @ W["out.weights[0]"].T
    dz1 = dh * a * b * (1 - np.tanh(b * z1) ** 2)
    g["hidden.weights[0]"] = x.T @ dz1
    g["hidden.biases"] = dz1.sum(0, keepdims=True)
    return g, cost


def test_ten_sgd_steps_match_numpy():
    rng = np.random.default_rng()
    n_in, mini = 6, 13
    net = ccn.Net("<golden>", "<golden-params>", {0: n_in, 1: 1}, seed=int(rng.integers(1 << 30)),
                  layers_text=LAYERS, params_text=PARAMS)
    W = {p.name: net.get(p.name).astype(np.float64) for p in net.params}
    inc = {k: np.zeros_like(v) for k, v in W.items()}
    steps = 10
    for step in range(steps):
        progress = step / steps
        n = mini if step % 3 else mini - 4  # a short minibatch still divides by the nominal size
        x = rng.standard_normal((n, n_in))
        y = rng.integers(0, 4, size=n)
        costs = net.train_step([x.astype(np.float32), y[:, None].astype(np.float32)], progress, mini)
        g, cost = numpy_grads(W, x, y)
        assert abs(costs[0]["values"][0] * 1.5 - cost) <= 1e-4 * abs(cost) + 1e-4
        for k in W:
            eps = EPS[k](progress)
            inc[k] = MOM[k] * inc[k] - eps / mini * g[k] - WC.get(k, 0.0) * eps * W[k]
            W[k] = W[k] + inc[k]
            ours = net.get(k).astype(np.float64)
            np.testing.assert_allclose(ours, W[k], rtol=2e-4, atol=2e-5, err_msg=f"{k} after step {step + 1}")
            np.testing.assert_allclose(net.get(k, "inc"), inc[k], rtol=2e-3, atol=2e-5,
                                       err_msg=f"{k} increment after step {step + 1}")
