"""tools/device-check.sh --dry-run: the GPU check script's stages, run with what a machine
without a GPU has (the in-place build, tests/cuda collected and skipped, the smoke run on the
CPU), so a broken script is found here and not in a borrowed GPU's minutes."""

import glob
import os
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.skipif(not glob.glob(os.path.join(ROOT, "ccn", "_core*.so")), reason="needs the in-place build")
@pytest.mark.parametrize("rest,line", [(None, "not run (dry run)"), ("0", "not run (CCN_CHECK_REST=0)")],
                         ids=["default", "rest-off"])
def test_device_check_dry_run(tmp_path, monkeypatch, rest, line):
    monkeypatch.delenv("CCN_CHECK_REST", raising=False)
    env = {**os.environ, "OUT": str(tmp_path), **({"CCN_CHECK_REST": rest} if rest else {})}
    r = subprocess.run(["bash", os.path.join(ROOT, "tools", "device-check.sh"), "--dry-run"], capture_output=True,
                       text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    table = r.stdout[r.stdout.index("=== summary"):]
    assert "build        skipped (dry run" in table
    assert "tests/cuda   " in table and " passed" in table and "failed" not in table
    assert "smoke        ok: train 3 epochs cpu" in table
    assert "bench        skipped (dry run; bench_gpu.py compiles)" in table
    assert f"other tests  {line}" in table
    for f in ("tests-cuda.log", "smoke.log", "info.txt"):
        assert (tmp_path / f).is_file(), f
