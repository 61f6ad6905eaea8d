"""The layer types that gained CUDA code after the first device pass: local (groups,
randSparse, several inputs, padding, strides, overhanging modules), cmpool, pool=maxabs,
sum, sfc, cost.crossent, cost.bce, cost.dce (also fused with a logistic), and the image operations (blur, crop, resize,
href, nailbed, rgb2yuv, rgb2lab, rscale). Each net runs on both backends from the same
weights: every layer's output, every layer's gradient (data layers included), every
parameter gradient and every cost value are compared, then a few training steps. A failure
lists EVERY quantity that differs, with its relative error, largest absolute difference
and where that difference is, so one GPU session can see all problems at once."""

import numpy as np
import pytest

import ccn
from cudaops import describe_diff

cuda = pytest.mark.cuda


# ---- helpers ------------------------------------------------------------------------------
def _diff(name, a, b, rtol, atol):
    """None when a (GPU) matches b (CPU), else a one-line description (cudaops.describe_diff)."""
    return describe_diff(a, b, rtol, atol, name)


def _twins(layers, params, dims, seed=3):
    ppath = "params.ini" if params is not None else None
    # allow_unused: some of these nets hold side branches that reach no cost, compared forward only
    cpu, gpu = (ccn.Net("layers.ini", ppath, dims, seed=seed, layers_text=layers, params_text=params, device=d,
                        allow_unused=True) for d in ("cpu", "cuda"))
    for p in cpu.params:  # the same starting weights on both
        gpu.set(p.name, cpu.get(p.name))
    for net in (cpu, gpu):
        net._net.set_data_grads(True)  # so the gradients reaching data layers are compared too
    return cpu, gpu


def _compare(cpu, gpu, rtol=1e-4, grad_rtol=1e-3, atol=1e-5, params=True):
    """Every layer output and gradient, parameter gradient and cost value; returns the failures."""
    bad = []
    costs = set(cpu.cost_layers())
    for info in cpu.layers:
        name = info.name
        if name in costs:
            continue
        bad.append(_diff(f"output of '{name}'", gpu.output(name), cpu.output(name), rtol, atol))
        bad.append(_diff(f"gradient of '{name}'", gpu.output_grad(name), cpu.output_grad(name), grad_rtol, atol))
    if params:
        for p in cpu.params:
            bad.append(_diff(f"gradient of parameter {p.name}", gpu.get(p.name, "grad"), cpu.get(p.name, "grad"),
                             grad_rtol, atol))
    cc, gc = cpu.costs(), gpu.costs()
    for c1, c2 in zip(cc, gc):
        bad.append(_diff(f"cost values {c1['names']} of '{c1['layer']}'", c2["values"], c1["values"], 1e-5, 1e-6))
    return [b for b in bad if b]


def _check_pass(cpu, gpu, data, seeds=None, train=True, **tol):
    for net in (cpu, gpu):
        net.forward(data, train=train)
        net.backward(seeds)
    bad = _compare(cpu, gpu, **tol)
    assert not bad, "GPU and CPU differ:\n  " + "\n  ".join(bad)


def _check_training(cpu, gpu, batches, rtol=1e-3):
    bad = []
    for step, data in enumerate(batches):
        n = data[0].shape[0]
        c1 = cpu.train_step(data, step / len(batches), n)
        c2 = gpu.train_step(data, step / len(batches), n)
        for a, b in zip(c1, c2):
            bad.append(_diff(f"step {step} cost values", b["values"], a["values"], rtol, 1e-4))
    for p in cpu.params:
        bad.append(_diff(f"parameter {p.name} after {len(batches)} steps", gpu.get(p.name), cpu.get(p.name), rtol, 1e-6))
    bad = [b for b in bad if b]
    assert not bad, "GPU and CPU training differ:\n  " + "\n  ".join(bad)


def _seeds(rng, net, names, n):
    return {k: rng.standard_normal((n, net.layer(k).outputs)).astype(np.float32) for k in names}


