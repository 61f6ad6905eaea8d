"""Runs small random nets forward and backward and saves every output, output gradient and
parameter gradient to an .npz, for tests/layers/test_simd_paths.py, which runs this script in a
subprocess once per CCN_SIMD path (the path is chosen once per process) and once with
CCN_GRAD_ZERO=eager, and compares the files bit for bit.

    python simd_paths_helper.py OUT.npz

Prints the SIMD path in use. Sizes are odd on purpose (vector remainders, clipped windows)."""

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import ccn  # noqa: E402
from ccn._native import core  # noqa: E402

CASES = 3  # minibatch; odd


def nets():
    """(name, layer text, params text, data dims) with fan-out, a layer read twice, fused relu."""
    rng = np.random.default_rng(1234)
    out = []
    for k in range(4):
        C = int(rng.choice([3, 5, 7]))
        # max+relu with sizeX 3 on wide rows (the fused three-pass backward), avg on short rows
        # with a negative start, other sizes and strides, maxabs
        S = [27, 9, 25, 13][k]
        size = [3, 3, 4, 2][k]
        stride = [2, 1, 3, 2][k]
        start = [0, -1, 0, -1][k]
        nsize = int(rng.choice([1, 2, 3, 5])) if S >= 5 else 1
        cmsize = int(rng.integers(1, C + 1))
        blocked = int(rng.integers(0, 2))
        op = ["max", "avg", "max", "maxabs"][k]
        text = f"""
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
filters={C}
filterSize=3
padding=1
stride=1
sharedBiases=1
initW=0.3
{"neuron=relu" if k % 2 == 0 else ""}

[pool]
type=pool
pool={op}
inputs=conv
channels={C}
sizeX={size}
stride={stride}
start={start}
outputsX=0
neuron=relu

[rn]
type=rnorm
inputs=pool
channels={C}
size={nsize}
scale=0.05
pow=0.75

[cm]
type=cmrnorm
inputs=pool
channels={C}
size={cmsize}
blocked={blocked}
scale=0.05
pow={[0.75, 0.5, 1.0, 0.6][k]}

[act]
type=neuron
inputs=pool
neuron={["tanh[1.7,0.6]", "logistic", "relu", "abs"][k]}

[sum]
type=eltsum
inputs=rn,cm,act,rn
coeffs=1,0.5,2,-1

[pool2]
type=pool
pool=avg
inputs=sum
channels={C}
sizeX=3
stride=2
start=0
outputsX=0

[fc]
type=fc
inputs=pool2,sum
outputs=5
initW=0.1

[probs]
type=softmax
inputs=fc

[cost]
type=cost.logreg
inputs=labels,probs
"""
        params = """
[conv]
epsW=0.01
epsB=0.01
momW=0.9
momB=0.9
wc=0.0001

[fc]
epsW=0.01
epsB=0.01
momW=0.9
momB=0.9
wc=0.0001

[cost]
coeff=1
"""
        out.append((f"net{k}", text, params, {0: (3, S, S), 1: 1}))
    out.append(("convs", CONVS, CONV_PARAMS, {0: (3, 11, 11), 1: 1}))
    return out


# Convolutions as the first writers of their input gradients (Layer::bprop_assigns_din): stride 1
# (the direct kernels where the CPU has AVX-512, CCN_CONV_KERNEL=auto) and stride 2 (GEMM), plain
# groups, randSparse tables (a channel read by several groups, maybe by none), two inputs, and
# inputs that also feed other layers (c1 feeds r1, cs, r2, r3; r1 feeds cg, cd, cs).
CONVS = """
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
filters=4
filterSize=3
padding=1
stride=1
initW=0.3
neuron=relu

[r1]
type=rnorm
inputs=c1
channels=4
size=3
scale=0.05
pow=0.75

[r2]
type=neuron
inputs=c1
neuron=tanh[1.7,0.6]

[r3]
type=neuron
inputs=c1
neuron=logistic

[cg]
type=conv
inputs=r1
channels=4
filters=6
filterSize=3
padding=1
stride=2
groups=2
filterChannels=2
initW=0.3

[cd]
type=conv
inputs=r1
channels=4
filters=4
filterSize=3
padding=1
stride=1
groups=2
filterChannels=2
initW=0.3

[cs]
type=conv
inputs=r1,c1
channels=4,4
filters=4
filterSize=3,3
padding=1,1
stride=1
groups=2,2
randSparse=1,0
filterChannels=2,2
initW=0.3,0.3

[cg2]
type=conv
inputs=r2
channels=4
filters=4
filterSize=3
padding=0
stride=2
groups=4
randSparse=1
filterChannels=2
initW=0.3

[cd2]
type=conv
inputs=r3
channels=4
filters=8
filterSize=3
padding=1
stride=1
groups=4
randSparse=1
filterChannels=2
initW=0.3

[sum]
type=eltsum
inputs=cd,cs


[fc]
type=fc
inputs=sum,cg,cg2,cd2
outputs=5
initW=0.1

[probs]
type=softmax
inputs=fc

[cost]
type=cost.logreg
inputs=labels,probs
"""
CONV_PARAMS = "".join(f"\n[{c}]\nepsW=0.01\nepsB=0.01\nmomW=0.9\nmomB=0.9\nwc=0.0001\n"
                      for c in ("c1", "cg", "cd", "cs", "cg2", "cd2", "fc")) + "\n[cost]\ncoeff=1\n"


def main():
    res = {}
    for name, text, params, dims in nets():
        net = ccn.Net("<simd-layers>", "<simd-params>", dims, seed=7, layers_text=text, params_text=params)
        rng = np.random.default_rng(99)
        S = dims[0][1]
        x = rng.standard_normal((CASES, 3 * S * S)).astype(np.float32)
        x[:, ::5] = 0.0  # exact zeros and ties for max pooling and relu
        x[:, 1::7] = x[:, 3::7][:, : x[:, 1::7].shape[1]] if x[:, 3::7].shape[1] >= x[:, 1::7].shape[1] else x[:, 1::7]
        y = rng.integers(0, 5, (CASES, 1)).astype(np.float32)
        net._net.set_data_grads(True)
        for step in range(2):
            net.train_step([x, y], 0.0, CASES)
        net.forward([x, y], train=True)
        net.backward()
        for l in net.layers:
            res[f"{name}/out/{l.name}"] = np.array(net.output(l.name))
            res[f"{name}/dout/{l.name}"] = np.array(net.output_grad(l.name))
        for p in net.params:
            for w in ("w", "grad", "inc"):
                res[f"{name}/{w}/{p.name}"] = np.array(net.get(p.name, w))
        # seeds in the middle: the seeded layer's consumers are skipped, its inputs still get gradients
        seed = rng.standard_normal(net.output("sum").shape).astype(np.float32)
        net.backward({"sum": seed})
        for l in net.layers:
            res[f"{name}/seeded/{l.name}"] = np.array(net.output_grad(l.name))
    np.savez(sys.argv[1], **res)
    print(core.simd_path())


if __name__ == "__main__":
    main()
