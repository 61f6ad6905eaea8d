"""The batch format, the built-in dataset and the provider contract."""

import json
import os

import numpy as np
import pytest

from ccn.data import batchfmt as bf
from ccn.data import builtin
from ccn.data.provider import ProviderOptions, available_batches, open_provider
from ccn.data.writer import DatasetWriter, verify
from ccn.errors import InputError


@pytest.fixture(scope="module")
def small_builtin(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("bi"))
    builtin.prepare(d, train_batches=2, test_batches=1, batch_size=50, seed=5)
    return d


def test_container_roundtrip_raw_and_jpeg(tmp_path):
    rng = np.random.default_rng()
    n = int(rng.integers(1, 9))
    px = rng.integers(0, 256, (n, 3, 5, 7), dtype=np.uint8)
    labels = rng.integers(0, 10, n)
    p = str(tmp_path / "data_batch_1")
    digest = bf.write_batch(p, "raw", labels, channels=3, height=5, width=7, pixels=px, names=[f"a{i}" for i in range(n)])
    assert digest == bf.sha256_file(p)
    f = bf.BatchFile(p)
    assert f.kind == "raw" and f.count == n
    assert (f.labels == labels).all() and (np.asarray(f.pixels) == px).all()
    assert f.names() == [f"a{i}" for i in range(n)]
    assert f.sections["pixels"][0] % 64 == 0
    blobs = [bytes(rng.integers(0, 256, int(rng.integers(0, 50)), dtype=np.uint8)) for _ in range(n)]
    p2 = str(tmp_path / "data_batch_2")
    bf.write_batch(p2, "jpeg", labels, channels=3, height=5, width=5, jpegs=blobs)
    g = bf.BatchFile(p2)
    assert [g.jpeg(i) for i in range(n)] == blobs
    assert not [x for x in os.listdir(tmp_path) if x.endswith(".tmp")]


def test_truncated_and_foreign_batch_files_are_input_errors(tmp_path):
    p = str(tmp_path / "data_batch_1")
    bf.write_batch(p, "raw", [1, 2], channels=1, height=4, width=4, pixels=np.zeros((2, 1, 4, 4), np.uint8))
    data = open(p, "rb").read()
    open(p, "wb").write(data[:-70])
    with pytest.raises(InputError, match="truncated"):
        bf.BatchFile(p)
    open(p, "wb").write(b"\x80\x02}q\x00" + b"x" * 40)  # a pickle, as the original wrote
    with pytest.raises(InputError, match="not a ccn batch file"):
        bf.BatchFile(p)


def test_builtin_is_deterministic_and_balanced(small_builtin, tmp_path):
    meta = bf.read_meta(small_builtin)
    assert meta["train_batches"] == [1, 2] and meta["test_batches"] == [3]
    assert meta["num_classes"] == 10 and meta["image_size"] == [32, 32] and meta["storage"] == "raw"
    assert verify(small_builtin) == []
    mean = np.load(os.path.join(small_builtin, "data_mean.npy"))
    a = np.concatenate([np.asarray(bf.BatchFile(os.path.join(small_builtin, f"data_batch_{i}")).pixels) for i in (1, 2)])
    np.testing.assert_allclose(mean, a.mean(axis=0), atol=1e-3)
    vecs = np.array(meta["color_pca"]["eigenvectors"])
    np.testing.assert_allclose(vecs.T @ vecs, np.eye(3), atol=1e-9)
    # same seed, same images, whatever the batching; another seed, other images
    i1, l1 = builtin.generate(0, 50, seed=5)
    assert (i1 == np.asarray(bf.BatchFile(os.path.join(small_builtin, "data_batch_1")).pixels)).all()
    i2, _ = builtin.generate(10, 5, seed=5)
    assert (i2 == i1[10:15]).all()
    i3, _ = builtin.generate(0, 50, seed=6)
    assert not (i3 == i1).all()
    _, labels = builtin.generate(0, 2000, seed=0)
    assert np.bincount(labels, minlength=10).min() > 150


def test_builtin_is_learnable_by_a_linear_probe_on_simple_features():
    # a quick sanity check that the classes differ (the real check is training a convnet)
    imgs, labels = builtin.generate(0, 1500, seed=1)
    g = imgs.astype(np.float32).mean(axis=1)
    gx = np.abs(np.diff(g, axis=2)).mean(axis=(1, 2))
    gy = np.abs(np.diff(g, axis=1)).mean(axis=(1, 2))
    h, v = labels == 6, labels == 7  # horizontal stripes have vertical gradients
    assert (gy[h] / gx[h]).mean() > 1.3 and (gx[v] / gy[v]).mean() > 1.3


