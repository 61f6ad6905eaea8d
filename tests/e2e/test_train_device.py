"""`ccn train --device cuda` / `ccn test --device cuda` wiring, tested on the CPU (runs in CI).

The real GPU code paths are tested in tests/cuda (skipped without a GPU). Here a stand-in
"GPU" replaces what ccn.device finds and does: `probe` reports one GPU, and `place` wraps the
net's core in :class:`StandInGpu`, which keeps the device contract of the real one
(``prefetch`` stages a minibatch, ``train_step(None)``/``fprop([])`` consume the staged one,
``get``/``set`` read and write the "device" parameters) while computing on the CPU, so its
results must equal a CPU run bit for bit. It records every call, for the ordering checks.
"""

import io
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import fakedata
from ccn import checkpoint as ck
from ccn import device as dev
from ccn.cli.test import run_test_command
from ccn.errors import CcnRuntimeError, ConfigError, InputError

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
ONE_GPU = dev.Backends(True, ({"index": 0, "name": "Stand-in GPU", "memory_bytes": 80 * 2**30},))


class StandInGpu:
    """A core net "on a GPU": the contract of the real device net, computed on the CPU."""

    _own = ("inner", "gpu", "calls", "staged")

    def __init__(self, inner, gpu):
        object.__setattr__(self, "inner", inner)
        object.__setattr__(self, "gpu", gpu)
        object.__setattr__(self, "calls", [])
        object.__setattr__(self, "staged", None)

    def __getattr__(self, name):  # everything else: the wrapped core net
        return getattr(self.inner, name)

    def __setattr__(self, name, value):  # seed, step, case_offset
        setattr(self.inner, name, value)

    on_device = True

    @property
    def device(self):
        return self.gpu

    def to_device(self, gpu=0):
        object.__setattr__(self, "gpu", gpu)

    def to_host(self):
        self.calls.append(("to_host",))

    def synchronize(self):
        self.calls.append(("synchronize",))

    @staticmethod
    def _sig(data):
        return (int(data[0].shape[0]), float(np.float64(data[0]).sum()))

    def prefetch(self, data):
        if not data or data[0] is None:
            raise InputError("prefetch needs at least the data for dataIdx 0.")
        object.__setattr__(self, "staged", [None if d is None else np.array(d, np.float32) for d in data])
        self.calls.append(("prefetch", self._sig(data)))

    def _take(self, data, what):
        if data:
            self.calls.append((what + "(data)", self._sig(data)))
            return data
        if self.staged is None:
            raise InputError(f"{what} without data needs a minibatch given to prefetch() first.")
        data, staged = self.staged, None
        object.__setattr__(self, "staged", staged)
        self.calls.append((what + "(None)", self._sig(data)))
        return data

    def train_step(self, data, progress, minibatch):
        return self.inner.train_step(self._take(data, "train_step"), progress, minibatch)

    def fprop(self, data, train=False):
        return self.inner.fprop(self._take(data, "fprop"), train)


@pytest.fixture
def gpu(monkeypatch):
    """One stand-in GPU; yields the list of the StandInGpu objects made."""
    made = []

    def place(net, placement):
        assert placement.device == "cuda"
        net.to("cpu")
        net._net = StandInGpu(net._net, placement.gpu)
        made.append(net._net)
        return net

    monkeypatch.setattr(dev, "probe", lambda: ONE_GPU)
    monkeypatch.setattr(dev, "place", place)
    return made


@pytest.fixture
def setup(tmp_path):
    data = fakedata.make_dataset(tmp_path / "data")
    layers, _ = fakedata.write_net(tmp_path / "net")
    return tmp_path, data, layers


def opts(tmp, data, layers, **kw):
    return fakedata.train_opts(tmp, data, layers, **{"epochs": 2, **kw})


train = fakedata.train


def arrays(path):
    return dict(ck.load(path).arrays)


def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(a[k], b[k]), k


