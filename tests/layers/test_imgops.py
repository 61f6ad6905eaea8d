"""Image-operation layers (blur, nailbed, resize, href, rscale, crop, rgb2yuv, rgb2lab) and sfc.

Each forward reference below is written in NumPy float64 from the definitions in
cuda-convnet2 (layer.py parsers, cudaconv3/src/conv_util.cu kernels), independently of the
C++ code; check_layer compares our forward and backward against it (backward by central
finite differences of the reference). Sizes come from fresh random seeds (printed, so a
failure can be replayed), with odd sizes and minibatches of 1 and odd sizes.
"""


import numpy as np
import pytest

import ccn
from layercheck import check_layer, expect_config_error

M64 = (1 << 64) - 1


def fresh_rng():
    seed = int(np.random.SeedSequence().entropy % (1 << 32))
    print("rng seed", seed)
    return np.random.default_rng(seed)


def batch(rng):
    return int(rng.choice([1, 3, 5]))


def one_layer(section: str, body: str) -> str:
    return f"[data]\ntype=data\ndataIdx=0\n[{section}]\ninputs=data\n{body}"


# ---------------------------------------------------------------- references (N, C, S, S)


def blur_ref(x, fs, sd):
    r = fs // 2
    f = np.exp(-((r - np.arange(fs)) ** 2) / (2.0 * sd * sd))
    f /= f.sum()
    S = x.shape[-1]
    p = np.pad(x, ((0, 0), (0, 0), (0, 0), (r, r)))
    t = sum(f[k] * p[..., :, k:k + S] for k in range(fs))          # along x
    p = np.pad(t, ((0, 0), (0, 0), (r, r), (0, 0)))
    return sum(f[k] * p[..., k:k + S, :] for k in range(fs))       # then along y


def nailbed_ref(x, stride):
    S = x.shape[-1]
    ox = (S + stride - 1) // stride
    start = (S - stride * (ox - 1)) // 2
    idx = start + stride * np.arange(ox)
    return x[:, :, idx][:, :, :, idx]


def bilinear_ref(x, T, scale):
    """Target pixel p samples clamp(p*scale + S/2 - T/2*scale, 0, S - 1.01), bilinearly."""
    S = x.shape[-1]
    pos = np.clip(np.arange(T) * scale + S / 2 - T / 2 * scale, 0, S - 1.01)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, S - 1)
    fr = pos - lo
    rows = x[:, :, lo, :] * (1 - fr)[:, None] + x[:, :, hi, :] * fr[:, None]
    return rows[..., lo] * (1 - fr) + rows[..., hi] * fr


def crop_ref(x, T, sy, sx):
    return x[:, :, sy:sy + T, sx:sx + T]


YUV = np.array([[0.2126, 0.7152, 0.0722], [-0.09991, -0.33609, 0.436], [0.615, -0.55861, -0.05639]])
XYZ = np.array([[0.49, 0.31, 0.2], [0.17697, 0.8124, 0.01063], [0.0, 0.01, 0.99]])


def rgb2yuv_ref(x):
    return np.einsum("kc,ncyx->nkyx", YUV, x)


def rgb2lab_ref(x, center):
    t = np.einsum("kc,ncyx->nkyx", XYZ, x)
    f = np.where(t > 0.0088564517, np.abs(t) ** 0.3333, 7.787037 * t + 0.13793103)
    L = 116 * f[:, 1] - 16 - (50 if center else 0)
    return np.stack([L, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], axis=1)


# ---------------------------------------------------------------- blur


@pytest.mark.parametrize("fs", [3, 5, 7, 9])
def test_blur(fs):
    rng = fresh_rng()
    n, c, S = batch(rng), int(rng.integers(1, 4)), int(rng.integers(fs, fs + 3))
    sd = float(rng.uniform(0.4, 3.0))
    x = rng.standard_normal((n, c, S, S))
    text = one_layer("b", f"type=blur\nchannels={c}\nfilterSize={fs}\nstdev={sd!r}\n")
    check_layer(text, {"data": (0, x)}, lambda a: blur_ref(a["data"], fs, sd), "b")


