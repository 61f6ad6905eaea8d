"""Whole nets on the GPU against the same nets on the CPU: forward, backward, 20 SGD steps,
and parameters moving CPU -> GPU -> CPU. Uses the layer types that have CUDA code in this
branch (fc with neuron=, neuron, softmax, cost.logreg)."""

import numpy as np
import pytest

import ccn
from ccn._native import core
from ccn.errors import CcnRuntimeError
from cudaops import close

LAYERS = """
[data]
type=data
dataIdx=0
[labels]
type=data
dataIdx=1
[fc1]
type=fc
inputs=data
outputs=37
initW=0.1
initB=0.05
neuron=tanh[1.2,0.8]
[fc1b]
type=fc
inputs=data
outputs=11
initW=0.1
neuron=relu
[act]
type=neuron
inputs=fc1b
neuron=logistic
[fc2]
type=fc
inputs=fc1,act
outputs=10
initW=0.1
[probs]
type=softmax
inputs=fc2
[logprob]
type=cost.logreg
inputs=labels,probs
topk=3
"""

PARAMS = """
[fc1]
epsW=0.05
epsB=0.02
momW=0.9
momB=0.9
wc=0.001
wball=2.0
[fc1b]
epsW=0.03
epsB=0.02
momW=0.5
momB=0.5
wc=0.0005
[fc2]
epsW=0.05,0.04
epsB=0.02
momW=0.9,0.8
momB=0.9
wc=0.001,0.0
[logprob]
coeff=1
"""

DIMS = {0: 23, 1: 1}


def make(device="cpu", seed=5):
    return ccn.Net("layers.ini", "params.ini", DIMS, seed=seed, layers_text=LAYERS, params_text=PARAMS, device=device)


def batch(rng, n):
    return [rng.standard_normal((n, 23)).astype(np.float32), rng.integers(0, 10, (n, 1)).astype(np.float32)]


def costs(c):
    return np.array(c[0]["values"])


@pytest.mark.cuda
@pytest.mark.parametrize("n", [1, 7, 64])
def test_forward_backward_match_cpu(n):
    rng = np.random.default_rng()
    cpu, gpu = make("cpu"), make("cuda")
    assert gpu.device == "cuda:0"
    data = batch(rng, n)
    for net in (cpu, gpu):
        net.forward(data, train=True)
        net.backward()
    for layer in ("fc1", "act", "fc2", "probs"):
        close(gpu.output(layer), cpu.output(layer), rtol=1e-5, what=f"output of layer '{layer}' (n={n}), GPU vs CPU")
        close(gpu.output_grad(layer), cpu.output_grad(layer), rtol=1e-4, what=f"gradient of layer '{layer}' (n={n}), GPU vs CPU")
    close(costs(gpu.costs()), costs(cpu.costs()), rtol=1e-5, what="cost values, GPU vs CPU")
    for p in cpu.params:
        close(gpu.get(p.name, "grad"), cpu.get(p.name, "grad"), rtol=1e-4, what=f"gradient of parameter {p.name}, GPU vs CPU")


@pytest.mark.cuda
def test_twenty_training_steps_agree():
    rng = np.random.default_rng()
    cpu, gpu = make("cpu"), make("cuda")
    for step in range(20):
        data = batch(rng, 32)
        c1 = cpu.train_step(data, step / 20, 32)
        c2 = gpu.train_step(data, step / 20, 32)
        close(costs(c2), costs(c1), rtol=1e-4, atol=1e-3, what=f"cost values of step {step}, GPU vs CPU")
    for p in cpu.params:
        close(gpu.get(p.name), cpu.get(p.name), rtol=1e-4, what=f"parameter {p.name} after 20 steps, GPU vs CPU")
        close(gpu.get(p.name, "inc"), cpu.get(p.name, "inc"), rtol=1e-3, atol=1e-6, what=f"momentum of {p.name} after 20 steps")


@pytest.mark.cuda
def test_prefetch_gives_the_same_step():
    rng = np.random.default_rng()
    a, b = make("cuda"), make("cuda")
    d1, d2 = batch(rng, 16), batch(rng, 16)
    a.train_step(d1, 0.0, 16)
    a.train_step(d2, 0.0, 16)
    b.prefetch(d1)
    b.train_step(None, 0.0, 16)
    b.prefetch(d2)
    c = b.train_step(None, 0.0, 16)
    close(costs(c), costs(a.costs()), rtol=1e-6, what="cost values with prefetch vs without")
    for p in a.params:
        close(b.get(p.name), a.get(p.name), rtol=1e-6, what=f"parameter {p.name} with prefetch vs without")


