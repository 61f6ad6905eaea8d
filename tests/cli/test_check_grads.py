"""`ccn check-grads`: the gradient-check net passes; failures and bad input give the right exit codes."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GC = os.path.join(ROOT, "layer-defs", "gradcheck.ini")


def ccn(*args):
    return subprocess.run([sys.executable, "-m", "ccn.cli.main", "check-grads", *args], capture_output=True,
                          text=True, timeout=600, cwd=ROOT)


@pytest.mark.slow
def test_gradcheck_net_passes():
    r = ccn("--layers", GC, "--image-size", "8", "--data-dims", "2=10", "--samples", "30")
    assert r.returncode == 0, r.stdout + r.stderr
    lines = [l for l in r.stdout.splitlines() if l.strip().endswith(("PASS", "FAIL"))]
    # every weight layer of the net (conv, shared conv biases, local, fc with 6 inputs, sfc) and the data
    assert len(lines) == 15 and all(l.endswith("PASS") for l in lines)
    assert "All 15 gradient checks passed." in r.stdout


def test_failure_exits_1(tmp_path):
    net = tmp_path / "net.cfg"
    net.write_text("[data]\ntype=data\ndataIdx=0\n[labels]\ntype=data\ndataIdx=1\n"
                   "[fc]\ntype=fc\ninputs=data\noutputs=3\ninitW=0.5\n[probs]\ntype=softmax\ninputs=fc\n"
                   "[cost]\ntype=cost.logreg\ninputs=labels,probs\n")
    (tmp_path / "net-params.cfg").write_text("[fc]\nepsW=0.1\nepsB=0.1\nmomW=0\nmomB=0\nwc=0\n")
    ok = ccn("--layers", str(net), "--data-dims", "0=5")
    assert ok.returncode == 0, ok.stderr
    # a threshold no float32 finite difference can meet turns every line into FAIL
    bad = ccn("--layers", str(net), "--data-dims", "0=5", "--threshold", "1e-12")
    assert bad.returncode == 1
    assert "FAIL" in bad.stdout and bad.stderr.startswith("error: ") and "gradient checks failed" in bad.stderr


def test_bad_input_exits_2(tmp_path):
    r = ccn("--layers", str(tmp_path / "missing.cfg"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    net = tmp_path / "nocost.cfg"
    net.write_text("[data]\ntype=data\ndataIdx=0\n[fc]\ntype=fc\ninputs=data\noutputs=3\n")
    (tmp_path / "nocost-params.cfg").write_text("[fc]\nepsW=0.1\nepsB=0.1\nmomW=0\nmomB=0\nwc=0\n")
    r = ccn("--layers", str(net), "--data-dims", "0=4")
    assert r.returncode == 2 and "no cost layer" in r.stderr


def test_step_too_big_for_memory_is_refused():
    # 64 cases of 3 x 2048 x 2048 through quickstart need ~50 GiB of activations: refused before
    # allocating them (the kernel's OOM killer would end the process without a word)
    r = ccn("--layers", os.path.join(ROOT, "layer-defs", "quickstart.ini"), "--image-size", "2048", "--mini", "64")
    assert r.returncode == 2, r.stderr
    assert "needs at least" in r.stderr and "--mini" in r.stderr and "Traceback" not in r.stderr


def test_a_nan_objective_is_not_reported_as_gradient_failures(tmp_path):
    net = tmp_path / "net.cfg"
    # sqrt of a linear layer's output, which is negative for some cases
    net.write_text("[data]\ntype=data\ndataIdx=0\n[labels]\ntype=data\ndataIdx=1\n"
                   "[fc]\ntype=fc\ninputs=data\noutputs=3\ninitW=1\nneuron=sqrt\n[probs]\ntype=softmax\ninputs=fc\n"
                   "[cost]\ntype=cost.logreg\ninputs=labels,probs\n")
    (tmp_path / "net-params.cfg").write_text("[fc]\nepsW=0.1\nepsB=0.1\nmomW=0\nmomB=0\nwc=0\n")
    r = ccn("--layers", str(net), "--data-dims", "0=5")
    assert r.returncode == 1 and "Traceback" not in r.stderr and "FAIL" not in r.stdout
    assert "the objective is nan at the starting point (layer 'fc' is the first whose output is not finite)" \
        in r.stderr


def test_a_closed_output_pipe_is_a_quiet_exit(tmp_path):
    net = tmp_path / "net.cfg"
    net.write_text("[data]\ntype=data\ndataIdx=0\n[labels]\ntype=data\ndataIdx=1\n"
                   "[fc]\ntype=fc\ninputs=data\noutputs=3\ninitW=0.5\n[probs]\ntype=softmax\ninputs=fc\n"
                   "[cost]\ntype=cost.logreg\ninputs=labels,probs\n")
    (tmp_path / "net-params.cfg").write_text("[fc]\nepsW=0.1\nepsB=0.1\nmomW=0\nmomB=0\nwc=0\n")
    p = subprocess.Popen([sys.executable, "-m", "ccn.cli.main", "check-grads", "--layers", str(net), "--data-dims",
                          "0=5"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    p.stdout.close()  # `| head -0`: the reader is gone before the first line
    err = p.stderr.read()
    assert p.wait(timeout=120) == 141, err
    assert err == ""


def test_takes_cuda_convnets_names_of_the_net_files(tmp_path):
    """--layer-def / --layer-params, as ccn train takes them (whose --check-grads 1 points here)."""
    net = tmp_path / "net.cfg"
    net.write_text("[data]\ntype=data\ndataIdx=0\n[labels]\ntype=data\ndataIdx=1\n"
                   "[fc]\ntype=fc\ninputs=data\noutputs=3\ninitW=0.5\n[probs]\ntype=softmax\ninputs=fc\n"
                   "[cost]\ntype=cost.logreg\ninputs=labels,probs\n")
    (tmp_path / "other-params.cfg").write_text("[fc]\nepsW=0.1\nepsB=0.1\nmomW=0\nmomB=0\nwc=0\n")
    r = ccn(f"--layer-def={net}", "--layer-params", str(tmp_path / "other-params.cfg"), "--data-dims", "0=5")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"Gradient check of {net}" in r.stdout and "gradient checks passed." in r.stdout
