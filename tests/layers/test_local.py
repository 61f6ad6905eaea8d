"""type=local (unshared, locally connected) against an independent NumPy float64 reference and finite differences."""

import os
import re
from collections import Counter

import numpy as np
import pytest

import ccn
from ccn.errors import ConfigError
from convref import add_bias, conv_ref, modules_x
from layercheck import assert_close, check_layer, numeric_grads

DATA = "[data]\ntype=data\ndataIdx=0\n"


def local_text(name="loc", inputs="data", type_="local", **keys):
    lines = [f"[{name}]", f"type={type_}", f"inputs={inputs}"] + [f"{k}={v}" for k, v in keys.items()]
    return "\n".join(lines) + "\n"


def run_local_case(c, rng, seed):
    x = rng.standard_normal((c["n"], c["channels"], c["size"], c["size"]))
    F = c["filters"] * c["groups"]
    text = DATA + local_text(channels=c["channels"], filters=c["filters"], filterSize=c["filterSize"],
                             stride=c["stride"], padding=c["padding"], groups=c["groups"])

    def ref(v):
        out = conv_ref(v["data"], v["loc.weights[0]"], c["filterSize"], c["padding"], c["stride"], c["groups"], F,
                       local=True)
        return add_bias(out, v["loc.biases"], False)

    try:
        net = check_layer(text, {"data": (0, x)}, ref, "loc", seed=seed)
    except AssertionError as e:
        raise AssertionError(f"case {c} (seed {seed}): {e}") from None
    M = modules_x(c["size"], c["filterSize"], c["padding"], c["stride"])
    Kg = c["channels"] // c["groups"] * c["filterSize"] ** 2
    assert net.layer("loc").shape == (F, M, M)
    assert net.get("loc.weights[0]").shape == (M * M * Kg, F)
    assert net.get("loc.biases").shape == (F * M * M, 1)
    assert net.layer("loc").flops_per_case == 2 * M * M * F * Kg


@pytest.mark.parametrize("trial", range(8))
def test_local_random_geometry(trial):
    seed = int(np.random.SeedSequence().entropy % 2**32)
    rng = np.random.default_rng(seed)
    groups = int(rng.integers(1, 4))
    fs = int(rng.integers(1, 4))
    pad = int(rng.integers(0, 3))
    c = dict(groups=groups, channels=groups * int(rng.integers(1, 3)), filters=int(rng.integers(1, 3)), filterSize=fs,
             stride=int(rng.integers(1, fs + 1)), padding=pad, size=int(rng.integers(max(1, fs - 2 * pad), 7)),
             n=int(rng.choice([1, 2, 3, 5])))
    run_local_case(c, rng, seed)


@pytest.mark.parametrize("stride,groups,n", [(1, 1, 1), (2, 2, 3), (3, 3, 5)])
def test_local_fixed_corners(stride, groups, n):
    seed = int(np.random.SeedSequence().entropy % 2**32)
    rng = np.random.default_rng(seed)
    c = dict(groups=groups, channels=groups, filters=2, filterSize=3, stride=stride, padding=2 if stride == 3 else 1,
             size=5, n=n)
    run_local_case(c, rng, seed)


def test_local_overhang_and_chunks(monkeypatch):
    # 6x6, filterSize 3, stride 2, padding 0: 3x3 modules, the last ones hang one pixel outside the image.
    monkeypatch.setenv("CCN_UNFOLD_BYTES", "1")
    rng = np.random.default_rng()
    x = rng.standard_normal((3, 2, 6, 6))
    text = DATA + local_text(channels=2, filters=2, filterSize=3, stride=2)
    net = check_layer(text, {"data": (0, x)},
                      lambda v: add_bias(conv_ref(v["data"], v["loc.weights[0]"], 3, 0, 2, 1, 2, local=True),
                                         v["loc.biases"], False), "loc")
    assert net.layer("loc").shape == (2, 3, 3)


def test_local_two_inputs_with_neuron():
    rng = np.random.default_rng()
    n = 3
    a = rng.standard_normal((n, 1, 5, 5))   # fs 3, pad 0, stride 1 -> 3x3
    b = rng.standard_normal((n, 2, 4, 4))   # fs 2, pad 1, stride 2 -> 1 + ceil(4/2) = 3
    text = ("[a]\ntype=data\ndataIdx=0\n[b]\ntype=data\ndataIdx=1\n" +
            local_text(inputs="a,b", channels="1,2", filters="2,1", filterSize="3,2", padding="0,1", stride="1,2",
                       groups="1,2", neuron="logistic"))

    def ref(v):
        o = (conv_ref(v["a"], v["loc.weights[0]"], 3, 0, 1, 1, 2, local=True) +
             conv_ref(v["b"], v["loc.weights[1]"], 2, 1, 2, 2, 2, local=True))
        return 1 / (1 + np.exp(-add_bias(o, v["loc.biases"], False)))

    check_layer(text, {"a": (0, a), "b": (1, b)}, ref, "loc")