def _distinct(rng, n, d, signs=False):
    """n x d values all distinct (and of distinct magnitudes): max-type layers are differentiable."""
    x = (rng.permutation(n * d).reshape(n, d) + 1) / (n * d)
    if signs:
        x *= rng.choice([-1.0, 1.0], size=x.shape)
    return x.astype(np.float32)


# ---- local ------------------------------------------------------------------------------
LOCAL_LAYERS = """
[data0]
type=data
dataIdx=0
[data1]
type=data
dataIdx=1
[loc1]
type=local
inputs=data0,data1
channels=4,3
groups=2,1
filters=3,6
filterSize=3,4
padding=1,0
stride=2,1
initW=0.2,0.1
initB=0.1
neuron=tanh
[loc2]
type=local
inputs=data0
channels=4
groups=4
randSparse=1
filterChannels=2
filters=2
filterSize=4
padding=1
stride=2
initW=0.2
initB=0.05
[loc3]
type=local
inputs=data1
channels=3
filters=5
filterSize=3
padding=2
stride=3
initW=0.3
[c1]
type=cost.sum2
inputs=loc1
[c2]
type=cost.sum2
inputs=loc2
[c3]
type=cost.sum2
inputs=loc3
"""
LOCAL_PARAMS = """
[loc1]
epsW=0.02,0.01
epsB=0.02
momW=0.9,0.5
momB=0.9
wc=0.001,0
wball=0.5,0
[loc2]
epsW=0.02
epsB=0.02
momW=0.9
momB=0.9
wc=0.001
[loc3]
epsW=0.01
epsB=0.01
momW=0.9
momB=0.9
wc=0
[c1]
coeff=0.01
[c2]
coeff=0.02
[c3]
coeff=0.01
"""
LOCAL_DIMS = {0: (4, 9, 9), 1: (3, 8, 8)}


def _local_batch(rng, n):
    return [rng.standard_normal((n, 4 * 81)).astype(np.float32), rng.standard_normal((n, 3 * 64)).astype(np.float32)]


@cuda
@pytest.mark.parametrize("n", [1, 5, 33])
def test_local_forward_backward(n):
    rng = np.random.default_rng()
    cpu, gpu = _twins(LOCAL_LAYERS, LOCAL_PARAMS, LOCAL_DIMS)
    _check_pass(cpu, gpu, _local_batch(rng, n), _seeds(rng, cpu, ["loc1", "loc2", "loc3"], n))


@cuda
def test_local_training_with_per_module_wball():
    rng = np.random.default_rng()
    cpu, gpu = _twins(LOCAL_LAYERS, LOCAL_PARAMS, LOCAL_DIMS)
    _check_training(cpu, gpu, [_local_batch(rng, 9) for _ in range(4)])


# ---- cmpool, pool=maxabs, sum -------------------------------------------------------------
POOLS_LAYERS = """
[data]
type=data
dataIdx=0
[cm1]
type=cmpool
inputs=data
channels=7
pool=max
size=3
stride=2
start=-1
[cm2]
type=cmpool
inputs=data
channels=7
pool=max
size=2
stride=2
[mabs]
type=pool
inputs=data
channels=7
pool=maxabs
sizeX=3
stride=2
start=-1
[mabs2]
type=pool
inputs=data
channels=7
pool=maxabs
sizeX=2
stride=2
outputsX=3
[sum1]
type=sum
inputs=data
stride=7
[c]
type=cost.sum2
inputs=cm1
"""
POOLS_DIMS = {0: (7, 5, 5)}
POOLS_OUT = ["cm1", "cm2", "mabs", "mabs2", "sum1"]


@cuda
@pytest.mark.parametrize("n", [1, 4, 19])
def test_cmpool_maxabs_sum_forward_backward(n):
    rng = np.random.default_rng()
    cpu, gpu = _twins(POOLS_LAYERS, None, POOLS_DIMS)
    data = [_distinct(rng, n, 7 * 25, signs=True)]
    _check_pass(cpu, gpu, data, _seeds(rng, cpu, POOLS_OUT, n))


