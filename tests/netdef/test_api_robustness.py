"""ccn.Net from Python: a failed forward pass leaves nothing for backward to trip over, and
one net used from several threads is serialised instead of corrupting memory."""

import threading

import numpy as np
import pytest

import ccn

T = ("[data]\ntype=data\ndataIdx=0\n[labels]\ntype=data\ndataIdx=1\n[fc1]\ntype=fc\ninputs=data\noutputs=4\n"
     "neuron=tanh\n[fc2]\ntype=fc\ninputs=fc1\noutputs=3\n[probs]\ntype=softmax\ninputs=fc2\n"
     "[cost]\ntype=cost.logreg\ninputs=labels,probs\n")
P = "".join(f"[{n}]\nepsW=0.1\nepsB=0.1\nmomW=0.9\nmomB=0.9\nwc=0.001\n" for n in ("fc1", "fc2"))


def make():
    return ccn.Net("fc.cfg", "p.cfg", {0: 5, 1: 1}, layers_text=T, params_text=P)


def batch(n):
    return [np.ones((n, 5), np.float32), (np.arange(n) % 3).astype(np.float32).reshape(-1, 1)]


def test_backward_after_a_failed_forward_is_an_error_not_a_crash():
    # the rejected minibatch used to leave buffers of mixed sizes behind (a segfault in backward)
    net = make()
    with pytest.raises(ccn.InputError, match="backward needs a forward pass first"):
        net.backward()
    net.forward(batch(1))
    with pytest.raises(ccn.InputError, match="expects 5 values per case"):
        net.forward([np.ones((3000, 4), np.float32), np.zeros((3000, 1), np.float32)])
    with pytest.raises(ccn.InputError, match="backward needs a forward pass first"):
        net.backward()
    net.forward(batch(2))
    net.backward()  # a good forward pass makes it usable again
    assert np.isfinite(net.get("fc1.weights[0]", "grad")).all()


def test_one_net_from_several_threads_is_serialised():
    net = make()
    errors = []

    def work(n):
        try:
            for _ in range(200):
                net.train_step(batch(n), 0.0, n)
                net.output("fc1")
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)
    threads = [threading.Thread(target=work, args=(n,)) for n in (7, 2000, 13, 999)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert all(np.isfinite(net.get(p.name)).all() for p in net.params)


@pytest.mark.parametrize("call, pattern", [
    (lambda net: net.train_step(batch(4), float("nan"), 4), r"progress must be a number from 0 to 1"),
    (lambda net: net.update(1.5, 4), r"progress must be a number from 0 to 1"),
    (lambda net: net.backward({3: np.zeros((2, 4), np.float32)}), r"got the key 3"),
    (lambda net: net.init_weights(-1), r"seed must be a whole number"),
    (lambda net: ccn.Net("fc.cfg", "p.cfg", {0: 5, 1: 1}, seed=-1, layers_text=T, params_text=P),
     r"seed must be a whole number"),
    (lambda net: ccn.Net("fc.cfg", None, {0: (-5, 1, 1), 1: 1}, layers_text=T), r"data dims for dataIdx 0"),
    (lambda net: ccn.Net("fc.cfg", None, {0: (5.7, 1, 1), 1: 1}, layers_text=T), r"data dims for dataIdx 0"),
    (lambda net: ccn.Net(None, layers_text=T), r"layers must be the layer file's path"),
])
def test_bad_api_arguments_are_input_errors(call, pattern):
    net = make()
    net.forward(batch(2))
    with pytest.raises(ccn.InputError, match=pattern):
        call(net)


def test_params_text_without_a_params_file_is_used():
    net = ccn.Net("fc.cfg", None, {0: 5, 1: 1}, layers_text=T, params_text=P)
    assert [p.eps for p in net.params] == ["0.1"] * 4


def test_the_fused_softmax_passes_its_gradient_to_its_input():
    # documented in Net.output_grad: the fused softmax's own gradient is never formed (zeros)
    net = make()
    net.forward(batch(3))
    net.backward()
    assert not net.output_grad("probs").any() and net.output_grad("fc2").any()
    assert next(l for l in net.layers if l.name == "cost").fused_logits == "fc2"


def test_reload_params_is_all_or_nothing():
    net = make()
    # fc1's new epsW comes before fc2's bad momB
    bad = ("[fc1]\nepsW=0.5\nepsB=0.1\nmomW=0.9\nmomB=0.9\nwc=0.001\n"
           "[fc2]\nepsW=0.1\nepsB=0.1\nmomW=0.9\nmomB=abc\nwc=0.001\n")
    with pytest.raises(ccn.ConfigError, match="momB"):
        net.reload_params("x.cfg", bad)
    assert [p.eps for p in net.params] == ["0.1"] * 4 and net.params_path == "p.cfg"
