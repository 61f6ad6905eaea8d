"""CMake refuses a misspelt value of ccn's build options before anything else (skipped without cmake)."""

import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.skipif(shutil.which("cmake") is None, reason="no cmake on PATH")
@pytest.mark.parametrize("option,values", [("CCN_OPENMP", "AUTO, ON, OFF"), ("CCN_CUDA", "AUTO, ON, OFF, SIM"),
                                           ("CCN_BLAS", "pip, system, mkl")])
def test_a_misspelt_build_option_is_refused(tmp_path, option, values):
    r = subprocess.run(["cmake", "-S", ROOT, "-B", str(tmp_path / "b"), f"-D{option}=maybe"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert f"{option}=maybe is not one of its values: {values}." in " ".join(r.stderr.split()), r.stderr