def test_resume_after_interruption(tmp_path, monkeypatch):
    d = str(tmp_path / "out")
    calls = []
    orig = DatasetWriter.commit

    def dying_commit(self, num, *a, **k):
        calls.append(num)
        if num == 3:
            raise KeyboardInterrupt
        return orig(self, num, *a, **k)

    monkeypatch.setattr(DatasetWriter, "commit", dying_commit)
    with pytest.raises(KeyboardInterrupt):
        builtin.prepare(d, train_batches=3, test_batches=1, batch_size=20)
    assert not os.path.exists(os.path.join(d, bf.META_NAME))
    assert sorted(x for x in os.listdir(d) if x.startswith("data_batch")) == ["data_batch_1", "data_batch_2"]
    calls.clear()
    monkeypatch.setattr(DatasetWriter, "commit", orig)
    seen = []
    monkeypatch.setattr(DatasetWriter, "commit", lambda self, num, *a, **k: (seen.append(num), orig(self, num, *a, **k)))
    meta = builtin.prepare(d, train_batches=3, test_batches=1, batch_size=20)
    assert seen == [3, 4]
    # what this run did, for its images/s (not stored)
    assert meta["resumed"] == {"batches": 2, "written": 40} and meta["counts"]["written"] == 80
    assert "resumed" not in bf.read_meta(d)
    ref = str(tmp_path / "ref")
    meta2 = builtin.prepare(ref, train_batches=3, test_batches=1, batch_size=20)
    assert meta["checksums"] == meta2["checksums"]
    assert meta["color_pca"] == meta2["color_pca"]
    assert not [x for x in os.listdir(d) if x.startswith(".")]


def test_other_dataset_in_folder_is_refused(small_builtin):
    with pytest.raises(InputError, match="already holds"):
        builtin.prepare(small_builtin, train_batches=2, test_batches=1, batch_size=50, seed=6)


