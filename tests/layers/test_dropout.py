"""dropout and dropout2: test-mode references, mask consistency, reproducibility, bad keys."""

import os
import subprocess
import sys

import numpy as np
import pytest

import ccn
from ccn.errors import ConfigError
from layercheck import check_layer

DATA = "[data]\ntype=data\ndataIdx=0\n"


def _text(type_, extra=""):
    return DATA + f"[d]\ntype={type_}\ninputs=data\n{extra}"


def _net(type_, d, keep=None, enable=None, seed=0, extra=""):
    params = "[d]\n" + (f"keep={keep}\n" if keep is not None else "") + (f"enable={enable}\n" if enable is not None else "")
    net = ccn.Net("layers.cfg", "params.cfg", {0: d}, seed=seed, layers_text=_text(type_, extra), params_text=params)
    net._net.set_data_grads(True)
    return net


@pytest.mark.parametrize("n", [1, 5])
def test_dropout_testing_copies(n):
    rng = np.random.default_rng()
    x = rng.standard_normal((n, int(rng.integers(1, 20))))
    check_layer(_text("dropout"), {"data": (0, x)}, lambda a: a["data"], "d", params_text="[d]\nkeep=0.3\n",
                train=False)


@pytest.mark.parametrize("n", [1, 5])
def test_dropout2_testing_scales_by_keep(n):
    rng = np.random.default_rng()
    keep = float(np.round(rng.uniform(0.1, 0.9), 3))
    x = rng.standard_normal((n, 2, 3, 3))
    check_layer(_text("dropout2"), {"data": (0, x)}, lambda a: keep * a["data"], "d",
                params_text=f"[d]\nkeep={keep}\n", train=False)


def test_testing_mode_matches_exactly():
    rng = np.random.default_rng()
    x = rng.standard_normal((4, 9)).astype(np.float32)
    net = _net("dropout", 9, keep=0.7)
    net.forward({0: x}, train=False)
    np.testing.assert_array_equal(net.output("d"), x)


@pytest.mark.parametrize("type_", ["dropout", "dropout2"])
def test_training_mask_used_forward_and_backward(type_):
    rng = np.random.default_rng()
    keep = 0.6
    n, d = 7, 33
    x = rng.uniform(0.5, 2, (n, d)).astype(np.float32) * rng.choice([-1, 1], (n, d))
    net = _net(type_, d, keep=keep, seed=int(rng.integers(1 << 30)))
    net.forward({0: x}, train=True)
    y = net.output("d")
    kept = y != 0
    on = 1 / keep if type_ == "dropout" else 1.0
    np.testing.assert_allclose(y, np.where(kept, x * on, 0), rtol=1e-6)
    assert 0 < kept.sum() < kept.size
    g = rng.standard_normal((n, d)).astype(np.float32)
    net.backward({"d": g})
    np.testing.assert_allclose(net.output_grad("data"), np.where(kept, g * on, 0), rtol=1e-6)


def test_kept_fraction_is_near_keep():
    rng = np.random.default_rng()
    for keep in (0.2, 0.5, 0.9):
        net = _net("dropout", 2000, keep=keep, seed=int(rng.integers(1 << 30)))
        net.forward({0: np.ones((100, 2000), np.float32)}, train=True)
        frac = np.mean(net.output("d") != 0)
        assert abs(frac - keep) < 0.01, (keep, frac)  # std of frac ~ 0.0016


def test_mask_reproducible_by_seed_and_step():
    x = np.ones((6, 50), np.float32)

    def mask(seed, step, type_="dropout"):
        net = _net(type_, 50, keep=0.5, seed=seed)
        net._net.step = step
        net.forward({0: x}, train=True)
        return net.output("d") != 0

    m = mask(11, 3)
    np.testing.assert_array_equal(m, mask(11, 3))
    np.testing.assert_array_equal(m, mask(11, 3, "dropout2"))  # same draw, different scaling
    assert not np.array_equal(m, mask(11, 4))
    assert not np.array_equal(m, mask(12, 3))
    # Rows are cases: the mask of a case does not change across rows.
    assert not np.array_equal(m[0], m[1])


def test_train_step_advances_the_mask():
    text = DATA + "[d]\ntype=dropout\ninputs=data\n[cost]\ntype=cost.sum2\ninputs=d\n"
    net = ccn.Net("layers.cfg", "params.cfg", {0: 40}, layers_text=text, params_text="[d]\nkeep=0.5\n[cost]\ncoeff=1\n")
    x = np.ones((3, 40), np.float32)
    net.train_step({0: x}, 0.0, 3)
    m1 = net.output("d") != 0
    net.train_step({0: x}, 0.0, 3)
    assert not np.array_equal(m1, net.output("d") != 0)


