"""Every original example file (../shared/reference) and every file in layer-defs/ trains on
the GPU as on the CPU: a few SGD steps from the same initial weights on the same random
minibatches agree within float32 tolerance (netcompare: max(floor, 10 x the 1-ulp
sensitivity measured on the CPU; 30 x for layers-example.cfg, whose near-ties are explained at
NEAR_TIES)). This covers each layer type in the configurations the
original nets use (several inputs, shared weights, neurons on every kind of layer, dropout
with its counter-based masks). The files with gpu= layouts over several devices are left out:
one GPU trains them only as logical devices on the CPU. Skips without a GPU (and the
reference part without ../shared/reference, which tools/device-check.sh carries along)."""

import os
import sys

import numpy as np
import pytest

import ccn
import netcompare as nc
from ccn.cli.show_net import infer_data_dims
from ccn.gradcheck import random_batch
from ccn.netfiles import find_params_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "netdef"))
from test_net_files import DEFS, LAYER_DEFS, REFERENCE  # noqa: E402


def _maker(path, size, extra):
    """(make(device) -> the net with its initial weights, the net's structure alone)."""
    text = open(path, encoding="utf-8").read()
    params = find_params_file(path)
    dims = infer_data_dims(path, text, size, extra)
    return (lambda device: ccn.Net(path, params, dims, seed=11, device=device)), ccn.Net(path, params, dims, init=False)


def _batches(net, mini, count, seed=0):
    """Random minibatches the net can eat (ccn.gradcheck.random_batch: class numbers, one-hot
    rows or 0/1 labels for the cost layers, pixels in [0, 1) elsewhere), as lists by dataIdx."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        d = random_batch(net, mini, rng)
        out.append([d[i] for i in range(max(d) + 1)])
    return out


# Nets whose quantities near-ties decide, with the tolerance factor they need (netcompare's
# docstring). layers-example.cfg: conv32 and local32 have logistic outputs within ~1e-4 of 0.5
# (initW 1e-5), rounded to a few levels, and a max pool picks among them. On an H100 their
# increments and biases were 9.7-10.4x their one-flip sensitivity after three steps (the GPU's
# expf flips several ties), and every other quantity agreed to ~1e-7.
NEAR_TIES = {"cuda-convnet/layers-example.cfg": 30}


def _agree(path, size, extra, steps=3, factor=10):
    make, shape = _maker(path, size, extra)
    mini = 6 if size >= 128 else 16
    data = _batches(shape, mini, 2)
    bad, table = nc.judge(nc.train_runs(make, data, steps=steps, mini=mini), factor=factor)
    print(table)
    assert not bad, f"{os.path.basename(path)}:\n" + "\n".join(bad)


@pytest.mark.cuda
@pytest.mark.parametrize("name", sorted(n for n, v in REFERENCE.items() if v[2] == 1))
def test_reference_file_trains_on_the_gpu_as_on_the_cpu(name, reference_dir):
    size, extra, _ = REFERENCE[name]
    _agree(os.path.join(reference_dir, name), size, extra, factor=NEAR_TIES.get(name, 10))


@pytest.mark.cuda
@pytest.mark.parametrize("name", sorted(LAYER_DEFS))
def test_layer_def_trains_on_the_gpu_as_on_the_cpu(name):
    size, extra, _ = LAYER_DEFS[name]
    _agree(os.path.join(DEFS, name), size, extra)


def test_random_minibatches_fit_every_file(reference_dir):
    """The data this test feeds (no GPU needed): right widths, labels within the classes."""
    files = [os.path.join(reference_dir, n) for n, v in REFERENCE.items() if v[2] == 1]
    files += [os.path.join(DEFS, n) for n in LAYER_DEFS]
    for path in files:
        key = os.path.relpath(path, reference_dir) if path.startswith(reference_dir) else os.path.basename(path)
        size, extra, _ = REFERENCE.get(key) or LAYER_DEFS[key]
        make, shape = _maker(path, size, extra)
        net = make("cpu")
        (mb,) = _batches(shape, 3, 1)
        net.forward(mb, train=True)  # refuses wrong widths or out-of-range labels
        assert all(np.isfinite(c["values"][0]) for c in net.costs()), path


@pytest.mark.cuda
def test_conv_net_in_small_unfold_chunks_trains_on_the_gpu_as_on_the_cpu(monkeypatch):
    """The same with CCN_UNFOLD_BYTES so small that every conv layer works through its
    minibatch a few cases at a time (on both backends), the last chunk partial."""
    monkeypatch.setenv("CCN_UNFOLD_BYTES", str(3 * 4 * (3 * 25 * 1024 + 32 * 1024)))  # conv1 of 18pct: 3 cases
    size, extra, _ = LAYER_DEFS["cifar10-18pct.ini"]
    _agree(os.path.join(DEFS, "cifar10-18pct.ini"), size, extra)
