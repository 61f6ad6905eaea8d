"""The minibatch a caller passes to forward/train_step is read in place (no copy per step) and
never kept: later changes to the caller's arrays must not reach the net, and any array layout
NumPy can convert gives the same result as contiguous float32."""

import numpy as np

import ccn

LAYERS = """
[data]
type=data
dataIdx=0
[labels]
type=data
dataIdx=1
[conv]
type=conv
inputs=data
channels=3
filters=4
filterSize=3
padding=1
initW=0.1
neuron=relu
[fc]
type=fc
inputs=conv
outputs=5
initW=0.1
[probs]
type=softmax
inputs=fc
[logprob]
type=cost.logreg
inputs=labels,probs
"""
PARAMS = ("[conv]\nepsW=0.01\nepsB=0.01\nmomW=0.9\nmomB=0.9\nwc=0\n"
          "[fc]\nepsW=0.01\nepsB=0.01\nmomW=0.9\nmomB=0.9\nwc=0\n[logprob]\ncoeff=1\n")


def make_net():
    return ccn.Net("<mb>", "<mb-params>", {0: (3, 5, 5), 1: 1}, seed=3, layers_text=LAYERS, params_text=PARAMS)


def batch(rng, n):
    x = rng.standard_normal((n, 75)).astype(np.float32)
    y = rng.integers(0, 5, (n, 1)).astype(np.float32)
    return x, y


def test_the_net_keeps_no_reference_to_the_callers_minibatch():
    rng = np.random.default_rng()
    net, ref = make_net(), make_net()
    x, y = batch(rng, 7)
    ref.forward([x.copy(), y.copy()], train=True)
    net.forward([x, y], train=True)
    x0, y0 = x.copy(), y.copy()
    x[:] = 1e6  # the caller reuses its buffers before the backward pass
    y[:] = 4
    np.testing.assert_array_equal(net.output("data"), x0)
    np.testing.assert_array_equal(net.output("labels"), y0)
    for n in (net, ref):
        n.backward()
        n.update(0.0, 7)
    for p in ("conv.weights[0]", "fc.weights[0]", "fc.biases"):
        np.testing.assert_array_equal(net.get(p), ref.get(p))


def test_any_layout_numpy_can_convert_gives_the_same_outputs():
    rng = np.random.default_rng()
    x, y = batch(rng, 9)
    want = make_net()
    want.forward([x, y])
    ref = want.output("probs")
    variants = [
        x.astype(np.float64),
        np.asfortranarray(x),
        np.repeat(x, 2, axis=1)[:, ::2],  # a strided view
        x.reshape(9, 3, 5, 5),
    ]
    for v in variants:
        net = make_net()
        net.forward([v, y.astype(np.int64)])
        np.testing.assert_array_equal(net.output("probs"), ref)


def test_minibatch_sizes_may_grow_and_shrink_between_steps():
    rng = np.random.default_rng()
    net, ref = make_net(), make_net()
    for n in (3, 11, 2, 11, 1):
        x, y = batch(rng, n)
        costs = net.train_step([x, y], 0.0, n)
        ref.forward([x.copy(), y.copy()], train=True)
        ref.backward()
        ref.update(0.0, n)
        assert net.output("data").shape == (n, 75)
        np.testing.assert_array_equal(net.get("fc.weights[0]"), ref.get("fc.weights[0]"))
        assert costs[0]["values"] == [c for c in ref.costs()[0]["values"]]
