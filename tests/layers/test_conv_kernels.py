"""type=conv's direct AVX-512 kernels (native/kernels/directconv.h) against a NumPy float64
reference, against the GEMM path, and by finite differences; and the kernel selection
(CCN_CONV_KERNEL = gemm | direct | auto, read once when the layer is set up).

Every test that needs the direct kernels asserts, through core.conv_kernel_counts(), that they
actually ran; they skip only when this CPU has no AVX-512F.
"""

import numpy as np
import pytest

import ccn
from ccn._native import core
from ccn.errors import ConfigError
from convref import add_bias, conv_ref, modules_x, windows
from layercheck import assert_close, check_layer

HAVE_DIRECT = "direct-avx512" in core.build_info()["conv_kernels"]
needs_direct = pytest.mark.skipif(not HAVE_DIRECT, reason="this CPU has no AVX-512F: only the GEMM conv kernel runs")

DATA = "[data]\ntype=data\ndataIdx=0\n"


def conv_text(**keys):
    return DATA + "[conv]\ntype=conv\ninputs=data\n" + "".join(f"{k}={v}\n" for k, v in keys.items())


def fresh_seed():
    return int(np.random.SeedSequence().entropy % 2**32)


def ref_grads(x, W, G, fs, pad, groups, F):
    """d sum(G * conv(x, W)) / dx and / dW in float64 (stride 1), from the definition: the
    output is linear in each, so the gradients are sums over windows (no finite differences)."""
    N, C, S, _ = x.shape
    M = modules_x(S, fs, pad, 1)
    Fg, cf = F // groups, C // groups
    p = windows(x, fs, pad, 1, M)  # n, c, my, mx, fy, fx
    G = G.reshape(N, F, M, M)
    dW = np.zeros_like(W)
    big = max(S + pad, M - 1 + fs)
    dxp = np.zeros((N, C, big, big))
    for g in range(groups):
        cs, fsl = slice(g * cf, (g + 1) * cf), slice(g * Fg, (g + 1) * Fg)
        dW[:, fsl] = np.einsum("ncabyx,nfab->cyxf", p[:, cs], G[:, fsl]).reshape(cf * fs * fs, Fg)
        w = W[:, fsl].reshape(cf, fs, fs, Fg)
        for fy in range(fs):
            for fx in range(fs):
                dxp[:, cs, fy:fy + M, fx:fx + M] += np.einsum("nfab,cf->ncab", G[:, fsl], w[:, fy, fx, :])
    return dxp[:, :, pad:pad + S, pad:pad + S], dW


def build(monkeypatch, kernel, text, dims, seed=0):
    monkeypatch.setenv("CCN_CONV_KERNEL", kernel)
    net = ccn.Net("<test-layers>", None, dims, seed=seed, layers_text=text)
    net._net.set_data_grads(True)
    return net


def run_fb(net, x, W, b, G):
    """Forward and backward on one net; returns (out, dx, dW, db) and the kernel counts of the passes."""
    n = x.shape[0]
    net.set("conv.weights[0]", W.astype(np.float32))
    net.set("conv.biases", b.astype(np.float32))
    core.reset_conv_kernel_counts()
    net.forward({0: x.reshape(n, -1).astype(np.float32)}, train=True)
    out = net.output("conv").copy()
    net._net.zero_param_grads()
    net.backward({"conv": G.astype(np.float32)})
    counts = core.conv_kernel_counts()
    return (out, net.output_grad("data").copy(), net.get("conv.weights[0]", "grad").copy(),
            net.get("conv.biases", "grad").copy()), counts


def random_geometry(rng):
    groups = int(rng.choice([1, 1, 2, 3]))
    cf = int(rng.choice([1, 3, 5, 17, 20]))
    fg = int(rng.choice([1, 7, 16, 17, 33, 40]))
    fs = int(rng.integers(1, 6))
    pad = int(rng.integers(0, fs + 1))
    size = int(rng.integers(max(1, fs - 2 * pad), 12))
    n = int(rng.choice([1, 7, 13]))
    return dict(groups=groups, cf=cf, fg=fg, fs=fs, pad=pad, size=size, n=n)


