"""Issue #8: every layer (and neuron) of every original example file and of every file in
layer-defs/ has CUDA code. Net.to("cuda") checks that first and refuses, naming the layers
without it, before it touches a GPU; so this runs without a GPU as well (where the move then
fails for want of a device, with a different message), in any build with the CUDA backend."""

import os

import pytest

from ccn._native import core
from ccn.errors import CcnRuntimeError
from test_net_files import DEFS, LAYER_DEFS, REFERENCE, load


def _check(path, size, extra):
    if "cuda" not in core.build_info()["backends"]:
        pytest.skip("this ccn was built without the CUDA backend")
    net = load(path, size, extra)
    try:
        net.to("cuda")
    except CcnRuntimeError as e:
        assert "no CUDA implementation" not in str(e), str(e)
    finally:
        net.to("cpu")


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_reference_file_has_cuda_code(name, reference_dir):
    size, extra, _ = REFERENCE[name]
    _check(os.path.join(reference_dir, name), size, extra)


@pytest.mark.parametrize("name", sorted(LAYER_DEFS))
def test_layer_def_has_cuda_code(name):
    size, extra, _ = LAYER_DEFS[name]
    _check(os.path.join(DEFS, name), size, extra)
