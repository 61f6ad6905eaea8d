"""CIFAR (restricted unpickling), MNIST IDX and image-folder sources, through the CLI and the API."""

import gzip
import io
import os
import pickle
import struct
import subprocess
import sys
import tarfile

import numpy as np
import pytest
from PIL import Image

from ccn.data import batchfmt as bf
from ccn.data import safepickle, sources
from ccn.data.provider import ProviderOptions, open_provider
from ccn.errors import InputError


def cli(*args):
    return subprocess.run([sys.executable, "-m", "ccn.cli.main", "prepare-data", *args], capture_output=True,
                          text=True, timeout=120)


def _cifar10_dir(root, n=7):
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    rng = np.random.default_rng(1)
    batches = {}
    for name in ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = [int(x) for x in rng.integers(0, 10, n)]
        batches[name] = (data, labels)
        (d / name).write_bytes(pickle.dumps({b"batch_label": b"x", b"data": data, b"labels": labels,
                                             b"filenames": [b"f.png"] * n}, protocol=2))
    (d / "batches.meta").write_bytes(pickle.dumps(
        {b"label_names": [f"c{i}".encode() for i in range(10)], b"num_cases_per_batch": n, b"num_vis": 3072},
        protocol=2))
    return d, batches


def test_cifar10_folder_and_targz(tmp_path):
    d, batches = _cifar10_dir(tmp_path / "src")
    r = cli("cifar", str(d), "--out", str(tmp_path / "o1"))
    assert r.returncode == 0, r.stderr
    assert "read 42, written 42, skipped 0" in r.stdout
    meta = bf.read_meta(str(tmp_path / "o1"))
    assert meta["train_batches"] == [1, 2, 3, 4, 5] and meta["test_batches"] == [6]
    assert meta["label_names"][3] == "c3"
    f = bf.BatchFile(str(tmp_path / "o1" / "data_batch_6"))
    data, labels = batches["test_batch"]
    assert (np.asarray(f.pixels).reshape(7, -1) == data).all() and list(f.labels) == labels
    tgz = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(tgz, "w:gz") as tf:
        tf.add(d, arcname="cifar-10-batches-py")
    meta2 = sources.prepare_cifar(str(tgz), str(tmp_path / "o2"))
    assert meta2["checksums"] == meta["checksums"]


def test_cifar10_colmajor_layout_of_cuda_convnet2s_wiki(tmp_path):
    """cifar-10-py-colmajor: data_batch_1..6, data 3072 x N (a column per image), data_mean in
    batches.meta; batch 6 stays batch 6 (the wiki's --test-range 6)."""
    d = tmp_path / "cifar-10-py-colmajor"
    d.mkdir()
    rng = np.random.default_rng(2)
    n = 5
    batches = {}
    for i in range(1, 7):
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = [int(x) for x in rng.integers(0, 10, n)]
        batches[i] = (data, labels)
        (d / f"data_batch_{i}").write_bytes(pickle.dumps(
            {"batch_label": "x", "data": np.ascontiguousarray(data.T), "labels": labels}, protocol=2))
    (d / "batches.meta").write_bytes(pickle.dumps(
        {"label_names": [f"c{i}" for i in range(10)], "num_cases_per_batch": n, "num_vis": 3072,
         "data_mean": np.full((3072, 1), 100.0)}, protocol=2))
    r = cli("cifar", str(d), "--out", str(tmp_path / "o"))
    assert r.returncode == 0, r.stderr
    meta = bf.read_meta(str(tmp_path / "o"))
    assert meta["train_batches"] == [1, 2, 3, 4, 5] and meta["test_batches"] == [6]
    for i in (1, 6):
        f = bf.BatchFile(str(tmp_path / "o" / f"data_batch_{i}"))
        assert (np.asarray(f.pixels).reshape(n, -1) == batches[i][0]).all() and list(f.labels) == batches[i][1]
    # smaller batches split each file on its own, numbered on as for the download layout
    meta = sources.prepare_cifar(str(d), str(tmp_path / "o3"), batch_size=3)
    assert meta["train_batches"] == list(range(1, 11)) and meta["test_batches"] == [11, 12]
    # both test_batch and data_batch_6: ambiguous, refused
    (d / "test_batch").write_bytes((d / "data_batch_6").read_bytes())
    r = cli("cifar", str(d), "--out", str(tmp_path / "o2"))
    assert r.returncode == 2 and "both data_batch_6 and test_batch" in r.stderr and "Traceback" not in r.stderr
    # a column-major folder whose data is not 3072 x N
    (d / "test_batch").unlink()
    (d / "data_batch_2").write_bytes(pickle.dumps({"data": batches[2][0], "labels": batches[2][1]}, protocol=2))
    r = cli("cifar", str(d), "--out", str(tmp_path / "o4"))
    assert r.returncode == 2 and "3072 x N uint8" in r.stderr and "data_batch_2" in r.stderr