@needs_direct
@pytest.mark.parametrize("trial", range(8))
def test_direct_matches_float64_reference_and_gemm(trial, monkeypatch):
    seed = fresh_seed()
    rng = np.random.default_rng(seed)
    check_direct_case(random_geometry(rng), rng, seed, monkeypatch)


@needs_direct
@pytest.mark.parametrize("fg,groups,size", [(64, 1, 8), (70, 1, 13), (100, 2, 5)])
def test_direct_wide_filter_blocks(fg, groups, size, monkeypatch):
    """64+ filters (or, for dx, channels) per group: 4-zmm (64-channel) tiles with a 1- or 2-zmm remainder."""
    seed = fresh_seed()
    rng = np.random.default_rng(seed)
    g = dict(groups=groups, cf=66 if groups == 2 else int(rng.choice([3, 17, 66])), fg=fg, fs=int(rng.integers(1, 6)), pad=0, size=size,
             n=int(rng.choice([1, 7])))
    g["pad"] = int(rng.integers(0, g["fs"]))
    check_direct_case(g, rng, seed, monkeypatch)


def check_direct_case(g, rng, seed, monkeypatch):
    C, F = g["cf"] * g["groups"], g["fg"] * g["groups"]
    M = modules_x(g["size"], g["fs"], g["pad"], 1)
    x = rng.standard_normal((g["n"], C, g["size"], g["size"]))
    W = rng.standard_normal((g["cf"] * g["fs"] ** 2, F)) * 0.3
    b = rng.standard_normal((F, 1))
    G = rng.standard_normal((g["n"], F * M * M))
    text = conv_text(channels=C, filters=g["fg"], groups=g["groups"], filterSize=g["fs"], padding=g["pad"], stride=1)
    dims = {0: (C, g["size"], g["size"])}
    what = f"case {g} (seed {seed})"
    d, cd = run_fb(build(monkeypatch, "direct", text, dims), x, W, b, G)
    assert cd["direct_fprop"] == 1 and cd["direct_bprop"] == 1 and cd["gemm_fprop"] == 0 and cd["gemm_bprop"] == 0, what
    m, cm = run_fb(build(monkeypatch, "gemm", text, dims), x, W, b, G)
    assert cm["gemm_fprop"] == 1 and cm["gemm_bprop"] == 1 and cm["direct_fprop"] == 0, what

    x32, W32, G32 = (a.astype(np.float32).astype(np.float64) for a in (x, W, G))
    ref = add_bias(conv_ref(x32, W32, g["fs"], g["pad"], 1, g["groups"], F), b.astype(np.float32), True)
    rdx, rdW = ref_grads(x32, W32, G32, g["fs"], g["pad"], g["groups"], F)
    scale = np.sqrt(g["cf"] * g["fs"] ** 2)  # float32 sums of K terms: error grows with sqrt(K)
    for name, (ours, gemm) in zip(["out", "dx", "dW"], [(d[0], m[0]), (d[1], m[1]), (d[2], m[2])]):
        r = {"out": ref.reshape(g["n"], -1), "dx": rdx.reshape(g["n"], -1), "dW": rdW}[name]
        tol = 1e-5 * scale * (1 if name != "dW" else np.sqrt(g["n"] * M * M))
        assert_close(ours, r, 1e-4, tol, f"direct {name}, {what}")
        assert_close(gemm, r, 1e-4, tol, f"gemm {name}, {what}")
    np.testing.assert_allclose(d[3], m[3], rtol=1e-6, atol=1e-6)


