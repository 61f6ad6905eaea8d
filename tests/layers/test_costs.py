"""cost.sum2, cost.crossent, cost.bce and cost.dce: values against NumPy float64 references,
gradients (net.backward() with no seeds starts from the cost layers) against central finite
differences of coeff * the float64 cost."""

import numpy as np
import pytest

import ccn
from ccn.errors import ConfigError
from layercheck import assert_close, numeric_grads


def safelog(x):
    return np.where(x > 0, np.log(np.where(x > 0, x, 1.0)), -50.0)


def run_cost(text, params, data):
    """data: {layer name: (dataIdx, array N x ...)}. Returns the net (after forward and backward) and
    {cost layer: {name: value}} plus the float32-rounded inputs as float64."""
    dims = {idx: int(np.prod(arr.shape[1:])) for idx, arr in data.values()}
    net = ccn.Net("layers.cfg", "params.cfg" if params is not None else None, dims, layers_text=text,
                  params_text=params)
    net._net.set_data_grads(True)
    f32 = {name: np.asarray(arr, np.float32).reshape(len(arr), -1) for name, (idx, arr) in data.items()}
    net.forward({data[name][0]: a for name, a in f32.items()}, train=True)
    costs = {c["layer"]: dict(zip(c["names"], c["values"])) for c in net.costs()}
    net.backward()
    return net, costs, {k: v.astype(np.float64) for k, v in f32.items()}


def check_grads(net, arrays, cost_fn, wrt, rtol=2e-3, atol=2e-4):
    """Compare net.output_grad(name) with d cost_fn(arrays) / d arrays[name] by finite differences."""
    for name in wrt:
        num = numeric_grads(lambda a: np.asarray(cost_fn({**arrays, **a})), {name: arrays[name]}, np.float64(1.0))
        assert_close(net.output_grad(name), num[name], rtol, atol, f"gradient w.r.t. '{name}'")


# ---- cost.sum2 --------------------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 6])
def test_sum2(n):
    rng = np.random.default_rng()
    coeff = float(np.round(rng.uniform(0.1, 3), 3))
    x = rng.standard_normal((n, int(rng.integers(1, 10))))
    text = "[x]\ntype=data\ndataIdx=0\n[cost]\ntype=cost.sum2\ninputs=x\n"
    net, costs, a = run_cost(text, f"[cost]\ncoeff={coeff}\n", {"x": (0, x)})
    assert list(costs["cost"]) == ["sum2"]
    assert costs["cost"]["sum2"] == pytest.approx(np.sum(a["x"] ** 2), rel=1e-9)
    check_grads(net, a, lambda v: coeff * np.sum(v["x"] ** 2), ["x"])


def test_sum2_through_fc_weights():
    rng = np.random.default_rng()
    n, d, o = 5, 4, 3
    x = rng.standard_normal((n, d))
    text = "[x]\ntype=data\ndataIdx=0\n[fc]\ntype=fc\ninputs=x\noutputs=3\n[cost]\ntype=cost.sum2\ninputs=fc\n"
    params = "[fc]\nepsW=0.1\nepsB=0.1\nmomW=0\nmomB=0\nwc=0\n[cost]\ncoeff=0.5\n"
    net = ccn.Net("l", "p", {0: d}, layers_text=text, params_text=params)
    w = rng.standard_normal((d, o)).astype(np.float32)
    net.set("fc.weights[0]", w)
    net.forward({0: x.astype(np.float32)}, train=True)
    net._net.zero_param_grads()
    net.backward()
    xf, wf = x.astype(np.float32).astype(np.float64), w.astype(np.float64)
    num = numeric_grads(lambda v: np.asarray(0.5 * np.sum((xf @ v["w"]) ** 2)), {"w": wf}, np.float64(1.0))
    assert_close(net.get("fc.weights[0]", "grad"), num["w"], 2e-3, 2e-4, "fc weight gradient")


# ---- cost.crossent ----------------------------------------------------------------------

def crossent_error(t, p):
    wrong = 0.0
    for tr, pr in zip(t, p):
        top = pr == pr.max()
        wrong += 1.0 - (1.0 / top.sum() if np.any(top & (tr > 0)) else 0.0)
    return wrong


