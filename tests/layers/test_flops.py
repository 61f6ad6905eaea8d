"""flops_per_case (show-net's "fwd MFLOPs/case") counts real floating-point operations for every
layer type: a multiply-add is 2, any other add, multiply, comparison, division or elementary
function 1 (native/layers/layer.h)."""

import ccn

IMG = "[data]\ntype=data\ndataIdx=0\n"  # 3 x 8 x 8 images


def flops(text, dims):
    net = ccn.Net("<flops>", None, dims, layers_text=text, init=False)
    return {l.name: l.flops_per_case for l in net.layers}


def test_weight_layers_count_two_per_multiply_add():
    text = IMG + """
[conv]
type=conv
inputs=data,data
channels=3,3
filters=4
filterSize=3,3
padding=1,1
[local]
type=local
inputs=data
channels=3
filters=2
filterSize=3
stride=2
[fc]
type=fc
inputs=data,conv
outputs=5
[sfc]
type=sfc
inputs=data
parts=2
outputs=5
"""
    f = flops(text, {0: (3, 8, 8)})
    assert f["conv"] == 2 * (2 * 64 * 4 * 27)       # two inputs, 8x8 modules, 4 filters, 3*3*3 taps
    assert f["local"] == 2 * 16 * 2 * 27            # 4x4 modules
    assert f["fc"] == 2 * (192 * 5 + 256 * 5)
    assert f["sfc"] == 2 * 192 * 5                  # 2 parts of 96 inputs x 5 outputs


def test_other_layers_count_each_operation():
    text = IMG + """
[blur]
type=blur
inputs=data
channels=3
filterSize=5
stdev=1
[cmr]
type=cmrnorm
inputs=data
channels=3
size=3
[sum]
type=eltsum
inputs=data,blur,cmr
[yuv]
type=rgb2yuv
inputs=data
[resize]
type=resize
inputs=data
channels=3
scale=2
[sm]
type=softmax
inputs=data
"""
    f = flops(text, {0: (3, 8, 8)})
    assert f["blur"] == 2 * 2 * 5 * 192             # two passes of 5 multiply-adds per value
    assert f["cmr"] == (2 * 3 + 4) * 192            # 3 multiply-adds, then 4 operations
    assert f["sum"] == (2 * 3 - 1) * 192            # 3 products, 2 sums
    assert f["yuv"] == 5 * 192
    assert f["resize"] == 9 * 3 * 4 * 4
    assert f["sm"] == 5 * 192


def test_cost_layers():
    text = """
[x]
type=data
dataIdx=0
[onehot]
type=data
dataIdx=2
[label]
type=data
dataIdx=1
[sm]
type=softmax
inputs=x
[sum2]
type=cost.sum2
inputs=x
[ce]
type=cost.crossent
inputs=onehot,sm
[bce]
type=cost.bce
inputs=onehot,sm
[lr]
type=cost.logreg
inputs=label,sm
"""
    f = flops(text, {0: 10, 1: 1, 2: 10})
    assert f["sum2"] == 2 * 10 and f["ce"] == 5 * 10 and f["bce"] == 10 * 10 and f["lr"] == 2 * 10 + 1
