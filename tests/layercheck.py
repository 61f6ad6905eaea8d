"""Check a layer's forward and backward in one call (tinygrad style).

The only thing a layer test writes is an independent NumPy float64 forward reference.
``check_layer`` then
  1. builds a tiny net (data layers -> the layer under test) from the given layer text,
  2. compares our float32 forward output with the reference,
  3. compares our backward pass (gradients w.r.t. every data input and every parameter,
     for a random output gradient G, i.e. of the scalar sum(G * output)) with central
     finite differences of the float64 reference -- so no hand-derived gradient is trusted.
"""

from __future__ import annotations

import numpy as np

import ccn


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
    for k, g in num.items():
        if k in data:
            got = net.output_grad(k)
        else:
            got = net.get(k, "grad")
        assert_close(got, g.reshape(got.shape), grad_rtol, grad_atol, f"gradient w.r.t. '{k}'")
    return net
