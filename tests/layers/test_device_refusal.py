"""A net whose layers lack CUDA code is refused before any GPU is touched, with a message
naming each such layer and its type (runs without a GPU, in any build with the CUDA
backend; tests/cuda is skipped as a whole where no GPU is visible)."""

import pytest

import ccn
from ccn._native import core
from ccn.errors import CcnRuntimeError


@pytest.mark.parametrize("section", [
    "[b]\ntype=blur\ninputs=data\nchannels=3\nfilterSize=3\nstdev=1\n",
    "[b]\ntype=rgb2yuv\ninputs=data\n",
])
def test_layer_without_cuda_is_named(section):
    if "cuda" not in core.build_info()["backends"]:
        pytest.skip("this ccn was built without the CUDA backend")
    layers = "[data]\ntype=data\ndataIdx=0\n" + section
    with pytest.raises(CcnRuntimeError, match=r"no CUDA implementation: b \(type="):
        ccn.Net("layers.ini", None, {0: (3, 8, 8)}, layers_text=layers, device="cuda")