CROSSENT = "[labels]\ntype=data\ndataIdx=1\n[p]\ntype=data\ndataIdx=0\n[cost]\ntype=cost.crossent\ninputs=labels,p\n"


@pytest.mark.parametrize("n", [1, 7])
def test_crossent_one_hot(n):
    rng = np.random.default_rng()
    k = int(rng.integers(2, 7))
    coeff = float(np.round(rng.uniform(0.2, 2), 3))
    t = np.eye(k)[rng.integers(0, k, n)]
    p = rng.uniform(0.05, 1.0, (n, k))
    net, costs, a = run_cost(CROSSENT, f"[cost]\ncoeff={coeff}\n", {"labels": (1, t), "p": (0, p)})
    assert list(costs["cost"]) == ["crossent", "error"]
    assert costs["cost"]["crossent"] == pytest.approx(-np.sum(a["labels"] * np.log(a["p"])), rel=1e-6)
    assert costs["cost"]["error"] == pytest.approx(crossent_error(a["labels"], a["p"]))
    check_grads(net, a, lambda v: -coeff * np.sum(v["labels"] * np.log(v["p"])), ["p"])


def test_crossent_soft_labels_and_ties():
    rng = np.random.default_rng()
    t = np.array([[0, 1, 0, 0], [0, 0, 1, 0], [0.5, 0.5, 0, 0], [0, 0, 0, 1]], float)
    p = np.array([[0.4, 0.4, 0.1, 0.1],     # label ties with one other class at the max: credit 1/2
                  [0.4, 0.4, 0.1, 0.1],     # label not at the max: wrong
                  [0.1, 0.6, 0.2, 0.1],     # soft label covering the argmax: right
                  [0.25, 0.25, 0.25, 0.25]])  # four-way tie: credit 1/4
    net, costs, a = run_cost(CROSSENT, None, {"labels": (1, t), "p": (0, p)})
    assert costs["cost"]["error"] == pytest.approx(0.5 + 1 + 0 + 0.75)
    assert costs["cost"]["crossent"] == pytest.approx(-np.sum(a["labels"] * np.log(a["p"])), rel=1e-6)
    # default coeff 1; gradient -t/p, and nothing but zeros where t == 0
    np.testing.assert_allclose(net.output_grad("p"), -a["labels"] / a["p"], rtol=1e-6)
    t2 = rng.dirichlet(np.ones(5), 4)
    p2 = rng.uniform(0.1, 1, (4, 5))
    net, costs, a = run_cost(CROSSENT, "[cost]\ncoeff=0.7\n", {"labels": (1, t2), "p": (0, p2)})
    check_grads(net, a, lambda v: -0.7 * np.sum(v["labels"] * np.log(v["p"])), ["p"])


def test_crossent_through_softmax():
    rng = np.random.default_rng()
    n, k = 5, 6
    t = np.eye(k)[rng.integers(0, k, n)]
    x = rng.standard_normal((n, k)) * 2
    text = ("[labels]\ntype=data\ndataIdx=1\n[x]\ntype=data\ndataIdx=0\n[sm]\ntype=softmax\ninputs=x\n"
            "[cost]\ntype=cost.crossent\ninputs=labels,sm\n")

    def cost(v):
        z = v["x"] - v["x"].max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        return -1.5 * np.sum(v["labels"] * logp)

    net, costs, a = run_cost(text, "[cost]\ncoeff=1.5\n", {"labels": (1, t), "x": (0, x)})
    assert 1.5 * costs["cost"]["crossent"] == pytest.approx(cost(a), rel=1e-5)
    check_grads(net, a, cost, ["x"])


def test_crossent_zero_probability_uses_safelog():
    t = np.array([[1.0, 0.0]])
    p = np.array([[0.0, 1.0]])
    net, costs, a = run_cost(CROSSENT, None, {"labels": (1, t), "p": (0, p)})
    assert costs["cost"]["crossent"] == pytest.approx(50.0)
    assert np.all(np.isfinite(net.output_grad("p")))


# ---- cost.bce / cost.dce ----------------------------------------------------------------

