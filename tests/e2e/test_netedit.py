"""--conv-to-local and --unshare-weights (ccn.netedit): the rewritten texts, the carried-over state,
identical outputs, the bad-input paths, and both options end to end through ccn train."""

import io
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import ccn
import fakedata
from ccn import checkpoint as ck
from ccn.cli.train import run_train
from ccn.errors import InputError
from ccn.netedit import rewrite

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

# two conv layers reading two images of different sizes, the second sharing the first's filters
# (so they convert together); c3 has unshared biases and groups; fcB shares input 1 of fcA.
NET = """
[data]
type=data
dataIdx=0

[data2]
type=data
dataIdx=2

[labels]
type=data
dataIdx=1

[c1]
type=conv
inputs=data
channels=2
filters=3
filterSize=3
padding=1
stride={stride}
partialSum=1
sharedBiases=1
initW=0.3
initB=0.2
neuron=tanh[1.7,0.66]

[c2]
type=conv
inputs=data2
channels=2
filters=3
filterSize=3
padding=1
stride={stride}
weightSource=c1
initB=-0.1
sumWidth=4

[c3]
type=conv
inputs=c1
channels=3
filters=2
groups=1
filterSize=2
sharedBiases=0
initW=0.3
initB=0.05

[fcA]
type=fc
inputs=c3,c2
outputs=4
initW=0.1,0.1

[fcB]
type=fc
inputs=c3,c2
outputs=4
weightSource=,fcA[1]
initW=0.1,0.1

[sum]
type=eltsum
inputs=fcA,fcB
coeffs=1,1

[probs]
type=softmax
inputs=sum

[logprob]
type=cost.logreg
inputs=labels,probs
"""

PARAMS = """
[c1]
epsW=0.01
epsB=0.02
momW=0.9
momB=0.9
wc=0.001
wcNormMax=0

[c2]
epsW=0.01
epsB=0.02
momW=0.9
momB=0.9
wc=0.001

[c3]
epsW=0.01
epsB=0.02
momW=0.9
momB=0.9
wc=0.001

[fcA]
epsW=0.01,0.01
epsB=0.02
momW=0.9,0.9
momB=0.9
wc=0.001,0.001

[fcB]
epsW=0.01,0.01
epsB=0.02
momW=0.9,0.9
momB=0.9
wc=0.001,0.001

[logprob]
coeff=1
"""

def make_net(tmp_path, stride=1, seed=3, size2=5):
    """data2 is size2 x size2: with 5 c2 has as many modules as c1, with 4 fewer."""
    lp, pp = tmp_path / "layers.cfg", tmp_path / "params.cfg"
    lp.write_text(NET.format(stride=stride))
    pp.write_text(PARAMS)
    net = ccn.Net(str(lp), str(pp), data_dims={0: (2, 5, 5), 1: 1, 2: (2, size2, size2)}, seed=seed)
    rng = np.random.default_rng(seed)
    for p in net.params:  # non-zero increments, so the test can see which are kept
        net.set(p.name, rng.standard_normal(p.shape).astype(np.float32) * 0.01, "inc")
    return net


def batch(rng, n=5, size2=5):
    return [rng.standard_normal((n, 50)).astype(np.float32), rng.integers(0, 4, (n, 1)).astype(np.float32),
            rng.standard_normal((n, 2 * size2 * size2)).astype(np.float32)]


def outputs(net, data, names=("c1", "c2", "c3", "probs")):
    net.forward(data, train=False)
    return {n: net.output(n).copy() for n in names}


def section(text, name):
    m = re.search(r"^\[" + re.escape(name) + r"\]\n(.*?)(?=^\[|\Z)", text, re.M | re.S)
    return m.group(1)


