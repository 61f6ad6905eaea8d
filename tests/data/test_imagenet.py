"""ImageNet (ILSVRC2012) from tiny synthetic archives and trees, built here: layout, labels, odd images, errors."""

import io
import os
import struct
import subprocess
import sys
import tarfile
import zlib

import numpy as np
import pytest
from PIL import Image

from ccn.data import batchfmt as bf
from ccn.data import imagenet, matv5
from ccn.data.writer import DatasetWriter
from ccn.errors import InputError

# devkit order (ILSVRC2012_ID 1, 2, 3) differs from sorted-WNID order
SYNSETS = [(1, "n00000003", "gamma thing"), (2, "n00000001", "alpha thing"), (3, "n00000002", "beta thing")]


# -- a minimal MAT v5 writer (the test's own, independent of the reader) -----------------------
def _el(t, data, pad=True):
    out = struct.pack("<II", t, len(data)) + data
    return out + b"\0" * ((-len(data)) % 8) if pad else out


def _mat(cls, dims, payload, name=b""):
    flags = _el(6, struct.pack("<II", cls, 0))
    d = _el(5, struct.pack(f"<{len(dims)}i", *dims))
    return _el(14, flags + d + _el(1, name) + payload)


def _double(v):
    return _mat(6, [1, 1], _el(9, struct.pack("<d", v)))


def _char(s):
    return _mat(4, [1, len(s)], _el(4, struct.pack(f"<{len(s)}H", *map(ord, s))))


def meta_mat(synsets):
    rows = [(i, w, words, 0.0) for i, w, words in synsets] + [(1001, "n09999999", "entity", 3.0)]
    fields = ["ILSVRC2012_ID", "WNID", "words", "num_children"]
    names = b"".join(f.encode().ljust(32, b"\0") for f in fields)
    payload = struct.pack("<HHi", 5, 4, 32) + _el(1, names)  # field-name length as a small data element
    for i, w, words, nc in rows:
        payload += _double(i) + _char(w) + _char(words) + _double(nc)
    body = _mat(2, [len(rows), 1], payload, name=b"synsets")
    hdr = b"MATLAB 5.0 MAT-file, test".ljust(116, b" ") + b"\0" * 8 + struct.pack("<H", 0x0100) + b"IM"
    return hdr + _el(15, zlib.compress(body), pad=False)


def _jpeg(img, fmt="JPEG"):
    b = io.BytesIO()
    img.save(b, format=fmt)
    return b.getvalue()


def _tar_bytes(members):
    b = io.BytesIO()
    with tarfile.open(fileobj=b, mode="w") as tf:
        for name, data in members:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    return b.getvalue()


def _images(rng, wnid, n):
    out = []
    for k in range(n):
        w, h = int(rng.integers(40, 90)), int(rng.integers(40, 90))
        out.append((f"{wnid}_{k}.JPEG", _jpeg(Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)))))
    return out


