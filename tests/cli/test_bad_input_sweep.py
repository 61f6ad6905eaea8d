"""Bad input through the real CLI: every command, the mistakes users make.

Each case runs ``python -m ccn.cli.main ...`` in a subprocess and checks the product rule:
an ``error:`` paragraph (or Click's usage error) that names the offending path or option,
exit code 2 for usage/config/input (1 for run-time failures), never a traceback, never an
"internal error", never a crash. One tiny dataset and one checkpoint are built once per
module.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TINY = """\
[data]
type=data
dataIdx=0

[labels]
type=data
dataIdx=1

[conv1]
type=conv
inputs=data
channels=3
filters=4
filterSize=3
padding=1
initW=0.01

[fc10]
type=fc
inputs=conv1
outputs=10
initW=0.01

[probs]
type=softmax
inputs=fc10

[logprob]
type=cost.logreg
inputs=labels,probs
"""
TINY_PARAMS = """\
[conv1]
epsW=0.001
epsB=0.002
momW=0.9
momB=0.9
wc=0

[fc10]
epsW=0.001
epsB=0.002
momW=0.9
momB=0.9
wc=0

[logprob]
coeff=1
"""


@pytest.fixture(scope="module")
def w(tmp_path_factory):
    """A folder with a tiny dataset, a checkpoint of a tiny net and an assortment of wrong files."""
    from ccn import checkpoint as ck
    from ccn.cli.train import run_train
    from ccn.data import builtin

    d = tmp_path_factory.mktemp("badinput")
    p = lambda *a: os.path.join(str(d), *a)  # noqa: E731
    builtin.prepare(p("data"), train_batches=2, test_batches=1, batch_size=20, image_size=8)
    builtin.prepare(p("data16"), train_batches=1, test_batches=1, batch_size=10, image_size=16)
    with open(p("tiny.ini"), "w") as f:
        f.write(TINY)
    with open(p("tiny-params.ini"), "w") as f:
        f.write(TINY_PARAMS)
    run_train({"layers": p("tiny.ini"), "data_path": p("data"), "train_range": "1-2", "test_range": "3",
               "epochs": 1, "mini": 10, "test_freq": 2, "save_path": p("ck"), "seed": 1}, out=io.StringIO())
    assert ck.list_checkpoints(p("ck"))
    os.mkdir(p("empty-dir"))
    open(p("empty.ini"), "w").close()
    with open(p("junk.bin"), "wb") as f:
        f.write(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    from PIL import Image

    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(p("img.png"))
    # a checkpoint whose arrays are cut in half
    newest = ck.list_checkpoints(p("ck"))[-1]
    shutil.copytree(newest, p("ck-trunc"))
    with open(p("ck-trunc", "arrays.npz"), "r+b") as f:
        f.truncate(os.path.getsize(p("ck-trunc", "arrays.npz")) // 2)
    # data folders damaged in one way each
    for name in ("data-dirbatch", "data-nolabels", "data-trunc"):
        shutil.copytree(p("data"), p(name))
    os.remove(p("data-dirbatch", "data_batch_1"))
    os.mkdir(p("data-dirbatch", "data_batch_1"))
    meta = json.load(open(p("data-nolabels", "batches.meta.json")))
    del meta["label_names"]
    json.dump(meta, open(p("data-nolabels", "batches.meta.json"), "w"))
    with open(p("data-trunc", "data_batch_2"), "r+b") as f:
        f.truncate(os.path.getsize(p("data-trunc", "data_batch_2")) // 2)
    # original CIFAR python batches where ccn batches are expected
    os.mkdir(p("cifar"))
    for n in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(p("cifar", n), "wb") as f:
            pickle.dump({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]}, f, protocol=2)
    with open(p("cifar", "batches.meta"), "wb") as f:
        pickle.dump({b"label_names": [b"a", b"b"]}, f, protocol=2)
    # image folders whose images are all undecodable
    for c in ("a", "b"):
        os.makedirs(p("junk-imgs", c))
        with open(p("junk-imgs", c, "0.jpg"), "wb") as f:
            f.write(b"not a jpeg at all")
    return p


def cli(*args):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    env.pop("CCN_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "ccn.cli.main", *args], capture_output=True, text=True, env=env,
                          timeout=120)


def TRAIN(p, **over):
    """A valid ccn train command line on the tiny setup, with options replaced (None drops one)."""
    opts = {"--layers": p("tiny.ini"), "--data-path": p("data"), "--train-range": "1-2", "--test-range": "3",
            "--epochs": "1", "--mini": "10", "--save-path": p("out-train"), "--seed": "1"}
    for k, v in over.items():
        opts["--" + k.replace("_", "-")] = v
    return ["train"] + [x for k, v in opts.items() if v is not None for x in (k, v)]


def P(*parts):
    """A path inside the fixture folder that the message must name."""
    return ("path", parts)


# (id, argv builder, exit code, words the message must contain)

CASES = [
    # show-net / check-grads: layer files
    ("show-net missing", lambda p: ["show-net", "--layers", p("nope.ini")], 2, [P("nope.ini"), "does not exist"]),
    ("show-net folder", lambda p: ["show-net", "--layers", p("empty-dir")], 2, ["--layers", "directory"]),
    ("show-net empty", lambda p: ["show-net", "--layers", p("empty.ini")], 2, [P("empty.ini"), "no layer sections"]),
    ("show-net binary", lambda p: ["show-net", "--layers", p("junk.bin")], 2, [P("junk.bin"), "not UTF-8"]),
    ("show-net png", lambda p: ["show-net", "--layers", p("img.png")], 2, [P("img.png"), "not UTF-8"]),
    ("show-net params png", lambda p: ["show-net", "--layers", p("tiny.ini"), "--params", p("img.png"),
                                       "--image-size", "8"], 2, [P("img.png"), "layer-params"]),
    ("show-net params is layers", lambda p: ["show-net", "--layers", p("tiny.ini"), "--params", p("tiny.ini"),
                                             "--image-size", "8"], 2, [P("tiny.ini"), "[data]"]),
    ("show-net image-size 0", lambda p: ["show-net", "--layers", p("tiny.ini"), "--image-size", "0"], 2,
     ["--image-size"]),
    ("show-net no size", lambda p: ["show-net", "--layers", p("tiny.ini")], 2, ["--image-size", "dataIdx=0"]),
    ("show-net data-dims malformed", lambda p: ["show-net", "--layers", p("tiny.ini"), "--data-dims", "0=3x8"], 2,
     ["--data-dims", "0=3x8"]),
    ("show-net data-dims unknown idx", lambda p: ["show-net", "--layers", p("tiny.ini"), "--image-size", "8",
                                                  "--data-dims", "9=3"], 2, ["--data-dims 9", "dataIdx=9"]),
    ("check-grads missing", lambda p: ["check-grads", "--layers", p("nope.ini")], 2, [P("nope.ini")]),
    ("check-grads threshold nan", lambda p: ["check-grads", "--layers", p("tiny.ini"), "--threshold", "nan"], 2,
     ["--threshold", "finite"]),
    ("check-grads seed negative", lambda p: ["check-grads", "--layers", p("tiny.ini"), "--seed", "-1"], 2,
     ["--seed"]),
    # prepare-data
    ("builtin train-batches 0", lambda p: ["prepare-data", "builtin", "--out", p("pd0"), "--train-batches", "0"],
     2, ["--train-batches"]),
    ("builtin batch-size -5", lambda p: ["prepare-data", "builtin", "--out", p("pd1"), "--batch-size", "-5"], 2,
     ["--batch-size"]),
    ("builtin batch-size huge", lambda p: ["prepare-data", "builtin", "--out", p("pd2"), "--batch-size",
                                           "100000000000"], 2, ["--batch-size"]),
    ("builtin out is a file", lambda p: ["prepare-data", "builtin", "--out", p("junk.bin")], 2,
     [P("junk.bin")]),
    ("builtin out under a file", lambda p: ["prepare-data", "builtin", "--out", p("junk.bin", "sub")], 2,
     [P("junk.bin", "sub")]),
    ("builtin other dataset", lambda p: ["prepare-data", "builtin", "--out", p("data"), "--batch-size", "7"], 2,
     [P("data"), "--overwrite"]),
    ("builtin seed negative", lambda p: ["prepare-data", "builtin", "--out", p("pd3"), "--seed", "-1"], 2,
     ["--seed"]),
    ("cifar missing", lambda p: ["prepare-data", "cifar", p("nope"), "--out", p("pdc")], 2, [P("nope")]),
    ("cifar binary", lambda p: ["prepare-data", "cifar", p("junk.bin"), "--out", p("pdc")], 2, [P("junk.bin")]),
    ("cifar empty folder", lambda p: ["prepare-data", "cifar", p("empty-dir"), "--out", p("pdc")], 2,
     [P("empty-dir")]),
    ("cifar given ccn batches", lambda p: ["prepare-data", "cifar", p("data"), "--out", p("pdc")], 2, [P("data")]),
    ("mnist file", lambda p: ["prepare-data", "mnist", p("junk.bin"), "--out", p("pdm")], 2, [P("junk.bin")]),
    ("mnist empty folder", lambda p: ["prepare-data", "mnist", p("empty-dir"), "--out", p("pdm")], 2,
     [P("empty-dir"), "train-images-idx3-ubyte"]),
    ("folder empty", lambda p: ["prepare-data", "folder", p("empty-dir"), "--out", p("pdf")], 2, [P("empty-dir")]),
    ("folder all images junk", lambda p: ["prepare-data", "folder", p("junk-imgs"), "--out", p("pdf2"),
                                          "--test-fraction", "0"], 2,
     [P("pdf2"), "skipped", "0.jpg"]),
    ("folder split leaves no test images", lambda p: ["prepare-data", "folder", p("junk-imgs"), "--out", p("pdf5")],
     2, [P("junk-imgs"), "leaves no test images", "--test-fraction 0"]),
    ("folder workers -2", lambda p: ["prepare-data", "folder", p("junk-imgs"), "--out", p("pdf3"), "-j", "-2"], 2,
     ["--workers"]),
    ("folder test-fraction 1", lambda p: ["prepare-data", "folder", p("junk-imgs"), "--out", p("pdf4"),
                                          "--test-fraction", "1"], 2, ["--test-fraction"]),
    ("imagenet nothing", lambda p: ["prepare-data", "imagenet", "--out", p("pdi")], 2, ["--train", "--val"]),
    ("imagenet junk devkit", lambda p: ["prepare-data", "imagenet", "--out", p("pdi"), "--train", p("empty-dir"),
                                        "--devkit", p("junk.bin")], 2, [P("junk.bin")]),
    # train: ranges and numbers
    ("train range reversed", lambda p: TRAIN(p, train_range="5-1"), 2, ["--train-range", "5-1"]),
    ("train range letters", lambda p: TRAIN(p, train_range="x"), 2, ["--train-range", "'x'"]),
    ("train range huge", lambda p: TRAIN(p, train_range="1-100000000000"), 2, ["--train-range"]),
    ("train range missing batch", lambda p: TRAIN(p, train_range="1-9"), 2, ["--train-range", P("data")]),
    ("test range missing batch", lambda p: TRAIN(p, test_range="7"), 2, ["--test-range", P("data")]),
    ("train epochs 0", lambda p: TRAIN(p, epochs="0"), 2, ["--epochs"]),
    ("train mini -5", lambda p: TRAIN(p, mini="-5"), 2, ["--mini"]),
    ("train threads 0", lambda p: TRAIN(p, threads="0"), 2, ["--threads"]),
    ("train threads huge", lambda p: TRAIN(p, threads="100000"), 2, ["--threads"]),
    ("train seed negative", lambda p: TRAIN(p, seed="-1"), 2, ["--seed"]),
    ("train seed huge", lambda p: TRAIN(p, seed="99999999999999999999999"), 2, ["--seed"]),
    ("train color-noise nan", lambda p: TRAIN(p, color_noise="nan"), 2, ["--color-noise"]),
    ("train scalar-mean inf", lambda p: TRAIN(p, scalar_mean="inf"), 2, ["--scalar-mean"]),
    ("train max-filesize nan", lambda p: TRAIN(p, max_filesize="nan"), 2, ["--max-filesize"]),
    ("train inner-size too big", lambda p: TRAIN(p, inner_size="64"), 2, ["--inner-size", P("data")]),
    ("train test-one 2", lambda p: TRAIN(p, test_one="2"), 2, ["--test-one"]),
    ("train gpu with cpu", lambda p: TRAIN(p, gpu="0", device="cpu"), 2, ["--gpu", "--device"]),
    # train: files and folders
    ("train layers missing", lambda p: TRAIN(p, layers=p("nope.ini")), 2, [P("nope.ini")]),
    ("train layers png", lambda p: TRAIN(p, layers=p("img.png"), params=p("tiny-params.ini")), 2,
     [P("img.png"), "not UTF-8"]),
    ("train params is a folder", lambda p: TRAIN(p, params=p("empty-dir")), 2, [P("empty-dir"), "layer-params"]),
    ("train data missing", lambda p: TRAIN(p, data_path=p("nope")), 2, [P("nope"), "--data-path"]),
    ("train data is a file", lambda p: TRAIN(p, data_path=p("junk.bin")), 2, [P("junk.bin"), "--data-path"]),
    ("train data empty folder", lambda p: TRAIN(p, data_path=p("empty-dir")), 2,
     [P("empty-dir"), "batches.meta.json"]),
    ("train data is CIFAR", lambda p: TRAIN(p, data_path=p("cifar")), 2, [P("cifar"), "prepare-data cifar"]),
    ("train batch file is a folder", lambda p: TRAIN(p, data_path=p("data-dirbatch")), 2,
     [P("data-dirbatch", "data_batch_1"), "folder"]),
    ("train batch file truncated", lambda p: TRAIN(p, data_path=p("data-trunc")), 2,
     [P("data-trunc", "data_batch_2"), "truncated"]),
    ("train meta lacks key", lambda p: TRAIN(p, data_path=p("data-nolabels")), 2,
     [P("data-nolabels", "batches.meta.json"), "label_names"]),
    ("train save-path is a file", lambda p: TRAIN(p, save_path=p("junk.bin")), 2, [P("junk.bin"), "--save-path"]),
    ("train save-path under a file", lambda p: TRAIN(p, save_path=p("junk.bin", "x")), 2,
     [P("junk.bin", "x"), "--save-path"]),
    ("train provider unknown", lambda p: TRAIN(p, data_provider="nosuch"), 2, ["--data-provider", "nosuch"]),
    ("train provider no module", lambda p: TRAIN(p, data_provider="nosuchmod:f"), 2, ["--data-provider",
                                                                                     "nosuchmod"]),
    ("train provider not callable", lambda p: TRAIN(p, data_provider="os:sep"), 2, ["--data-provider", "os:sep"]),
    ("train provider raises", lambda p: TRAIN(p, data_provider="json:loads"), 1, ["--data-provider", "json:loads"]),
    ("train resume empty folder", lambda p: ["train", "-f", p("empty-dir")], 2, [P("empty-dir"), "no complete"]),
    ("train resume a layer file", lambda p: ["train", "-f", p("tiny.ini")], 2, [P("tiny.ini"), "found a file"]),
    ("train resume data folder", lambda p: ["train", "-f", p("data")], 2, [P("data")]),
    ("train resume truncated", lambda p: ["train", "-f", p("ck-trunc")], 2, [P("ck-trunc"), "truncated"]),
    ("train resume other net", lambda p: ["train", "-f", p("ck"), "--layers",
                                          os.path.join(ROOT, "layer-defs", "quickstart.ini")], 2, [P("ck"),
                                                                                                 "another net"]),
    ("train resume other image size", lambda p: ["train", "-f", p("ck"), "--data-path", p("data16"),
                                                 "--train-range", "1", "--test-range", "2"], 2,
     [P("data16"), "--data-path"]),
    # test
    ("test missing", lambda p: ["test", "-f", p("nope")], 2, [P("nope")]),
    ("test png", lambda p: ["test", "-f", p("img.png")], 2, [P("img.png")]),
    ("test truncated", lambda p: ["test", "-f", p("ck-trunc")], 2, [P("ck-trunc"), "truncated"]),
    ("test range reversed", lambda p: ["test", "-f", p("ck"), "--test-range", "3-1"], 2, ["--test-range"]),
    ("test range missing batch", lambda p: ["test", "-f", p("ck"), "--test-range", "9"], 2,
     ["--test-range", P("data")]),
    ("test data other size", lambda p: ["test", "-f", p("ck"), "--data-path", p("data16"), "--test-range", "2"], 2,
     [P("data16"), "--data-path"]),
    ("test data missing", lambda p: ["test", "-f", p("ck"), "--data-path", p("nope")], 2, [P("nope")]),
    ("test threads huge", lambda p: ["test", "-f", p("ck"), "--threads", "100000"], 2, ["--threads"]),
    ("test features without path", lambda p: ["test", "-f", p("ck"), "--write-features", "fc10"], 2,
     ["--feature-path"]),
    ("test features bad layer", lambda p: ["test", "-f", p("ck"), "--write-features", "nope", "--feature-path",
                                           p("feats")], 2, ["--write-features nope"]),
    ("test feature-path is a file", lambda p: ["test", "-f", p("ck"), "--write-features", "fc10",
                                               "--feature-path", p("junk.bin")], 2, ["--feature-path",
                                                                                     P("junk.bin")]),
    ("test out bad extension", lambda p: ["test", "-f", p("ck"), "--test-out", p("preds.txt")], 2,
     ["--test-out", P("preds.txt")]),
    ("test out no folder", lambda p: ["test", "-f", p("ck"), "--test-out", p("nope", "p.csv")], 2,
     [P("nope", "p.csv")]),
    ("test logreg not logreg", lambda p: ["test", "-f", p("ck"), "--logreg-name", "fc10"], 2, ["--logreg-name"]),
    # show-filters / show-cost / show-preds
    ("show-filters empty folder", lambda p: ["show-filters", "-f", p("empty-dir"), "--layer", "conv1"], 2,
     [P("empty-dir")]),
    ("show-filters no layer", lambda p: ["show-filters", "-f", p("ck"), "--layer", "nope", "-o", p("f.png")], 2,
     ["'nope'"]),
    ("show-filters no weights", lambda p: ["show-filters", "-f", p("ck"), "--layer", "probs", "-o", p("f.png")], 2,
     ["'probs'"]),
    ("show-filters start too far", lambda p: ["show-filters", "-f", p("ck"), "--layer", "conv1", "--start", "99",
                                              "-o", p("f.png")], 2, ["--start 99"]),
    ("show-filters module on conv", lambda p: ["show-filters", "-f", p("ck"), "--layer", "conv1", "--module", "3",
                                               "-o", p("f.png")], 2, ["--module 3"]),
    ("show-filters out is a folder", lambda p: ["show-filters", "-f", p("ck"), "--layer", "conv1", "-o",
                                                p("empty-dir")], 2, [P("empty-dir"), "folder"]),
    ("show-filters out under a file", lambda p: ["show-filters", "-f", p("ck"), "--layer", "conv1", "-o",
                                                 p("junk.bin", "f.png")], 2, [P("junk.bin"), "is a file"]),
    ("show-cost no such cost", lambda p: ["show-cost", "-f", p("ck"), "--cost", "nope", "-o", p("c.png")], 2,
     ["--cost nope"]),
    ("show-cost idx too big", lambda p: ["show-cost", "-f", p("ck"), "--cost-idx", "9", "-o", p("c.png")], 2,
     ["--cost-idx 9"]),
    ("show-cost truncated", lambda p: ["show-cost", "-f", p("ck-trunc")], 2, [P("ck-trunc")]),
    ("show-preds num 0", lambda p: ["show-preds", "-f", p("ck"), "--num", "0"], 2, ["--num"]),
    ("show-preds seed negative", lambda p: ["show-preds", "-f", p("ck"), "--seed", "-1"], 2, ["--seed"]),
    ("show-preds range letters", lambda p: ["show-preds", "-f", p("ck"), "--test-range", "a-b", "-o", p("p.png")],
     2, ["--test-range", "a-b"]),
    ("show-preds data other size", lambda p: ["show-preds", "-f", p("ck"), "--data-path", p("data16"),
                                              "--test-range", "2", "-o", p("p.png")], 2, [P("data16")]),
]


@pytest.mark.parametrize("name,argv,code,words", CASES, ids=[c[0] for c in CASES])
def test_bad_input(w, name, argv, code, words):
    r = cli(*argv(w))
    err = r.stderr
    assert r.returncode == code, f"exit {r.returncode}, expected {code}; stderr:\n{err}"
    assert "Traceback" not in err and "internal error" not in err, err
    if "Usage:" in err:  # Click's own usage errors name the option
        assert "Error: Invalid value" in err or "Error:" in err, err
    else:
        assert err.startswith("error: "), err
        assert err.count("error:") == 1, err
    for word in words:
        word = w(*word[1]) if isinstance(word, tuple) else word
        assert word in err, f"{word!r} not in:\n{err}"