@pytest.mark.parametrize("stride", [1, 2])
def test_conv_to_local_same_outputs_and_layout(tmp_path, stride):
    net = make_net(tmp_path, stride)
    rng = np.random.default_rng(stride)
    data = batch(rng)
    before = outputs(net, data)
    old = {p.name: {k: net.get(p.name, k) for k in ("w", "inc")} for p in net.params}
    said = []
    new = rewrite(net, "c1,c3", None, echo=said.append)
    # c2 takes c1's filters, so it converts with c1 and keeps sharing them
    assert {l.name: l.type for l in new.layers if l.name.startswith("c")} == {"c1": "local", "c2": "local",
                                                                               "c3": "local"}
    assert sorted(said) == [f"Converted layer '{n}' from convolutional to unshared, locally-connected."
                            for n in ("c1", "c2", "c3")]
    after = outputs(new, data)
    for k in before:
        np.testing.assert_allclose(after[k], before[k], rtol=2e-5, atol=2e-6, err_msg=k)
    # the layout: local row m*Kg + r is conv row r; shared bias f goes to f*modules + m
    for name, kg in (("c1", 2 * 9), ("c3", 3 * 4)):
        c, h, w = new.layer(name).shape
        P = h * w
        W = new.get(f"{name}.weights[0]")
        assert W.shape == (P * kg, c)
        for m in range(P):
            np.testing.assert_array_equal(W[m * kg:(m + 1) * kg], old[f"{name}.weights[0]"]["w"])
        assert not new.get(f"{name}.weights[0]", "inc").any()  # new matrices start without momentum
    P1 = new.layer("c1").shape[1] * new.layer("c1").shape[2]
    b1 = new.get("c1.biases")[:, 0]
    assert b1.shape == (3 * P1,)
    for f in range(3):
        np.testing.assert_array_equal(b1[f * P1:(f + 1) * P1], old["c1.biases"]["w"][f, 0])
    assert not new.get("c1.biases", "inc").any()
    # c3's biases were unshared already: kept, momentum included; other layers untouched
    np.testing.assert_array_equal(new.get("c3.biases", "inc"), old["c3.biases"]["inc"])
    for p in ("fcA.weights[0]", "fcA.weights[1]", "fcB.weights[0]", "fcA.biases"):
        for k in ("w", "inc"):
            np.testing.assert_array_equal(new.get(p, k), old[p][k])
    assert [p.name for p in new.params if p.layer == "c2"] == ["c2.biases"]  # still shares c1's filters
    # the rewritten text: type=local, no conv-only keys, everything else as written
    text = new.layers_text
    for name in ("c1", "c2", "c3"):
        sec = section(text, name)
        assert "type=local\n" in sec and "type=conv" not in sec
        assert not re.search(r"^(sharedBiases|partialSum|sumWidth)", sec, re.M)
    assert "weightSource=c1\n" in section(text, "c2") and "neuron=tanh[1.7,0.66]" in section(text, "c1")
    assert section(text, "fcB") == section(NET.format(stride=stride), "fcB")
    # and the rewritten net trains
    new.train_step(data, 0.0, 5)
    assert np.isfinite(new.get("c1.weights[0]")).all()


def test_unshare_weights_copies_and_separates(tmp_path):
    net = make_net(tmp_path)
    data = batch(np.random.default_rng(9))
    before = outputs(net, data)
    said = []
    new = rewrite(net, None, "c2, fcB[1]", echo=said.append)
    assert said == ["Unshared weight matrix c2[0] from c1[0].", "Unshared weight matrix fcB[1] from fcA[1]."]
    for k, v in outputs(new, data).items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)  # same kernels, same weights
    np.testing.assert_array_equal(new.get("c2.weights[0]"), net.get("c1.weights[0]"))
    np.testing.assert_array_equal(new.get("fcB.weights[1]"), net.get("fcA.weights[1]"))
    assert not new.get("c2.weights[0]", "inc").any() and not new.get("fcB.weights[1]", "inc").any()
    np.testing.assert_array_equal(new.get("c1.weights[0]", "inc"), net.get("c1.weights[0]", "inc"))
    assert "weightSource" not in section(new.layers_text, "c2")
    assert "weightSource" not in section(new.layers_text, "fcB")
    # from now on they learn separately
    new.train_step(data, 0.0, 5)
    assert not np.array_equal(new.get("c2.weights[0]"), new.get("c1.weights[0]"))
    assert not np.array_equal(new.get("fcB.weights[1]"), new.get("fcA.weights[1]"))