def test_local_weight_source_gradients_add_up():
    rng = np.random.default_rng()
    n = 2
    x = rng.standard_normal((n, 2, 5, 5))
    y = rng.standard_normal((n, 2, 5, 5))
    text = ("[x]\ntype=data\ndataIdx=0\n[y]\ntype=data\ndataIdx=1\n" +
            local_text("l1", "x", channels=2, filters=2, filterSize=3, stride=2) +
            local_text("l2", "y", channels=2, filters=2, filterSize=3, stride=2, weightSource="l1"))
    net = ccn.Net("<test-layers>", None, {0: (2, 5, 5), 1: (2, 5, 5)}, layers_text=text)
    net._net.set_data_grads(True)
    W = rng.standard_normal((4 * 18, 2)).astype(np.float32)
    net.set("l1.weights[0]", W)
    for p in ("l1.biases", "l2.biases"):
        net.set(p, rng.standard_normal((8, 1)))
    arrays = {"x": x, "y": y, "W": W.astype(np.float64), "b1": net.get("l1.biases").astype(np.float64),
              "b2": net.get("l2.biases").astype(np.float64)}

    def both(v):
        o1 = add_bias(conv_ref(v["x"], v["W"], 3, 0, 2, 1, 2, local=True), v["b1"], False)
        o2 = add_bias(conv_ref(v["y"], v["W"], 3, 0, 2, 1, 2, local=True), v["b2"], False)
        return np.concatenate([o1.reshape(n, -1), o2.reshape(n, -1)], axis=1)

    net.forward({0: x.reshape(n, -1), 1: y.reshape(n, -1)}, train=True)
    ours = np.concatenate([net.output("l1"), net.output("l2")], axis=1)
    assert_close(ours, both(arrays), 2e-4, 2e-5, "forward")
    G = rng.standard_normal(ours.shape)
    net._net.zero_param_grads()
    net.backward({"l1": G[:, :8].astype(np.float32), "l2": G[:, 8:].astype(np.float32)})
    num = numeric_grads(both, arrays, G)
    assert_close(net.get("l1.weights[0]", "grad"), num["W"], 2e-3, 2e-4, "shared weight gradient")
    assert_close(net.output_grad("x"), num["x"].reshape(n, -1), 2e-3, 2e-4, "x gradient")
    assert_close(net.output_grad("y"), num["y"].reshape(n, -1), 2e-3, 2e-4, "y gradient")


def test_local_weight_source_naming_itself():
    # weightSource=,loc: input 1 reuses the layer's own matrix 0 (cuda-convnet2's self-sharing)
    rng = np.random.default_rng()
    n = 2
    x = rng.standard_normal((n, 2, 5, 5))
    y = rng.standard_normal((n, 2, 5, 5))
    text = ("[x]\ntype=data\ndataIdx=0\n[y]\ntype=data\ndataIdx=1\n" +
            local_text(inputs="x,y", channels="2,2", filters=2, filterSize="3,3", stride="2,2", padding="0,0",
                       weightSource=",loc"))

    def ref(v):
        o = (conv_ref(v["x"], v["loc.weights[0]"], 3, 0, 2, 1, 2, local=True) +
             conv_ref(v["y"], v["loc.weights[0]"], 3, 0, 2, 1, 2, local=True))
        return add_bias(o, v["loc.biases"], False)

    net = check_layer(text, {"x": (0, x), "y": (1, y)}, ref, "loc")
    assert net.layer("loc").weights == ["loc.weights[0]", "loc.weights[0]"]
    assert [p.name for p in net.params] == ["loc.weights[0]", "loc.biases"]


def probe_table(name, channels, groups, fc):
    """Read a layer's random-sparse channel table back through the net: with 1x1 filters on a 1x1 image whose
    channel c holds the value c, a filter whose only weight is filter channel k outputs the channel it reads."""
    text = DATA + local_text(name, channels=channels, groups=groups, filters=1, filterSize=1, randSparse=1,
                             filterChannels=fc)
    net = ccn.Net("<probe>", None, {0: (channels, 1, 1)}, layers_text=text)
    x = np.arange(channels, dtype=np.float32).reshape(1, -1)
    table = [[None] * fc for _ in range(groups)]
    for k in range(fc):
        W = np.zeros((fc, groups), np.float32)
        W[k, :] = 1
        net.set(f"{name}.weights[0]", W)
        net.set(f"{name}.biases", np.zeros((groups, 1)))
        net.forward({0: x})
        for g in range(groups):
            table[g][k] = int(round(float(net.output(name)[0, g])))
    return table


