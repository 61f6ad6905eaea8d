"""`ccn import-checkpoint`: checkpoints of the original cuda-convnet (2012) and cuda-convnet2
(2014), written by Python 2's cPickle (tests/legacy/make_fixtures_py2.py; the files are in
fixtures/), become ccn checkpoints that test, show and train on.

The fixtures' weights follow a formula (value(salt, r, c) below), so every imported matrix is
checked entry by entry, the Fortran-ordered fc matrices and the weightSource-shared conv
filters included; the imported net's outputs are checked against a NumPy forward pass written
from the originals' layout rules; and the bad inputs each give one clear paragraph, exit 2."""

import io
import os
import pickle
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner

from ccn import checkpoint as ck
from ccn import legacy
from ccn.cli import main as climain
from ccn.errors import InputError
from ccn.testing import load_model

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
FIX = os.path.join(HERE, "fixtures")
RUN12 = os.path.join(FIX, "cuda-convnet", "ConvNet__2012-06-01_15.30.12")
RUN14 = os.path.join(FIX, "cuda-convnet2", "ConvNet__2014-07-01_12.00.00")

# the salts make_fixtures_py2.py gave each layer: weights[i] salt + i, their increments salt + 500 + i,
# biases salt + 100, their increments salt + 600 (conv1b's filters are conv1's, shared)
SALTS12 = {"conv1": 11, "conv1b": 21, "fc10": 31}
SALTS14 = {"conv1": 41, "local2": 51, "fc10": 61}


def value(salt, shape):
    r, c = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    return (((r * 7 + c * 13 + salt) % 97 - 48) / 256.0).astype(np.float32)


def expected(salts, name, shape, inc=False):
    layer, part = name.rsplit(".", 1)
    if part == "biases":
        return value(salts[layer] + (600 if inc else 100), shape)
    i = int(part[len("weights["):-1])
    return value(salts[layer] + (500 if inc else 0) + i, shape)


def invoke(*args):
    return CliRunner().invoke(climain.cli, list(args))


@pytest.fixture
def data(tmp_path_factory):
    """The built-in shapes as ccn batches 1-3 (train) and 4 (test), 3 x 32 x 32 like the fixtures' nets."""
    d = tmp_path_factory.mktemp("data") / "builtin"
    r = invoke("prepare-data", "builtin", "--out", str(d), "--train-batches", "3", "--test-batches", "1",
               "--batch-size", "60")
    assert r.exit_code == 0, r.output
    return str(d)


# ---- reading ---------------------------------------------------------------------------------------
def test_reads_both_generations_as_their_trainers_saved_them():
    o = legacy.read(RUN12)  # a folder: its newest file by number (10.1 after 2.2), a --zip-save zip
    assert os.path.basename(o.path) == "10.1" and o.dialect == "cuda-convnet"
    assert list(o.layers) == ["data", "labels", "conv1", "conv1_neuron", "conv1b", "conv1b_neuron", "fc10", "probs",
                              "logprob"]
    assert (o.epoch, o.batchnum, len(o.train_outputs), len(o.test_outputs)) == (10, 1, 28, 14)
    assert o.options["train_batch_range"] == [1, 2, 3] and o.options["minibatch_size"] == 64
    # the shared filters are one object in both layers, as the pickle memo had them
    assert o.layers["conv1b"]["weights"][0] is o.layers["conv1"]["weights"][0]
    assert o.layers["fc10"]["inputLayers"][0] is o.layers["conv1_neuron"]
    old = legacy.read(os.path.join(RUN12, "2.2"))  # a plain pickle, given as a file
    assert (old.epoch, old.batchnum, len(old.train_outputs)) == (2, 2, 5)
    o2 = legacy.read(RUN14)
    assert o2.dialect == "cuda-convnet2" and list(o2.layers)[:3] == ["data", "labels", "conv1"]
    assert (o2.epoch, o2.batchnum) == (5, 2) and o2.options["layer_path"] == "/home/alex/cuda-convnet2/layers"
    assert legacy.data_dims(o) == legacy.data_dims(o2) == {0: (3, 32, 32), 1: (1, 1, 1)}


