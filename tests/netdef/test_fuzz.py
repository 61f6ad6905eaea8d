"""Fuzz: any layer-file text gives a net or a ConfigError/InputError, never a crash or another exception.

Inputs are mutations of the original example files (lines deleted, duplicated, swapped, values and
keys replaced by tokens of the dialect, random text inserted, the file cut short) and random text.
Deterministic (derandomize, no example database) and small enough to stay fast; every value the
mutations insert is small, so no example asks for gigabytes.
"""

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ccn
from ccn.errors import ConfigError, InputError

HERE = os.path.dirname(os.path.abspath(__file__))
REF = os.path.join(os.path.dirname(os.path.dirname(HERE)), "..", "shared", "reference")
DEFS = os.path.join(os.path.dirname(os.path.dirname(HERE)), "layer-defs")

# (layer file, params file, data dims): small nets only, so each example builds in milliseconds.
SOURCES = [
    ("cuda-convnet/layers-80sec.cfg", "cuda-convnet/layer-params-80sec.cfg", {0: (3, 32, 32), 1: 1}),
    ("cuda-convnet/layers-18pct.cfg", "cuda-convnet/layer-params-18pct.cfg", {0: (3, 32, 32), 1: 1}),
    ("cuda-convnet/layers-conv-local-11pct.cfg", "cuda-convnet/layer-params-conv-local-11pct.cfg",
     {0: (3, 24, 24), 1: 1}),
    ("cuda-convnet/layers.gc.cfg", "cuda-convnet/layer-params.gc.cfg", {0: (3, 8, 8), 1: 1}),
    ("cuda-convnet2/layers-cifar10-11pct.cfg", "cuda-convnet2/layer-params-cifar10-11pct.cfg", {0: (3, 24, 24), 1: 1}),
]
FALLBACK = ("[data]\ntype=data\ndataIdx=0\n\n[labels]\ntype=data\ndataIdx=1\n\n[fc10]\ntype=fc\ninputs=data\n"
            "outputs=10\ninitW=0.01\nneuron=tanh[1.7,0.66]\n\n[probs]\ntype=softmax\ninputs=fc10\n\n[logprob]\n"
            "type=cost.logreg\ninputs=labels,probs\n",
            "[fc10]\nepsW=dexp[base=0.01;tgtFactor=250;numSteps=4]\nepsB=0.02\nmomW=0.9\nmomB=0.9\nwc=0.004\n"
            "\n[logprob]\ncoeff=1\n", {0: (3, 8, 8), 1: 1})


def _load():
    out = [FALLBACK]
    for d, p, dims in SOURCES:
        dp, pp = os.path.join(REF, d), os.path.join(REF, p)
        if os.path.isfile(dp) and os.path.isfile(pp):
            out.append((open(dp).read(), open(pp).read(), dims))
    return out


FILES = _load()
TOKENS = ["", "0", "1", "-1", "2", "3", "5", "7", "33", "x", "relu", "tanh[1,2]", "tanh[", "brelu[0]", "ident",
          "dexp[base=1;tgtFactor=2;numSteps=3]", "exp[base=1]", "data", "labels", "conv1", "fc10", "pool1", "probs",
          ",", "[", "]", "=", ":", ";", "#", "1e9", "nan", "inf", "0,1", "true", "false", "conv1[1]", ",conv1",
          "fc", "conv", "local", "pool", "softmax", "cost.logreg", "data,data", "labels,probs", "max", "avg",
          "-0.5", "0.0001", "\t", " ; c", "[x]", "type=fc", "\ufeff", "\r"]
KEYS = ["type", "inputs", "outputs", "channels", "filters", "filterSize", "padding", "stride", "sizeX", "start",
        "outputsX", "neuron", "initW", "initB", "weightSource", "dataIdx", "epsW", "epsB", "momW", "wc", "coeff",
        "topk", "gpu", "groups", "size", "pool", "sharedBiases", "scale", "pow", "keep", "", "TYPE", "bogus"]


@st.composite
def mutated(draw):
    text, params, dims = draw(st.sampled_from(FILES))
    target_params = draw(st.booleans())
    lines = (params if target_params else text).split("\n")
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.integers(0, 7))
        i = draw(st.integers(0, max(len(lines) - 1, 0)))
        if not lines:
            lines = [""]
            i = 0
        if op == 0:
            del lines[i]
        elif op == 1:
            lines.insert(i, lines[i])
        elif op == 2:
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == 3 and "=" in lines[i]:
            lines[i] = lines[i].split("=", 1)[0] + "=" + draw(st.sampled_from(TOKENS))
        elif op == 4 and "=" in lines[i]:
            lines[i] = draw(st.sampled_from(KEYS)) + "=" + lines[i].split("=", 1)[1]
        elif op == 5:
            pos = draw(st.integers(0, len(lines[i])))
            ins = draw(st.one_of(st.sampled_from(TOKENS), st.text(max_size=4)))
            lines[i] = lines[i][:pos] + ins + lines[i][pos:]
        elif op == 6:
            lines = lines[:i]
        else:
            lines.insert(i, draw(st.sampled_from(KEYS)) + draw(st.sampled_from(["=", ":", " = "]))
                         + draw(st.sampled_from(TOKENS)))
    new = "\n".join(lines)
    return (text, new, dims) if target_params else (new, params, dims)


def _build(text, params, dims):
    try:
        ccn.Net("fuzz.cfg", "fuzz-params.cfg", dims, layers_text=text, params_text=params, init=False)
    except (ConfigError, InputError) as e:
        msg = str(e)
        assert msg and "internal error" not in msg, msg
    # anything else (CcnRuntimeError, TypeError, a crash of the process) fails the test


FUZZ = settings(max_examples=300, derandomize=True, database=None, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@FUZZ
@given(mutated())
def test_mutated_reference_files(case):
    _build(*case)


@FUZZ
@given(st.text(max_size=200), st.text(max_size=60))
def test_random_text(text, params):
    _build(text, params, {0: (3, 8, 8), 1: 1})


@settings(max_examples=150, derandomize=True, database=None, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["data", "labels", "fc", "probs", "cost", "a", "b"]),
                          st.lists(st.tuples(st.sampled_from(KEYS), st.sampled_from(TOKENS)), max_size=6)),
                max_size=6))
def test_random_sections(sections):
    text = "".join(f"[{name}]\n" + "".join(f"{k}={v}\n" for k, v in keys) for name, keys in sections)
    _build(text, "", {0: (3, 4, 4), 1: 1})
