"""Regression tests for the CUDA kernel review (see the commits on branch cudareview):

  - conv.cu's chunking over cases honours CCN_UNFOLD_BYTES like the CPU layers (host rule,
    checked without a GPU; and on a GPU, forced small chunks give the same results);
  - pool max starts from the window's own pixels in the CPU layer's order (all -inf windows
    give -inf, NaN as on the CPU), avg sums in the CPU's order, and backward adds in the
    CPU's order: max/maxabs forward bit for bit equal to the CPU layer;
  - cmpool, eltmax, cost.crossent/bce maxima follow std::max like the CPU (fmaxf dropped NaNs);
  - the test-op harness uploads on the op's stream (a large array arrives intact);
  - rnorm, cmrnorm and cnorm repeat the CPU's float operations (bit for bit for pow 0.75).
Tests marked `cuda` skip without a GPU; the others need only a build with the CUDA backend."""

import numpy as np
import pytest

import ccn
from ccn._native import core
from cudaops import close, conv_ref, op, same_bits

HAVE_CUDA_BUILD = "cuda" in core.build_info()["backends"]
needs_cuda_build = pytest.mark.skipif(not HAVE_CUDA_BUILD, reason="built without the CUDA backend")

ALEXNET_CONV1 = dict(N=256, C=3, S=224, F=96, groups=1, Cf=3, fs=11, stride=4, padding=0, M=55)
ALEXNET_CONV2 = dict(N=256, C=96, S=27, F=256, groups=2, Cf=48, fs=5, stride=1, padding=2, M=27)