@pytest.fixture(scope="module")
def ilsvrc(tmp_path_factory):
    root = tmp_path_factory.mktemp("ilsvrc")
    rng = np.random.default_rng(7)
    per = {}
    for _, w, _ in SYNSETS:
        per[w] = _images(rng, w, 4)
    per["n00000001"].append(("n00000001_gray.JPEG", _jpeg(Image.fromarray(rng.integers(0, 256, (50, 60), dtype=np.uint8)))))
    per["n00000002"].append(("n00000002_cmyk.JPEG", _jpeg(Image.fromarray(rng.integers(0, 256, (50, 60, 3), dtype=np.uint8)).convert("CMYK"))))
    per["n00000003"].append(("n00000003_png.JPEG", _jpeg(Image.fromarray(rng.integers(0, 256, (45, 70, 3), dtype=np.uint8)), "PNG")))
    per["n00000003"].append(("n00000003_bad.JPEG", b"\xff\xd8\xff\xe0" + bytes(30)))
    (root / "ILSVRC2012_img_train.tar").write_bytes(
        _tar_bytes([(f"{w}.tar", _tar_bytes(per[w])) for w in sorted(per)]))
    gt = [1, 3, 2, 2, 1]
    val = [(f"ILSVRC2012_val_{k + 1:08d}.JPEG", _jpeg(Image.fromarray(rng.integers(0, 256, (60, 50, 3), dtype=np.uint8))))
           for k in range(len(gt))]
    (root / "ILSVRC2012_img_val.tar").write_bytes(_tar_bytes(val))
    dk = [("ILSVRC2012_devkit_t12/data/meta.mat", meta_mat(SYNSETS)),
          ("ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt", "".join(f"{g}\n" for g in gt).encode())]
    b = io.BytesIO()
    with tarfile.open(fileobj=b, mode="w:gz") as tf:
        for name, data in dk:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    (root / "ILSVRC2012_devkit_t12.tar.gz").write_bytes(b.getvalue())
    # the same as an unpacked tree
    for w, imgs in per.items():
        (root / "tree" / "train" / w).mkdir(parents=True)
        for n, data in imgs:
            (root / "tree" / "train" / w / n).write_bytes(data)
    (root / "tree" / "val").mkdir()
    for n, data in val:
        (root / "tree" / "val" / n).write_bytes(data)
    for n, data in dk:
        p = root / "tree" / "devkit" / n
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root, per, gt


def test_matv5_reader_reads_the_struct():
    m = matv5.loadmat(meta_mat(SYNSETS))
    assert [s["WNID"] for s in m["synsets"]] == ["n00000003", "n00000001", "n00000002", "n09999999"]
    assert float(m["synsets"][3]["num_children"][0, 0]) == 3.0 and m["synsets"][0]["words"] == "gamma thing"
    with pytest.raises(matv5.MatError):
        matv5.loadmat(b"MATLAB 7.3 MAT-file" + bytes(200))


