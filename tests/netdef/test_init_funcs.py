"""initWFunc / initBFunc: the user's functions, called as cuda-convnet2 called them, found next
to the layer file, and their failures reported as the user's, naming layer and key."""

import os
import uuid

import numpy as np
import pytest

import ccn
from ccn.cli.train import _provider_module
from ccn.errors import ConfigError, InputError

NET = """[data]
type=data
dataIdx=0
[labels]
type=data
dataIdx=1
[fc]
type=fc
inputs=data,data
outputs=3
initWFunc={w}
initBFunc={b}
[probs]
type=softmax
inputs=fc
[cost]
type=cost.logreg
inputs=labels,probs
"""

MODULE = '''
import numpy as n
calls = []
def makew(name, idx, shape, params):
    calls.append(("w", name, idx, tuple(shape), list(params)))
    return n.full(shape, float(params[0]) + idx, dtype=n.single)
def makeb(name, shape, *, params):  # no input index; params by keyword, as the original passed it
    calls.append(("b", name, tuple(shape), list(params)))
    return n.full(shape, 0.25, dtype=n.single)
def broken(name, idx, shape, params):
    raise ValueError("my function is broken")
def wrong_shape(name, idx, shape, params):
    return n.zeros((shape[0] + 1, shape[1]), n.single)
'''


def _setup(tmp_path, w, b):
    """A layer file and a module beside it (under a fresh name, so no earlier import is reused),
    run from another folder."""
    mod = "inits_" + uuid.uuid4().hex[:8]
    folder = tmp_path / "net"
    folder.mkdir()
    (folder / f"{mod}.py").write_text(MODULE)
    path = folder / "layers.cfg"
    path.write_text(NET.format(w=w.format(mod=mod), b=b.format(mod=mod)))
    os.chdir(tmp_path)
    return str(path), mod


@pytest.fixture(autouse=True)
def _keep_cwd():
    cwd = os.getcwd()
    yield
    os.chdir(cwd)


def test_functions_beside_the_layer_file_are_called_as_the_original_called_them(tmp_path):
    import sys

    path, mod = _setup(tmp_path, "{mod}.makew(0.5, x)", "{mod}.makeb")
    net = ccn.Net(path, None, {0: 4, 1: 1}, seed=1)
    assert np.all(net.get("fc.weights[0]") == 0.5) and np.all(net.get("fc.weights[1]") == 1.5)
    assert np.all(net.get("fc.biases") == 0.25)
    calls = sys.modules[mod].calls
    assert ("w", "fc", 0, (4, 3), ["0.5", "x"]) in calls and ("w", "fc", 1, (4, 3), ["0.5", "x"]) in calls
    assert ("b", "fc", (1, 3), []) in calls


@pytest.mark.parametrize("w, b, pattern", [
    ("{mod}.broken", "{mod}.makeb", r"layer 'fc', key 'initWFunc': \w+\.broken\(4, 3\) raised ValueError: my "
                                    r"function is broken"),
    ("{mod}.wrong_shape", "{mod}.makeb", r"key 'initWFunc': \w+\.wrong_shape returned shape \(5, 3\), expected "
                                         r"\(4, 3\)"),
    ("{mod}.makew(1)", "{mod}.nothing", r"key 'initBFunc': cannot load '\w+\.nothing'"),
    ("nosuchmodule_x.f", "{mod}.makeb", r"key 'initWFunc': cannot load 'nosuchmodule_x\.f' \(no module named "
                                        r"'nosuchmodule_x' on the Python path or in .+\)"),
])
def test_failures_name_the_layer_and_key(tmp_path, w, b, pattern):
    path, _ = _setup(tmp_path, w, b)
    with pytest.raises(ConfigError, match=pattern) as e:
        ccn.Net(path, None, {0: 4, 1: 1}, seed=1)
    assert path in str(e.value)


def test_a_provider_module_beside_the_layer_file(tmp_path):
    folder = tmp_path / "exp"
    folder.mkdir()
    mod = "prov_" + uuid.uuid4().hex[:8]
    (folder / f"{mod}.py").write_text("def open_it(data_path, batch_range, *, train, options):\n    return None\n")
    os.chdir(tmp_path)
    module, fn = _provider_module(f"{mod}:open_it", str(folder / "layers.cfg"))
    assert module.__name__ == mod and callable(fn)
    with pytest.raises(InputError, match=r"cannot load 'open_it' from module 'prov_nope'"):
        _provider_module("prov_nope:open_it", str(folder / "layers.cfg"))


def test_a_transposed_or_non_finite_result_is_refused(tmp_path):
    # the original rejected a wrong shape; a transposed array of the right size was silently reread
    mod = "inits_" + uuid.uuid4().hex[:8]
    folder = tmp_path / "net"
    folder.mkdir()
    (folder / f"{mod}.py").write_text("import numpy as n\n"
                                      "def wt(name, idx, shape, params):\n    return n.zeros((shape[1], shape[0]))\n"
                                      "def big(name, idx, shape, params):\n    return n.full(shape, 1e300)\n")
    for fn, pattern in (("wt", r"returned shape \(3, 4\), expected \(4, 3\)"), ("big", r"not finite")):
        (folder / "layers.cfg").write_text(NET.format(w=f"{mod}.{fn}", b=f"{mod}.wt").replace("initBFunc", "#"))
        with pytest.raises(ConfigError, match=pattern):
            ccn.Net(str(folder / "layers.cfg"), None, {0: 4, 1: 1}, seed=1)
