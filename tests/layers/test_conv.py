"""type=conv against an independent NumPy float64 reference (tests/layers/convref.py) and finite differences."""

import os
import re

import numpy as np
import pytest

import ccn
from ccn.errors import ConfigError
from convref import add_bias, conv_ref, modules_x
from layercheck import check_layer, numeric_grads, assert_close

DATA = "[data]\ntype=data\ndataIdx=0\n"


def conv_text(name="conv", inputs="data", **keys):
    lines = [f"[{name}]", "type=conv", f"inputs={inputs}"] + [f"{k}={v}" for k, v in keys.items()]
    return "\n".join(lines) + "\n"


def random_case(rng):
    groups = int(rng.integers(1, 4))
    cf = int(rng.integers(1, 3))
    fs = int(rng.integers(1, 5))
    stride = int(rng.integers(1, min(3, fs) + 1))
    pad = int(rng.integers(0, 3))
    size = int(rng.integers(max(1, fs - 2 * pad), 8))
    return dict(groups=groups, channels=groups * cf, filters=int(rng.integers(1, 3)), filterSize=fs, stride=stride,
                padding=pad, size=size, n=int(rng.choice([1, 2, 3, 5, 7])), shared=bool(rng.integers(0, 2)))


def run_conv_case(c, rng, seed):
    x = rng.standard_normal((c["n"], c["channels"], c["size"], c["size"]))
    F = c["filters"] * c["groups"]
    text = DATA + conv_text(channels=c["channels"], filters=c["filters"], filterSize=c["filterSize"],
                            stride=c["stride"], padding=c["padding"], groups=c["groups"],
                            sharedBiases=int(c["shared"]), partialSum=1)

    def ref(v):
        out = conv_ref(v["data"], v["conv.weights[0]"], c["filterSize"], c["padding"], c["stride"], c["groups"], F)
        return add_bias(out, v["conv.biases"], c["shared"])

    try:
        net = check_layer(text, {"data": (0, x)}, ref, "conv", seed=seed)
    except AssertionError as e:
        raise AssertionError(f"case {c} (seed {seed}): {e}") from None
    M = modules_x(c["size"], c["filterSize"], c["padding"], c["stride"])
    info = net.layer("conv")
    assert info.shape == (F, M, M)
    Kg = c["channels"] // c["groups"] * c["filterSize"] ** 2
    assert net.get("conv.weights[0]").shape == (Kg, F)
    assert net.get("conv.biases").shape == ((F, 1) if c["shared"] else (F * M * M, 1))
    assert info.flops_per_case == 2 * M * M * F * Kg  # a multiply-add is 2 FLOPs


@pytest.mark.parametrize("trial", range(10))
def test_conv_random_geometry(trial):
    seed = int(np.random.SeedSequence().entropy % 2**32)
    rng = np.random.default_rng(seed)
    run_conv_case(random_case(rng), rng, seed)


@pytest.mark.parametrize("stride,groups,n", [(1, 1, 1), (2, 3, 7), (3, 2, 5)])
def test_conv_fixed_corners(stride, groups, n):
    """Strides 1-3, groups 1-3, minibatch 1 and odd sizes, always present whatever the random draws."""
    seed = int(np.random.SeedSequence().entropy % 2**32)
    rng = np.random.default_rng(seed)
    c = dict(groups=groups, channels=2 * groups, filters=2, filterSize=3, stride=stride, padding=stride - 1, size=7,
             n=n, shared=stride != 2)
    run_conv_case(c, rng, seed)


