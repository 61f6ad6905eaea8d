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


# ---- 3: one run per save folder ----------------------------------------------------------------
def _gated_env(tmp_path):
    (tmp_path / "gated.py").write_text(GATED)
    e = env()
    e["PYTHONPATH"] = os.pathsep.join([str(tmp_path), e["PYTHONPATH"]])
    return e


def test_a_second_run_into_a_busy_save_folder_is_refused(tmp_path):
    data = fakedata.make_dataset(tmp_path / "data")
    layers, _ = fakedata.write_net(tmp_path / "net")
    e = _gated_env(tmp_path)
    run = tmp_path / "run"

    def args(save, *extra):
        a = train_args(tmp_path, data, layers, save, "--epochs", "2", "--test-freq", "1", *extra)
        a[a.index("fakedata:open_provider")] = "gated:open_provider"
        return a

    def ccn_e(*a):
        return subprocess.run([sys.executable, "-m", "ccn.cli.main", *a], capture_output=True, text=True, env=e,
                              timeout=120)

    # run A holds the folder, waiting for batch 2 after its first checkpoint
    a = subprocess.Popen([sys.executable, "-m", "ccn.cli.main", *args(run)], env=e, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        t_end = time.time() + 60
        while time.time() < t_end and not ck.list_checkpoints(str(run)) and a.poll() is None:
            time.sleep(0.01)
        assert a.poll() is None
        held = sorted(os.listdir(run))
        for second in (["train", "-f", str(run), "--epochs", "3"],  # the same -f twice
                       args(run)):  # a new run with the same --save-path
            r = ccn_e(*second)
            assert r.returncode == 2, r.stderr
            assert f"{run} is in use by another ccn train (process {a.pid} on " in r.stderr
            assert "Traceback" not in r.stderr and "another --save-path" in r.stderr
        assert sorted(os.listdir(run)) == held  # nothing written by the refused runs
        # a fresh folder beside it is free
        (tmp_path / "data" / "gate").write_text("")
        r = ccn_e(*args(tmp_path / "other", "--epochs", "1"))
        assert r.returncode == 0, r.stderr
        # the lock dies with its process, however it ends
        a.kill()
        a.wait(timeout=60)
    finally:
        if a.poll() is None:
            a.kill()
    assert os.path.isfile(run / ck.LOCK)
    r = ccn_e("train", "-f", str(run), "--epochs", "2")
    assert r.returncode == 0, r.stderr
    assert [os.path.basename(p) for p in ck.list_checkpoints(str(run))][-1] == "2.4"
    # the lock file is no checkpoint: testing, plotting, pruning and discovery ignore it
    r = ccn_e("test", "-f", str(run))
    assert r.returncode == 0, r.stderr
    r = ccn_e("show-cost", "-f", str(run), "-o", str(tmp_path / "cost.png"))
    assert r.returncode == 0, r.stderr
    r = ccn_e("train", "-f", str(run), "--epochs", "3", "--max-filesize", "0")
    assert r.returncode == 0, r.stderr
    assert [os.path.basename(p) for p in ck.list_checkpoints(str(run))] == ["3.4"]
    assert sorted(os.listdir(run)) == [ck.LOCK, "3.4"]


def test_the_lock_is_held_for_the_whole_run_and_released_after(setup):
    tmp, data, layers, _ = setup
    import ccn.train as T

    seen = []
    real_save = T.Trainer.save

    def save(self):
        with pytest.raises(InputError, match="is in use by another ccn train"):
            ck.lock_save_folder(self.cfg.save_path)
        seen.append(1)
        return real_save(self)

    T.Trainer.save = save
    try:
        train(opts(tmp, data, layers, epochs=1, save_path=str(tmp / "new" / "run")))  # a new folder
    finally:
        T.Trainer.save = real_save
    assert seen
    ck.lock_save_folder(str(tmp / "new" / "run")).release()  # free again once the run is over
    # ... also after a refused run (the options fail after the lock is taken)
    with pytest.raises(InputError, match="already holds the checkpoints"):
        train(opts(tmp, data, layers, epochs=1, save_path=str(tmp / "new" / "run")))
    ck.lock_save_folder(str(tmp / "new" / "run")).release()


# ---- 2: going back to an earlier checkpoint of the same folder --------------------------------
def _mv_commands(message):
    """The `mv A A.aside` commands a message proposes, as (source, target) pairs."""
    return re.findall(r"mv (\S+) (\S+?\.aside)", message)


def test_a_damaged_newest_checkpoint_names_routes_that_work(setup):
    tmp, data, layers, _ = setup
    run = tmp / "run"
    train(opts(tmp, data, layers, epochs=2, save_path=str(run)))
    shutil.copytree(run, tmp / "copy")
    npz = run / "2.4" / "arrays.npz"
    npz.write_bytes(npz.read_bytes()[:1000])
    with pytest.raises(InputError, match="truncated or corrupted") as e:
        train({"epochs": 3}, load_file=str(run))
    msg = str(e.value)
    assert f"The newest intact checkpoint before it is {run / '2.2'}" in msg
    assert _mv_commands(msg) == [(str(run / "2.4"), str(run / "2.4.aside"))]
    assert f"ccn train -f {run / '2.2'} --save-path NEW_FOLDER" in msg
    # -f FOLDER/2.2 in place is still refused (newer checkpoints), but now says how
    with pytest.raises(InputError, match="is not the newest checkpoint") as e:
        train({"epochs": 3}, load_file=str(run / "2.2"))
    assert _mv_commands(str(e.value)) == [(str(run / "2.4"), str(run / "2.4.aside"))]
    # the read-only commands use the newest intact checkpoint, warning about the damaged one
    for args in (["test", "-f", str(run)], ["show-cost", "-f", str(run), "-o", str(tmp / "c.png")]):
        r = ccn(*args)
        assert r.returncode == 0, r.stderr
        assert f"warning: the newest checkpoint of {run}, {run / '2.4'}, is damaged" in r.stderr
        assert f"using {run / '2.2'}, the newest intact one" in r.stderr
    r = ccn("test", "-f", str(run / "2.4"))  # the damaged one named itself: refused, with the routes
    assert r.returncode == 2 and "newest intact checkpoint before it" in r.stderr and "Traceback" not in r.stderr
    # route 1: branch into a new folder, which keeps the history up to 2.2
    train({"epochs": 3, "save_path": str(tmp / "branch")}, load_file=str(run / "2.2"))
    c22, cb = ck.load(str(tmp / "copy" / "2.2")), ck.load(str(tmp / "branch"))
    assert cb.path.endswith("3.4") and [os.path.basename(p) for p in ck.list_checkpoints(str(tmp / "branch"))] == [
        "2.4", "3.2", "3.4"]
    assert cb.meta["history"]["train"][:6] == c22.meta["history"]["train"] and len(cb.meta["history"]["train"]) == 12
    # route 2: move the damaged one aside as said, then -f FOLDER goes on from 2.2 in place
    for src, dst in _mv_commands(msg):
        os.rename(src, dst)
    train({"epochs": 3}, load_file=str(run))
    cr = ck.load(str(run))
    assert cr.path.endswith("3.4") and os.path.isdir(run / "2.4.aside")
    # ... the same weights as the branch from 2.2, bitwise
    ref = ck.load(str(tmp / "branch"))
    for k in ref.arrays:
        assert np.array_equal(ref.arrays[k], cr.arrays[k]), k


def _interrupted_mid_batch(tmp, data, layers, run, at_step):
    import ccn.train as T

    calls = {"n": 0}
    real_run = T.Trainer.run

    def run_and_interrupt(self, stop_after=None):
        real_step = self.net.train_step

        def step(*a, **k):
            calls["n"] += 1
            if calls["n"] == at_step:
                self._on_sigint(signal.SIGINT, None)
            return real_step(*a, **k)

        self.net.train_step = step
        return real_run(self, stop_after)

    T.Trainer.run = run_and_interrupt
    try:
        res, _ = train(opts(tmp, data, layers, epochs=2, save_path=str(run)))
    finally:
        T.Trainer.run = real_run
    return res


def test_a_new_mini_after_a_mid_batch_checkpoint_names_routes_that_work(setup):
    tmp, data, layers, _ = setup
    run = tmp / "run"
    res = _interrupted_mid_batch(tmp, data, layers, run, at_step=7)  # batch 3, its first minibatch (3 a batch)
    assert os.path.basename(res.checkpoint) == "1.3-mb1"
    assert [os.path.basename(p) for p in ck.list_checkpoints(str(run))] == ["1.2", "1.3-mb1"]
    with pytest.raises(InputError, match="saved in the middle of a data batch with --mini 16") as e:
        train({"mini": 8}, load_file=str(run))
    msg = str(e.value)
    assert f"go back to {run / '1.2'}" in msg and f"ccn train -f {run / '1.2'} --mini 8 --save-path NEW_FOLDER" in msg
    assert _mv_commands(msg) == [(str(run / "1.3-mb1"), str(run / "1.3-mb1.aside"))]
    # the branch works and keeps the history up to 1.2
    train({"mini": 8, "save_path": str(tmp / "branch")}, load_file=str(run / "1.2"))
    cb = ck.load(str(tmp / "branch"))
    assert cb.path.endswith("2.4") and cb.options["mini"] == 8 and len(cb.meta["history"]["train"]) == 8
    assert cb.meta["history"]["train"][:2] == ck.load(str(run / "1.2")).meta["history"]["train"]
    # and so does going on in place once the mid-batch checkpoint is moved aside
    for src, dst in _mv_commands(msg):
        os.rename(src, dst)
    train({"mini": 8}, load_file=str(run))
    cr = ck.load(str(run))
    assert cr.path.endswith("2.4") and cr.options["mini"] == 8
    for k in cb.arrays:
        assert np.array_equal(cb.arrays[k], cr.arrays[k]), k
    # with no checkpoint between batches before it, the message says to start a new run
    run2 = tmp / "run2"
    res = _interrupted_mid_batch(tmp, data, layers, run2, at_step=2)
    assert os.path.basename(res.checkpoint) == "1.1-mb2"
    with pytest.raises(InputError, match="holds no checkpoint saved between batches before it") as e:
        train({"mini": 8}, load_file=str(run2))


def test_aside_commands_quote_paths_and_never_move_into_an_earlier_aside(tmp_path):
    import shlex

    run = tmp_path / "my runs"
    (run / "3.2").mkdir(parents=True)
    (run / "3.2.aside").mkdir()
    cmd = ck.aside_commands([str(run / "3.2")])
    assert shlex.split(cmd) == ["mv", str(run / "3.2"), str(run / "3.2.aside2")]


def test_a_lock_record_of_a_process_gone_is_not_named(tmp_path):
    # a run that could only open the lock file read-only holds the lock under an older record
    import json
    import socket
    import textwrap

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    folder = tmp_path / "run"
    folder.mkdir()
    lock = folder / ck.LOCK
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid, "started": "then"}))
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import fcntl, os, sys, time
        fd = os.open({str(lock)!r}, os.O_RDONLY)
        fcntl.flock(fd, fcntl.LOCK_EX)
        print("locked", flush=True)
        time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(InputError) as e:
            ck.lock_save_folder(str(folder))
        assert "in use by another ccn train:" in str(e.value) and str(dead.pid) not in str(e.value)
    finally:
        holder.kill()
        holder.wait()


def test_a_checkpoint_saved_while_a_resume_starts_says_so(setup):
    # -f FOLDER read the newest; another run saved a newer one before this one took the lock
    from ccn.cli.train import _check_save_folder

    tmp, data, layers, _ = setup
    run = tmp / "run"
    train(opts(tmp, data, layers, epochs=2, save_path=str(run)))
    older = ck.load(str(run / "2.2"))
    with pytest.raises(InputError) as e:
        _check_save_folder(str(run), older, str(run))
    assert "was saved after this run read the newest checkpoint" in str(e.value)
    assert "Run the same command again to go on from 2.4" in str(e.value)
    with pytest.raises(InputError, match="is not the newest checkpoint"):  # -f FOLDER/2.2 as before
        _check_save_folder(str(run), older, str(run / "2.2"))
