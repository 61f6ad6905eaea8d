"""concat, pass and sum against NumPy float64 references and finite differences."""

import numpy as np
import pytest

import ccn
from ccn.errors import ConfigError
from layercheck import check_layer


def _data_text(k):
    return "".join(f"[in{i}]\ntype=data\ndataIdx={i}\n" for i in range(k))


@pytest.mark.parametrize("type_", ["concat", "pass"])
@pytest.mark.parametrize("n", [1, 6])
def test_concat_images_stack_channels(type_, n):
    rng = np.random.default_rng()
    k, s = int(rng.integers(2, 5)), int(rng.integers(1, 5))
    chans = [int(rng.integers(1, 4)) for _ in range(k)]
    data = {f"in{i}": (i, rng.standard_normal((n, c, s, s))) for i, c in enumerate(chans)}
    text = _data_text(k) + f"[c]\ntype={type_}\ninputs={','.join(f'in{i}' for i in range(k))}\n"
    net = check_layer(text, data, lambda a: np.concatenate([a[f"in{i}"].reshape(n, -1) for i in range(k)], axis=1), "c")
    assert net.layer("c").shape == (sum(chans), s, s)


@pytest.mark.parametrize("type_", ["concat", "pass"])
def test_concat_mixed_shapes_is_flat_and_in_input_order(type_):
    rng = np.random.default_rng()
    n = 3
    a, b, c = rng.standard_normal((n, 2, 3, 3)), rng.standard_normal((n, 5)), rng.standard_normal((n, 1, 2, 2))
    text = _data_text(3) + f"[c]\ntype={type_}\ninputs=in1,in0,in2\nneuron=square\n"
    data = {"in0": (0, a), "in1": (1, b), "in2": (2, c)}
    net = check_layer(text, data, lambda v: np.concatenate(
        [v["in1"].reshape(n, -1), v["in0"].reshape(n, -1), v["in2"].reshape(n, -1)], axis=1) ** 2, "c")
    assert net.layer("c").shape == (5 + 18 + 4, 1, 1)


def test_pass_single_input_is_identity():
    rng = np.random.default_rng()
    x = rng.standard_normal((5, 3, 2, 2))
    net = check_layer(_data_text(1) + "[p]\ntype=pass\ninputs=in0\n", {"in0": (0, x)},
                      lambda a: a["in0"], "p")
    assert net.layer("p").shape == (3, 2, 2)


def test_concat_same_input_twice_accumulates_gradient():
    rng = np.random.default_rng()
    x = rng.standard_normal((4, 5))
    check_layer(_data_text(1) + "[c]\ntype=concat\ninputs=in0,in0\n", {"in0": (0, x)},
                lambda a: np.concatenate([a["in0"], a["in0"]], axis=1), "c")


def _sum_ref(x, stride):
    n, c, h, w = x.shape
    return x.reshape(n, c // stride, stride, h, w).sum(axis=2).reshape(n, -1)


@pytest.mark.parametrize("n", [1, 7])
def test_sum_image_groups_of_channels(n):
    rng = np.random.default_rng()
    stride = int(rng.integers(1, 4))
    c, s = stride * int(rng.integers(1, 4)), int(rng.integers(1, 5))
    x = rng.standard_normal((n, c, s, s))
    net = check_layer(_data_text(1) + f"[s]\ntype=sum\ninputs=in0\nstride={stride}\n", {"in0": (0, x)},
                      lambda a: _sum_ref(a["in0"], stride), "s")
    assert net.layer("s").shape == (c // stride, s, s)


def test_sum_flat_consecutive_groups_default_stride():
    rng = np.random.default_rng()
    x = rng.standard_normal((3, 12))
    check_layer(_data_text(1) + "[s]\ntype=sum\ninputs=in0\nstride=4\n", {"in0": (0, x)},
                lambda a: a["in0"].reshape(3, 3, 4).sum(axis=2), "s")
    net = check_layer(_data_text(1) + "[s]\ntype=sum\ninputs=in0\n", {"in0": (0, x)}, lambda a: a["in0"], "s")
    assert net.layer("s").shape == (12, 1, 1)


# ---- bad input --------------------------------------------------------------------------

def test_sum_stride_must_divide_channels():
    with pytest.raises(ConfigError) as e:
        ccn.Net("layers.cfg", None, {0: (3, 4, 4)}, layers_text=_data_text(1) + "[s]\ntype=sum\ninputs=in0\nstride=2\n")
    msg = str(e.value)
    assert "layers.cfg:7" in msg and "[s], key 'stride'" in msg and "3 channels (3x4x4)" in msg and "stride=2" in msg


@pytest.mark.parametrize("value, what", [("0", "positive integer"), ("two", "an integer")])
def test_sum_bad_stride(value, what):
    with pytest.raises(ConfigError, match=rf"\[s\], key 'stride'.*{what}"):
        ccn.Net("layers.cfg", None, {0: 6}, layers_text=_data_text(1) + f"[s]\ntype=sum\ninputs=in0\nstride={value}\n")


def test_sum_one_input_only():
    with pytest.raises(ConfigError, match=r"\[s\], key 'inputs'.*exactly one input, found 2"):
        ccn.Net("layers.cfg", None, {0: 6, 1: 6}, layers_text=_data_text(2) + "[s]\ntype=sum\ninputs=in0,in1\n")


@pytest.mark.parametrize("type_", ["concat", "pass"])
def test_concat_needs_inputs(type_):
    with pytest.raises(ConfigError, match=r"\[c\]: missing required key 'inputs'"):
        ccn.Net("layers.cfg", None, {0: 6}, layers_text=_data_text(1) + f"[c]\ntype={type_}\n")


def test_concat_unknown_key_is_rejected():
    with pytest.raises(ConfigError, match=r"layers.cfg:7: in section \[c\], key 'stride': not a key of layer type 'concat'"):
        ccn.Net("layers.cfg", None, {0: 6}, layers_text=_data_text(1) + "[c]\ntype=concat\ninputs=in0\nstride=2\n")