def test_conv_overhang_beyond_padding():
    # 6x6 image, filterSize 3, stride 2, no padding: modulesX = 1 + ceil(3/2) = 3, and the last window covers
    # columns 4..6, one past the image although padding is 0.
    rng = np.random.default_rng()
    x = rng.standard_normal((3, 2, 6, 6))
    text = DATA + conv_text(channels=2, filters=3, filterSize=3, stride=2, padding=0)
    net = check_layer(text, {"data": (0, x)},
                      lambda v: add_bias(conv_ref(v["data"], v["conv.weights[0]"], 3, 0, 2, 1, 3), v["conv.biases"], True),
                      "conv")
    assert net.layer("conv").shape == (3, 3, 3)
    # The last module column reads x = 4, 5, 6; x = 6 is outside the image, so changing the filters' fx = 2 taps
    # must leave that column unchanged (it reads zeros there) and change the others.
    W = net.get("conv.weights[0]").reshape(2, 3, 3, 3)  # c, fy, fx, filter
    out1 = net.output("conv").reshape(3, 3, 3, 3).copy()
    W[:, :, 2, :] += 1.0
    net.set("conv.weights[0]", W.reshape(18, 3))
    net.forward({0: x.reshape(3, -1)})
    out2 = net.output("conv").reshape(3, 3, 3, 3)
    np.testing.assert_allclose(out2[..., 2], out1[..., 2], rtol=1e-6, atol=1e-6)
    assert np.abs(out2[..., :2] - out1[..., :2]).max() > 0.1


def test_conv_two_inputs_own_geometry():
    rng = np.random.default_rng()
    n = 3
    a = rng.standard_normal((n, 2, 7, 7))   # fs 3, pad 1, stride 1 -> 7x7
    b = rng.standard_normal((n, 4, 5, 5))   # fs 3, pad 2, stride 1 -> 7x7, groups 2
    text = ("[a]\ntype=data\ndataIdx=0\n[b]\ntype=data\ndataIdx=1\n" +
            conv_text(inputs="a,b", channels="2,4", filters="4,2", filterSize="3,3", padding="1,2", stride=1,
                      groups="1,2", initW="0.1,0.2", neuron="tanh[1.1,0.7]"))

    def ref(v):
        o = conv_ref(v["a"], v["conv.weights[0]"], 3, 1, 1, 1, 4) + conv_ref(v["b"], v["conv.weights[1]"], 3, 2, 1, 2, 4)
        return 1.1 * np.tanh(0.7 * add_bias(o, v["conv.biases"], True))

    net = check_layer(text, {"a": (0, a), "b": (1, b)}, ref, "conv")
    assert net.get("conv.weights[0]").shape == (2 * 9, 4)
    assert net.get("conv.weights[1]").shape == (2 * 9, 4)


def test_conv_chunked_path(monkeypatch):
    # A tiny unfold budget forces one case per chunk (and an odd leftover).
    monkeypatch.setenv("CCN_UNFOLD_BYTES", "1")
    rng = np.random.default_rng()
    x = rng.standard_normal((5, 3, 5, 5))
    text = DATA + conv_text(channels=3, filters=1, groups=3, filterSize=2, stride=2, padding=1, sharedBiases=0)
    check_layer(text, {"data": (0, x)},
                lambda v: add_bias(conv_ref(v["data"], v["conv.weights[0]"], 2, 1, 2, 3, 3), v["conv.biases"], False),
                "conv")


