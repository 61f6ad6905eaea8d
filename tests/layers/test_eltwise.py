"""eltsum and eltmax against NumPy float64 references and finite differences."""

import numpy as np
import pytest

import ccn
from ccn.errors import ConfigError
from layercheck import check_layer


def _data_text(k):
    return "".join(f"[in{i}]\ntype=data\ndataIdx={i}\n" for i in range(k))


def _inputs(rng, k, n, d):
    return {f"in{i}": (i, rng.standard_normal((n, d))) for i in range(k)}


@pytest.mark.parametrize("n", [1, 5, 8])
def test_eltsum_coeffs_in_definition_file(n):
    rng = np.random.default_rng()
    k, d = int(rng.integers(1, 5)), int(rng.integers(1, 14))
    coeffs = np.round(rng.uniform(-2, 2, k), 3)
    text = _data_text(k) + f"[s]\ntype=eltsum\ninputs={','.join(f'in{i}' for i in range(k))}\n" \
                           f"coeffs={','.join(str(c) for c in coeffs)}\n"
    check_layer(text, _inputs(rng, k, n, d), lambda a: sum(c * a[f"in{i}"] for i, c in enumerate(coeffs)), "s")


def test_eltsum_params_file_wins_and_reload():
    """cuda-convnet2 reads coeffs from the layer-params file; it overrides the definition file."""
    rng = np.random.default_rng()
    n, d = 3, 7
    text = _data_text(3) + "[s]\ntype=eltsum\ninputs=in0,in1,in2\ncoeffs=5,5,5\nneuron=tanh[1.5,0.5]\n"
    params = "[s]\ncoeffs=0.5,-1.25,2\n"
    coeffs = [0.5, -1.25, 2.0]
    net = check_layer(text, _inputs(rng, 3, n, d),
                      lambda a: 1.5 * np.tanh(0.5 * sum(c * a[f"in{i}"] for i, c in enumerate(coeffs))),
                      "s", params_text=params)
    # Resuming with edited coeffs takes effect.
    net.reload_params("<edited>", "[s]\ncoeffs=1\n")
    xs = [rng.standard_normal((n, d)).astype(np.float32) for _ in range(3)]
    net.forward({i: x for i, x in enumerate(xs)})
    np.testing.assert_allclose(net.output("s"), 1.5 * np.tanh(0.5 * sum(xs)), rtol=1e-5, atol=1e-6)


def test_eltsum_default_coeffs_and_image_shape():
    rng = np.random.default_rng()
    x = rng.standard_normal((2, 3, 4, 4))
    y = rng.standard_normal((2, 3, 4, 4))
    text = _data_text(2) + "[s]\ntype=eltsum\ninputs=in0,in1\n"
    net = check_layer(text, {"in0": (0, x), "in1": (1, y)}, lambda a: a["in0"] + a["in1"], "s")
    assert net.layer("s").shape == (3, 4, 4)


def _separated(rng, k, n, d, gap=1e-3):
    """k inputs whose values differ by more than gap at every position (no near-ties)."""
    while True:
        xs = rng.standard_normal((k, n, d))
        s = np.sort(xs, axis=0)
        if k < 2 or np.min(np.diff(s, axis=0)) > gap:
            return xs


@pytest.mark.parametrize("k", [2, 3, 4])
def test_eltmax(k):
    rng = np.random.default_rng()
    n, d = int(rng.choice([1, 3, 7])), int(rng.integers(1, 12))
    xs = _separated(rng, k, n, d)
    text = _data_text(k) + f"[m]\ntype=eltmax\ninputs={','.join(f'in{i}' for i in range(k))}\n"
    check_layer(text, {f"in{i}": (i, xs[i]) for i in range(k)},
                lambda a: np.max(np.stack([a[f"in{i}"] for i in range(k)]), axis=0), "m")


def test_eltmax_with_neuron_uses_its_own_output():
    rng = np.random.default_rng()
    xs = _separated(rng, 2, 4, 6)
    text = _data_text(2) + "[m]\ntype=eltmax\ninputs=in0,in1\nneuron=logistic\n"
    check_layer(text, {"in0": (0, xs[0]), "in1": (1, xs[1])},
                lambda a: 1 / (1 + np.exp(-np.maximum(a["in0"], a["in1"]))), "m")


def test_eltmax_ties_all_get_the_gradient():
    """As cuda-convnet2 (output == input comparison): every input equal to the max gets dout."""
    x = np.array([[1.0, 2.0, -3.0, 0.5]], dtype=np.float32)
    y = np.array([[1.0, 1.0, -3.0, 0.25]], dtype=np.float32)
    z = np.array([[0.0, 2.0, -3.0, 0.5]], dtype=np.float32)
    text = _data_text(3) + "[m]\ntype=eltmax\ninputs=in0,in1,in2\n"
    net = ccn.Net("<t>", None, {0: 4, 1: 4, 2: 4}, layers_text=text)
    net._net.set_data_grads(True)
    net.forward({0: x, 1: y, 2: z})
    np.testing.assert_array_equal(net.output("m"), [[1.0, 2.0, -3.0, 0.5]])
    g = np.array([[10.0, 20.0, 30.0, 40.0]], dtype=np.float32)
    net.backward({"m": g})
    np.testing.assert_array_equal(net.output_grad("in0"), [[10, 20, 30, 40]])
    np.testing.assert_array_equal(net.output_grad("in1"), [[10, 0, 30, 0]])
    np.testing.assert_array_equal(net.output_grad("in2"), [[0, 20, 30, 40]])


# ---- bad input --------------------------------------------------------------------------

def _net(text, dims, params=None):
    return ccn.Net("layers.cfg", "params.cfg" if params is not None else None, dims, layers_text=text,
                   params_text=params)


@pytest.mark.parametrize("type_", ["eltsum", "eltmax"])
def test_inputs_of_different_sizes(type_):
    text = _data_text(2) + f"[e]\ntype={type_}\ninputs=in0,in1\n"
    with pytest.raises(ConfigError) as e:
        _net(text, {0: (3, 4, 4), 1: (2, 4, 4)})
    msg = str(e.value)
    for part in ["layers.cfg", "[e]", "'inputs'", "'in0' is 3x4x4 (48 values)", "'in1' is 2x4x4 (32 values)"]:
        assert part in msg


def test_eltmax_needs_two_inputs():
    with pytest.raises(ConfigError, match=r"\[m\].*at least two inputs, found 1"):
        _net(_data_text(1) + "[m]\ntype=eltmax\ninputs=in0\n", {0: 5})


def test_eltsum_coeffs_count():
    with pytest.raises(ConfigError, match=r"\[s\], key 'coeffs': expected 3 comma-separated values"):
        _net(_data_text(3) + "[s]\ntype=eltsum\ninputs=in0,in1,in2\ncoeffs=1,2\n", {0: 5, 1: 5, 2: 5})


def test_eltsum_coeffs_not_numbers_in_params_file():
    text = _data_text(2) + "[s]\ntype=eltsum\ninputs=in0,in1\n"
    with pytest.raises(ConfigError, match=r"params.cfg:2: in section \[s\], key 'coeffs': expected a number, found 'x'"):
        _net(text, {0: 5, 1: 5}, params="[s]\ncoeffs=1,x\n")


def test_eltsum_without_inputs():
    with pytest.raises(ConfigError, match=r"\[s\]: missing required key 'inputs'"):
        _net(_data_text(1) + "[s]\ntype=eltsum\n", {0: 5})
