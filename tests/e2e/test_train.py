"""`ccn train` end to end on a tiny fake dataset: the loop, its output, checkpoints, exact resume,
crash safety, and every bad-input path."""

import json
import os
import random
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import fakedata
from ccn import checkpoint as ck
from ccn.batchrange import format_range, parse_range
from ccn.errors import CcnRuntimeError, ConfigError, InputError

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
LINE = re.compile(r"^(\d+)\.(\d+) \((\d+\.\d\d)%\)\.\.\. logprob:  (\d+\.\d{6}), (\d+\.\d{6}) \((\d+\.\d{3}) sec\)$")


@pytest.fixture
def setup(tmp_path):
    data = fakedata.make_dataset(tmp_path / "data")
    layers, params = fakedata.write_net(tmp_path / "net")
    return tmp_path, data, layers, params


def opts(tmp_path, data, layers, **kw):
    return fakedata.train_opts(tmp_path, data, layers, **kw)


train = fakedata.train


def weights_of(path):
    c = ck.load(path)
    return {k: v for k, v in c.arrays.items()}, c


def _have_gpu():
    from ccn.device import probe

    b = probe()
    return b.cuda_compiled and bool(b.gpus)


def cli(*args, cwd=None, timeout=120, **popen):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, HERE, os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "ccn.cli.main", "train", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=timeout, **popen)


# ---- the loop and its output --------------------------------------------------------------
def test_output_format_learning_and_checkpoints(setup):
    tmp, data, layers, _ = setup
    res, out = train(opts(tmp, data, layers, force_save=True))
    lines = [l for l in out.splitlines() if LINE.match(l)]
    assert len(lines) == 12  # 3 epochs x 4 batches
    m = [LINE.match(l).groups() for l in lines]
    assert [(int(a), int(b)) for a, b, *_ in m] == [(e, b) for e in (1, 2, 3) for b in (1, 2, 3, 4)]
    # progress = (batches done - 1) / (epochs * batches per epoch)
    assert [float(x[2]) for x in m] == [round(100 * i / 12, 2) for i in range(12)]
    # learnable data: the cost falls, the error ends low
    first, last = float(m[0][3]), float(m[-1][3])
    assert last < 0.5 * first and float(m[-1][4]) <= 0.2
    # costs are the batch sums divided by the cases: error is a multiple of 1/40
    assert all(abs(float(x[4]) * 40 - round(float(x[4]) * 40)) < 1e-4 for x in m)
    assert out.count("======================Test output======================") == 6
    assert "----------------------Averages-------------------------" in out
    assert re.search(r"^Layer 'fc1' weights\[0\]: \d\.\d{6}e[+-]\d\d \[\d\.\d{6}e[+-]\d\d\] \[\d\.\d{6}e[+-]\d\d\]$",
                     out, re.M)
    assert re.search(r"^Layer 'fc2' biases: \d\.\d{6}e[+-]\d\d \[\d\.\d{6}e[+-]\d\d\]$", out, re.M)
    names = [os.path.basename(p) for p in ck.list_checkpoints(tmp / "save")]
    assert names == ["1.2", "1.4", "2.2", "2.4", "3.2", "3.4"]
    w, c = weights_of(tmp / "save")
    assert c.path.endswith("3.4")
    assert c.position["batches_done"] == 12 and c.position["epoch"] == 4
    assert len(c.meta["history"]["train"]) == 12 and len(c.meta["history"]["test"]) == 6
    assert c.layers_text == open(layers).read()
    assert c.meta["net"]["step"] == 12 * 3  # 40 cases in minibatches of 16: 3 steps per batch
    assert set(w) == {f"{k}/{n}" for k in ("w", "inc", "grad") for n in
                      ("fc1.weights[0]", "fc1.biases", "fc2.weights[0]", "fc2.biases")}
    assert not any(n.startswith(".tmp") for n in os.listdir(tmp / "save"))


def test_short_last_minibatch_divides_by_nominal_size(setup):
    """One epoch of one batch of 40 cases with --mini 32: steps of 32 and 8 cases, both with eps/32."""
    tmp, data, layers, params = setup
    res, _ = train(opts(tmp, data, layers, train_range="1", epochs=1, mini=32, test_freq=1))
    import ccn

    prov = fakedata.open_provider(data, [1], train=True, options=fakedata.ProviderOptions(seed=5))
    net = ccn.Net(layers, params, prov.data_dims(), seed=5)
    x, y = prov.load(1, 1)
    net.train_step([x[:32], y[:32]], 0.0, 32)
    net.train_step([x[32:], y[32:]], 0.0, 32)
    w, _ = weights_of(tmp / "save")
    for p in net.params:
        np.testing.assert_array_equal(w[f"w/{p.name}"], net.get(p.name))


def test_test_one_cycles_and_test_all(setup):
    tmp, data, layers, _ = setup
    _, _ = train(opts(tmp, data, layers, train_range="1-2", test_range="3-5", epochs=2, test_freq=1, test_one=True))
    _, c = weights_of(tmp / "save")
    assert [t["test_batches"] for t in c.meta["history"]["test"]] == [[3], [4], [5], [3]]
    _, _ = train(opts(tmp, data, layers, train_range="1-2", test_range="3-5", epochs=1, test_freq=1, test_one=False,
                      save_path=str(tmp / "s2")))
    _, c = weights_of(tmp / "s2")
    assert [t["test_batches"] for t in c.meta["history"]["test"]] == [[3, 4, 5], [3, 4, 5]]
    assert c.meta["history"]["test"][0]["cases"] == 120


def test_ranges():
    assert parse_range("1-5", "--train-range") == [1, 2, 3, 4, 5]
    assert parse_range("6", "--test-range") == [6]
    for bad in ("", "a", "1-x"):
        with pytest.raises(InputError, match="batch range"):
            parse_range(bad, "--train-range")
    with pytest.raises(InputError, match="'5-3' counts down; write 3-5"):
        parse_range("5-3", "--train-range")
    assert format_range([1, 2, 3, 7, 9, 10]) == "1-3,7,9-10" and format_range([]) == "none"
    assert parse_range(format_range([4, 5, 6, 1]), "x") == [4, 5, 6, 1]


