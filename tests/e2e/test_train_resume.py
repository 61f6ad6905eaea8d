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


# ---- 7: repeated SIGTERMs ------------------------------------------------------------------
GATED = '''
import os, time
import fakedata


def open_provider(data_path, batch_range, *, train, options):
    dp = fakedata.open_provider(data_path, batch_range, train=train, options=options)
    real = dp.load

    def load(batch, epoch):
        if train and (batch, epoch) == (2, 1):  # held until the test opens the gate
            while not os.path.exists(os.path.join(data_path, "gate")):
                time.sleep(0.01)
        return real(batch, epoch)

    dp.load = load
    return dp
'''


def test_repeated_sigterms_do_not_abort_the_save(tmp_path):
    """Schedulers may send TERM to the process group and to the process: the second one must not
    abort the save (only a second Ctrl-C does), and the message names the signal received."""
    data = fakedata.make_dataset(tmp_path / "data")
    layers, _ = fakedata.write_net(tmp_path / "net")
    (tmp_path / "gated.py").write_text(GATED)
    args = train_args(tmp_path, data, layers, tmp_path / "run", "--epochs", "2", "--test-freq", "1")
    args[args.index("fakedata:open_provider")] = "gated:open_provider"
    e = env()
    e["PYTHONPATH"] = os.pathsep.join([str(tmp_path), e["PYTHONPATH"]])
    p = subprocess.Popen([sys.executable, "-m", "ccn.cli.main", *args], env=e, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        t_end = time.time() + 60
        while time.time() < t_end and not ck.list_checkpoints(str(tmp_path / "run")) and p.poll() is None:
            time.sleep(0.01)
        time.sleep(0.5)  # waiting for batch 2, held at the gate
        for _ in range(3):
            p.send_signal(signal.SIGTERM)
            time.sleep(0.2)
        (tmp_path / "data" / "gate").write_text("")
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 143, (out, err)
    assert "interrupted by SIGTERM: finishing this minibatch" in out and "press Ctrl-C again" not in out
    assert "SIGTERM again: still finishing" in out and "Stopped by SIGTERM" in out
    assert "Traceback" not in err and "interrupted." not in err
    names = [os.path.basename(q) for q in ck.list_checkpoints(str(tmp_path / "run"))]
    assert names == ["1.1", "1.2-mb1"]
    ck.load(str(tmp_path / "run"))


# ---- 5: frozen matrices in the weight statistics ---------------------------------------------
def test_frozen_matrices_are_marked_in_the_weight_statistics(setup):
    tmp, data, layers, params = setup
    train(opts(tmp, data, layers, epochs=1))
    text = open(params).read()
    # freeze fc1's weights (a plain 0) and fc2's biases (a schedule whose base is 0)
    text = text.replace("[fc1]\nepsW=0.05", "[fc1]\nepsW=0").replace(
        "[fc2]\nepsW=0.05\nepsB=0.05", "[fc2]\nepsW=0.05\nepsB=exp[base=0;tgtFactor=10]")
    open(params, "w").write(text)
    w0 = ck.load(str(tmp / "save")).arrays
    _, out = train({"epochs": 2}, load_file=str(tmp / "save"))
    w1 = ck.load(str(tmp / "save")).arrays
    assert np.array_equal(w0["w/fc1.weights[0]"], w1["w/fc1.weights[0]"])
    assert np.array_equal(w0["w/fc2.biases"], w1["w/fc2.biases"])
    num = r"\d\.\d{6}e[+-]\d\d"
    # the original's format, with the marker appended; only the frozen matrices have it
    assert re.search(rf"^Layer 'fc1' weights\[0\]: {num} \[{num}\] \[{num}\] \(frozen: epsW 0\)$", out, re.M)
    assert re.search(rf"^Layer 'fc2' biases: {num} \[{num}\] \(frozen: epsB 0\)$", out, re.M)
    assert re.search(rf"^Layer 'fc1' biases: {num} \[{num}\]$", out, re.M)
    assert re.search(rf"^Layer 'fc2' weights\[0\]: {num} \[{num}\] \[{num}\]$", out, re.M)


# ---- 6: what changed in the layer-params since the checkpoint ---------------------------------
def test_changed_layer_params_are_listed_on_resume(setup):
    tmp, data, layers, params = setup
    train(opts(tmp, data, layers, epochs=1))
    text = open(params).read()
    open(params, "w").write("# lower rates for the second epoch\n" + text.replace(
        "[fc1]\nepsW=0.05", "[fc1]\nepsW=0   # frozen").replace("[fc2]\nepsW=0.05", "[fc2]\nepsW=0.005"))
    _, out = train({"epochs": 2}, load_file=str(tmp / "save"))
    notes = [l for l in out.splitlines() if "layer-params changed" in l]
    assert notes == ["  note: layer-params changed since the checkpoint: fc1 epsW 0.05 -> 0; fc2 epsW 0.05 -> 0.005."]
    _, out = train({"epochs": 3}, load_file=str(tmp / "save"))  # unchanged since: nothing said
    assert "layer-params changed" not in out
    # many changes: a few named, the rest counted
    many = "".join(f"\n[l{i}]\nepsW=0.1\nepsB=0.1\n" for i in range(20))
    from ccn.netfiles import describe_params_changes

    note = describe_params_changes(many, many.replace("0.1", "0.2"))
    assert note.count("->") == 10 and note.endswith("; and 30 more in 15 layers.")
