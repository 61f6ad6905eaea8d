"""`ccn show-net`: the table, the data-dims options and their errors, the multi-GPU line."""

import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from ccn.cli import main as climain
from ccn.cli.show_net import infer_data_dims, parse_data_dims
from ccn.errors import ConfigError, InputError

NET = """
[data]
type=data
dataIdx=0
[labels]
type=data
dataIdx=1
[hidden]
type=fc
inputs=data
outputs=20
neuron=relu
[fc10]
type=fc
inputs=hidden
outputs=10
[probs]
type=softmax
inputs=fc10
[logprob]
type=cost.logreg
inputs=labels,probs
"""
PARAMS = "[hidden]\nepsW=0.1\nepsB=0.1\nmomW=0.9\nmomB=0.9\nwc=0\n[fc10]\nepsW=0.1\nepsB=0.1\nmomW=0.9\nmomB=0.9\nwc=0\n"


def run(*args):
    return subprocess.run([sys.executable, "-m", "ccn.cli.main", *args], capture_output=True, text=True, timeout=120)


def invoke(*args):
    return CliRunner().invoke(climain.cli, ["show-net", *args])


@pytest.fixture
def net_files(tmp_path):
    (tmp_path / "net.ini").write_text(NET)
    (tmp_path / "net-params.ini").write_text(PARAMS)
    return tmp_path


def test_table_rows_shapes_params_and_flops(net_files):
    r = invoke("--layers", str(net_files / "net.ini"), "--data-dims", "0=3x4x5")
    assert r.exit_code == 0, r.output
    out = r.output
    assert "net.ini + net-params.ini" in out
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
            for line in out.splitlines() if line.startswith("│")}
    assert rows["data"][2] == "3 x 4 x 5" and rows["labels"][2] == "1 x 1 x 1"
    assert rows["hidden"][:4] == ["fc (relu)", "data", "20 x 1 x 1", f"{60 * 20 + 20:,}"]
    assert rows["fc10"][3] == "210" and rows["logprob"][1] == "labels, probs"
    assert rows["hidden"][4] == "0.002"  # 60 x 20 multiply-adds = 2400 FLOPs
    total = next(v for k, v in rows.items() if k.startswith("total"))
    assert total[4] == "0.003"  # fc 2400 + fc 400 + softmax 5 x 10 + logreg 2 x 10 + 1
    assert total[3] == f"{1220 + 210:,}"
    assert "GPUs: 1" in out and "needs" not in out


def test_image_size_takes_channels_from_the_consumers(tmp_path):
    text = NET.replace("[hidden]\ntype=fc\ninputs=data\n", "[hidden]\ntype=fc\ninputs=data\n")
    dims = infer_data_dims("x.ini", text.replace("outputs=20", "outputs=20\nchannels=3"), 32, {})
    assert dims == {0: (3, 32, 32), 1: (1, 1, 1)}
    # explicit dims win over --image-size
    assert infer_data_dims("x.ini", text.replace("outputs=20", "outputs=20\nchannels=3"), 32, {0: (1, 2, 2)})[0] == (1, 2, 2)


def test_missing_image_size_says_which_option(tmp_path):
    with pytest.raises(InputError, match=r"data layer 'data' \(dataIdx=0\) holds images with 3 channels \(channels= of "
                                         r"layer 'hidden'\) .*--image-size N .*--data-dims 0=3xNxN"):
        infer_data_dims("x.ini", NET.replace("outputs=20", "outputs=20\nchannels=3"), None, {})
    with pytest.raises(InputError, match=r"no channels= key\. Give it with --data-dims 0=CxHxW"):
        infer_data_dims("x.ini", NET, 32, {})


@pytest.mark.parametrize("spec,dims", [("0=3x32x32", {0: (3, 32, 32)}), ("1=1", {1: (1, 1, 1)}),
                                       (" 2 = 10 ", {2: (10, 1, 1)}), ("0=1X28X28", {0: (1, 28, 28)})])
def test_parse_data_dims(spec, dims):
    assert parse_data_dims([spec]) == dims


