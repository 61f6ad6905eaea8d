"""The params-file rule: which layer-params file goes with a layer-definition file."""

import os

import pytest

from ccn.errors import InputError
from ccn.netfiles import find_params_file, params_candidates, read_text


@pytest.mark.parametrize("layers,params", [
    ("layers-18pct.cfg", "layer-params-18pct.cfg"),
    ("layers-imagenet-1gpu.cfg", "layer-params-imagenet-1gpu.cfg"),
    ("layers.gc.cfg", "layer-params.gc.cfg"),
    ("layers.cfg", "layer-params.cfg"),
    ("alexnet.ini", "alexnet-params.ini"),
    ("my.net.ini", "my.net-params.ini"),
    ("net", "net-params"),
])
def test_first_candidate_found(tmp_path, layers, params):
    (tmp_path / layers).write_text("[data]\n")
    (tmp_path / params).write_text("")
    assert find_params_file(str(tmp_path / layers)) == str(tmp_path / params)


def test_candidate_order_and_fallbacks(tmp_path):
    names = [os.path.basename(c) for c in params_candidates(str(tmp_path / "layers-x.cfg"))]
    assert names == ["layer-params-x.cfg", "layers-x-params.cfg", "layers-x.params.cfg"]
    # STEM.params.EXT is used when STEM-params.EXT is absent; STEM-params.EXT wins when both exist
    (tmp_path / "net.ini").write_text("")
    (tmp_path / "net.params.ini").write_text("")
    assert find_params_file(str(tmp_path / "net.ini")).endswith("net.params.ini")
    (tmp_path / "net-params.ini").write_text("")
    assert find_params_file(str(tmp_path / "net.ini")).endswith("net-params.ini")
    # the cuda-convnet pair beats the generic names
    (tmp_path / "layers-y.cfg").write_text("")
    (tmp_path / "layers-y-params.cfg").write_text("")
    (tmp_path / "layer-params-y.cfg").write_text("")
    assert find_params_file(str(tmp_path / "layers-y.cfg")).endswith("layer-params-y.cfg")


def test_explicit_params_wins_and_must_exist(tmp_path):
    (tmp_path / "layers-a.cfg").write_text("")
    (tmp_path / "layer-params-a.cfg").write_text("")
    (tmp_path / "other.cfg").write_text("")
    assert find_params_file(str(tmp_path / "layers-a.cfg"), str(tmp_path / "other.cfg")) == str(tmp_path / "other.cfg")
    with pytest.raises(InputError, match="missing.cfg: the layer-params file does not exist"):
        find_params_file(str(tmp_path / "layers-a.cfg"), str(tmp_path / "missing.cfg"))
    with pytest.raises(InputError, match="does not exist or is not a file"):
        find_params_file(str(tmp_path / "layers-a.cfg"), str(tmp_path))


def test_none_found_lists_the_names_tried(tmp_path):
    with pytest.raises(InputError) as e:
        find_params_file(str(tmp_path / "layers-z.cfg"))
    msg = str(e.value)
    for n in ("layer-params-z.cfg", "layers-z-params.cfg", "layers-z.params.cfg", "--params FILE"):
        assert n in msg


def test_read_text_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_text(str(tmp_path / "nope.cfg"), "layer-definition file")
    with pytest.raises(InputError, match="is a folder"):
        read_text(str(tmp_path), "layer-definition file")
    (tmp_path / "bin.cfg").write_bytes(b"\xff\xfe[data]")
    with pytest.raises(InputError, match="not UTF-8 text"):
        read_text(str(tmp_path / "bin.cfg"), "layer-definition file")
    (tmp_path / "ok.cfg").write_bytes("[data]\r\n# é\r\n".encode())
    assert read_text(str(tmp_path / "ok.cfg"), "x") == "[data]\r\n# é\r\n"
