"""Error messages of the layer-file reader and the net builder.

Every message names the file and line, the section and key, the value found and the form
expected; misspelt keys, types and layer names get a did-you-mean; graph errors name the layers.
"""

import re

import pytest

import ccn
from ccn.errors import ConfigError

D = "[data]\ntype=data\ndataIdx=0\n"  # lines 1-3
FC = "[fc]\ntype=fc\ninputs=data\noutputs=3\n"  # lines 4-7
P = "[fc]\nepsW=0.1\nepsB=0.1\nmomW=0.9\nmomB=0.9\nwc=0\n"


def err(text, params=None, dims=None):
    with pytest.raises(ConfigError) as e:
        ccn.Net("net.cfg", None if params is None else "par.cfg", dims or {0: 4, 1: 1}, layers_text=text,
                params_text=params, init=False)
    msg = str(e.value)
    assert "\n" not in msg.strip() or msg.count("\n") < 3  # one paragraph
    return msg


# lines 8-16: labels, softmax over fc, cost.logreg (a net with a cost layer)
COST = "[labels]\ntype=data\ndataIdx=1\n[sm]\ntype=softmax\ninputs=fc\n[cost]\ntype=cost.logreg\ninputs=labels,sm\n"

CASES = [
    # unused layers (cuda-convnet2's parse_layers), in a net with a cost layer
    (D + FC + COST + "[fc2]\ntype=fc\ninputs=data\noutputs=3\n", None,
     r"^net\.cfg:17: layer 'fc2' \(type=fc\) is unused: no layer has it in inputs=, so its output reaches no cost "
     r"layer\. Add it to the inputs of a layer or remove it; cuda-convnet2 rejects such a net too\.$"),
    (D + FC + COST + "[extra]\ntype=data\ndataIdx=2\n", None, r"^net\.cfg:17: layer 'extra' \(type=data\) is unused"),
    (D + FC + COST + "[fc2]\ntype=fc\ninputs=data\noutputs=3\n[fc3]\ntype=fc\ninputs=data\noutputs=3\nweightSource=fc2\n"
     "[fc4]\ntype=fc\ninputs=data\noutputs=3\nweightSource=fc2\n", None,
     r"^net\.cfg:17: layer 'fc2' \(type=fc\) is unused: no layer has it in inputs=, so its output reaches no cost layer "
     r"\(weightSource in 'fc3', 'fc4' shares its weights but does not use its output\)\."),
    # indented lines: ConfigParser continues the value above; one that reads as a key is an error
    (D + "[fc]\n  type=fc\n  inputs=data\n  outputs=10\n", None,
     r"^net\.cfg:6: in section \[fc\]: 'inputs=data' is indented, so it continues the value of 'type' from line 5 "
     r"\(indented lines continue the value above them\) instead of setting 'inputs'\. Remove the indentation\.$"),
    (D + FC + "neuron=relu\n\tinitW : 0.1\n", None,
     r"^net\.cfg:9: in section \[fc\]: 'initW : 0\.1' is indented, so it continues the value of 'neuron' from line 8 "),
    # a value continued on an indented line that is no key: its line break is shown as \n, not printed
    (D + "[fc]\ntype=fc\n  relu\ninputs=data\noutputs=3\n", None,
     r"^net\.cfg:5: in section \[fc\], key 'type': unknown layer type 'fc\\nrelu'\."),
    (D + FC + "neuron=relu\n   x\n", None, r"^net\.cfg:8: in section \[fc\], key 'neuron': .*'relu\\nx'"),
    # ranges of the learning keys (cuda-convnet did not check them)
    (D + FC, P.replace("momW=0.9", "momW=1"),
     r"^par\.cfg:4: in section \[fc\], key 'momW': the value is 1; momW \(a momentum\) must be at least 0 and less "
     r"than 1\.$"),
    (D + FC, P.replace("momB=0.9", "momB=-0.1"), r"^par\.cfg:5: in section \[fc\], key 'momB': the value is -0\.1; momB "
                                                r"\(a momentum\) must be at least 0 and less than 1\.$"),
    (D + FC, P.replace("wc=0", "wc=-0.0005"), r"^par\.cfg:6: in section \[fc\], key 'wc': the value is -0\.0005; wc must "
                                             r"be at least 0\.$"),
    (D + FC, P + "wball=-2\n", r"^par\.cfg:7: in section \[fc\], key 'wball': the value is -2; wball must be at least 0\.$"),
    (D + FC, P.replace("epsW=0.1", "epsW=-0.1"), r"^par\.cfg:2: in section \[fc\], key 'epsW': the learning rate is "
                                                r"-0\.1; epsW must be at least 0\.$"),
    (D + FC, P.replace("epsB=0.1", "epsB=dexp[base=-0.01;tgtFactor=10;numSteps=2]"),
     r"^par\.cfg:3: in section \[fc\], key 'epsB': the dexp schedule has base=-0\.01; its base must be at least 0\.$"),
    (D + "[fc]\ntype=fc\ninputs=data,data\noutputs=3\n", P.replace("momW=0.9", "momW=0.9,1.5"),
     r"^par\.cfg:4: in section \[fc\], key 'momW': the value for input 1 is 1\.5; momW \(a momentum\) must be at least 0 "),
    (D + "[fc]\ntype=fc\ninputs=data,data\noutputs=3\n", P.replace("epsW=0.1", "epsW=0.1,linear[base=-1;tgtFactor=2]"),
     r"^par\.cfg:2: in section \[fc\], key 'epsW': the linear schedule for input 1 has base=-1; its base must be at "),
    (D + FC + "gpu=0,1,0\n", None,
     r"^net\.cfg:8: in section \[fc\], key 'gpu': device 0 is listed twice in '0,1,0'; each copy of a data-parallel "
     r"layer needs a GPU of its own, so list each index once, e\.g\. 0,1\.$"),
    # a schedule written with commas, like a neuron's parameters
    (D + FC, P.replace("epsW=0.1", "epsW=exp[base=0.01,tgtFactor=10]"),
     r"^par\.cfg:2: in section \[fc\], key 'epsW': expected a number or a schedule such as "
     r"exp\[base=0\.01;tgtFactor=10\], found 'exp\[base=0\.01,tgtFactor=10\]'\. The parameters of a schedule are "
     r"separated by ';' \(commas separate the values of different inputs\)\.$"),
    (D + "[fc]\ntype=fc\ninputs=data,data\noutputs=3\n", P.replace("epsW=0.1", "epsW=exp[base=0.01,tgtFactor=10]"),
     r"key 'epsW': expected a number or a schedule such as exp\[base=0\.01;tgtFactor=10\], found"),
    (D + FC, P.replace("epsB=0.1", "epsB=dexp[base=0.01,tgtFactor=10,numSteps=3]"),
     r"key 'epsB': expected a number or a schedule such as dexp\[base=0\.01;tgtFactor=10;numSteps=3\], found "),
    # reader
    ("[a\ntype=data\n", None, r"^net\.cfg:1: section header '\[a' has no closing '\]'; expected \[layername\]"),
    ("[]\n", None, r"^net\.cfg:1: empty section name"),
    ("[a] x\n", None, r"^net\.cfg:1: unexpected text 'x' after section header \[a\]"),
    ("type=data\n[a]\n", None, r"^net\.cfg:1: 'type=data' comes before any \[section\]"),
    (D + "dataIdx\n", None, r"^net\.cfg:4: in section \[data\]: cannot read 'dataIdx'; expected key=value"),
    (D + "=1\n", None, r"^net\.cfg:4: in section \[data\]: missing key before '='"),
    (D + "DATAIDX=1\n", None, r"^net\.cfg:4: in section \[data\], key 'DATAIDX' is given twice \(first at line 3\)"),
    (D + "[data]\n", None, r"^net\.cfg:4: section \[data\] appears twice \(first at line 1\)"),
    ("[data]\ntype=data\x00\n", None, r"^net\.cfg: this is not a text file"),
    ("# only a comment\n", None, r"^net\.cfg: no layer sections found"),
    (D + "[DEFAULT]\nx=1\n", None, r"^net\.cfg:4: ConfigParser's \[DEFAULT\] section"),
    # types and keys
    (D + "[fc]\ntype=fcc\ninputs=data\n", None,
     r"^net\.cfg:5: in section \[fc\], key 'type': unknown layer type 'fcc'\. Did you mean 'fc'\? Known types: .*fc"),
    (D + "[fc]\ninputs=data\n", None, r"^net\.cfg:4: in section \[fc\]: missing required key 'type'"),
    (D + "[n]\ntype=neuron\nneuron=relu\n", None, r"^net\.cfg:4: in section \[n\]: missing required key 'inputs' \(the "
     r"layers this one reads, e\.g\. inputs=data"),
    (D + "[fc]\ntype=fc\ninputs=data\n", None, r"^net\.cfg:4: in section \[fc\]: missing required key 'outputs'"),
    (D + FC + "outptus=3\n", None,
     r"^net\.cfg:8: in section \[fc\], key 'outptus': not a key of layer type 'fc'\. Did you mean 'outputs'\?"),
    (D + FC + "intiW=0.1\n", None, r"key 'intiW': not a key of layer type 'fc'\. Did you mean 'initW'\?"),
    (D + FC + "epsW=0.1\n", None, r"^net\.cfg:8: in section \[fc\], key 'epsW': .* belongs in the layer-params file"),
    (D + FC, P + "initW=1\n", r"^par\.cfg:7: in section \[fc\], key 'initW': .* belongs in the layer-definition file"),
    (D + FC, P + "mowW=1\n", r"^par\.cfg:7: in section \[fc\], key 'mowW': .*Did you mean 'momW'\?"),
    (D + FC, P.replace("wc=0\n", ""), r"^par\.cfg:1: in section \[fc\]: missing required key 'wc' \(in the layer-params"),
    (D + FC, "[fc2]\nepsW=1\n", r"^par\.cfg:1: section \[fc2\] names no layer of net\.cfg\. Did you mean 'fc'\?"),
    (D + FC, "", r"^par\.cfg: layer 'fc' \(type=fc\) needs a \[fc\] section with key 'epsW'"),
    # values: the value found and the form expected
    (D + "[fc]\ntype=fc\ninputs=data\noutputs=3.5\n", None,
     r"^net\.cfg:7: in section \[fc\], key 'outputs': expected an integer, found '3\.5'\.$"),
    (D + "[fc]\ntype=fc\ninputs=data\noutputs=2000000000\n", None,
     r"key 'outputs': expected an integer between -1000000000 and 1000000000, found '2000000000'\. "
     r"That one is out of range\.$"),
    (D + FC + "initW=abc\n", None, r"^net\.cfg:8: in section \[fc\], key 'initW': expected a number, found 'abc'\.$"),
    (D + FC + "initW=0.1,0.2\n", None,
     r"key 'initW': expected 1 comma-separated value \(one per input\), found '0\.1,0\.2'"),
    (D + FC + "neuron=relux\n", None, r"^net\.cfg:8: .*key 'neuron': unknown neuron 'relux'\. Did you mean 'relu'\?"),
    (D + FC + "neuron=tanh[1.7,x]\n", None,
     r"key 'neuron': expected a neuron such as relu or tanh\[1\.7,0\.66\], found 'tanh\[1\.7,x\]'\. 'x' is not a number"),
    (D + FC + "neuron=tanh[1.7\n", None, r"key 'neuron': expected a neuron such as .*, found 'tanh\[1\.7'"),
    (D + FC + "neuron=brelu\n", None, r"key 'neuron': neuron 'brelu' needs its parameter: write brelu\[a\]"),
    (D + FC, P.replace("epsW=0.1", "epsW=dexp[base=0.1;tgtFactor=2]"),
     r"^par\.cfg:2: in section \[fc\], key 'epsW': expected dexp\[base=B;tgtFactor=F;numSteps=N\], found "
     r"'dexp\[base=0\.1;tgtFactor=2\]'\. 'numSteps' is missing"),
    (D + FC, P.replace("epsW=0.1", "epsW=dexpp[base=0.1;tgtFactor=2;numSteps=2]"),
     r"key 'epsW': expected a number or a schedule .*found 'dexpp\[.*\]'\. Did you mean 'dexp'\?"),
    (D + FC, P.replace("epsW=0.1", "epsW=exp[base=0.1;tgtFctor=2]"),
     r"key 'epsW': expected exp\[base=B;tgtFactor=F\], .*'tgtFctor' is not a parameter of exp\[\.\.\.\]; did you mean "
     r"'tgtFactor'\?"),
    (D + FC, P.replace("epsW=0.1", "epsW=exp[base=0.1;tgtFactor=0]"), r"tgtFactor must be positive"),
    (D + FC, P.replace("epsW=0.1", "epsW=dexp[base=0.1;tgtFactor=2;numSteps=0]"), r"numSteps must be at least 1"),
    (D + FC, P.replace("epsW=0.1", "epsW=exp[base=0.1;base=0.2;tgtFactor=2]"), r"'base' is given twice"),
    (D + FC + "gpu=a\n", None, r"key 'gpu': expected a comma list of device indices such as 0 or 0,1; found 'a'"),
    (D + "[fc]\ntype=fc\ninputs=data\noutputs=999999999\n", None,
     r"^net\.cfg: layer 'fc': its parameter matrix fc\.weights\[0\] would be 4 x 999999999"),
    # graph
    (D + "[fc]\ntype=fc\ninputs=dta\noutputs=3\n", None,
     r"^net\.cfg:6: in section \[fc\], key 'inputs': there is no layer 'dta'\. Did you mean 'data'\?"),
    (D + "[fc]\ntype=fc\ninputs=fc\noutputs=3\n", None,
     r"^net\.cfg:6: in section \[fc\], key 'inputs': a layer cannot be its own input"),
    (D + "[fc]\ntype=fc\ninputs=data,,data\noutputs=3\n", None, r"key 'inputs': empty layer name in 'data,,data'"),
    (D + "[a]\ntype=fc\ninputs=c\noutputs=3\n[b]\ntype=fc\ninputs=a\noutputs=3\n[c]\ntype=fc\ninputs=b,data\noutputs=3\n",
     None, r"^net\.cfg: the layers form a cycle: a -> c -> b -> a\."),
    (D + FC + "[fc2]\ntype=fc\ninputs=data\noutputs=3\nweightSource=fc3\n", None,
     r"^net\.cfg:12: in section \[fc2\], key 'weightSource': there is no layer 'fc3'; did you mean 'fc'\?"),
    (D + FC + "[fc2]\ntype=fc\ninputs=fc\noutputs=3\nweightSource=fc\n", None,
     r"^net\.cfg:12: in section \[fc2\], key 'weightSource': weights 'fc\.weights\[0\]' are 4x3 but layer 'fc2' needs 3x3"),
    (D + FC + "[fc2]\ntype=fc\ninputs=data\noutputs=3\nweightSource=fc[1]\n", None,
     r"key 'weightSource': layer 'fc' has 1 weight matrix; the index in 'fc\[1\]' is out of range \(0 to 0\)"),
    (D + FC + "[fc2]\ntype=fc\ninputs=data\noutputs=3\nweightSource=fc[x]\n", None, r"the index in 'fc\[x\]' is not an"),
    (D + FC + "weightSource=fc\n", None, r"^net\.cfg:8: in section \[fc\], key 'weightSource': 'fc' \(which means fc\[0\]\) "
                                        r"names this layer's own matrix for input 0; a layer can only reuse its own matrix "
                                        r"of a lower input index"),
    (D + "[fc]\ntype=fc\ninputs=data,data,data\noutputs=3\nweightSource=,fc[0],fc[2]\n", None,
     r"^net\.cfg:8: in section \[fc\], key 'weightSource': 'fc\[2\]' for input 2 names this layer's own matrix 2, "
     r"which is not defined yet; a layer can only reuse its own matrices of a lower input index, here fc\[0\] to fc\[1\]\."),
    (D + "[fc]\ntype=fc\ninputs=data,data\noutputs=3\nweightSource=,fc[1]\n", None,
     r"key 'weightSource': 'fc\[1\]' for input 1 names this layer's own matrix 1, which is not defined yet; a layer can "
     r"only reuse its own matrices of a lower input index, here fc\[0\]\."),
    (D + "[fc]\ntype=fc\ninputs=data,data\noutputs=3\nweightSource=,fc[7]\n", None,
     r"'fc\[7\]' for input 1 names this layer's own matrix 7, which is not defined yet"),
    ("[a]\ntype=data\ndataIdx=0\n[b]\ntype=data\ndataIdx=1\n[fc]\ntype=fc\ninputs=a,b\noutputs=3\nweightSource=,fc\n", None,
     r"^net\.cfg:11: in section \[fc\], key 'weightSource': weights 'fc\.weights\[0\]' are 4x3 but layer 'fc' needs 1x3 "
     r"for input 1 \(b\)\."),
    (D + FC + "[sm]\ntype=softmax\ninputs=data\n[fc2]\ntype=fc\ninputs=data\noutputs=3\nweightSource=sm\n", None,
     r"key 'weightSource': layer 'sm' \(type=softmax\) has no weights to share"),
    (D + FC + "weightSource=fc2\n[fc2]\ntype=fc\ninputs=fc\noutputs=3\n", None,
     r"^net\.cfg: the layers form a cycle once weightSource is counted: fc -> fc2 -> fc\."),
    ("[data]\ntype=data\ndataIdx=2\n", None, r"^net\.cfg:3: in section \[data\], key 'dataIdx': the data provider has no "
                                             r"matrix number 2; it offers 0 \(4x1x1\), 1 \(1x1x1\)"),
]


