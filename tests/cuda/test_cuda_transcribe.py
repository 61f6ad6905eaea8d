"""tools/cuda_transcribe.py on the CPU: NumPy transcriptions of the conv (im2col, col2im,
GEMM arguments, chunking), pool, cmrnorm and local kernels, run over a simulated grid and
checked against the CPU layers. No GPU needed; the simulator itself is checked too (it must
catch races, out-of-bounds accesses, int overflow, and the bugs fixed in review)."""

import importlib.util
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_spec = importlib.util.spec_from_file_location("cuda_transcribe", os.path.join(ROOT, "tools", "cuda_transcribe.py"))
ct = importlib.util.module_from_spec(_spec)
sys.modules["cuda_transcribe"] = ct  # dataclasses look their module up there
_spec.loader.exec_module(ct)


@pytest.mark.parametrize("threads,cap", [(256, 65536), (32, 2), (7, 1)], ids=["real-grid", "small-grid", "one-block"])
@pytest.mark.parametrize("check", sorted(ct.CHECKS))
def test_transcribed_kernels_match_cpu_layers(check, threads, cap):
    fails = ct.run(trials=12, seed=sum(map(ord, check)) + threads, threads=threads, cap=cap, checks=(check,),
                   verbose=False)
    assert not fails, "\n".join(fails)


def test_conv_in_chunks_of_one_and_two_cases():
    rng = np.random.default_rng(4)
    for budget_cases in (1, 2, 1, 2):
        ct.check_conv(rng, budget_cases=budget_cases)


def test_int32_audit_alexnet_minibatch_256():
    rows = ct.int32_audit(256)
    assert len(rows) > 20
    big = [r for r in rows if r[2] >= 2**31]
    assert not big, big


# ---- the simulator catches what it should ------------------------------------------------------
def test_simulator_catches_a_race():
    out = ct.Buf("out", np.zeros(10, np.float32))
    with pytest.raises(ct.KernelError, match="race"):
        ct.launch("racy", 20, lambda e: out.store(e // 2, 1.0), writes=[out])


def test_simulator_catches_out_of_bounds():
    a = ct.Buf("a", np.zeros(10, np.float32))
    with pytest.raises(ct.KernelError, match=r"outside its 10 elements"):
        ct.launch("oob", 10, lambda e: a.load(e + 1))


def test_simulator_catches_int_overflow_and_uses_c_division():
    with pytest.raises(ct.KernelError, match="int overflow"):
        ct.i32(np.array([2**31]), "x")
    assert ct.cdiv(-7, 2) == -3 and ct.cmod(-7, 2) == -1  # C truncates; Python floors
    assert ct.ceil_div_signed(np.array(-7), 2) == -3 and ct.ceil_div_signed(np.array(7), 2) == 4


def test_simulator_visits_every_element_once_with_a_capped_grid():
    seen = np.zeros(1001, np.int32)

    def body(e):
        seen[e] += 1

    ct.SIM.threads, ct.SIM.cap = 32, 3
    try:
        ct.launch("all", 1001, body)
    finally:
        ct.SIM.threads, ct.SIM.cap = ct.THREADS, ct.GRID_CAP
    assert np.all(seen == 1)


def test_old_pool_max_from_minus_flt_max_is_caught(monkeypatch):
    """The pool max before review (r = -FLT_MAX; r = fmaxf(r, v)) differs from the CPU layer."""
    def old_kernel(g, inp, out):
        OO = g.O * g.O

        def body(e):
            o = ct.cmod(e, OO)
            base = ct.cdiv(e, OO) * g.S * g.S
            y0 = g.start + ct.cdiv(o, g.O) * g.stride
            x0 = g.start + ct.cmod(o, g.O) * g.stride
            ya, yb = np.maximum(y0, 0), np.minimum(y0 + g.sizeX, g.S)
            xa, xb = np.maximum(x0, 0), np.minimum(x0 + g.sizeX, g.S)
            r = np.full(e.shape, -np.finfo(np.float32).max, np.float32)
            for jy in range(g.sizeX):
                for jx in range(g.sizeX):
                    m = (ya + jy < yb) & (xa + jx < xb)
                    r = np.where(m, np.fmax(r, inp.load(base + (ya + jy) * g.S + xa + jx, m)), r)
            out.store(e, r)

        ct.launch("old pool", g.N * g.C * OO, body, writes=[out])

    g = ct.PoolGeom(1, 1, 4, 2, 2, 0, 2, True, False)
    x = np.full(16, -np.inf, np.float32)
    out = ct.Buf("out", np.zeros(4, np.float32))
    old_kernel(g, ct.Buf("in", x), out)
    assert np.all(out.data == -np.finfo(np.float32).max)  # the old result: not -inf
    ct.pool_fprop_kernel(g, ct.Buf("in", x), out)
    assert np.all(np.isneginf(out.data))  # the reviewed kernel, as the CPU layer
    monkeypatch.setattr(ct, "pool_fprop_kernel", old_kernel)
    rng = np.random.default_rng(1)
    fails = 0
    for _ in range(40):
        try:
            ct.check_pool(rng)
        except ct.KernelError:
            fails += 1
    assert fails > 0, "check_pool did not notice the old max rule"


def test_wrong_module_range_in_col2im_is_caught(monkeypatch):
    """Truncating instead of rounding up the first covering module makes col2im gather
    modules that do not cover the pixel: the transcription notices."""
    monkeypatch.setattr(ct, "ceil_div_signed", lambda a, b: ct.cdiv(a, b))
    rng = np.random.default_rng(2)
    with pytest.raises(ct.KernelError):
        for _ in range(30):
            ct.check_conv(rng)


def test_wrong_transposed_window_in_cmrnorm_is_caught(monkeypatch):
    monkeypatch.setattr(ct, "holders_of", ct.window_of)  # right only for odd sizes
    rng = np.random.default_rng(3)
    with pytest.raises(ct.KernelError):
        for _ in range(40):
            ct.check_cmrnorm(rng)
