"""Data-parallel `ccn train` over MPI (ccn/parallel.py): N ranks at minibatch M follow one process at
minibatch M; resume across world sizes; a hung or dead rank stops the job with a message naming it.

Needs mpi4py and an MPI launcher (the test extra installs mpi4py and mpich from PyPI; the
launcher is looked up next to this Python first, then on PATH)."""

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid

import numpy as np
import pytest

import fakedata
from ccn import checkpoint as ck
from ccn.parallel import split_rows

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
LINE = re.compile(r"^(\d+)\.(\d+) \((\d+\.\d\d)%\)\.\.\. logprob:  (\d+\.\d{6}), (\d+\.\d{6}) \(\d+\.\d{3} sec\)$")


def mpiexec() -> str:
    exe = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or shutil.which("mpiexec")
    if exe is None:
        pytest.fail("no mpiexec found next to this Python or on PATH; install the test extra (pip install -e "
                    "'.[test]' brings mpi4py and mpich).")
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        pytest.fail("mpi4py is not installed; install the test extra (pip install -e '.[test]').")
    return exe


def env(**extra):
    e = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, HERE, os.environ.get("PYTHONPATH", "")]),
         "OMP_NUM_THREADS": "1"}
    for k in ("PMI_SIZE", "PMI_RANK", "OMPI_COMM_WORLD_SIZE", "WORLD_SIZE", "RANK"):
        e.pop(k, None)
    e.update(extra)
    return e


def run(args, ranks=1, timeout=120, **extra):
    cmd = [sys.executable, "-m", "ccn.cli.main", "train", *args]
    if ranks > 1:
        cmd = [mpiexec(), "-n", str(ranks), *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, env=env(**extra), timeout=timeout)


DROPOUT_LAYERS = fakedata.LAYERS.replace("""[fc2]
type=fc
inputs=fc1""", """[drop]
type=dropout
inputs=fc1

[fc2]
type=fc
inputs=drop""")
DROPOUT_PARAMS = fakedata.PARAMS.replace("wc=0.0005\n", "wc=0.0005\nupdatePeriod=2\n", 1) + "\n[drop]\nkeep=0.6\n"


@pytest.fixture
def setup(tmp_path):
    data = fakedata.make_dataset(tmp_path / "data")
    plain, _ = fakedata.write_net(tmp_path / "net")
    drop = tmp_path / "drop" / "layers-drop.cfg"
    drop.parent.mkdir()
    drop.write_text(DROPOUT_LAYERS.format(classes=3))
    (tmp_path / "drop" / "layer-params-drop.cfg").write_text(DROPOUT_PARAMS.format(eps=0.05))
    return tmp_path, data, {"plain": plain, "dropout": str(drop)}


def args(tmp, data, layers, save, mini=16, epochs=2, **kw):
    a = ["--layers", layers, "--data-path", data, "--data-provider", "fakedata:open_provider", "--train-range", "1-4",
         "--test-range", "5", "--epochs", str(epochs), "--mini", str(mini), "--test-freq", "4", "--seed", "3",
         "--force-save", "1", "--save-path", str(tmp / save)]
    for k, v in kw.items():
        a += [f"--{k.replace('_', '-')}", str(v)]
    return a


def costs(stdout):
    return [tuple(float(x) for x in LINE.match(l).groups()[3:]) for l in stdout.splitlines() if LINE.match(l)]


def assert_same_run(a, b, exact=False):
    ca, cb = ck.load(a), ck.load(b)
    assert os.path.basename(ca.path) == os.path.basename(cb.path)
    assert ca.meta["net"]["step"] == cb.meta["net"]["step"]
    assert ca.position == cb.position
    assert set(ca.arrays) == set(cb.arrays)
    for k in ca.arrays:
        if exact:
            assert np.array_equal(ca.arrays[k], cb.arrays[k]), k
        else:
            np.testing.assert_allclose(cb.arrays[k], ca.arrays[k], rtol=1e-4, atol=2e-6, err_msg=k)
    return ca, cb


def test_split_rows_partitions_every_minibatch():
    for n in (1, 2, 7, 15, 16, 128):
        for size in (1, 2, 3, 4, 8):
            parts = [split_rows(n, size, r) for r in range(size)]
            assert parts[0][0] == 0 and parts[-1][1] == n
            assert all(parts[r][1] == parts[r + 1][0] for r in range(size - 1))
            assert max(b - a for a, b in parts) - min(b - a for a, b in parts) <= 1


