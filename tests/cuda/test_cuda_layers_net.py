"""The image layers hooked up to their CUDA launchers (conv with groups and randSparse, pool
max/avg, rnorm, cmrnorm (plain and blocked), cnorm, eltsum, eltmax, concat, dropout,
dropout2, cost.sum2): one net on both backends, forward, backward and training steps
compared layer by layer. The kernels themselves are checked in test_cuda_kernels.py."""

import numpy as np
import pytest

import ccn
from cudaops import close

LAYERS = """
[data]
type=data
dataIdx=0
[conv1]
type=conv
inputs=data
channels=4
filters=4
groups=2
filterSize=3
padding=1
stride=2
initW=0.2
initB=0.1
neuron=relu
[conv2]
type=conv
inputs=data
channels=4
filters=1
groups=4
randSparse=1
filterChannels=2
filterSize=4
padding=1
stride=2
sharedBiases=0
initW=0.2
initB=0.1
[cat]
type=concat
inputs=conv1,conv2
[pmax]
type=pool
inputs=cat
channels=12
pool=max
sizeX=3
stride=2
start=-1
[pavg]
type=pool
inputs=cat
channels=12
pool=avg
sizeX=3
stride=2
start=-1
[rn]
type=rnorm
inputs=pmax
channels=12
size=3
[cmr]
type=cmrnorm
inputs=pavg
channels=12
size=4
[cmrb]
type=cmrnorm
inputs=pavg
channels=12
size=3
blocked=1
[cn]
type=cnorm
inputs=pmax
channels=12
size=2
[sum]
type=eltsum
inputs=rn,cmr,cn
coeffs=1,-0.5,2
[mx]
type=eltmax
inputs=sum,cmrb
[drop]
type=dropout
inputs=mx
[drop2]
type=dropout2
inputs=sum
[fc]
type=fc
inputs=drop,drop2
outputs=5
initW=0.05
[sq]
type=cost.sum2
inputs=fc
"""

PARAMS = """
[conv1]
epsW=0.01
epsB=0.01
momW=0.9
momB=0.9
wc=0.001
[conv2]
epsW=0.01
epsB=0.01
momW=0.9
momB=0.9
wc=0.0
[rn]
scale=0.01
pow=0.75
[cmr]
scale=0.02
pow=0.75
minDiv=2
[cmrb]
scale=0.03
pow=0.5
[cn]
scale=0.05
pow=0.75
[drop]
keep=0.6
[drop2]
keep=0.7
[fc]
epsW=0.01,0.01
epsB=0.01
momW=0.9,0.9
momB=0.9
wc=0,0
[sq]
coeff=0.01
"""

DIMS = {0: (4, 11, 11)}
LAYER_NAMES = ("conv1", "conv2", "cat", "pmax", "pavg", "rn", "cmr", "cmrb", "cn", "sum", "mx", "drop", "drop2", "fc")


def make(device, seed=9):
    return ccn.Net("layers.ini", "params.ini", DIMS, seed=seed, layers_text=LAYERS, params_text=PARAMS, device=device)


def twins():
    cpu, gpu = make("cpu"), make("cuda")
    for p in cpu.params:  # the same starting weights on both
        gpu.set(p.name, cpu.get(p.name))
    return cpu, gpu


def batch(rng, n):
    return [rng.standard_normal((n, 4 * 11 * 11)).astype(np.float32)]


@pytest.mark.cuda
@pytest.mark.parametrize("n,train", [(1, True), (7, True), (33, True), (5, False)])
def test_forward_backward_match_cpu(n, train):
    rng = np.random.default_rng()
    cpu, gpu = twins()
    data = batch(rng, n)
    for net in (cpu, gpu):
        net.forward(data, train=train)
        net.backward()
    for layer in LAYER_NAMES:
        close(gpu.output(layer), cpu.output(layer), rtol=1e-4, what=f"output of layer '{layer}' (n={n}, train={train}), GPU vs CPU")
        close(gpu.output_grad(layer), cpu.output_grad(layer), rtol=1e-3,
              what=f"gradient of layer '{layer}' (n={n}, train={train}), GPU vs CPU")
    close(gpu.costs()[0]["values"], cpu.costs()[0]["values"], rtol=1e-5, what="cost values, GPU vs CPU")
    for p in cpu.params:
        close(gpu.get(p.name, "grad"), cpu.get(p.name, "grad"), rtol=1e-3, what=f"gradient of parameter {p.name}, GPU vs CPU")


@pytest.mark.cuda
def test_dropout_mask_follows_case_offset():
    """Data parallel: with case_offset = k, a rank's mask is rows k.. of the whole minibatch's."""
    rng = np.random.default_rng()
    whole, part = make("cuda"), make("cuda")
    for p in whole.params:
        part.set(p.name, whole.get(p.name))
    data = batch(rng, 9)
    whole.forward(data, train=True)
    part._net.case_offset = 4
    part.forward([data[0][4:]], train=True)
    for layer in ("drop", "drop2"):
        close(part.output(layer), whole.output(layer)[4:], rtol=1e-5, what=f"layer '{layer}' at case_offset 4 vs rows 4.. of the whole")
    cpu = make("cpu")
    for p in whole.params:
        cpu.set(p.name, whole.get(p.name))
    cpu._net.case_offset = 4
    cpu.forward([data[0][4:]], train=True)
    close(part.output("drop"), cpu.output("drop"), rtol=1e-4, what="layer 'drop' at case_offset 4, GPU vs CPU")


@pytest.mark.cuda
def test_ten_training_steps_agree():
    rng = np.random.default_rng()
    cpu, gpu = twins()
    for step in range(10):
        data = batch(rng, 16)
        c1 = cpu.train_step(data, step / 10, 16)
        c2 = gpu.train_step(data, step / 10, 16)
        close(c2[0]["values"], c1[0]["values"], rtol=1e-3, atol=1e-4, what=f"cost values of step {step}, GPU vs CPU")
    for p in cpu.params:
        close(gpu.get(p.name), cpu.get(p.name), rtol=1e-3, what=f"parameter {p.name} after 10 steps, GPU vs CPU")
