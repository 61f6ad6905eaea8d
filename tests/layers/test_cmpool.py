"""type=cmpool (cross-map max pooling, cuda-convnet2) against a NumPy float64 reference."""

import math

import numpy as np
import pytest

import ccn
from ccn.errors import ConfigError
from layercheck import check_layer


def cmpool_ref(x, C, S, size, stride, start, outs):
    """Output map o at each pixel: max over input maps [start + o*stride, start + o*stride + size) ∩ [0, C)."""
    n = len(x)
    x = x.reshape(n, C, S * S)
    out = np.empty((n, outs, S * S))
    for o in range(outs):
        c0, c1 = max(0, start + o * stride), min(C, start + o * stride + size)
        out[:, o] = x[:, c0:c1].max(axis=1)
    return out.reshape(n, -1)


def text_for(C, size, stride, start, outputs=None, pool="max"):
    t = (f"[data]\ntype=data\ndataIdx=0\n\n[cm]\ntype=cmpool\ninputs=data\npool={pool}\nchannels={C}\n"
         f"size={size}\nstride={stride}\nstart={start}\n")
    if outputs is not None:
        t += f"outputs={outputs}\n"
    return t


@pytest.mark.parametrize("C,size,stride,start,outputs", [
    (6, 2, 2, 0, 3),     # disjoint pairs
    (7, 3, 2, 0, 3),     # overlapping, last window clipped
    (8, 3, 1, -1, 8),    # negative start, "same" across maps
    (5, 4, 3, -2, 3),    # even size, clipped at both ends
    (9, 3, 3, 0, None),  # outputs computed: ceil((9 - 0 - 3) / 3) + 1 = 3
    (5, 5, 1, 0, 1),     # all maps into one
])
def test_cmpool(C, size, stride, start, outputs):
    rng = np.random.default_rng()
    n, S = int(rng.choice([1, 2, 5])), int(rng.choice([3, 5]))
    outs = outputs if outputs is not None else math.ceil((C - start - size) / stride) + 1
    k = n * C * S * S
    x = ((rng.permutation(k) + 0.5) * (4.0 / k) - 2).reshape(n, C, S, S)  # no ties
    net = check_layer(text_for(C, size, stride, start, outputs), {"data": (0, x)},
                      lambda a: cmpool_ref(a["data"], C, S, size, stride, start, outs), "cm")
    assert net.layer("cm").shape == (outs, S, S)


def test_cmpool_ties_all_get_the_gradient():
    rng = np.random.default_rng()
    n, C, S, size, stride, start, outs = 3, 6, 4, 3, 2, -1, 3
    x = rng.integers(0, 2, size=(n, C, S, S)).astype(np.float32)
    g = rng.standard_normal((n, outs * S * S)).astype(np.float32)
    net = ccn.Net("<t>", None, {0: (C, S, S)}, layers_text=text_for(C, size, stride, start, outs))
    net._net.set_data_grads(True)
    net.forward({0: x.reshape(n, -1)}, train=True)
    net.backward({"cm": g})
    ref = cmpool_ref(x.astype(np.float64), C, S, size, stride, start, outs).reshape(n, outs, S * S)
    np.testing.assert_array_equal(net.output("cm").reshape(ref.shape), ref)
    want = np.zeros((n, C, S * S))
    xr, gr = x.reshape(n, C, S * S), g.reshape(n, outs, S * S)
    for o in range(outs):
        c0, c1 = max(0, start + o * stride), min(C, start + o * stride + size)
        want[:, c0:c1] += (xr[:, c0:c1] == ref[:, o:o + 1]) * gr[:, o:o + 1]
    np.testing.assert_allclose(net.output_grad("data").reshape(want.shape), want, rtol=1e-5, atol=1e-5)


def _expect(text, dims, *fragments):
    with pytest.raises(ConfigError) as ei:
        ccn.Net("<bad-layers>", None, dims, layers_text=text)
    for f in fragments:
        assert f in str(ei.value), f"{f!r} not in {str(ei.value)!r}"


@pytest.mark.parametrize("args,key,frag", [
    ((6, 2, 2, 0, 2), "outputs", "covers only 4 of 6 input channels"),
    ((6, 2, 2, 0, 4), "outputs", "entirely past the 6 input channels"),
    ((6, 2, 2, 1, 3), "start", "must be 0 or negative"),
    ((6, 2, 2, -2, 4), "start", "contains no input map"),
    ((6, 2, 3, 0, 2), "stride", "larger than size=2"),
    ((6, 7, 1, 0, 1), "size", "between 1 and channels=6"),
    ((6, 0, 1, 0, 1), "size", "between 1 and channels=6"),
    ((6, 2, 0, 0, 1), "stride", "must be at least 1"),
    ((6, 2, 2, 0, -1), "outputs", "must be 0 (computed) or positive"),
])
def test_cmpool_bad_keys(args, key, frag):
    _expect(text_for(*args), {0: (6, 3, 3)}, "<bad-layers>:", "[cm]", f"key '{key}'", frag)


def test_cmpool_bad_pool_and_channels():
    _expect(text_for(6, 2, 2, 0, 3, pool="avg"), {0: (6, 3, 3)}, "key 'pool'", "supports only pool=max")
    _expect(text_for(6, 2, 2, 0, 3, pool="mx"), {0: (6, 3, 3)}, "key 'pool'", "Did you mean 'max'")
    _expect(text_for(2, 2, 2, 0, 1), {0: 6 * 3 * 3}, "key 'channels'", "which is not a square image")
    _expect(text_for(5, 2, 2, 0, 2), {0: 6 * 3 * 3}, "key 'channels'", "not a multiple of channels=5")
