"""prepare-data stopped by SIGTERM (or killed) leaves no worker processes behind; progress lines
off a terminal."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _env(**extra):
    return dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1",
                **extra)


def _group(pgid):
    """pids of the live (not zombie) processes in process group ``pgid``."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    st = f.read()
            except OSError:
                continue
            fields = st[st.rindex(")") + 2:].split()  # state, ppid, pgrp, ...
            if int(fields[2]) == pgid and fields[0] != "Z":
                out.append(int(d))
    return out


def _children(pid):
    return [p for p in _group(pid) if p != pid]


def _many_images(root, n=300):
    """Slow enough to decode that the run is still busy when it is stopped."""
    y, x = np.mgrid[0:1200, 0:1200]
    arr = np.stack([(x + y) % 256, x % 256, y % 256], axis=-1).astype(np.uint8)
    p = root / "a" / "0.png"
    p.parent.mkdir(parents=True)
    Image.fromarray(arr).save(p)
    data = p.read_bytes()
    for c in ("a", "b"):
        (root / c).mkdir(exist_ok=True)
        for i in range(n // 2):
            (root / c / f"{i}.png").write_bytes(data)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_stopping_prepare_data_leaves_no_workers(tmp_path, sig):
    _many_images(tmp_path / "src")
    out = tmp_path / "o"
    p = subprocess.Popen([sys.executable, "-m", "ccn.cli.main", "prepare-data", "folder", str(tmp_path / "src"),
                          "--out", str(out), "--size", "16", "--batch-size", "20", "-j", "2"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
                         start_new_session=True)
    try:
        t = time.time()
        while len(_children(p.pid)) < 3 and p.poll() is None and time.time() - t < 60:  # 2 workers + tracker
            time.sleep(0.05)
        time.sleep(0.5)
        assert p.poll() is None, "finished before it could be stopped"
        p.send_signal(sig)
        _, err = p.communicate(timeout=30)  # (stdout/stderr close only when no process holds them)
        if sig == signal.SIGTERM:
            assert p.returncode == 143, err
            assert "stopped by SIGTERM" in err and "rerun the same command" in err and "Traceback" not in err
            assert not (out / "batches.meta.json").exists()
        t = time.time()
        while _group(p.pid) and time.time() - t < 10:
            time.sleep(0.1)
        assert _group(p.pid) == [], "processes left behind"
    finally:
        for q in _group(p.pid):
            os.kill(q, signal.SIGKILL)
    if sig == signal.SIGTERM:  # and it resumes
        r = subprocess.run([sys.executable, "-m", "ccn.cli.main", "prepare-data", "folder", str(tmp_path / "src"),
                            "--out", str(out), "--size", "16", "--batch-size", "20", "-j", "2"],
                           capture_output=True, text=True, env=_env(), timeout=300)
        assert r.returncode == 0, r.stderr
        assert "read 300, written 300" in r.stdout


def test_progress_lines_off_a_terminal(tmp_path):
    for c in ("a", "b"):
        for i in range(6):
            (tmp_path / "src" / c).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (10, 10), (i * 30, 0, 0)).save(tmp_path / "src" / c / f"{i}.png")
    r = subprocess.run([sys.executable, "-m", "ccn.cli.main", "prepare-data", "folder", str(tmp_path / "src"),
                        "--out", str(tmp_path / "o"), "--size", "8", "--batch-size", "4", "-j", "1"],
                       capture_output=True, text=True, env=_env(CCN_PROGRESS_SECONDS="0"), timeout=120)
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("images: ")]
    assert lines and all("/12 images (" in ln and "images/s" in ln and "elapsed" in ln for ln in lines), r.stderr
    assert any("ETA" in ln for ln in lines), r.stderr
    # a bad value is named, not silently replaced
    r = subprocess.run([sys.executable, "-m", "ccn.cli.main", "prepare-data", "folder", str(tmp_path / "src"),
                        "--out", str(tmp_path / "o2"), "--size", "8", "--batch-size", "4", "-j", "1"],
                       capture_output=True, text=True, env=_env(CCN_PROGRESS_SECONDS="soon"), timeout=120)
    assert r.returncode == 2 and "CCN_PROGRESS_SECONDS must be a number of seconds" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_a_second_sigterm_is_ignored_while_stopping(capsys):
    """A scheduler that sends TERM twice: the second one must not cut the clean-up (the worker
    joins) short or escape as a traceback."""
    from ccn.cli import prepare_data as pd

    joined = []

    def work(adv):
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        finally:  # (the pipeline ends and joins its workers here)
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
            joined.append(True)

    with pytest.raises(SystemExit) as e:
        pd._run("test", None, "batches", "OUT", work)
    assert e.value.code == 143 and joined == [True]
    assert "stopped by SIGTERM" in capsys.readouterr().err
