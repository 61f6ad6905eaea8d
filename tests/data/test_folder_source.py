"""The image-folder source of prepare-data: which files are read, names that are not UTF-8,
a changed source, classes left without images, the skipped list, the layouts, 16-bit images."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, features

from ccn.data import batchfmt as bf
from ccn.data import sources
from ccn.data.writer import DatasetWriter
from ccn.errors import InputError


def cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "ccn.cli.main", "prepare-data", *args], capture_output=True,
                          text=True, timeout=120, env=env)


def _save(path, img, fmt="PNG"):
    path = os.fsdecode(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    img.save(path, format=fmt)


def _img(v, w=12, h=12):
    return Image.new("RGB", (w, h), (v % 256, 40, 90))


def _names(out):
    meta = bf.read_meta(str(out))
    return sorted(sum((bf.BatchFile(str(out / bf.batch_name(b))).names()
                       for b in meta["train_batches"] + meta["test_batches"]), []))


def _classes(root, classes=("a", "b"), n=4, fmt="PNG", ext="png"):
    for ci, c in enumerate(classes):
        for i in range(n):
            _save(root / c / f"{i}.{ext}", _img(40 * ci + i), fmt)


def test_names_that_are_not_utf8_are_stored_escaped(tmp_path):
    src = tmp_path / "src"
    root = os.fsencode(str(src))
    for c in (b"caf\xe9_latin1", b"normal"):
        for i in range(3):
            _save(os.path.join(root, c, b"img%d.png" % i), _img(i))
    _save(os.path.join(root, b"normal", b"bad\xffname.png"), _img(9))
    _save(os.path.join(root, b"normal", b"new\nline.png"), _img(8))
    r = cli("folder", str(src), "--out", str(tmp_path / "o"), "--size", "8", "--test-fraction", "0", "-j", "1")
    assert r.returncode == 0, r.stderr
    assert "read 8, written 8, skipped 0" in r.stdout
    meta = bf.read_meta(str(tmp_path / "o"))
    assert meta["label_names"] == ["caf\\xe9_latin1", "normal"]
    names = _names(tmp_path / "o")
    assert "caf\\xe9_latin1/img0.png" in names and "normal/bad\\xffname.png" in names
    assert "normal/new\\x0aline.png" in names


def test_the_escaping_of_names_is_one_to_one(tmp_path):
    # a folder named with the text \xff and one with the byte 0xff: two classes, two names (before,
    # both were stored as \xff and refused as folders that "differ only in case")
    root = os.fsencode(str(tmp_path / "src"))
    for c in (b"a\\xff", b"a\xff"):
        for i in range(2):
            _save(os.path.join(root, c, b"back\\slash%d.png" % i), _img(i))
    meta = sources.prepare_folder(str(tmp_path / "src"), str(tmp_path / "o"), size=8, workers=1, test_fraction=0)
    assert meta["label_names"] == ["a\\\\xff", "a\\xff"]
    names = _names(tmp_path / "o")
    assert "a\\\\xff/back\\\\slash0.png" in names and "a\\xff/back\\\\slash1.png" in names


def test_a_changed_source_is_not_taken_for_the_prepared_one(tmp_path):
    for root, v in (("A", 10), ("B", 200)):  # the same file names, other pictures
        _classes(tmp_path / root, n=4)
        for p in (tmp_path / root).rglob("*.png"):
            _save(p, _img(v))
    out = str(tmp_path / "o")
    kw = dict(size=8, workers=1, test_fraction=0.25)
    sources.prepare_folder(str(tmp_path / "A"), out, **kw)
    assert sources.prepare_folder(str(tmp_path / "A"), out, **kw).get("already_complete")
    with pytest.raises(InputError, match=r"the source folder differs \(was .*A\)"):
        sources.prepare_folder(str(tmp_path / "B"), out, **kw)
    # an image edited in place (same name, same size, a new modification time)
    p = tmp_path / "A" / "a" / "0.png"
    st = os.stat(p)
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    with pytest.raises(InputError, match=r"files changed since in 1 class folder \(a: ") as e:
        sources.prepare_folder(str(tmp_path / "A"), out, **kw)
    assert "source folder" not in str(e.value) and "options" not in str(e.value).split(":", 1)[1]


def test_a_refused_rerun_says_what_differs(tmp_path):
    src = tmp_path / "A"
    _classes(src, n=4)
    out = str(tmp_path / "o")
    kw = dict(size=8, workers=1, test_fraction=0.25)
    sources.prepare_folder(str(src), out, **kw)
    with pytest.raises(InputError, match=r"other options \(size 12 \(was 8\)\)"):
        sources.prepare_folder(str(src), out, **dict(kw, size=12))
    _save(src / "b" / "new.png", _img(3))
    with pytest.raises(InputError, match=r"other images in 1 class folder \(added, removed or renamed since.*: b\)"):
        sources.prepare_folder(str(src), out, **kw)
    os.remove(src / "b" / "new.png")
    # a dataset an older ccn made (no plan parts, its plan_id from names, labels and options only)
    meta = bf.read_meta(out)
    plan = sources.pipeline.seeded_batches(sources.list_folder(str(src), 0.25, 0)[1], 10000, 0, 1, True)
    plan += sources.pipeline.seeded_batches(sources.list_folder(str(src), 0.25, 0)[2], 10000, 1, len(plan) + 1, False)
    meta.pop("plan")
    meta["plan_id"] = sources.fingerprint({"source": "folder", "items": [(it.name, it.label) for _, _, b in plan
                                                                         for it in b],
                                           "plan": [(n, t, len(b)) for n, t, b in plan], "seed": 0,
                                           **meta["options"]})
    with open(os.path.join(out, bf.META_NAME), "w") as f:
        json.dump(meta, f)
    r = cli("folder", str(src), "--out", out, "--size", "8", "--test-fraction", "0.25", "-j", "1")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "made by an older ccn (the source's file dates and sizes were not recorded then): rerun with " \
           "--overwrite to rebuild it, or use it as it is" in r.stderr
    meta["plan_id"] = "0" * 64  # an older ccn's dataset of something else
    with open(os.path.join(out, bf.META_NAME), "w") as f:
        json.dump(meta, f)
    with pytest.raises(InputError, match="made by an older ccn, from another source or with other options"):
        sources.prepare_folder(str(src), out, **kw)
    meta = sources.prepare_folder(str(tmp_path / "A"), out, overwrite=True, **kw)
    assert not meta.get("already_complete")


def test_an_interrupted_run_of_an_unchanged_source_resumes(tmp_path, monkeypatch):
    _classes(tmp_path / "src", n=6)
    out = str(tmp_path / "o")
    kw = dict(size=8, workers=1, test_fraction=0.5, batch_size=2)

    def interrupted(self, **k):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(DatasetWriter, "finish", interrupted)
        with pytest.raises(KeyboardInterrupt):
            sources.prepare_folder(str(tmp_path / "src"), out, **kw)
    assert not os.path.exists(os.path.join(out, "batches.meta.json"))
    meta = sources.prepare_folder(str(tmp_path / "src"), out, **kw)
    assert meta["resumed"]["batches"] == len(meta["train_batches"]) + len(meta["test_batches"]) == 6


def _stop_at_progress_json(m, k, name=".ccn-progress.json", func="atomic_write_json"):
    """Interrupt the k-th write of the progress file ``name`` (the .npz and the .json are replaced in
    turn, after the new skipped images are appended)."""
    from ccn import fsutil

    real, calls = getattr(fsutil, func), []

    def write(path, obj):
        if path.endswith(name):
            calls.append(path)
            if len(calls) == k:
                raise KeyboardInterrupt
        return real(path, obj)

    m.setattr(fsutil, func, write)


def test_a_resume_after_a_stop_between_the_progress_files_keeps_the_mean_right(tmp_path, monkeypatch):
    src = tmp_path / "src"
    for ci, c in enumerate(("a", "b")):
        for i in range(6):
            _save(src / c / f"{i}.png", Image.new("RGB", (8, 8), (250 * ((i + ci) % 2), 3, 9)))
    kw = dict(size=8, workers=1, test_fraction=0, batch_size=2)
    sources.prepare_folder(str(src), str(tmp_path / "ref"), **kw)
    want = np.load(tmp_path / "ref" / bf.MEAN_NAME)
    out = tmp_path / "o"
    with monkeypatch.context() as m:
        _stop_at_progress_json(m, 3)  # batch 3 is in the .npz sums, not in the .json's batch list
        with pytest.raises(KeyboardInterrupt):
            sources.prepare_folder(str(src), str(out), **kw)
    notes = []
    meta = sources.prepare_folder(str(src), str(out), warn=notes.append, **kw)
    assert np.array_equal(np.load(out / bf.MEAN_NAME), want)
    assert meta["counts"] == {"read": 12, "written": 12, "skipped": 0}
    assert any("disagree" in n and "starts over" in n for n in notes), notes


def test_the_skipped_list_is_kept_apart_and_complete_after_a_resume(tmp_path, monkeypatch):
    src = tmp_path / "src"
    _classes(src, n=6)
    for c in ("a", "b"):
        for i in range(4):
            (src / c / f"bad{i}.png").write_bytes(b"not a png")
    kw = dict(size=8, workers=1, test_fraction=0, batch_size=2)
    out = tmp_path / "o"
    with monkeypatch.context() as m:
        _stop_at_progress_json(m, 6, ".ccn-progress.npz", "atomic_write")  # batch 6's skips appended, not counted
        with pytest.raises(KeyboardInterrupt):
            sources.prepare_folder(str(src), str(out), **kw)
    with open(out / ".ccn-progress.json") as f:
        p = json.load(f)
    assert "skipped" not in p  # (not rewritten with every batch: appended to a side file)
    meta = sources.prepare_folder(str(src), str(out), **kw)
    assert meta["resumed"]["batches"] == 5
    lines = (out / "skipped.txt").read_text().splitlines()
    assert sorted(x.split("\t")[0] for x in lines) == sorted(f"{c}/bad{i}.png" for c in "ab" for i in range(4))
    assert meta["counts"] == {"read": 20, "written": 12, "skipped": 8}
    assert not [n for n in os.listdir(out) if n.startswith(".ccn-progress")]


def test_which_files_are_read_and_which_are_reported(tmp_path):
    src = tmp_path / "src"
    _classes(src, n=3)
    _save(src / "a" / "x.jpe", _img(1), "JPEG")
    _save(src / "a" / "x.tga", _img(2), "TGA")
    _save(src / "a" / "download", _img(3), "JPEG")  # no extension
    if features.check("avif"):
        _save(src / "b" / "phone.avif", _img(4), "AVIF")
    _save(tmp_path / "elsewhere" / "e0.png", _img(5))
    os.symlink(tmp_path / "elsewhere", src / "a" / "more")      # a linked sub-folder: followed
    os.symlink("..", src / "a" / "up")                          # a link up: would loop, not followed
    os.symlink(src / "a", src / "b" / "into_a")                 # a link into another class: not followed
    _save(src / "loose.png", _img(6))                           # not in a class folder
    (src / "b" / "notes.txt").write_text("x")
    (src / "b" / ".DS_Store").write_bytes(b"x")
    (src / "b" / "Thumbs.db").write_bytes(b"x")
    r = cli("folder", str(src), "--out", str(tmp_path / "o"), "--size", "8", "--test-fraction", "0", "-j", "1")
    assert r.returncode == 0, r.stderr
    want = ["a/0.png", "a/1.png", "a/2.png", "a/download", "a/more/e0.png", "a/x.jpe", "a/x.tga",
            "b/0.png", "b/1.png", "b/2.png"] + (["b/phone.avif"] if features.check("avif") else [])
    assert _names(tmp_path / "o") == want
    lines = r.stderr.strip().splitlines()
    assert any(ln.startswith("warning: 1 image file in") and "loose.png" in ln and "not in a class folder" in ln
               for ln in lines), r.stderr
    assert any(ln.startswith("warning: ignored 5 entries") and "b/notes.txt" in ln and "2 hidden or system" in ln
               for ln in lines), r.stderr
    # the links not followed are counted and named too
    assert any("2 symlinked folders that point into" in ln and "not followed" in ln and "a/up" in ln
               and "b/into_a" in ln for ln in lines), r.stderr
    assert "ignored 4 files" in r.stdout
    ign = bf.read_meta(str(tmp_path / "o"))["ignored"]
    assert ign["count"] == 4 and ign["links_not_followed"] == ["a/up", "b/into_a"]


def test_a_class_whose_images_all_fail_is_refused(tmp_path):
    src = tmp_path / "src"
    _classes(src, ("a", "b", "c"), n=3)
    for i in range(3):
        (src / "b" / f"{i}.png").write_bytes(b"not a png")
    r = cli("folder", str(src), "--out", str(tmp_path / "o"), "--size", "8", "--test-fraction", "0", "-j", "1")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr
    assert str(src / "b") in r.stderr and "b/0.png: cannot decode" in r.stderr
    assert not [n for n in os.listdir(tmp_path / "o") if n.startswith("data_batch")]
    assert not os.path.exists(tmp_path / "o" / "batches.meta.json")
    assert len((tmp_path / "o" / "skipped.txt").read_text().splitlines()) == 3


def test_classes_left_without_training_or_test_images_are_warned_of(tmp_path):
    src = tmp_path / "src"
    _classes(src, ("a",), n=10)
    _save(src / "b" / "0.png", _img(1))
    r = cli("folder", str(src), "--out", str(tmp_path / "o"), "--size", "8", "--test-fraction", "0.6", "-j", "1")
    assert r.returncode == 0, r.stderr
    assert "warning: 1 class has no training images (--test-fraction 0.6): b." in r.stderr
    meta = bf.read_meta(str(tmp_path / "o"))
    assert meta["class_counts"] == {"train": [4, 0], "test": [6, 1]}


def test_every_skipped_file_is_listed_and_the_counts_add_up(tmp_path):
    src = tmp_path / "src"
    _classes(src, n=3)
    for i in range(130):
        (src / "a" / f"junk{i:03d}.png").write_bytes(b"junk")
    os.link(src / "a" / "0.png", src / "b" / "hard.png")
    r = cli("folder", str(src), "--out", str(tmp_path / "o"), "--size", "8", "--test-fraction", "0", "-j", "1")
    assert r.returncode == 0, r.stderr
    assert "read 137, written 6, skipped 131" in r.stdout
    assert f"all 131 with their reasons in {tmp_path / 'o' / 'skipped.txt'}" in r.stdout
    lines = (tmp_path / "o" / "skipped.txt").read_text().splitlines()
    assert len(lines) == 131 and "b/hard.png\tthe same file as a/0.png" in "\n".join(lines)
    assert all("\t" in ln for ln in lines)
    meta = json.loads((tmp_path / "o" / "batches.meta.json").read_text())
    c = meta["counts"]
    assert c["read"] == c["written"] + c["skipped"] and meta["skipped_file"] == "skipped.txt"
    assert len(meta["skipped"]) == 100


def test_a_train_folder_beside_other_folders_is_refused(tmp_path):
    src = tmp_path / "src"
    for split in ("train", "val"):
        _classes(src / split, n=2)
    _save(src / "extras" / "x.png", _img(1))
    r = cli("folder", str(src), "--out", str(tmp_path / "o"), "--size", "8", "-j", "1")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert str(src) in r.stderr and "extras/" in r.stderr and "SRC/train/<class>" in r.stderr
    # without it, the train/val layout
    os.remove(src / "extras" / "x.png")
    os.rmdir(src / "extras")
    meta = sources.prepare_folder(str(src), str(tmp_path / "o"), size=8, workers=1)
    assert meta["label_names"] == ["a", "b"] and meta["num_test_cases"] == 4
    # a class that is named train (images, no class folders in it) stays a class
    flat = tmp_path / "flat"
    _classes(flat, ("bus", "train"), n=2)
    meta = sources.prepare_folder(str(flat), str(tmp_path / "o2"), size=8, workers=1, test_fraction=0)
    assert meta["label_names"] == ["bus", "train"]


def test_a_class_named_train_with_sub_folders_is_a_class(tmp_path):
    # SRC/{bus,car,train}/{day,night}/*.png: no val/ (or test/) beside train/, so train is a class
    src = tmp_path / "src"
    for ci, c in enumerate(("bus", "car", "train")):
        for sub in ("day", "night"):
            _save(src / c / sub / "0.png", _img(10 * ci))
    meta = sources.prepare_folder(str(src), str(tmp_path / "o"), size=8, workers=1, test_fraction=0)
    assert meta["label_names"] == ["bus", "car", "train"] and meta["num_train_cases"] == 6
    # with a test/ beside it, the refusal names the split folders that are there
    _classes(src / "test", ("day",), n=1)
    with pytest.raises(InputError, match=r"holds train/ and test/ and also bus/, car/.*train/ and test/ would "):
        sources.prepare_folder(str(src), str(tmp_path / "o2"), size=8, workers=1)


def test_16_bit_images_scale_by_a_fixed_rule(tmp_path):
    src = tmp_path / "src"
    for c, v in (("dark", 1000), ("bright", 60000)):
        for i in range(2):
            _save(src / c / f"{i}.png", Image.fromarray(np.full((8, 8), v, np.uint16)))
    meta = sources.prepare_folder(str(src), str(tmp_path / "o"), size=8, workers=1, test_fraction=0)
    f = bf.BatchFile(str(tmp_path / "o" / "data_batch_1"))
    px = np.asarray(f.pixels)
    for k, lab in enumerate(f.labels):
        want = round(1000 / 257) if meta["label_names"][lab] == "dark" else round(60000 / 257)
        assert (px[k] == want).all(), (meta["label_names"][lab], px[k].min(), px[k].max())
