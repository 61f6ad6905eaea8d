"""core/simd.h's instruction-set paths and the net's lazy gradient zeroing change no bit.

simd_paths_helper.py runs small random nets (odd sizes; fan-out, a layer read twice by eltsum,
relu fused into max pool, rnorm, cmrnorm, neurons, seeded backward) and saves every output and
gradient; it runs in a subprocess because the path (CCN_SIMD) and CCN_GRAD_ZERO are read once
per process. Every path must give bitwise the portable path's results, and the lazy zeroing
bitwise what zeroing every gradient buffer first gives."""

import os
import subprocess
import sys

import numpy as np
import pytest

import ccn

HELPER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "simd_paths_helper.py")


def run_helper(tmp_path, tag, **env):
    out = tmp_path / f"{tag}.npz"
    e = dict(os.environ, **env)
    r = subprocess.run([sys.executable, HELPER, str(out)], env=e, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip().splitlines()[-1], np.load(out)


def assert_bitwise(a, b, what):
    assert sorted(a.files) == sorted(b.files)
    bad = [k for k in a.files if a[k].shape != b[k].shape or not np.array_equal(a[k].view(np.uint32), b[k].view(np.uint32))]
    assert not bad, f"{what}: {len(bad)} arrays differ, e.g. {bad[:5]}"


@pytest.fixture(scope="module")
def portable(tmp_path_factory):
    path, res = run_helper(tmp_path_factory.mktemp("simd"), "portable", CCN_SIMD="portable")
    assert path == "portable"
    return res


@pytest.mark.parametrize("simd", ["avx2", "avx512"])
def test_path_bitwise_equal_to_portable(simd, portable, tmp_path):
    path, res = run_helper(tmp_path, simd, CCN_SIMD=simd)
    if path != simd:
        pytest.skip(f"this CPU has no {simd} (the helper ran {path})")
    assert_bitwise(portable, res, f"CCN_SIMD={simd} against portable")


def test_default_path_is_the_widest_available(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "CCN_SIMD"}
    r = subprocess.run([sys.executable, "-c", "from ccn._native import core; print(core.simd_path())"], env=env,
                       capture_output=True, text=True, timeout=120,
                       cwd=os.path.dirname(os.path.dirname(os.path.dirname(HELPER))))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() in ("portable", "avx2", "avx512")


def test_unknown_path_falls_back(tmp_path):
    path, _ = run_helper(tmp_path, "bogus", CCN_SIMD="sse9")
    assert path in ("portable", "avx2", "avx512")


def test_lazy_zeroing_bitwise_equal_to_zeroing_first(portable, tmp_path):
    path, eager = run_helper(tmp_path, "eager", CCN_SIMD="portable", CCN_GRAD_ZERO="eager")
    assert path == "portable"
    assert_bitwise(portable, eager, "lazy against eager gradient zeroing")


def test_lazy_zeroing_with_gemm_convs_bitwise_equal(tmp_path):
    """The helper's "convs" net with every conv on the GEMM path (the fold assigning); the
    default run above has its stride-1 convs on the direct kernels where the CPU has AVX-512."""
    _, lazy = run_helper(tmp_path, "gemm-lazy", CCN_SIMD="portable", CCN_CONV_KERNEL="gemm")
    _, eager = run_helper(tmp_path, "gemm-eager", CCN_SIMD="portable", CCN_CONV_KERNEL="gemm", CCN_GRAD_ZERO="eager")
    assert_bitwise(lazy, eager, "lazy against eager gradient zeroing, GEMM convs")


FANOUT = """
[data]
type=data
dataIdx=0

[pool]
type=pool
pool=max
inputs=data
channels=2
sizeX=3
stride=2
outputsX=0
neuron=relu

[a]
type=neuron
inputs=pool
neuron=tanh[1,1]

[b]
type=rnorm
inputs=pool
channels=2
size=3
scale=0.1
pow=0.75

[s]
type=eltsum
inputs=a,b,a
"""


def test_fanout_gradient_is_the_sum_of_the_consumers():
    """pool feeds a (twice through s) and b; its output gradient must be the sum of what each
    consumer passes back, whichever of them writes first."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 2 * 9 * 9)).astype(np.float32)
    net = ccn.Net("<fanout>", None, {0: (2, 9, 9)}, layers_text=FANOUT)
    net._net.set_data_grads(True)  # no weights: without data gradients nothing needs one
    net.forward([x], train=True)
    g = rng.standard_normal(net.output("s").shape).astype(np.float32)
    net.backward({"s": g})
    ga = net.output_grad("a")
    gb = net.output_grad("b")
    np.testing.assert_array_equal(ga, 2 * g)  # s = a + b + a
    np.testing.assert_array_equal(gb, g)
    # the consumers' input gradients, each alone, through seeds at a and b
    net.backward({"a": ga, "b": np.zeros_like(gb)})
    from_a = net.output_grad("pool").copy()
    net.backward({"a": np.zeros_like(ga), "b": gb})
    from_b = net.output_grad("pool").copy()
    net.backward({"s": g})
    np.testing.assert_allclose(net.output_grad("pool"), from_a + from_b, rtol=1e-6, atol=1e-7)
    # a second backward gives the same (no stale values from the first)
    first = net.output_grad("pool").copy()
    net.backward({"s": g})
    np.testing.assert_array_equal(net.output_grad("pool"), first)


def test_memory_estimate_skips_fused_and_in_place_pre_activations():
    text = FANOUT + """
[fc]
type=fc
inputs=s
outputs=4
neuron=relu

[t]
type=neuron
inputs=fc
neuron=tanh[1,1]

[avg]
type=pool
pool=avg
inputs=data
channels=2
sizeX=2
stride=2
outputsX=0
neuron=logistic

[mx]
type=pool
pool=maxabs
inputs=data
channels=2
sizeX=2
stride=2
outputsX=0
neuron=relu
"""
    net = ccn.Net("<mem>", None, {0: (2, 9, 9)}, layers_text=text)
    keeps = {l.name: l.keeps_pre for l in net.layers}
    assert keeps["pool"] is False  # relu fused into the max pool
    assert keeps["fc"] is False    # fc ignores its output: relu in place
    assert keeps["avg"] is False   # avg pool ignores its output: logistic in place
    assert keeps["mx"] is True     # maxabs reads its pre-activation output
    from ccn.net import memory_estimate
    acts = sum(l.outputs for l in net.layers)
    params = sum(p.shape[0] * p.shape[1] for p in net.params)
    mx = net.layer("mx").outputs
    assert memory_estimate(net, 5) == 4 * (5 * (2 * acts + mx) + 3 * params)
    # a GPU fuses no neuron into its layer: the max pool keeps its pre-activation there
    dev = {l.name: l.device_keeps_pre for l in net.layers}
    assert dev["pool"] is True and dev["mx"] is True and dev["fc"] is False and dev["avg"] is False
    pool = net.layer("pool").outputs
    assert memory_estimate(net, 5, device=True) == 4 * (5 * (2 * acts + mx + pool) + 3 * params)


def test_gpu_memory_check_compares_the_step_with_the_gpus_free_memory(monkeypatch):
    """check_memory on a GPU net: activations, gradients (for a data layer: the two staging
    slots), pre-activations as the GPU keeps them and the conv scratch must fit in the GPU's
    free memory (the parameters are already there); a step that does not is refused naming
    the GPU."""
    import ccn.net as cnet
    from ccn.errors import InputError

    net = ccn.Net("<gpu-mem>", None, {0: (2, 9, 9)}, layers_text=FANOUT)
    monkeypatch.setattr(type(net), "device", property(lambda self: "cuda:1"))
    asked = []
    need = cnet.memory_estimate(net, 64, device=True) - 12 * sum(p.shape[0] * p.shape[1] for p in net.params)
    assert cnet._gpu_conv_scratch_floor(net, 64) == 0  # no conv layer
    monkeypatch.setattr(cnet, "_gpu_free_bytes", lambda gpu: asked.append(gpu) or need)
    cnet.check_memory(net, 64, "--mini")  # exactly fits
    assert asked == [1]
    monkeypatch.setattr(cnet, "_gpu_free_bytes", lambda gpu: need - 1)
    with pytest.raises(InputError, match=r"--mini: a step of <gpu-mem> on 64 cases needs at least .* GPU 1"):
        cnet.check_memory(net, 64, "--mini")
    monkeypatch.setattr(cnet, "_gpu_free_bytes", lambda gpu: None)  # unknown: no check
    cnet.check_memory(net, 64, "--mini")


def test_gpu_conv_scratch_floor_follows_conv_chunk_cases(monkeypatch):
    """A conv layer's backward scratch on the GPU: Nc cases (as many as fit in the unfold
    budget, at least one) of K*MM unfolded values and F*MM transposed gradients."""
    import ccn.net as cnet

    text = """
