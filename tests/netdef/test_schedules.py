"""Learning-rate schedules against an independent Python reading of cuda-convnet2's lr.cu.

lr.cu: const -> base; linear -> base*(1-p) + (base/tgt)*p; exp -> base * (1/tgt)^p;
dexp -> numSteps plateaus: the first numSteps-1 are exp sampled at i/(numSteps-1), the last is
base/tgt, and plateau i holds while p <= (i+1)/numSteps (the last one for p past 1 too).
"""

import math

import numpy as np
import pytest

import ccn

NET = "[data]\ntype=data\ndataIdx=0\n[fc]\ntype=fc\ninputs=data\noutputs=2\n"


def reference(kind, base, tgt=1.0, steps=1):
    def f(p):
        if kind == "const":
            return base
        if kind == "linear":
            return base * (1 - p) + base / tgt * p
        if kind == "exp":
            return base * (1.0 / tgt) ** p
        plateaus = [base * (1.0 / tgt) ** (i / (steps - 1)) for i in range(steps - 1)] + [base / tgt]
        for i, r in enumerate(plateaus):
            if p <= (i + 1) / len(plateaus):
                return r
        return plateaus[-1]

    return f


def text(kind, base, tgt, steps):
    if kind == "const":
        return f"const[base={base!r}]"
    if kind == "dexp":
        return f"dexp[base={base!r};tgtFactor={tgt!r};numSteps={steps}]"
    return f"{kind}[base={base!r};tgtFactor={tgt!r}]"


CASES = [("const", 0.01, 1, 1), ("linear", 0.01, 10.0, 1), ("linear", 2.5, 0.5, 1), ("exp", 0.01, 250.0, 1),
         ("exp", 1.0, 3.0, 1), ("dexp", 0.01, 250.0, 4), ("dexp", 0.02, 10.0, 2), ("dexp", 0.3, 7.0, 1),
         ("dexp", 1e-3, 1000.0, 7)]


@pytest.mark.parametrize("kind,base,tgt,steps", CASES)
def test_schedule_values_match_lr_cu(kind, base, tgt, steps):
    sched = text(kind, base, tgt, steps)
    params = f"[fc]\nepsW={sched}\nepsB={sched}\nmomW=0\nmomB=0\nwc=0\n"
    net = ccn.Net("t.cfg", "p.cfg", {0: 3}, layers_text=NET, params_text=params)
    ref = reference(kind, base, tgt, steps)
    # plateau edges exactly, just either side of them, random points, and the ends
    grid = [0.0, 1.0, 1e-9, 1 - 1e-9, 0.5]
    for i in range(1, max(steps, 2) + 1):
        e = i / max(steps, 1)
        grid += [e, math.nextafter(e, 0), math.nextafter(e, 2)]
    grid += list(np.random.default_rng().uniform(0, 1, 20))
    for p in grid:
        for name in ("fc.weights[0]", "fc.biases"):
            assert net._net.eps(name, float(p)) == pytest.approx(ref(float(p)), rel=1e-12, abs=0), (sched, p)


def test_dexp_plateaus_of_the_imagenet_params():
    # cuda-convnet2's ImageNet recipe: epsW=dexp[base=0.01;tgtFactor=250;numSteps=4]
    params = "[fc]\nepsW=dexp[base=0.01;tgtFactor=250;numSteps=4]\nepsB=0.02\nmomW=0\nmomB=0\nwc=0\n"
    net = ccn.Net("t.cfg", "p.cfg", {0: 3}, layers_text=NET, params_text=params)
    vals = [net._net.eps("fc.weights[0]", p) for p in (0.1, 0.3, 0.6, 0.9)]
    expect = [0.01, 0.01 * 250 ** (-1 / 3), 0.01 * 250 ** (-2 / 3), 0.01 / 250]
    assert vals == pytest.approx(expect, rel=1e-12)
    assert net._net.eps("fc.biases", 0.7) == 0.02
