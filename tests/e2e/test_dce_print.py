"""cost.dce is printed as cuda-convnet2 printed it: crossent and error per case, then per class
precision = true positives / declared positives and recall = true positives / positives, tagged
as its outputFilterFormatter did ("(crossent) c, (err) e, (label) p, r") -- in the trainer's
lines, its tests and ccn test."""

import io
import math
import re

import numpy as np

import ccn
import fakedata
from ccn import checkpoint as ck
from ccn.cli.test import run_test_command
from ccn.cli.train import run_train
from ccn.train import format_costs, shown_names, shown_values

NET = """
[data]
type=data
dataIdx=0

[labels]
type=data
dataIdx=1

[fc1]
type=fc
inputs=data
outputs=1
initW=0.1
neuron=logistic

[det]
type=cost.dce
inputs=labels,fc1
"""

PARAMS = """
[fc1]
epsW=0.05
epsB=0.05
momW=0.9
momB=0.9
wc=0

[det]
coeff=1
"""

NUM = r"(-?\d+\.\d{6}|inf)"
LABEL = r"[^()]+"  # the class's name


def test_shown_values_and_names():
    vals = [12.0, 3.0, 4.0, 5.0, 2.0, 0.0, 3.0, 0.0]  # crossent, error, then (declared, positive, tp) x 2
    assert shown_values("cost.dce", vals, 4) == [3.0, 0.75, 0.5, 0.4, math.inf, 0.0]
    assert shown_names("cost.dce", ["crossent", "error"] + [f"{w}[{k}]" for k in range(2) for w in
                                                           ("declared positive", "positive", "true positive")]) == \
        ["crossent", "error", "precision[0]", "recall[0]", "precision[1]", "recall[1]"]
    assert shown_values("cost.bce", vals[:3], 4) == [3.0, 0.75, 1.0]
    # cuda-convnet2's outputFilterFormatter: (crossent), (err), then (label) precision, recall
    assert format_costs({"det": vals, "lp": [2.0, 1.0]}, 4, {"det": "cost.dce"}, ["cat"]) == \
        "det:  (crossent) 3.000000, (err) 0.750000, (cat) 0.500000, 0.400000, (1) inf, 0.000000 lp:  0.500000, 0.250000"


def test_trainer_and_ccn_test_print_precision_and_recall(tmp_path):
    data = fakedata.make_dataset(tmp_path / "data", classes=2)
    (tmp_path / "net").mkdir()
    lp = tmp_path / "net" / "layers-d.cfg"
    lp.write_text(NET)
    (tmp_path / "net" / "layer-params-d.cfg").write_text(PARAMS)
    out = io.StringIO()
    run_train({"data_path": data, "data_provider": "fakedata:open_provider", "train_range": "1-4", "test_range": "5",
               "epochs": 1, "mini": 8, "test_freq": 4, "save_path": str(tmp_path / "save"), "layers": str(lp),
               "seed": 3, "threads": 1}, out=out)
    text = out.getvalue()
    c = ck.load(str(tmp_path / "save"))
    # each training line: the batch's summed counts turned into precision and recall
    lines = re.findall(rf"^1\.(\d) \(\d+\.\d\d%\)\.\.\. det:  \(crossent\) {NUM}, \(err\) {NUM}, \({LABEL}\) {NUM}, "
                       rf"{NUM} \(", text, re.M)
    assert len(lines) == 4
    for (b, *shown), rec in zip(lines, c.meta["history"]["train"]):
        ce, err, dec, pos, tp = rec["costs"]["det"]
        n = rec["cases"]
        assert int(b) == rec["batch"]
        assert shown == ["%.6f" % v for v in (ce / n, err / n, tp / dec if dec else math.inf,
                                              tp / pos if pos else math.inf)]
    # the test: independent counts from the saved weights on test batch 5
    net = ccn.Net("l", None, data_dims={0: 6, 1: 1}, layers_text=c.layers_text, init=False)
    ck.restore_net(net, c)
    prov = fakedata.open_provider(data, [5], train=False, options=fakedata.ProviderOptions(seed=3))
    x, y = prov.load(5, 1)
    net.forward([x, y])
    p = net.output("fc1")[:, 0].astype(np.float64)
    t = y[:, 0]
    declared = p > 0.5
    tp = float(np.sum(declared & (t == 1)))
    precision, recall = tp / declared.sum(), tp / (t == 1).sum()
    assert 0 < precision <= 1 and 0 < recall <= 1
    test_line = text.split("======================Test output======================")[1].splitlines()[1]
    got = [float(v) for v in re.fullmatch(rf"det:  \(crossent\) {NUM}, \(err\) {NUM}, \({LABEL}\) {NUM}, {NUM}",
                                          test_line).groups()]
    np.testing.assert_allclose(got[2:], [precision, recall], rtol=1e-6)
    np.testing.assert_allclose(got[1], np.sum(declared != (t == 1)) / 40, rtol=1e-6)
    # ccn test prints the same, with the names
    out = io.StringIO()
    res = run_test_command(str(tmp_path / "save"), out=out)
    tout = out.getvalue()
    assert test_line in tout.splitlines()
    m = re.search(rf"^det: crossent {NUM}, error {NUM} \(\d+\.\d\d%\), precision\[0\] {NUM}, recall\[0\] {NUM}  "
                  r"over 40 cases$", tout, re.M)
    assert m, tout
    np.testing.assert_allclose([float(m.group(3)), float(m.group(4))], [precision, recall], rtol=1e-6)
    assert res["costs"]["det"][2:] == [float(declared.sum()), float((t == 1).sum()), tp]  # the raw counts stay