def test_conv_weight_source_gradients_add_up():
    rng = np.random.default_rng()
    n = 3
    x = rng.standard_normal((n, 2, 5, 5))
    y = rng.standard_normal((n, 2, 6, 6))
    text = ("[x]\ntype=data\ndataIdx=0\n[y]\ntype=data\ndataIdx=1\n" +
            conv_text("c1", "x", channels=2, filters=3, filterSize=3, padding=1) +
            conv_text("c2", "y", channels=2, filters=3, filterSize=3, stride=2, padding=0, weightSource="c1"))
    net = ccn.Net("<test-layers>", None, {0: (2, 5, 5), 1: (2, 6, 6)}, layers_text=text)
    net._net.set_data_grads(True)
    assert [p.name for p in net.params if not p.is_bias] == ["c1.weights[0]"]
    W = rng.standard_normal((18, 3)).astype(np.float32)
    b1, b2 = (rng.standard_normal((3, 1)).astype(np.float32) for _ in range(2))
    net.set("c1.weights[0]", W)
    net.set("c1.biases", b1)
    net.set("c2.biases", b2)
    net.forward({0: x.reshape(n, -1), 1: y.reshape(n, -1)}, train=True)

    def both(v):
        o1 = add_bias(conv_ref(v["x"], v["W"], 3, 1, 1, 1, 3), v["b1"], True)
        o2 = add_bias(conv_ref(v["y"], v["W"], 3, 0, 2, 1, 3), v["b2"], True)
        return np.concatenate([o1.reshape(n, -1), o2.reshape(n, -1)], axis=1)

    arrays = {"x": x, "y": y, "W": W.astype(np.float64), "b1": b1.astype(np.float64), "b2": b2.astype(np.float64)}
    ours = np.concatenate([net.output("c1"), net.output("c2")], axis=1)
    assert_close(ours, both(arrays), 2e-4, 2e-5, "forward")
    G = rng.standard_normal(ours.shape)
    k = net.output("c1").shape[1]
    net._net.zero_param_grads()
    net.backward({"c1": G[:, :k].astype(np.float32), "c2": G[:, k:].astype(np.float32)})
    num = numeric_grads(both, arrays, G)
    assert_close(net.get("c1.weights[0]", "grad"), num["W"], 2e-3, 2e-4, "shared weight gradient")
    assert_close(net.get("c1.biases", "grad"), num["b1"], 2e-3, 2e-4, "c1 bias gradient")
    assert_close(net.get("c2.biases", "grad"), num["b2"], 2e-3, 2e-4, "c2 bias gradient")
    assert_close(net.output_grad("x"), num["x"].reshape(n, -1), 2e-3, 2e-4, "x gradient")
    assert_close(net.output_grad("y"), num["y"].reshape(n, -1), 2e-3, 2e-4, "y gradient")


def test_conv_weight_source_naming_itself():
    # cuda-convnet2: weightSource may name the layer itself for a matrix of a lower input index;
    # a bare name means matrix 0. One filter bank then serves all three inputs (b twice).
    rng = np.random.default_rng()
    n = 2
    a = rng.standard_normal((n, 3, 5, 5))
    b = rng.standard_normal((n, 3, 7, 7))
    text = ("[a]\ntype=data\ndataIdx=0\n[b]\ntype=data\ndataIdx=1\n" +
            conv_text(inputs="a,b,b", channels="3,3,3", filters="4,4,4", filterSize="3,3,3", padding="1,0,0",
                      stride="1,1,1", weightSource=",conv,conv[0]", neuron="tanh[1.1,0.7]"))

    def ref(v):
        W = v["conv.weights[0]"]
        o = conv_ref(v["a"], W, 3, 1, 1, 1, 4) + 2 * conv_ref(v["b"], W, 3, 0, 1, 1, 4)
        return 1.1 * np.tanh(0.7 * add_bias(o, v["conv.biases"], True))

    net = check_layer(text, {"a": (0, a), "b": (1, b)}, ref, "conv")
    assert net.layer("conv").weights == ["conv.weights[0]"] * 3
    assert [(p.name, p.shared_by) for p in net.params] == [("conv.weights[0]", 2), ("conv.biases", 0)]


def read_section(path, name):
    """The lines of one [section] of a reference file, verbatim."""
    out, inside = [], False
    for line in open(path):
        s = line.strip()
        if s.startswith("["):
            inside = s == f"[{name}]"
        if inside:
            out.append(line)
    return "".join(out)


