"""Writes the cuda-convnet checkpoints in tests/legacy/fixtures with Python 2's cPickle, as the
originals were written: run with a Python 2.7 (no NumPy needed), from the repository root:

    python2.7 tests/legacy/make_fixtures_py2.py

Python 2.7 and NumPy 1.x pickled arrays as ``numpy.core.multiarray._reconstruct(ndarray, (0,),
'b')`` followed by the state ``(1, shape, dtype, is_fortran, raw bytes as a str)``, dtypes as
``numpy.dtype('f4', 0, 1)`` with state ``(3, '<', None, None, None, -1, -1, 0)``, and the
options as old-style class instances of the ``options`` module (cuda-convnet) or
``python_util.options`` (cuda-convnet2). This script installs stand-ins under those module
names, so cPickle writes exactly those opcodes (GLOBAL, REDUCE, OBJ, BUILD, BINSTRING) without
NumPy or the original code. The checkpoint structure follows gpumodel.py's save_state():
{'model_state': {'layers', 'train_outputs', 'test_outputs', 'epoch', 'batchnum'}, 'op': OptionsParser}.

Every weight value is a small rational number exactly representable in float32,
value(salt, r, c) = ((r * 7 + c * 13 + salt) % 97 - 48) / 256.0, so the tests recompute them.
"""
from __future__ import print_function

import cPickle
import os
import struct
import sys
import types
import zipfile

assert sys.version_info[0] == 2, "run this with Python 2.7: it must write Python 2 pickles"

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "fixtures")


# ---- stand-ins for numpy's pickling ------------------------------------------------------------
def _module(name):
    m = types.ModuleType(name)
    sys.modules[name] = m
    return m


np_mod, core_mod, ma_mod = _module("numpy"), _module("numpy.core"), _module("numpy.core.multiarray")


def _reconstruct(*args):
    raise RuntimeError("only for pickling")


_reconstruct.__module__ = "numpy.core.multiarray"
ma_mod._reconstruct = _reconstruct


class ndarray(object):
    pass


ndarray.__module__ = "numpy"
np_mod.ndarray = ndarray


class dtype(object):
    def __reduce__(self):
        return (dtype, ("f4", 0, 1), (3, "<", None, None, None, -1, -1, 0))


dtype.__module__ = "numpy"
np_mod.dtype = dtype
F4 = dtype()  # one dtype object, memoised by the pickler as numpy's was


def value(salt, r, c):
    return ((r * 7 + c * 13 + salt) % 97 - 48) / 256.0


class Array(object):
    """A float32 matrix rows x cols pickled like numpy's ndarray (C or Fortran order)."""

    def __init__(self, rows, cols, salt, fortran=False):
        self.shape, self.fortran = (rows, cols), fortran
        if fortran:
            vals = [value(salt, r, c) for c in range(cols) for r in range(rows)]
        else:
            vals = [value(salt, r, c) for r in range(rows) for c in range(cols)]
        self.raw = struct.pack("<%df" % len(vals), *vals)

    def __reduce__(self):
        return (_reconstruct, (ndarray, (0,), "b"), (1, self.shape, F4, self.fortran, self.raw))


# ---- stand-ins for the options module (old-style classes, as in options.py) --------------------
def options_module(name):
    if "." in name:
        _module(name.split(".")[0])
    mod = _module(name)
    src = (
        "class OptionsParser:\n    pass\n"
        "class Option:\n    pass\n"
        "class OptionExpression:\n    pass\n"
        "class ListOptionParser:\n    pass\n"
        "class StringOptionParser:\n    pass\n"
        "class IntegerOptionParser:\n    pass\n"
        "class FloatOptionParser:\n    pass\n"
        "class BooleanOptionParser:\n    pass\n"
        "class RangeOptionParser:\n    pass\n"
    )
    exec(src, mod.__dict__)
    for k in list(mod.__dict__):
        obj = mod.__dict__[k]
        if isinstance(obj, types.ClassType):
            obj.__module__ = name
    return mod


def make_op(mod, values):
    """An OptionsParser whose options dict holds Option objects with these values."""
    op = mod.OptionsParser()
    op.options = {}
    for name, (parser, val) in sorted(values.items()):
        o = mod.Option()
        o.letter, o.name, o.desc = name.replace("_", "-"), name, "option " + name
        if parser == "list":
            p = mod.ListOptionParser()
            p.parsers, p.sepchar = mod.IntegerOptionParser, ","
            o.parser = p
        else:
            o.parser = getattr(mod, parser)
        o.set_once, o.default, o.excuses, o.requires, o.save = False, None, [], [], True
        o.value, o.value_given, o.prefixed_letter = val, True, "--" + o.letter
        if name == "gpu":
            e = mod.OptionExpression()
            e.expr = "[-1] * num_gpus"
            o.default = e
        op.options[name] = o
    return op