@cuda
def test_cmpool_maxabs_ties_match_cpu():
    """Small integers: many equal values (cmpool, pool max-type backward: every tie gets the
    gradient) and equal magnitudes of both signs (maxabs keeps the last in window order).
    Integer data make both backends exact, so any difference is a semantic one."""
    rng = np.random.default_rng()
    cpu, gpu = _twins(POOLS_LAYERS, None, POOLS_DIMS)
    n = 6
    data = [rng.integers(-2, 3, (n, 7 * 25)).astype(np.float32)]
    seeds = {k: rng.integers(-3, 4, (n, cpu.layer(k).outputs)).astype(np.float32) for k in POOLS_OUT}
    _check_pass(cpu, gpu, data, seeds, rtol=1e-6, grad_rtol=1e-6, atol=1e-6)


SUM_LAYERS = """
[data]
type=data
dataIdx=0
[flat]
type=data
dataIdx=1
[s1]
type=sum
inputs=data
stride=3
[s2]
type=sum
inputs=flat
stride=4
[s3]
type=sum
inputs=data
"""


@cuda
@pytest.mark.parametrize("n", [1, 7])
def test_sum_forward_backward(n):
    rng = np.random.default_rng()
    cpu, gpu = _twins(SUM_LAYERS, None, {0: (6, 3, 5), 1: 12})
    data = [rng.standard_normal((n, 90)).astype(np.float32), rng.standard_normal((n, 12)).astype(np.float32)]
    _check_pass(cpu, gpu, data, _seeds(rng, cpu, ["s1", "s2", "s3"], n))


# ---- sfc ----------------------------------------------------------------------------------
SFC_LAYERS = """
[data0]
type=data
dataIdx=0
[data1]
type=data
dataIdx=1
[sfc1]
type=sfc
inputs=data0,data1
parts=3
outputs=5
initW=0.1,0.2
initB=0.05
neuron=tanh
[sfc2]
type=sfc
inputs=sfc1
parts=5
outputs=2
initW=0.3
[c]
type=cost.sum2
inputs=sfc2
"""
SFC_PARAMS = """
[sfc1]
epsW=0.02,0.01
epsB=0.02
momW=0.9,0.9
momB=0.9
wc=0.001,0
[sfc2]
epsW=0.02
epsB=0.02
momW=0.9
momB=0.9
wc=0
[c]
coeff=0.1
"""


def _sfc_batch(rng, n):
    return [rng.standard_normal((n, 12)).astype(np.float32), rng.standard_normal((n, 9)).astype(np.float32)]


@cuda
@pytest.mark.parametrize("n", [1, 6, 31])
def test_sfc_forward_backward_and_training(n):
    rng = np.random.default_rng()
    cpu, gpu = _twins(SFC_LAYERS, SFC_PARAMS, {0: 12, 1: 9})
    _check_pass(cpu, gpu, _sfc_batch(rng, n), _seeds(rng, cpu, ["sfc2"], n))
    _check_training(cpu, gpu, [_sfc_batch(rng, n) for _ in range(3)])


# ---- cost.crossent, cost.bce, cost.dce ------------------------------------------------------
COST_LAYERS = """
[data]
type=data
dataIdx=0
[dist]
type=data
dataIdx=1
[bits]
type=data
dataIdx=2
[raw]
type=data
dataIdx=3
[fcp]
type=fc
inputs=data
outputs=7
initW=0.2
[probs]
type=softmax
inputs=fcp
[fcy]
type=fc
inputs=data
outputs=7
initW=0.2
neuron=logistic
[xent]
type=cost.crossent
inputs=dist,probs
[xraw]
type=cost.crossent
inputs=dist,raw
[bce]
type=cost.bce
inputs=bits,fcy
[braw]
type=cost.bce
inputs=bits,raw
[dce]
type=cost.dce
inputs=bits,fcy
[draw]
type=cost.dce
inputs=bits,raw
"""
COST_PARAMS = """
[fcp]
epsW=0.05
epsB=0.05
momW=0.9
momB=0.9
wc=0
[fcy]
epsW=0.05
epsB=0.05
momW=0.9
momB=0.9
wc=0
[xent]
coeff=0.7
[xraw]
coeff=0.3
[bce]
coeff=0.5
posWeight=2
[braw]
coeff=0.2
posWeight=0.5
[dce]
coeff=0.4
posWeight=1.5
[draw]
coeff=0.1
"""


