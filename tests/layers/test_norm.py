"""rnorm, cmrnorm and cnorm against NumPy float64 references written from the definitions
(SPEC "Normalisation layers"), and their key rules."""

import numpy as np
import pytest

import ccn
from ccn.errors import ConfigError
from layercheck import check_layer


def shifted(a, dy, dx):
    """b[..., y, x] = a[..., y + dy, x + dx], zero where that is outside the image."""
    S = a.shape[-1]
    b = np.zeros_like(a)
    y0, y1, x0, x1 = max(0, -dy), min(S, S - dy), max(0, -dx), min(S, S - dx)
    if y0 < y1 and x0 < x1:
        b[..., y0:y1, x0:x1] = a[..., y0 + dy:y1 + dy, x0 + dx:x1 + dx]
    return b


def window_sum(a, N):
    """Sum over the N x N window [p - N//2, p - N//2 + N) in y and x, clipped at the borders."""
    lo = -(N // 2)
    return sum(shifted(a, lo + i, lo + j) for i in range(N) for j in range(N))


def rnorm_ref(x, C, S, N, scale, pw, min_div):
    x = x.reshape(len(x), C, S, S)
    D = min_div + scale / N**2 * window_sum(x * x, N)
    return (x * D**-pw).reshape(len(x), -1)


def cnorm_ref(x, C, S, N, scale, pw, min_div):
    x = x.reshape(len(x), C, S, S)
    mean = window_sum(x, N) / window_sum(np.ones_like(x), N)  # average over the pixels inside the image
    d = x - mean
    D = min_div + scale / N**2 * window_sum(d * d, N)
    return (x * D**-pw).reshape(len(x), -1)


def cmrnorm_ref(x, C, S, N, scale, pw, min_div, blocked=False):
    x = x.reshape(len(x), C, S * S)
    out = np.empty_like(x)
    for c in range(C):
        if blocked:
            c0 = (c // N) * N
            c1 = min(C, c0 + N)
        else:
            c0, c1 = max(0, c - N // 2), min(C, c - N // 2 + N)
        D = min_div + scale / N * (x[:, c0:c1] ** 2).sum(axis=1)
        out[:, c] = x[:, c] * D**-pw
    return out.reshape(len(x), -1)


REFS = {"rnorm": rnorm_ref, "cnorm": cnorm_ref, "cmrnorm": cmrnorm_ref}


def layers_text(kind, C, N, size_key="size", extra=""):
    return (f"[data]\ntype=data\ndataIdx=0\n\n[n]\ntype={kind}\ninputs=data\nchannels={C}\n{size_key}={N}\n"
            + extra)


def params_text(scale, pw, min_div=None):
    t = f"[n]\nscale={scale}\npow={pw}\n"
    if min_div is not None:
        t += f"minDiv={min_div}\n"
    return t


def random_params(rng):
    # scale large enough that the denominator's derivative matters as much as the numerator's
    scale, pw = float(rng.uniform(0.5, 3)), float(rng.choice([0.75, 0.5, 1.0, 0.6]))  # 0.75/0.5/1 have fast paths
    min_div = None if rng.random() < 0.3 else float(rng.choice([1.0, 2.0, 0.5]))
    return scale, pw, min_div


@pytest.mark.parametrize("kind", ["rnorm", "cnorm"])
@pytest.mark.parametrize("S,N", [(5, 3), (7, 4), (6, 2), (5, 5), (7, 1), (4, 3)])
def test_spatial_norm(kind, S, N):
    rng = np.random.default_rng()
    n, C = int(rng.choice([1, 2, 3])), int(rng.integers(1, 3))
    x = rng.standard_normal((n, C, S, S))
    scale, pw, md = random_params(rng)
    net = check_layer(layers_text(kind, C, N), {"data": (0, x)},
                      lambda a: REFS[kind](a["data"], C, S, N, scale, pw, 1.0 if md is None else md), "n",
                      params_text=params_text(scale, pw, md))
    assert net.layer("n").shape == (C, S, S)


@pytest.mark.parametrize("C,N,blocked", [(5, 3, 0), (6, 4, 0), (7, 2, 0), (4, 4, 0), (3, 1, 0),
                                         (7, 3, 1), (8, 4, 1), (5, 2, 1)])
def test_cmrnorm(C, N, blocked):
    rng = np.random.default_rng()
    n, S = int(rng.choice([1, 2, 5])), int(rng.choice([1, 3]))
    x = rng.standard_normal((n, C, S, S))
    scale, pw, md = random_params(rng)
    extra = f"blocked={blocked}\n" if blocked or rng.random() < 0.5 else ""
    check_layer(layers_text("cmrnorm", C, N, extra=extra), {"data": (0, x)},
                lambda a: cmrnorm_ref(a["data"], C, S, N, scale, pw, 1.0 if md is None else md, bool(blocked)), "n",
                params_text=params_text(scale, pw, md))


def test_norm_with_neuron_and_flat_input():
    rng = np.random.default_rng()
    n, C, S, N = 3, 2, 5, 3
    x = rng.standard_normal((n, C * S * S))
    text = layers_text("cnorm", C, N, extra="neuron=tanh[1.5,0.5]\n")
    # pow=0.6 takes the general powf path
    check_layer(text, {"data": (0, x)}, lambda a: 1.5 * np.tanh(0.5 * cnorm_ref(a["data"], C, S, N, 2.0, 0.6, 1.0)),
                "n", params_text=params_text(2.0, 0.6))


def _forward(net, x):
    net.forward({0: x.reshape(len(x), -1).astype(np.float32)})
    return net.output("n")


def test_old_spelling_and_keys_in_the_definition_file():
    """Pre-release 2012 files (layers-example.cfg) give sizeX, scale and pow in the definition file."""
    rng = np.random.default_rng()
    C, S, N = 2, 6, 3
    x = rng.standard_normal((2, C, S, S)).astype(np.float32).astype(np.float64)
    for kind in ("rnorm", "cnorm", "cmrnorm"):
        text = layers_text(kind, C if kind != "cmrnorm" else 4, N if kind != "cmrnorm" else 3, "sizeX",
                           "scale=1.5\npow=0.75\n")
        c = C if kind != "cmrnorm" else 4
        xx = rng.standard_normal((2, c, S, S)).astype(np.float32).astype(np.float64)
        # also with a layer-params file that has no section for the layer (layer-params-example.cfg)
        for ptext in (None, "[data]\n"):
            net = ccn.Net("<t>", "<p>" if ptext else None, {0: (c, S, S)}, layers_text=text, params_text=ptext)
            np.testing.assert_allclose(_forward(net, xx), REFS[kind](xx, c, S, 3, 1.5, 0.75, 1.0), rtol=2e-4, atol=2e-5)
    del x


def test_params_file_wins_and_reload_params():
    rng = np.random.default_rng()
    C, S, N = 3, 5, 3
    x = rng.standard_normal((3, C, S, S)).astype(np.float32).astype(np.float64)
    text = layers_text("rnorm", C, N, extra="scale=9\npow=0.1\n")
    net = ccn.Net("<t>", "<p>", {0: (C, S, S)}, layers_text=text, params_text=params_text(2.0, 0.75, 2))
    np.testing.assert_allclose(_forward(net, x), rnorm_ref(x, C, S, N, 2.0, 0.75, 2.0), rtol=2e-4, atol=2e-5)
    net.reload_params("<p2>", params_text(0.5, 1.0))  # minDiv back to its default 1
    np.testing.assert_allclose(_forward(net, x), rnorm_ref(x, C, S, N, 0.5, 1.0, 1.0), rtol=2e-4, atol=2e-5)


def test_reference_18pct_rnorm_params():
    """layer-params-18pct.cfg style: scale=0.00005 pow=.75 in the params file, size in the definition."""
    rng = np.random.default_rng()
    C, S, N = 4, 5, 3
    x = rng.standard_normal((2, C, S, S)).astype(np.float32).astype(np.float64) * 30
    net = ccn.Net("<t>", "<p>", {0: (C, S, S)}, layers_text=layers_text("rnorm", C, N),
                  params_text="[n]\nscale=0.00005\npow=.75\n")
    np.testing.assert_allclose(_forward(net, x), rnorm_ref(x, C, S, N, 0.00005, 0.75, 1.0), rtol=2e-4, atol=2e-5)


# ---- bad input ------------------------------------------------------------------------------

def _expect(text, ptext, dims, *fragments):
    with pytest.raises(ConfigError) as ei:
        ccn.Net("<bad-layers>", "<bad-params>" if ptext is not None else None, dims, layers_text=text,
                params_text=ptext)
    msg = str(ei.value)
    for f in fragments:
        assert f in msg, f"{f!r} not in {msg!r}"


P = params_text(1, 0.75)


@pytest.mark.parametrize("kind", ["rnorm", "cnorm", "cmrnorm"])
def test_norm_bad_window(kind):
    dims = {0: (4, 5, 5)}
    _expect(layers_text(kind, 4, 0), P, dims, "<bad-layers>:9:", "[n]", "key 'size'", "must be between 1 and")
    big = 6 if kind != "cmrnorm" else 5
    _expect(layers_text(kind, 4, big), P, dims, "<bad-layers>:9:", "key 'size'", "must be between 1 and")
    _expect(layers_text(kind, 4, 3, extra="sizeX=3\n"), P, dims, "key 'sizeX'", "not both")
    _expect(layers_text(kind, 3, 3), P, dims, "<bad-layers>:8:", "key 'channels'", "not a multiple of channels=3")


def test_norm_blocked_only_for_cmrnorm():
    _expect(layers_text("rnorm", 4, 3, extra="blocked=1\n"), P, {0: (4, 5, 5)}, "<bad-layers>:10:", "key 'blocked'",
            "applies only to cross-map")
    _expect(layers_text("cmrnorm", 4, 3, extra="blocked=maybe\n"), P, {0: (4, 5, 5)}, "key 'blocked'")


def test_norm_bad_params():
    dims = {0: (4, 5, 5)}
    text = layers_text("cmrnorm", 4, 3)
    _expect(text, "[n]\npow=0.75\n", dims, "<bad-params>", "[n]", "'scale'")
    _expect(text, "[data]\n", dims, "<bad-params>", "needs a [n] section with key 'scale'")
    _expect(text, "[n]\nscale=-1\npow=0.75\n", dims, "<bad-params>:2:", "key 'scale'", "must not be negative")
    _expect(text, "[n]\nscale=1\npow=0.75\nminDiv=0\n", dims, "<bad-params>:4:", "key 'minDiv'", "must be positive")
    _expect(text, "[n]\nscale=1\npow=abc\n", dims, "<bad-params>:3:", "key 'pow'", "expected a number")
    _expect(text, "[n]\nscale=1\npow=0.75\nscal=2\n", dims, "<bad-params>:4:", "key 'scal'", "Did you mean 'scale'")
    _expect(layers_text("rnorm", 4, 3, extra="sizeXX=3\n"), P, dims, "<bad-layers>:10:", "key 'sizeXX'",
            "Did you mean 'sizeX'")
    _expect(text + "blocked=1\n", "[n]\nscale=1\npow=0.75\nblocked=1\n", dims, "<bad-params>:4:", "key 'blocked'",
            "belongs in the layer-definition file")
