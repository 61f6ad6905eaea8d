"""The INI dialect of cuda-convnet's layer files, read by the native reader (netdef/config.cpp).

Every feature the original files use (Python 2 ConfigParser as layer.py used it) is checked
through ``core.parse_config`` (the raw reader) and ``core.netdef_get`` (typed access as a layer
reads keys), and end to end through ``ccn.Net``.
"""

import numpy as np
import pytest

import ccn
from ccn._native import core
from ccn.errors import ConfigError


def sections(text):
    return {name: {k.lower(): v for k, v, _ in entries} for name, _, entries in core.parse_config(text, "t.cfg")}


def get(text, key, kind, n=1, section="s", params=False):
    return core.netdef_get(text, "t.cfg", section, key, kind, n, params)


def test_sections_keys_both_separators_and_lines():
    text = "[data]\ntype=data\ndataIdx = 0\n\n[fc]\ntype : fc\ninputs: data\nkey=a:b\nother:c=d\n"
    got = core.parse_config(text, "t.cfg")
    assert [(n, line) for n, line, _ in got] == [("data", 1), ("fc", 5)]
    assert got[1][2] == [("type", "fc", 6), ("inputs", "data", 7), ("key", "a:b", 8), ("other", "c=d", 9)]
    assert got[0][2][1] == ("dataIdx", "0", 3)


def test_comments_full_line_and_inline():
    text = ("# a comment\n; another\n[s]\n# inside\na=1 ; inline\nb=2 # inline too\nc=x;y\nd=u#v\n"
            "  ; indented comment\ne=3\n")
    s = sections(text)["s"]
    assert s == {"a": "1", "b": "2", "c": "x;y", "d": "u#v", "e": "3"}


def test_continuation_lines_join_values():
    text = "[s]\ninputs=a,\n   b,\n\tc\nnext=1\n"
    s = sections(text)["s"]
    assert s["inputs"] == "a,\nb,\nc" and s["next"] == "1"
    assert get(text, "inputs", "str_list", 3) == ["a", "b", "c"]


def test_blank_line_ends_a_value():
    # after a blank line an indented key is a new key, not a continuation
    s = sections("[s]\na=1\n\n  b=2\n")["s"]
    assert s == {"a": "1", "b": "2"}


def test_crlf_bom_and_case_insensitive_keys():
    text = "\ufeff[S]\r\nTyPe=fc\r\nINPUTS = data\r\n"
    got = core.parse_config(text, "t.cfg")
    assert got[0][0] == "S"  # section names keep their case
    assert get(text, "type", "str", section="S") == "fc"
    assert get(text, "inputs", "str", section="S") == "data"
    with pytest.raises(Exception):
        get(text, "type", "str", section="s")  # sections are case-sensitive, as in ConfigParser


@pytest.mark.parametrize("value,expect", [("1", True), ("0", False), ("true", True), ("false", False),
                                          ("True", True), ("FALSE", False)])
def test_booleans(value, expect):
    assert get(f"[s]\nb={value}\n", "b", "bool") is expect


def test_bad_boolean_names_the_forms():
    with pytest.raises(ConfigError, match=r"t.cfg:2: in section \[s\], key 'b': expected a boolean \(0, 1, true or "
                                          r"false\), found 'maybe'"):
        get("[s]\nb=maybe\n", "b", "bool")


def test_comma_lists_with_empty_entries_and_repetition():
    text = "[s]\nweightSource=,conv7,conv7\ninitW=0.01\neps=1,2,3\n"
    assert get(text, "weightSource", "str_list", 3) == ["", "conv7", "conv7"]
    assert get(text, "initW", "float_list", 3) == [0.01] * 3  # one value stands for every input
    assert get(text, "eps", "int_list", 3) == [1, 2, 3]
    with pytest.raises(ConfigError, match=r"expected 2 comma-separated values \(one per input\), found '1,2,3'"):
        get(text, "eps", "int_list", 2)
    with pytest.raises(ConfigError, match=r"expected a number, found ''"):
        get("[s]\nx=1,,2\n", "x", "float_list", 3)