def test_mask_does_not_depend_on_thread_count():
    code = (
        "import numpy as np, ccn\n"
        "t='[data]\\ntype=data\\ndataIdx=0\\n[d]\\ntype=dropout\\ninputs=data\\n'\n"
        "net=ccn.Net('l', 'p', {0: 1000}, seed=5, layers_text=t, params_text='[d]\\nkeep=0.4\\n')\n"
        "net.forward({0: np.ones((64, 1000), np.float32)}, train=True)\n"
        "import sys; sys.stdout.write(''.join('1' if v else '0' for v in (net.output('d').ravel() != 0)))\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    outs = []
    for threads in ("1", "2"):
        env = {**os.environ, "OMP_NUM_THREADS": threads, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
        assert r.returncode == 0, r.stderr
        outs.append(r.stdout)
    assert len(outs[0]) == 64000 and outs[0] == outs[1]


def test_enable_false():
    """enable=false: dropout copies; dropout2 multiplies by keep (cuda-convnet2's Dropout2Layer)."""
    rng = np.random.default_rng()
    x = rng.standard_normal((5, 20)).astype(np.float32)
    g = rng.standard_normal((5, 20)).astype(np.float32)
    for type_, factor in (("dropout", 1.0), ("dropout2", 0.25)):
        net = _net(type_, 20, keep=0.25, enable="false")
        net.forward({0: x}, train=True)
        np.testing.assert_allclose(net.output("d"), factor * x, rtol=1e-6)
        net.backward({"d": g})
        np.testing.assert_allclose(net.output_grad("data"), factor * g, rtol=1e-6)


def test_defaults_keep_half_enabled():
    net = ccn.Net("layers.cfg", None, {0: 4000}, layers_text=_text("dropout"))
    net.forward({0: np.ones((10, 4000), np.float32)}, train=True)
    y = net.output("d")
    assert set(np.unique(y)) == {0.0, 2.0}
    assert abs(np.mean(y != 0) - 0.5) < 0.02


def test_reload_params_changes_keep():
    net = _net("dropout2", 8, keep=0.5)
    x = np.ones((2, 8), np.float32)
    net.reload_params("edited.cfg", "[d]\nkeep=0.125\n")
    net.forward({0: x}, train=False)
    np.testing.assert_allclose(net.output("d"), 0.125 * x)


def test_backward_uses_last_forward_mode():
    """A testing pass after a training pass: the gradient is the testing one."""
    x = np.ones((2, 30), np.float32)
    net = _net("dropout2", 30, keep=0.5)
    net.forward({0: x}, train=True)
    net.forward({0: x}, train=False)
    net.backward({"d": np.ones((2, 30), np.float32)})
    np.testing.assert_allclose(net.output_grad("data"), 0.5)


# ---- bad input --------------------------------------------------------------------------

@pytest.mark.parametrize("keep", ["0", "-0.5", "1.5"])
def test_keep_out_of_range(keep):
    with pytest.raises(ConfigError, match=rf"params.cfg:2: in section \[d\], key 'keep': must be in \(0, 1\] .*found"):
        _net("dropout", 4, keep=keep)


def test_keep_not_a_number():
    with pytest.raises(ConfigError, match=r"params.cfg:2: in section \[d\], key 'keep': expected a number, found 'half'"):
        _net("dropout2", 4, keep="half")


def test_enable_not_a_boolean():
    with pytest.raises(ConfigError, match=r"params.cfg:2: in section \[d\], key 'enable': expected a boolean"):
        _net("dropout", 4, enable="maybe")


def test_keep_in_definition_file_is_rejected():
    with pytest.raises(ConfigError, match=r"layers.cfg:7: in section \[d\], key 'keep'"):
        _net("dropout", 4, extra="keep=0.5\n")


@pytest.mark.parametrize("type_", ["dropout", "dropout2"])
def test_one_input_only(type_):
    text = DATA + "[data2]\ntype=data\ndataIdx=1\n" + f"[d]\ntype={type_}\ninputs=data,data2\n"
    with pytest.raises(ConfigError, match=rf"\[d\], key 'inputs': a {type_} layer takes exactly one input, found 2"):
        ccn.Net("layers.cfg", None, {0: 4, 1: 4}, layers_text=text)
