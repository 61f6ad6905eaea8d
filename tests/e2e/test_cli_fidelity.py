"""cuda-convnet's command lines given to ccn: options that moved to another command name it,
options ccn does not need are accepted with a note, and what ccn cannot do is refused in one
paragraph (exit 2) instead of being done differently in silence."""

import io
import json
import os
import subprocess
import sys

import pytest

import fakedata
from ccn import checkpoint as ck
from ccn.cli.train import run_train
from ccn.data import builtin

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def ccn(*args, timeout=120):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, HERE, os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "ccn.cli.main", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


def refused(r, *said):
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stderr.startswith("error: ") and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    for s in said:
        assert s in r.stderr, (s, r.stderr)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """ccn's own batches (12x12 images: 2 train, 1 test) and an fc net trained on them for one
    epoch with cuda-convnet's plain 'cifar' provider name: checkpoint 1.2 in RUN."""
    base = tmp_path_factory.mktemp("fidelity")
    data = str(base / "data")
    builtin.prepare(data, train_batches=2, test_batches=1, batch_size=30, image_size=12, seed=3)
    layers, _ = fakedata.write_net(base / "net", classes=10)
    base_opts = {"data_path": data, "train_range": "1-2", "test_range": "3", "mini": 15, "test_freq": 2,
                 "layers": layers, "seed": 4, "threads": 1}
    run_train({**base_opts, "data_provider": "cifar", "epochs": 1, "save_path": str(base / "run")},
              out=io.StringIO())
    return {"base": base, "data": data, "layers": layers, "run": str(base / "run"), "opts": base_opts}


# ---- options that became part of `ccn test` ----------------------------------------------------
def test_train_points_feature_and_prediction_options_to_ccn_test(run):
    for bad in (["--write-features=fc2", "--feature-path=feats"], ["--feature-path", "feats"],
                ["--test-out", "preds"]):
        r = ccn("train", "-f", run["run"], *bad)
        refused(r, "ccn test -f CHECKPOINT")
        assert "No such option" not in r.stderr
    refused(ccn("train", "-f", run["run"], "--write-features", "fc2", "--feature-path", "f"),
            "--write-features LAYER --feature-path DIR")
    assert not os.path.exists("feats") and [os.path.basename(p) for p in ck.list_checkpoints(run["run"])] == ["1.2"]


def test_test_out_folder_of_cuda_convnet2_says_what_ccn_writes(run):
    r = ccn("test", "-f", run["run"], "--test-out", str(run["base"] / "preds"))
    refused(r, "must end in .npz or .csv", "test_preds_N", "preds.npz", "--write-features")
    assert not os.path.exists(run["base"] / "preds")


def test_test_only_and_num_gpus(run):
    r = ccn("test", "-f", run["run"], "--test-only", "1")
    assert r.returncode == 0, r.stderr
    assert "note: --test-only is accepted" in r.stderr and "logprob" in r.stdout
    refused(ccn("test", "-f", run["run"], "--test-only", "0"), f"ccn train -f {run['run']}")
    r = ccn("test", "-f", run["run"], "--num-gpus", "1")
    assert r.returncode == 0 and "note: --num-gpus is accepted" in r.stderr and "--gpu INDEX" in r.stderr, r.stderr
    refused(ccn("test", "-f", run["run"], "--num-gpus", "2"), "--num-gpus 2", "--gpu INDEX")
    refused(ccn("train", "-f", run["run"], "--num-gpus", "2"), "--num-gpus 2", "--gpu INDEX")


# ---- the data provider ---------------------------------------------------------------------------
def test_cifar_cropped_on_resume_of_a_plain_run_is_refused(run):
    before = ck.list_checkpoints(run["run"])
    r = ccn("train", "-f", run["run"], "--epochs", "2", "--data-provider", "cifar-cropped")
    refused(r, "--data-provider cifar-cropped", "was trained with --data-provider cifar", "Leave out --data-provider")
    assert ck.list_checkpoints(run["run"]) == before  # nothing trained, nothing recorded
    # the other way round: a cropped run resumed with the plain provider
    cropped = str(run["base"] / "cropped")
    run_train({**run["opts"], "data_provider": "cifar-cropped", "crop_border": 2, "epochs": 1, "save_path": cropped},
              out=io.StringIO())
    refused(ccn("train", "-f", cropped, "--epochs", "2", "--data-provider", "cifar"),
            "was trained with --data-provider cifar-cropped")
    # the same provider again is fine, and the crop is kept
    r = ccn("train", "-f", cropped, "--epochs", "2", "--data-provider", "cifar-cropped")
    assert r.returncode == 0, r.stderr
    meta = json.load(open(os.path.join(ck.list_checkpoints(cropped)[-1], "meta.json")))
    assert meta["options"]["data_provider"] == "cifar-cropped" and meta["options"]["inner_size"] == 8


@pytest.mark.parametrize("name", ["dummy-lr-n", "dummy-lr-432", "dummy-cn-192"])
def test_dummy_providers_are_refused_not_replaced_by_real_data(run, name):
    save = run["base"] / f"dummy-{name}"
    o = run["opts"]
    r = ccn("train", "--layers", o["layers"], "--data-path", o["data_path"], "--train-range", "1-2", "--test-range",
            "3", "--epochs", "1", "--save-path", str(save), "--data-provider", name)
    refused(r, f"--data-provider {name}", "ccn check-grads", "ccn prepare-data builtin")
    assert not save.exists()