@needs_direct
@pytest.mark.parametrize("n,groups,shared", [(1, 1, True), (2, 2, False), (3, 3, True)])
def test_direct_finite_differences(n, groups, shared, monkeypatch):
    """check_layer's forward against conv_ref and gradients against central differences, on the direct path."""
    seed = fresh_seed()
    rng = np.random.default_rng(seed)
    cf, fg, fs, pad, size = 3, 17 if groups == 1 else 5, 3, 1, 5
    # (small n: finite differences cost two reference passes per input value; minibatches 7
    # and 13 are checked against the exact float64 gradients above)
    x = rng.standard_normal((n, cf * groups, size, size))
    F = fg * groups
    text = conv_text(channels=cf * groups, filters=fg, groups=groups, filterSize=fs, padding=pad, stride=1,
                     sharedBiases=int(shared))
    monkeypatch.setenv("CCN_CONV_KERNEL", "direct")
    core.reset_conv_kernel_counts()
    check_layer(text, {"data": (0, x)},
                lambda v: add_bias(conv_ref(v["data"], v["conv.weights[0]"], fs, pad, 1, groups, F), v["conv.biases"],
                                   shared),
                "conv", seed=seed)
    c = core.conv_kernel_counts()
    assert c["direct_fprop"] >= 1 and c["direct_bprop"] >= 1 and c["gemm_fprop"] == 0, (c, seed)


@needs_direct
def test_direct_18pct_shapes_match_gemm(monkeypatch):
    """The 18pct net's conv2 geometry (32 -> 32 filters, 5x5, pad 2, 16x16), minibatch 7."""
    rng = np.random.default_rng(fresh_seed())
    x = rng.standard_normal((7, 32, 16, 16))
    W = rng.standard_normal((32 * 25, 32)) * 0.05
    b = rng.standard_normal((32, 1))
    G = rng.standard_normal((7, 32 * 256))
    text = conv_text(channels=32, filters=32, filterSize=5, padding=2, stride=1)
    d, cd = run_fb(build(monkeypatch, "auto", text, {0: (32, 16, 16)}), x, W, b, G)
    assert cd["direct_fprop"] == 1 and cd["direct_bprop"] == 1
    m, _ = run_fb(build(monkeypatch, "gemm", text, {0: (32, 16, 16)}), x, W, b, G)
    for a, c, tol in zip(d, m, [1e-4, 1e-4, 2e-3, 1e-4]):
        np.testing.assert_allclose(a, c, rtol=1e-4, atol=tol)


@needs_direct
def test_direct_rand_sparse_and_two_inputs(monkeypatch):
    """randSparse channel tables (a channel feeding several groups) and two inputs, direct vs GEMM."""
    rng = np.random.default_rng(fresh_seed())
    n = 5
    a = rng.standard_normal((n, 4, 7, 7)).astype(np.float32)
    bb = rng.standard_normal((n, 4, 5, 5)).astype(np.float32)
    text = ("[a]\ntype=data\ndataIdx=0\n[b]\ntype=data\ndataIdx=1\n[conv]\ntype=conv\ninputs=a,b\n"
            "channels=4,4\nfilters=6,3\nfilterSize=3,3\npadding=1,2\nstride=1\ngroups=2,4\n"
            "randSparse=0,1\nfilterChannels=2,2\n")
    dims = {0: (4, 7, 7), 1: (4, 5, 5)}
    res = {}
    for k in ("direct", "gemm"):
        net = build(monkeypatch, k, text, dims, seed=3)
        core.reset_conv_kernel_counts()
        net.forward({0: a.reshape(n, -1), 1: bb.reshape(n, -1)}, train=True)
        out = net.output("conv").copy()
        G = np.random.default_rng(1).standard_normal(out.shape).astype(np.float32)
        net._net.zero_param_grads()
        net.backward({"conv": G})
        c = core.conv_kernel_counts()
        assert c[f"{k}_fprop"] == 1 and c[f"{k}_bprop"] == 1, c
        res[k] = [out, net.output_grad("a"), net.output_grad("b"), net.get("conv.weights[0]", "grad"),
                  net.get("conv.weights[1]", "grad")]
    for d, m in zip(res["direct"], res["gemm"]):
        np.testing.assert_allclose(d, m, rtol=1e-4, atol=1e-4)


