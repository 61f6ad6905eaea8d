"""Each CUDA kernel launcher against a float64 NumPy reference (forward) and finite
differences of that reference (backward), on random odd sizes. Backward launchers ADD into
their outputs, so every gradient buffer starts from random values, not zeros."""

import numpy as np
import pytest

from cudaops import close, same_bits, cmrnorm_ref, cnorm_ref, conv_ref, numgrad, op, pool_ref, rnorm_ref

pytestmark = pytest.mark.cuda

NEURONS = [  # name, code (kernels.h NeuronCode), a, b, f
    ("ident", 0, 1, 1, lambda x: x),
    ("logistic", 1, 1, 1, lambda x: 1 / (1 + np.exp(-x))),
    ("tanh", 2, 1.7, 0.66, lambda x: 1.7 * np.tanh(0.66 * x)),
    ("relu", 3, 1, 1, lambda x: np.maximum(x, 0)),
    ("brelu", 4, 1.3, 1, lambda x: np.minimum(1.3, np.maximum(0, x))),
    ("softrelu", 5, 1, 1, lambda x: np.where(x > 4, x, np.log1p(np.exp(np.minimum(x, 4))))),
    ("abs", 6, 1, 1, np.abs),
    ("square", 7, 1, 1, lambda x: x * x),
    ("linear", 9, 2.5, -0.3, lambda x: 2.5 * x - 0.3),
    ("drelu", 11, 0.7, 1, lambda x: x - 0.7 * np.tanh(x / 0.7)),
]


@pytest.mark.parametrize("name,code,a,b,f", NEURONS, ids=[n[0] for n in NEURONS])
def test_neuron(name, code, a, b, f):
    rng = np.random.default_rng()
    x = rng.standard_normal((7, 13)) * 2
    x[np.abs(x) < 0.05] += 0.1
    x[np.abs(np.abs(x) - 1.3) < 0.05] += 0.1
    x[np.abs(x - 3.98) < 0.05] += 0.1  # softrelu's gradient is 1 from its output 4 on
    r = op("neuron_fprop", {"x": x, "y": np.full_like(x, np.nan)}, code=code, a=a, b=b)
    close(r["y"], f(x))
    dout, din0 = rng.standard_normal(x.shape), rng.standard_normal(x.shape)
    r2 = op("neuron_bprop", {"x": x, "y": r["y"], "dout": dout, "din": din0}, code=code, a=a, b=b, add=1)
    close(r2["din"], din0 + numgrad(f, x, dout), rtol=1e-3)


def test_neuron_derivatives_at_the_originals_edges():
    # abs: -1 at x = 0; softrelu: 1 where its output passes 4 (x > ~3.9815), else 1 - e^-y
    x = np.array([[0.0, 3.99, 3.97, -2.0, 5.0, 0.0, 1.0]])
    dout = np.full(x.shape, 2.0)
    for code, want in ((6, np.where(x > 0, 1.0, -1.0)),
                       (5, np.where(x > 3.9816, 1.0, 1 / (1 + np.exp(-x))))):
        y = op("neuron_fprop", {"x": x, "y": np.full_like(x, np.nan)}, code=code, a=1, b=1)["y"]
        r = op("neuron_bprop", {"x": x, "y": y, "dout": dout, "din": np.zeros_like(x)}, code=code, a=1, b=1, add=1)
        close(r["din"], dout * want, rtol=1e-5)