# ---- the net (layers-tiny.cfg next to the fixtures): data 3x32x32 -> conv1 (4 filters 4x4,
# stride 4, relu) and conv1b (conv1's weights via weightSource, unshared biases) -> fc10 -> softmax
def weight_layer(name, ltype, weights, biases, salt, **keys):
    d = {"name": name, "type": ltype, "weights": [], "weightsInc": [], "usesActs": True, "usesInputs": True,
         "gradConsumer": True, "requiresParams": True, "forceOwnActs": False}
    for i, w in enumerate(weights):
        if isinstance(w, Array):
            d["weights"].append(w)
            d["weightsInc"].append(Array(w.shape[0], w.shape[1], salt + 500 + i, w.fortran))
        else:  # (rows, cols, fortran)
            d["weights"].append(Array(w[0], w[1], salt + i, w[2]))
            d["weightsInc"].append(Array(w[0], w[1], salt + 500 + i, w[2]))
    d["biases"] = Array(biases[0], biases[1], salt + 100)
    d["biasesInc"] = Array(biases[0], biases[1], salt + 600)
    d.update(keys)
    return d


def conv_keys(shared_biases):
    return dict(channels=[3], filterSize=[4], padding=[0], stride=[4], filters=4, modulesX=8, modules=64,
                imgSize=[32], filterChannels=[3], filterPixels=[16], imgPixels=[1024], groups=[1],
                sharedBiases=shared_biases, partialSum=0, randSparse=[False], initW=[0.01], initB=0,
                outputs=4 * 64)


def layers_2012():
    data = {"name": "data", "type": "data", "dataIdx": 0, "outputs": 3 * 32 * 32}
    labels = {"name": "labels", "type": "data", "dataIdx": 1, "outputs": 1}
    conv1 = weight_layer("conv1", "conv", [(48, 4, False)], (4, 1), 11, **conv_keys(1))
    conv1b = weight_layer("conv1b", "conv", [conv1["weights"][0]], (256, 1), 21, **conv_keys(0))
    conv1b["weightsInc"][0] = conv1["weightsInc"][0]  # make_weights shares both objects
    ordered = [data, labels, conv1, None, conv1b, None, None, None, None]
    # cuda-convnet detaches neurons into layers named <layer>_neuron right after their source
    for i, src in ((3, conv1), (5, conv1b)):
        ordered[i] = {"name": src["name"] + "_neuron", "type": "neuron", "outputs": 256,
                      "neuron": {"type": "relu", "params": {}, "usesActs": True, "usesInputs": False}}
    fc10 = weight_layer("fc10", "fc", [(256, 10, True), (256, 10, True)], (1, 10), 31, outputs=10,
                        epsW=[0.001, 0.001], epsB=0.002, momW=[0.9, 0.9], momB=0.9, wc=[0.004, 0.004])
    ordered[6] = fc10
    ordered[7] = {"name": "probs", "type": "softmax", "outputs": 10}
    ordered[8] = {"name": "logprob", "type": "cost.logreg", "outputs": 0, "coeff": 1}
    for d in (conv1, conv1b):
        d.update(epsW=[0.001], epsB=0.002, momW=[0.9], momB=0.9, wc=[0.0])
    conv1["weightSourceLayerIndices"], conv1["weightSourceMatrixIndices"] = [-1], [0]
    conv1b["weightSourceLayerIndices"], conv1b["weightSourceMatrixIndices"] = [2], [0]
    fc10["weightSourceLayerIndices"], fc10["weightSourceMatrixIndices"] = [-1, -1], [0, 0]
    wiring = {2: [0], 3: [2], 4: [0], 5: [4], 6: [3, 5], 7: [6], 8: [1, 7]}
    for i, ins in wiring.items():
        ordered[i]["inputs"] = ins
        ordered[i]["inputLayers"] = [ordered[j] for j in ins]
        ordered[i]["numInputs"] = [ordered[j]["outputs"] for j in ins]
    return ordered


def layers_2012_unshared():
    """The 2012 net after the original's --unshare-weights conv1b: conv1b holds filters of its own
    (weightSourceLayerIndices -1) while the layer file still says weightSource=conv1."""
    ordered = layers_2012()
    conv1b = ordered[4]
    conv1b["weights"] = [Array(48, 4, 21)]
    conv1b["weightsInc"] = [Array(48, 4, 521)]
    conv1b["weightSourceLayerIndices"] = [-1]
    return ordered