def bce_cost(t, y, pw):
    return -np.sum(pw * t * safelog(y) + (1 - t) * safelog(1 - y))


def bce_top1_error(t, y):
    wrong = 0.0
    for tr, yr in zip(t, y):
        top = yr == yr.max()
        wrong += 1.0 - np.sum(tr * top) / top.sum()
    return wrong


def _bce_text(type_):
    return f"[labels]\ntype=data\ndataIdx=1\n[y]\ntype=data\ndataIdx=0\n[cost]\ntype={type_}\ninputs=labels,y\n"


@pytest.mark.parametrize("n", [1, 6])
def test_bce(n):
    rng = np.random.default_rng()
    k = int(rng.integers(1, 6))
    coeff, pw = float(np.round(rng.uniform(0.2, 2), 3)), float(np.round(rng.uniform(0.5, 3), 3))
    t = rng.integers(0, 2, (n, k)).astype(float)
    y = rng.uniform(0.05, 0.95, (n, k))
    net, costs, a = run_cost(_bce_text("cost.bce"), f"[cost]\ncoeff={coeff}\nposWeight={pw}\n",
                             {"labels": (1, t), "y": (0, y)})
    assert list(costs["cost"]) == ["crossent", "error", "top-1 error"]
    T, Y = a["labels"], a["y"]
    assert costs["cost"]["crossent"] == pytest.approx(bce_cost(T, Y, pw), rel=1e-6)
    assert costs["cost"]["error"] == pytest.approx(np.sum((Y > 0.5) != T) / k)
    assert costs["cost"]["top-1 error"] == pytest.approx(bce_top1_error(T, Y))
    check_grads(net, a, lambda v: coeff * bce_cost(v["labels"], v["y"], pw), ["y"])


def test_bce_through_logistic_neuron():
    rng = np.random.default_rng()
    n, k = 4, 5
    t = rng.integers(0, 2, (n, k)).astype(float)
    x = rng.standard_normal((n, k)) * 2
    text = ("[labels]\ntype=data\ndataIdx=1\n[x]\ntype=data\ndataIdx=0\n[sig]\ntype=neuron\ninputs=x\nneuron=logistic\n"
            "[cost]\ntype=cost.bce\ninputs=labels,sig\n")
    cost = lambda v: 0.8 * bce_cost(v["labels"], 1 / (1 + np.exp(-v["x"])), 2.0)  # noqa: E731
    net, costs, a = run_cost(text, "[cost]\ncoeff=0.8\nposWeight=2\n", {"labels": (1, t), "x": (0, x)})
    assert 0.8 * costs["cost"]["crossent"] == pytest.approx(cost(a), rel=1e-5)
    check_grads(net, a, cost, ["x"])