@pytest.mark.parametrize("N,K", [(1, 1), (5, 10), (3, 1000)])
def test_softmax(N, K):
    rng = np.random.default_rng()
    x = rng.standard_normal((N, K)) * 3

    def f(v):
        e = np.exp(v - v.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    y = op("softmax_fprop", {"x": x, "y": np.full_like(x, np.nan)})["y"]
    close(y, f(x))
    dout, din0 = rng.standard_normal(x.shape), rng.standard_normal(x.shape)
    din = op("softmax_bprop", {"y": y, "dout": dout, "din": din0})["din"]
    yr = f(x)
    close(din, din0 + yr * (dout - np.sum(dout * yr, axis=1, keepdims=True)), rtol=1e-4)


def test_logreg_sums_ties_and_gradient():
    rng = np.random.default_rng()
    N, K = 9, 6
    p = rng.uniform(0.01, 1, (N, K))
    p /= p.sum(axis=1, keepdims=True)
    p[0, :] = 1.0 / K  # a full tie: top-1 credit 1/K, top-2 credit 2/K
    lab = rng.integers(0, K, (N, 1)).astype(np.float64)
    r = op("logreg_fprop", {"labels": lab, "probs": p, "sums": np.zeros(4)}, topk=2)
    p32 = p.astype(np.float32)
    nll = -np.sum(np.log(p32[np.arange(N), lab[:, 0].astype(int)].astype(np.float64)))
    wrong1 = wrongk = 0.0
    for n in range(N):
        py = p32[n, int(lab[n, 0])]
        g, e = np.sum(p32[n] > py), np.sum(p32[n] == py)
        for k, acc in ((1, "w1"), (2, "wk")):
            cr = 0.0 if g >= k else min(1.0, (k - g) / e)
            if acc == "w1":
                wrong1 += 1 - cr
            else:
                wrongk += 1 - cr
    close(r["sums"][:3], [nll, wrong1, wrongk], rtol=1e-5)
    assert r["sums"][3] == -1
    bad = lab.copy()
    bad[4, 0] = K
    assert op("logreg_fprop", {"labels": bad, "probs": p, "sums": np.zeros(4)}, topk=1)["sums"][3] == 4
    d0 = rng.standard_normal(p.shape)
    d = op("logreg_bprop", {"labels": lab, "probs": p, "dprobs": d0}, coeff=0.7)["dprobs"]
    ref = d0.copy()
    ref[np.arange(N), lab[:, 0].astype(int)] += -0.7 / p[np.arange(N), lab[:, 0].astype(int)]
    close(d, ref)


def test_logreg_fused_with_softmax():
    # -log p from the logits (log-sum-exp in double) and dx += coeff * (p - onehot), as the CPU
    # layer for a softmax that feeds only the cost; the first case's p underflows to 0
    rng = np.random.default_rng()
    N, K = 7, 5
    x = rng.standard_normal((N, K)).astype(np.float32)
    x[0] = [200, 0, 0, 0, 0]
    lab = rng.integers(0, K, (N, 1)).astype(np.float64)
    lab[0, 0] = 3
    x64 = x.astype(np.float64)
    e = np.exp(x64 - x64.max(1, keepdims=True))
    p = (e / e.sum(1, keepdims=True)).astype(np.float32)
    y = lab[:, 0].astype(int)
    r = op("logreg_fprop", {"labels": lab, "probs": p, "logits": x, "sums": np.zeros(4)}, topk=1)
    nll = np.sum(np.log(e.sum(1)) - (x64[np.arange(N), y] - x64.max(1)))
    close(r["sums"][0], nll, rtol=1e-6)
    assert r["sums"][0] > 199
    d0 = rng.standard_normal((N, K))
    d = op("logreg_softmax_bprop", {"labels": lab, "probs": p, "dx": d0}, coeff=0.7)["dx"]
    close(d, d0 + 0.7 * (p.astype(np.float64) - np.eye(K)[y]))


def test_sum2():
    rng = np.random.default_rng()
    x, d0 = rng.standard_normal((5, 17)), rng.standard_normal((5, 17))
    r = op("sum2", {"x": x, "din": d0, "sum": np.zeros(1)}, coeff=0.3)
    close(r["sum"], [np.sum(x * x)], rtol=1e-6)
    close(r["din"], d0 + 0.6 * x)


@pytest.mark.parametrize("N", [1, 7, 130])
def test_fc_gemms(N):
    rng = np.random.default_rng()
    K, O = int(rng.integers(1, 40)), int(rng.integers(1, 30))
    x, W, y0 = rng.standard_normal((N, K)), rng.standard_normal((K, O)), rng.standard_normal((N, O))
    close(op("fc_fprop", {"x": x, "W": W, "y": y0}, accumulate=1)["y"], y0 + x @ W)
    close(op("fc_fprop", {"x": x, "W": W, "y": y0}, accumulate=0)["y"], x @ W)
    dout, din0, dW0 = rng.standard_normal((N, O)), rng.standard_normal((N, K)), rng.standard_normal((K, O))
    r = op("fc_bprop", {"x": x, "W": W, "dout": dout, "din": din0, "dW": dW0})
    close(r["din"], din0 + dout @ W.T)
    close(r["dW"], dW0 + x.T @ dout)
    b = rng.standard_normal(O)
    close(op("add_row_vector", {"y": y0, "b": b})["y"], y0 + b)
    close(op("add_col_sums", {"g": dout, "db": b})["db"], b + dout.sum(axis=0))


CONV_CASES = [  # N, C, S, filters F, groups, fs, stride, padding
    (1, 1, 5, 1, 1, 3, 1, 0),
    (3, 3, 7, 4, 1, 3, 2, 1),
    (2, 4, 6, 6, 2, 2, 2, 0),
    (3, 4, 9, 8, 2, 5, 3, 2),
    (2, 3, 8, 3, 1, 4, 3, 1),   # the last module hangs over the border
]


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv(case):
    N, C, S, F, groups, fs, stride, padding = case
    rng = np.random.default_rng()
    Cf = C // groups
    M = 1 + int(np.ceil((2 * padding + S - fs) / stride))
    K = Cf * fs * fs
    x, W = rng.standard_normal((N, C * S * S)), rng.standard_normal((K, F))
    geo = dict(N=N, C=C, S=S, F=F, groups=groups, Cf=Cf, fs=fs, stride=stride, padding=padding, M=M)
    ref = conv_ref(x, W, **geo)
    y0 = rng.standard_normal(ref.shape)
    close(op("conv_fprop", {"x": x, "W": W, "y": y0}, accumulate=0, **geo)["y"], ref)
    close(op("conv_fprop", {"x": x, "W": W, "y": y0}, accumulate=1, **geo)["y"], y0 + ref)
    dout = rng.standard_normal(ref.shape)
    din0, dW0 = rng.standard_normal(x.shape), rng.standard_normal(W.shape)
    r = op("conv_bprop", {"x": x, "W": W, "dout": dout, "din": din0, "dW": dW0}, **geo)
    close(r["din"], din0 + numgrad(lambda v: conv_ref(v, W, **geo), x, dout), rtol=1e-4)
    close(r["dW"], dW0 + numgrad(lambda w: conv_ref(x, w, **geo), W, dout), rtol=1e-4)
    # biases, shared and unshared
    MM = M * M
    for shared in (1, 0):
        b = rng.standard_normal(F if shared else F * MM)
        bb = np.repeat(b, MM) if shared else b
        close(op("conv_add_bias", {"y": y0, "b": b}, N=N, F=F, MM=MM, shared=shared)["y"], y0 + bb)
        g = dout.reshape(N, F, MM)
        want = b + (g.sum(axis=(0, 2)) if shared else g.sum(axis=0).reshape(-1))
        close(op("conv_bias_grad", {"dout": dout, "db": b}, N=N, F=F, MM=MM, shared=shared)["db"], want)


@pytest.mark.parametrize("case", CONV_CASES + [(5, 6, 13, 6, 3, 5, 2, 3)])
def test_conv_unfold_layout(case):
    """conv_unfold's [g][k][n][m] rows for cases n0..n0+nc-1, element by element (a copy:
    exact), every element written (the scratch is poisoned with NaN first)."""
    N, C, S, F, groups, fs, stride, padding = case
    seed = int(np.random.SeedSequence().entropy % 2**32)
    rng = np.random.default_rng(seed)
    Cf = C // groups
    M = 1 + int(np.ceil((2 * padding + S - fs) / stride))
    K, MM = Cf * fs * fs, M * M
    n0 = int(rng.integers(0, N))
    nc = int(rng.integers(1, N - n0 + 1))
    x = rng.standard_normal((N, C, S, S)).astype(np.float32)
    xp = np.zeros((N, C, S + 2 * padding + fs + stride * M, S + 2 * padding + fs + stride * M), np.float32)
    xp[:, :, padding:padding + S, padding:padding + S] = x
    want = np.empty((groups, Cf, fs, fs, nc, M, M), np.float32)
    for fy in range(fs):
        for fx in range(fs):
            win = xp[n0:n0 + nc, :, fy:fy + stride * M:stride, fx:fx + stride * M:stride]  # nc, C, M, M
            want[:, :, fy, fx] = win.reshape(nc, groups, Cf, M, M).transpose(1, 2, 0, 3, 4)
    want = want.reshape(groups * K, nc * MM)
    geo = dict(N=N, C=C, S=S, F=F, groups=groups, Cf=Cf, fs=fs, stride=stride, padding=padding, M=M)
    col = op("conv_unfold", {"x": x.reshape(N, -1), "col": np.full(want.shape, np.nan)}, n0=n0, nc=nc, **geo)["col"]
    same_bits(col, want, f"conv_unfold of cases {n0}..{n0 + nc - 1} (seed {seed})")


def test_conv_channel_table():
    """randSparse-style table: groups read arbitrary (repeated) channels."""
    rng = np.random.default_rng()
    N, C, S, F, groups, Cf, fs = 2, 4, 5, 6, 3, 3, 3
    vchan = np.array([0, 1, 2, 3, 0, 1, 2, 2, 3])
    M = S - fs + 1
    geo = dict(N=N, C=C, S=S, F=F, groups=groups, Cf=Cf, fs=fs, stride=1, padding=0, M=M)
    x, W = rng.standard_normal((N, C * S * S)), rng.standard_normal((Cf * fs * fs, F))
    ref = conv_ref(x, W, vchan=vchan, **geo)
    close(op("conv_fprop", {"x": x, "W": W, "y": np.zeros_like(ref), "vchan": vchan}, accumulate=0, **geo)["y"], ref)
    dout, din0 = rng.standard_normal(ref.shape), rng.standard_normal(x.shape)
    r = op("conv_bprop", {"x": x, "W": W, "dout": dout, "din": din0, "dW": np.zeros_like(W), "vchan": vchan}, **geo)
    close(r["din"], din0 + numgrad(lambda v: conv_ref(v, W, vchan=vchan, **geo), x, dout), rtol=1e-4)


POOL_CASES = [  # N, C, S, sizeX, start, stride, outputsX (0 = computed)
    (1, 1, 5, 2, 0, 2, 0),
    (3, 2, 7, 3, 0, 2, 0),
    (2, 3, 6, 3, -1, 2, 0),
    (2, 2, 9, 4, 1, 3, 0),
    (1, 2, 5, 3, 0, 1, 2),
]


@pytest.mark.parametrize("case", POOL_CASES)
@pytest.mark.parametrize("is_max", [1, 0])
def test_pool(case, is_max):
    N, C, S, sizeX, start, stride, O = case
    if O == 0:
        O = int(np.ceil((S - start - sizeX) / stride)) + 1
    rng = np.random.default_rng()
    x = rng.permutation(N * C * S * S).reshape(N, -1) / 10.0  # distinct values: max is differentiable
    geo = dict(N=N, C=C, S=S, O=O, sizeX=sizeX, start=start, stride=stride, max=is_max)
    ref = pool_ref(x, N, C, S, O, sizeX, start, stride, is_max)
    y = op("pool_fprop", {"x": x, "y": np.full(ref.shape, np.nan)}, **geo)["y"]
    close(y, ref)
    dout, din0 = rng.standard_normal(ref.shape), rng.standard_normal(x.shape)
    din = op("pool_bprop", {"x": x, "y": y, "dout": dout, "din": din0}, **geo)["din"]
    close(din, din0 + numgrad(lambda v: pool_ref(v, N, C, S, O, sizeX, start, stride, is_max), x, dout, eps=1e-3),
          rtol=1e-4)


def test_pool_max_ties_all_get_gradient():
    x = np.ones((1, 16))
    geo = dict(N=1, C=1, S=4, O=2, sizeX=2, start=0, stride=2, max=1)
    y = op("pool_fprop", {"x": x, "y": np.zeros((1, 4))}, **geo)["y"]
    din = op("pool_bprop", {"x": x, "y": y, "dout": np.ones((1, 4)), "din": np.zeros((1, 16))}, **geo)["din"]
    assert np.all(din == 1)


NORMS = {"rnorm": rnorm_ref, "cmrnorm": cmrnorm_ref, "cnorm": cnorm_ref}


@pytest.mark.parametrize("kind", sorted(NORMS))
@pytest.mark.parametrize("size", [2, 3, 5])
def test_norms(kind, size):
    rng = np.random.default_rng()
    N, C, S = 2, int(rng.integers(3, 7)), int(rng.integers(3, 7))
    a, pw, minDiv = float(rng.uniform(0.1, 2)), float(rng.uniform(0.5, 0.9)), float(rng.uniform(0.5, 2))
    x = rng.standard_normal((N, C * S * S))
    geo = dict(N=N, C=C, S=S, size=size, a=a, pow=pw, minDiv=minDiv, blocked=0)
    f = lambda v: NORMS[kind](v, N, C, S, size, a, pw, minDiv)  # noqa: E731
    state = np.zeros(2 * x.size)
    r = op(f"{kind}_fprop", {"x": x, "y": np.full(x.shape, np.nan), "state": state}, **geo)
    close(r["y"], f(x))
    dout, din0 = rng.standard_normal(x.shape), rng.standard_normal(x.shape)
    din = op(f"{kind}_bprop", {"x": x, "y": r["y"], "state": r["state"], "dout": dout, "din": din0}, **geo)["din"]
    close(din, din0 + numgrad(f, x, dout), rtol=2e-4)


def test_cmrnorm_blocked():
    rng = np.random.default_rng()
    N, C, S, size = 2, 7, 3, 3
    x = rng.standard_normal((N, C * S * S))
    geo = dict(N=N, C=C, S=S, size=size, a=0.5, pow=0.75, minDiv=1.0, blocked=1)
    f = lambda v: cmrnorm_ref(v, N, C, S, size, 0.5, 0.75, 1.0, blocked=True)  # noqa: E731
    r = op("cmrnorm_fprop", {"x": x, "y": np.zeros_like(x), "state": np.zeros(x.size)}, **geo)
    close(r["y"], f(x))
    dout = rng.standard_normal(x.shape)
    din = op("cmrnorm_bprop", {"x": x, "y": r["y"], "state": r["state"], "dout": dout, "din": np.zeros_like(x)},
             **geo)["din"]
    close(din, numgrad(f, x, dout), rtol=2e-4)


def test_eltsum_eltmax_concat():
    rng = np.random.default_rng()
    # float32 from the start: the kernels see float32, and eltmax's ties (and which input
    # equals the maximum) must be decided on the values they see, not on float64 originals.
    xs = [rng.standard_normal((3, 11)).astype(np.float32) for _ in range(3)]
    xs[1][0, :4] = xs[0][0, :4]  # ties in eltmax
    dout = rng.standard_normal((3, 11))
    arrays = {f"x{i}": x for i, x in enumerate(xs)} | {f"din{i}": np.zeros((3, 11)) for i in range(3)}
    r = op("eltsum", arrays | {"y": np.zeros((3, 11)), "dout": dout}, inputs=3, c0=1.0, c1=-0.5, c2=2.0)
    close(r["y"], xs[0] - 0.5 * xs[1] + 2 * xs[2])
    close(r["din1"], -0.5 * dout)
    y = op("eltmax_fprop", {f"x{i}": x for i, x in enumerate(xs)} | {"y": np.zeros((3, 11))}, inputs=3)["y"]
    want = np.maximum(np.maximum(xs[0], xs[1]), xs[2])  # float32: exact
    assert want.dtype == np.float32 and y.dtype == np.float32
    same_bits(y, want, "eltmax_fprop output")
    assert np.sum(xs[0] == want) >= 4 and np.sum(xs[1] == want) >= 4  # the ties are really there
    for i, x in enumerate(xs):
        d0 = rng.standard_normal(x.shape).astype(np.float32)
        d = op("eltmax_bprop", {"x": x, "y": y, "dout": dout, "din": d0})["din"]
        close(d, d0 + np.where(x == want, dout, 0), what=f"eltmax_bprop din of input {i}")
    a, b = rng.standard_normal((4, 3)), rng.standard_normal((4, 5))
    y = np.full((4, 8), np.nan)
    y = op("concat_fprop", {"x": a, "y": y}, offset=0)["y"]
    y = op("concat_fprop", {"x": b, "y": y}, offset=3)["y"]
    close(y, np.hstack([a, b]))
    g, d0 = rng.standard_normal((4, 8)), rng.standard_normal((4, 5))
    close(op("concat_bprop", {"dout": g, "din": d0}, offset=3)["din"], d0 + g[:, 3:])


@pytest.mark.parametrize("on,first", [(2.0, 0), (1.0, 0), (2.0, 45)])
def test_dropout_mask_matches_cpu_rng(on, first):
    """The mask comes from core/rng.h's uniform01, the CPU layer's function: compare with a
    pure-Python splitmix64 of the same formula. `first` is the global index of element 0
    (case_offset * D in data-parallel runs)."""
    M64 = (1 << 64) - 1

    def mix64(x):
        x = (x + 0x9E3779B97F4A7C15) & M64
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M64
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & M64
        return x ^ (x >> 31)

    seed, step, layer, keep = 12345, 7, 3, 0.5
    stream = mix64(step ^ 0xD1B54A32D192ED03) ^ layer
    x = np.random.default_rng().uniform(1, 2, (5, 9))
    u = np.array([(mix64(seed ^ mix64(stream ^ mix64(k))) >> 40) / 16777216.0 for k in range(first, first + x.size)])
    m = (u < keep).reshape(x.shape) * on
    sc = dict(seed=seed, step=step, layer_id=layer, keep=keep, on=on, first=first)
    close(op("dropout_fprop", {"x": x, "y": np.zeros_like(x)}, **sc)["y"], x * m, rtol=1e-6)
    g, d0 = np.random.default_rng().standard_normal((2, *x.shape))
    close(op("dropout_bprop", {"dout": g, "din": d0}, **sc)["din"], d0 + g * m, rtol=1e-6)


def test_sgd_and_wball():
    rng = np.random.default_rng()
    w, inc, g = rng.standard_normal((3, 7, 5))
    mom, scale, decay, ball = 0.9, 0.01, 0.002, 1.0
    r = op("sgd", {"w": w, "inc": inc, "grad": g}, mom=mom, scale=scale, decay=decay, wball=ball)
    inc2 = mom * inc - scale * g - decay * w
    w2 = w + inc2
    nrm = np.linalg.norm(w2, axis=0)
    w2 = np.where(nrm > ball, w2 * (ball / nrm), w2)
    close(r["inc"], inc2)
    close(r["w"], w2)
    assert np.all(r["grad"] == 0)
    # weight-contrast normalisation (conv's wcNormMin/wcNormMax)
    wide = w * np.geomspace(0.05, 5, w.shape[1])
    r = op("sgd", {"w": wide, "inc": inc, "grad": g}, mom=mom, scale=scale, decay=decay, wcn_min=0.1, wcn_max=0.4)
    w4 = wide + (mom * inc - scale * g - decay * wide)
    s = np.sqrt(((w4 - w4.mean(axis=0)) ** 2).sum(axis=0)) / w4.shape[0]
    close(r["w"], w4 * np.where(s < 0.1, 0.1 / s, np.where(s > 0.4, 0.4 / s, 1.0)))
    # hard (fc, conv): every column rescaled to norm wball, small ones up too
    r = op("sgd", {"w": w, "inc": inc, "grad": g}, mom=mom, scale=scale, decay=decay, wball=ball, hard=1)
    w3 = w + inc2
    close(r["w"], w3 * (ball / np.linalg.norm(w3, axis=0)))
