"""``ccn train --conv-to-local`` and ``--unshare-weights``: rewrites of a built net, as
cuda-convnet2's ``convnet.py`` applied them to a loaded model before training went on.

Both edit the layer-definition *text* (the copy a checkpoint stores, so the next checkpoint
holds the rewritten net) and carry the learnable state over:

* ``--conv-to-local L1,L2``: each conv layer becomes ``type=local`` (the keys local does not
  take -- ``sharedBiases``, ``partialSum``, ``sumWidth`` -- are dropped). Its filters are
  replicated for every module: local row ``m*Kg + r`` = conv row ``r`` (``Kg = Cf*fs^2``,
  module slowest), shared biases ``b[f]`` become ``b[f*modules + m]``; unshared biases are
  kept. The converted net computes exactly what the conv net computed. As in the original,
  the momentum increments of the new matrices start at zero (an unshared-bias layer keeps its
  bias increments), and conv layers that share weights with a converted layer (either way,
  through ``weightSource``) are converted with it and keep sharing.
* ``--unshare-weights L`` or ``L[i]``: the weight matrices ``L`` takes from another layer
  through ``weightSource`` (all of them, or input ``i``) become its own: a copy of the
  source's current weights, increments zero as in the original; ``weightSource`` loses those
  entries (the key goes when none is left).

The accumulated gradient of a new matrix starts at zero; its pass count is the one of the
matrix it came from, so it stays in step with the others under ``updatePeriod``. Like the
original, the options are not saved: they act once, and the rewritten text is what the
checkpoints keep. Errors (unknown layer, wrong type, nothing to unshare) are
:class:`ccn.errors.InputError` (exit 2) listing the layers that would do.
"""

from __future__ import annotations

import re

import numpy as np

from .errors import InputError

LOCAL_DROPS = ("sharedBiases", "partialSum", "sumWidth")
_REF = re.compile(r"^\s*([^\s\[\],]+)\s*(?:\[\s*(\d+)\s*\])?\s*$")


# ---- the layer-definition text ------------------------------------------------------------
class _Text:
    """A layer file's lines with its sections and entries located, for in-place edits that
    keep every other line (comments, order, spelling) as written. Reads the dialect as
    native/netdef/config.cpp does: a continuation line is indented, and a blank line ends it."""

    def __init__(self, text: str):
        self.lines = text.splitlines(keepends=True)

    def _sections(self) -> dict[str, tuple[int, int]]:
        out, name, start = {}, None, 0
        for i, raw in enumerate(self.lines):
            s = raw.strip()
            if s.startswith("[") and "]" in s:
                if name is not None:
                    out[name] = (start, i)
                name, start = s[1:s.index("]")].strip(), i + 1
        if name is not None:
            out[name] = (start, len(self.lines))
        return out

    def _entries(self, section: str) -> list[tuple[str, int, int]]:
        """(lower-case key, first line, end line exclusive) of each entry of ``section``."""
        lo, hi = self._sections()[section]
        out: list[list] = []
        last = None
        for i in range(lo, hi):
            raw = self.lines[i].rstrip("\r\n")
            s = raw.strip()
            if not s:
                last = None
                continue
            if s[0] in "#;":
                continue
            if raw[0].isspace() and last is not None:
                last[2] = i + 1
                continue
            cut = min((p for p in (s.find("="), s.find(":")) if p >= 0), default=-1)
            if cut < 0:
                last = None
                continue
            last = [s[:cut].strip().lower(), i, i + 1]
            out.append(last)
        return [tuple(e) for e in out]

    def get(self, section: str, key: str) -> str | None:
        for k, a, b in self._entries(section):
            if k == key.lower():
                s = self.lines[a].strip()
                cut = min(p for p in (s.find("="), s.find(":")) if p >= 0)
                val = " ".join([s[cut + 1:]] + [self.lines[j].strip() for j in range(a + 1, b)])
                return _strip_comment(val).strip()
        return None

    def set(self, section: str, key: str, value: str) -> None:
        for k, a, b in self._entries(section):
            if k == key.lower():
                raw = self.lines[a]
                eol = raw[len(raw.rstrip("\r\n")):] or "\n"
                s = raw.strip()
                cut = min(p for p in (s.find("="), s.find(":")) if p >= 0)
                self.lines[a:b] = [f"{s[:cut].strip()}={value}{eol}"]
                return
        lo, hi = self._sections()[section]
        while hi > lo and not self.lines[hi - 1].strip():
            hi -= 1
        self.lines.insert(hi, f"{key}={value}\n")

    def drop(self, section: str, key: str) -> None:
        for k, a, b in reversed(self._entries(section)):
            if k == key.lower():
                del self.lines[a:b]

    def text(self) -> str:
        return "".join(self.lines)