def test_cifar100(tmp_path):
    d = tmp_path / "cifar-100-python"
    d.mkdir()
    rng = np.random.default_rng(2)
    for name, n in (("train", 12), ("test", 5)):
        d.joinpath(name).write_bytes(pickle.dumps({"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                                                   "fine_labels": list(rng.integers(0, 100, n).tolist()),
                                                   "coarse_labels": list(rng.integers(0, 20, n).tolist())}))
    d.joinpath("meta").write_bytes(pickle.dumps({"fine_label_names": [f"f{i}" for i in range(100)],
                                                 "coarse_label_names": [f"c{i}" for i in range(20)]}))
    meta = sources.prepare_cifar(str(d), str(tmp_path / "o"), batch_size=5, labels="coarse")
    assert meta["num_classes"] == 20 and meta["train_batches"] == [1, 2, 3] and meta["test_batches"] == [4]
    assert [meta["batch_counts"][str(i)] for i in (1, 2, 3, 4)] == [5, 5, 2, 5]


def test_cifar_refuses_code_and_reports_bad_archives(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    with pytest.raises(InputError, match="refusing to load global"):
        safepickle.load(pickle.dumps({"data": Evil()}, protocol=2), "x")
    with pytest.raises(InputError, match="refusing"):
        safepickle.load(pickle.dumps({"data": np.array([None], dtype=object)}, protocol=2), "x")
    d, _ = _cifar10_dir(tmp_path / "src")
    (d / "data_batch_3").write_bytes(pickle.dumps({"data": Evil(), "labels": [1]}, protocol=2))
    r = cli("cifar", str(d), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "data_batch_3" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "pwned").exists()
    assert not (tmp_path / "o" / "batches.meta.json").exists()
    os.unlink(d / "data_batch_3")
    r = cli("cifar", str(d), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "lacks data_batch_3" in r.stderr
    tgz = tmp_path / "c.tar.gz"
    with tarfile.open(tgz, "w:gz") as tf:
        tf.add(d, arcname="cifar-10-batches-py")
    raw = tgz.read_bytes()
    tgz.write_bytes(raw[: len(raw) // 2])
    r = cli("cifar", str(tgz), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and str(tgz) in r.stderr and "Traceback" not in r.stderr
    r = cli("cifar", str(tmp_path / "missing.tar.gz"), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "does not exist" in r.stderr
    (tmp_path / "empty").mkdir()
    r = cli("cifar", str(tmp_path / "empty"), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "no CIFAR" in r.stderr


def _idx(arr, magic_type=0x08):
    return struct.pack(">BBBB", 0, 0, magic_type, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


def _mnist_dir(d, gz):
    d.mkdir()
    rng = np.random.default_rng(3)
    out = {}
    for split, n in (("train", 25), ("t10k", 6)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, n).astype(np.uint8)
        out[split] = (x, y)
        for kind, arr in (("images-idx3-ubyte", x), ("labels-idx1-ubyte", y)):
            b = _idx(arr)
            (d / (f"{split}-{kind}" + (".gz" if gz else ""))).write_bytes(gzip.compress(b) if gz else b)
    return out


@pytest.mark.parametrize("gz", [False, True])
def test_mnist(tmp_path, gz):
    data = _mnist_dir(tmp_path / "m", gz)
    meta = sources.prepare_mnist(str(tmp_path / "m"), str(tmp_path / "o"), batch_size=10, fashion=gz)
    assert meta["channels"] == 1 and meta["image_size"] == [28, 28]
    assert meta["train_batches"] == [1, 2, 3] and meta["test_batches"] == [4]
    assert meta["label_names"][0] == ("T-shirt/top" if gz else "0")
    p = open_provider(str(tmp_path / "o"), [4], train=False, options=ProviderOptions(scalar_mean=0))
    x, y = p.load(4, 0)
    assert x.shape == (6, 784) and (x == data["t10k"][0].reshape(6, -1)).all()
    assert (y[:, 0] == data["t10k"][1]).all()


def test_mnist_bad_files(tmp_path):
    _mnist_dir(tmp_path / "m", False)
    p = tmp_path / "m" / "train-images-idx3-ubyte"
    p.write_bytes(p.read_bytes()[:-10])
    with pytest.raises(InputError, match="truncated"):
        sources.prepare_mnist(str(tmp_path / "m"), str(tmp_path / "o"))
    p.write_bytes(b"\x12\x34\x56\x78")
    with pytest.raises(InputError, match="not an IDX file"):
        sources.prepare_mnist(str(tmp_path / "m"), str(tmp_path / "o"))
    os.unlink(p)
    with pytest.raises(InputError, match="has no train-images-idx3-ubyte"):
        sources.prepare_mnist(str(tmp_path / "m"), str(tmp_path / "o"))
    assert not os.path.exists(tmp_path / "o" / "batches.meta.json")


def _save(path, img, fmt="JPEG"):
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format=fmt)


def _rgb(rng, w, h):
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def test_folder_split_and_odd_images(tmp_path):
    rng = np.random.default_rng(4)
    src = tmp_path / "imgs"
    for c in ("cat", "dog", "emu"):
        for i in range(5):
            _save(src / c / f"{i}.jpg", _rgb(rng, int(rng.integers(20, 60)), int(rng.integers(20, 60))))
    _save(src / "cat" / "gray.jpg", Image.fromarray(rng.integers(0, 256, (30, 40), dtype=np.uint8)))
    _save(src / "dog" / "cmyk.jpg", _rgb(rng, 33, 31).convert("CMYK"))
    _save(src / "emu" / "png.jpg", _rgb(rng, 25, 40), fmt="PNG")  # a PNG named .jpg
    (src / "emu" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage")
    (src / "emu" / "notes.txt").write_text("ignored")
    r = cli("folder", str(src), "--out", str(tmp_path / "o"), "--size", "16", "--batch-size", "6",
            "--test-fraction", "0.2", "-j", "2")
    assert r.returncode == 0, r.stderr
    assert "read 19, written 18, skipped 1" in r.stdout and "broken.jpg" in r.stdout
    meta = bf.read_meta(str(tmp_path / "o"))
    assert meta["label_names"] == ["cat", "dog", "emu"] and meta["storage"] == "raw"
    assert meta["num_train_cases"] + meta["num_test_cases"] == 18 and meta["num_test_cases"] == 3
    assert meta["skipped"][0][0].endswith("broken.jpg")
    names = sum((bf.BatchFile(str(tmp_path / "o" / f"data_batch_{b}")).names() for b in meta["train_batches"]), [])
    assert len(set(names)) == len(names)
    # JPEG storage without cropping keeps the aspect ratio; the provider crops
    meta = sources.prepare_folder(str(src), str(tmp_path / "j"), size=20, crop=False, storage="jpeg",
                                  test_fraction=0.2, workers=1)
    f = bf.BatchFile(str(tmp_path / "j" / "data_batch_1"))
    sizes = {Image.open(io.BytesIO(f.jpeg(i))).size for i in range(f.count)}
    assert all(min(s) == 20 for s in sizes) and len(sizes) > 1
    p = open_provider(str(tmp_path / "j"), meta["train_batches"], train=True,
                      options=ProviderOptions(inner_size=16, threads=2, color_noise=0.1))
    x, y = p.load(1, 0)
    assert x.shape == (f.count, 3 * 16 * 16) and np.isfinite(x).all()
    assert (p.load(1, 0)[0] == x).all()


def test_folder_train_val_layout_and_errors(tmp_path):
    rng = np.random.default_rng(5)
    src = tmp_path / "tv"
    for split, n in (("train", 3), ("val", 2)):
        for c in ("a", "b"):
            for i in range(n):
                _save(src / split / c / f"{i}.png", _rgb(rng, 12, 12), fmt="PNG")
    meta = sources.prepare_folder(str(src), str(tmp_path / "o"), size=8, workers=1)
    assert meta["num_train_cases"] == 6 and meta["num_test_cases"] == 4
    (src / "train" / "empty").mkdir()
    with pytest.raises(InputError, match="empty holds no images"):
        sources.prepare_folder(str(src), str(tmp_path / "o2"), size=8, workers=1)
    os.rmdir(src / "train" / "empty")
    _save(src / "val" / "zebra" / "0.png", _rgb(rng, 12, 12), fmt="PNG")
    with pytest.raises(InputError, match="zebra has no training counterpart"):
        sources.prepare_folder(str(src), str(tmp_path / "o2"), size=8, workers=1)
    with pytest.raises(InputError, match="does not exist"):
        sources.prepare_folder(str(tmp_path / "none"), str(tmp_path / "o2"))
    (tmp_path / "flat").mkdir()
    with pytest.raises(InputError, match="no class subfolders"):
        sources.prepare_folder(str(tmp_path / "flat"), str(tmp_path / "o2"))


def test_mnist_without_training_images_or_with_stray_labels(tmp_path):
    _mnist_dir(tmp_path / "m", False)
    ylab = tmp_path / "m" / "train-labels-idx1-ubyte"
    y = np.frombuffer(ylab.read_bytes()[8:], np.uint8).copy()
    y[3] = 200  # a stray label: 201 classes, 190 of them empty
    ylab.write_bytes(_idx(y))
    with pytest.raises(InputError, match=r"labels go up to 200, but classes .*10-199.* have no training images"):
        sources.prepare_mnist(str(tmp_path / "m"), str(tmp_path / "o"))
    # EMNIST Letters: labels 1..26, class 0 empty, every other class has images
    ylab.write_bytes(_idx((np.arange(len(y)) % 26 + 1).astype(np.uint8)))
    meta = sources.prepare_mnist(str(tmp_path / "m"), str(tmp_path / "letters"))
    assert meta["num_classes"] == 26  # (25 training images: labels 1..25)
    for kind, shape in (("images-idx3-ubyte", (0, 28, 28)), ("labels-idx1-ubyte", (0,))):
        (tmp_path / "m" / f"train-{kind}").write_bytes(_idx(np.zeros(shape, np.uint8)))
    with pytest.raises(InputError, match="holds no images: there would be nothing to train on"):
        sources.prepare_mnist(str(tmp_path / "m"), str(tmp_path / "o"))
    assert not os.path.exists(tmp_path / "o" / "batches.meta.json")


def test_folder_test_split_that_leaves_nothing(tmp_path):
    rng = np.random.default_rng(6)
    src = tmp_path / "one"
    for c in ("a", "b", "c"):
        _save(src / c / "0.png", _rgb(rng, 12, 10), fmt="PNG")
    with pytest.raises(InputError, match="leaves no test images"):
        sources.prepare_folder(str(src), str(tmp_path / "o"), size=8, workers=1)
    meta = sources.prepare_folder(str(src), str(tmp_path / "o"), size=8, workers=1, test_fraction=0)
    assert meta["num_train_cases"] == 3
    # --no-crop keeps the aspect ratio, so auto storage picks JPEG instead of refusing raw
    meta = sources.prepare_folder(str(src), str(tmp_path / "o2"), size=8, workers=1, test_fraction=0, crop=False)
    assert meta["storage"] == "jpeg"


def test_test_images_only_take_their_own_mean(tmp_path):
    """Only a test set prepared (e.g. ImageNet's validation set, to test a net trained elsewhere):
    the mean image and colour PCA are the test images', said in the metadata, not zeros."""
    rng = np.random.default_rng(8)
    src = tmp_path / "tv"
    pics = []
    for c in ("a", "b"):
        for i in range(3):
            arr = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            pics.append(arr)
            _save(src / "train" / c / f"{i}.png", Image.fromarray(arr), fmt="PNG")
    meta = sources.prepare_folder(str(src), str(tmp_path / "o"), size=8, workers=1, test_fraction=0)
    assert meta["mean_from"] == "train"
    mean = np.load(tmp_path / "o" / "data_mean.npy")
    np.testing.assert_allclose(mean, np.mean([p.transpose(2, 0, 1) for p in pics], axis=0), rtol=1e-6)
    # the same images as a test set only (--test-fraction just under 1 keeps one per class for training, so move
    # them: a val/ folder with an empty train/ is not a layout; use the writer directly)
    from ccn.data.writer import DatasetWriter, Stats

    px = np.stack([p.transpose(2, 0, 1) for p in pics])
    st = Stats(3, 8, 8)  # as the pipeline gathers them for the test batches of a plan without training batches
    st.add_images(px)
    w = DatasetWriter(str(tmp_path / "t"), plan_id="x", storage="raw", channels=3, size=(8, 8))
    w.commit(1, np.zeros(6, np.int32), train=False, pixels=px, stats=st)
    meta = w.finish(label_names=["a", "b"], source="test", options={}, seed=0)
    assert meta["mean_from"] == "test" and meta["train_batches"] == []
    np.testing.assert_allclose(np.load(tmp_path / "t" / "data_mean.npy"), mean, rtol=1e-6)
    assert max(meta["color_pca"]["eigenvalues"]) > 0


def test_folder_files_reached_twice_are_used_once(tmp_path):
    # a symlink and a hard link to images listed elsewhere: without dropping them the same image
    # could land in both the training and the test set (an optimistic test error), or carry two labels
    rng = np.random.default_rng(6)
    src = tmp_path / "imgs"
    for c in ("cat", "dog"):
        for i in range(6):
            _save(src / c / f"{i}.jpg", _rgb(rng, 24, 24))
    os.symlink(src / "cat" / "0.jpg", src / "cat" / "zlink.jpg")
    os.link(src / "cat" / "1.jpg", src / "dog" / "hard.jpg")
    classes, train, test = sources.list_folder(str(src), 0.5, 0, repeats := [])
    names = sorted(it.name for it in train + test)
    assert names == sorted([f"cat/{i}.jpg" for i in range(6)] + [f"dog/{i}.jpg" for i in range(6)])
    assert sorted(n for n, _ in repeats) == ["cat/zlink.jpg", "dog/hard.jpg"]
    assert dict(repeats)["cat/zlink.jpg"].startswith("the same file as cat/0.jpg")
    r = cli("folder", str(src), "--out", str(tmp_path / "o"), "--size", "16", "--test-fraction", "0.5", "-j", "1")
    assert r.returncode == 0, r.stderr
    # (the second names count as read: read = written + skipped)
    assert "read 14, written 12, skipped 2" in r.stdout and "skipped cat/zlink.jpg: the same file as cat/0.jpg" \
        in r.stdout
