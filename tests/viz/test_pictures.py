"""show-filters, show-cost and show-preds: picture sizes and pixels, different checkpoints give
different pictures, --only-errors, and bad input through the real command line (exit code 2)."""

import csv
import io
import os
import subprocess
import sys

import numpy as np

import ccn
import pytest
from PIL import Image

from ccn import checkpoint as ck
from ccn.cli.show_cost import write_cost
from ccn.cli.show_filters import write_filters
from ccn.cli.show_preds import write_preds
from ccn.cli.test import run_test_command
from ccn import viz

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def png(path):
    return np.asarray(Image.open(path))


def quiet(*a, **k):
    pass


def cli(*args, cwd=None):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.path.join(ROOT, "tests", "e2e")])}
    return subprocess.run([sys.executable, "-m", "ccn.cli.main", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=120)


# ---- show-filters ------------------------------------------------------------------------------
def test_conv_filters_rgb_grid_and_pixels(conv_run, tmp_path):
    out = write_filters(conv_run["run"], "conv1", str(tmp_path / "f.png"), scale=1, echo=quiet)
    img = png(out)
    # 4 filters of 3x3 in colour, one row: 1 + 4*(3+1) wide, 1 + (3+1) high
    assert img.shape == (5, 17, 3)
    w = ck.load(conv_run["run"]).arrays["w/conv1.weights[0]"]  # rows c*9 + y*3 + x, one column per filter
    lo, hi = float(w.min()), float(w.max())  # shownet: all filters stretched together
    for f in range(4):
        filt = w[:, f].reshape(3, 3, 3).astype(np.float64)
        want = np.round((filt - lo) / (hi - lo) * 255).astype(np.uint8).transpose(1, 2, 0)
        np.testing.assert_array_equal(img[1:4, 1 + 4 * f:4 + 4 * f], want)
    assert (img[0] == 0).all() and (img[:, 0] == 0).all() and (img[:, 4] == 0).all()  # borders
    # default scale: enlarged by a whole factor towards 512 pixels wide, at most 16
    big = png(write_filters(conv_run["run"], "conv1", str(tmp_path / "g.png"), echo=quiet))
    assert big.shape == (5 * 16, 17 * 16, 3)
    np.testing.assert_array_equal(big[::16, ::16], img)


def test_filters_share_one_scale_unless_norm_filters(conv_run, tmp_path):
    """shownet.py: filters - filters.min(), / filters.max() over the whole matrix, so a dead
    filter is flat grey; cuda-convnet2's --norm-filters 1 first gives each filter zero mean and
    unit variance."""
    rng = np.random.default_rng(1)
    f = rng.standard_normal((3, 1, 2, 2))
    f[1] *= 0.01   # a weak filter
    f[2] = 0.0     # a dead one
    img = viz.filter_grid(f, rgb=False, scale=1)[0]
    tiles = [img[1:3, 1 + 3 * i:3 + 3 * i].astype(float) for i in range(3)]
    want = np.round((f - f.min()) / (f.max() - f.min()) * 255)
    for i in range(3):
        np.testing.assert_array_equal(tiles[i], want[i, 0])
    assert tiles[1].max() - tiles[1].min() <= 3 and len(np.unique(tiles[2])) == 1  # flat grey
    img = viz.filter_grid(f, rgb=False, scale=1, norm_filters=True)[0]
    tiles = [img[1:3, 1 + 3 * i:3 + 3 * i].astype(float) for i in range(3)]
    z = (f - f.mean(axis=(1, 2, 3), keepdims=True)) / np.maximum(f.std(axis=(1, 2, 3), keepdims=True), 1e-300)
    z[2] = 0.0
    want = np.round((z - z.min()) / (z.max() - z.min()) * 255)
    for i in range(3):
        np.testing.assert_array_equal(tiles[i], want[i, 0])
    assert tiles[1].max() - tiles[1].min() > 100  # the weak filter's shape shows
    # through the command line: --norm-filters 0/1 or a bare flag; the default name says norm
    r = cli("show-filters", "-f", conv_run["run"], "--show-filters=conv1", "--norm-filters=1", "--scale", "1",
            cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    normed = png(tmp_path / "filters-conv1-norm-2.1.png")
    r = cli("show-filters", "-f", conv_run["run"], "--layer", "conv1", "--norm-filters", "-o", "bare.png", "--scale",
            "1", cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    np.testing.assert_array_equal(png(tmp_path / "bare.png"), normed)
    w = ck.load(conv_run["run"]).arrays["w/conv1.weights[0]"].astype(np.float64).T.reshape(4, 3, 3, 3)
    np.testing.assert_array_equal(normed, viz.filter_grid(w, rgb=True, scale=1, norm_filters=True)[0])
    r = cli("show-filters", "-f", conv_run["run"], "--layer", "conv1", "--norm-filters", "2", cwd=str(tmp_path))
    assert r.returncode == 2 and "expected 0 or 1" in r.stderr


def test_no_rgb_and_fc_channels(conv_run, tmp_path):
    img = png(write_filters(conv_run["run"], "conv1", str(tmp_path / "n.png"), no_rgb=True, scale=1, echo=quiet))
    assert img.shape == (5, 1 + 4 * (3 * 3 + 1))  # channels side by side, grayscale
    w = ck.load(conv_run["run"]).arrays["w/conv1.weights[0]"].astype(np.float64)
    f1 = w[:, 1].reshape(3, 3, 3)
    want = np.round((f1 - w.min()) / (w.max() - w.min()) * 255).astype(np.uint8)  # one scale for all filters
    np.testing.assert_array_equal(img[1:4, 11:20], np.concatenate(list(want), axis=1))
    # fc10 reads pool1 = 4 x 4x4: 10 filters of 4 channels side by side, 4 per row, 3 rows
    img = png(write_filters(conv_run["run"], "fc10", str(tmp_path / "fc.png"), scale=1, echo=quiet))
    assert img.shape == (1 + 3 * 5, 1 + 4 * (4 * 4 + 1))
    # --channels 1: 10 filters of 1 x 8x8 (64 = 8x8), 10 in a row
    img = png(write_filters(conv_run["run"], "fc10", str(tmp_path / "fc1.png"), channels=1, scale=2, echo=quiet))
    assert img.shape == (2 * (1 + 9), 2 * (1 + 10 * 9))
    from ccn.errors import InputError

    with pytest.raises(InputError, match="not a multiple"):
        write_filters(conv_run["run"], "fc10", str(tmp_path / "x.png"), channels=3, echo=quiet)
    with pytest.raises(InputError, match="for fc layers only"):
        write_filters(conv_run["run"], "conv1", str(tmp_path / "x.png"), channels=1, echo=quiet)
    with pytest.raises(InputError, match="--input-idx 1: layer 'conv1' has 1 weight matrix"):
        write_filters(conv_run["run"], "conv1", str(tmp_path / "x.png"), input_idx=1, echo=quiet)


def test_grid_geometry_like_shownet():
    assert viz.grid_geometry(96, 3, 11, True)[:2] == (16, 6)     # AlexNet conv1: 16 a row
    assert viz.grid_geometry(96, 3, 11, False)[:2] == (6, 16)    # channels side by side: 16 / 3 -> 6
    assert viz.grid_geometry(64, 64, 5, False)[:2] == (1, 64)
    f = np.random.default_rng(0).standard_normal((300, 1, 2, 2))
    img, first, end = viz.filter_grid(f, rgb=True, start=10, scale=1)
    assert (first, end) == (10, 266) and img.shape == (1 + 16 * 3, 1 + 16 * 3)


def test_two_checkpoints_give_different_pictures(conv_run, tmp_path):
    paths = [os.path.join(conv_run["run"], n) for n in ("1.1", "2.1")]
    a, b = [png(write_filters(p, "conv1", str(tmp_path / f"{i}.png"), echo=quiet)) for i, p in enumerate(paths)]
    assert a.shape == b.shape and not np.array_equal(a, b)
    a, b = [png(write_preds(p, output=str(tmp_path / f"p{i}.png"), echo=quiet)["output"])
            for i, p in enumerate(paths)]
    assert not np.array_equal(a, b)
    a, b = [png(write_cost(p, output=str(tmp_path / f"c{i}.png"), echo=quiet)) for i, p in enumerate(paths)]
    assert not np.array_equal(a, b)


def test_default_names_and_the_line_saying_where(conv_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    lines = []
    assert write_filters(conv_run["run"], "conv1", echo=lines.append) == "filters-conv1-2.1.png"
    assert write_cost(conv_run["run"], echo=lines.append) == "cost-logprob-0-2.1.png"
    assert write_preds(conv_run["run"], echo=lines.append)["output"] == "preds-2.1.png"
    assert write_preds(conv_run["run"], only_errors=True, echo=lines.append)["output"] == "errors-2.1.png"
    assert [l for l in lines if l.startswith("Wrote ")] == [
        "Wrote filters-conv1-2.1.png", "Wrote cost-logprob-0-2.1.png", "Wrote preds-2.1.png", "Wrote errors-2.1.png"]
    for n in os.listdir(tmp_path):
        assert png(n).ndim >= 2
    # other views of the same filters get names of their own instead of overwriting the first
    assert write_filters(conv_run["run"], "conv1", no_rgb=True, echo=quiet) == "filters-conv1-gray-2.1.png"
    assert write_filters(conv_run["run"], "conv1", start=2, echo=quiet) == "filters-conv1-from2-2.1.png"


# ---- show-cost ---------------------------------------------------------------------------------
def test_cost_curves_values(conv_run, fake_run):
    c = ck.load(fake_run["run"])
    tx, ty, ex, ey, cost, vname = viz.cost_curves(c.meta, None, 1, {"logprob": ["logprob", "error"]})
    hist = c.meta["history"]
    assert cost == "logprob" and vname == "error"
    np.testing.assert_allclose(tx, [1 / 3, 2 / 3, 1.0])
    np.testing.assert_allclose(ty, [r["costs"]["logprob"][1] / r["cases"] for r in hist["train"]])
    np.testing.assert_allclose(ex, [1.0])  # one test after the 3rd batch
    np.testing.assert_allclose(ey, [hist["test"][0]["costs"]["logprob"][1] / 80])
    from ccn.errors import InputError

    with pytest.raises(InputError, match=r"--cost-idx 2: cost layer 'logprob' has 2 values \(0 = logprob, 1 = error\)"):
        viz.cost_curves(c.meta, None, 2, {"logprob": ["logprob", "error"]})
    with pytest.raises(InputError, match="no cost layer 'nope'; it records logprob"):
        viz.cost_curves(c.meta, "nope", 0, {})


def test_smooth_test_errors_like_cuda_convnet2(tmp_path):
    """shownet.py --smooth-test-errors 1: test i is the mean of tests i-N+1..i, N = len(test range)."""
    np.testing.assert_allclose(viz.smooth_tests([1, 2, 3, 5], 2), [1, 1.5, 2.5, 4])
    np.testing.assert_allclose(viz.smooth_tests([1, 2, 3], 1), [1, 2, 3])
    import fakedata
    from ccn.cli.train import run_train

    data = fakedata.make_dataset(tmp_path / "data")
    layers, _ = fakedata.write_net(tmp_path / "net")
    run = str(tmp_path / "run")  # one test batch in turn (4, 5, 4): 3 tests
    run_train({"data_path": data, "data_provider": "fakedata:open_provider", "train_range": "1-3",
               "test_range": "4-5", "epochs": 1, "mini": 16, "test_freq": 1, "save_path": run, "layers": layers,
               "seed": 5, "threads": 1}, out=io.StringIO())
    *_, ey, _, _ = viz.cost_curves(ck.load(run).meta, None, 1, {})
    assert len(ey) == 3
    r = cli("show-cost", "-f", run, "--cost-idx=1", "--smooth-test-errors=1", cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert f"3 tests (last {(ey[1] + ey[2]) / 2:.6f}, test values smoothed over the last 2)" in r.stdout, r.stdout
    assert (tmp_path / "cost-logprob-1-smooth-1.3.png").is_file()
    r = cli("show-cost", "-f", run, "--cost-idx=1", "--smooth-test-errors", "0", "-o", "raw.png", cwd=str(tmp_path))
    assert r.returncode == 0 and f"3 tests (last {ey[2]:.6f})" in r.stdout, r.stdout


def test_cost_picture(conv_run, tmp_path):
    img = png(write_cost(conv_run["run"], cost_idx=2, output=str(tmp_path / "c.png"), echo=quiet))
    assert img.shape[:2] == (500, 800)
    red = (img[..., 0] > 200) & (img[..., 1] < 60) & (img[..., 2] < 60)
    assert red.sum() > 20  # the test curve is drawn


# ---- show-preds --------------------------------------------------------------------------------
def test_only_errors_shows_only_errors(conv_run, tmp_path):
    run_test_command(conv_run["run"], test_out=str(tmp_path / "p.csv"), out=io.StringIO())
    rows = {(int(r["batch"]), int(r["case"])): r for r in csv.DictReader(open(tmp_path / "p.csv"))}
    wrong = {k for k, r in rows.items() if r["top1"] != r["label"]}
    assert 8 < len(wrong) < len(rows)
    info = write_preds(conv_run["run"], only_errors=True, num=12, output=str(tmp_path / "e.png"), echo=quiet)
    shown = set(zip(info["batch"], info["case"]))
    assert len(shown) == 12 and shown <= wrong
    assert all(t[0] != l for t, l in zip(info["top"], info["label"]))
    assert info["pool"] == len(wrong)
    for (b, c), top, lab in zip(zip(info["batch"], info["case"]), info["top"], info["label"]):
        assert int(rows[(b, c)]["label"]) == lab and int(rows[(b, c)]["top1"]) == top[0]
    every = write_preds(conv_run["run"], num=60, output=str(tmp_path / "a.png"), echo=quiet)
    assert len(set(zip(every["batch"], every["case"])) - wrong) > 0  # without the flag: right ones too
    img = png(info["output"])
    assert img.shape[0] > img.shape[1] * 0.8  # 3 rows of 4


def test_preds_on_non_image_data(fake_run, tmp_path):
    from ccn.errors import InputError

    with pytest.raises(InputError, match="not images"):
        write_preds(fake_run["run"], output=str(tmp_path / "x.png"), echo=quiet)


# ---- bad input through the command line --------------------------------------------------------
def test_bad_input_exit_2(conv_run, tmp_path):
    run = conv_run["run"]
    cases = [
        (["show-filters", "-f", run, "--layer", "nope"], "no layer 'nope'; layers with weights: conv1, fc10."),
        (["show-filters", "-f", run, "--layer", "pool1"], "layer 'pool1' (type pool) has no weights to show; "
                                                          "layers with weights: conv1, fc10."),
        (["show-filters", "-f", run, "--layer", "conv1", "-o", str(tmp_path / "no" / "f.png")], "does not exist"),
        (["show-filters", "-f", run, "--layer", "conv1", "-o", str(tmp_path)], "is a folder"),
        (["show-cost", "-f", run, "-o", "/proc/x.png"], "cannot write"),
        (["show-cost", "-f", run, "-o", "x.jpg"], "the pictures are PNG files; give a name ending in .png"),
        (["show-preds", "-f", str(tmp_path / "none")], "no such checkpoint"),
        (["test", "-f", run, "--test-out", "p.txt"], "must end in .npz or .csv"),
        # a folder that permissions call writable (for root) on a read-only file system: probed first
        (["test", "-f", run, "--test-out", "/sys/p.csv"], "cannot write the predictions there"),
        (["test", "-f", run, "--test-out", str(tmp_path / "d.csv")], "(--test-out FILE)"),
        (["test", "-f", run, "--write-features", "fc10", "--feature-path", "/proc/self"],
         "cannot write the features there: the folder /proc/self is not writable"),
    ]
    (tmp_path / "d.csv").mkdir()
    for args, msg in cases:
        r = cli(*args, cwd=tmp_path)
        assert r.returncode == 2, (args, r.stderr)
        assert r.stderr.startswith("error: ") and msg in " ".join(r.stderr.split()), (args, r.stderr)
        assert "Traceback" not in r.stderr


def test_checkpoint_without_test_outputs(tmp_path):
    import fakedata
    from ccn.cli.train import run_train

    data = fakedata.make_dataset(tmp_path / "data")
    layers, _ = fakedata.write_net(tmp_path / "net")
    run_train({"data_path": data, "data_provider": "fakedata:open_provider", "train_range": "1-2",
               "test_range": "5", "epochs": 1, "mini": 16, "test_freq": 10, "force_save": True,
               "save_path": str(tmp_path / "s"), "layers": layers, "seed": 1, "threads": 1}, out=io.StringIO())
    assert not ck.load(tmp_path / "s").meta["history"]["test"]
    r = cli("show-cost", "-f", str(tmp_path / "s"), cwd=tmp_path)
    assert r.returncode == 2 and "holds no test results" in r.stderr
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".png")]
    r = cli("test", "-f", str(tmp_path / "s"), cwd=tmp_path)  # ccn test itself needs no test history
    assert r.returncode == 0, r.stderr


def test_cost_curves_keep_each_epoch_at_its_own_size():
    # a run resumed on other train ranges: epochs of 3, 1 and 1 batches, then the current one of 2
    def rec(e, b):
        return {"epoch": e, "batch": b, "costs": {"logprob": [1.0, 0.5]}, "cases": 10}
    train = [rec(1, 1), rec(1, 2), rec(1, 3), rec(2, 1), rec(3, 1), rec(4, 1)]
    meta = {"position": {"train_range": [1, 2]}, "history": {
        "train": train, "test": [dict(rec(1, 3), test_batches=[4]), dict(rec(2, 1), test_batches=[4]),
                                 dict(rec(4, 1), test_batches=[4])]}}
    tx, _, ex, _, _, _ = viz.cost_curves(meta, None, 0, {})
    np.testing.assert_allclose(tx, [1 / 3, 2 / 3, 1.0, 2.0, 3.0, 3.5])
    np.testing.assert_allclose(ex, [1.0, 2.0, 3.5])  # each test right after its epoch's batch


def test_preds_with_long_class_names_stay_readable():
    # folder datasets name classes after their folders: long names overlapped the next panel and
    # pushed the probability out of sight
    names = [f"class_{i:02d}_a_rather_long_descriptive_label_name" for i in range(40)]
    rng = np.random.default_rng(0)
    top_idx = np.array([[3, 1, 2, 0, 5], [7, 8, 9, 10, 11]])
    top_p = np.array([[0.5, 0.2, 0.1, 0.1, 0.05], [0.4, 0.3, 0.1, 0.1, 0.05]])
    fig = viz.plot_preds(rng.random((2, 8, 8, 3)), [3, 9], top_idx, top_p, names, "t")
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles and all(len(t) <= 22 for t in titles) and titles[0].endswith("\u2026")
    bars = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert len(bars) == 10 and bars[0] == "0.50  class_03_a_rather_long_de\u2026" and all(len(b) <= 32 for b in bars)


def test_preds_follow_the_multiview_test(conv_run, tmp_path):
    # the same cases and probabilities as `ccn test --multiview-test 1`: the mean over the views
    run_test_command(conv_run["run"], multiview=True, test_out=str(tmp_path / "m.csv"), out=io.StringIO())
    rows = {(int(r["batch"]), int(r["case"])): r for r in csv.DictReader(open(tmp_path / "m.csv"))}
    wrong = {k for k, r in rows.items() if r["top1"] != r["label"]}
    info = write_preds(conv_run["run"], only_errors=True, num=6, multiview=True, output=str(tmp_path / "m.png"),
                       echo=quiet)
    shown = list(zip(info["batch"], info["case"]))
    assert set(shown) <= wrong and info["pool"] == len(wrong)
    for (b, c), top in zip(shown, info["top"]):
        assert int(rows[(b, c)]["top1"]) == top[0]
    assert png(info["output"]).shape[0] > 0


def test_preds_take_the_softmax_name_as_shownet_did(conv_run, tmp_path):
    from ccn import testing as T

    _, net = T.load_model(conv_run["run"])
    logreg = T.find_logreg(net, None)
    assert T.find_logreg(net, logreg.inputs[1], "--show-preds").name == logreg.name
    r = subprocess.run([sys.executable, "-m", "ccn.cli.main", "show-preds", "-f", conv_run["run"], "--show-preds",
                        logreg.inputs[1], "-o", str(tmp_path / "s.png")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_fc_filters_that_are_no_square_image_name_the_channels_that_work():
    net = ccn.Net("<fc>", None, {0: 405}, layers_text="[data]\ntype=data\ndataIdx=0\n[fc]\ntype=fc\ninputs=data\n"
                                                      "outputs=4\n")
    from ccn.errors import InputError

    with pytest.raises(InputError, match=r"405 inputs per filter = 3 channel\(s\) x 135, and 135 is not a square "
                                         r"image; --channels 5 or 45 would make square images"):
        viz.layer_filters(net, "fc", channels=3)
    assert viz.layer_filters(net, "fc", channels=5)[0].shape == (4, 5, 9, 9)
    net = ccn.Net("<fc>", None, {0: 7}, layers_text="[data]\ntype=data\ndataIdx=0\n[fc]\ntype=fc\ninputs=data\n"
                                                    "outputs=4\n")
    with pytest.raises(InputError, match="no number of channels makes square images of them"):
        viz.layer_filters(net, "fc", channels=1)
