"""Training on the GPU against training on the CPU (issue #8).

20 SGD steps of a small net covering both neuron modes of the device net (in place: relu,
tanh, softrelu; with a kept pre-activation: drelu, abs) and of cuda-convnet's 18% CIFAR-10 net agree
within float32 tolerance (netcompare: max(floor, 10 x the 1-ulp sensitivity measured on
the CPU)); the prefetching path, growing and shrinking minibatches, parameter get/set and
read_grads/write_grads on the device, and `ccn train --device cuda` / `ccn test --device cuda`
end to end with checkpoints crossing to the CPU. Tests marked `cuda` skip without a GPU; the
others check the comparison helper itself and run everywhere.
"""

import io
import os
import sys

import numpy as np
import pytest

import ccn
import netcompare as nc
from cudaops import close

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

SMALL = """
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
filters=16
filterSize=3
padding=1
stride=1
initW=0.1
initB=0.05
neuron=relu
[pool1]
type=pool
pool=max
inputs=conv1
channels=16
sizeX=3
stride=2
[rnorm1]
type=cmrnorm
inputs=pool1
channels=16
size=5
[conv2]
type=conv
inputs=rnorm1
channels=16
filters=16
filterSize=3
padding=1
stride=1
initW=0.05
neuron=abs
[fc1]
type=fc
inputs=conv2
outputs=32
initW=0.05
neuron=drelu[0.8]
[fc1t]
type=fc
inputs=rnorm1
outputs=16
initW=0.05
neuron=tanh[1.7,0.66]
[drop]
type=dropout
inputs=fc1
[fc2]
type=fc
inputs=drop,fc1t
outputs=10
initW=0.05
neuron=softrelu
[probs]
type=softmax
inputs=fc2
[logprob]
type=cost.logreg
inputs=labels,probs
"""

SMALL_PARAMS = """
[conv1]
epsW=0.01
epsB=0.02
momW=0.9
momB=0.9
wc=0.0005
[conv2]
epsW=0.01
epsB=0.02
momW=0.9
momB=0.9
wc=0.0005
[rnorm1]
scale=0.001
pow=0.75
[fc1]
epsW=0.01
epsB=0.02
momW=0.9
momB=0.9
wc=0.001
[fc1t]
epsW=0.01
epsB=0.02
momW=0.9
momB=0.9
wc=0.001
wball=1.5
[drop]
keep=0.7
[fc2]
epsW=0.01,0.01
epsB=0.02
momW=0.9,0.9
momB=0.9
wc=0.001,0.001
[logprob]
coeff=1
"""

SMALL_DIMS = {0: (3, 8, 8), 1: 1}


def make_small(device, seed=3):
    return ccn.Net("small.ini", "small-params.ini", SMALL_DIMS, seed=seed, layers_text=SMALL,
                   params_text=SMALL_PARAMS, device=device)


def make_18pct(device, seed=3):
    layers = os.path.join(ROOT, "layer-defs", "cifar10-18pct.ini")
    params = os.path.join(ROOT, "layer-defs", "cifar10-18pct-params.ini")
    return ccn.Net(layers, params, {0: (3, 32, 32), 1: 1}, seed=seed, device=device)


def batches(shape, n, count, classes=10, seed=0):
    rng = np.random.default_rng(seed)
    size = int(np.prod(shape))
    return [[rng.standard_normal((n, size)).astype(np.float32),
             rng.integers(0, classes, (n, 1)).astype(np.float32)] for _ in range(count)]


# ---- the comparison helper (no GPU needed) ----------------------------------------------------
def test_netcompare_measures_and_judges_on_the_cpu():
    data = batches((3, 8, 8), 16, 3)
    runs = nc.train_runs(make_small, data, steps=6, mini=16, devices=("cpu",))
    sens = nc.sensitivity(runs["cpu"], runs["nudged"], runs["nudged_w"])
    assert set(sens) == set(runs["cpu"]) and all(np.isfinite(v) for v in sens.values())
    assert any(v > 0 for v in sens.values())  # one ulp at the input does move the weights
    w_only = nc.sensitivity(runs["cpu"], runs["nudged_w"])
    assert all(sens[k] >= w_only[k] for k in sens) and any(v > 0 for v in w_only.values())
    same = nc.train(make_small("cpu"), data, 6, 16)
    assert nc.compare(runs["cpu"], same, sens) == []  # the CPU is deterministic: identical runs agree
    off = dict(same)
    key = next(k for k in off if k.startswith("w/fc2"))
    off[key] = off[key] * (1 + 10 * nc.tolerance(key, sens))
    bad = nc.compare(runs["cpu"], off, sens)
    assert len(bad) == 1 and bad[0].startswith(key), bad
    assert nc.tolerance("w/x", {"w/x": 1e-9}) == nc.FLOORS["w"]
    assert nc.tolerance("inc/x", {"inc/x": 1.0}) == 10.0
    # a net shown to need it gets a larger factor, for every quantity alike
    assert nc.tolerance("inc/x", {"inc/x": 1e-3}, factor=30) == pytest.approx(0.03)
    sens2 = {key: 2e-3}
    assert len(nc.compare(runs["cpu"], {**same, key: runs["cpu"][key] * 1.03}, sens2)) == 1
    assert nc.compare(runs["cpu"], {**same, key: runs["cpu"][key] * 1.03}, sens2, factor=30) == []
    assert len(nc.compare(runs["cpu"], {**same, key: runs["cpu"][key] * 1.07}, sens2, factor=30)) == 1
    assert key in nc.report(runs["cpu"], off, sens)