@pytest.mark.parametrize("type_", ["cost.bce", "cost.dce"])
@pytest.mark.parametrize("producer", ["neuron layer", "fc neuron=logistic"])
def test_bce_fused_with_logistic_keeps_saturated_gradients(type_, producer):
    """cuda-convnet2 (NeuronLayer::bpropSpecial) computes dCost/dx = coeff * ((1 - t) * y -
    posWeight * t * (1 - y)) in one step when a logistic feeds only cost.bce/dce. Where y rounds
    to 1 in float32 (x > ~17) this keeps the gradient of a confidently wrong unit
    (t = 0, x = 20: coeff), which 1 / max(1 - y, tiny) times y * (1 - y) = 0 would lose."""
    rng = np.random.default_rng()
    x1 = np.array([20.0, -20.0, 0.5, 3.0, -30.0, 25.0, 0.0])
    t1 = np.array([0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0])
    n = int(rng.integers(1, 5))
    x, t = np.tile(x1, (n, 1)), np.tile(t1, (n, 1))
    coeff, pw = float(np.round(rng.uniform(0.3, 2), 3)), float(np.round(rng.uniform(0.5, 3), 3))
    if producer == "neuron layer":
        mid = "[sig]\ntype=neuron\ninputs=x\nneuron=logistic\n"
        params = f"[cost]\ncoeff={coeff}\nposWeight={pw}\n"
    else:
        mid = "[sig]\ntype=fc\ninputs=x\noutputs=7\ninitW=0\nneuron=logistic\n"
        params = f"[sig]\nepsW=0\nepsB=0\nmomW=0\nmomB=0\nwc=0\n[cost]\ncoeff={coeff}\nposWeight={pw}\n"
    text = f"[labels]\ntype=data\ndataIdx=1\n[x]\ntype=data\ndataIdx=0\n{mid}[cost]\ntype={type_}\ninputs=labels,sig\n"
    dims = {0: 7, 1: 7}
    net = ccn.Net("layers.cfg", "params.cfg", dims, layers_text=text, params_text=params)
    if producer != "neuron layer":
        net.set("sig.weights[0]", np.eye(7, dtype=np.float32))
    net._net.set_data_grads(True)
    # a first pass over other data leaves the gradient buffers holding numbers, which a layer
    # wrongly told to assign would add to
    net.forward({0: rng.standard_normal(x.shape).astype(np.float32), 1: t.astype(np.float32)}, train=True)
    net.backward()
    net.forward({0: x.astype(np.float32), 1: t.astype(np.float32)}, train=True)
    net.backward()
    y = net.output("sig").astype(np.float64)
    assert [l.fused_into for l in net.layers if l.name == "sig"] == ["cost"]
    assert y[0, 0] == 1.0  # saturated in float32
    want = coeff * ((1 - t) * y - pw * t * (1 - y))
    np.testing.assert_allclose(net.output_grad("x"), want, rtol=1e-5, atol=1e-7)
    assert net.output_grad("x")[0, 0] == pytest.approx(coeff, rel=1e-6)


@pytest.mark.parametrize("producer", ["neuron layer", "fc neuron=logistic"])
@pytest.mark.parametrize("eager", [False, True])
def test_bce_fused_gradient_adds_to_what_another_consumer_wrote(producer, eager):
    # the logistic's input also feeds a later cost.sum2, whose gradient is written first
    rng = np.random.default_rng()
    n, k = 5, 4
    t = rng.integers(0, 2, (n, k)).astype(float)
    x = rng.standard_normal((n, k)) * 2
    if producer == "neuron layer":
        mid, extra = "[sig]\ntype=neuron\ninputs=x\nneuron=logistic\n", ""
        pre = lambda v: v["x"]  # noqa: E731
    else:
        mid = "[sig]\ntype=fc\ninputs=x\noutputs=4\ninitW=0.5\nneuron=logistic\n"
        extra = "[sig]\nepsW=0\nepsB=0\nmomW=0\nmomB=0\nwc=0\n"
    text = ("[labels]\ntype=data\ndataIdx=1\n[x]\ntype=data\ndataIdx=0\n" + mid +
            "[cost]\ntype=cost.bce\ninputs=labels,sig\n[sq]\ntype=cost.sum2\ninputs=x\n")
    params = extra + "[cost]\ncoeff=0.7\nposWeight=1.5\n[sq]\ncoeff=0.3\n"
    dims = {0: k, 1: k}
    net = ccn.Net("layers.cfg", "params.cfg", dims, layers_text=text, params_text=params)
    net._net.set_data_grads(True)
    net._net.set_grad_zero_eager(eager)
    if producer != "neuron layer":
        W = net.get("sig.weights[0]").astype(np.float64)
        b = net.get("sig.biases").astype(np.float64)
        pre = lambda v: v["x"] @ W + b  # noqa: E731
    assert [l.fused_into for l in net.layers if l.name == "sig"] == ["cost"]
    f32 = {"x": x.astype(np.float32), "labels": t.astype(np.float32)}
    for batch in (rng.standard_normal(x.shape).astype(np.float32), f32["x"]):  # the first leaves stale buffers
        net.forward({0: batch, 1: f32["labels"]}, train=True)
        net.backward()
    a = {k2: v.astype(np.float64) for k2, v in f32.items()}
    cost = lambda v: (0.7 * bce_cost(v["labels"], 1 / (1 + np.exp(-pre(v))), 1.5)  # noqa: E731
                      + 0.3 * np.sum(v["x"] ** 2))
    check_grads(net, a, cost, ["x"])


