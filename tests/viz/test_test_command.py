"""`ccn test`: costs equal the trainer's test and a NumPy hand computation; --test-out and
--write-features contents; multiview; bad input."""

import csv
import io
import json
import os

import numpy as np
import pytest

import fakedata
from ccn import checkpoint as ck
from ccn.cli.test import run_test_command
from ccn.errors import InputError


def run(load, **kw):
    out = io.StringIO()
    res = run_test_command(load, out=out, **kw)
    return res, out.getvalue()


def test_matches_the_trainers_last_test(fake_run, conv_run):
    for r in (fake_run, conv_run):
        c = ck.load(r["run"])
        last = c.meta["history"]["test"][-1]
        res, out = run(r["run"])
        assert res["cases"] == last["cases"]
        for name, vals in last["costs"].items():
            np.testing.assert_allclose(res["costs"][name], vals, rtol=1e-12, atol=0)
        assert "======================Test output======================" in out


def _hand_costs(run_dir, data, batches):
    """fakedata's fc net computed in float64 from the checkpoint's arrays."""
    c = ck.load(run_dir)
    w = lambda n: c.arrays[f"w/{n}"].astype(np.float64)
    prov = fakedata.open_provider(data, batches, train=False, options=fakedata.ProviderOptions())
    nll = err = 0.0
    n = 0
    labels_all, probs_all = [], []
    for b in batches:
        x, y = prov.load(b, 1)
        h = 1.7 * np.tanh(0.66 * (x.astype(np.float64) @ w("fc1.weights[0]") + w("fc1.biases")))
        z = h @ w("fc2.weights[0]") + w("fc2.biases")
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        lab = y[:, 0].astype(int)
        nll += -np.log(p[np.arange(len(lab)), lab]).sum()
        err += (p.argmax(axis=1) != lab).sum()
        n += len(lab)
        labels_all.append(lab)
        probs_all.append(p)
    return nll / n, err / n, np.concatenate(labels_all), np.concatenate(probs_all)


def test_error_matches_a_hand_computation(fake_run, tmp_path):
    nll, err, labels, probs = _hand_costs(fake_run["run"], fake_run["data"], [4, 5])
    res, out = run(fake_run["run"], test_out=str(tmp_path / "p.npz"))
    vals = [v / res["cases"] for v in res["costs"]["logprob"]]
    assert res["cases"] == 80
    np.testing.assert_allclose(vals[0], nll, rtol=1e-5)
    assert abs(vals[1] - err) < 1e-9 and 0 < err < 1  # the net is right on some and wrong on others
    assert f"error {err:.6f} ({100 * err:.2f}%)" in out
    # one test batch only: --test-range
    nll5, err5, _, _ = _hand_costs(fake_run["run"], fake_run["data"], [5])
    res5, _ = run(fake_run["run"], test_range="5", mini=7)
    np.testing.assert_allclose(res5["costs"]["logprob"][0] / 40, nll5, rtol=1e-5)
    # --test-out: labels, top 5 (all 3 classes here) and probabilities
    z = np.load(tmp_path / "p.npz")
    np.testing.assert_array_equal(z["label"], labels)
    np.testing.assert_array_equal(z["batch"], [4] * 40 + [5] * 40)
    np.testing.assert_array_equal(z["case"], list(range(40)) * 2)
    assert z["top_classes"].shape == (80, 3)
    np.testing.assert_array_equal(z["top_classes"][:, 0], probs.argmax(axis=1))
    np.testing.assert_allclose(z["top_probs"], -np.sort(-probs, axis=1), atol=1e-5)
    assert list(z["label_names"]) == ["class0", "class1", "class2"]


def test_test_out_csv_and_topk(conv_run, tmp_path):
    out_csv = tmp_path / "preds.csv"
    res, _ = run(conv_run["run"], test_out=str(out_csv))
    rows = list(csv.DictReader(open(out_csv)))
    assert len(rows) == 60 == res["cases"]
    assert list(rows[0])[:5] == ["batch", "case", "label", "label_name", "top1"]
    assert all(f"prob{j}" in rows[0] for j in range(1, 6))
    wrong = sum(r["top1"] != r["label"] for r in rows)
    assert abs(res["costs"]["logprob"][1] - wrong) < 1e-6  # no exact ties with real probabilities
    assert res["names"]["logprob"] == ["logprob", "error", "top-3 error"]
    top3_wrong = sum(r["label"] not in (r["top1"], r["top2"], r["top3"]) for r in rows)
    assert abs(res["costs"]["logprob"][2] - top3_wrong) < 1e-6
    for r in rows:
        p = [float(r[f"prob{j}"]) for j in range(1, 6)]
        assert p == sorted(p, reverse=True)


