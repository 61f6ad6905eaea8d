"""Packaging guard: scikit-build-core leaves git-ignored files out of wheels, so no file of the
ccn package may match a .gitignore rule (an unanchored `data/` once dropped ccn/data)."""

import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_no_package_file_is_git_ignored():
    if not shutil.which("git") or not os.path.isdir(os.path.join(ROOT, ".git")):
        pytest.skip("not a git checkout")
    files = [os.path.relpath(os.path.join(d, f), ROOT) for d, _, fs in os.walk(os.path.join(ROOT, "ccn"))
             for f in fs if f.endswith(".py")]
    assert len(files) > 20
    r = subprocess.run(["git", "check-ignore", "--no-index", *files], cwd=ROOT, capture_output=True, text=True)
    assert r.stdout.strip() == "", f"git-ignored package files (left out of wheels): {r.stdout}"