# ---- resume --------------------------------------------------------------------------------
def test_bitwise_resume(setup):
    """N batches in one run == N/2 + resume + N/2, bitwise (same build, same threads)."""
    tmp, data, layers, _ = setup
    base = opts(tmp, data, layers, epochs=3, test_freq=3, force_save=True)
    _, out_a = train({**base, "save_path": str(tmp / "a")})
    res, out_b1 = train({**base, "save_path": str(tmp / "b")}, stop_after=6)
    assert os.path.basename(res.checkpoint) == "2.2"
    _, out_b2 = train({}, load_file=str(tmp / "b"))
    wa, ca = weights_of(tmp / "a")
    wb, cb = weights_of(tmp / "b")
    assert ca.path.endswith("3.4") and cb.path.endswith("3.4")
    for k in wa:
        assert np.array_equal(wa[k], wb[k]), k
    assert ca.meta["net"]["step"] == cb.meta["net"]["step"]
    strip = lambda s: [re.sub(r"\(\d+\.\d+ sec\)", "", l) for l in s.splitlines() if LINE.match(l)]
    assert strip(out_b1) + strip(out_b2) == strip(out_a)
    assert ca.meta["history"]["train"] == cb.meta["history"]["train"]


def test_resume_mid_batch_after_interrupt_is_bitwise(setup):
    """Ctrl-C stops after the current minibatch and saves E.B-mbK; resuming gives the same weights."""
    tmp, data, layers, params = setup
    base = opts(tmp, data, layers, epochs=2, test_freq=3, force_save=True)
    train({**base, "save_path": str(tmp / "a")})

    import ccn.train as T

    calls = {"n": 0}
    real_run = T.Trainer.run

    def run_and_interrupt(self, stop_after=None):
        real_step = self.net.train_step

        def step(*a, **k):
            calls["n"] += 1
            if calls["n"] == 7:  # batch 3, its first minibatch
                self._on_sigint(signal.SIGINT, None)
            return real_step(*a, **k)

        self.net.train_step = step
        return real_run(self, stop_after)

    T.Trainer.run = run_and_interrupt
    try:
        res, out = train({**base, "save_path": str(tmp / "b")})
    finally:
        T.Trainer.run = real_run
    assert res.interrupted and os.path.basename(res.checkpoint) == "1.3-mb1"
    assert "interrupted" in out
    names = [os.path.basename(p) for p in ck.list_checkpoints(tmp / "b")]
    assert names == ["1.3-mb1"]
    _, out2 = train({}, load_file=str(tmp / "b"))
    wa, _ = weights_of(tmp / "a")
    wb, cb = weights_of(tmp / "b")
    assert cb.path.endswith("2.4")
    for k in wa:
        assert np.array_equal(wa[k], wb[k]), k
    assert [os.path.basename(p) for p in ck.list_checkpoints(tmp / "b")] == ["1.3-mb1", "1.3", "2.2", "2.4"]
    # the interrupted batch's line, printed after the resume, reports the whole batch
    _, ca = weights_of(tmp / "a")
    assert ca.meta["history"]["train"] == cb.meta["history"]["train"]


def test_resume_rereads_params_and_overrides_options(setup):
    tmp, data, layers, params = setup
    train(opts(tmp, data, layers, epochs=1, test_freq=4))
    w0, c0 = weights_of(tmp / "save")
    # zero learning rates: resuming must then leave the weights unchanged (momentum off too)
    text = open(params).read().replace("epsW=0.05", "epsW=0").replace("epsB=0.05", "epsB=0").replace(
        "momW=0.9", "momW=0").replace("momB=0.9", "momB=0")
    open(params, "w").write(text)
    res, out = train({"epochs": 2}, load_file=str(tmp / "save"))
    w1, c1 = weights_of(tmp / "save")
    assert c1.path.endswith("2.4") and c1.options["epochs"] == 2 and c1.options["mini"] == 16
    assert c1.params_text == text
    for k in w0:
        if k.startswith("w/"):
            np.testing.assert_array_equal(w0[k], w1[k])


def test_max_filesize_keeps_newest(setup):
    tmp, data, layers, _ = setup
    train(opts(tmp, data, layers, epochs=2, test_freq=1))
    sizes = [ck._tree_size(p) for p in ck.list_checkpoints(tmp / "save")]
    assert len(sizes) == 8
    mb = 2.5 * sizes[-1] / 2**20
    train(opts(tmp, data, layers, epochs=2, test_freq=1, max_filesize=mb, save_path=str(tmp / "s2")))
    names = [os.path.basename(p) for p in ck.list_checkpoints(tmp / "s2")]
    assert names == ["2.3", "2.4"]
    train(opts(tmp, data, layers, epochs=1, test_freq=1, max_filesize=1e-6, save_path=str(tmp / "s3")))
    assert [os.path.basename(p) for p in ck.list_checkpoints(tmp / "s3")] == ["1.4"]
    # 0: cuda-convnet's "keep only the newest", through the command line
    r = cli("--layers", layers, "--data-provider", "fakedata:open_provider", "--data-path", data, "--train-range",
            "1-4", "--test-range", "5", "--epochs", "1", "--test-freq", "1", "--mini", "16", "--seed", "1",
            "--save-path", str(tmp / "s4"), "--max-filesize", "0")
    assert r.returncode == 0, r.stderr
    assert [os.path.basename(p) for p in ck.list_checkpoints(tmp / "s4")] == ["1.4"]
    _expect(cli("-f", str(tmp / "s4"), "--max-filesize", "-1"), 2, "--max-filesize must be a finite number >= 0")