[data]
type=data
dataIdx=0
[c1]
type=conv
inputs=data
channels=3
filters=8
filterSize=5
padding=2
[c2]
type=conv
inputs=c1
channels=8
filters=4
filterSize=3
stride=2
[loc]
type=local
inputs=c2
channels=4
filters=2
filterSize=3
"""
    net = ccn.Net("<scratch>", None, {0: (3, 11, 11)}, layers_text=text)
    per_case = 4 * (3 * 25 * 121 + 8 * 121)  # c1: K = 75, MM = 121, F = 8 (c2 is smaller; local uses none)
    monkeypatch.delenv("CCN_UNFOLD_BYTES", raising=False)
    assert cnet._gpu_conv_scratch_floor(net, 50) == 50 * per_case
    monkeypatch.setenv("CCN_UNFOLD_BYTES", f"{3 * per_case + 5}xyz")  # read as atoll does: 3 cases fit
    assert cnet._gpu_conv_scratch_floor(net, 50) == 3 * per_case
    monkeypatch.setenv("CCN_UNFOLD_BYTES", "7")  # not even one case fits: one at a time
    assert cnet._gpu_conv_scratch_floor(net, 50) == per_case
    monkeypatch.setenv("CCN_UNFOLD_BYTES", "junk")  # not a number: the default budget
    assert cnet._gpu_conv_scratch_floor(net, 50) == 50 * per_case
