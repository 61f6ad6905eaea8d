import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "e2e"))  # fakedata

TINY_CONV = """
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
stride=1
sharedBiases=1
initW=0.002
neuron=relu

[pool1]
type=pool
pool=max
inputs=conv1
channels=4
sizeX=2
stride=2

[fc10]
type=fc
inputs=pool1
outputs=10
initW=0.01

[probs]
type=softmax
inputs=fc10

[logprob]
type=cost.logreg
inputs=labels,probs
topk=3
"""

TINY_CONV_PARAMS = """
[conv1]
epsW=0.0005
epsB=0.001
momW=0.9
momB=0.9
wc=0.0

[fc10]
epsW=0.0005
epsB=0.001
momW=0.9
momB=0.9
wc=0.0

[logprob]
coeff=1
"""


@pytest.fixture(scope="session")
def conv_run(tmp_path_factory):
    """A tiny conv net trained for 2 epochs on a tiny built-in dataset (8x8 images): checkpoints
    1.1 and 2.1 in RUN, the data in DATA."""
    from ccn.cli.train import run_train
    from ccn.data import builtin

    base = tmp_path_factory.mktemp("convrun")
    data = str(base / "data")
    builtin.prepare(data, train_batches=1, test_batches=1, batch_size=60, image_size=8, seed=3)
    net = base / "net"
    net.mkdir()
    (net / "layers-tiny.cfg").write_text(TINY_CONV)
    (net / "layer-params-tiny.cfg").write_text(TINY_CONV_PARAMS)
    import io

    run_train({"data_path": data, "train_range": "1", "test_range": "2", "epochs": 2, "mini": 20, "test_freq": 1,
               "save_path": str(base / "run"), "layers": str(net / "layers-tiny.cfg"), "seed": 4, "threads": 1},
              out=io.StringIO())
    return {"base": base, "data": data, "run": str(base / "run")}


@pytest.fixture(scope="session")
def fake_run(tmp_path_factory):
    """fakedata's fc net trained for 1 epoch (test batches 4-5 all tested)."""
    import io

    import fakedata
    from ccn.cli.train import run_train

    base = tmp_path_factory.mktemp("fakerun")
    data = fakedata.make_dataset(base / "data")
    layers, _ = fakedata.write_net(base / "net")
    run_train({"data_path": data, "data_provider": "fakedata:open_provider", "train_range": "1-3",
               "test_range": "4-5", "epochs": 1, "mini": 16, "test_freq": 3, "test_one": False,
               "save_path": str(base / "run"), "layers": layers, "seed": 5, "threads": 1}, out=io.StringIO())
    return {"base": base, "data": data, "run": str(base / "run")}
