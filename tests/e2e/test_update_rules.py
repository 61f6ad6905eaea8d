"""wball on local layers (per module, capped: cuda-convnet2's normalizeLocalWeights) and on fc and
conv layers (every column rescaled to norm wball: FCLayer/ConvLayer::_constrainWeights with
HardWeightConstraintOperator), against an independent NumPy float64 update; a learning rate of 0
freezes a matrix (no momentum, no decay: Weights::update); updatePeriod=0; neuron= on cost layers
(read and dropped, as cuda-convnet2's CostParser did)."""

import numpy as np
import pytest

import ccn

LOCAL = """
[data]
type=data
dataIdx=0

[labels]
type=data
dataIdx=1

[loc]
type=local
inputs=data
channels={channels}
filters={filters}
groups={groups}
filterSize={fs}
padding={pad}
stride={stride}
initW=0.3

[fc]
type=fc
inputs=loc
outputs=3
initW=0.3

[probs]
type=softmax
inputs=fc

[logprob]
type=cost.logreg
inputs=labels,probs
"""

PARAMS = """
[loc]
epsW={eps}
epsB=0.1
momW=0.7
momB=0.7
wc=0.01
wball={wball}
wcNormMax=0

[fc]
epsW={eps}
epsB=0.1
momW=0.7
momB=0.7
wc=0.01
wball={wball}

[logprob]
coeff=1
"""


def reference_update(w0, inc0, grad, eps, mom, wc, n, wball, block_rows, hard=False):
    """inc = mom*inc - eps/n*grad - wc*eps*w; w += inc; then within each block of block_rows rows,
    every column whose L2 norm exceeds wball (hard: every column) is scaled to norm wball
    (float64). eps = 0: nothing changes."""
    w0, inc0, grad = (np.asarray(a, np.float64) for a in (w0, inc0, grad))
    if eps == 0:
        return w0, inc0
    inc = mom * inc0 - eps / n * grad - wc * eps * w0
    w = w0 + inc
    if wball > 0:
        blocks = w.reshape(-1, block_rows, w.shape[1])
        norms = np.sqrt((blocks ** 2).sum(axis=1, keepdims=True))
        blocks *= np.where((norms > wball) | hard, wball / np.maximum(norms, 1e-300), 1.0)
        w = blocks.reshape(w.shape)
    return w, inc


def step(text, params, data, n, seed=0):
    net = ccn.Net("l.cfg", "p.cfg", data_dims={0: data[0].shape[1:], 1: 1}, layers_text=text, params_text=params,
                  seed=seed)
    rng = np.random.default_rng(seed)
    for p in net.params:
        net.set(p.name, rng.standard_normal(p.shape).astype(np.float32) * 0.05, "inc")
    before = {p.name: (net.get(p.name), net.get(p.name, "inc")) for p in net.params}
    flat = [data[0].reshape(n, -1).astype(np.float32), data[1]]
    net.forward(flat, train=True)
    net.backward()
    grads = {p.name: net.get(p.name, "grad") for p in net.params}
    net.update(0.0, n)
    return net, before, grads