def layers_2014_local():
    """The 2014 net after the original's --conv-to-local conv1: conv1 is a local layer (one filter
    bank per module, biases per module) while the layer file still says type=conv."""
    by_name = layers_2014()
    conv1 = by_name["conv1"]
    conv1["type"] = "local"
    conv1["weights"] = [Array(64 * 48, 4, 41)]
    conv1["weightsInc"] = [Array(64 * 48, 4, 541)]
    conv1["biases"] = Array(256, 1, 141)
    conv1["biasesInc"] = Array(256, 1, 641)
    return by_name


def layers_2014():
    data = {"name": "data", "type": "data", "dataIdx": 0, "outputs": 3 * 32 * 32, "start": 0, "end": 3072}
    labels = {"name": "labels", "type": "data", "dataIdx": 1, "outputs": 1, "start": 0, "end": 1}
    conv1 = weight_layer("conv1", "conv", [(48, 4, False)], (4, 1), 41, neuron="relu", **conv_keys(1))
    local2 = weight_layer("local2", "local", [(64 * 4 * 9, 2, False)], (128, 1), 51, neuron="relu", channels=[4],
                          filterSize=[3], padding=[-1], stride=[1], filters=2, modulesX=8, modules=64,
                          imgSize=[8], filterChannels=[4], filterPixels=[9], imgPixels=[64], groups=[1],
                          outputs=2 * 64)
    fc10 = weight_layer("fc10", "fc", [(128, 10, True)], (1, 10), 61, outputs=10, neuron="")
    for d in (conv1, local2, fc10):
        n = len(d["weights"])
        d.update(epsW=[{"type": "const", "params": {"base": 0.001}}] * n,
                 epsB={"type": "const", "params": {"base": 0.002}}, momW=[0.9] * n, momB=0.9, wc=[0.0] * n,
                 wball=[0.0] * n, superEps=0, superMom=0, updatePeriod=1, weightSource=[""] * n,
                 weightSourceLayers=[""] * n, weightSourceMatrixIndices=[0] * n, gpu=[0], gpus="0", numReplicas=1)
    probs = {"name": "probs", "type": "softmax", "outputs": 10, "gpu": [0]}
    logprob = {"name": "logprob", "type": "cost.logreg", "outputs": 0, "coeff": 1, "topk": 1,
               "outputFilter": "lambda costs,num_cases: [c/num_cases for c in costs[:2]]"}
    ordered = [data, labels, conv1, local2, fc10, probs, logprob]
    wiring = {"conv1": ["data"], "local2": ["conv1"], "fc10": ["local2"], "probs": ["fc10"],
              "logprob": ["labels", "probs"]}
    by_name = dict((d["name"], d) for d in ordered)
    for i, d in enumerate(ordered):
        d["id"] = i
        if d["name"] in wiring:
            d["inputs"] = wiring[d["name"]]
            d["inputLayers"] = [by_name[n] for n in d["inputs"]]
            d["numInputs"] = [by_name[n]["outputs"] for n in d["inputs"]]
    return by_name


def history(n_train, test_every, averaged):
    """(train_outputs, test_outputs): per batch ({'logprob': [logprob, error]}, 100 cases), and per
    test_every batches a test of 50 cases; cuda-convnet saved per-case averages, cuda-convnet2 sums."""
    train, test = [], []
    for k in range(n_train):
        lp, err = 2.3 * 0.9 ** k, 0.9 * 0.95 ** k
        cases = 100
        train.append(({"logprob": [lp, err] if averaged else [lp * cases, err * cases]}, cases))
        if (k + 1) % test_every == 0:
            test.append(({"logprob": [lp + 0.05, err + 0.02] if averaged else [(lp + 0.05) * 50, (err + 0.02) * 50]},
                         50))
    return train, test


def write(path, obj, zipped=False):
    if not os.path.isdir(os.path.dirname(path)):
        os.makedirs(os.path.dirname(path))
    data = cPickle.dumps(obj, cPickle.HIGHEST_PROTOCOL)
    if zipped:  # util.py pickle(compress=True): a deflated zip holding one member, 'data'
        z = zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, allowZip64=True)
        z.writestr("data", data)
        z.close()
    else:
        with open(path, "wb") as f:
            f.write(data)
    print(path, os.path.getsize(path), "bytes")