def test_convert_and_unshare_together(tmp_path):
    # c2 reads a smaller image than c1: shared as conv filters, but as local weights they cannot
    # be one matrix, so converting c1 needs c2 unshared too (and then works)
    net = make_net(tmp_path, size2=4)
    with pytest.raises(InputError, match=r"layer 'c2' shares the weights of 'c1'.*16 modules against 25.*"
                                         r"--unshare-weights c2"):
        rewrite(net, "c1", None, echo=lambda s: None)
    data = batch(np.random.default_rng(4), size2=4)
    before = outputs(net, data)
    new = rewrite(net, "c1", "c2", echo=lambda s: None)
    for k, v in outputs(new, data).items():
        np.testing.assert_allclose(v, before[k], rtol=2e-5, atol=2e-6, err_msg=k)
    assert new.get("c2.weights[0]").shape == (16 * 18, 3) and new.get("c1.weights[0]").shape == (25 * 18, 3)
    assert "weightSource" not in section(new.layers_text, "c2")


@pytest.mark.parametrize("c2l,unshare,msg", [
    ("nope", None, r"--conv-to-local nope: the net has no layer 'nope'; its conv layers: c1, c2, c3\."),
    ("fcA", None, r"--conv-to-local fcA: layer 'fcA' has type fc; only conv layers convert to local\. The conv "
                  r"layers of this net: c1, c2, c3\."),
    (None, "nope", r"--unshare-weights nope: the net has no layer 'nope'; the layers that take weights from "
                   r"another layer \(weightSource\): c2, fcB\."),
    (None, "c1", r"--unshare-weights c1: the weights of 'c1' are its own already \(no weightSource\); the layers "
                 r"that take weights from another layer: c2, fcB\."),
    (None, "fcB[0]", r"weight matrix 0 of 'fcB' is its own already"),
    (None, "fcB[2]", r"layer 'fcB' has 2 weight matrices \(indices 0-1\)"),
    (None, "probs", r"layer 'probs' has type softmax, which has no weights"),
    (None, "fcB[x", r"expected a layer name or name\[i\]"),
])
def test_bad_names(tmp_path, c2l, unshare, msg):
    net = make_net(tmp_path)
    with pytest.raises(InputError, match=msg):
        rewrite(net, c2l, unshare, echo=lambda s: None)


# ---- end to end through ccn train ------------------------------------------------------------
CONV_NET = """
[data]
type=data
dataIdx=0

[labels]
type=data
dataIdx=1

[conv1]
type=conv
inputs=data
channels=3
filters=4
filterSize=3
padding=1
sharedBiases=1
partialSum=4
initW=0.2
neuron=relu

[conv2]
type=conv
inputs=conv1
channels=4
filters=4
filterSize=2
initW=0.2
neuron=relu

[conv3]
type=conv
inputs=conv1
channels=4
filters=4
filterSize=2
weightSource=conv2
initW=0.2
neuron=relu

[fc]
type=fc
inputs=conv2,conv3
outputs=3
initW=0.1,0.1

[probs]
type=softmax
inputs=fc

[logprob]
type=cost.logreg
inputs=labels,probs
"""

CONV_PARAMS = "".join(f"""
[{n}]
epsW=0.01
epsB=0.02
momW=0.9
momB=0.9
wc=0.0005
""" for n in ("conv1", "conv2", "conv3")) + """
[fc]
epsW=0.01,0.01
epsB=0.02
momW=0.9,0.9
momB=0.9
wc=0.0005,0.0005

[logprob]
coeff=1
"""


@pytest.fixture
def conv_setup(tmp_path):
    data = fakedata.make_dataset(tmp_path / "data", dims=48)  # 3 x 4 x 4 images
    (tmp_path / "net").mkdir()
    lp = tmp_path / "net" / "layers-c.cfg"
    lp.write_text(CONV_NET)
    (tmp_path / "net" / "layer-params-c.cfg").write_text(CONV_PARAMS)
    opts = {"data_path": data, "data_provider": "fakedata:open_provider", "train_range": "1-4", "test_range": "5",
            "epochs": 1, "mini": 16, "test_freq": 4, "save_path": str(tmp_path / "save"), "layers": str(lp),
            "seed": 5, "threads": 1}
    return tmp_path, opts