@pytest.mark.parametrize("trial", range(4))
def test_wball_caps_local_filters_per_module(trial):
    rng = np.random.default_rng()
    groups = int(rng.integers(1, 3))
    fs, pad = int(rng.integers(1, 4)), int(rng.integers(0, 2))
    stride = int(rng.integers(1, fs + 1))
    c = groups * int(rng.integers(1, 3))
    size = int(rng.integers(fs + 1, 6))  # at least 2 modules a row
    filters = int(rng.integers(2, 4))  # at least 2 filters, so the ball splits them
    n = int(rng.choice([1, 3, 7]))
    text = LOCAL.format(channels=c, filters=filters, groups=groups, fs=fs, pad=pad, stride=stride)
    x = rng.standard_normal((n, c, size, size))
    y = rng.integers(0, 3, (n, 1)).astype(np.float32)
    kg = (c // groups) * fs * fs
    F = filters * groups
    seed = int(rng.integers(1 << 30))
    eps = 0.5
    # a ball that the largest module norms after the step exceed and the smallest do not
    free, _, _ = step(text, PARAMS.format(eps=eps, wball=0), (x, y), n, seed)
    wball = float(np.median(np.sqrt((free.get("loc.weights[0]").astype(np.float64).reshape(-1, kg, F) ** 2).sum(1))))
    net, before, grads = step(text, PARAMS.format(eps=eps, wball=wball), (x, y), n, seed)
    w0, inc0 = before["loc.weights[0]"]
    exp_w, exp_inc = reference_update(w0, inc0, grads["loc.weights[0]"], eps, 0.7, 0.01, n, wball, kg)
    got = net.get("loc.weights[0]")
    np.testing.assert_allclose(got, exp_w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(net.get("loc.weights[0]", "inc"), exp_inc, rtol=1e-5, atol=1e-6)
    norms = np.sqrt((got.astype(np.float64).reshape(-1, kg, F) ** 2).sum(1))
    assert norms.max() <= wball * (1 + 1e-5)
    # some filters were capped and some not, and capping whole columns would give other weights
    unc = np.asarray(w0, np.float64) + exp_inc
    unc_norms = np.sqrt((unc.reshape(-1, kg, F) ** 2).sum(1))
    assert (unc_norms > wball).any() and (unc_norms < wball).any()
    col_w, _ = reference_update(w0, inc0, grads["loc.weights[0]"], eps, 0.7, 0.01, n, wball, got.shape[0])
    assert not np.allclose(got, col_w, rtol=1e-4, atol=1e-5)
    # the fc layer's columns are rescaled whole, every one to norm wball
    f0, finc0 = before["fc.weights[0]"]
    exp_fc, _ = reference_update(f0, finc0, grads["fc.weights[0]"], eps, 0.7, 0.01, n, wball, f0.shape[0], hard=True)
    np.testing.assert_allclose(net.get("fc.weights[0]"), exp_fc, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(net.get("fc.weights[0]").astype(np.float64), axis=0), wball, rtol=1e-5)


CONV = """
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
filters=16
filterSize=3
padding=1
initW=0.01

[fc]
type=fc
inputs=conv
outputs=3
initW=0.3

[probs]
type=softmax
inputs=fc

[logprob]
type=cost.logreg
inputs=labels,probs
"""


def test_wball_rescales_every_conv_filter_to_the_ball():
    # small filters are scaled up too (HardWeightConstraintOperator: wball / norm, no condition)
    rng = np.random.default_rng()
    n = int(rng.choice([1, 5]))
    x, y = rng.standard_normal((n, 3, 5, 5)), rng.integers(0, 3, (n, 1)).astype(np.float32)
    params = PARAMS.replace("[loc]", "[conv]").format(eps=0.1, wball=0.8)
    net, before, grads = step(CONV, params, (x, y), n, int(rng.integers(1 << 30)))
    w0, inc0 = before["conv.weights[0]"]
    assert np.linalg.norm(w0.astype(np.float64) + inc0, axis=0).max() < 0.8  # all below the ball before
    exp_w, _ = reference_update(w0, inc0, grads["conv.weights[0]"], 0.1, 0.7, 0.01, n, 0.8, w0.shape[0], hard=True)
    np.testing.assert_allclose(net.get("conv.weights[0]"), exp_w, rtol=1e-5, atol=1e-6)


def test_a_zero_learning_rate_freezes_the_matrix():
    # cuda-convnet's Weights::update runs only when the learning rate's base is positive: no
    # momentum step, no decay, no wball, and the gradient is not accumulated meanwhile
    rng = np.random.default_rng()
    text = LOCAL.format(channels=2, filters=2, groups=1, fs=2, pad=0, stride=1)
    x, y = rng.standard_normal((4, 2, 3, 3)), rng.integers(0, 3, (4, 1)).astype(np.float32)
    params = PARAMS.format(eps=0.0, wball=1e-3).replace("epsB=0.1", "epsB=0")
    net, before, grads = step(text, params, (x, y), 4)
    for name, (w0, inc0) in before.items():
        np.testing.assert_array_equal(net.get(name), w0, err_msg=name)
        np.testing.assert_array_equal(net.get(name, "inc"), inc0, err_msg=name)
        assert not np.any(net.get(name, "grad")), name
    assert np.abs(net.get("fc.weights[0]")).max() > 1e-2  # far outside the ball: not constrained


def test_freezing_a_trained_layer_by_reloading_params():
    rng = np.random.default_rng()
    text = LOCAL.format(channels=2, filters=2, groups=1, fs=2, pad=0, stride=1)
    x, y = rng.standard_normal((4, 2, 3, 3)).reshape(4, -1).astype(np.float32), rng.integers(0, 3, (4, 1)).astype(np.float32)
    net = ccn.Net("l.cfg", "p.cfg", data_dims={0: (2, 3, 3), 1: 1}, layers_text=text,
                  params_text=PARAMS.format(eps=0.05, wball=0), seed=1)
    for _ in range(3):
        net.train_step([x, y], 0.0, 4)
    frozen = PARAMS.format(eps=0.05, wball=0).replace("[loc]\nepsW=0.05\nepsB=0.1", "[loc]\nepsW=0\nepsB=0")
    net.reload_params("p2.cfg", params_text=frozen)
    w = {k: net.get(k) for k in ("loc.weights[0]", "loc.biases", "fc.weights[0]")}
    for _ in range(3):
        net.train_step([x, y], 0.0, 4)
    np.testing.assert_array_equal(net.get("loc.weights[0]"), w["loc.weights[0]"])
    np.testing.assert_array_equal(net.get("loc.biases"), w["loc.biases"])
    assert not np.array_equal(net.get("fc.weights[0]"), w["fc.weights[0]"])  # the rest still learns


def test_update_period_zero_means_every_minibatch():
    # cuda-convnet2's layer.py default, "0 means update as often as possible"
    rng = np.random.default_rng()
    x, y = rng.standard_normal((3, 2, 3, 3)).reshape(3, -1).astype(np.float32), rng.integers(0, 3, (3, 1)).astype(np.float32)
    text = LOCAL.format(channels=2, filters=2, groups=1, fs=2, pad=0, stride=1)
    ws = []
    for period in ("updatePeriod=0", "updatePeriod=1", ""):
        params = PARAMS.format(eps=0.05, wball=0).replace("wcNormMax=0", f"wcNormMax=0\n{period}")
        net = ccn.Net("l.cfg", "p.cfg", data_dims={0: (2, 3, 3), 1: 1}, layers_text=text, params_text=params, seed=4)
        net.train_step([x, y], 0.0, 3)
        ws.append(net.get("loc.weights[0]"))
    np.testing.assert_array_equal(ws[0], ws[1])
    np.testing.assert_array_equal(ws[0], ws[2])


# ---- neuron= on cost layers ------------------------------------------------------------------
COST_NET = """
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
initW=0.3

[probs]
type=softmax
inputs=fc

[logprob]
type=cost.logreg
inputs=labels,probs
{neuron}
"""


@pytest.mark.parametrize("neuron", ["neuron=logistic", "neuron=tanh[1.7,0.66]", "neuron=whatever[1]"])
def test_neuron_on_a_cost_layer_is_a_no_op(neuron):
    rng = np.random.default_rng()
    x = rng.standard_normal((5, 4)).astype(np.float32)
    y = rng.integers(0, 3, (5, 1)).astype(np.float32)
    costs = []
    for extra in ("", neuron):
        net = ccn.Net("l.cfg", "p.cfg", data_dims={0: 4, 1: 1}, layers_text=COST_NET.format(neuron=extra),
                      params_text="[fc]\nepsW=0.1\nepsB=0.1\nmomW=0\nmomB=0\nwc=0\n[logprob]\ncoeff=1\n", seed=2)
        assert [l.neuron for l in net.layers if l.name == "logprob"] in (["ident"], [""])
        costs.append(net.train_step([x, y], 0.0, 5))
        costs.append(net.get("fc.weights[0]"))
    assert costs[0] == costs[2]
    np.testing.assert_array_equal(costs[1], costs[3])


def test_neuron_elsewhere_is_still_checked():
    from ccn.errors import ConfigError

    text = COST_NET.format(neuron="").replace("initW=0.3", "initW=0.3\nneuron=whatever[1]")
    with pytest.raises(ConfigError, match="neuron"):
        ccn.Net("l.cfg", None, data_dims={0: 4, 1: 1}, layers_text=text)


# ---- skipping the backward pass below frozen layers (Net.skip_frozen, on in ccn train) ----------
def _freeze(params, layers):
    out, cur = [], None
    for line in params.splitlines():
        if line.startswith("["):
            cur = line.strip("[]")
        if cur in layers and line.split("=")[0].strip() in ("epsW", "epsB"):
            line = line.split("=")[0] + "=0"
        out.append(line)
    return "\n".join(out) + "\n"


SKIP_NET = CONV.replace("[fc]\ntype=fc\ninputs=conv", "[conv2]\ntype=conv\ninputs=conv\nchannels=16\nfilters=8\n"
                        "filterSize=3\npadding=1\ninitW=0.1\n\n[fc]\ntype=fc\ninputs=conv2")
SKIP_PARAMS = "".join(f"[{n}]\nepsW=0.05\nepsB=0.05\nmomW=0.9\nmomB=0.9\nwc=0.001\n" for n in ("conv", "conv2", "fc")) + \
    "[logprob]\ncoeff=1\n"


def test_skipping_frozen_layers_changes_nothing_but_the_work():
    rng = np.random.default_rng()
    batches = [[rng.standard_normal((5, 75)).astype(np.float32), rng.integers(0, 3, (5, 1)).astype(np.float32)]
               for _ in range(3)]
    frozen = _freeze(SKIP_PARAMS, {"conv"})
    nets = []
    for skip in (False, True):
        net = ccn.Net("l.cfg", "p.cfg", data_dims={0: (3, 5, 5), 1: 1}, layers_text=SKIP_NET, params_text=SKIP_PARAMS,
                      seed=7)
        net.skip_frozen(skip)
        net.train_step(batches[0], 0.0, 5)
        net.reload_params("p2.cfg", params_text=frozen)  # freeze conv: with skip, nothing goes back through it
        net.train_step(batches[1], 0.1, 5)
        net.forward(batches[2], train=True)
        net.backward()
        grads = {p.name: net.get(p.name, "grad") for p in net.params}
        net.update(0.2, 5)
        net.reload_params("p.cfg", params_text=SKIP_PARAMS)  # and unfreeze it again
        net.train_step(batches[0], 0.3, 5)
        nets.append((net, grads))
    (a, ga), (b, gb) = nets
    for p in a.params:
        np.testing.assert_array_equal(a.get(p.name), b.get(p.name), err_msg=p.name)
        np.testing.assert_array_equal(a.get(p.name, "inc"), b.get(p.name, "inc"), err_msg=p.name)
    assert np.any(ga["conv.weights[0]"]) and not np.any(gb["conv.weights[0]"])  # computed only without skipping
    np.testing.assert_array_equal(ga["conv2.weights[0]"], gb["conv2.weights[0]"])


def test_a_negative_update_period_is_refused():
    from ccn.errors import ConfigError

    text = LOCAL.format(channels=2, filters=2, groups=1, fs=2, pad=0, stride=1)
    params = PARAMS.format(eps=0.05, wball=0).replace("wcNormMax=0", "wcNormMax=0\nupdatePeriod=-1")
    with pytest.raises(ConfigError, match=r"p\.cfg:\d+: in section \[loc\], key 'updatePeriod': must be 0 or more"):
        ccn.Net("l.cfg", "p.cfg", data_dims={0: (2, 3, 3), 1: 1}, layers_text=text, params_text=params)