# ---- crash safety -------------------------------------------------------------------------
def test_kill_9_at_random_moments_leaves_a_loadable_checkpoint(tmp_path):
    data = fakedata.make_dataset(tmp_path / "data", dims=300, cases=64, batches=list(range(1, 9)))
    layers = tmp_path / "layers.cfg"
    layers.write_text(fakedata.LAYERS.format(classes=3).replace("outputs=8", "outputs=400"))
    (tmp_path / "layers.params.cfg").write_text(fakedata.PARAMS.format(eps=0.01))
    save = tmp_path / "save"
    args = ["--layers", str(layers), "--params", str(tmp_path / "layers.params.cfg"), "--data-path", data,
            "--data-provider", "fakedata:open_provider", "--train-range", "1-7", "--test-range", "8", "--epochs",
            "1000", "--mini", "64", "--test-freq", "1", "--save-path", str(save), "--seed", "1", "--threads", "1",
            "--max-filesize", "4"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, HERE, os.environ.get("PYTHONPATH", "")])}
    rng = random.Random()
    kills = 0
    for i in range(6):
        cmd = [sys.executable, "-m", "ccn.cli.main", "train"] + (args if i == 0 else ["-f", str(save)])
        p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # wait until this process has saved a checkpoint, then kill it at a random moment
        before = ck.list_checkpoints(save)[-1:]
        t_end = time.time() + 60
        while time.time() < t_end and ck.list_checkpoints(save)[-1:] == before and p.poll() is None:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.4))
        assert p.poll() is None, p.stderr.read().decode()
        p.kill()
        p.wait()
        p.stderr.close()
        kills += 1
        c = ck.load(str(save))  # the newest complete checkpoint loads and verifies
        assert c.position["batches_done"] >= 1
        for path in ck.list_checkpoints(save):
            ck.load(path)
    assert kills == 6


def test_failed_save_keeps_previous_checkpoint(setup, monkeypatch):
    tmp, data, layers, _ = setup
    real = ck._write_file
    count = {"n": 0}

    def flaky(path, data):
        if path.endswith("arrays.npz"):
            count["n"] += 1
            if count["n"] == 2:
                raise OSError(28, "No space left on device")
        return real(path, data)

    monkeypatch.setattr(ck, "_write_file", flaky)
    with pytest.raises(CcnRuntimeError, match=r"No space left on device.*1\.2 is intact"):  # run time: exit 1
        train(opts(tmp, data, layers))
    assert [os.path.basename(p) for p in ck.list_checkpoints(tmp / "save")] == ["1.2"]
    assert not any(n.startswith(".tmp") for n in os.listdir(tmp / "save"))
    ck.load(str(tmp / "save"))


# ---- bad input -----------------------------------------------------------------------------
def test_cli_runs_and_resumes(setup):
    tmp, data, layers, _ = setup
    r = cli("--layer-def", layers, "--data-path", data, "--data-provider", "fakedata:open_provider", "--train-range",
            "1-4", "--test-range", "5", "--epochs", "1", "--mini", "16", "--test-freq", "2", "--save-path",
            str(tmp / "save"), "--seed", "3", "--test-one", "0", "--force-save")
    assert r.returncode == 0, r.stderr
    assert sum(1 for l in r.stdout.splitlines() if LINE.match(l)) == 4
    r = cli("-f", str(tmp / "save"), "--epochs", "2")
    assert r.returncode == 0, r.stderr
    assert [l.split()[0] for l in r.stdout.splitlines() if LINE.match(l)] == ["2.1", "2.2", "2.3", "2.4"]


def _expect(r, code, *patterns):
    assert r.returncode == code, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    assert r.stderr.startswith("error: "), r.stderr
    for p in patterns:
        assert re.search(p, r.stderr), (p, r.stderr)


def test_cli_bad_inputs(setup):
    tmp, data, layers, _ = setup
    common = ["--layers", layers, "--data-provider", "fakedata:open_provider", "--mini", "16", "--epochs", "1",
              "--save-path", str(tmp / "save")]
    _expect(cli(*common, "--data-path", str(tmp / "nope"), "--train-range", "1-4", "--test-range", "5"), 2,
            "nope: the data path does not exist")
    _expect(cli(*common, "--data-path", data, "--test-range", "5"), 2, "missing --train-range")
    _expect(cli(*common, "--data-path", data, "--train-range", "1-9", "--test-range", "5"), 2,
            "--train-range: .* has no data batch 6")
    _expect(cli(*common, "--data-path", data, "--train-range", "x", "--test-range", "5"), 2, "batch range")
    if not _have_gpu():  # (with a GPU these would train: tests/e2e/test_train_device.py covers the wiring)
        no_cuda = r"--device cuda: (this ccn was built without the CUDA backend|no CUDA GPU is visible)"
        _expect(cli(*common, "--data-path", data, "--train-range", "1", "--test-range", "5", "--device", "cuda"), 1,
                no_cuda)
        _expect(cli(*common, "--data-path", data, "--train-range", "1", "--test-range", "5", "--gpu", "0"), 1,
                no_cuda.replace("--device cuda", "--gpu 0"), "leave out --gpu 0 to run on the CPU")
    _expect(cli(*common, "--data-path", data, "--train-range", "1", "--test-range", "5", "--gpu", "0,1"), 2,
            "several GPUs at once is not implemented yet")
    _expect(cli(*common, "--data-path", data, "--train-range", "1", "--test-range", "5", "--conv-to-local", "c1"), 2,
            r"--conv-to-local c1: the net has no layer 'c1'; its conv layers: none\.")
    _expect(cli(*common, "--data-path", data, "--train-range", "1", "--test-range", "5", "--data-provider", "xyz"), 2,
            "unknown provider 'xyz'")
    blocker = tmp / "file"
    blocker.write_text("x")
    _expect(cli("--layers", layers, "--data-provider", "fakedata:open_provider", "--data-path", data, "--train-range",
                "1", "--test-range", "5", "--save-path", str(blocker / "sub")), 2, "cannot write checkpoints there")
    _expect(cli("-f", str(tmp / "nothing")), 2, "no such checkpoint")
    os.makedirs(tmp / "empty")
    _expect(cli("-f", str(tmp / "empty")), 2, "holds no complete checkpoint")