def test_bce_logistic_with_a_second_consumer_is_not_fused():
    """A logistic that also feeds another layer gets the cost's own gradient (the original's
    "stupid way"), which agrees with the fused one away from saturation."""
    rng = np.random.default_rng()
    n, k = 5, 4
    t = rng.integers(0, 2, (n, k)).astype(float)
    x = rng.standard_normal((n, k)) * 2
    text = ("[labels]\ntype=data\ndataIdx=1\n[x]\ntype=data\ndataIdx=0\n[sig]\ntype=neuron\ninputs=x\n"
            "neuron=logistic\n[cost]\ntype=cost.bce\ninputs=labels,sig\n[sq]\ntype=cost.sum2\ninputs=sig\n")
    cost = lambda v: 0.7 * bce_cost(v["labels"], 1 / (1 + np.exp(-v["x"])), 1.5) + 0.25 * np.sum(  # noqa: E731
        (1 / (1 + np.exp(-v["x"]))) ** 2)
    net, costs, a = run_cost(text, "[cost]\ncoeff=0.7\nposWeight=1.5\n[sq]\ncoeff=0.25\n",
                             {"labels": (1, t), "x": (0, x)})
    assert [l.fused_into for l in net.layers if l.name == "sig"] == [None]
    check_grads(net, a, cost, ["x"])


def test_a_softmax_with_a_logistic_neuron_feeding_bce_gets_no_logits():
    # fused through its neuron= (a logistic), but cost.bce takes no logits (only cost.logreg does)
    text = ("[labels]\ntype=data\ndataIdx=1\n[x]\ntype=data\ndataIdx=0\n[sm]\ntype=softmax\ninputs=x\n"
            "neuron=logistic\n[cost]\ntype=cost.bce\ninputs=labels,sm\n")
    net = ccn.Net("layers.cfg", "params.cfg", {0: 4, 1: 4}, layers_text=text, params_text="[cost]\ncoeff=1\n")
    info = {l.name: l for l in net.layers}
    assert info["sm"].fused_into == "cost" and info["cost"].fused_logits is None


def test_bce_edges_threshold_ties_and_safelog():
    t = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0], [0.0, 0.0, 1.0]])
    y = np.array([[0.5, 0.5, 0.2],    # 0.5 is not > 0.5 (1 wrong decision); max tied by a labelled and an
                                      # unlabelled class: top-1 credit 1/2
                  [0.0, 0.7, 0.7],    # both tied classes labelled: credit 1; decisions all right
                  [1.0, 0.0, 0.0]])   # y=1 with t=0 and y=0 with t=1: safelog(0) = -50 twice; 2 wrong
    net, costs, a = run_cost(_bce_text("cost.bce"), None, {"labels": (1, t), "y": (0, y)})
    c = costs["cost"]
    assert c["crossent"] == pytest.approx(bce_cost(t, y, 1.0), rel=1e-6)
    assert c["crossent"] > 100
    assert c["error"] == pytest.approx((1 + 0 + 2) / 3)
    assert c["top-1 error"] == pytest.approx(0.5 + 0 + 1)
    assert np.all(np.isfinite(net.output_grad("y")))


@pytest.mark.parametrize("n", [1, 7])
def test_dce(n):
    rng = np.random.default_rng()
    k = int(rng.integers(1, 5))
    coeff = float(np.round(rng.uniform(0.2, 2), 3))
    t = rng.integers(0, 2, (n, k)).astype(float)
    y = rng.uniform(0.05, 0.95, (n, k))
    net, costs, a = run_cost(_bce_text("cost.dce"), f"[cost]\ncoeff={coeff}\n", {"labels": (1, t), "y": (0, y)})
    T, Y = a["labels"], a["y"]
    c = costs["cost"]
    names = ["crossent", "error"] + [f"{w}[{j}]" for j in range(k) for w in ("declared positive", "positive", "true positive")]
    assert list(c) == names
    assert c["crossent"] == pytest.approx(bce_cost(T, Y, 1.0), rel=1e-6)
    assert c["error"] == pytest.approx(np.sum((Y > 0.5) != T) / k)
    dec = (Y > 0.5).astype(float)
    for j in range(k):
        assert c[f"declared positive[{j}]"] == dec[:, j].sum()
        assert c[f"positive[{j}]"] == T[:, j].sum()
        assert c[f"true positive[{j}]"] == np.sum(T[:, j] * (dec[:, j] == T[:, j]))
    check_grads(net, a, lambda v: coeff * bce_cost(v["labels"], v["y"], 1.0), ["y"])