# ---- GPU against CPU ----------------------------------------------------------------------
def _agree(make, shape, mini, steps=20, count=4):
    data = batches(shape, mini, count)
    bad, table = nc.judge(nc.train_runs(make, data, steps=steps, mini=mini))
    print(table)
    assert not bad, "\n".join(bad)


@pytest.mark.cuda
def test_small_net_twenty_steps_agree():
    _agree(make_small, (3, 8, 8), 32)


@pytest.mark.cuda
def test_cifar10_18pct_twenty_steps_agree():
    _agree(make_18pct, (3, 32, 32), 64)


@pytest.mark.cuda
def test_prefetched_steps_equal_direct_steps_with_changing_minibatch_sizes():
    """train_step(None) after prefetch() is the same computation as train_step(data), also
    when the minibatch shrinks and grows again (the staging buffers only grow)."""
    sizes = [32, 8, 32, 5, 17]
    data = [batches((3, 8, 8), n, 1, seed=n)[0] for n in sizes]
    a, b = make_small("cuda"), make_small("cuda")
    ca = [a.train_step(d, 0.1, 32) for d in data]
    b.prefetch(data[0])
    cb = []
    for k in range(len(data)):
        cb.append(b.train_step(None, 0.1, 32))
        if k + 1 < len(data):
            b.prefetch(data[k + 1])
    for x, y in zip(ca, cb):
        assert [c["values"] for c in x] == [c["values"] for c in y]
    for p in a.params:
        assert np.array_equal(a.get(p.name), b.get(p.name)), p.name
    cpu = make_small("cpu")
    for d in data:
        cpu.train_step(d, 0.1, 32)
    for p in cpu.params:
        close(b.get(p.name), cpu.get(p.name), rtol=1e-3)
    with pytest.raises(ccn.errors.InputError, match="prefetch"):
        b.train_step(None, 0.1, 32)  # nothing staged any more


@pytest.mark.cuda
def test_set_one_matrix_keeps_the_others_on_the_device():
    net = make_small("cuda")
    d = batches((3, 8, 8), 16, 1)[0]
    net.train_step(d, 0.0, 16)
    net.forward(d, train=True)
    net.backward()  # grads accumulate on the device, inc is non-zero there
    inc, grad = net.get("fc2.weights[0]", "inc"), net.get("fc2.weights[0]", "grad")
    assert np.abs(inc).sum() > 0 and np.abs(grad).sum() > 0
    w = np.full(inc.shape, 0.25, np.float32)
    net.set("fc2.weights[0]", w)
    assert np.array_equal(net.get("fc2.weights[0]"), w)
    assert np.array_equal(net.get("fc2.weights[0]", "inc"), inc)
    assert np.array_equal(net.get("fc2.weights[0]", "grad"), grad)
    net.set("fc2.weights[0]", inc * 2, "inc")
    assert np.array_equal(net.get("fc2.weights[0]"), w)
    # read_grads / write_grads move the gradients only
    g = np.empty(net._net.grad_size, np.float32)
    net._net.read_grads(g)
    net._net.write_grads(g * 3)
    close(net.get("fc2.weights[0]", "grad"), grad * 3, rtol=1e-6)
    assert np.array_equal(net.get("fc2.weights[0]"), w)
    net.synchronize()


@pytest.mark.cuda
def test_cli_train_on_gpu_tests_and_resumes_on_cpu(tmp_path):
    sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
    import fakedata

    from ccn import checkpoint as ck
    from ccn.cli.test import run_test_command
    from ccn.cli.train import run_train

    data = fakedata.make_dataset(tmp_path / "data")
    layers, _ = fakedata.write_net(tmp_path / "net")
    o = {"data_path": data, "data_provider": "fakedata:open_provider", "train_range": "1-4", "test_range": "5",
         "epochs": 2, "mini": 16, "test_freq": 2, "layers": layers, "seed": 5, "threads": 1, "force_save": True}
    out = io.StringIO()
    run_train({**o, "save_path": str(tmp_path / "gpu"), "device": "cuda"}, out=out)
    assert "device cuda:0" in out.getvalue()
    run_train({**o, "save_path": str(tmp_path / "cpu")}, out=io.StringIO())
    a, b = ck.load(tmp_path / "gpu").arrays, ck.load(tmp_path / "cpu").arrays
    for k in b:
        close(a[k], b[k], rtol=1e-3, atol=1e-6)
    ta = run_test_command(str(tmp_path / "gpu"), out=io.StringIO(), device="cuda")
    tb = run_test_command(str(tmp_path / "gpu"), out=io.StringIO())
    assert ta["cases"] == tb["cases"] and ta["costs"].keys() == tb["costs"].keys()
    for k in tb["costs"]:
        close(ta["costs"][k][:1], tb["costs"][k][:1], rtol=1e-4)
    # a GPU checkpoint resumes on the CPU and a CPU one on the GPU
    run_train({"epochs": 3}, load_file=str(tmp_path / "gpu"), out=io.StringIO())
    run_train({"epochs": 3, "device": "cuda"}, load_file=str(tmp_path / "cpu"), out=io.StringIO())
    a, b = ck.load(tmp_path / "gpu").arrays, ck.load(tmp_path / "cpu").arrays
    for k in b:
        close(a[k], b[k], rtol=1e-3, atol=1e-6)