@pytest.mark.parametrize("run,salts,n", [(RUN12, SALTS12, 6), (RUN14, SALTS14, 6)], ids=["cuda-convnet", "cuda-convnet2"])
def test_every_matrix_arrives_entry_by_entry(run, salts, n):
    c, notes = legacy.convert(legacy.read(run), seed=5)
    names = [p["name"] for p in c.net_meta["params"]]
    assert len(names) == n
    for name, p in zip(names, c.net_meta["params"]):
        shape = tuple(p["shape"])
        w, inc, grad = (c.arrays[f"{k}/{name}"] for k in ("w", "inc", "grad"))
        assert w.dtype == np.float32 and w.flags.c_contiguous
        np.testing.assert_array_equal(w, expected(salts, name, shape), err_msg=name)
        np.testing.assert_array_equal(inc, expected(salts, name, shape, inc=True), err_msg=name)
        assert not grad.any() and p["passes"] == 0
    assert "conv1b.weights[0]" not in names  # shared through weightSource: kept once, in conv1
    # the layer files were found next to the checkpoint, under the names its options recorded
    assert any("layers-tiny" in s and "next to the checkpoint" in s for s in notes)


def test_position_options_and_history():
    c, _ = legacy.convert(legacy.read(RUN12), seed=5)
    pos, opts, hist = c.position, c.options, c.meta["history"]
    # 10.1 was the last batch trained: ccn goes on with batch 2 of epoch 10, as the original's resume
    assert (pos["epoch"], pos["index"], pos["mb"], pos["batches_done"], pos["last"]) == (10, 1, 0, 28, [10, 1])
    assert (opts["train_range"], opts["test_range"], opts["mini"], opts["test_freq"], opts["epochs"]) == \
        ("1-3", "4", 64, 2, 20)
    assert opts["seed"] == pos["seed"] == c.net_meta["seed"] == 5
    # cuda-convnet's default --crop-border 4: the net saw crops of its input size, which is the inner size
    assert opts["inner_size"] == 32
    assert [(r["epoch"], r["batch"]) for r in hist["train"][:4]] == [(1, 1), (1, 2), (1, 3), (2, 1)]
    assert (hist["train"][-1]["epoch"], hist["train"][-1]["batch"]) == (10, 1)
    # cuda-convnet saved per-case averages: ccn keeps sums over the cases
    k = 27
    assert hist["train"][k]["cases"] == 100
    np.testing.assert_allclose(hist["train"][k]["costs"]["logprob"], [230 * 0.9 ** k, 90 * 0.95 ** k])
    assert len(hist["test"]) == 14 and hist["test"][0]["cases"] == 50
    assert (hist["test"][0]["epoch"], hist["test"][0]["batch"]) == (1, 2)  # after the 2nd batch (test-freq 2)
    np.testing.assert_allclose(hist["test"][0]["costs"]["logprob"], [(2.3 * 0.9 + 0.05) * 50, (0.9 * 0.95 + 0.02) * 50])
    c2, _ = legacy.convert(legacy.read(RUN14), seed=5)
    h2 = c2.meta["history"]
    # cuda-convnet2 saved the sums themselves
    np.testing.assert_allclose(h2["train"][13]["costs"]["logprob"], [230 * 0.9 ** 13, 90 * 0.95 ** 13])
    assert (c2.position["epoch"], c2.position["index"], c2.position["batches_done"]) == (5, 2, 14)
    assert c2.options["mini"] == 128 and c2.options["inner_size"] == 0


