"""Check a layer's forward and backward in one call (tinygrad style).

The only thing a layer test writes is an independent NumPy float64 forward reference.
``check_layer`` then
  1. builds a tiny net (data layers -> the layer under test) from the given layer text,
  2. compares our float32 forward output with the reference,
  3. compares our backward pass (gradients w.r.t. every data input and every parameter,
     for a random output gradient G, i.e. of the scalar sum(G * output)) with central
     finite differences of the float64 reference -- so no hand-derived gradient is trusted,
  4. runs the backward pass again with every gradient buffer zeroed first, so the layer adds
     into its input gradients instead of assigning them, and checks both branches agree,
  5. and once more with a second consumer of each data input that writes its gradient first,
     which the layer must add to.
``expect_config_error`` checks that a bad layer file is refused with the file, line, section
and key at the head of the message.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

import ccn
from ccn.errors import ConfigError


def numeric_grads(fn, arrays: dict, G: np.ndarray, h: float = 1e-6) -> dict:
    """d sum(G * fn(arrays)) / d arrays[k] for each k, by central differences in float64."""
    out = {}
    for k, a in arrays.items():
        a = np.array(a, dtype=np.float64)
        g = np.zeros_like(a)
        flat, gflat = a.reshape(-1), g.reshape(-1)
        for i in range(flat.size):
            old = flat[i]
            flat[i] = old + h
            fp = np.sum(G * fn({**arrays, k: a}))
            flat[i] = old - h
            fm = np.sum(G * fn({**arrays, k: a}))
            flat[i] = old
            gflat[i] = (fp - fm) / (2 * h)
        out[k] = g
    return out


def assert_close(ours, ref, rtol, atol, what):
    ours = np.asarray(ours, dtype=np.float64).reshape(np.shape(ref))
    ref = np.asarray(ref, dtype=np.float64)
    err = np.abs(ours - ref)
    tol = atol + rtol * np.abs(ref)
    if not np.all(err <= tol):
        i = np.unravel_index(np.argmax(err - tol), err.shape)
        raise AssertionError(f"{what}: {np.sum(err > tol)} of {err.size} values differ; worst at {i}: "
                             f"ours {ours[i]:.6g}, reference {ref[i]:.6g} (max abs err {err.max():.3g})")


def check_layer(layers_text: str, data: dict, ref_fn, layer: str, params_text: str = "",
                weights: dict | None = None, train: bool = True, rtol: float = 2e-4, atol: float = 2e-5,
                grad_rtol: float = 2e-3, grad_atol: float = 2e-4, check_grads: bool = True, seed: int = 0,
                data_dims: dict | None = None, no_grad: tuple = ()):
    """data: {data layer name: (dataIdx, array N x ...)}; weights: {param name: array} (random if absent).

    ref_fn(arrays) -> float64 output (N x ...) where arrays maps data layer names and param
    names to float64 arrays. Returns the net for further checks.
    """
    rng = np.random.default_rng(seed)
    dims = data_dims or {idx: tuple(arr.shape[1:]) if arr.ndim == 4 else int(np.prod(arr.shape[1:]))
                         for idx, arr in data.values()}
    net = ccn.Net("<test-layers>", "<test-params>" if params_text else None, dims, seed=seed,
                  layers_text=layers_text, params_text=params_text or None)
    net._net.set_data_grads(True)
    arrays = {name: np.asarray(arr, dtype=np.float32) for name, (idx, arr) in data.items()}
    for p in net.params:
        if p.layer != layer:
            continue
        w = weights.get(p.name) if weights else None
        if w is None:
            w = rng.standard_normal(p.shape).astype(np.float32) * 0.5
        net.set(p.name, w)
        arrays[p.name] = net.get(p.name)
    by_idx = {idx: arrays[name].reshape(len(arr), -1) for name, (idx, arr) in data.items()}
    net.forward(by_idx, train=train)
    ours = net.output(layer)
    arrays64 = {k: v.astype(np.float64) for k, v in arrays.items()}
    ref = np.asarray(ref_fn(arrays64), dtype=np.float64)
    n = ours.shape[0]
    assert_close(ours, ref.reshape(n, -1), rtol, atol, f"forward of '{layer}'")
    if not check_grads:
        return net
    G = rng.standard_normal(ours.shape)
    net._net.zero_param_grads()
    net.backward({layer: G.astype(np.float32)})
    wrt = {k: v for k, v in arrays64.items() if k not in no_grad}
    num = numeric_grads(lambda a: np.asarray(ref_fn(a), dtype=np.float64).reshape(n, -1), wrt, G)
    got_all = {}
    for k, g in num.items():
        if k in data:
            got = net.output_grad(k)
        else:
            got = net.get(k, "grad")
        got_all[k] = got
        assert_close(got, g.reshape(got.shape), grad_rtol, grad_atol, f"gradient w.r.t. '{k}'")
    # 4. In this small net the layer is the first writer of its inputs' gradients, so it may
    #    assign them (Layer::bprop_assigns_din); with every buffer zeroed first it must add
    #    instead. Both branches must give the same numbers (the same sums in the same order).
    eager = net._net.grad_zero_eager()
    net._net.set_grad_zero_eager(True)
    net._net.zero_param_grads()
    net.backward({layer: G.astype(np.float32)})
    net._net.set_grad_zero_eager(eager)
    for k, got in got_all.items():
        again = net.output_grad(k) if k in data else net.get(k, "grad")
        np.testing.assert_allclose(again, got, rtol=1e-6, atol=1e-7,
                                   err_msg=f"gradient w.r.t. '{k}': adding into zeroed buffers differs from assigning")
    # 5. The same with another consumer of each data input (an identity neuron layer after the
    #    layer, so its gradient G2 is written first): the layer must add to G2, not overwrite it.
    fed = [k for k in got_all if k in data]
    if fed:
        extra = "".join(f"\n[__also_{k}]\ntype=neuron\ninputs={k}\nneuron=ident\n" for k in fed)
        net2 = ccn.Net("<test-layers>", "<test-params>" if params_text else None, dims, seed=seed,
                       layers_text=layers_text + extra, params_text=params_text or None)
        net2._net.set_data_grads(True)
        for p in net.params:
            net2.set(p.name, net.get(p.name))
        net2.forward(by_idx, train=train)
        seeds = {layer: G.astype(np.float32)}
        G2 = {k: rng.standard_normal((n, net2.layer(f"__also_{k}").outputs)).astype(np.float32) for k in fed}
        seeds.update({f"__also_{k}": g for k, g in G2.items()})
        net2.backward(seeds)
        for k in fed:
            got = net2.output_grad(k) - G2[k].astype(np.float64).reshape(net2.output_grad(k).shape)
            np.testing.assert_allclose(got, got_all[k], rtol=1e-5, atol=1e-5,
                                       err_msg=f"gradient w.r.t. '{k}' with a second consumer: the layer must add "
                                               "to the gradient another layer wrote first")
    return net


def expect_config_error(text, dims, section, key, fragment):
    """Building the net from `text` raises a ConfigError whose message starts with the file, the
    line of `key` in `section` (or the section's line) and the key, and matches `fragment` (a
    regular expression): the form every layer-file error must have."""
    with pytest.raises(ConfigError) as e:
        ccn.Net("<test-layers>", None, dims, layers_text=text)
    msg = str(e.value)
    lines = text.split("\n")
    start = lines.index(f"[{section}]")
    line = start + 1
    for i in range(start + 1, len(lines)):
        if lines[i].startswith("["):
            break
        if key and lines[i].split("=")[0].strip() == key:
            line = i + 1
    head = f"<test-layers>:{line}: in section [{section}]" + (f", key '{key}'" if key else "")
    assert msg.startswith(head), (msg, head)
    assert re.search(fragment, msg), (msg, fragment)