def _cost_batch(rng, n):
    dist = rng.uniform(0, 1, (n, 7))
    dist[rng.uniform(size=dist.shape) < 0.4] = 0  # many zero targets
    dist /= np.maximum(dist.sum(axis=1, keepdims=True), 1e-9)
    bits = (rng.uniform(size=(n, 7)) < 0.4).astype(np.float64)
    # raw outputs in (0, 1) with edge values: exact 0.5 (decision boundary), ties for the
    # maximum; exact 0 (safelog's -50 branch) only where the target is 0, so the gradients stay finite
    raw = rng.uniform(0.05, 0.95, (n, 7))
    raw[:, 2] = 0.5
    raw[:, 4] = raw[:, 5] = 0.97
    raw[0, 6] = 0.0
    dist[0, 6] = 0.0
    bits[0, 6] = 0.0
    return [rng.standard_normal((n, 11)).astype(np.float32), dist.astype(np.float32), bits.astype(np.float32),
            raw.astype(np.float32)]


@cuda
@pytest.mark.parametrize("n", [1, 8, 45])
def test_costs_forward_backward(n):
    rng = np.random.default_rng()
    cpu, gpu = _twins(COST_LAYERS, COST_PARAMS, {0: 11, 1: 7, 2: 7, 3: 7})
    _check_pass(cpu, gpu, _cost_batch(rng, n))


@cuda
def test_costs_training():
    rng = np.random.default_rng()
    cpu, gpu = _twins(COST_LAYERS, COST_PARAMS, {0: 11, 1: 7, 2: 7, 3: 7})
    _check_training(cpu, gpu, [_cost_batch(rng, 16) for _ in range(4)])


# cost.bce/dce fused with the logistic that feeds only them (Layer::fuses_with): through
# neuron=logistic on fc (the cost gives dCost/d(pre-activation)) and through a neuron layer
FUSED_BCE_LAYERS = """
[data]
type=data
dataIdx=0
[bits]
type=data
dataIdx=1
[fcy]
type=fc
inputs=data
outputs=7
initW=3
neuron=logistic
[lin]
type=fc
inputs=data
outputs=7
initW=3
[sig]
type=neuron
inputs=lin
neuron=logistic
[bce]
type=cost.bce
inputs=bits,fcy
[dce]
type=cost.dce
inputs=bits,sig
"""
FUSED_BCE_PARAMS = """
[fcy]
epsW=0.01
epsB=0.01
momW=0.9
momB=0.9
wc=0
[lin]
epsW=0.01
epsB=0.01
momW=0.9
momB=0.9
wc=0
[bce]
coeff=0.5
posWeight=2
[dce]
coeff=0.8
"""


def _fused_bce_batch(rng, n):
    # inputs of size ~3 x initW 3 over 11 values: many logits past 17, where y rounds to 1
    return [(rng.standard_normal((n, 11)) * 3).astype(np.float32),
            (rng.uniform(size=(n, 7)) < 0.4).astype(np.float32)]


@cuda
@pytest.mark.parametrize("n", [1, 9])
def test_bce_dce_fused_with_logistic(n):
    rng = np.random.default_rng()
    cpu, gpu = _twins(FUSED_BCE_LAYERS, FUSED_BCE_PARAMS, {0: 11, 1: 7})
    _check_pass(cpu, gpu, _fused_bce_batch(rng, n))
    _check_training(cpu, gpu, [_fused_bce_batch(rng, n) for _ in range(3)])


@cuda
@pytest.mark.parametrize("first", ["cpu", "cuda"])
def test_backward_after_moving_the_net_needs_a_new_forward(first):
    # the last forward pass's buffers stay on the backend it ran on
    rng = np.random.default_rng()
    net = ccn.Net("layers.ini", "params.ini", {0: 11, 1: 7}, layers_text=FUSED_BCE_LAYERS,
                  params_text=FUSED_BCE_PARAMS, device=first)
    net.forward(_fused_bce_batch(rng, 4), train=True)
    net.to("cpu" if first == "cuda" else "cuda")
    with pytest.raises(ccn.InputError, match="forward"):
        net.backward()
    net.forward(_fused_bce_batch(rng, 4), train=True)
    net.backward()