def test_imagenet_conv1_shape(reference_dir):
    path = os.path.join(reference_dir, "cuda-convnet2", "layers-imagenet-1gpu.cfg")
    conv1 = read_section(path, "conv1")
    assert "filterSize=11" in conv1 and "stride=4" in conv1
    text = DATA + conv1
    net = ccn.Net("<imagenet-conv1>", None, {0: (3, 224, 224)}, layers_text=text)
    info = net.layer("conv1")
    assert info.shape == (64, 55, 55)
    assert net.get("conv1.weights[0]").shape == (3 * 11 * 11, 64)
    assert info.flops_per_case == 2 * 55 * 55 * 64 * 363
    # One case forward against the reference (no gradients: too big for finite differences).
    rng = np.random.default_rng()
    x = rng.standard_normal((1, 3, 224, 224))
    W = rng.standard_normal((363, 64)) * 0.05
    b = rng.standard_normal((64, 1))
    net.set("conv1.weights[0]", W)
    net.set("conv1.biases", b)
    net.forward({0: x.reshape(1, -1).astype(np.float32)})
    pre = add_bias(conv_ref(x.astype(np.float32).astype(np.float64), W.astype(np.float32).astype(np.float64), 11, 0,
                            4, 1, 64), b.astype(np.float32).astype(np.float64), True)
    neuron = re.search(r"^neuron=(\w+)", conv1, re.M)
    ref = np.maximum(pre, 0) if neuron and neuron.group(1) == "relu" else pre
    assert_close(net.output("conv1"), ref.reshape(1, -1), 1e-4, 1e-4, "imagenet conv1 forward")


def test_conv_groups_filters_are_per_group():
    # As in cuda-convnet's layer.py, filters counts the filters of one group: 3 groups x 4 = 12 outputs.
    text = DATA + conv_text(channels=6, filters=4, groups=3, filterSize=3, padding=1)
    net = ccn.Net("<l>", None, {0: (6, 5, 5)}, layers_text=text)
    assert net.layer("conv").shape == (12, 5, 5)
    assert net.get("conv.weights[0]").shape == (2 * 9, 12)


def test_conv_lifted_gpu_restrictions():
    # channels not a multiple of 4 with groups, 5 filters (not a multiple of 16), partialSum not dividing.
    text = DATA + conv_text(channels=6, filters=5, groups=2, filterSize=2, partialSum=7, sumWidth=3)
    net = ccn.Net("<l>", None, {0: (6, 4, 4)}, layers_text=text)
    assert net.layer("conv").shape == (10, 3, 3)


BAD = [
    (dict(channels=3, groups=2), "groups", "cannot be split"),
    (dict(stride=4, filterSize=3), "stride", "larger than filterSize"),
    (dict(filterSize=0), "filterSize", "at least 1"),
    (dict(padding=-1), "padding", "0 or more"),
    (dict(channels=5), "channels", "not a square image"),
    (dict(channels=2), "channels", "not a multiple of channels=2"),
    (dict(filterSize=9, stride=1), "filterSize", "larger than the 5x5 input image"),
    (dict(modulesX=2, stride=1), "modulesX", "does not cover"),
    (dict(filters=0), "filters", "at least 1"),
    (dict(groups=0), "groups", "at least 1"),
    (dict(channels="3,3"), "channels", "1 comma-separated value"),
    (dict(randSparse=1), "randSparse", "groups of at least 2"),
    (dict(filterChannels=2), "filterChannels", "need randSparse"),
    (dict(randSparse="maybe"), "randSparse", "boolean"),
    (dict(sharedBiases="maybe"), "sharedBiases", "boolean"),
]


@pytest.mark.parametrize("keys,key,msg", BAD, ids=[f"{b[1]}-{i}" for i, b in enumerate(BAD)])
def test_conv_bad_keys(keys, key, msg):
    base = dict(channels=3, filters=2, filterSize=3, padding=1, stride=1)
    base.update(keys)
    text = DATA + conv_text(**base)  # 3 x 5 x 5 images as a flat 75
    with pytest.raises(ConfigError) as e:
        ccn.Net("<test-layers>", None, {0: 75}, layers_text=text)
    m = str(e.value)
    assert re.search(r"<test-layers>:\d+", m), m
    assert "[conv]" in m and f"key '{key}'" in m and msg in m, m


def test_conv_inputs_must_agree():
    text = ("[a]\ntype=data\ndataIdx=0\n[b]\ntype=data\ndataIdx=1\n" +
            conv_text(inputs="a,b", channels="1,1", filters=2, filterSize="3,3", padding="1,0"))
    with pytest.raises(ConfigError) as e:
        ccn.Net("<test-layers>", None, {0: (1, 5, 5), 1: (1, 5, 5)}, layers_text=text)
    m = str(e.value)
    assert "<test-layers>:" in m and "'conv'" in m and "same shape" in m and "2x5x5" in m and "2x3x3" in m, m