def test_multi_gpu_net_trains_on_logical_devices_like_one_device(setup):
    """gpu= layouts run on the CPU as logical devices in one process: the single-device result."""
    tmp, data, layers, _ = setup
    train(opts(tmp, data, layers, epochs=1, save_path=str(tmp / "one")))
    text = open(layers).read().replace("outputs=8\n", "outputs=8\ngpu=0,1\n").replace("outputs=3\n",
                                                                                         "outputs=3\ngpu=1\n")
    open(layers, "w").write(text)
    _, out = train(opts(tmp, data, layers, epochs=1, save_path=str(tmp / "multi")))
    assert "gpu= layout: hybrid (data parallel + model parallel) over 2 logical devices" in out
    assert "simulated on the CPU" in out
    wa, _ = weights_of(tmp / "one")
    wb, _ = weights_of(tmp / "multi")
    for k in wa:
        assert np.array_equal(wa[k], wb[k]), k


@pytest.fixture
def saved(setup):
    tmp, data, layers, _ = setup
    train(opts(tmp, data, layers, epochs=1, test_freq=2))
    return tmp, data, layers, tmp / "save" / "1.4"


def _rewrite_meta(path, fn, fix_digest=True):
    mpath = os.path.join(path, "meta.json")
    meta = json.load(open(mpath))
    fn(meta)
    if fix_digest:
        meta["sha256"] = ck._meta_digest(meta)
    json.dump(meta, open(mpath, "w"))


