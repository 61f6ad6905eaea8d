"""cuda-convnet2's gpu= layouts read as logical devices (ccn/layout.py), and the original multi-GPU
example files training on the CPU."""

import io
import os

import numpy as np
import pytest

import ccn
from ccn.cli.train import run_train
from ccn.errors import InputError
from ccn.layout import layout_of

NET = """
[data]
type=data
dataIdx=0
[labels]
type=data
dataIdx=1
[fca]
type=fc
inputs=data
outputs=4
{a}
[fcb]
type=fc
inputs=fca
outputs=4
{b}
[fcc]
type=fc
inputs=fca
outputs=4
{c}
[cat]
type=concat
inputs=fcb,fcc
[fcd]
type=fc
inputs=cat
outputs=3
[probs]
type=softmax
inputs=fcd
[cost]
type=cost.logreg
inputs=labels,probs
"""


def lay(a="", b="", c=""):
    net = ccn.Net("x.cfg", data_dims={0: 5, 1: 1}, layers_text=NET.format(a=a, b=b, c=c))
    return layout_of(net)


def test_inheritance_and_kinds():
    l0 = lay()
    assert l0.kind == "one device" and l0.num_devices == 1 and set(l0.devices.values()) == {(0,)}
    # replicas; later layers inherit their first input's devices
    l1 = lay(a="gpu=0,1")
    assert l1.kind == "data parallel" and l1.devices["fcb"] == (0, 1) and l1.devices["cost"] == (0, 1)
    # two columns on two devices; concat inherits fcb's device, the cost its input's
    l2 = lay(b="gpu=0", c="gpu=1")
    assert l2.kind == "model parallel" and l2.devices["fcc"] == (1,) and l2.devices["cat"] == (0,)
    assert l2.by_device[1] == ["fcc"]
    l3 = lay(a="gpu=0,1,2,3", b="gpu=0", c="gpu=3")
    assert l3.kind.startswith("hybrid") and l3.num_devices == 4
    assert l3.describe().startswith("hybrid (data parallel + model parallel) over 4 logical devices (1 layers "
                                    "replicated on 0,1,2,3; ")


REF = [("layers-imagenet-2gpu-data.cfg", "data parallel", 2),
       ("layers-imagenet-2gpu-model.cfg", "model parallel", 2),
       ("layers-imagenet-4gpu-data.cfg", "data parallel", 4),
       ("layers-imagenet-4gpu-data-model.cfg", "hybrid (data parallel + model parallel)", 4)]


@pytest.mark.parametrize("name,kind,n", REF)
def test_reference_multi_gpu_files(reference_dir, name, kind, n):
    path = os.path.join(reference_dir, "cuda-convnet2", name)
    net = ccn.Net(path, data_dims={0: (3, 224, 224), 1: 1})
    lay_ = layout_of(net)
    assert (lay_.kind, lay_.num_devices, net.gpus_needed) == (kind, n, n)


# a two-case "ImageNet" for one training step of the original files
class _Provider:
    def __init__(self, batch_range, train):
        self.batch_nums = list(batch_range)
        self.label_names = [str(i) for i in range(1000)]
        self.num_classes = 1000

    def data_dims(self):
        return {0: (3, 224, 224), 1: 1}

    def num_cases(self, b):
        return 2

    def load(self, b, epoch):
        rng = np.random.default_rng([b, epoch])
        return [rng.standard_normal((2, 3 * 224 * 224)).astype(np.float32), np.array([[3.0], [7.0]], np.float32)]


def available_batches(path):
    return [1, 2]


def open_provider(path, batch_range, *, train, options):
    if not os.path.isdir(path):
        raise InputError(f"{path}: no such folder.")
    return _Provider(batch_range, train)


@pytest.mark.slow
def test_reference_hybrid_file_trains_on_the_cpu(reference_dir, tmp_path):
    d = os.path.join(reference_dir, "cuda-convnet2")
    out = io.StringIO()
    res = run_train({"layers": os.path.join(d, "layers-imagenet-4gpu-data-model.cfg"), "data_path": str(tmp_path),
                     "data_provider": "test_layout:open_provider", "train_range": "1", "test_range": "2",
                     "epochs": 1, "mini": 2, "test_freq": 1, "save_path": str(tmp_path / "save"), "seed": 1},
                    out=out)
    text = out.getvalue()
    assert "gpu= layout: hybrid (data parallel + model parallel) over 4 logical devices" in text
    assert res.checkpoint and res.checkpoint.endswith("1.1")
    assert "logprob:" in text
