"""Every original example file (../shared/reference) and every file in layer-defs/ loads with its
params file, with the shapes the recipes promise.
"""

import os
import re

import pytest

import ccn
from ccn._native import core
from ccn.cli.show_net import infer_data_dims
from ccn.netfiles import find_params_file

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REF = os.path.join(os.path.dirname(ROOT), "shared", "reference")
DEFS = os.path.join(ROOT, "layer-defs")

# cuda-convnet's and cuda-convnet2's layer types (SPEC.md); only these may be missing for now.
ALL_TYPES = set("""data conv local fc pool cmpool rnorm cmrnorm cnorm neuron eltsum eltmax sum softmax concat pass
dropout dropout2 blur nailbed resize href rscale crop rgb2yuv rgb2lab sfc cost.logreg cost.crossent cost.bce
cost.dce cost.sum2""".split())

# file -> (image size, extra data dims, GPUs needed)
REFERENCE = {
    "cuda-convnet/layers-18pct.cfg": (32, {}, 1),
    "cuda-convnet/layers-19pct.cfg": (32, {}, 1),
    "cuda-convnet/layers-80sec.cfg": (32, {}, 1),
    "cuda-convnet/layers-example.cfg": (32, {}, 1),
    "cuda-convnet/layers-conv-local-11pct.cfg": (24, {}, 1),
    "cuda-convnet/layers-conv-local-13pct.cfg": (24, {}, 1),
    "cuda-convnet/layers.gc.cfg": (8, {}, 1),
    "cuda-convnet2/layers-cifar10-11pct.cfg": (24, {}, 1),
    "cuda-convnet2/layers-imagenet-1gpu.cfg": (224, {}, 1),
    "cuda-convnet2/layers-imagenet-2gpu-data.cfg": (224, {}, 2),
    "cuda-convnet2/layers-imagenet-2gpu-model.cfg": (224, {}, 2),
    "cuda-convnet2/layers-imagenet-4gpu-data.cfg": (224, {}, 4),
    "cuda-convnet2/layers-imagenet-4gpu-data-model.cfg": (224, {}, 4),
}
LAYER_DEFS = {
    "alexnet.ini": (224, {}, 1),
    "cifar10-80sec.ini": (32, {}, 1),
    "cifar10-18pct.ini": (32, {}, 1),
    "cifar10-conv-local-11pct.ini": (24, {}, 1),
    "mnist-small.ini": (28, {}, 1),
    "gradcheck.ini": (8, {2: (10, 1, 1)}, 1),
    "quickstart.ini": (32, {}, 1),
}


def load(path, image_size, extra):
    text = open(path, encoding="utf-8").read()
    params = find_params_file(path)
    dims = infer_data_dims(path, text, image_size, extra)
    return ccn.Net(path, params, dims, init=False)


def test_every_reference_file_is_listed():
    if not os.path.isdir(REF):
        pytest.skip("../shared/reference is not present")
    found = {os.path.relpath(os.path.join(d, f), REF) for d, _, fs in os.walk(REF) for f in fs
             if f.startswith("layers")}
    assert found == set(REFERENCE)


def test_every_layer_def_is_listed():
    found = {f for f in os.listdir(DEFS) if f.endswith(".ini") and not f.endswith("-params.ini")}
    assert found == set(LAYER_DEFS)
    for f in found:  # and each has its params file by the params-file rule
        assert os.path.isfile(os.path.join(DEFS, f.replace(".ini", "-params.ini")))


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_reference_file_loads(name, reference_dir):
    size, extra, gpus = REFERENCE[name]
    net = load(os.path.join(reference_dir, name), size, extra)
    assert net.gpus_needed == gpus
    assert net.cost_layers()


@pytest.mark.parametrize("name", sorted(LAYER_DEFS))
def test_layer_def_loads(name):
    size, extra, gpus = LAYER_DEFS[name]
    net = load(os.path.join(DEFS, name), size, extra)
    assert net.gpus_needed == gpus
    assert net.cost_layers()


def shapes(net):
    return {l.name: l.shape for l in net.layers}


def test_imagenet_1gpu_shapes(reference_dir):
    s = shapes(load(os.path.join(reference_dir, "cuda-convnet2/layers-imagenet-1gpu.cfg"), 224, {}))
    assert s["conv1"] == (64, 55, 55) and s["pool3"] == (256, 6, 6) and s["fc1000"] == (1000, 1, 1)


def test_18pct_shapes(reference_dir):
    s = shapes(load(os.path.join(reference_dir, "cuda-convnet/layers-18pct.cfg"), 32, {}))
    assert s["pool3"] == (64, 4, 4)


def test_alexnet_shapes():
    net = load(os.path.join(DEFS, "alexnet.ini"), 224, {})
    s = shapes(net)
    assert s["conv1"] == (64, 55, 55) and s["pool1"] == (64, 27, 27) and s["pool2"] == (192, 13, 13)
    assert s["pool3"] == (256, 6, 6) and s["fc6"] == (4096, 1, 1) and s["fc8"] == (1000, 1, 1)
    counts = {p.name: p.shape[0] * p.shape[1] for p in net.params}
    assert counts["fc6.weights[0]"] == 9216 * 4096
    ps = {p.name: p for p in net.params}
    assert ps["fc6.weights[0]"].eps == "dexp[base=0.01;tgtFactor=250;numSteps=4]"


def test_cifar_and_mnist_shapes():
    assert shapes(load(os.path.join(DEFS, "cifar10-18pct.ini"), 32, {}))["pool3"] == (64, 4, 4)
    assert shapes(load(os.path.join(DEFS, "cifar10-80sec.ini"), 32, {}))["pool3"] == (64, 4, 4)
    s = shapes(load(os.path.join(DEFS, "cifar10-conv-local-11pct.ini"), 24, {}))
    assert s["pool2"] == (64, 6, 6) and s["local4"] == (32, 6, 6)
    assert shapes(load(os.path.join(DEFS, "mnist-small.ini"), 28, {}))["pool2"] == (32, 7, 7)


def test_every_original_layer_type_is_registered():
    assert ALL_TYPES <= set(core.layer_types())


def test_gradcheck_uses_every_layer_type():
    # every registered type, so that a new layer type is added to gradcheck.ini with its code
    text = open(os.path.join(DEFS, "gradcheck.ini")).read()
    used = set(re.findall(r"^type\s*=\s*(\S+)", text, flags=re.M))
    registered = set(core.layer_types())
    assert used == registered, (f"layer-defs/gradcheck.ini lacks {sorted(registered - used)}; "
                                f"unknown there: {sorted(used - registered)}")