def main():
    opt12 = options_module("options")
    common = {"train_batch_range": ("RangeOptionParser", [1, 2, 3]),
              "test_batch_range": ("RangeOptionParser", [4]), "testing_freq": ("IntegerOptionParser", 2),
              "num_epochs": ("IntegerOptionParser", 20), "minibatch_size": ("IntegerOptionParser", 64),
              "data_path": ("StringOptionParser", "/storage/data/cifar-10-py-colmajor"),
              "save_path": ("StringOptionParser", "/storage/tmp"), "dp_type": ("StringOptionParser", "cifar"),
              "test_one": ("BooleanOptionParser", True), "test_only": ("BooleanOptionParser", False),
              "gpu": ("list", [0]), "load_file": ("StringOptionParser", ""),
              "multiview_test": ("BooleanOptionParser", False), "check_grads": ("BooleanOptionParser", False),
              "conv_to_local": ("list", []), "unshare_weights": ("list", []),
              "conserve_mem": ("BooleanOptionParser", False), "logreg_name": ("StringOptionParser", "logprob")}
    v12 = dict(common)
    v12.update({"layer_def": ("StringOptionParser", "/home/alex/cuda-convnet/layers-tiny.cfg"),
                "layer_params": ("StringOptionParser", "/home/alex/cuda-convnet/layer-params-tiny.cfg"),
                "max_filesize_mb": ("IntegerOptionParser", 0), "num_gpus": ("IntegerOptionParser", 1),
                "zip_save": ("BooleanOptionParser", True), "crop_border": ("IntegerOptionParser", 4)})
    run = os.path.join(OUT, "cuda-convnet", "ConvNet__2012-06-01_15.30.12")
    layers = layers_2012()
    # an older checkpoint, plain pickle (zip_save=0), then the newest (10.1 sorts after 2.2)
    tr, te = history(5, 2, averaged=True)
    write(os.path.join(run, "2.2"), {"model_state": {"layers": layers, "train_outputs": tr, "test_outputs": te,
                                                      "epoch": 2, "batchnum": 2}, "op": make_op(opt12, v12)})
    tr, te = history(28, 2, averaged=True)
    write(os.path.join(run, "10.1"), {"model_state": {"layers": layers, "train_outputs": tr, "test_outputs": te,
                                                       "epoch": 10, "batchnum": 1}, "op": make_op(opt12, v12)},
          zipped=True)

    v12u = dict(v12)
    v12u["unshare_weights"] = ("list", ["conv1b"])
    tr, te = history(8, 2, averaged=True)
    write(os.path.join(OUT, "cuda-convnet", "ConvNet__2012-07-01_10.00.00", "3.2"),
          {"model_state": {"layers": layers_2012_unshared(), "train_outputs": tr, "test_outputs": te, "epoch": 3,
                           "batchnum": 2}, "op": make_op(opt12, v12u)})

    opt14 = options_module("python_util.options")
    v14 = dict(common)
    v14.update({"layer_def": ("StringOptionParser", "layers-tiny2.cfg"),
                "layer_params": ("StringOptionParser", "layer-params-tiny2.cfg"),
                "layer_path": ("StringOptionParser", "/home/alex/cuda-convnet2/layers"),
                "save_file_override": ("StringOptionParser", ""), "force_save": ("BooleanOptionParser", False),
                "inner_size": ("IntegerOptionParser", 0), "color_noise": ("FloatOptionParser", 0.0),
                "scalar_mean": ("FloatOptionParser", -1.0), "test_out": ("StringOptionParser", ""),
                "write_features": ("StringOptionParser", ""), "feature_path": ("StringOptionParser", "")})
    v14["minibatch_size"] = ("IntegerOptionParser", 128)
    tr, te = history(14, 2, averaged=False)
    write(os.path.join(OUT, "cuda-convnet2", "ConvNet__2014-07-01_12.00.00", "5.2"),
          {"model_state": {"layers": layers_2014(), "train_outputs": tr, "test_outputs": te, "epoch": 5,
                           "batchnum": 2}, "op": make_op(opt14, v14)})
    v14l = dict(v14)
    v14l["conv_to_local"] = ("list", ["conv1"])
    tr, te = history(10, 2, averaged=False)
    write(os.path.join(OUT, "cuda-convnet2", "ConvNet__2014-08-01_08.00.00", "4.1"),
          {"model_state": {"layers": layers_2014_local(), "train_outputs": tr, "test_outputs": te, "epoch": 4,
                           "batchnum": 1}, "op": make_op(opt14, v14l)})


if __name__ == "__main__":
    main()
