"""The CLI skeleton: version, help on every command, info, error paragraphs and exit codes."""

import json
import os
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

import ccn
from ccn.cli import main as climain
from ccn.errors import CcnRuntimeError, ConfigError


def run(*args, env=None):
    return subprocess.run([sys.executable, "-m", "ccn.cli.main", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=120)


def test_version():
    r = run("--version")
    assert r.returncode == 0
    assert ccn.__version__ in r.stdout


def test_help_lists_and_every_command_has_help():
    r = run("--help")
    assert r.returncode == 0
    for name in climain.COMMANDS:
        assert name in r.stdout
        h = run(name, "--help")
        assert h.returncode == 0, h.stderr
        assert "Usage:" in h.stdout


def test_unknown_command_is_usage_error():
    r = run("no-such-command")
    assert r.returncode == 2
    assert "Traceback" not in r.stderr


def test_info_tells_the_truth():
    r = run("info", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert "cpu" in d["backends"]
    assert d["omp_threads"] >= 1 and d["blas_threads"] >= 1
    assert "openblas" in d["blas"].lower() or "blas" in d["blas"].lower()
    # no GPU on CI machines: the list must then be empty, and the plain output says so
    if not d["gpus"]:
        assert "no GPU" in run("info").stdout
    txt = run("info").stdout
    assert d["blas"] in txt
    # conv kernels: GEMM always, the direct AVX-512 ones exactly when the core says so
    from ccn._native import core
    assert d["conv_kernels"] == list(core.build_info()["conv_kernels"])
    assert d["conv_kernels"][0] == "gemm"
    assert "conv kernels (CPU): " + ", ".join(d["conv_kernels"]) in txt
    assert d["conv_kernel_setting"] == (os.environ.get("CCN_CONV_KERNEL") or "auto")
    assert "CCN_CONV_KERNEL=direct" in run("info", env={"CCN_CONV_KERNEL": "direct"}).stdout


def test_env_prefix_sets_options():
    r = run("info", env={"CCN_INFO_JSON": "1"})
    assert r.returncode == 0
    json.loads(r.stdout)


@pytest.mark.parametrize("exc,code", [(ConfigError("layers.cfg:3: bad key"), 2), (CcnRuntimeError("boom"), 1),
                                      (ValueError("bug"), 1)])
def test_errors_are_one_paragraph_with_exit_code(monkeypatch, exc, code):
    @click.command()
    def failing():
        """Fails."""
        raise exc

    mod = type(sys)("ccn_test_failing")
    mod.failing = failing
    monkeypatch.setitem(sys.modules, "ccn_test_failing", mod)
    monkeypatch.setitem(climain.COMMANDS, "failing", "ccn_test_failing:failing")
    res = CliRunner().invoke(climain.cli, ["failing"])
    assert res.exit_code == code
    assert "Traceback" not in res.output
    assert res.output.startswith("error: ")
    assert str(exc) in res.output
    res = CliRunner().invoke(climain.cli, ["--debug", "failing"])
    assert res.exit_code == code


def test_native_errors_arrive_as_ccn_errors():
    with pytest.raises(ConfigError) as e:
        ccn.Net("x.cfg", None, {0: 3}, layers_text="[data]\ntype=data\ndataIdx=0\n[fc]\ntype=fcc\ninputs=data\n")
    assert "x.cfg:5" in str(e.value) and "'fc'" in str(e.value)


def test_a_simd_path_this_cpu_cannot_run_is_refused_and_info_says_why():
    from ccn._native import core

    quick = os.path.join(os.path.dirname(__file__), "..", "..", "layer-defs", "quickstart.ini")
    have = list(core.simd_paths())
    assert have[0] == "portable" and core.simd_path() in have
    r = run("show-net", "--layers", quick, "--image-size", "32", env={"CCN_SIMD": "avx9"})
    assert r.returncode == 2 and r.stdout == ""
    assert "CCN_SIMD is 'avx9', which this CPU cannot run; it must be one of " + ", ".join(have) in r.stderr
    assert "Traceback" not in r.stderr
    i = run("info", env={"CCN_SIMD": "avx9"})
    assert i.returncode == 0 and "CCN_SIMD=avx9 is not one of them" in i.stdout
    ok = run("show-net", "--layers", quick, "--image-size", "32", env={"CCN_SIMD": have[0]})
    assert ok.returncode == 0, ok.stderr
    info = run("info", env={"CCN_SIMD": have[0]})
    assert f"SIMD loops (CPU pool, norm, neuron): {have[0]}" in info.stdout