def test_archives_ilsvrc_order(ilsvrc, tmp_path):
    root, per, gt = ilsvrc
    r = subprocess.run([sys.executable, "-m", "ccn.cli.main", "prepare-data", "imagenet", "--out", str(tmp_path / "o"),
                        "--train", str(root / "ILSVRC2012_img_train.tar"), "--val", str(root / "ILSVRC2012_img_val.tar"),
                        "--devkit", str(root / "ILSVRC2012_devkit_t12.tar.gz"), "--size", "32", "--batch-size", "4",
                        "-j", "2"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "read 21, written 20, skipped 1" in r.stdout and "n00000003_bad.JPEG" in r.stdout
    meta = bf.read_meta(str(tmp_path / "o"))
    assert meta["label_names"] == ["gamma thing", "alpha thing", "beta thing"]
    assert meta["wnids"] == ["n00000003", "n00000001", "n00000002"] and meta["label_order"] == "ilsvrc-id"
    # numbered as cuda-convnet2's make-data numbered them: training from 0, validation from 1000
    assert meta["train_batches"] == [0, 1, 2, 3] and meta["test_batches"] == [1000, 1001]
    assert meta["storage"] == "jpeg" and meta["counts"]["skipped"] == 1
    labels, names = [], []
    for b in meta["train_batches"]:
        f = bf.BatchFile(str(tmp_path / "o" / f"data_batch_{b}"))
        labels += list(f.labels)
        names += f.names()
        for i in range(f.count):
            im = Image.open(io.BytesIO(f.jpeg(i)))
            assert im.format == "JPEG" and im.mode == "RGB" and im.size == (32, 32)
    wn = meta["wnids"]
    assert all(n.startswith(wn[l]) for n, l in zip(names, labels))
    assert sorted(names) != names  # shuffled across classes
    vl = []
    for b in meta["test_batches"]:
        vl += list(bf.BatchFile(str(tmp_path / "o" / f"data_batch_{b}")).labels)
    assert vl == [g - 1 for g in gt]


def test_tree_wnid_order_and_same_bytes_as_archives(ilsvrc, tmp_path):
    root, per, gt = ilsvrc
    kw = dict(size=32, batch_size=4, workers=1)
    a = imagenet.prepare_imagenet(str(tmp_path / "a"), train=str(root / "ILSVRC2012_img_train.tar"),
                                  val=str(root / "ILSVRC2012_img_val.tar"), devkit=str(root / "ILSVRC2012_devkit_t12.tar.gz"),
                                  label_order="wnid", **kw)
    t = imagenet.prepare_imagenet(str(tmp_path / "t"), train=str(root / "tree" / "train"), val=str(root / "tree" / "val"),
                                  devkit=str(root / "tree" / "devkit"), label_order="wnid", **kw)
    assert a["wnids"] == ["n00000001", "n00000002", "n00000003"] and a["label_order"] == "wnid"
    assert a["checksums"] == t["checksums"]
    vl = list(bf.BatchFile(str(tmp_path / "t" / "data_batch_1000")).labels)
    order = {w: i for i, w in enumerate(a["wnids"])}
    assert vl[:4] == [order[SYNSETS[g - 1][1]] for g in gt[:4]]
    # no devkit: sorted WNIDs, names are the WNIDs, no flat val
    n = imagenet.prepare_imagenet(str(tmp_path / "n"), train=str(root / "tree" / "train"), val=None, devkit=None,
                                  label_order="wnid", **kw)
    assert n["label_names"] == ["n00000001", "n00000002", "n00000003"]
    with pytest.raises(InputError, match="no devkit"):
        imagenet.prepare_imagenet(str(tmp_path / "x"), train=None, val=str(root / "tree" / "val"), devkit=None,
                                  label_order="wnid", **kw)
    with pytest.raises(InputError, match="ground_truth"):
        imagenet.prepare_imagenet(str(tmp_path / "x"), train=str(root / "tree" / "train"), val=str(root / "tree" / "val"),
                                  devkit=None, label_order="wnid", **kw)
    with pytest.raises(InputError, match="needs the devkit"):
        imagenet.prepare_imagenet(str(tmp_path / "x"), train=str(root / "tree" / "train"), val=None, devkit=None, **kw)


def test_no_crop_and_resume(ilsvrc, tmp_path, monkeypatch):
    root, _, _ = ilsvrc
    kw = dict(train=str(root / "ILSVRC2012_img_train.tar"), val=None, devkit=str(root / "ILSVRC2012_devkit_t12.tar.gz"),
              size=24, crop=False, batch_size=5, workers=1)
    orig = DatasetWriter.commit

    def die(self, num, *a, **k):
        if num == 3:
            raise KeyboardInterrupt
        return orig(self, num, *a, **k)

    monkeypatch.setattr(DatasetWriter, "commit", die)
    with pytest.raises(KeyboardInterrupt):
        imagenet.prepare_imagenet(str(tmp_path / "r"), **kw)
    monkeypatch.setattr(DatasetWriter, "commit", orig)
    m1 = imagenet.prepare_imagenet(str(tmp_path / "r"), **kw)
    m2 = imagenet.prepare_imagenet(str(tmp_path / "f"), **kw)
    assert m1["checksums"] == m2["checksums"] and m1["counts"] == m2["counts"]
    f = bf.BatchFile(str(tmp_path / "f" / "data_batch_1"))
    sizes = [Image.open(io.BytesIO(f.jpeg(i))).size for i in range(f.count)]
    assert all(min(s) == 24 for s in sizes) and any(max(s) > 24 for s in sizes)


def _run_err(tmp_path, **kw):
    args = dict(size=16, batch_size=4, workers=1)
    args.update(kw)
    with pytest.raises(InputError) as e:
        imagenet.prepare_imagenet(str(tmp_path / "out"), **args)
    assert not os.path.exists(tmp_path / "out" / "batches.meta.json")
    return str(e.value)


def test_bad_archives(ilsvrc, tmp_path):
    root, per, gt = ilsvrc
    dk = str(root / "ILSVRC2012_devkit_t12.tar.gz")
    raw = (root / "ILSVRC2012_img_train.tar").read_bytes()
    trunc = tmp_path / "trunc.tar"
    trunc.write_bytes(raw[: len(raw) * 2 // 3])
    msg = _run_err(tmp_path, train=str(trunc), val=None, devkit=dk)
    assert str(trunc) in msg and ("truncated" in msg or "corrupt" in msg)
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"this is not a tar file" * 100)
    assert str(junk) in _run_err(tmp_path, train=str(junk), val=None, devkit=dk)
    flat = tmp_path / "flat.tar"
    flat.write_bytes(_tar_bytes(per["n00000001"]))
    assert "per-synset tars" in _run_err(tmp_path, train=str(flat), val=None, devkit=dk)
    dup = tmp_path / "dup.tar"
    dup.write_bytes(_tar_bytes([("n00000001.tar", _tar_bytes(per["n00000001"] + per["n00000001"][:1]))]))
    assert "twice" in _run_err(tmp_path, train=str(dup), val=None, devkit=dk)
    empty = tmp_path / "empty.tar"
    empty.write_bytes(_tar_bytes([("n00000001.tar", _tar_bytes([]))]))
    assert "n00000001" in _run_err(tmp_path, train=str(empty), val=None, devkit=dk)
    unk = tmp_path / "unk.tar"
    unk.write_bytes(_tar_bytes([("n12345678.tar", _tar_bytes(per["n00000001"]))]))
    assert "n12345678" in _run_err(tmp_path, train=str(unk), val=None, devkit=dk)
    badk = tmp_path / "devkit.tar.gz"
    with tarfile.open(badk, "w:gz") as tf:
        ti = tarfile.TarInfo("x/readme.txt")
        tf.addfile(ti, io.BytesIO(b""))
    assert "meta.mat" in _run_err(tmp_path, train=str(root / "ILSVRC2012_img_train.tar"), val=None, devkit=str(badk))
    assert "does not exist" in _run_err(tmp_path, train=str(tmp_path / "none.tar"), val=None, devkit=dk)
    r = subprocess.run([sys.executable, "-m", "ccn.cli.main", "prepare-data", "imagenet", "--out", str(tmp_path / "o"),
                        "--train", str(trunc), "--devkit", dk], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "Traceback" not in r.stderr


def test_validation_set_alone_takes_its_own_mean(ilsvrc, tmp_path):
    """Only --val (to test a net trained elsewhere): the mean image is the validation images',
    as a NumPy mean of the written images says, not zeros; with --train it is the training images'."""
    root, _, _ = ilsvrc
    common = ["--val", str(root / "ILSVRC2012_img_val.tar"), "--devkit", str(root / "ILSVRC2012_devkit_t12.tar.gz"),
              "--size", "16", "--batch-size", "4", "-j", "1"]
    r = subprocess.run([sys.executable, "-m", "ccn.cli.main", "prepare-data", "imagenet", "--out", str(tmp_path / "v"),
                        *common], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "note: no training images were prepared" in r.stdout
    meta = bf.read_meta(str(tmp_path / "v"))
    assert meta["mean_from"] == "test" and meta["train_batches"] == []
    from ccn.data.images import prepare_image

    # (the mean is taken before the JPEG encoding: of the validation images scaled and cropped to 16 x 16)
    val = sorted((root / "tree" / "val").iterdir())
    imgs = [np.asarray(prepare_image(p.read_bytes(), 16, True)).transpose(2, 0, 1) for p in val]
    assert len(imgs) == sum(meta["batch_counts"].values())
    np.testing.assert_allclose(np.load(tmp_path / "v" / "data_mean.npy"), np.mean(imgs, axis=0), rtol=1e-6)
    r = subprocess.run([sys.executable, "-m", "ccn.cli.main", "prepare-data", "imagenet", "--out", str(tmp_path / "t"),
                        "--train", str(root / "ILSVRC2012_img_train.tar"), *common], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert bf.read_meta(str(tmp_path / "t"))["mean_from"] == "train" and "no training images" not in r.stdout