@pytest.mark.parametrize("value,hint", [("inf", "infinite"), ("-inf", "infinite"), ("nan", "not a number"),
                                        ("1e400", "too large"), ("1e-400", "too small for a double to tell from 0")])
def test_numbers_out_of_a_doubles_range_say_so(value, hint):
    with pytest.raises(ConfigError, match=rf"t.cfg:2: in section \[s\], key 'x': expected a (finite )?number, "
                                          rf"found '{value}'\. That one is .*{hint}"):
        get(f"[s]\nx={value}\n", "x", "float")
    assert get("[s]\nx=1e-300\n", "x", "float") == 1e-300


@pytest.mark.parametrize("value,text", [
    ("tanh[1.7,0.66]", "tanh[1.7,0.66]"), ("tanh[ 1.7 , -0.66 ]", "tanh[1.7,-0.66]"), ("relu", "relu"),
    ("brelu[6]", "brelu[6]"), ("linear[2,-1e-3]", "linear[2,-0.001]"), ("logistic", "logistic")])
def test_bracketed_neurons(value, text):
    assert get(f"[s]\nneuron={value}\n", "neuron", "neuron") == text


@pytest.mark.parametrize("value,text", [
    ("0.01", "0.01"),
    ("dexp[base=0.01;tgtFactor=250;numSteps=4]", "dexp[base=0.01;tgtFactor=250;numSteps=4]"),
    ("exp[ base = 0.5;tgtFactor = 10 ]", "exp[base=0.5;tgtFactor=10]"),
    ("linear[base=1;tgtFactor=4]", "linear[base=1;tgtFactor=4]"),
    ("const[base=0.1]", "0.1"),
    # cuda-convnet2 matches schedule names case-insensitively
    ("DExp[BASE=0.01;tgtfactor=250;numsteps=4]", "dexp[base=0.01;tgtFactor=250;numSteps=4]"),
])
def test_bracketed_schedules(value, text):
    assert get(f"[s]\nepsW={value}\n", "epsW", "schedule", params=True) == [text]


def test_space_semicolon_inside_a_schedule_starts_a_comment():
    # as in ConfigParser: ' ;' begins an inline comment even inside brackets
    with pytest.raises(ConfigError, match=r"found 'exp\[base=0.5'"):
        get("[s]\nepsW=exp[base=0.5 ;tgtFactor=10]\n", "epsW", "schedule", params=True)


def test_schedule_lists_one_per_input():
    text = "[s]\nepsW=dexp[base=0.01;tgtFactor=250;numSteps=4],0.5\n"
    assert get(text, "epsW", "schedule", 2, params=True) == ["dexp[base=0.01;tgtFactor=250;numSteps=4]", "0.5"]


def test_indexed_weight_source_shares_the_matrix():
    text = """
[a]
type=data
dataIdx=0
[b]
type=data
dataIdx=1
[fc1]
type=fc
inputs=a,b
outputs=4
[fc2]
type=fc
inputs=b,a
outputs=4
weightSource=fc1[1],fc1[0]
[fc3]
type=fc
inputs=b,a
outputs=4
weightSource=,fc1
"""
    net = ccn.Net("t.cfg", None, {0: 5, 1: 3}, layers_text=text)
    assert net.layer("fc2").weights == ["fc1.weights[1]", "fc1.weights[0]"]
    assert net.layer("fc3").weights == ["fc3.weights[0]", "fc1.weights[0]"]
    shared = {p.name: p.shared_by for p in net.params}
    assert shared["fc1.weights[0]"] == 2 and shared["fc1.weights[1]"] == 1