def test_train_resume_with_conv_to_local_and_unshare(conv_setup):
    tmp, opts = conv_setup
    run_train(dict(opts), out=io.StringIO())
    first = ck.load(str(tmp / "save"))
    out = io.StringIO()
    run_train({"epochs": 2, "conv_to_local": "conv1", "unshare_weights": "conv3"}, str(tmp / "save"), out=out)
    text = out.getvalue()
    assert "Converted layer 'conv1' from convolutional to unshared, locally-connected." in text
    assert "Unshared weight matrix conv3[0] from conv2[0]." in text
    c = ck.load(str(tmp / "save"))
    assert os.path.basename(c.path) == "2.4"
    assert re.search(r"^\[conv1\]\ntype=local\n", c.layers_text, re.M)
    assert "partialSum" not in c.layers_text and "sharedBiases" not in c.layers_text
    assert "weightSource" not in c.layers_text
    assert c.options["conv_to_local"] == "" and c.options["unshare_weights"] == ""  # they acted once
    assert c.arrays["w/conv1.weights[0]"].shape == (16 * 27, 4)
    assert "w/conv3.weights[0]" in c.arrays and "w/conv3.weights[0]" not in first.arrays
    # and it resumes again without the options (the texts come from the checkpoint)
    run_train({"epochs": 3}, str(tmp / "save"), out=io.StringIO())
    assert os.path.basename(ck.load(str(tmp / "save")).path) == "3.4"


def test_fresh_net_with_conv_to_local(conv_setup):
    tmp, opts = conv_setup
    out = io.StringIO()
    run_train({**opts, "conv_to_local": "conv2"}, out=out)
    c = ck.load(str(tmp / "save"))
    assert "Converted layer 'conv3' from" in out.getvalue()  # shares conv2's filters: converted with it
    assert re.search(r"^\[conv3\]\ntype=local\n", c.layers_text, re.M)
    assert "weightSource=conv2" in c.layers_text


def _cli(*args):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, HERE, os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "ccn.cli.main", "train", *args], capture_output=True, text=True,
                          env=env, timeout=120)


def test_cli_bad_names_exit_2(conv_setup):
    tmp, opts = conv_setup
    run_train(dict(opts), out=io.StringIO())
    for args, msg in ((["--conv-to-local", "fc"], "layer 'fc' has type fc; only conv layers convert"),
                      (["--conv-to-local", "conv9"], "no layer 'conv9'; its conv layers: conv1, conv2, conv3"),
                      (["--unshare-weights", "conv2"], "the weights of 'conv2' are its own already"),
                      (["--unshare-weights", "conv7"], "take weights from another layer (weightSource): conv3")):
        r = _cli("-f", str(tmp / "save"), "--epochs", "2", *args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert msg in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)
    assert [os.path.basename(p) for p in ck.list_checkpoints(tmp / "save")] == ["1.4"]


SELF = """
[data]
type=data
dataIdx=0
[labels]
type=data
dataIdx=1
[fc]
type=fc
inputs=data,data,data
outputs=3
initW=0.4,0.4,0.4
weightSource=,fc,fc[0]
[probs]
type=softmax
inputs=fc
[cost]
type=cost.logreg
inputs=labels,probs
"""


def test_unshare_a_layers_own_shared_matrix(tmp_path):
    # cuda-convnet2's weightSource=,fc,fc[0]: matrices 1 and 2 are fc's matrix 0
    (tmp_path / "self.cfg").write_text(SELF)
    (tmp_path / "self-params.cfg").write_text("[fc]\nepsW=0.1\nepsB=0.1\nmomW=0\nmomB=0\nwc=0\n")
    net = ccn.Net(str(tmp_path / "self.cfg"), str(tmp_path / "self-params.cfg"), {0: 4, 1: 1}, seed=2)
    data = {0: np.random.default_rng(1).random((5, 4), dtype=np.float32), 1: np.array([[0], [1], [2], [0], [1]],
                                                                                           np.float32)}
    net.forward(data)
    before = net.output("fc").copy()
    said = []
    new = rewrite(net, None, "fc[2]", echo=said.append)
    assert said == ["Unshared weight matrix fc[2] from fc[0]."]
    np.testing.assert_array_equal(new.get("fc.weights[2]"), net.get("fc.weights[0]"))
    assert re.search(r"^weightSource *= *,fc,$", section(new.layers_text, "fc"), re.M), new.layers_text
    new.forward(data)
    np.testing.assert_array_equal(new.output("fc"), before)
    with pytest.raises(InputError, match=r"weight matrix 0 of 'fc' is its own already"):
        rewrite(net, None, "fc[0]")