def chunk_rule(geo, bprop, din, budget):
    """The rule conv_chunk_cases must follow (the CPU layers' conv_chunk on float32 columns): the
    unfolded input (twice with din: dcol too) and the output (gradient) with filters outermost."""
    K, MM = geo["Cf"] * geo["fs"] ** 2, geo["M"] ** 2
    per_case = geo["groups"] * K * MM * (2 if bprop and din else 1) + geo["F"] * MM
    return max(1, min(geo["N"], budget // (4 * per_case)))


def gpu_chunk(geo, bprop, din):
    r = op("conv_chunk", {"chunk": np.zeros(1)}, bprop=int(bprop), din=int(din), **geo)
    return int(np.asarray(r["chunk"]).reshape(-1)[0])


@needs_cuda_build
@pytest.mark.parametrize("geo", [ALEXNET_CONV1, ALEXNET_CONV2], ids=["alexnet-conv1", "alexnet-conv2"])
@pytest.mark.parametrize("bprop,din", [(False, False), (True, False), (True, True)])
def test_conv_chunk_rule_follows_ccn_unfold_bytes(monkeypatch, geo, bprop, din):
    monkeypatch.delenv("CCN_UNFOLD_BYTES", raising=False)
    assert gpu_chunk(geo, bprop, din) == chunk_rule(geo, bprop, din, 256 << 20)
    for budget in (1, 5_000_000, 64 << 20, 1 << 40):
        monkeypatch.setenv("CCN_UNFOLD_BYTES", str(budget))
        want = chunk_rule(geo, bprop, din, budget)
        assert gpu_chunk(geo, bprop, din) == want, f"CCN_UNFOLD_BYTES={budget}"
    for ignored in ("0", "-5", "junk"):  # not a positive integer: the default, as on the CPU
        monkeypatch.setenv("CCN_UNFOLD_BYTES", ignored)
        assert gpu_chunk(geo, bprop, din) == chunk_rule(geo, bprop, din, 256 << 20)


def fastdiv_bad(d, lo, hi, mul_delta=0):
    r = op("fastdiv", {"bad": np.zeros(1)}, d=d, lo=lo, hi=hi, mul_delta=mul_delta)
    return int(np.asarray(r["bad"]).reshape(-1)[0])


@needs_cuda_build
def test_fastdiv_divides_exactly_below_2_31():
    """The row kernels split indices with FastDiv (native/cuda/fastdiv.cuh, multiply and shift):
    every n of windows at both ends of [0, 2^31) and at random places, for divisors that
    are small, powers of two and their neighbours, the conv sizes of AlexNet, and near 2^31."""
    rng = np.random.default_rng()
    top = 2**31 - 1
    divisors = [1, 2, 3, 5, 7, 11, 25, 27, 55, 121, 169, 729, 3025, 1200, 2304, 2**16 - 1, 2**16, 2**16 + 1,
                2**30 - 1, 2**30, 2**30 + 1, top - 1, top]
    divisors += [int(v) for v in rng.integers(1, 2**31, 8)] + [int(v) for v in rng.integers(1, 5000, 8)]
    for d in divisors:
        # the first quotients' edges (n near d, 2d, 3d), the top, and random places
        windows = [(max(0, k * d - 1000), min(top, k * d + 1000)) for k in range(4) if k * d <= top]
        windows += [(top - 20_000, top)] + [(int(a), int(a) + 20_000) for a in rng.integers(0, top - 20_000, 3)]
        for lo, hi in windows:
            assert fastdiv_bad(d, lo, hi) == 0, f"FastDiv({d}) wrong for some n in [{lo}, {hi}]"
    # the check sees a wrong multiplier (so a broken FastDiv cannot pass): one too small
    # fails at n = d already, one too large where n*e reaches 2^p
    assert fastdiv_bad(729, 0, 10_000, mul_delta=-1) > 0
    assert fastdiv_bad(7, top - 10_000, top, mul_delta=1) > 0


@needs_cuda_build
def test_conv_chunk_small_nets_unfold_in_one_chunk(monkeypatch):
    monkeypatch.delenv("CCN_UNFOLD_BYTES", raising=False)
    geo = dict(N=7, C=4, S=9, F=8, groups=2, Cf=2, fs=3, stride=2, padding=1, M=5)
    assert gpu_chunk(geo, False, False) == 7 and gpu_chunk(geo, True, True) == 7
    monkeypatch.setenv("CCN_UNFOLD_BYTES", "1")
    assert gpu_chunk(geo, True, True) == 1


@pytest.mark.cuda
@pytest.mark.parametrize("budget_cases", [1, 2, 3])
def test_conv_in_small_chunks_matches_reference(monkeypatch, budget_cases):
    """CCN_UNFOLD_BYTES forcing chunks of 1-3 cases (the last one partial) gives the same results."""
    rng = np.random.default_rng()
    N, C, S, F, groups, fs, stride, padding = 7, 4, 9, 6, 2, 3, 2, 1
    Cf, M = C // groups, 1 + int(np.ceil((2 * padding + S - fs) / stride))
    geo = dict(N=N, C=C, S=S, F=F, groups=groups, Cf=Cf, fs=fs, stride=stride, padding=padding, M=M)
    per_case_bprop = 4 * (groups * Cf * fs * fs * M * M * 2 + F * M * M)
    monkeypatch.setenv("CCN_UNFOLD_BYTES", str(per_case_bprop * budget_cases))
    x, W = rng.standard_normal((N, C * S * S)), rng.standard_normal((Cf * fs * fs, F))
    ref = conv_ref(x, W, **geo)
    close(op("conv_fprop", {"x": x, "W": W, "y": np.full(ref.shape, np.nan)}, accumulate=0, **geo)["y"], ref,
          what=f"conv_fprop in chunks of {budget_cases}")
    y0 = rng.standard_normal(ref.shape)  # accumulating: out += conv, chunk by chunk
    close(op("conv_fprop", {"x": x, "W": W, "y": y0}, accumulate=1, **geo)["y"], y0 + ref,
          what=f"accumulating conv_fprop in chunks of {budget_cases}")
    dout = rng.standard_normal(ref.shape)
    din0, dW0 = rng.standard_normal(x.shape), rng.standard_normal(W.shape)  # din += ..., dW += ...
    full = op("conv_bprop", {"x": x, "W": W, "dout": dout, "din": din0, "dW": dW0}, **geo)
    monkeypatch.delenv("CCN_UNFOLD_BYTES")
    whole = op("conv_bprop", {"x": x, "W": W, "dout": dout, "din": din0, "dW": dW0}, **geo)
    close(full["din"], whole["din"], rtol=1e-5, what=f"conv_bprop din in chunks of {budget_cases} vs one chunk")
    close(full["dW"], whole["dW"], rtol=1e-5, what=f"conv_bprop dW in chunks of {budget_cases} vs one chunk")


# ---- the CPU layer as the reference -------------------------------------------------------
def cpu_layer(text, x, dims, layer, dout=None):
    """Forward (and backward with output gradient dout) of one layer on the CPU backend."""
    net = ccn.Net("<review>", None, {0: dims}, seed=0, layers_text=text)
    net._net.set_data_grads(True)
    net.forward([np.ascontiguousarray(x, np.float32)], train=True)
    y = net.output(layer)
    if dout is None:
        return y, None
    net.backward({layer: np.ascontiguousarray(dout, np.float32)})
    return y, net.output_grad("data")


def special_planes(rng, N, C, S):
    """Random values with whole -inf regions, NaNs, +inf, and many ties."""
    x = rng.integers(-3, 4, (N, C, S, S)).astype(np.float32)
    x[0, 0] = -np.inf  # a whole plane of -inf: every window's max is -inf
    if C > 1:
        x[0, 1, :2, :] = np.nan  # NaN rows at the top of the windows
    x[-1, -1, S // 2, S // 2] = np.inf
    x[-1, 0, 1, 1] = np.nan
    return x.reshape(N, -1)


@pytest.mark.cuda
@pytest.mark.parametrize("pool", ["max", "maxabs", "avg"])
@pytest.mark.parametrize("S,size,stride,start", [(7, 3, 2, 0), (6, 3, 2, -1), (9, 4, 3, 1), (5, 2, 1, 0)])
def test_pool_matches_cpu_layer_bit_for_bit(pool, S, size, stride, start):
    rng = np.random.default_rng()
    N, C = 3, 3
    O = int(np.ceil((S - start - size) / stride)) + 1
    text = (f"[data]\ntype=data\ndataIdx=0\n\n[pool]\ntype=pool\npool={pool}\ninputs=data\nchannels={C}\n"
            f"sizeX={size}\nstride={stride}\nstart={start}\n")
    x = special_planes(rng, N, C, S) if pool != "avg" else rng.standard_normal((N, C * S * S)).astype(np.float32)
    dout = rng.standard_normal((N, C * O * O)).astype(np.float32)
    y_cpu, din_cpu = cpu_layer(text, x, (C, S, S), "pool", dout)
    geo = dict(N=N, C=C, S=S, O=O, sizeX=size, start=start, stride=stride, max=int(pool != "avg"),
               abs=int(pool == "maxabs"))
    y = op("pool_fprop", {"x": x, "y": np.full(y_cpu.shape, 7.0)}, **geo)["y"]
    din = op("pool_bprop", {"x": x, "y": y, "dout": dout, "din": np.zeros_like(x)}, **geo)["din"]
    if pool == "avg":  # the same operations in the same order; allow for a compiler's liberties
        close(y, y_cpu, rtol=1e-6, what=f"pool={pool} forward, GPU vs CPU layer")
        close(din, din_cpu, rtol=1e-6, what=f"pool={pool} backward, GPU vs CPU layer")
    else:
        same_bits(y, y_cpu, f"pool={pool} forward, GPU vs CPU layer")
        same_bits(din, din_cpu, f"pool={pool} backward, GPU vs CPU layer")
    if pool == "max":
        assert np.all(np.isneginf(y.reshape(N, C, O, O)[0, 0])), "all -inf windows must give -inf"


@pytest.mark.cuda
def test_cmpool_nan_and_ties_match_cpu_layer():
    rng = np.random.default_rng()
    N, C, S, size, stride = 2, 7, 4, 3, 2
    O = int(np.ceil((C - size) / stride)) + 1
    text = (f"[data]\ntype=data\ndataIdx=0\n\n[cm]\ntype=cmpool\npool=max\ninputs=data\nchannels={C}\n"
            f"size={size}\nstride={stride}\n")
    x = special_planes(rng, N, C, S)
    dout = rng.standard_normal((N, O * S * S)).astype(np.float32)
    y_cpu, din_cpu = cpu_layer(text, x, (C, S, S), "cm", dout)
    geo = dict(N=N, C=C, SS=S * S, O=O, size=size, start=0, stride=stride)
    y = op("cmpool_fprop", {"x": x, "y": np.zeros_like(y_cpu)}, **geo)["y"]
    same_bits(y, y_cpu, "cmpool forward, GPU vs CPU layer")
    din = op("cmpool_bprop", {"x": x, "y": y, "dout": dout, "din": np.zeros_like(x)}, **geo)["din"]
    same_bits(din, din_cpu, "cmpool backward, GPU vs CPU layer")


@pytest.mark.cuda
def test_eltmax_nan_matches_cpu_layer():
    rng = np.random.default_rng()
    xs = [rng.integers(-2, 3, (4, 10)).astype(np.float32) for _ in range(3)]
    xs[0][0, :3] = np.nan  # first input NaN: the CPU's std::max keeps it
    xs[1][1, :3] = np.nan  # later input NaN: the CPU's std::max ignores it
    text = ("[d0]\ntype=data\ndataIdx=0\n[d1]\ntype=data\ndataIdx=1\n[d2]\ntype=data\ndataIdx=2\n"
            "[m]\ntype=eltmax\ninputs=d0,d1,d2\n")
    net = ccn.Net("<review>", None, {0: 10, 1: 10, 2: 10}, seed=0, layers_text=text)
    net.forward(xs, train=True)
    y = op("eltmax_fprop", {f"x{i}": x for i, x in enumerate(xs)} | {"y": np.zeros((4, 10))}, inputs=3)["y"]
    same_bits(y, net.output("m"), "eltmax forward, GPU vs CPU layer")


@pytest.mark.cuda
def test_large_upload_arrives_before_the_op_runs():
    """64 MB through the harness: the op (identity neuron) must see every element."""
    x = np.arange(1 << 24, dtype=np.float32)
    y = op("neuron_fprop", {"x": x, "y": np.zeros_like(x)}, code=0, a=1, b=1)["y"]
    same_bits(y, x, "identity neuron on a 64 MB array")


@pytest.mark.cuda
@pytest.mark.parametrize("kind", ["rnorm", "cmrnorm", "cnorm"])
@pytest.mark.parametrize("pw", [0.75, 0.5, 1.0, 0.6])
def test_norms_match_cpu_layer_bit_for_bit(kind, pw):
    """The norm kernels repeat the CPU layers' float operations in order, without fused
    multiply-adds: bit for bit with the CPU for the exponents inv_pow computes exactly
    (0.75, 0.5, 1); within float error with powf (0.6). tools/cuda_transcribe.py checks the
    same on the CPU with a transcription of these kernels."""
    rng = np.random.default_rng()
    N, C, S, size = 3, 5, 6, 3
    scale, md = 1.7, 1.3
    alpha = scale / size if kind == "cmrnorm" else scale / (size * size)
    text = (f"[data]\ntype=data\ndataIdx=0\n\n[L]\ntype={kind}\ninputs=data\nchannels={C}\nsize={size}\n"
            f"scale={scale!r}\npow={pw!r}\nminDiv={md!r}\n")
    x = rng.standard_normal((N, C * S * S)).astype(np.float32)
    dout = rng.standard_normal(x.shape).astype(np.float32)
    y_cpu, din_cpu = cpu_layer(text, x, (C, S, S), "L", dout)
    geo = dict(N=N, C=C, S=S, size=size, a=alpha, pow=pw, minDiv=md, blocked=0)
    r = op(f"{kind}_fprop", {"x": x, "y": np.full(x.shape, np.nan), "state": np.zeros(2 * x.size)}, **geo)
    din = op(f"{kind}_bprop", {"x": x, "y": r["y"], "state": r["state"], "dout": dout, "din": np.zeros_like(x)},
             **geo)["din"]
    if pw in (0.75, 0.5, 1.0):
        same_bits(r["y"], y_cpu, f"{kind} forward (pow {pw}), GPU vs CPU layer")
        same_bits(din, din_cpu, f"{kind} backward (pow {pw}), GPU vs CPU layer")
    else:
        close(r["y"], y_cpu, rtol=1e-6, what=f"{kind} forward (pow {pw}), GPU vs CPU layer")
        close(din, din_cpu, rtol=1e-5, what=f"{kind} backward (pow {pw}), GPU vs CPU layer")


@pytest.mark.cuda
def test_sgd_update_and_axpy_are_the_cpu_bits():
    """sgd_update and axpy (eltsum, cost.sum2, dropout's test pass) round each product and
    sum as the CPU does (no fused multiply-add): NumPy float32 gives the same bits."""
    rng = np.random.default_rng()
    f32 = np.float32
    w, inc, g = (rng.standard_normal((3, 6, 7)) * 0.3).astype(f32)
    mom, scale, decay = f32(0.9), f32(0.0123), f32(0.0005)
    r = op("sgd", {"w": w, "inc": inc, "grad": g}, mom=float(mom), scale=float(scale), decay=float(decay))
    inc2 = (mom * inc - scale * g) - decay * w  # float32 throughout, left to right as Net::update
    same_bits(r["inc"], inc2, "sgd increment vs the CPU rule in float32")
    same_bits(r["w"], w + inc2, "sgd weights vs the CPU rule in float32")
    xs = [rng.standard_normal((4, 9)).astype(f32) for _ in range(3)]
    arrays = {f"x{i}": x for i, x in enumerate(xs)} | {f"din{i}": np.zeros((4, 9), f32) for i in range(3)}
    c = [f32(0.7), f32(-1.3), f32(2.1)]
    y = op("eltsum", arrays | {"y": np.zeros((4, 9)), "dout": xs[0]}, inputs=3, c0=float(c[0]), c1=float(c[1]),
           c2=float(c[2]))["y"]
    want = (c[0] * xs[0] + c[1] * xs[1]) + c[2] * xs[2]
    same_bits(y, want, "eltsum vs the CPU layer's float32 rule")


@pytest.mark.cuda
def test_cost_gradients_are_the_cpu_bits():
    """cost.logreg's gradient divides the layer's double coeff in double (was: in float, with
    coeff rounded to float first); cost.bce's d - c * (...) is not fused. Both as the CPU."""
    rng = np.random.default_rng()
    f32 = np.float32
    N, K, coeff = 9, 7, 0.1  # 0.1 is not a float: the old float path differed in the last bit
    p = rng.uniform(0.01, 1, (N, K)).astype(f32)
    lab = rng.integers(0, K, (N, 1)).astype(f32)
    d0 = rng.standard_normal((N, K)).astype(f32)
    got = op("logreg_bprop", {"labels": lab, "probs": p, "dprobs": d0}, coeff=coeff)["dprobs"]
    want = d0.copy()
    rows, cols = np.arange(N), lab[:, 0].astype(int)
    want[rows, cols] = want[rows, cols] + (-coeff / np.maximum(p[rows, cols], f32(1e-38)).astype(np.float64)).astype(f32)
    same_bits(got, want, "logreg_bprop vs the CPU rule")
    t = (rng.random((N, K)) < 0.4).astype(f32)
    y = rng.uniform(0.001, 0.999, (N, K)).astype(f32)
    c, pw = f32(0.3), f32(1.7)
    got = op("bce_bprop", {"labels": t, "y": y, "dy": d0}, coeff=float(c), pos_weight=float(pw))
    want = d0 - c * (pw * t / np.maximum(y, f32(1e-38)) - (f32(1) - t) / np.maximum(f32(1) - y, f32(1e-38)))
    same_bits(got["dy"], want, "bce_bprop vs the CPU rule")