LOGREG_LAYERS = """
[data]
type=data
dataIdx=0
[labels]
type=data
dataIdx=1
[fc]
type=fc
inputs=data
outputs=5
[probs]
type=softmax
inputs=fc
[logprob]
type=cost.logreg
inputs=labels,probs
"""
LOGREG_PARAMS = "[fc]\nepsW=0.01\nepsB=0.01\nmomW=0.9\nmomB=0.9\nwc=0\n[logprob]\ncoeff=1\n"


@cuda
@pytest.mark.parametrize("fused", [True, False])
def test_logreg_nan_is_a_nan_cost_and_a_bad_label_an_error(fused):
    # a diverged run shows as a NaN cost on both backends (the trainer's check names the
    # layer), not as a bad label (the fused kernel) or a finite 87.5 (fmaxf dropping the NaN)
    layers = LOGREG_LAYERS + ("" if fused else "[sq]\ntype=cost.sum2\ninputs=probs\n")
    params = LOGREG_PARAMS + ("" if fused else "[sq]\ncoeff=0\n")
    rng = np.random.default_rng()
    cpu, gpu = _twins(layers, params, {0: 6, 1: 1})
    data = [rng.standard_normal((5, 6)).astype(np.float32), rng.integers(0, 5, (5, 1)).astype(np.float32)]
    for net in (cpu, gpu):
        w = net.get("fc.weights[0]")
        w[0, 0] = np.nan
        net.set("fc.weights[0]", w)
        net.forward(data, train=True)
        values = [c for c in net.costs() if c["layer"] == "logprob"][0]["values"]
        assert np.isnan(values[0]), (net.device, values)
    bad = [data[0], np.array([[0], [1], [7], [2], [3]], np.float32)]
    for net in (cpu, gpu):
        with pytest.raises(ccn.InputError, match="not a class index"):
            net.forward(bad, train=True)


# ---- image operations: blur, crop, resize, href, nailbed, rgb2yuv, rgb2lab, rscale ----------
IMG_LAYERS = """
[data]
type=data
dataIdx=0
[blur]
type=blur
inputs=data
channels=3
filterSize=5
stdev=1.3
[blur9]
type=blur
inputs=data
channels=3
filterSize=9
stdev=2
[crop]
type=crop
inputs=data
channels=3
startX=1
startY=2
sizeX=6
[shrink]
type=resize
inputs=data
channels=3
scale=1.3
[grow]
type=resize
inputs=data
channels=3
scale=0.7
[href]
type=href
inputs=data
channels=3
[nail]
type=nailbed
inputs=data
channels=3
stride=2
[nail3]
type=nailbed
inputs=data
channels=3
stride=3
[yuv]
type=rgb2yuv
inputs=data
[lab]
type=rgb2lab
inputs=data
center=1
[rs]
type=rscale
inputs=data
channels=3
maxScale=1.5
tgtSize=7
[fc]
type=fc
inputs=rs
outputs=3
initW=0.1
[c]
type=cost.sum2
inputs=fc
"""
IMG_PARAMS = """
[fc]
epsW=0.01
epsB=0.01
momW=0.9
momB=0.9
wc=0
[c]
coeff=0.1
"""
IMG_OUT = ["blur", "blur9", "crop", "shrink", "grow", "href", "nail", "nail3", "yuv", "lab", "rs"]


def _rgb(rng, n):
    return [rng.uniform(0, 1, (n, 3 * 81)).astype(np.float32)]  # rgb2lab expects RGB in [0, 1]


@cuda
@pytest.mark.parametrize("n,train", [(1, True), (6, True), (13, False)])
def test_image_ops_forward_backward(n, train):
    rng = np.random.default_rng()
    cpu, gpu = _twins(IMG_LAYERS, IMG_PARAMS, {0: (3, 9, 9)})
    for step in range(6):  # rscale draws its scale and crop from the step: several draws
        cpu._net.step = gpu._net.step = step
        _check_pass(cpu, gpu, _rgb(rng, n), _seeds(rng, cpu, IMG_OUT, n), train=train)


