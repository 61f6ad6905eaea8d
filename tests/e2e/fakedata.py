"""A tiny data provider implementing the ccn.data.provider contract, for training tests.

A fake dataset is a folder with ``fake.json``: ``{"classes", "dims", "cases", "batches",
"seed", "nan_batch", "sep"}``. Each case is its class's fixed random mean (scaled by
``sep``) plus unit Gaussian noise, so a linear classifier can learn it. ``load`` is
deterministic in (options.seed, batch, epoch) like the real provider, and thread-safe.
``nan_batch`` puts NaN into one case of that batch's images (for the NaN tests).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np

from ccn.errors import InputError


@dataclass
class ProviderOptions:
    inner_size: int = 0
    color_noise: float = 0.0
    scalar_mean: float | None = None
    multiview: bool = False
    seed: int = 0
    threads: int = 0


def make_dataset(folder, classes=3, dims=6, cases=40, batches=(1, 2, 3, 4, 5), seed=7, nan_batch=None, sep=2.0,
                 delay=0.0):
    os.makedirs(folder, exist_ok=True)
    spec = {"classes": classes, "dims": dims, "cases": cases, "batches": list(batches), "seed": seed,
            "nan_batch": nan_batch, "sep": sep, "delay": delay}
    with open(os.path.join(folder, "fake.json"), "w") as f:
        json.dump(spec, f)
    return str(folder)


def _spec(data_path):
    p = os.path.join(data_path, "fake.json")
    if not os.path.isfile(p):
        raise InputError(f"{data_path}: no fake.json here; is this a fake dataset folder?")
    with open(p) as f:
        return json.load(f)


def available_batches(data_path):
    return list(_spec(data_path)["batches"])


class FakeProvider:
    def __init__(self, data_path, batch_range, train, options):
        self.spec = _spec(data_path)
        missing = [b for b in batch_range if b not in self.spec["batches"]]
        if missing:
            raise InputError(f"{data_path}: no data batch {missing[0]} (available: {self.spec['batches']}).")
        self.batch_nums = list(batch_range)
        self.train = train
        self.options = options
        self.num_classes = self.spec["classes"]
        self.label_names = [f"class{i}" for i in range(self.num_classes)]
        self.meta = dict(self.spec)
        rng = np.random.default_rng(self.spec["seed"])
        self.means = rng.standard_normal((self.num_classes, self.spec["dims"])) * self.spec["sep"]

    def data_dims(self):
        return {0: self.spec["dims"], 1: 1}

    def num_cases(self, batch_num):
        return self.spec["cases"]

    def load(self, batch_num, epoch):
        if self.spec.get("delay"):
            import time

            time.sleep(self.spec["delay"])
        # the data of a batch is fixed; the epoch only reorders it (as augmentation would vary it)
        rng = np.random.default_rng([self.spec["seed"], batch_num])
        n = self.spec["cases"]
        labels = rng.integers(0, self.num_classes, n)
        x = self.means[labels] + rng.standard_normal((n, self.spec["dims"]))
        if self.train:
            perm = np.random.default_rng([self.options.seed, batch_num, epoch]).permutation(n)
            x, labels = x[perm], labels[perm]
        if not self.train and self.options.multiview:  # 10 views of each case: rows i, i+n, ..., i+9n
            vrng = np.random.default_rng([self.spec["seed"], batch_num, 99])
            x = np.concatenate([x + 0.5 * vrng.standard_normal(x.shape) for _ in range(10)])
            labels = np.tile(labels, 10)
            n = 10 * n
        x = x.astype(np.float32)
        if self.spec.get("nan_batch") == batch_num:
            x[n // 2, 0] = np.nan
        return [x, labels.reshape(n, 1).astype(np.float32)]


    def load_rows(self, batch_num, epoch, rows):
        """Only ``rows`` of ``load`` (what data-parallel ranks ask for)."""
        rows = np.asarray(rows, np.int64)
        return [d[rows] for d in self.load(batch_num, epoch)]


def open_provider(data_path, batch_range, *, train, options):
    if not os.path.isdir(data_path):
        raise InputError(f"{data_path}: the data path does not exist.")
    return FakeProvider(data_path, batch_range, train, options)


LAYERS = """
[data]
type=data
dataIdx=0

[labels]
type=data
dataIdx=1

[fc1]
type=fc
inputs=data
outputs=8
initW=0.1
neuron=tanh[1.7,0.66]

[fc2]
type=fc
inputs=fc1
outputs={classes}
initW=0.1

[probs]
type=softmax
inputs=fc2

[logprob]
type=cost.logreg
inputs=labels,probs
"""

PARAMS = """
[fc1]
epsW={eps}
epsB={eps}
momW=0.9
momB=0.9
wc=0.0005

[fc2]
epsW={eps}
epsB={eps}
momW=0.9
momB=0.9
wc=0.0005

[logprob]
coeff=1
"""


def write_net(folder, classes=3, eps=0.05):
    os.makedirs(folder, exist_ok=True)
    lp = os.path.join(folder, "layers-fake.cfg")
    pp = os.path.join(folder, "layer-params-fake.cfg")
    with open(lp, "w") as f:
        f.write(LAYERS.format(classes=classes))
    with open(pp, "w") as f:
        f.write(PARAMS.format(eps=eps))
    return lp, pp


def train_opts(tmp, data, layers, epochs=3, **kw) -> dict:
    """``ccn train`` options for a run on the fake data set (batches 1-4 train, 5 test)."""
    o = {"data_path": data, "data_provider": "fakedata:open_provider", "train_range": "1-4", "test_range": "5",
         "epochs": epochs, "mini": 16, "test_freq": 2, "save_path": str(tmp / "save"), "layers": layers,
         "seed": 5, "threads": 1}
    o.update(kw)
    return o


def train(given, load_file=None, stop_after=None):
    """run_train with ``given`` options; returns (result, what it printed)."""
    import io

    from ccn.cli.train import run_train

    out = io.StringIO()
    res = run_train(dict(given), load_file, out=out, stop_after=stop_after)
    return res, out.getvalue()