@pytest.mark.parametrize("damage,pattern", [
    ("flip_npz", "SHA-256 of arrays.npz does not match"),
    ("truncate_npz", "arrays.npz has \\d+ bytes, expected"),
    ("delete_npz", "arrays.npz is missing"),
    ("truncate_meta", "meta.json is not valid JSON"),
    ("edit_meta", "checksum of meta.json does not match"),
    ("edit_layers", "SHA-256 of layers.cfg does not match"),
    ("version", "written by ccn 0.0.0-other"),
    ("format", "not a ccn checkpoint"),
])
def test_damaged_checkpoints_are_refused(saved, damage, pattern):
    tmp, data, layers, path = saved
    npz = path / "arrays.npz"
    if damage == "flip_npz":
        b = bytearray(npz.read_bytes())
        b[len(b) // 2] ^= 0x40
        npz.write_bytes(bytes(b))
    elif damage == "truncate_npz":
        npz.write_bytes(npz.read_bytes()[:-100])
    elif damage == "delete_npz":
        npz.unlink()
    elif damage == "truncate_meta":
        m = path / "meta.json"
        m.write_bytes(m.read_bytes()[:200])
    elif damage == "edit_meta":
        _rewrite_meta(path, lambda m: m["net"].__setitem__("step", 1), fix_digest=False)
    elif damage == "edit_layers":
        (path / "layers.cfg").write_text((path / "layers.cfg").read_text().replace("outputs=8", "outputs=9"))
    elif damage == "version":
        _rewrite_meta(path, lambda m: m.__setitem__("ccn_version", "0.0.0-other"))
    elif damage == "format":
        _rewrite_meta(path, lambda m: m.__setitem__("format", "pickle"))
    before = {p: sorted(os.listdir(p)) for p in ck.list_checkpoints(tmp / "save")}
    r = cli("-f", str(path))
    _expect(r, 2, pattern)
    assert {p: sorted(os.listdir(p)) for p in ck.list_checkpoints(tmp / "save")} == before  # nothing written


def test_checkpoint_of_another_net(saved):
    tmp, data, layers, path = saved
    other = tmp / "other.cfg"
    other.write_text(open(layers).read().replace("outputs=8", "outputs=9"))
    (tmp / "other-params.cfg").write_text(fakedata.PARAMS.format(eps=0.05))
    _expect(cli("-f", str(path), "--layers", str(other)), 2, "belongs to another net")
    # a checkpoint whose arrays do not fit the saved layer text (e.g. hand-edited)
    _rewrite_meta(path, lambda m: m["net"]["params"][0].__setitem__("shape", [6, 9]))
    _expect(cli("-f", str(path)), 2, "belongs to another net")


def test_nan_in_data_names_layer_and_keeps_checkpoint(tmp_path):
    data = fakedata.make_dataset(tmp_path / "data", nan_batch=3)
    layers, _ = fakedata.write_net(tmp_path / "net")
    with pytest.raises(CcnRuntimeError, match=r"NaN or infinite while training batch 1\.3.*first layer whose output "
                                             r"is not finite is 'data'.*1\.2, is kept"):
        train(opts(tmp_path, data, layers, test_freq=1))
    assert [os.path.basename(p) for p in ck.list_checkpoints(tmp_path / "save")] == ["1.1", "1.2"]
    ck.load(str(tmp_path / "save"))


def test_divergence_exits_1_naming_the_layer(tmp_path):
    data = fakedata.make_dataset(tmp_path / "data", sep=50)
    layers, _ = fakedata.write_net(tmp_path / "net", eps=1e8)
    r = cli("--layers", layers, "--data-path", data, "--data-provider", "fakedata:open_provider", "--train-range",
            "1-4", "--test-range", "5", "--mini", "8", "--epochs", "20", "--test-freq", "1", "--save-path",
            str(tmp_path / "save"))
    _expect(r, 1, r"NaN or infinite", r"first layer whose output is not finite is '(fc1|fc2|probs|logprob)'")
    for p in ck.list_checkpoints(tmp_path / "save"):
        c = ck.load(p)
        assert all(np.isfinite(a).all() for a in c.arrays.values())


@pytest.mark.parametrize("sig,code,said", [(signal.SIGINT, 130, "Ctrl-C"), (signal.SIGTERM, 143, "SIGTERM")])
def test_real_signal_saves_and_resume_is_bitwise(tmp_path, sig, code, said):
    # Ctrl-C, and SIGTERM as batch schedulers send it before killing a job
    data = fakedata.make_dataset(tmp_path / "data", delay=0.03)
    layers, _ = fakedata.write_net(tmp_path / "net")
    base = opts(tmp_path, data, layers, epochs=4, test_freq=1, force_save=True)
    train({**base, "save_path": str(tmp_path / "a")})
    args = ["--layers", layers, "--data-path", data, "--data-provider", "fakedata:open_provider", "--train-range", "1-4",
            "--test-range", "5", "--epochs", "4", "--mini", "16", "--test-freq", "1", "--save-path",
            str(tmp_path / "b"), "--seed", "5", "--threads", "1", "--force-save"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, HERE, os.environ.get("PYTHONPATH", "")])}
    p = subprocess.Popen([sys.executable, "-m", "ccn.cli.main", "train", *args], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    t_end = time.time() + 60
    while time.time() < t_end and not ck.list_checkpoints(tmp_path / "b") and p.poll() is None:
        time.sleep(0.01)
    time.sleep(random.uniform(0.0, 0.2))
    p.send_signal(sig)
    out, err = p.communicate(timeout=60)
    assert p.returncode == code, (out, err)
    assert f"Stopped by {said}" in out and "Traceback" not in err
    c = ck.load(str(tmp_path / "b"))
    assert c.position["batches_done"] < 16
    train({}, load_file=str(tmp_path / "b"))
    wa, _ = weights_of(tmp_path / "a")
    wb, cb = weights_of(tmp_path / "b")
    assert cb.path.endswith("4.4")
    for k in wa:
        assert np.array_equal(wa[k], wb[k]), k


def test_multiview_test_averages_probabilities_over_views(setup):
    tmp, data, layers, params = setup
    res, out = train(opts(tmp, data, layers, train_range="1-2", epochs=1, test_freq=2, multiview_test=True))
    _, c = weights_of(tmp / "save")
    rec = c.meta["history"]["test"][-1]
    assert rec["cases"] == 40
    # independent reference: the saved weights, each view forwarded on its own, softmax averaged
    import ccn

    net = ccn.Net(layers, params, {0: 6, 1: 1}, init=False)
    for p in net.params:
        net.set(p.name, c.arrays[f"w/{p.name}"])
    prov = fakedata.open_provider(data, [5], train=False, options=fakedata.ProviderOptions(seed=5, multiview=True))
    x, y = prov.load(5, 1)
    n = 40
    probs = 0
    for v in range(10):
        net.forward([x[v * n:(v + 1) * n], y[v * n:(v + 1) * n]])
        probs = probs + net.output("probs").astype(np.float64) / 10
    lab = y[:n, 0].astype(int)
    pl = probs[np.arange(n), lab]
    np.testing.assert_allclose(rec["costs"]["logprob"][0], -np.log(pl).sum(), rtol=1e-5)
    assert rec["costs"]["logprob"][1] == float((probs.argmax(1) != lab).sum())
    assert re.search(r"^logprob:  \d\.\d{6}, \d\.\d{6}$", out, re.M)


def test_layer_path_prefix_and_missing_params_file_on_resume(setup):
    tmp, data, layers, params = setup
    r = cli("--layer-path", os.path.dirname(layers), "--layer-def", os.path.basename(layers), "--layer-params",
            os.path.basename(params), "--data-path", data, "--data-provider", "fakedata:open_provider",
            "--train-range", "1-2", "--test-range", "5", "--epochs", "1", "--test-freq", "2", "--save-path",
            str(tmp / "save"), "--mini", "16")
    assert r.returncode == 0, r.stderr
    os.unlink(params)
    r = cli("-f", str(tmp / "save"), "--epochs", "2")
    assert r.returncode == 0, r.stderr
    assert "is gone; continuing with the copy saved in the checkpoint" in r.stderr
    _expect(cli("-f", str(tmp / "save"), "--gpu", "0", "--device", "cpu"), 2, "selects GPUs but --device is cpu")


# ---- where checkpoints go: one history per save folder ---------------------------------------
def test_resuming_a_copied_run_saves_into_the_copy(setup):
    tmp, data, layers, _ = setup
    train(opts(tmp, data, layers, epochs=1, save_path=str(tmp / "orig")))
    before = sorted(os.listdir(tmp / "orig"))
    import shutil

    shutil.copytree(tmp / "orig", tmp / "copy")
    _, out = train({"epochs": 2}, load_file=str(tmp / "copy"))
    assert sorted(os.listdir(tmp / "orig")) == before  # the original run is untouched
    assert ck.list_checkpoints(str(tmp / "copy"))[-1].endswith("2.4")
    assert f"Saving checkpoints to {tmp / 'copy'}" in out
    shutil.rmtree(tmp / "orig")  # a moved run too: nothing re-creates the old folder
    train({"epochs": 3}, load_file=str(tmp / "copy"))
    assert not (tmp / "orig").exists() and ck.list_checkpoints(str(tmp / "copy"))[-1].endswith("3.4")


def test_a_save_folder_holds_one_history(setup):
    tmp, data, layers, _ = setup
    run = tmp / "run"
    train(opts(tmp, data, layers, epochs=2, save_path=str(run)))
    held = sorted(os.listdir(run))
    # a new run into it
    with pytest.raises(InputError, match="already holds the checkpoints of another run") as e:
        train(opts(tmp, data, layers, epochs=1, seed=9, save_path=str(run)))
    assert f"-f {run}" in str(e.value)
    # another run continued into it
    train(opts(tmp, data, layers, epochs=1, save_path=str(tmp / "other")))
    with pytest.raises(InputError, match="already holds the checkpoints of another run"):
        train({"epochs": 2, "save_path": str(run)}, load_file=str(tmp / "other"))
    # an older checkpoint of its own, resumed in place
    with pytest.raises(InputError, match="is not the newest checkpoint") as e:
        train({"epochs": 3}, load_file=str(run / "1.2"))
    assert "--save-path NEW_FOLDER" in str(e.value)
    assert sorted(os.listdir(run)) == held  # nothing written or deleted
    # branching from it into a new folder works, and resuming the newest in place too
    train({"epochs": 2, "save_path": str(tmp / "branch")}, load_file=str(run / "1.2"))
    assert ck.list_checkpoints(str(tmp / "branch"))[-1].endswith("2.4")
    train({"epochs": 3}, load_file=str(run))
    assert ck.list_checkpoints(str(run))[-1].endswith("3.4")
    # a copy under another name ("best") has no place in the run's order: refused, not a crash
    import shutil

    shutil.copytree(run / "3.4", run / "best")
    with pytest.raises(InputError, match="is not named EPOCH.BATCH"):
        train({"epochs": 4}, load_file=str(run / "best"))


def test_save_folder_refusal_is_exit_2_without_traceback(setup):
    tmp, data, layers, _ = setup
    train(opts(tmp, data, layers, epochs=1, save_path=str(tmp / "run")))
    args = ["--data-path", data, "--data-provider", "fakedata:open_provider", "--train-range", "1-4", "--test-range",
            "5", "--layers", layers, "--epochs", "1", "--save-path", str(tmp / "run")]
    r = cli(*args)
    assert r.returncode == 2 and "already holds the checkpoints of another run" in r.stderr
    assert "Traceback" not in r.stderr


def test_resuming_on_another_train_range_counts_in_the_new_one(setup):
    tmp, data, layers, _ = setup
    train(opts(tmp, data, layers, epochs=3, test_freq=2), stop_after=6)  # epochs 1 and 2.1-2.2 of 1-4
    # on 1-2 batch 2 of epoch 2 was the last of the range: epoch 3 next, 4 of 6 batches done (not
    # 6 of 6, which showed 100% and put the learning-rate schedules at their end)
    _, out = train({"train_range": "1-2"}, load_file=str(tmp / "save"))
    assert "the train range changed since the checkpoint (1-4 -> 1-2)" in out
    assert "going on with batch 1 of epoch 3" in out and "4 (was 6)" in out
    lines = [LINE.match(ln) for ln in out.splitlines() if LINE.match(ln)]
    assert [(m.group(1), m.group(2), m.group(3)) for m in lines] == [("3", "1", "66.67"), ("3", "2", "83.33")]
    # the batch that was to come next still comes next where the new range holds it
    train(opts(tmp, data, layers, epochs=2, test_freq=2, save_path=str(tmp / "b")), stop_after=2)
    st = ck.load(str(tmp / "b")).position
    assert (st["epoch"], st["index"]) == (1, 2)  # batch 3 next
    _, out = train({"train_range": "3-4"}, load_file=str(tmp / "b"))
    lines = [LINE.match(ln) for ln in out.splitlines() if LINE.match(ln)]
    assert [(m.group(1), m.group(2)) for m in lines][:2] == [("1", "3"), ("1", "4")]


def test_a_net_without_a_cost_layer_is_refused(setup):
    tmp, data, layers, _ = setup
    text = open(layers).read()
    nocost = tmp / "net" / "layers-nocost.cfg"
    nocost.write_text(text[:text.index("[logprob]")])
    (tmp / "net" / "layers-nocost-params.cfg").write_text(open(layers.replace("layers-fake", "layer-params-fake")).read()
                                                         .split("[logprob]")[0])
    with pytest.raises(ConfigError, match="has no cost layer"):
        train(opts(tmp, data, str(nocost), params=str(tmp / "net" / "layers-nocost-params.cfg")))
    assert not (tmp / "save").exists() or not ck.list_checkpoints(str(tmp / "save"))


def test_cuda_convnet_command_lines(tmp_path):
    """cuda-convnet's cropped CIFAR provider and the options that became commands of their own."""
    data = tmp_path / "data"
    r = subprocess.run([sys.executable, "-m", "ccn.cli.main", "prepare-data", "builtin", "--out", str(data),
                        "--train-batches", "2", "--test-batches", "1", "--batch-size", "40"], capture_output=True,
                       text=True, env={**os.environ, "PYTHONPATH": ROOT}, timeout=120)
    assert r.returncode == 0, r.stderr
    base = ["--layers", os.path.join(ROOT, "layer-defs", "quickstart.ini"), "--data-path", str(data), "--train-range",
            "1-2", "--test-range", "3", "--epochs", "1", "--test-freq", "2", "--seed", "1"]
    # the original CIFAR recipe: cropped provider, multiview tests naming their logreg layer
    r = cli(*base, "--data-provider=cifar-cropped", "--save-path", str(tmp_path / "a"), "--zip-save", "1",
            "--multiview-test", "1", "--logreg-name", "logprob")
    assert r.returncode == 0, r.stderr
    assert "--crop-border 4: 24 x 24 crops of the 32 x 32 images" in r.stdout
    assert "--zip-save is accepted" in r.stderr and "--logreg-name is accepted" in r.stderr
    assert ck.load(str(tmp_path / "a")).options["inner_size"] == 24
    r = cli(*base, "--crop-border", "2", "--save-path", str(tmp_path / "b"))
    assert r.returncode == 0 and ck.load(str(tmp_path / "b")).options["inner_size"] == 28
    for bad, said in ((["--crop-border", "16"], "between 0 and 15"), (["--crop-border", "2", "--inner-size", "20"],
                                                                     "not both"),
                      (["--test-only", "1"], "ccn test -f CHECKPOINT"), (["--check-grads", "1"], "ccn check-grads")):
        r = cli(*base, *bad, "--save-path", str(tmp_path / "c"))
        assert r.returncode == 2 and said in r.stderr and "Traceback" not in r.stderr, (bad, r.stderr)
    assert not (tmp_path / "c").exists() or not ck.list_checkpoints(str(tmp_path / "c"))


def test_runs_that_save_nothing_say_why(setup):
    tmp, data, layers, _ = setup
    _, out = train(opts(tmp, data, layers, epochs=1, test_freq=57))
    assert "No checkpoint was written: checkpoints are saved with the tests, every --test-freq 57 data batches, and " \
           "this run trained 4" in out
    train(opts(tmp, data, layers, epochs=2, test_freq=2, save_path=str(tmp / "b")))
    _, out = train({"epochs": 1}, load_file=str(tmp / "b"))
    assert "Nothing to train: the run is past epoch 1 already (next: epoch 3)" in out


@pytest.mark.parametrize("outputs", [3, 12])
def test_classes_of_the_data_against_the_nets_outputs(tmp_path, outputs):
    data = tmp_path / "data"
    r = subprocess.run([sys.executable, "-m", "ccn.cli.main", "prepare-data", "builtin", "--out", str(data),
                        "--train-batches", "1", "--test-batches", "1", "--batch-size", "30"], capture_output=True,
                       text=True, env={**os.environ, "PYTHONPATH": ROOT}, timeout=120)
    assert r.returncode == 0, r.stderr
    src = os.path.join(ROOT, "layer-defs", "quickstart")
    (tmp_path / "net.ini").write_text(open(src + ".ini").read().replace("outputs=10", f"outputs={outputs}"))
    (tmp_path / "net-params.ini").write_text(open(src + "-params.ini").read())
    r = cli("--layers", str(tmp_path / "net.ini"), "--data-path", str(data), "--train-range", "1", "--test-range", "2",
            "--epochs", "1", "--test-freq", "1", "--save-path", str(tmp_path / "run"))
    if outputs == 3:  # labels 3..9 would have no output: refused before training
        assert r.returncode == 2 and "has 10 classes (labels 0..9)" in r.stderr and "outputs=10" in r.stderr
        assert not (tmp_path / "run").exists() or not ck.list_checkpoints(str(tmp_path / "run"))
    else:
        assert r.returncode == 0, r.stderr
        assert "outputs 10..11 never get a label" in r.stdout


def test_notes_on_resume_and_overlapping_ranges(setup):
    tmp, data, layers, _ = setup
    _, out = train(opts(tmp, data, layers, epochs=1, train_range="1-4", test_range="4-5"))
    assert "warning: batch 4 is in both --train-range and --test-range" in out
    with open(layers, "a") as f:
        f.write("\n# edited\n")
    _, out = train({"epochs": 2}, load_file=str(tmp / "save"))
    assert f"note: {layers} has changed since the checkpoint was saved" in out


def test_a_batch_damaged_since_prepare_data_ends_the_run_after_saving(tmp_path, rng):
    # a flipped bit keeps every header valid; the checksum prepare-data recorded catches it at the
    # batch's first read, and the batches trained before it are saved, as Ctrl-C would
    from ccn.data import batchfmt as bf
    from ccn.data import builtin

    data = str(tmp_path / "data")
    builtin.prepare(data, train_batches=3, test_batches=1, batch_size=30, seed=4)
    path = os.path.join(data, "data_batch_3")
    good = open(path, "rb").read()
    off, nb = bf.BatchFile(path).sections["pixels"]
    at = off + int(rng.integers(0, nb))
    with open(path, "r+b") as f:
        f.seek(at)
        f.write(bytes([good[at] ^ (1 << int(rng.integers(0, 8)))]))
    save = str(tmp_path / "save")
    args = ("--layers", os.path.join(ROOT, "layer-defs", "quickstart.ini"), "--data-path", data, "--train-range",
            "1-3", "--test-range", "4", "--epochs", "1", "--mini", "16", "--save-path", save, "--seed", "2")
    r = cli(*args)
    _expect(r, 2, r"data_batch_3 does not match the checksum that batches\.meta\.json records",
            r"saved in \S+1\.2; once the data is mended, resume with `ccn train -f \S+1\.2`")
    assert [l.split()[0] for l in r.stdout.splitlines() if LINE.match(l)] == ["1.1", "1.2"]
    assert [os.path.basename(p) for p in ck.list_checkpoints(save)] == ["1.2"]
    r = cli("-f", save)  # still damaged: nothing new trained, nothing new saved
    _expect(r, 2, r"data_batch_3 does not match")
    assert "saved in" not in r.stderr and [os.path.basename(p) for p in ck.list_checkpoints(save)] == ["1.2"]
    open(path, "wb").write(good)
    r = cli("-f", save, "--force-save", "1")
    assert r.returncode == 0, r.stderr
    assert [l.split()[0] for l in r.stdout.splitlines() if LINE.match(l)] == ["1.3"]


def test_a_closed_output_pipe_stops_like_ctrl_c(tmp_path):
    # `ccn train ... | head`: the run finishes its minibatch, saves, and exits 141 (as SIGPIPE
    # would) with its note on stderr; no traceback, no lost work
    data = fakedata.make_dataset(tmp_path / "data", delay=0.02)
    layers, _ = fakedata.write_net(tmp_path / "net")
    args = ["--layers", layers, "--data-path", data, "--data-provider", "fakedata:open_provider", "--train-range", "1-4",
            "--test-range", "5", "--epochs", "20", "--mini", "16", "--test-freq", "1000", "--save-path",
            str(tmp_path / "s"), "--seed", "5", "--threads", "1"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, HERE, os.environ.get("PYTHONPATH", "")])}
    p = subprocess.Popen([sys.executable, "-m", "ccn.cli.main", "train", *args], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    for line in p.stdout:  # read until training has begun, then hang up
        if LINE.match(line.rstrip("\n")):
            break
    p.stdout.close()
    err = p.stderr.read()
    assert p.wait(timeout=60) == 141, err
    assert "Traceback" not in err and "the output pipe was closed" in err
    m = re.search(r"Resume with: ccn train -f \S+ +\(checkpoint (\S+)\)", err)
    assert m, err
    c = ck.load(m.group(1))
    assert 1 <= c.position["batches_done"] < 80


def test_batch_zero_trains_saves_and_resumes(tmp_path):
    # ImageNet's batches are 0-417, as cuda-convnet2's make-data numbered them
    data = fakedata.make_dataset(tmp_path / "data", batches=(0, 1, 2, 3, 4))
    layers, _ = fakedata.write_net(tmp_path / "net")
    base = opts(tmp_path, data, layers, epochs=2, train_range="0-3", test_range="4", test_freq=1, force_save=True)
    res, out = train(base, stop_after=5)
    assert [l.split()[0] for l in out.splitlines() if LINE.match(l)] == ["1.0", "1.1", "1.2", "1.3", "2.0"]
    assert os.path.basename(res.checkpoint) == "2.0"
    assert [os.path.basename(p) for p in ck.list_checkpoints(tmp_path / "save")][:2] == ["1.0", "1.1"]
    _, out = train({}, load_file=str(tmp_path / "save"))
    assert [l.split()[0] for l in out.splitlines() if LINE.match(l)] == ["2.1", "2.2", "2.3"]


def test_checkpoint_folders_get_the_umask_mode_and_write_errors_their_exit_code(setup):
    # mkdtemp made checkpoint folders 0700: unreadable to a team on shared storage
    import errno

    from ccn.fsutil import write_error

    tmp, data, layers, _ = setup
    old = os.umask(0o022)
    os.umask(old)
    train(opts(tmp, data, layers, epochs=1))
    for p in ck.list_checkpoints(tmp / "save"):
        assert os.stat(p).st_mode & 0o777 == 0o777 & ~old, oct(os.stat(p).st_mode)
    # a full disk is a failure at run time (exit 1); an unwritable path is bad input (exit 2)
    assert write_error("x", OSError(errno.ENOSPC, "full")).exit_code == 1
    assert write_error("x", OSError(errno.EROFS, "read-only")).exit_code == 2
    assert write_error("x", OSError(errno.EACCES, "denied")).exit_code == 2


def test_the_memory_check_counts_the_cases_a_step_holds(setup, monkeypatch):
    # --mini above the batch size: a step holds the batch, not --mini (the check refused a
    # 1,000,000 minibatch of 40-case batches as needing 25 GiB)
    from ccn import net as netmod

    seen = []
    real = netmod.check_memory
    monkeypatch.setattr(netmod, "check_memory", lambda net, cases, what: (seen.append(cases), real(net, cases, what)))
    tmp, data, layers, _ = setup
    train(opts(tmp, data, layers, epochs=1, mini=1000000))
    assert seen and set(seen) == {40}  # the step, and each test pass

    from ccn.testing import cases_per_step

    assert cases_per_step(16, (None, []), (None, []), ranks=3) == 6  # (no num_cases: --mini, then a share)


def test_a_net_too_big_for_memory_is_refused_before_its_weights_are_drawn(setup, monkeypatch):
    # the parameters are zero pages until written: the check must come before the weights are
    # drawn (or restored), or the kernel's OOM killer ends the run without a word
    from ccn import net as netmod

    drawn = []
    real_init = netmod.Net.init_weights
    monkeypatch.setattr(netmod.Net, "init_weights", lambda self, seed=0: (drawn.append(seed), real_init(self, seed)))
    monkeypatch.setattr(netmod, "_available_bytes", lambda: 1000)
    tmp, data, layers, _ = setup
    with pytest.raises(InputError, match=r"--mini: a step of .* needs at least .* GiB of memory, but only 0\.0 GiB"):
        train(opts(tmp, data, layers, epochs=1))
    assert drawn == []


def test_parameters_take_memory_only_once_written():
    # a big matrix built for show-net: three zeroed copies (weights, increments, gradients)
    # that cost nothing until written
    import ccn

    def rss_mb():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    text = "[data]\ntype=data\ndataIdx=0\n[fc]\ntype=fc\ninputs=data\noutputs=4000\n"
    before = rss_mb()
    net = ccn.Net("<big>", None, {0: 20000}, layers_text=text, init=False)  # 80M values: 3 x 320 MB
    assert rss_mb() - before < 100, rss_mb() - before
    net.init_weights(0)  # written: now the weights take their memory
    assert rss_mb() - before > 250


def test_a_run_that_ends_after_its_last_checkpoint_says_so(setup):
    tmp, data, layers, _ = setup
    _, out = train(opts(tmp, data, layers, epochs=1, test_freq=3))  # 4 batches, saved after the 3rd
    assert [os.path.basename(p) for p in ck.list_checkpoints(tmp / "save")] == ["1.3"]
    assert "note: the batches trained after checkpoint 1.3 (up to 1.4) are not saved" in out
    _, out = train(opts(tmp, data, layers, epochs=1, test_freq=3, force_save=True, save_path=str(tmp / "b")))
    assert "are not saved" not in out


FAULTY = '''
import numpy as np
import fakedata


class Faulty(fakedata.FakeProvider):
    def load(self, batch_num, epoch):
        mode = self.spec["mode"]
        data = super().load(batch_num, epoch)
        if mode == "raise" and batch_num == 3:
            raise ValueError("disk on fire")
        if mode == "scalar":
            return [data[0], 1.0]
        if mode == "empty" and batch_num == 2:
            return [d[:0] for d in data]
        if mode == "short" and batch_num == 2:
            return [d[:30] for d in data]
        return data


class NoLoad:
    def __init__(self, inner):
        self.batch_nums, self.data_dims, self.num_cases = inner.batch_nums, inner.data_dims, inner.num_cases


def open_faulty(data_path, batch_range, *, train, options):
    return Faulty(data_path, batch_range, train, options)


def open_none(data_path, batch_range, *, train, options):
    return None


def open_noload(data_path, batch_range, *, train, options):
    return NoLoad(fakedata.FakeProvider(data_path, batch_range, train, options))
'''


@pytest.mark.parametrize("mode, fn, code, pattern", [
    ("raise", "open_faulty", 2, r"--data-provider \S+:open_faulty: the provider's load\(3, 1\) failed: ValueError: "
                                r"disk on fire\. .*saved in \S+1\.2"),
    ("scalar", "open_faulty", 2, r"the data provider's matrix 1 for batch 1 is a single number"),
    ("empty", "open_faulty", 2, r"the data provider returned no cases for batch 2"),
    ("short", "open_faulty", 2, r"the data provider's load gave 30 rows for batch 2, but its num_cases says 40 cases"),
    ("ok", "open_none", 2, r"open_none: the function returned None; it must return a provider object"),
    ("ok", "open_noload", 2, r"the provider \(NoLoad\) has no 'load', which ccn needs"),
])
def test_a_faulty_plugin_provider_is_named_not_reported_as_a_ccn_bug(tmp_path, mode, fn, code, pattern):
    data = fakedata.make_dataset(tmp_path / "data")
    spec = json.load(open(os.path.join(data, "fake.json")))
    json.dump({**spec, "mode": mode}, open(os.path.join(data, "fake.json"), "w"))
    layers, _ = fakedata.write_net(tmp_path / "net")
    mod = "faulty_" + os.path.basename(str(tmp_path)).replace("-", "_")
    open(os.path.join(os.path.dirname(layers), mod + ".py"), "w").write(FAULTY)
    r = cli("--layers", layers, "--data-path", data, "--data-provider", f"{mod}:{fn}", "--train-range", "1-4",
            "--test-range", "5", "--epochs", "1", "--mini", "16", "--test-freq", "4", "--save-path",
            str(tmp_path / "save"), "--seed", "3")
    _expect(r, code, pattern)
    assert "internal error" not in r.stderr