@cuda
def test_image_ops_training():
    rng = np.random.default_rng()
    cpu, gpu = _twins(IMG_LAYERS, IMG_PARAMS, {0: (3, 9, 9)})
    _check_training(cpu, gpu, [_rgb(rng, 8) for _ in range(6)])


# ---- weights a layer shares with itself (cuda-convnet2's weightSource=,conv7,conv7) ---------
SELF_LAYERS = """
[data]
type=data
dataIdx=0
[labels]
type=data
dataIdx=1
[c1]
type=conv
inputs=data
channels=3
filters=16
filterSize=3
padding=1
[c2]
type=conv
inputs=data
channels=3
filters=16
filterSize=3
padding=1
neuron=tanh
[cself]
type=conv
inputs=c1,c2,c1
channels=16,16,16
filters=16,16,16
filterSize=3,3,3
padding=1,1,1
weightSource=,cself,cself[0]
neuron=relu
[lself]
type=local
inputs=cself,c2
channels=16,16
filters=8,8
filterSize=3,3
padding=1,1
weightSource=,lself
[fself]
type=fc
inputs=lself,lself
outputs=10
weightSource=,fself[0]
[probs]
type=softmax
inputs=fself
[logprob]
type=cost.logreg
inputs=labels,probs
"""
SELF_PARAMS = "".join(f"[{n}]\nepsW=0.01\nepsB=0.01\nmomW=0.9\nmomB=0.9\nwc=0.0005\n"
                      for n in ("c1", "c2", "cself", "lself", "fself"))


@cuda
@pytest.mark.parametrize("n", [1, 13])
def test_self_shared_weights_forward_backward_and_training(n):
    # every input's gradient summed into the one matrix, and one update of it, on both backends
    rng = np.random.default_rng()
    cpu, gpu = _twins(SELF_LAYERS, SELF_PARAMS, {0: (3, 6, 6), 1: 1})
    assert [p.name for p in cpu.params if p.layer == "cself" and not p.is_bias] == ["cself.weights[0]"]
    data = [rng.standard_normal((n, 3 * 36)).astype(np.float32), rng.integers(0, 10, (n, 1)).astype(np.float32)]
    _check_pass(cpu, gpu, data)
    batches = [[rng.standard_normal((n, 3 * 36)).astype(np.float32), rng.integers(0, 10, (n, 1)).astype(np.float32)]
               for _ in range(4)]
    _check_training(cpu, gpu, batches)


SKIP_LAYERS = """
[data]
type=data
dataIdx=0
[labels]
type=data
dataIdx=1
[conv]
type=conv
inputs=data
channels=3
filters=16
filterSize=3
padding=1
initW=0.1
neuron=relu
[fc]
type=fc
inputs=conv
outputs=5
initW=0.1
[probs]
type=softmax
inputs=fc
[logprob]
type=cost.logreg
inputs=labels,probs
"""
SKIP_PARAMS = "[conv]\nepsW=0\nepsB=0\nmomW=0.9\nmomB=0.9\nwc=0.001\n[fc]\nepsW=0.05\nepsB=0.05\nmomW=0.9\nmomB=0.9\n" \
              "wc=0.001\n[logprob]\ncoeff=1\n"


@cuda
def test_skip_frozen_trains_as_on_the_cpu():
    # a frozen first layer is left out of the backward pass on both backends (Net.skip_frozen)
    rng = np.random.default_rng()
    cpu, gpu = _twins(SKIP_LAYERS, SKIP_PARAMS, {0: (3, 6, 6), 1: 1})
    for net in (cpu, gpu):
        net._net.set_data_grads(False)
        net.skip_frozen(True)
    w0 = cpu.get("conv.weights[0]")
    batches = [[rng.standard_normal((7, 108)).astype(np.float32), rng.integers(0, 5, (7, 1)).astype(np.float32)]
               for _ in range(3)]
    _check_training(cpu, gpu, batches)
    np.testing.assert_array_equal(gpu.get("conv.weights[0]"), w0)