@pytest.mark.parametrize("channels,groups,fc", [(4, 2, 2), (4, 4, 2), (4, 2, 4), (6, 3, 2)])
def test_local_rand_sparse(channels, groups, fc):
    name = "sparse"
    table = probe_table(name, channels, groups, fc)
    # Each group reads fc distinct channels, and every channel feeds the same number of groups.
    assert all(len(set(t)) == fc for t in table), table
    assert Counter(c for t in table for c in t) == Counter({c: groups * fc // channels for c in range(channels)}), table
    rng = np.random.default_rng()
    x = rng.standard_normal((3, channels, 5, 5))
    text = DATA + local_text(name, channels=channels, groups=groups, filters=2, filterSize=3, padding=1, stride=2,
                             randSparse="true", filterChannels=fc)
    check_layer(text, {"data": (0, x)},
                lambda v: add_bias(conv_ref(v["data"], v[f"{name}.weights[0]"], 3, 1, 2, groups, 2 * groups,
                                            table=table, local=True), v[f"{name}.biases"], False), name)


def test_conv_rand_sparse_same_table_rule():
    # conv uses the same table (a function of layer name and input index) with shared weights.
    name = "sparse"
    table = probe_table(name, 4, 2, 2)
    rng = np.random.default_rng()
    x = rng.standard_normal((2, 4, 5, 5))
    text = DATA + local_text(name, type_="conv", channels=4, groups=2, filters=2, filterSize=3, randSparse=1,
                             filterChannels=2)
    check_layer(text, {"data": (0, x)},
                lambda v: add_bias(conv_ref(v["data"], v[f"{name}.weights[0]"], 3, 0, 1, 2, 4, table=table),
                                   v[f"{name}.biases"], True), name)


def read_section(path, name):
    out, inside = [], False
    for line in open(path):
        s = line.strip()
        if s.startswith("["):
            inside = s == f"[{name}]"
        if inside:
            out.append(line)
    return "".join(out)


def test_gc_cfg_local32_loads(reference_dir):
    # layers.gc.cfg's local layer: randSparse=true with groups=2 and 16 channels (filters=32 per group).
    sec = read_section(os.path.join(reference_dir, "cuda-convnet", "layers.gc.cfg"), "local32")
    assert "randSparse=true" in sec
    text = "[avgpool]\ntype=data\ndataIdx=0\n" + sec
    net = ccn.Net("<gc>", None, {0: (16, 8, 8)}, layers_text=text)
    M = modules_x(8, 5, 2, 3)
    assert net.layer("local32").shape == (64, M, M)
    assert net.get("local32.weights[0]").shape == (M * M * 8 * 25, 64)
    x = np.random.default_rng().standard_normal((2, 16 * 64)).astype(np.float32)
    net.forward({0: x})
    assert np.all(np.isfinite(net.output("local32")))


BAD = [
    (dict(sharedBiases=1), "sharedBiases", "not a key of layer type"),
    (dict(channels=3, groups=2), "groups", "cannot be split"),
    (dict(stride=3, filterSize=2), "stride", "larger than filterSize"),
    (dict(randSparse=1, groups=2, channels=4, filterChannels=3), "filterChannels", "not a multiple of filterChannels=3"),
    (dict(randSparse=1, groups=3, channels=4, filterChannels=2), "filterChannels", "multiple of channels=4"),
    (dict(randSparse=1, groups=2, channels=4, filterChannels=0), "filterChannels", "between 1 and channels"),
]


@pytest.mark.parametrize("keys,key,msg", BAD, ids=[f"{b[1]}-{i}" for i, b in enumerate(BAD)])
def test_local_bad_keys(keys, key, msg):
    base = dict(channels=4, filters=2, filterSize=3, padding=1, stride=1)
    base.update(keys)
    C = base["channels"]
    text = DATA + local_text(**base)
    with pytest.raises(ConfigError) as e:
        ccn.Net("<test-layers>", None, {0: (C, 5, 5)}, layers_text=text)
    m = str(e.value)
    assert re.search(r"<test-layers>:\d+", m), m
    assert "[loc]" in m and f"'{key}'" in m and msg.lower() in m.lower(), m