def test_blur_known_filter():
    # filterSize=3, stdev=1: f = [e^-0.5, 1, e^-0.5] / (1 + 2 e^-0.5); a single 1 in the
    # centre of a 3x3 image spreads to the outer product f f^T.
    x = np.zeros((1, 1, 3, 3))
    x[0, 0, 1, 1] = 1
    net = ccn.Net("<t>", None, {0: (1, 3, 3)}, layers_text=one_layer("b", "type=blur\nchannels=1\nfilterSize=3\nstdev=1\n"))
    net.forward({0: x.reshape(1, -1).astype(np.float32)}, train=False)
    e = np.exp(-0.5)
    f = np.array([e, 1, e]) / (1 + 2 * e)
    np.testing.assert_allclose(net.output("b").reshape(3, 3), np.outer(f, f), rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------- nailbed


@pytest.mark.parametrize("stride", [1, 2, 3, 4])
def test_nailbed(stride):
    rng = fresh_rng()
    n, c, S = batch(rng), int(rng.integers(1, 4)), int(rng.integers(stride, 12))
    x = rng.standard_normal((n, c, S, S))
    text = one_layer("nb", f"type=nailbed\nchannels={c}\nstride={stride}\n")
    net = check_layer(text, {"data": (0, x)}, lambda a: nailbed_ref(a["data"], stride), "nb")
    ox = -(-S // stride)
    assert tuple(net.layers[1].shape) == (c, ox, ox)


@pytest.mark.parametrize("S,stride,kept", [(5, 2, [0, 2, 4]), (6, 4, [1, 5]), (7, 3, [0, 3, 6]), (8, 3, [1, 4, 7]),
                                           (4, 5, [2])])
def test_nailbed_start(S, stride, kept):
    # start = (S - stride*(outputsX - 1)) // 2 with outputsX = ceil(S / stride)
    x = np.arange(S * S, dtype=np.float32).reshape(1, S * S)
    net = ccn.Net("<t>", None, {0: (1, S, S)}, layers_text=one_layer("nb", f"type=nailbed\nchannels=1\nstride={stride}\n"))
    net.forward({0: x}, train=False)
    k = np.array(kept)
    np.testing.assert_array_equal(net.output("nb").reshape(len(k), len(k)), (k[:, None] * S + k[None, :]))


# ---------------------------------------------------------------- resize


@pytest.mark.parametrize("trial", range(4))
def test_resize(trial):
    rng = fresh_rng()
    n, c, S = batch(rng), int(rng.integers(1, 4)), int(rng.integers(2, 11))
    scale = float(rng.uniform(0.5, 2.0))
    T = int(np.floor(S / scale))
    if T < 1:
        scale, T = 1.0, S
    x = rng.standard_normal((n, c, S, S))
    text = one_layer("r", f"type=resize\nchannels={c}\nscale={scale!r}\n")
    net = check_layer(text, {"data": (0, x)}, lambda a: bilinear_ref(a["data"], T, scale), "r")
    assert tuple(net.layers[1].shape) == (c, T, T)


def test_resize_edges_and_exact_samples():
    # scale=1: p samples p, except the last pixel, clamped to S - 1.01 (the original's edge rule).
    S = 3
    x = np.arange(9, dtype=np.float32).reshape(1, 9)
    net = ccn.Net("<t>", None, {0: (1, S, S)}, layers_text=one_layer("r", "type=resize\nchannels=1\nscale=1\n"))
    net.forward({0: x}, train=False)
    pos = np.array([0, 1, 1.99])
    want = pos[:, None] * S + pos[None, :]   # bilinear of a linear ramp is exact
    np.testing.assert_allclose(net.output("r").reshape(3, 3), want, rtol=1e-6, atol=1e-5)
    # scale=2 on 4x4: T=2, samples at 0 and 2 exactly.
    x = np.arange(16, dtype=np.float32).reshape(1, 16)
    net = ccn.Net("<t>", None, {0: (1, 4, 4)}, layers_text=one_layer("r", "type=resize\nchannels=1\nscale=2\n"))
    net.forward({0: x}, train=False)
    np.testing.assert_allclose(net.output("r").reshape(2, 2), [[0, 2], [8, 10]], atol=1e-6)


# ---------------------------------------------------------------- href, crop


@pytest.mark.parametrize("c", [1, 2, 3])
def test_href(c):
    rng = fresh_rng()
    n, S = batch(rng), int(rng.integers(1, 9))
    x = rng.standard_normal((n, c, S, S))
    check_layer(one_layer("h", f"type=href\nchannels={c}\n"), {"data": (0, x)}, lambda a: a["data"][..., ::-1], "h")


@pytest.mark.parametrize("with_y", [False, True])
def test_crop(with_y):
    rng = fresh_rng()
    n, c, S = batch(rng), int(rng.integers(1, 4)), int(rng.integers(2, 10))
    T = int(rng.integers(1, S + 1))
    sx = int(rng.integers(0, S - T + 1))
    sy = int(rng.integers(0, S - T + 1)) if with_y else sx
    x = rng.standard_normal((n, c, S, S))
    body = f"type=crop\nchannels={c}\nstartX={sx}\nsizeX={T}\n" + (f"startY={sy}\n" if with_y else "")
    net = check_layer(one_layer("cr", body), {"data": (0, x)}, lambda a: crop_ref(a["data"], T, sy, sx), "cr")
    assert tuple(net.layers[1].shape) == (c, T, T)


# ---------------------------------------------------------------- colour transforms


def test_rgb2yuv():
    rng = fresh_rng()
    n, S = batch(rng), int(rng.integers(1, 7))
    x = rng.uniform(0, 1, (n, 3, S, S))
    check_layer(one_layer("y", "type=rgb2yuv\n"), {"data": (0, x)}, lambda a: rgb2yuv_ref(a["data"]), "y")


@pytest.mark.parametrize("center", [0, 1])
def test_rgb2lab(center):
    rng = fresh_rng()
    n, S = batch(rng), int(rng.integers(1, 6))
    x = rng.uniform(0.05, 1, (n, 3, S, S))       # X, Y, Z above the threshold: the power branch
    check_layer(one_layer("l", f"type=rgb2lab\ncenter={center}\n"), {"data": (0, x)},
                lambda a: rgb2lab_ref(a["data"], center), "l", atol=2e-3, grad_atol=1e-2)


def test_rgb2lab_linear_branch():
    rng = fresh_rng()
    x = rng.uniform(0.0, 0.008, (3, 3, 2, 2))    # X, Y, Z below 0.0088564517: the linear branch
    check_layer(one_layer("l", "type=rgb2lab\n"), {"data": (0, x)}, lambda a: rgb2lab_ref(a["data"], False), "l",
                atol=2e-3, grad_atol=1e-2)


def test_rgb_transforms_accept_flat_input():
    # The originals only need 3*S*S values per case; a flat 48-value input is 3 x 4 x 4.
    rng = fresh_rng()
    x = rng.uniform(0, 1, (2, 48))
    check_layer(one_layer("y", "type=rgb2yuv\n"), {"data": (0, x)},
                lambda a: rgb2yuv_ref(a["data"].reshape(-1, 3, 4, 4)), "y", data_dims={0: 48})


# ---------------------------------------------------------------- rscale


def mix64(x):
    x = (x + 0x9E3779B97F4A7C15) & M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & M64
    return x ^ (x >> 31)


def uniform01(seed, stream, idx):
    return np.float32((mix64(seed ^ mix64(stream ^ mix64(idx))) >> 40) / 16777216.0)


def rscale_draw(S, T, max_scale, seed, layer_id, step):
    """The documented draw: scale s with probability (s+1)^2 / sum, R = T + s, factor, crop origin."""
    m = int(np.float32(S) / np.float32(max_scale))
    n = S - m + 1
    crops = n * (n + 1) * (2 * n + 1) // 6
    cum = np.cumsum([(k + 1) ** 2 / crops for k in range(n)])
    r = float(uniform01(seed, layer_id, 4 * step))
    R, factor = T, np.float32(max_scale)
    for k in range(n):
        if r <= cum[k]:
            R = T + k
            end = float(np.float32(S) / np.float32(R))
            start = max(1.0, S / (1.0 + R))
            factor = np.float32(start + float(uniform01(seed, layer_id, 4 * step + 1)) * (end - start))
            break
    ms = R - T
    sy = min(int(uniform01(seed, layer_id, 4 * step + 2) * np.float32(ms + 1)), ms)
    sx = min(int(uniform01(seed, layer_id, 4 * step + 3) * np.float32(ms + 1)), ms)
    return R, float(factor), sy, sx


def rscale_train_ref(x, T, max_scale, seed):
    S = x.shape[-1]
    R, factor, sy, sx = rscale_draw(S, T, max_scale, seed, layer_id=1, step=0)
    img = x if R == S else bilinear_ref(x, R, factor)
    return crop_ref(img, T, sy, sx)


def rscale_case(rng):
    c, S = int(rng.integers(1, 3)), int(rng.integers(3, 9))
    max_scale = float(rng.uniform(1.0, 2.0))
    T = int(rng.integers(int(np.floor(S / max_scale)), S + 1))
    return c, S, max(T, 1), max_scale


@pytest.mark.parametrize("trial", range(3))
def test_rscale_test_pass_is_fixed_resize(trial):
    rng = fresh_rng()
    c, S, T, ms = rscale_case(rng)
    x = rng.standard_normal((batch(rng), c, S, S))
    text = one_layer("rs", f"type=rscale\nchannels={c}\nmaxScale={ms!r}\ntgtSize={T}\n")
    check_layer(text, {"data": (0, x)}, lambda a: bilinear_ref(a["data"], T, ms), "rs", train=False)


@pytest.mark.parametrize("trial", range(4))
def test_rscale_training_pass(trial):
    rng = fresh_rng()
    c, S, T, ms = rscale_case(rng)
    seed = int(rng.integers(0, 1 << 31))
    x = rng.standard_normal((batch(rng), c, S, S))
    text = one_layer("rs", f"type=rscale\nchannels={c}\nmaxScale={ms!r}\ntgtSize={T}\n")
    check_layer(text, {"data": (0, x)}, lambda a: rscale_train_ref(a["data"], T, ms, seed), "rs", train=True, seed=seed)


def test_rscale_draws_vary_with_step_and_cover_the_scales():
    # 16x16 -> 8x8 with maxScale=2: 9 scales, R = 8 + s; over many steps every s shows up and
    # the frequencies follow (s+1)^2 roughly (checked through our own reproduction of the draw).
    S, T, ms, seed = 16, 8, 2.0, 7
    draws = [rscale_draw(S, T, ms, seed, 1, step)[0] - T for step in range(3000)]
    counts = np.bincount(draws, minlength=9)
    want = np.array([(k + 1) ** 2 for k in range(9)]) / 285 * 3000
    assert np.all(np.abs(counts - want) < 5 * np.sqrt(want) + 5)
    x = fresh_rng().standard_normal((2, S * S)).astype(np.float32)
    net = ccn.Net("<t>", None, {0: (1, S, S)}, seed=seed,
                  layers_text=one_layer("rs", f"type=rscale\nchannels=1\nmaxScale={ms}\ntgtSize={T}\n"))
    outs = []
    for step in range(6):
        net._net.step = step
        net.forward({0: x}, train=True)
        got = net.output("rs").astype(np.float64)
        R, f, sy, sx = rscale_draw(S, T, ms, seed, 1, step)
        img = x.reshape(2, 1, S, S).astype(np.float64)
        ref = crop_ref(img if R == S else bilinear_ref(img, R, f), T, sy, sx).reshape(2, -1)
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
        outs.append(got)
    assert any(not np.array_equal(outs[0], o) for o in outs[1:])


# ---------------------------------------------------------------- sfc


@pytest.mark.parametrize("parts", [1, 2, 3])
def test_sfc_two_inputs(parts):
    rng = fresh_rng()
    n = batch(rng)
    ka, kb, O = parts * int(rng.integers(1, 4)), parts * int(rng.integers(1, 3)), int(rng.integers(1, 4))
    a, b = rng.standard_normal((n, ka)), rng.standard_normal((n, kb))
    text = f"[a]\ntype=data\ndataIdx=0\n[b]\ntype=data\ndataIdx=1\n[s]\ntype=sfc\ninputs=a,b\nparts={parts}\noutputs={O}\n"

    def ref(v):
        out = np.tile(v["s.biases"], (n, 1))
        for name, w in (("a", "s.weights[0]"), ("b", "s.weights[1]")):
            x, W = v[name], v[w]
            kp = x.shape[1] // parts
            for p in range(parts):
                out[:, p * O:(p + 1) * O] += x[:, p * kp:(p + 1) * kp] @ W[p * kp:(p + 1) * kp]
        return out

    net = check_layer(text, {"a": (0, a), "b": (1, b)}, ref, "s")
    shapes = {p.name: tuple(p.shape) for p in net.params}
    assert shapes == {"s.weights[0]": (ka, O), "s.weights[1]": (kb, O), "s.biases": (1, O * parts)}


# ---------------------------------------------------------------- bad input


TWO_INPUTS = "[data]\ntype=data\ndataIdx=0\n[d2]\ntype=data\ndataIdx=1\n[x]\ninputs=data,d2\n"
BAD = [
    # (type and keys, data dims, key named, message fragment)
    ("type=blur\nchannels=0\nfilterSize=3\nstdev=1\n", (2, 9, 9), "channels", "at least 1, found 0"),
    ("type=blur\nchannels=2\nfilterSize=4\nstdev=1\n", (2, 9, 9), "filterSize", "one of 3, 5, 7, 9, found 4"),
    ("type=blur\nchannels=2\nfilterSize=3\nstdev=0\n", (2, 9, 9), "stdev", "positive number"),
    ("type=blur\nchannels=2\nfilterSize=3\nstdev=abc\n", (2, 9, 9), "stdev", "found 'abc'"),
    ("type=blur\nchannels=2\nfilterSize=3\nstddev=1\n", (2, 9, 9), "stddev", "spells .* 'stdev'"),
    ("type=blur\nchannels=2\nfilterSize=7\nstdev=1\n", (2, 5, 5), "filterSize", r"filter \(7\) must not be larger than the 5x5"),
    ("type=blur\nchannels=3\nfilterSize=3\nstdev=1\n", (2, 5, 5), "channels", "not a multiple of channels=3"),
    ("type=blur\nchannels=2\nfilterSize=3\nstdev=1\nstrid=2\n", (2, 5, 5), "strid", "not a key of layer type .blur."),
    ("type=nailbed\nchannels=2\nstride=0\n", (2, 6, 6), "stride", "at least 1, found 0"),
    ("type=nailbed\nchannels=2\nstride=2\n", (3, 4, 4), "channels", "not a square image"),
    ("type=resize\nchannels=1\nscale=3\n", (1, 6, 6), "scale", "range 0.5 to 2"),
    ("type=resize\nchannels=1\nscale=0.4\n", (1, 6, 6), "scale", "range 0.5 to 2"),
    ("type=resize\nchannels=1\nscale=2\n", (1, 1, 1), "scale", r"= 0 pixels per side"),
    ("type=href\nchannels=4\n", (4, 3, 3), "channels", "range 1 to 3"),
    ("type=crop\nchannels=1\nstartX=-1\nsizeX=2\n", (1, 5, 5), "startX", "range 0 to 4"),
    ("type=crop\nchannels=1\nstartX=5\nsizeX=2\n", (1, 5, 5), "startX", "range 0 to 4"),
    ("type=crop\nchannels=1\nstartX=0\nsizeX=0\n", (1, 5, 5), "sizeX", "range 1 to 5"),
    ("type=crop\nchannels=1\nstartX=0\nsizeX=6\n", (1, 5, 5), "sizeX", "range 1 to 5"),
    ("type=crop\nchannels=1\nstartX=3\nsizeX=3\n", (1, 5, 5), "sizeX", r"startX \(3\) \+ sizeX \(3\) passes"),
    ("type=crop\nchannels=1\nstartX=0\nstartY=3\nsizeX=3\n", (1, 5, 5), "startY", r"startY \(3\) \+ sizeX \(3\) passes"),
    ("type=crop\nchannels=1\nstartX=0\nstartY=9\nsizeX=3\n", (1, 5, 5), "startY", "range 0 to 4"),
    ("type=crop\nchannels=1\nsizeX=3\n", (1, 5, 5), "", "missing required key 'startX'"),
    ("type=rscale\nchannels=1\nmaxScale=2.5\ntgtSize=4\n", (1, 8, 8), "maxScale", "range 1 to 2"),
    ("type=rscale\nchannels=1\nmaxScale=1.5\ntgtSize=4\n", (1, 8, 8), "tgtSize", r"floor\(8 / 1.5\) = 5, found 4"),
    ("type=rscale\nchannels=1\nmaxScale=1.5\ntgtSize=9\n", (1, 8, 8), "tgtSize", "not be larger than the 8x8"),
    ("type=rgb2yuv\n", (2, 4, 4), "inputs", "3-channel"),
    ("type=rgb2lab\n", (1, 5, 5), "inputs", "3-channel"),
    ("type=rgb2lab\ncenter=maybe\n", (3, 2, 2), "center", "found 'maybe'"),
    ("type=rgb2yuv\nchannels=3\n", (3, 2, 2), "channels", "not a key of layer type .rgb2yuv."),
    ("type=sfc\nparts=0\noutputs=2\n", (1, 2, 2), "parts", "at least 1, found 0"),
    ("type=sfc\nparts=3\noutputs=2\n", (1, 2, 2), "parts", "4 values per case, which is not divisible by parts=3"),
    ("type=sfc\nparts=2\noutputs=0\n", (1, 2, 2), "outputs", "positive integer"),
    ("type=sfc\noutputs=2\n", (1, 2, 2), "", "missing required key 'parts'"),
]


@pytest.mark.parametrize("body,dims,key,fragment", BAD)
def test_bad_config(body, dims, key, fragment):
    expect_config_error(one_layer("x", body), {0: dims}, "x", key, fragment)


@pytest.mark.parametrize("ltype", ["blur", "nailbed", "resize", "href", "rscale", "crop", "rgb2yuv", "rgb2lab"])
def test_image_layers_take_one_input(ltype):
    expect_config_error(TWO_INPUTS + f"type={ltype}\n", {0: (3, 4, 4), 1: (3, 4, 4)}, "x", "inputs",
                        f"a {ltype} layer takes exactly one input, found 2")


def test_rscale_sample_just_below_an_integer():
    # Upsampling 8 -> R = 10 puts target pixel 5 exactly on the source centre: s = 4 in exact
    # arithmetic, 4 - 2^-22 in float. The original kernel's weight floor(s + 1) - s jumps to ~1
    # there (s + 1 rounds up to 5); ours stays continuous and equals the float64 reference.
    c, S, T, ms, seed = 2, 8, 7, 1.7679320906355993, 270520118
    assert rscale_draw(S, T, ms, seed, 1, 0)[0] == 10
    x = np.random.default_rng(0).standard_normal((3, c, S, S))
    text = one_layer("rs", f"type=rscale\nchannels={c}\nmaxScale={ms!r}\ntgtSize={T}\n")
    check_layer(text, {"data": (0, x)}, lambda a: rscale_train_ref(a["data"], T, ms, seed), "rs", train=True, seed=seed)
