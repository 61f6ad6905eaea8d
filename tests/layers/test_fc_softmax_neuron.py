"""fc, softmax and neuron layers against NumPy float64 references and finite differences."""

import numpy as np
import pytest

import ccn

from layercheck import check_layer

NEURONS = {
    "ident": lambda x: x,
    "logistic": lambda x: 1 / (1 + np.exp(-x)),
    "tanh[1.7,0.66]": lambda x: 1.7 * np.tanh(0.66 * x),
    "relu": lambda x: np.maximum(x, 0),
    "brelu[1.3]": lambda x: np.minimum(1.3, np.maximum(0, x)),
    "softrelu": lambda x: np.where(x > 4, x, np.log1p(np.exp(np.minimum(x, 4)))),
    "abs": np.abs,
    "square": lambda x: x * x,
    "linear[2.5,-0.3]": lambda x: 2.5 * x - 0.3,
    "drelu[0.7]": lambda x: x - 0.7 * np.tanh(x / 0.7),
}


@pytest.mark.parametrize("neuron", sorted(NEURONS))
def test_neuron_layer(neuron):
    rng = np.random.default_rng()
    n, d = int(rng.integers(1, 9)), int(rng.integers(1, 13))
    x = rng.standard_normal((n, d)) * 2
    x[np.abs(x) < 0.05] += 0.1  # keep finite differences away from kinks
    x[np.abs(np.abs(x) - 1.3) < 0.05] += 0.1
    x[np.abs(x - 3.98) < 0.05] += 0.1  # softrelu's gradient is 1 from its output 4 on (see below)
    text = f"[data]\ntype=data\ndataIdx=0\n[n]\ntype=neuron\ninputs=data\nneuron={neuron}\n"
    check_layer(text, {"data": (0, x)}, lambda a: NEURONS[neuron](a["data"]), "n")


@pytest.mark.parametrize("where", ["neuron layer", "fc neuron="])
def test_neuron_gradients_at_the_originals_edges(where):
    """The derivatives at the points where the original's gradient operators made a choice
    (cuda-convnet2 neurons.cuh): abs gives -1 at x = 0 (x > 0 ? 1 : -1); softrelu's derivative
    is taken from its output y, 1 where y > 4, which starts at x = log(e^4 - 1) ~ 3.9815, and
    1 - e^-y = sigmoid(x) below. Checked through a neuron layer and through neuron= on fc
    (identity weights), where the net may apply the neuron in place."""
    rng = np.random.default_rng()
    x = np.array([[0.0, 3.99, 3.97, -2.0, 5.0, 0.0]], np.float32)
    n = int(rng.integers(1, 6))
    x = np.repeat(x, n, axis=0)
    G = rng.uniform(0.5, 2.0, x.shape).astype(np.float32)
    sig = 1 / (1 + np.exp(-x.astype(np.float64)))
    want = {"abs": np.where(x > 0, 1.0, -1.0), "softrelu": np.where(x > 3.9816, 1.0, sig)}
    for neuron, d in want.items():
        if where == "neuron layer":
            text = f"[data]\ntype=data\ndataIdx=0\n[n]\ntype=neuron\ninputs=data\nneuron={neuron}\n"
            net = ccn.Net("<t>", None, {0: 6}, layers_text=text)
        else:
            text = (f"[data]\ntype=data\ndataIdx=0\n[n]\ntype=fc\ninputs=data\noutputs=6\nneuron={neuron}\n"
                    "initW=0\n")
            params = "[n]\nepsW=0\nepsB=0\nmomW=0\nmomB=0\nwc=0\n"
            net = ccn.Net("<t>", "<p>", {0: 6}, layers_text=text, params_text=params)
            net.set("n.weights[0]", np.eye(6, dtype=np.float32))
        net._net.set_data_grads(True)
        net.forward({0: x}, train=True)
        net.backward({"n": G})
        np.testing.assert_allclose(net.output_grad("data"), G * d, rtol=1e-6, atol=1e-7, err_msg=f"{neuron}, {where}")


@pytest.mark.parametrize("neuron", ["sqrt", "log[1.5]"])
def test_neuron_positive_domain(neuron):
    rng = np.random.default_rng()
    x = rng.uniform(0.3, 3, size=(5, 7))
    f = {"sqrt": np.sqrt, "log[1.5]": lambda v: np.log(1.5 + v)}[neuron]
    text = f"[data]\ntype=data\ndataIdx=0\n[n]\ntype=neuron\ninputs=data\nneuron={neuron}\n"
    check_layer(text, {"data": (0, x)}, lambda a: f(a["data"]), "n")


@pytest.mark.parametrize("n", [1, 7, 33])
def test_fc_two_inputs_with_neuron(n):
    rng = np.random.default_rng()
    a, b = rng.standard_normal((n, 5)), rng.standard_normal((n, 3))
    text = """
[a]
type=data
dataIdx=0
[b]
type=data
dataIdx=1
[fc]
type=fc
inputs=a,b
outputs=4
neuron=tanh[1.2,0.8]
"""

    def ref(v):
        z = v["a"] @ v["fc.weights[0]"] + v["b"] @ v["fc.weights[1]"] + v["fc.biases"]
        return 1.2 * np.tanh(0.8 * z)

    check_layer(text, {"a": (0, a), "b": (1, b)}, ref, "fc")


def test_fc_weight_source_naming_itself():
    # inputs a, b, a with weightSource=,,fc[0]: matrix 2 is matrix 0; matrix 1 is its own
    rng = np.random.default_rng()
    a, b = rng.standard_normal((3, 5)), rng.standard_normal((3, 5))
    text = """
[a]
type=data
dataIdx=0
[b]
type=data
dataIdx=1
[fc]
type=fc
inputs=a,b,a
outputs=4
weightSource=,,fc[0]
"""

    def ref(v):
        return 2 * v["a"] @ v["fc.weights[0]"] + v["b"] @ v["fc.weights[1]"] + v["fc.biases"]

    net = check_layer(text, {"a": (0, a), "b": (1, b)}, ref, "fc")
    assert net.layer("fc").weights == ["fc.weights[0]", "fc.weights[1]", "fc.weights[0]"]


def test_softmax():
    rng = np.random.default_rng()
    x = rng.standard_normal((6, 11)) * 3
    text = "[data]\ntype=data\ndataIdx=0\n[sm]\ntype=softmax\ninputs=data\n"

    def ref(v):
        e = np.exp(v["data"] - v["data"].max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    check_layer(text, {"data": (0, x)}, ref, "sm")