def test_imported_net_computes_what_the_original_layout_says(tmp_path, rng):
    r = invoke("import-checkpoint", RUN12, "--save-path", str(tmp_path / "run"), "--seed", "3")
    assert r.exit_code == 0, r.output
    _, net = load_model(str(tmp_path / "run"))
    o = legacy.read(RUN12)
    L = o.layers
    n = 7
    x = rng.standard_normal((n, 3, 32, 32)).astype(np.float32)
    labels = rng.integers(0, 10, (n, 1)).astype(np.float32)
    net.forward([x.reshape(n, -1), labels])
    # NumPy float64, from the pickle's arrays and cuda-convnet's rules: filter row c*16 + y*4 + x,
    # filter f's output f*64 + my*8 + mx (channels slowest), unshared biases f*64 + m, fc inputs in
    # the order of the layer's inputs
    patches = x.astype(np.float64).reshape(n, 3, 8, 4, 8, 4).transpose(0, 2, 4, 1, 3, 5).reshape(n, 64, 48)
    W = L["conv1"]["weights"][0].astype(np.float64)
    conv = np.einsum("npk,kf->nfp", patches, W)  # n x 4 x 64
    a = np.maximum(conv + L["conv1"]["biases"].astype(np.float64).reshape(1, 4, 1), 0).reshape(n, 256)
    b = np.maximum(conv + L["conv1b"]["biases"].astype(np.float64).reshape(1, 4, 64), 0).reshape(n, 256)
    fc = a @ L["fc10"]["weights"][0] + b @ L["fc10"]["weights"][1] + L["fc10"]["biases"].astype(np.float64)
    p = np.exp(fc - fc.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    np.testing.assert_allclose(net.output("conv1"), a, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(net.output("conv1b"), b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(net.output("probs"), p, rtol=1e-4, atol=1e-7)


def test_cli_import_then_test_show_and_train_on(tmp_path, data):
    run = str(tmp_path / "old")
    r = invoke("import-checkpoint", RUN14, "--save-path", run, "--data-path", data, "--seed", "1")
    assert r.exit_code == 0, r.output
    assert "cuda-convnet2 checkpoint" in r.output and "Wrote" in r.output and "5.2" in r.output
    assert ck.list_checkpoints(run) == [os.path.join(run, "5.2")]
    meta = ck.load(run).meta
    assert meta["imported"]["dialect"] == "cuda-convnet2" and meta["options"]["data_path"] == os.path.abspath(data)
    r = invoke("test", "-f", run)
    assert r.exit_code == 0, r.output
    assert "logprob" in r.output and "over 60 cases" in r.output
    r = invoke("show-cost", "-f", run, "-o", str(tmp_path / "cost.png"))
    assert r.exit_code == 0, r.output
    assert "14 training batches" in r.output
    r = invoke("show-filters", "-f", run, "--layer", "conv1", "-o", str(tmp_path / "f.png"))
    assert r.exit_code == 0 and os.path.getsize(tmp_path / "f.png") > 0
    # training goes on with the batch after 5.2 (5.3), then epoch 6; tests every 2 batches as saved
    r = invoke("train", "-f", run, "--epochs", "6", "--mini", "32")
    assert r.exit_code == 0, r.output
    trained = [ln.split(" ")[0] for ln in r.output.splitlines() if "(" in ln and "%)..." in ln]
    assert trained == ["5.3", "6.1", "6.2", "6.3"], r.output
    assert [os.path.basename(p) for p in ck.list_checkpoints(run)] == ["5.2", "6.1", "6.3"]
    assert len(ck.load(run).meta["history"]["train"]) == 18


# ---- nets the original rewrote: --unshare-weights, --conv-to-local ------------------------------------
def test_unshared_and_converted_layers_are_rewritten_as_the_original_did(tmp_path):
    unshared = os.path.join(FIX, "cuda-convnet", "ConvNet__2012-07-01_10.00.00")
    c, notes = legacy.convert(legacy.read(unshared), seed=1)
    # conv1b's own filters (the layer file still says weightSource=conv1) are imported, not dropped
    np.testing.assert_array_equal(c.arrays["w/conv1b.weights[0]"], value(21, (48, 4)))
    np.testing.assert_array_equal(c.arrays["inc/conv1b.weights[0]"], value(521, (48, 4)))
    np.testing.assert_array_equal(c.arrays["w/conv1.weights[0]"], value(11, (48, 4)))
    assert any("conv1b" in n for n in notes) and "weightSource" not in c.layers_text.split("[conv1b]")[1]
    local = os.path.join(FIX, "cuda-convnet2", "ConvNet__2014-08-01_08.00.00")
    c, notes = legacy.convert(legacy.read(local), seed=1)
    np.testing.assert_array_equal(c.arrays["w/conv1.weights[0]"], value(41, (3072, 4)))
    np.testing.assert_array_equal(c.arrays["w/conv1.biases"], value(141, (256, 1)))
    assert "type=local" in c.layers_text.split("[conv1]")[1].split("[")[0].replace(" ", "")
    assert any("conv1" in n and "local" in n for n in notes)
    # both then test through ccn; the file they came from is not reported as edited on resume
    for src in (unshared, local):
        run = str(tmp_path / os.path.basename(src))
        assert invoke("import-checkpoint", src, "--save-path", run).exit_code == 0
        _, net = load_model(run)
        assert {p.name for p in net.params} == {k[2:] for k in ck.load(run).arrays if k.startswith("w/")}


# ---- bad input -----------------------------------------------------------------------------------
def test_missing_layer_files_name_the_recorded_ones(tmp_path):
    src = tmp_path / "ConvNet__x"
    shutil.copytree(RUN14, src)  # without the layer files that lie next to the fixtures
    r = invoke("import-checkpoint", str(src), "--save-path", str(tmp_path / "run"))
    assert r.exit_code == 2
    assert "/home/alex/cuda-convnet2/layers/layers-tiny2.cfg" in r.output and "--layers" in r.output
    assert "Traceback" not in r.output and not (tmp_path / "run").exists()


def test_layer_files_of_another_net_are_refused(tmp_path):
    other = os.path.join(FIX, "cuda-convnet2")
    r = invoke("import-checkpoint", RUN12, "--save-path", str(tmp_path / "run"),
               "--layers", os.path.join(other, "layers-tiny2.cfg"), "--params", os.path.join(other, "layer-params-tiny2.cfg"))
    assert r.exit_code == 2
    assert "local2" in r.output and "not those it was trained with" in r.output
    assert not (tmp_path / "run").exists()


def test_existing_checkpoint_is_not_overwritten(tmp_path):
    run = str(tmp_path / "run")
    assert invoke("import-checkpoint", RUN12, "--save-path", run).exit_code == 0
    before = open(os.path.join(run, "10.1", "meta.json")).read()
    for src in (RUN12, os.path.join(RUN12, "2.2")):  # the same one again, or an older one beside it
        r = invoke("import-checkpoint", src, "--save-path", run)
        assert r.exit_code == 2 and "holds checkpoints already (10.1)" in r.output
    assert open(os.path.join(run, "10.1", "meta.json")).read() == before
    assert ck.list_checkpoints(run) == [os.path.join(run, "10.1")]


def test_dash_f_with_an_original_checkpoint_says_how_to_convert():
    for cmd in (["test", "-f", RUN12], ["train", "-f", os.path.join(RUN14, "5.2")], ["show-cost", "-f", RUN14]):
        r = subprocess.run([sys.executable, "-m", "ccn.cli.main", *cmd], capture_output=True, text=True, timeout=120,
                           env={**os.environ, "PYTHONPATH": ROOT})
        assert r.returncode == 2, r.stderr
        assert "ccn import-checkpoint" in r.stderr and "Traceback" not in r.stderr


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize("kind", ["truncated", "evil", "zip-without-data", "not-a-pickle", "no-model-state",
                                  "empty-folder", "bad-inputs", "bad-epoch", "ccn-checkpoint"])
def test_unreadable_checkpoints(tmp_path, kind):
    raw = open(os.path.join(RUN14, "5.2"), "rb").read()
    f = tmp_path / "3.1"
    if kind == "truncated":
        f.write_bytes(raw[: len(raw) // 2])
    elif kind == "evil":
        f.write_bytes(pickle.dumps({"model_state": {"layers": []}, "op": Evil()}, protocol=2))
    elif kind == "zip-without-data":
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("other", raw)
        f.write_bytes(buf.getvalue())
    elif kind == "not-a-pickle":
        f.write_bytes(b"[conv1]\ntype=conv\n")
    elif kind == "no-model-state":
        f.write_bytes(pickle.dumps({"layers": []}, protocol=2))
    elif kind in ("bad-inputs", "bad-epoch"):
        layers = [{"name": "data", "type": "data", "dataIdx": 0, "outputs": 3},
                  {"name": "fc", "type": "fc", "inputs": 7 if kind == "bad-inputs" else [0]}]
        ms = {"layers": layers, "epoch": -3 if kind == "bad-epoch" else 1, "batchnum": 1}
        f.write_bytes(pickle.dumps({"model_state": ms, "op": {}}, protocol=2))
    elif kind == "ccn-checkpoint":
        f = tmp_path / "run"
        assert invoke("import-checkpoint", RUN12, "--save-path", str(f)).exit_code == 0
    else:
        f = tmp_path / "empty"
        f.mkdir()
    with pytest.raises(InputError) as e:
        legacy.read(str(f))
    msg = str(e.value)
    assert str(f) in msg
    if kind == "evil":
        assert "posix.system" in msg or "os.system" in msg
    r = invoke("import-checkpoint", str(f), "--save-path", str(tmp_path / "run"))
    assert r.exit_code == 2 and str(f) in r.output