def test_unwritable_target(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(InputError, match="not a folder"):
        builtin.prepare(str(f), train_batches=1, batch_size=2)
    with pytest.raises(InputError, match="cannot create"):
        builtin.prepare(str(f / "sub"), train_batches=1, batch_size=2)
    if os.geteuid() != 0:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        with pytest.raises(InputError, match="not writable"):
            builtin.prepare(str(ro), train_batches=1, batch_size=2)


def _ref_crop(img, y, x, s, flip):
    c = img[:, y:y + s, x:x + s]
    return c[:, :, ::-1] if flip else c


def test_provider_contract_train(small_builtin):
    opts = ProviderOptions(inner_size=24, seed=3)
    p = open_provider(small_builtin, [1, 2], train=True, options=opts)
    assert available_batches(small_builtin) == [1, 2, 3]
    assert p.data_dims() == {0: (3, 24, 24), 1: 1}
    assert p.num_classes == 10 and p.label_names == builtin.LABEL_NAMES and p.num_cases(1) == 50
    json.dumps(p.meta)
    x, y = p.load(2, 0)
    assert x.shape == (50, 3 * 24 * 24) and x.dtype == np.float32 and y.shape == (50, 1) and y.dtype == np.float32
    f = bf.BatchFile(os.path.join(small_builtin, "data_batch_2"))
    assert (y[:, 0] == f.labels).all()
    mean = np.load(os.path.join(small_builtin, "data_mean.npy"))[:, 4:28, 4:28].astype(np.float32)
    px = np.asarray(f.pixels)
    # every row is some crop of its image, flipped or not, minus the centre crop of the mean
    flips = 0
    for i in range(50):
        img = (x[i].reshape(3, 24, 24) + mean)
        found = False
        for yy in range(9):
            for xx in range(9):
                for fl in (False, True):
                    if np.allclose(img, _ref_crop(px[i], yy, xx, 24, fl), atol=1e-3):
                        found = True
                        flips += fl
                        break
                if found:
                    break
            if found:
                break
        assert found, i
    assert 5 < flips < 45
    # deterministic per (seed, batch, epoch); differs across epochs and seeds
    assert (p.load(2, 0)[0] == x).all()
    assert not (p.load(2, 1)[0] == x).all()
    q = open_provider(small_builtin, [2], train=True, options=ProviderOptions(inner_size=24, seed=4))
    assert not (q.load(2, 0)[0] == x).all()


def test_provider_test_centre_and_multiview(small_builtin):
    f = bf.BatchFile(os.path.join(small_builtin, "data_batch_3"))
    px = np.asarray(f.pixels).astype(np.float32)
    p = open_provider(small_builtin, [3], train=False, options=ProviderOptions(inner_size=25, scalar_mean=100.0))
    x, y = p.load(3, 7)
    np.testing.assert_array_equal(x, px[:, :, 3:28, 3:28].reshape(50, -1) - 100)
    m = open_provider(small_builtin, [3], train=False, options=ProviderOptions(inner_size=25, multiview=True,
                                                                            scalar_mean=0))
    x, y = m.load(3, 0)
    assert x.shape == (500, 3 * 25 * 25) and y.shape == (500, 1)
    starts = [(0, 0), (0, 7), (7, 0), (7, 7), (3, 3)]
    for v in range(10):
        yy, xx = starts[v % 5]
        ref = px[:, :, yy:yy + 25, xx:xx + 25]
        if v >= 5:
            ref = ref[..., ::-1]
        np.testing.assert_array_equal(x[v * 50:(v + 1) * 50], ref.reshape(50, -1))
        assert (y[v * 50:(v + 1) * 50, 0] == f.labels).all()
    # multiview is a test-time option only
    t = open_provider(small_builtin, [1], train=True, options=ProviderOptions(inner_size=25, multiview=True))
    assert t.load(1, 0)[0].shape[0] == 50


def test_color_noise_is_per_image_constant_along_pca(small_builtin):
    base = open_provider(small_builtin, [1], train=True, options=ProviderOptions(seed=9))
    noisy = open_provider(small_builtin, [1], train=True, options=ProviderOptions(seed=9, color_noise=0.1))
    a, b = base.load(1, 2)[0], noisy.load(1, 2)[0]
    d = (b - a).reshape(50, 3, -1)
    assert np.allclose(d, d[:, :, :1], atol=1e-3)  # the same offset at every pixel of an image
    off = d[:, :, 0].astype(np.float64)
    meta = base.meta["color_pca"]
    coef = off @ np.array(meta["eigenvectors"])  # -> alpha * stdev
    alpha = coef / np.array(meta["stdevs"])
    assert 0.05 < alpha.std() < 0.2
    assert abs(alpha.mean()) < 0.05


def test_provider_bad_input(small_builtin, tmp_path):
    with pytest.raises(InputError, match="has no batch 9"):
        open_provider(small_builtin, [1, 9], train=True, options=ProviderOptions())
    with pytest.raises(InputError, match="larger than the images"):
        open_provider(small_builtin, [1], train=True, options=ProviderOptions(inner_size=33))
    with pytest.raises(InputError, match="does not exist"):
        open_provider(str(tmp_path / "nope"), [1], train=True, options=ProviderOptions())
    with pytest.raises(InputError, match="no batches.meta.json"):
        open_provider(str(tmp_path), [1], train=True, options=ProviderOptions())
    import shutil
    d = str(tmp_path / "copy")
    shutil.copytree(small_builtin, d)
    os.unlink(os.path.join(d, "data_batch_2"))
    with pytest.raises(InputError, match="data_batch_2"):
        open_provider(d, [1, 2], train=True, options=ProviderOptions())
    assert verify(d) == ["data_batch_2"]


def test_provider_is_thread_safe(small_builtin):
    from concurrent.futures import ThreadPoolExecutor

    p = open_provider(small_builtin, [1, 2], train=True, options=ProviderOptions(inner_size=28, color_noise=0.1, seed=2))
    ref = {(b, e): p.load(b, e)[0] for b in (1, 2) for e in range(3)}
    with ThreadPoolExecutor(4) as ex:
        futs = {(b, e): ex.submit(p.load, b, e) for _ in range(3) for b in (1, 2) for e in range(3)}
        for k, f in futs.items():
            assert (f.result()[0] == ref[k]).all()


def test_cli_builtin_rerun_and_errors(tmp_path):
    import subprocess
    import sys

    def run(*a):
        return subprocess.run([sys.executable, "-m", "ccn.cli.main", "prepare-data", "builtin", *a],
                              capture_output=True, text=True, timeout=120)

    out = str(tmp_path / "b")
    r = run("--out", out, "--train-batches", "2", "--batch-size", "30")
    assert r.returncode == 0, r.stderr
    assert "60 training images in batches 1-2, 30 test images in batch 3" in r.stdout
    assert "read 90, written 90, skipped 0" in r.stdout
    r = run("--out", out, "--train-batches", "2", "--batch-size", "30")
    assert r.returncode == 0 and "nothing to do" in r.stdout
    r = run("--out", out, "--train-batches", "3", "--batch-size", "30")
    assert r.returncode == 2 and "already holds" in r.stderr and out in r.stderr and "Traceback" not in r.stderr
    r = run("--out", out, "--train-batches", "3", "--batch-size", "30", "--overwrite")
    assert r.returncode == 0 and bf.read_meta(out)["train_batches"] == [1, 2, 3]
    (tmp_path / "f").write_text("")
    r = run("--out", str(tmp_path / "f"))
    assert r.returncode == 2 and str(tmp_path / "f") in r.stderr and "Traceback" not in r.stderr


def test_resume_restarts_when_a_listed_batch_vanished(tmp_path, monkeypatch):
    d = str(tmp_path / "out")
    orig = DatasetWriter.commit

    def die(self, num, *a, **k):
        if num == 3:
            raise KeyboardInterrupt
        return orig(self, num, *a, **k)

    monkeypatch.setattr(DatasetWriter, "commit", die)
    with pytest.raises(KeyboardInterrupt):
        builtin.prepare(d, train_batches=3, test_batches=1, batch_size=10)
    monkeypatch.setattr(DatasetWriter, "commit", orig)
    os.unlink(os.path.join(d, "data_batch_1"))
    meta = builtin.prepare(d, train_batches=3, test_batches=1, batch_size=10)
    ref = builtin.prepare(str(tmp_path / "ref"), train_batches=3, test_batches=1, batch_size=10)
    assert meta["checksums"] == ref["checksums"] and meta["counts"] == ref["counts"]


def _jpeg_dataset(d, n=13, size=(20, 24), seed=1):
    from PIL import Image

    from ccn.data.images import encode_jpeg
    from ccn.data.writer import Stats

    rng = np.random.default_rng(seed)
    w = DatasetWriter(d, plan_id="rows", storage="jpeg", channels=3, size=size)
    jpegs = [encode_jpeg(Image.fromarray(rng.integers(0, 256, (size[0], size[1], 3), dtype=np.uint8)), 90)
             for _ in range(n)]
    w.commit(1, rng.integers(0, 4, n), train=True, jpegs=jpegs, stats=Stats(3, *size))
    w.finish(label_names=[str(i) for i in range(4)], source="test", options={}, seed=0)
    return d


@pytest.mark.parametrize("storage", ["raw", "jpeg"])
def test_load_rows_gives_exactly_those_rows_of_load(small_builtin, tmp_path, storage):
    """A data-parallel rank reads, decodes and augments only its rows: load_rows(b, e, rows) ==
    load(b, e)[k][rows] bitwise, with random crops, flips and colour noise (training) and the
    centre crop (testing), for any increasing subset of rows (empty, one, all)."""
    path, b = (small_builtin, 1) if storage == "raw" else (_jpeg_dataset(str(tmp_path / "j")), 1)
    rng = np.random.default_rng()
    for train, opts in ((True, ProviderOptions(inner_size=16, color_noise=0.1, seed=int(rng.integers(1 << 30)),
                                               threads=2)),
                        (False, ProviderOptions(inner_size=17))):
        p = open_provider(path, [b], train=train, options=opts)
        n = p.num_cases(b)
        epoch = int(rng.integers(0, 5))
        full = p.load(b, epoch)
        for rows in ([], [0], [n - 1], list(range(n)), sorted(rng.choice(n, int(rng.integers(1, n)), replace=False))):
            part = p.load_rows(b, epoch, rows)
            assert len(part) == len(full)
            for a, f in zip(part, full):
                assert a.dtype == f.dtype and a.shape == (len(rows), f.shape[1])
                np.testing.assert_array_equal(a, f[np.asarray(rows, np.int64)])
        with pytest.raises(ValueError, match="rows must increase"):
            p.load_rows(b, epoch, [2, 1])
        p.close()


def test_a_flipped_bit_in_a_batch_or_the_mean_is_refused(small_builtin, tmp_path, rng):
    # the headers and sizes stay valid, so only the recorded checksum can tell
    import shutil
    d = str(tmp_path / "flip")
    shutil.copytree(small_builtin, d)
    path = os.path.join(d, "data_batch_2")
    off, nb = bf.BatchFile(path).sections["pixels"]
    at = off + int(rng.integers(0, nb))
    with open(path, "r+b") as f:
        f.seek(at)
        byte = f.read(1)[0]
        f.seek(at)
        f.write(bytes([byte ^ (1 << int(rng.integers(0, 8)))]))
    p = open_provider(d, [1, 2], train=True, options=ProviderOptions(inner_size=28))  # headers are fine
    p.load(1, 0)
    for _ in range(2):  # every load of the damaged batch is refused, not just the first
        with pytest.raises(InputError, match="data_batch_2 does not match the checksum"):
            p.load(2, 0)
    with pytest.raises(InputError, match="data_batch_2 does not match the checksum"):
        p.load_rows(2, 0, [0, 3])
    shutil.copy(os.path.join(small_builtin, "data_batch_2"), path)
    assert p.load(2, 0)[0].shape == (50, 3 * 28 * 28)
    mean = np.load(os.path.join(d, bf.MEAN_NAME))
    mean[0, 0, 0] += 1e-3
    np.save(os.path.join(d, bf.MEAN_NAME), mean)
    with pytest.raises(InputError, match="data_mean.npy does not match the checksum"):
        open_provider(d, [1], train=True, options=ProviderOptions())