@pytest.mark.cuda
def test_parameters_move_cpu_gpu_cpu():
    rng = np.random.default_rng()
    net = make("cpu")
    before = {p.name: net.get(p.name) for p in net.params}
    net.to("cuda")
    for k, v in before.items():
        assert np.array_equal(net.get(k), v)  # exact: a copy, no arithmetic
    # set() on the GPU reaches the device copy
    w = rng.standard_normal(before["fc2.weights[1]"].shape).astype(np.float32)
    net.set("fc2.weights[1]", w)
    net.train_step(batch(rng, 8), 0.0, 8)
    on_gpu = {p.name: net.get(p.name) for p in net.params}
    assert not np.array_equal(on_gpu["fc1.weights[0]"], before["fc1.weights[0]"])
    net.to("cpu")
    assert net.device == "cpu"
    for k, v in on_gpu.items():
        assert np.array_equal(net.get(k), v)
    # and training continues on the CPU from the same state as a GPU twin
    twin = make("cuda")
    for p in net.params:
        twin.set(p.name, net.get(p.name))
        twin.set(p.name, net.get(p.name, "inc"), "inc")
    data = batch(rng, 8)
    close(costs(net.train_step(data, 0.1, 8)), costs(twin.train_step(data, 0.1, 8)), rtol=1e-4)


@pytest.mark.cuda
def test_bad_label_is_an_input_error():
    net = make("cuda")
    data = batch(np.random.default_rng(), 4)
    data[1][2, 0] = 10
    with pytest.raises(ccn.errors.InputError, match="case 2"):
        net.forward(data, train=False)


@pytest.mark.cuda
def test_missing_gpu_index_is_an_input_error():
    with pytest.raises(ccn.errors.InputError, match="does not exist"):
        make("cuda").to("cuda", 4096)


def test_cuda_without_gpu_is_a_clear_error():
    """Where no GPU is visible (CI), asking for one is a runtime error, not a crash."""
    if core.cuda_devices():
        pytest.skip("a GPU is visible")
    with pytest.raises(CcnRuntimeError, match="CUDA|GPU"):
        make("cuda")


def test_unknown_device_is_an_input_error():
    with pytest.raises(ccn.errors.InputError, match="unknown device"):
        make("tpu")


CONV_NET = """
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
filterSize=5
padding=2
initW=0.05
neuron=relu
[pool]
type=pool
pool=max
inputs=conv
channels=16
sizeX=3
stride=2
neuron=relu
[fc]
type=fc
inputs=pool
outputs=10
initW=0.05
[probs]
type=softmax
inputs=fc
[logprob]
type=cost.logreg
inputs=labels,probs
"""


@pytest.mark.cuda
def test_gpu_memory_estimate_is_a_floor_of_what_a_step_holds():
    """ccn.net.check_memory refuses a GPU step by memory_estimate(device=True) (+ staging and
    the conv scratch): after a real step the net holds at least that much on the GPU."""
    from ccn.net import memory_estimate

    params = ("[conv]\nepsW=0.01\nepsB=0.01\nmomW=0.9\nmomB=0.9\nwc=0\n"
              "[fc]\nepsW=0.01\nepsB=0.01\nmomW=0.9\nmomB=0.9\nwc=0\n[logprob]\ncoeff=1\n")
    net = ccn.Net("<mem>", "<mem-params>", {0: (3, 17, 17), 1: 1}, seed=1, layers_text=CONV_NET,
                  params_text=params, device="cuda")
    rng = np.random.default_rng()
    n = 67
    x = rng.standard_normal((n, 3 * 17 * 17)).astype(np.float32)
    y = rng.integers(0, 10, (n, 1)).astype(np.float32)
    net.train_step([x, y], 0.0, n)
    net.synchronize()
    assert net.layer("pool").device_keeps_pre  # the GPU keeps the fused max pool's pre-activation
    assert net._net.device_bytes >= memory_estimate(net, n, device=True)