@pytest.mark.parametrize("text,params,pattern", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_error_message(text, params, pattern):
    msg = err(text, params)
    assert re.search(pattern, msg), msg


def test_errors_are_whole_sentences():
    for text, params, _ in CASES:
        msg = err(text, params)
        assert msg.rstrip().endswith((".", "?")), msg
        assert "\n" not in msg, msg  # one line: values' line breaks are escaped


def test_unused_layers_are_allowed_in_a_net_without_cost_layers():
    # ccn builds cost-free nets for features and for backward passes from given gradients;
    # their ends feed nothing by design
    net = ccn.Net("net.cfg", None, {0: 4}, layers_text=D + FC + "[fc2]\ntype=fc\ninputs=data\noutputs=2\n", init=False)
    assert [l.name for l in net.layers] == ["data", "fc", "fc2"]


def test_every_schedule_type_with_a_zero_base_loads():
    for eps in ("0", "const[base=0]", "linear[base=0;tgtFactor=10]", "exp[base=0;tgtFactor=10]",
                "dexp[base=0;tgtFactor=10;numSteps=2]"):
        ccn.Net("net.cfg", "par.cfg", {0: 4}, layers_text=D + FC, params_text=P.replace("epsW=0.1", f"epsW={eps}") +
                "wball=0\n", init=False)
    ccn.Net("net.cfg", "par.cfg", {0: 4}, layers_text=D + FC, params_text=P.replace("momW=0.9", "momW=0"), init=False)


def test_init_func_value_with_a_line_break_is_escaped():
    # initWFunc continued on an indented line: the Python side's message shows the break as \n
    text = D + FC + "initWFunc=mod.f(\n  1\n"
    with pytest.raises(ConfigError) as e:
        ccn.Net("net.cfg", None, {0: 4}, layers_text=text)
    assert str(e.value) == "net.cfg: layer 'fc', key 'initWFunc': expected module.function(args), found 'mod.f(\\n1'."


def test_a_net_read_back_from_a_checkpoint_may_keep_an_unused_layer():
    # an older ccn saved such nets; cuda-convnet2 too checked only on a fresh parse
    text = D + FC + COST + "[fc2]\ntype=fc\ninputs=data\noutputs=3\n"
    with pytest.raises(ConfigError, match="is unused"):
        ccn.Net("net.cfg", None, {0: 4, 1: 1}, layers_text=text)
    net = ccn.Net("net.cfg", None, {0: 4, 1: 1}, layers_text=text, allow_unused=True)
    assert "fc2" in [l.name for l in net.layers]


def test_a_schedule_or_init_function_may_go_on_over_indented_lines():
    # ConfigParser joins the lines; the indented-key check stays out of an open [ or (
    params = P.replace("epsW=0.1", "epsW=dexp[base=0.01;tgtFactor=250;\n     numSteps=4]")
    net = ccn.Net("net.cfg", "par.cfg", {0: 4}, layers_text=D + FC, params_text=params)
    assert net.params[0].eps == "dexp[base=0.01;tgtFactor=250;numSteps=4]"
    text = D + FC + "initWFunc=nosuchmod_q.f(0.5,\n   scale=2)\n"
    with pytest.raises(ConfigError, match=r"key 'initWFunc': cannot load 'nosuchmod_q\.f'"):
        ccn.Net("net.cfg", None, {0: 4}, layers_text=text)