def test_write_features(conv_run, tmp_path):
    feat = tmp_path / "feats"
    run(conv_run["run"], feature_layer="pool1", feature_path=str(feat), mini=7)
    idx = json.load(open(feat / "features.json"))
    assert idx["layer"] == "pool1" and idx["shape"] == [4, 4, 4]
    assert idx["cases"] == 60 and [b["batch"] for b in idx["batches"]] == [2]
    a = np.load(feat / idx["batches"][0]["file"])
    assert a.shape == (60, 64) == tuple(idx["batches"][0]["shape"]) and a.dtype == np.float32
    assert (a >= 0).all() and a.max() > 0  # max pool of relu outputs
    from ccn.data.batchfmt import BatchFile
    bf = BatchFile(os.path.join(conv_run["data"], "data_batch_2"))
    assert idx["batches"][0]["labels"] == [int(x) for x in bf.labels]
    assert not [n for n in os.listdir(feat) if n.endswith(".tmp")]
    # the same outputs as a forward pass of the first 5 cases by hand
    from ccn import testing as T

    _, net = T.load_model(conv_run["run"])
    c = ck.load(conv_run["run"])
    dp = T.open_test_provider(c.options, [2], False)
    x, y = dp.load(2, 1)
    net.forward([x[:5], y[:5]])
    np.testing.assert_array_equal(a[:5], net.output("pool1"))


def test_multiview_matches_the_trainer(tmp_path):
    from ccn.cli.train import run_train

    data = fakedata.make_dataset(tmp_path / "data")
    layers, _ = fakedata.write_net(tmp_path / "net")
    run_train({"data_path": data, "data_provider": "fakedata:open_provider", "train_range": "1", "test_range": "5",
               "epochs": 1, "mini": 16, "test_freq": 1, "multiview_test": True, "save_path": str(tmp_path / "s"),
               "layers": layers, "seed": 2, "threads": 1}, out=io.StringIO())
    c = ck.load(tmp_path / "s")
    res, out = run(str(tmp_path / "s"))
    assert "10 views each" in out
    np.testing.assert_allclose(res["costs"]["logprob"], c.meta["history"]["test"][-1]["costs"]["logprob"],
                               rtol=1e-9)
    single, _ = run(str(tmp_path / "s"), multiview=False)
    assert single["costs"]["logprob"] != res["costs"]["logprob"]
    with pytest.raises(InputError, match="one view per case; the checkpoint was trained with --multiview-test 1, so "
                                          "give --multiview-test 0"):
        run(str(tmp_path / "s"), feature_layer="fc1", feature_path=str(tmp_path / "f"))
    with pytest.raises(InputError, match="one view per case; leave out --multiview-test"):
        run(str(tmp_path / "s"), feature_layer="fc1", feature_path=str(tmp_path / "f"), multiview=True)


@pytest.mark.parametrize("kw, msg", [
    ({"test_out": "x.txt"}, "must end in .npz or .csv"),
    ({"test_out": "/no/such/dir/p.csv"}, "does not exist"),
    ({"feature_layer": "fc1"}, "go together"),
    ({"feature_layer": "nope", "feature_path": "F"}, "no such layer; the layers with features: fc1, fc2, probs"),
    ({"feature_layer": "data", "feature_path": "F"}, r"a data layer \(its outputs are the inputs themselves\)"),
    ({"feature_layer": "logprob", "feature_path": "F"}, "a cost.logreg layer; the layers with features"),
    ({"logreg_name": "fc1"}, "has type fc, not cost.logreg; the cost.logreg layers of this net: logprob"),
    ({"test_range": "9"}, "no data batch 9"),
    ({"data_path": "/no/such/data"}, "does not exist"),
])
def test_bad_input(fake_run, tmp_path, kw, msg):
    kw = {k: (str(tmp_path / v) if k == "feature_path" else v) for k, v in kw.items()}
    with pytest.raises(InputError, match=msg.replace(".", r"\.")):
        run(fake_run["run"], **kw)


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(InputError, match="no complete checkpoint"):
        run(str(tmp_path))


def test_feature_folders_hold_only_this_runs_files(conv_run, tmp_path):
    # a refused request leaves no empty folder; a rerun removes the batch files features.json
    # no longer lists (a glob over *.npy would read them)
    feat = tmp_path / "feats"
    with pytest.raises(InputError, match="--write-features nope"):
        run(conv_run["run"], feature_layer="nope", feature_path=str(feat))
    assert not feat.exists()
    feat.mkdir()
    np.save(feat / "features_batch_7.npy", np.zeros(3, np.float32))
    (feat / "notes.txt").write_text("mine")
    _, out = run(conv_run["run"], feature_layer="pool1", feature_path=str(feat))
    assert sorted(os.listdir(feat)) == ["features.json", "features_batch_2.npy", "notes.txt"]
    assert "Removed 1 feature file(s) of an earlier run" in out