def _strip_comment(v: str) -> str:
    for i in range(1, len(v)):
        if v[i] in ";#" and v[i - 1].isspace():
            return v[:i]
    return v


def _is_false(v: str | None) -> bool:
    return v is not None and v.strip().lower() in ("0", "false", "no", "off")


# ---- option parsing ------------------------------------------------------------------------
def _names(value) -> list[str]:
    if value is None:
        return []
    parts = value if isinstance(value, (list, tuple)) else str(value).split(",")
    return [p.strip() for p in parts if p and p.strip()]


def _list(names) -> str:
    names = list(names)
    return ", ".join(names) if names else "none"


# ---- the rewrite ----------------------------------------------------------------------------
def rewrite(net, conv_to_local=None, unshare_weights=None, echo=print):
    """The net with ``conv_to_local`` (comma list of conv layers) converted to local layers and
    ``unshare_weights`` (comma list of ``layer`` or ``layer[i]``) given their own weights; ``net``
    itself when both are empty. The returned net is new and carries every parameter, increment,
    gradient, pass count and the RNG state over."""
    convert = _names(conv_to_local)
    unshare = _names(unshare_weights)
    if not convert and not unshare:
        return net
    layers = {l.name: l for l in net.layers}
    params = {p.name: p for p in net.params}
    owner = {l.name: [params[w].layer for w in l.weights] for l in layers.values()}
    # matrix i is the layer's own unless it names another's, or an earlier one of its own layer
    # (cuda-convnet2's weightSource=,conv7: matrix 1 is conv7's matrix 0)
    own = {l.name: [w == f"{l.name}.weights[{i}]" for i, w in enumerate(l.weights)] for l in layers.values()}
    convs = [n for n, l in layers.items() if l.type == "conv"]
    sharing = [n for n in layers if not all(own[n])]

    # -- check every name before changing anything
    for name in convert:
        if name not in layers:
            raise InputError(f"--conv-to-local {name}: the net has no layer '{name}'; its conv layers: {_list(convs)}.")
        if layers[name].type != "conv":
            raise InputError(f"--conv-to-local {name}: layer '{name}' has type {layers[name].type}; only conv layers "
                             f"convert to local. The conv layers of this net: {_list(convs)}.")
    targets: list[tuple[str, int | None]] = []
    for ref in unshare:
        m = _REF.match(ref)
        if not m:
            raise InputError(f"--unshare-weights {ref}: expected a layer name or name[i] (input i), e.g. conv2 or "
                             "conv2[1].")
        name, idx = m.group(1), None if m.group(2) is None else int(m.group(2))
        if name not in layers:
            raise InputError(f"--unshare-weights {ref}: the net has no layer '{name}'; the layers that take weights "
                             f"from another layer (weightSource): {_list(sharing)}.")
        l = layers[name]
        if not l.weights:
            raise InputError(f"--unshare-weights {ref}: layer '{name}' has type {l.type}, which has no weights; the "
                             f"layers that take weights from another layer (weightSource): {_list(sharing)}.")
        if idx is not None and idx >= len(l.weights):
            raise InputError(f"--unshare-weights {ref}: layer '{name}' has {len(l.weights)} weight matrices "
                             f"(indices 0-{len(l.weights) - 1}).")
        chosen = range(len(l.weights)) if idx is None else [idx]
        if all(own[name][i] for i in chosen):
            which = f"weight matrix {idx} of '{name}' is" if idx is not None else f"the weights of '{name}' are"
            raise InputError(f"--unshare-weights {ref}: {which} its own already (no weightSource); the layers that "
                             f"take weights from another layer: {_list(sharing)}.")
        targets.append((name, idx))

    # -- conv -> local: the requested layers and every conv layer sharing weights with them
    todo = set(convert)
    grew = True
    while grew:
        grew = False
        for n in convs:
            for o in owner[n]:
                if o != n and layers[o].type == "conv" and ((n in todo) != (o in todo)):
                    todo.update((n, o))
                    grew = True
    order = [n for n in layers if n in todo]  # the net's order
    unshared = {(n, i) for n, idx in targets for i in (range(len(layers[n].weights)) if idx is None else [idx])
                if not own[n][i]}

    text = _Text(net.layers_text)
    new: dict[str, dict] = {}  # param name -> {"w", "inc", "grad", "passes"}

    def state(pname):
        return {"w": net.get(pname, "w"), "inc": net.get(pname, "inc"), "grad": net.get(pname, "grad"),
                "passes": params[pname].passes}

    for n in order:
        l = layers[n]
        c, h, w_ = l.shape
        modules = h * w_
        for i, pname in enumerate(l.weights):
            o = owner[n][i]
            if not own[n][i] and (n, i) not in unshared:
                mo = layers[o].shape[1] * layers[o].shape[2]
                if mo != modules:
                    raise InputError(f"--conv-to-local: layer '{n}' shares the weights of '{o}' (weightSource), but "
                                     f"as local layers their weights would differ ({modules} modules against {mo}). "
                                     f"Add --unshare-weights {n} to give '{n}' its own.")
                continue
            src = net.get(pname, "w")  # the conv filters (the owner's, for a matrix unshared below)
            tiled = np.ascontiguousarray(np.tile(src, (modules, 1)), dtype=np.float32)
            new[f"{n}.weights[{i}]"] = {"w": tiled, "inc": np.zeros_like(tiled), "grad": np.zeros_like(tiled),
                                        "passes": params[pname].passes}
        if l.biases:
            b = state(l.biases)
            if b["w"].shape[0] == c and not _is_false(text.get(n, "sharedBiases")):
                rep = np.ascontiguousarray(np.repeat(b["w"], modules, axis=0), dtype=np.float32)
                b = {"w": rep, "inc": np.zeros_like(rep), "grad": np.zeros_like(rep), "passes": b["passes"]}
            new[l.biases] = b
        text.set(n, "type", "local")
        for key in LOCAL_DROPS:
            text.drop(n, key)
        echo(f"Converted layer '{n}' from convolutional to unshared, locally-connected.")

    for n, idx in targets:
        l = layers[n]
        nw = len(l.weights)
        raw = text.get(n, "weightSource") or ""
        srcs = [s.strip() for s in raw.split(",")]
        if len(srcs) == 1 and nw > 1:
            srcs = srcs * nw
        for i in (range(nw) if idx is None else [idx]):
            if own[n][i]:
                continue
            mine = f"{n}.weights[{i}]"
            if mine not in new:  # not converted above: copy the source's matrix
                w = np.array(new[l.weights[i]]["w"] if l.weights[i] in new else net.get(l.weights[i], "w"),
                             dtype=np.float32, copy=True)
                new[mine] = {"w": w, "inc": np.zeros_like(w), "grad": np.zeros_like(w),
                             "passes": params[l.weights[i]].passes}
            if i < len(srcs):
                srcs[i] = ""
            src_label = re.sub(r"[.]weights(?=\[)", "", l.weights[i])  # "c1.weights[0]" -> "c1[0]"
            echo(f"Unshared weight matrix {n}[{i}] from {src_label}.")
        if any(srcs):
            text.set(n, "weightSource", ",".join(srcs))
        else:
            text.drop(n, "weightSource")

    from .net import Net

    out = Net(net.layers_path, net.params_path, data_dims=net.data_dims, layers_text=text.text(),
              params_text=net.params_text, init=False, allow_unused=True)
    for p in out.params:
        st = new.get(p.name) or state(p.name)
        for kind in ("w", "inc", "grad"):
            arr = st[kind]
            if tuple(arr.shape) != tuple(p.shape):  # a bug here, never the user's input
                raise AssertionError(f"{p.name}: {kind} is {arr.shape}, the rewritten net needs {p.shape}")
            out.set(p.name, arr, kind)
        out._net.set_passes(p.name, int(st["passes"]))
    out._net.seed = net._net.seed
    out._net.step = net._net.step
    out.seed = net.seed
    return out
