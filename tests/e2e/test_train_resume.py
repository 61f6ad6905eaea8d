"""`ccn train` on resume and around it: the seed, going back to an earlier checkpoint, the save
folder's lock, notes about what changed, and repeated signals (QA pass 8)."""

import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import fakedata
from ccn import checkpoint as ck
from ccn.errors import InputError

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

train = fakedata.train


@pytest.fixture
def setup(tmp_path):
    data = fakedata.make_dataset(tmp_path / "data")
    layers, params = fakedata.write_net(tmp_path / "net")
    return tmp_path, data, layers, params


def opts(tmp_path, data, layers, **kw):
    return fakedata.train_opts(tmp_path, data, layers, **kw)


def env():
    return {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, HERE, os.environ.get("PYTHONPATH", "")]),
            "OMP_NUM_THREADS": "1"}


def ccn(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "ccn.cli.main", *args], capture_output=True, text=True, env=env(),
                          timeout=timeout)


def train_args(tmp_path, data, layers, save, *extra):
    return ["train", "--layers", layers, "--data-path", data, "--data-provider", "fakedata:open_provider",
            "--train-range", "1-4", "--test-range", "5", "--mini", "16", "--test-freq", "2", "--save-path", str(save),
            "--seed", "5", "--threads", "1", *extra]


# ---- 1: the seed on resume -------------------------------------------------------------------
def test_a_seed_given_on_resume_is_ignored_with_a_note(setup):
    tmp, data, layers, _ = setup
    train(opts(tmp, data, layers, epochs=1, save_path=str(tmp / "a")))
    shutil.copytree(tmp / "a", tmp / "b")
    _, out_a = train({"epochs": 3}, load_file=str(tmp / "a"))
    _, out_b = train({"epochs": 3, "seed": 99}, load_file=str(tmp / "b"))
    assert "note: --seed 99 is ignored on resume" in out_b and "its own seed 5" in out_b
    assert "--seed" not in out_a
    assert re.search(r"seed 5$", out_b, re.M)
    ca, cb = ck.load(str(tmp / "a")), ck.load(str(tmp / "b"))
    assert ca.path.endswith("3.4") and cb.path.endswith("3.4")
    for k in ca.arrays:
        assert np.array_equal(ca.arrays[k], cb.arrays[k]), k
    assert ca.meta["history"] == cb.meta["history"]
    assert cb.position["seed"] == 5 and cb.options["seed"] == 5 and cb.net_meta["seed"] == 5


# ---- 4: the progress bar of a resumed run ----------------------------------------------------
def test_the_progress_bar_starts_at_the_resumed_epoch(setup, monkeypatch):
    import io

    import ccn.train as T

    tmp, data, layers, _ = setup
    train(opts(tmp, data, layers, epochs=2))
    c = ck.load(str(tmp / "save"))
    assert c.position["epoch"] == 3
    seen = []
    real = T._Display

    class Recording(real):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            if self.progress is not None:
                seen.append(dict(self.progress.tasks[0].fields))

    monkeypatch.setattr(T, "_Display", Recording)
    from ccn.cli.train import run_train

    real_run = T.Trainer.run

    def run_with_bar(self, stop_after=None):
        self.cfg.progress_bar = True
        return real_run(self, stop_after)

    monkeypatch.setattr(T.Trainer, "run", run_with_bar)
    run_train({"epochs": 4}, str(tmp / "save"), out=io.StringIO(), stop_after=1)
    assert seen and seen[0]["epoch"] == 3 and seen[0]["epochs"] == 4