@pytest.mark.parametrize("spec", ["0=3x32", "x=1", "0=0x2x2", "0=3x32x32x1", "=3", "0=99999x99999x9"])
def test_parse_data_dims_rejects(spec):
    with pytest.raises(InputError, match="--data-dims"):
        parse_data_dims([spec])


def test_multi_gpu_line(net_files):
    (net_files / "net.ini").write_text(NET.replace("neuron=relu", "neuron=relu\ngpu=0,1,2"))
    r = invoke("--layers", str(net_files / "net.ini"), "--data-dims", "0=7")
    assert r.exit_code == 0, r.output
    assert "this net needs 3 GPUs (gpu= in" in r.output and "training it across GPUs is not supported yet" in r.output


def test_without_params_file(tmp_path):
    (tmp_path / "lonely.ini").write_text(NET)
    r = invoke("--layers", str(tmp_path / "lonely.ini"), "--data-dims", "0=6")
    assert r.exit_code == 0, r.output
    assert "params: none found" in r.output


@pytest.mark.parametrize("args,pattern", [
    (["--data-dims", "0=3x4"], "expected IDX=CxHxW"),
    ([], "--data-dims 0=CxHxW"),
    (["--data-dims", "0=6", "--params", "nope.ini"], "the layer-params file does not exist"),
])
def test_errors_exit_2_one_paragraph(net_files, args, pattern):
    r = run("show-net", "--layers", str(net_files / "net.ini"), *args)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and r.stderr.startswith("error: ") and pattern in r.stderr
    assert r.stderr.strip().count("\n") == 0


def test_config_errors_exit_2(net_files):
    (net_files / "net.ini").write_text(NET.replace("outputs=20", "outputs=twenty"))
    r = run("show-net", "--layers", str(net_files / "net.ini"), "--data-dims", "0=6")
    assert r.returncode == 2 and "key 'outputs': expected an integer, found 'twenty'" in r.stderr
    assert "Traceback" not in r.stderr
    r = run("show-net", "--layers", str(net_files / "missing.ini"), "--data-dims", "0=6")
    assert r.returncode == 2 and "does not exist" in r.stderr


def test_subprocess_success(net_files):
    r = run("show-net", "--layers", str(net_files / "net.ini"), "--data-dims", "0=6")
    assert r.returncode == 0, r.stderr
    assert "logprob" in r.stdout and "total (6 layers)" in r.stdout


def test_a_layer_reading_the_labels_as_images_is_named(tmp_path):
    # --image-size would make 'labels' an image, and the cost layer would then be blamed for it
    text = NET.replace("[hidden]\ntype=fc\ninputs=data\n", "[hidden]\ntype=fc\ninputs=labels\n")
    assert "inputs=labels\n" in text
    line = text.splitlines().index("inputs=labels") + 1
    with pytest.raises(ConfigError, match=rf"^x\.ini:{line}: in section \[hidden\], key 'inputs': layer 'hidden' "
                                          r"\(type=fc\) reads data layer 'labels', which holds the labels of cost "
                                          r"layer 'logprob'"):
        infer_data_dims("x.ini", text, 32, {})


def test_a_parameter_matrix_beyond_the_address_space_is_named(tmp_path):
    # under a memory limit (ulimit -v, a batch system's) the matrix that does not fit is named,
    # instead of "out of memory allocating N bytes"
    import resource

    net = tmp_path / "big.cfg"
    net.write_text("[data]\ntype=data\ndataIdx=0\n[fc]\ntype=fc\ninputs=data\noutputs=20000\n")

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
    r = subprocess.run([sys.executable, "-m", "ccn.cli.main", "show-net", "--layers", str(net), "--data-dims",
                        "0=100000"], capture_output=True, text=True, timeout=120, preexec_fn=limit)
    assert r.returncode == 1, r.stderr
    assert "out of memory making the parameter matrix fc.weights[0] of layer 'fc' (100000 x 20000" in r.stderr
    assert "Traceback" not in r.stderr