# ---- choosing the backend -------------------------------------------------------------------
def test_select_options():
    assert dev.select(None, None, backends=ONE_GPU) == dev.Placement("cpu", None)
    assert dev.select("cpu", None, backends=ONE_GPU).label == "cpu"
    assert dev.select("cuda", None, backends=ONE_GPU) == dev.Placement("cuda", 0)
    assert dev.select("cuda", "0", backends=ONE_GPU).label == "cuda:0"
    assert dev.select("gpu", " 0 ", backends=ONE_GPU).gpu == 0
    two = dev.Backends(True, ({"index": 0, "name": "A"}, {"index": 1, "name": "B"}))
    assert dev.select("cuda", "1", backends=two) == dev.Placement("cuda", 1)
    assert dev.select(None, "1", backends=two) == dev.Placement("cuda", 1)  # --gpu alone means cuda
    cases = [
        (dict(device="cpu", gpu="0"), ConfigError, "selects GPUs but --device is cpu"),
        (dict(device="cuda", gpu="0,1"), ConfigError, "several GPUs at once is not implemented yet; give one index"),
        (dict(device="cuda", gpu="x"), InputError, "expected a GPU index such as 0"),
        (dict(device="cuda", gpu="0,0"), InputError, "names a GPU twice"),
        (dict(device="cuda", gpu="-1"), InputError, "expected a GPU index"),
        (dict(device="cuda", gpu="1"), InputError, r"there is no GPU 1 on this machine; the visible GPUs are 0 \("
                                                   r"Stand-in GPU\)"),
        (dict(device="tpu"), InputError, "expected cpu or cuda"),
        (dict(device="cuda", data_parallel=True), ConfigError, "under an MPI launcher .* not implemented yet"),
        (dict(device="cuda", gpus_needed=2), ConfigError, "gpu= layout spreads it over 2 devices"),
    ]
    for kw, cls, pattern in cases:
        kw.setdefault("gpu", None)
        with pytest.raises(cls, match=pattern):
            dev.select(kw.pop("device"), kw.pop("gpu"), backends=ONE_GPU, **kw)
    with pytest.raises(CcnRuntimeError, match="built without the CUDA backend.*Rebuild it with nvcc"):
        dev.select("cuda", None, backends=dev.Backends(False, ()))
    # the messages name the option the user gave: --gpu 0 alone (the wiki's command lines) is not --device cuda
    with pytest.raises(CcnRuntimeError, match=r"ccn train --gpu 0: this ccn was built without .* leave out --gpu 0 to "):
        dev.select(None, "0", backends=dev.Backends(False, ()))
    with pytest.raises(CcnRuntimeError, match=r"ccn test --gpu 0: no CUDA GPU is visible .* leave out --gpu 0 to run"):
        dev.select(None, "0", command="ccn test", backends=dev.Backends(True, ()))
    with pytest.raises(ConfigError, match="leave out --gpu 0 to run the layout simulated"):
        dev.select(None, "0", gpus_needed=2, backends=ONE_GPU)
    with pytest.raises(CcnRuntimeError, match=r"no CUDA GPU is visible on this machine \(the CUDA runtime says: "
                                              r"no driver\)\. Check nvidia-smi"):
        dev.select("cuda", "0", backends=dev.Backends(True, (), "no driver"))
    # the CPU needs nothing, not even a probe
    assert dev.select("cpu", None, backends=dev.Backends(False, ())).device == "cpu"


def test_probe_matches_the_build():
    from ccn._native import core

    b = dev.probe()
    assert b.cuda_compiled == ("cuda" in core.build_info()["backends"])
    assert isinstance(b.gpus, tuple)


def _cli(*args):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, HERE, os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "ccn.cli.main", *args], capture_output=True, text=True, env=env,
                          timeout=120)