def test_weight_source_naming_itself_is_one_matrix_updated_once():
    # fc reuses its matrix 0 for input 1 (weightSource=,fc): one parameter, listed once, with the
    # settings of its first use (epsW 0.5, not 0.25), and one SGD step per update.
    text = "[a]\ntype=data\ndataIdx=0\n[fc]\ntype=fc\ninputs=a,a\noutputs=2\nweightSource=,fc\n"
    params = "[fc]\nepsW=0.5,0.25\nepsB=0\nmomW=0.5,0.9\nmomB=0\nwc=0.1,0.2\n"
    net = ccn.Net("t.cfg", "p.cfg", {0: 3}, layers_text=text, params_text=params)
    ws = [p for p in net.params if not p.is_bias]
    assert [(p.name, p.shared_by, p.eps, p.mom, p.wc) for p in ws] == [("fc.weights[0]", 1, "0.5", 0.5, 0.1)]
    W = np.arange(6, dtype=np.float32).reshape(3, 2) / 10
    net.set("fc.weights[0]", W)
    x = np.array([[1, 2, 3], [0, -1, 1]], dtype=np.float32)
    net.forward({0: x}, train=True)
    np.testing.assert_allclose(net.output("fc"), 2 * x @ W + net.get("fc.biases").T, rtol=1e-6)
    G = np.ones((2, 2), dtype=np.float32)
    net._net.zero_param_grads()
    net.backward({"fc": G})
    g = 2 * x.T @ G  # both inputs' gradients, in the one matrix
    np.testing.assert_allclose(net.get("fc.weights[0]", "grad"), g, rtol=1e-6)
    net.update(0.0, 2)
    inc = -0.5 * g / 2 - 0.1 * 0.5 * W
    np.testing.assert_allclose(net.get("fc.weights[0]", "inc"), inc, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(net.get("fc.weights[0]"), W + inc, rtol=1e-5, atol=1e-7)


def test_layer_order_is_free_and_follows_the_graph():
    text = """
[cost]
type=cost.logreg
inputs=labels,probs
[probs]
type=softmax
inputs=fc
[fc]
type=fc
inputs=data
outputs=3
[labels]
type=data
dataIdx=1
[data]
type=data
dataIdx=0
"""
    names = [l.name for l in ccn.Net("t.cfg", None, {0: 4, 1: 1}, layers_text=text).layers]
    for a, b in [("data", "fc"), ("fc", "probs"), ("probs", "cost"), ("labels", "cost")]:
        assert names.index(a) < names.index(b)


def test_a_whole_net_with_every_feature_end_to_end():
    text = ("\ufeff# net\r\n[data]\r\ntype = data\r\nDataIdx: 0 ; images\r\n\r\n[labels]\r\ntype=data\r\ndataIdx=1\r\n"
            "[fc]\r\nTYPE=fc\r\ninputs=data,\r\n   data\r\noutputs=3\r\ninitW=0.1,0.2 # two\r\n"
            "neuron=tanh[1.7,0.66]\r\n[probs]\r\ntype=softmax\r\ninputs=fc\r\n[cost]\r\ntype=cost.logreg\r\n"
            "inputs=labels,probs\r\n")
    params = ("[fc]\nepsW=dexp[base=0.01;tgtFactor=250;numSteps=4],0.1\nepsB=0.02\nmomW=0.9,0.9\nmomB=0.9\n"
              "wc=0.0005\n[cost]\ncoeff=1\n")
    net = ccn.Net("t.cfg", "p.cfg", {0: 6, 1: 1}, layers_text=text, params_text=params)
    fc = net.layer("fc")
    assert fc.inputs == ["data", "data"] and fc.neuron == "tanh[1.7,0.66]" and fc.shape == (3, 1, 1)
    ps = {p.name: p for p in net.params}
    assert ps["fc.weights[0]"].init_std == pytest.approx(0.1) and ps["fc.weights[1]"].init_std == pytest.approx(0.2)
    assert ps["fc.weights[0]"].eps == "dexp[base=0.01;tgtFactor=250;numSteps=4]"
    assert ps["fc.weights[1]"].eps == "0.1" and ps["fc.weights[1]"].wc == pytest.approx(0.0005)