@pytest.mark.parametrize("type_", ["cost.sum2", "cost.crossent", "cost.bce", "cost.dce"])
def test_zero_coeff_gives_zero_gradient(type_):
    rng = np.random.default_rng()
    t = np.eye(3)[rng.integers(0, 3, 4)]
    y = rng.uniform(0.1, 0.9, (4, 3))
    text = _bce_text(type_) if type_ != "cost.sum2" else "[y]\ntype=data\ndataIdx=0\n[cost]\ntype=cost.sum2\ninputs=y\n"
    data = {"labels": (1, t), "y": (0, y)} if type_ != "cost.sum2" else {"y": (0, y)}
    net, costs, a = run_cost(text, "[cost]\ncoeff=0\n", data)
    assert net.costs()[0]["coeff"] == 0
    np.testing.assert_array_equal(net.output_grad("y"), 0)


# ---- bad input --------------------------------------------------------------------------

def _build(text, dims, params=None):
    return ccn.Net("layers.cfg", "params.cfg" if params is not None else None, dims, layers_text=text,
                   params_text=params)


@pytest.mark.parametrize("type_, what", [("cost.crossent", "one label value per class"),
                                         ("cost.bce", "one label per output"),
                                         ("cost.dce", "one label per output")])
def test_label_and_output_sizes_differ(type_, what):
    with pytest.raises(ConfigError) as e:
        _build(_bce_text(type_), {0: 5, 1: 1})
    msg = str(e.value)
    assert "layers.cfg:9: in section [cost], key 'inputs'" in msg and what in msg
    assert "'labels' have 1 values per case" in msg and "'y' have 5" in msg


@pytest.mark.parametrize("type_", ["cost.crossent", "cost.bce", "cost.dce"])
def test_two_inputs_needed(type_):
    text = "[y]\ntype=data\ndataIdx=0\n" + f"[cost]\ntype={type_}\ninputs=y\n"
    with pytest.raises(ConfigError, match=r"\[cost\], key 'inputs': .*takes two inputs, labels then .*found 1"):
        _build(text, {0: 5})


def test_sum2_one_input():
    text = "[a]\ntype=data\ndataIdx=0\n[b]\ntype=data\ndataIdx=1\n[cost]\ntype=cost.sum2\ninputs=a,b\n"
    with pytest.raises(ConfigError, match=r"\[cost\], key 'inputs': cost.sum2 takes exactly one input, found 2"):
        _build(text, {0: 5, 1: 5})


@pytest.mark.parametrize("type_", ["cost.sum2", "cost.crossent", "cost.bce", "cost.dce"])
def test_children_rejected(type_):
    text = _bce_text(type_).replace("inputs=labels,y", "inputs=labels,y\nchildren=other") \
        if type_ != "cost.sum2" else "[y]\ntype=data\ndataIdx=0\n[cost]\ntype=cost.sum2\ninputs=y\nchildren=other\n"
    with pytest.raises(ConfigError, match=r"in section \[cost\], key 'children': aggregated cost layers"):
        _build(text, {0: 5, 1: 5})


def test_coeff_not_a_number():
    with pytest.raises(ConfigError, match=r"params.cfg:2: in section \[cost\], key 'coeff': expected a number, found 'big'"):
        _build(_bce_text("cost.bce"), {0: 5, 1: 5}, "[cost]\ncoeff=big\n")


def test_pos_weight_belongs_in_params_file():
    text = _bce_text("cost.bce") + "posWeight=2\n"
    with pytest.raises(ConfigError, match=r"layers.cfg:10: in section \[cost\], key 'posWeight': .*layer-params file"):
        _build(text, {0: 5, 1: 5})