def test_cli_refuses_cuda_without_gpu_in_one_paragraph(setup):
    b = dev.probe()
    if b.cuda_compiled and b.gpus:
        pytest.skip("a GPU is visible here")
    tmp, data, layers = setup
    common = ["--layers", layers, "--data-provider", "fakedata:open_provider", "--data-path", data,
              "--train-range", "1", "--test-range", "5", "--save-path", str(tmp / "s")]
    for extra in (["--device", "cuda"], ["--gpu", "0"], ["--device", "cuda", "--gpu", "0"]):
        r = _cli("train", *common, *extra)
        assert r.returncode == 1, (r.stdout, r.stderr)
        assert "Traceback" not in r.stderr and r.stderr.startswith("error: ")
        said = "--gpu 0" if extra == ["--gpu", "0"] else "--device cuda"  # the option the user typed
        assert re.search(rf"ccn train {said}: (this ccn was built without the CUDA backend|no CUDA GPU is "
                         r"visible)", r.stderr), r.stderr
        assert f"leave out {said} to run on the CPU" in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert not os.path.exists(tmp / "s")  # refused before anything was written
    r = _cli("train", *common, "--gpu", "0,1")
    assert r.returncode == 2 and "several GPUs at once is not implemented yet" in r.stderr, r.stderr
    r = _cli("train", *common, "--gpu", "0", "--device", "cpu")
    assert r.returncode == 2 and "selects GPUs but --device is cpu" in r.stderr, r.stderr
    # ccn test: refused before the checkpoint is even read
    r = _cli("test", "-f", str(tmp / "nothing-here"), "--device", "cuda")
    assert r.returncode == 1 and "ccn test --device cuda:" in r.stderr and "Traceback" not in r.stderr, r.stderr


# ---- training on the stand-in GPU -------------------------------------------------------------
def test_gpu_run_equals_cpu_run_and_overlaps_the_copy(setup, gpu):
    tmp, data, layers = setup
    _, cpu_out = train(opts(tmp, data, layers, save_path=str(tmp / "cpu"), force_save=True))
    _, out = train(opts(tmp, data, layers, save_path=str(tmp / "gpu"), force_save=True, device="cuda"))
    assert "device cuda:0 (Stand-in GPU, 80.0 GiB); the next minibatch is copied to the GPU while the current one " \
           "computes" in out
    assert "device cpu" in cpu_out
    # the same numbers, the same checkpoints
    strip = lambda o: [re.sub(r"\(\d+\.\d+ sec\)", "", l) for l in o.splitlines() if re.match(r"^\d+\.\d+ \(", l)]
    assert strip(out) == strip(cpu_out) and len(strip(out)) == 8
    names = [os.path.basename(p) for p in ck.list_checkpoints(tmp / "gpu")]
    assert names == [os.path.basename(p) for p in ck.list_checkpoints(tmp / "cpu")]
    for n in names:
        assert_same(arrays(tmp / "gpu" / n), arrays(tmp / "cpu" / n))
    assert ck.load(tmp / "gpu").options["device"] == "cuda" and ck.load(tmp / "gpu").options["gpu"] == "0"
    # prefetch ordering: per data batch of 40 cases at --mini 16, minibatch k+1 is staged right
    # after step k was issued, and every step consumes the minibatch staged last
    (g,) = gpu
    steps = [c for c in g.calls if c[0] in ("prefetch", "train_step(None)", "train_step(data)")]
    assert not any(c[0] == "train_step(data)" for c in steps)
    kinds = [c[0] for c in steps]
    per_batch = ["prefetch", "train_step(None)"] * 3
    assert kinds == per_batch * 8
    for i in range(0, len(steps), 2):
        assert steps[i][1] == steps[i + 1][1]  # consumed what was staged
    assert [c[1][0] for c in steps[::2]] == [16, 16, 8] * 8
    # the staged minibatches are the data batch's rows in order
    prov = fakedata.open_provider(data, [1], train=True, options=fakedata.ProviderOptions(seed=5))
    x = prov.load(1, 1)[0]
    want = [(hi - lo, float(np.float64(x[lo:hi]).sum())) for lo, hi in ((0, 16), (16, 32), (32, 40))]
    assert [c[1] for c in steps[:6:2]] == want
    # tests ran on the "GPU" too (forward with data: prefetch + use)
    assert any(c[0] == "fprop(data)" for c in g.calls)