@pytest.mark.slow
@pytest.mark.parametrize("net,mini,ranks", [("plain", 16, 2), ("dropout", 15, 2), ("dropout", 7, 3)])
def test_ranks_follow_the_single_process_trajectory(setup, net, mini, ranks):
    """N ranks at --mini M (each M/N cases) == one process at --mini M: weights, increments, the
    accumulated gradient of updatePeriod=2, dropout masks (indexed by the global row), short last
    minibatches (40 cases per batch: 15+15+10 and 7*5+5), printed costs and checkpoints."""
    tmp, data, nets = setup
    one = run(args(tmp, data, nets[net], "one", mini=mini))
    assert one.returncode == 0, one.stderr
    many = run(args(tmp, data, nets[net], "many", mini=mini), ranks=ranks)
    assert many.returncode == 0, many.stdout + many.stderr
    assert f"data parallel over {ranks} MPI ranks" in many.stdout
    # rank 0 alone prints: the lines appear once
    assert len(costs(many.stdout)) == len(costs(one.stdout)) == 8
    np.testing.assert_allclose(costs(many.stdout), costs(one.stdout), atol=2e-6)
    assert many.stdout.count("Saved checkpoint to") == one.stdout.count("Saved checkpoint to") == 2
    assert many.stderr == ""
    _, c = assert_same_run(str(tmp / "one"), str(tmp / "many"))
    assert c.options["world_size"] == ranks
    assert [os.path.basename(p) for p in ck.list_checkpoints(tmp / "many")] == ["1.4", "2.4"]


@pytest.mark.slow
def test_resume_same_world_size_is_exact_and_other_sizes_continue(setup):
    tmp, data, nets = setup
    layers = nets["dropout"]
    r = run(args(tmp, data, layers, "straight", mini=16, epochs=2), ranks=2)
    assert r.returncode == 0, r.stderr
    r = run(args(tmp, data, layers, "resumed", mini=16, epochs=1), ranks=2)
    assert r.returncode == 0, r.stderr
    r = run(["-f", str(tmp / "resumed"), "--epochs", "2"], ranks=2)
    assert r.returncode == 0, r.stderr
    assert "written by" not in r.stdout
    assert_same_run(str(tmp / "straight"), str(tmp / "resumed"), exact=True)
    # a 2-rank checkpoint continued by one process: the same run, within float rounding
    r = run(args(tmp, data, layers, "mixed", mini=16, epochs=1), ranks=2)
    assert r.returncode == 0, r.stderr
    r = run(["-f", str(tmp / "mixed"), "--epochs", "2"])
    assert r.returncode == 0, r.stderr
    assert "the checkpoint was written by 2 ranks, this run has 1: training continues the same run" in r.stdout
    assert_same_run(str(tmp / "straight"), str(tmp / "mixed"))


def _pid_of_rank(tag, rank, deadline):
    while time.time() < deadline:
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/environ", "rb") as f:
                    envs = f.read().split(b"\0")
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read()
            except OSError:
                continue
            if f"CCN_TEST_TAG={tag}".encode() in envs and f"PMI_RANK={rank}".encode() in envs and b"ccn.cli.main" in cmd:
                return int(pid)
        time.sleep(0.05)
    raise AssertionError(f"rank {rank} not found")


@pytest.mark.slow
@pytest.mark.parametrize("how", ["hang", "die"])
def test_a_hung_or_dead_rank_stops_the_job_naming_it(tmp_path, how):
    data = fakedata.make_dataset(tmp_path / "data", delay=0.02, batches=list(range(1, 6)))
    layers, _ = fakedata.write_net(tmp_path / "net")
    tag = uuid.uuid4().hex
    a = args(tmp_path, data, layers, "save", mini=4, epochs=10000, test_freq=1)
    cmd = [mpiexec(), "-n", "2", sys.executable, "-m", "ccn.cli.main", "train", *a]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=env(CCN_TEST_TAG=tag, CCN_DP_TIMEOUT="3"))
    victim = None
    try:
        victim = _pid_of_rank(tag, 1, time.time() + 30)
        t_end = time.time() + 30
        while time.time() < t_end and not ck.list_checkpoints(tmp_path / "save"):
            time.sleep(0.05)
        assert ck.list_checkpoints(tmp_path / "save"), "training did not start"
        os.kill(victim, signal.SIGSTOP if how == "hang" else signal.SIGKILL)
        t0 = time.time()
        out, err = p.communicate(timeout=30)
        took = time.time() - t0
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
        if victim is not None:
            try:
                os.kill(victim, signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert p.returncode != 0
    if how == "hang":  # our watchdog: rank 0 names the rank within CCN_DP_TIMEOUT + a little
        assert took < 3 + 10, took
        assert re.search(rf"error: data-parallel training stopped at step \d+ after 3 s: rank 1 \(pid {victim} on "
                         r"\S+\) (stopped responding \(no heartbeat for \d+ s\) during|did not reach) the gradient "
                         r"all-reduce\. It died or hangs", err), (p.returncode, out[-1500:], err)
    else:  # the launcher sees the death first and ends the job, naming the pid
        assert took < 10, took
        assert str(victim) in out + err, (out, err)
    ck.load(str(tmp_path / "save"))  # the last checkpoint is complete


def test_world_size_without_an_mpi_launcher_is_refused(setup):
    tmp, data, nets = setup
    r = run(args(tmp, data, nets["plain"], "x"), WORLD_SIZE="2", RANK="0")
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert "WORLD_SIZE=2 is set, but this process was not started by an MPI launcher" in r.stderr