@needs_direct
def test_direct_modules_x_beyond_the_image(monkeypatch):
    """cuda-convnet2's modulesX key: more modules than the image needs (the extra ones read zeros)."""
    rng = np.random.default_rng(fresh_seed())
    n, C, S = 3, 5, 6
    x = rng.standard_normal((n, C, S, S))
    text = conv_text(channels=C, filters=18, filterSize=3, padding=1, stride=1, modulesX=9)
    res = {}
    for k in ("direct", "gemm"):
        net = build(monkeypatch, k, text, {0: (C, S, S)})
        M = net.layer("conv").shape[1]
        assert M == 9
        W = np.random.default_rng(7).standard_normal((C * 9, 18))
        G = np.random.default_rng(8).standard_normal((n, 18 * M * M))
        res[k], c = run_fb(net, x, W, np.zeros((18, 1)), G)
        assert c[f"{k}_fprop"] == 1 and c[f"{k}_bprop"] == 1, c
    for d, m in zip(res["direct"], res["gemm"]):
        np.testing.assert_allclose(d, m, rtol=1e-4, atol=1e-4)


@needs_direct
def test_auto_picks_direct_for_stride_1_and_gemm_for_stride_2(monkeypatch):
    rng = np.random.default_rng(fresh_seed())
    x = rng.standard_normal((3, 5, 9, 9)).astype(np.float32)
    for stride, kernel, want in [(1, "auto", "direct"), (1, "gemm", "gemm"), (2, "auto", "gemm"),
                                 (2, "direct", "gemm")]:  # direct cannot run stride 2: the GEMM path does
        text = conv_text(channels=5, filters=6, filterSize=3, padding=1, stride=stride)
        net = build(monkeypatch, kernel, text, {0: (5, 9, 9)})
        core.reset_conv_kernel_counts()
        net.forward({0: x.reshape(3, -1)}, train=False)
        c = core.conv_kernel_counts()
        assert c[f"{want}_fprop"] == 1, (stride, kernel, c)


@needs_direct
def test_auto_keeps_gemm_for_many_filters_per_group(monkeypatch):
    """auto: direct up to 384 filters per group (measured crossover, conv.cpp kDirectMaxFg)."""
    x = np.random.default_rng(fresh_seed()).standard_normal((2, 2 * 3 * 3)).astype(np.float32)
    for filters, groups, want in [(384, 1, "direct"), (385, 1, "gemm"), (300, 2, "direct")]:
        text = conv_text(channels=2, filters=filters, groups=groups, filterSize=3, padding=1)
        net = build(monkeypatch, "auto", text, {0: (2, 3, 3)})
        core.reset_conv_kernel_counts()
        net.forward({0: x}, train=False)
        assert core.conv_kernel_counts()[f"{want}_fprop"] == 1, (filters, groups)


def test_kernel_choice_is_validated_and_read_at_setup(monkeypatch):
    monkeypatch.setenv("CCN_CONV_KERNEL", "winograd")
    with pytest.raises(ConfigError, match="CCN_CONV_KERNEL"):
        ccn.Net("<t>", None, {0: (2, 5, 5)}, layers_text=conv_text(channels=2, filters=3, filterSize=3, padding=1))
    # Read once at setup: changing the variable afterwards does not change the running net.
    net = build(monkeypatch, "gemm", conv_text(channels=2, filters=3, filterSize=3, padding=1), {0: (2, 5, 5)})
    monkeypatch.setenv("CCN_CONV_KERNEL", "direct")
    core.reset_conv_kernel_counts()
    net.forward({0: np.ones((2, 50), np.float32)}, train=False)
    assert core.conv_kernel_counts()["gemm_fprop"] == 1


def test_gemm_fallback_without_avx512_reported():
    kernels = core.build_info()["conv_kernels"]
    assert kernels[0] == "gemm"
    assert set(kernels) <= {"gemm", "direct-avx512"}