def test_checkpoints_cross_between_devices(setup, gpu):
    tmp, data, layers = setup
    train(opts(tmp, data, layers, save_path=str(tmp / "ref"), force_save=True))
    ref = arrays(tmp / "ref")
    # GPU -> CPU: stop after 3 batches on the "GPU", resume on the CPU
    train(opts(tmp, data, layers, save_path=str(tmp / "a"), device="cuda", test_freq=3), stop_after=3)
    assert [os.path.basename(p) for p in ck.list_checkpoints(tmp / "a")] == ["1.3"]
    n_gpus = len(gpu)
    _, out = train({"force_save": True}, load_file=str(tmp / "a"))
    assert len(gpu) == n_gpus  # resumed on the CPU: --device is not taken from the checkpoint
    assert "the checkpoint was trained with --device cuda; this run is on cpu (give --device cuda to continue " \
           "there)" in out
    assert_same(arrays(tmp / "a"), ref)
    # CPU -> GPU
    train(opts(tmp, data, layers, save_path=str(tmp / "b"), test_freq=3), stop_after=3)
    _, out = train({"force_save": True, "device": "cuda"}, load_file=str(tmp / "b"))
    assert len(gpu) == n_gpus + 1 and "device cuda:0" in out
    assert "the checkpoint was trained with --device cpu; this run is on cuda:0" in out
    assert_same(arrays(tmp / "b"), ref)


def test_interrupt_mid_batch_on_gpu_resumes_exactly(setup, gpu, monkeypatch):
    """Ctrl-C after a minibatch whose successor was already staged: the staged copy is simply
    dropped and the resume (on the CPU here) starts at that successor."""
    tmp, data, layers = setup
    train(opts(tmp, data, layers, save_path=str(tmp / "ref"), force_save=True))
    from ccn import train as T

    orig = T.Trainer.run
    calls = {"n": 0}

    def run(self, stop_after=None):
        real_step = self.net.train_step

        def step(*a, **kw):
            calls["n"] += 1
            if calls["n"] == 5:  # the 2nd minibatch of the 2nd data batch
                self._stop = True
            return real_step(*a, **kw)

        self.net.train_step = step
        return orig(self, stop_after)

    monkeypatch.setattr(T.Trainer, "run", run)
    res, _ = train(opts(tmp, data, layers, save_path=str(tmp / "a"), device="cuda"))
    monkeypatch.setattr(T.Trainer, "run", orig)
    assert res.interrupted and os.path.basename(res.checkpoint) == "1.2-mb2"
    (g,) = gpu
    assert [c[0] for c in g.calls if c[0].startswith(("prefetch", "train_step"))][-2:] == ["train_step(None)",
                                                                                          "prefetch"]
    train({"force_save": True}, load_file=str(tmp / "a"))
    assert_same(arrays(tmp / "a"), arrays(tmp / "ref"))


def test_ccn_test_on_gpu_equals_cpu(setup, gpu):
    tmp, data, layers = setup
    train(opts(tmp, data, layers, epochs=1))
    out_cpu, out_gpu = io.StringIO(), io.StringIO()
    a = run_test_command(str(tmp / "save"), out=out_cpu)
    b = run_test_command(str(tmp / "save"), out=out_gpu, device="cuda", gpu="0")
    assert a == b
    assert " on cuda:0 (Stand-in GPU" in out_gpu.getvalue() and " on cuda" not in out_cpu.getvalue()
    assert any(c[0] == "fprop(data)" for c in gpu[0].calls)
    with pytest.raises(InputError, match="there is no GPU 3"):
        run_test_command(str(tmp / "save"), out=io.StringIO(), gpu="3")


def test_gpu_layout_and_mpi_are_refused_on_cuda(setup, gpu):
    tmp, data, layers = setup
    text = open(layers).read().replace("outputs=8\n", "outputs=8\ngpu=0,1\n")
    open(layers, "w").write(text)
    with pytest.raises(ConfigError, match="gpu= layout spreads it over 2 devices"):
        train(opts(tmp, data, layers, device="cuda"))
    assert not gpu  # refused before the net was placed
    _, out = train(opts(tmp, data, layers, epochs=1))  # the CPU still simulates the layout
    assert "simulated on the CPU" in out