def test_conv_weight_source_must_be_conv():
    text = (DATA + "[fc]\ntype=fc\ninputs=data\noutputs=2\n" +
            conv_text("c2", channels=1, filters=2, filterSize=5, weightSource="fc"))
    with pytest.raises(ConfigError) as e:
        ccn.Net("<test-layers>", None, {0: (1, 5, 5)}, layers_text=text)
    m = str(e.value)
    assert "[c2]" in m and "key 'weightSource'" in m and "type fc" in m, m


def _wc_norm_reference(w, wmin, wmax):
    """cuda-convnet2's ConvLayer::_constrainWeights: s = sqrt(sum (w - mean)^2) / rows per
    column (filter); the column is scaled by wmin / s below wmin and by wmax / s above wmax."""
    w = np.asarray(w, np.float64)
    s = np.sqrt(((w - w.mean(axis=0)) ** 2).sum(axis=0)) / w.shape[0]
    f = np.where(s < wmin, wmin / s, np.where(s > wmax, wmax / s, 1.0))
    return w * f


def test_conv_weight_contrast_normalisation():
    rng = np.random.default_rng()
    c, F, fs = int(rng.integers(1, 4)), int(rng.integers(3, 9)), int(rng.choice([2, 3]))
    n = int(rng.choice([1, 3, 7]))
    text = DATA + conv_text(channels=c, filters=F, filterSize=fs)
    base = "[conv]\nepsW=0.001\nepsB=0.02\nmomW=0.9\nmomB=0.9\nwc=0.001\n"
    x = rng.standard_normal((n, c * 25)).astype(np.float32)
    m = 5 - fs + 1  # output size, no padding
    seeds = {"conv": rng.standard_normal((n, F * m * m)).astype(np.float32)}
    # filters whose contrast lies below the band, inside it and above it (a small step keeps it
    # there), each with a nonzero mean, which the normalisation scales along with the rest
    rows = c * fs * fs
    w0 = np.empty((rows, F))
    for f in range(F):
        v = rng.standard_normal(rows)
        v -= v.mean()
        v *= [0.02, 0.15, 2.0][f % 3] * rows / np.sqrt(np.sum(v * v))
        w0[:, f] = v + rng.uniform(-0.1, 0.1)
    w0 = w0.astype(np.float32)
    after = []
    for extra in ("", "wcNormMin=0.08\nwcNormMax=0.3\n"):
        net = ccn.Net("<l>", "<p>", {0: (c, 5, 5)}, layers_text=text, params_text=base + extra)
        net.set("conv.weights[0]", w0)
        net.forward({0: x}, train=True)
        net.backward(seeds)
        net.update(0.0, n)
        after.append(net.get("conv.weights[0]"))
    free = after[0].astype(np.float64)
    s = np.sqrt(((free - free.mean(axis=0)) ** 2).sum(axis=0)) / free.shape[0]
    assert (s < 0.08).any() and (s > 0.3).any() and ((s > 0.08) & (s < 0.3)).any(), s
    np.testing.assert_allclose(after[1], _wc_norm_reference(free, 0.08, 0.3), rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("params,key,msg", [("wcNormMax=-1\n", "wcNormMax", "must be at least 0"),
                                            ("wcNormMax=1\nwcNormMin=2\n", "wcNormMin", "must not exceed wcNormMax")])
def test_conv_weight_contrast_normalisation_bad_values(params, key, msg):
    text = DATA + conv_text(channels=1, filters=2, filterSize=3)
    base = "[conv]\nepsW=0.01\nepsB=0.02\nmomW=0.9\nmomB=0.9\nwc=0\n"
    with pytest.raises(ConfigError, match=rf"<p>:\d+: in section \[conv\], key '{key}': {msg}"):
        ccn.Net("<l>", "<p>", {0: (1, 5, 5)}, layers_text=text, params_text=base + params)
