"""The original trainers' checkpoints: reading a cuda-convnet (2012) or cuda-convnet2 (2014)
checkpoint and turning it into a ccn checkpoint (``ccn import-checkpoint``).

What the originals wrote (``gpumodel.py`` ``save_state``): one file per checkpoint, named
``EPOCH.BATCH`` after the last data batch trained, in a folder ``SAVE_PATH/ConvNet__<time>``
(cuda-convnet keeps older ones up to ``--max-filesize``, cuda-convnet2 only the newest). The file
is a Python 2 pickle (protocol 2) -- with cuda-convnet's ``--zip-save 1`` a deflated zip holding it
as the member ``data`` -- of ``{'model_state': {...}, 'op': OptionsParser}``:

* ``model_state['layers']``: the parsed layer dicts, a list in definition order (cuda-convnet, with
  implicit ``<name>_neuron`` layers) or a dict by name (cuda-convnet2). A weight layer holds
  ``weights`` and ``weightsInc`` (one float32 matrix per input, cuda-convnet's shapes, which are
  ccn's: conv ``filterChannels*filterSize^2 x filters``, local ``modules*... x filters``, fc
  ``inputs x outputs``) and ``biases``/``biasesInc``; a matrix shared through ``weightSource``
  is the same object in both layers (ccn keeps it once, in the source layer). Data layers hold
  ``dataIdx`` and ``outputs`` (values per case); the conv and local layers reading them say
  their ``channels`` and ``imgSize``.
* ``train_outputs`` (one per data batch trained) and ``test_outputs`` (one per test): tuples
  ``({cost layer: [values]}, cases)``. cuda-convnet's values are per-case averages (its
  ``print_costs`` divided them in place before they were saved); cuda-convnet2's are sums.
* ``epoch``, ``batchnum``: the last data batch trained; a resumed run goes on with the next one.
* ``op``: the options (``options.Option`` objects, ``value`` each): data path, batch ranges,
  epochs, minibatch, test frequency, the layer files' paths...

The pickle is read by :mod:`ccn.data.safepickle`: no code from it runs; the option objects become
inert records. The layer definitions are not in the checkpoint (only their parsed dicts), so the
original layer files are needed: given, or found where the saved options say or next to the
checkpoint. The ccn checkpoint written holds the weights and momentum increments, the options
that carry over, the position (resuming trains the next batch, as the original would have), and
the cost history (the epoch and batch of each record are reconstructed from the position, which
assumes the train range and test frequency never changed during the original run).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import math
import os
import re
import zipfile
from dataclasses import dataclass, field

import numpy as np

from . import checkpoint as ck
from .batchrange import format_range, parse_range
from .data import safepickle
from .errors import InputError

NAME_RE = re.compile(r"^\d+\.\d+$")  # the originals' checkpoint files, "epoch.batch"
_DIALECTS = {"options": "cuda-convnet", "python_util.options": "cuda-convnet2"}
_OPTION_CLASSES = ("OptionsParser", "Option", "OptionExpression", "ListOptionParser", "StringOptionParser",
                   "IntegerOptionParser", "FloatOptionParser", "BooleanOptionParser", "RangeOptionParser")


class _OptionRecord(safepickle.Record):
    pass


# the globals a checkpoint may name besides NumPy's: inert records for the options module's classes
_OPTION_GLOBALS = {(mod, name): type(name, (_OptionRecord,), {}) for mod in _DIALECTS for name in _OPTION_CLASSES}


@dataclass
class Original:
    """A checkpoint of the original trainers, as read from ``path``."""

    path: str
    dialect: str                       # "cuda-convnet" or "cuda-convnet2"
    layers: dict[str, dict]            # name -> layer dict, in definition order
    options: dict[str, object]         # option name -> value
    epoch: int
    batchnum: int
    train_outputs: list = field(default_factory=list)
    test_outputs: list = field(default_factory=list)
    sha256: str = ""

    @property
    def name(self) -> str:
        return f"{self.epoch}.{self.batchnum}"


def _alphanum(name: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def checkpoint_files(folder: str) -> list[str]:
    """The original checkpoint files (named like 12.3) in ``folder``, oldest first (the originals'
    order: numbers compared as numbers)."""
    try:
        names = [n for n in os.listdir(folder) if NAME_RE.match(n) and os.path.isfile(os.path.join(folder, n))]
    except OSError:
        return []
    return [os.path.join(folder, n) for n in sorted(names, key=_alphanum)]


def _head(path: str, n: int = 4) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(n)
    except OSError:
        return b""


def is_original(path: str) -> bool:
    """Whether ``path`` looks like an original checkpoint: a file starting as a protocol-2 pickle,
    a zip or a gzip, or a folder holding files named like 12.3 (and no ccn checkpoints)."""
    if os.path.isdir(path):
        return bool(checkpoint_files(path))
    if not os.path.isfile(path):
        return False
    head = _head(path)
    if head[:4] == b"PK\x03\x04":  # --zip-save: a zip holding the pickle as 'data' (an .npz is a zip too)
        try:
            with zipfile.ZipFile(path) as z:
                return "data" in z.namelist()
        except (zipfile.BadZipFile, OSError):
            return False
    return head[:2] == b"\x80\x02" or head[:2] == b"\x1f\x8b"


def _pickle_bytes(path: str, raw: bytes) -> bytes:
    """The pickle in ``raw``, the bytes of the checkpoint file ``path`` (a zip or gzip unpacked)."""
    if raw[:4] == b"PK\x03\x04":  # cuda-convnet's --zip-save 1
        try:
            with zipfile.ZipFile(io.BytesIO(raw)) as z:
                if "data" not in z.namelist():
                    raise InputError(f"{path}: a zip file, but not a cuda-convnet checkpoint (it has no member "
                                     f"'data'; it has {', '.join(z.namelist()[:5]) or 'none'}).")
                return z.read("data")
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as e:
            raise InputError(f"{path}: a damaged zip file ({e}); the checkpoint cannot be read.") from e
    if raw[:2] == b"\x1f\x8b":  # the originals' unpickle() also read gzip files
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise InputError(f"{path}: a damaged gzip file ({e}); the checkpoint cannot be read.") from e
    if raw[:1] != b"\x80":
        raise InputError(f"{path}: not a cuda-convnet checkpoint (not a Python pickle, nor a zip or gzip of one).")
    return raw


def _value(opt):
    return getattr(opt, "value", opt)


def read(path: str) -> Original:
    """Read an original checkpoint: a file, or a folder (its newest file, as the originals' -f did)."""
    if os.path.isdir(path) and (ck.is_checkpoint(path) or ck.list_checkpoints(path)):
        raise InputError(f"{path} is a ccn checkpoint already: give it to ccn test / ccn train with -f.")
    if os.path.isdir(path):
        files = checkpoint_files(path)
        if not files:
            raise InputError(f"{path}: the folder holds no cuda-convnet checkpoint (files named like 12.3).")
        path = files[-1]
    elif not os.path.exists(path):
        raise InputError(f"{path}: no such checkpoint file or folder.")
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise InputError(f"{path}: cannot read the checkpoint ({e.strerror or e}).") from e
    what = "a readable cuda-convnet checkpoint"
    obj = safepickle.load(_pickle_bytes(path, raw), path, what=what, extra=_OPTION_GLOBALS)
    bad = lambda why: InputError(f"{path} is not {what}: {why}.")  # noqa: E731
    if not isinstance(obj, dict) or not isinstance(obj.get("model_state"), dict):
        raise bad("it holds no dict with a 'model_state'")
    ms = obj["model_state"]
    raw_layers = ms.get("layers")
    if isinstance(raw_layers, list):
        dialect, items = "cuda-convnet", raw_layers
    elif isinstance(raw_layers, dict):
        dialect = "cuda-convnet2"

        def order(d):
            try:
                return int(d.get("id", 0)) if isinstance(d, dict) else 0
            except (TypeError, ValueError):
                raise bad(f"layer {d.get('name')!r} has a non-integer 'id' {d.get('id')!r}") from None

        items = sorted(raw_layers.values(), key=order)
    else:
        raise bad("its model_state has no 'layers'")
    layers: dict[str, dict] = {}
    for d in items:
        if not isinstance(d, dict) or not isinstance(d.get("name"), str):
            raise bad("a layer in model_state['layers'] is not a dict with a 'name'")
        layers[d["name"]] = d
    op = obj.get("op")
    opts = getattr(op, "options", op if isinstance(op, dict) else {})
    if not isinstance(opts, dict):
        raise bad("its 'op' holds no options")
    options = {str(k): _value(v) for k, v in opts.items()}
    try:
        epoch, batchnum = int(ms["epoch"]), int(ms["batchnum"])
    except (KeyError, TypeError, ValueError):
        raise bad("its model_state has no integer 'epoch' and 'batchnum'") from None
    if epoch < 1 or batchnum < 0:
        raise bad(f"its model_state says epoch {epoch}, data batch {batchnum}")
    for d in layers.values():
        ins = d.get("inputs")
        if ins is not None and not isinstance(ins, (list, tuple)):
            raise bad(f"layer '{d['name']}' has inputs {ins!r}, not a list")
        if d.get("type") == "data":
            try:
                int(d.get("dataIdx")), int(d.get("outputs") or 0)
            except (TypeError, ValueError):
                raise bad(f"data layer '{d['name']}' has dataIdx {d.get('dataIdx')!r} and outputs "
                          f"{d.get('outputs')!r}, not integers") from None
    outs = {k: ms.get(k) or [] for k in ("train_outputs", "test_outputs")}
    for k, v in outs.items():
        if not isinstance(v, (list, tuple)):
            raise bad(f"its model_state['{k}'] is a {type(v).__name__}, not a list")
    return Original(path=path, dialect=dialect, layers=layers, options=options, epoch=epoch, batchnum=batchnum,
                    train_outputs=list(outs["train_outputs"]), test_outputs=list(outs["test_outputs"]),
                    sha256=hashlib.sha256(raw).hexdigest())


# ---- the layer files ---------------------------------------------------------------------------
def _recorded(orig: Original, key: str) -> str | None:
    v = orig.options.get(key)
    if not isinstance(v, str) or not v:
        return None
    base = orig.options.get("layer_path")  # cuda-convnet2 joins layer_path with the names
    if isinstance(base, str) and base and not os.path.isabs(v):
        v = os.path.join(base, v)
    return v


def find_layer_files(orig: Original, layers: str | None, params: str | None) -> tuple[str, str, list[str]]:
    """(layers, params, notes): the given files, else those the saved options name, else files of
    those names next to the checkpoint (its folder, and the two above)."""
    from .netfiles import find_params_file

    here = os.path.dirname(os.path.abspath(orig.path))
    near = [here, os.path.dirname(here), os.path.dirname(os.path.dirname(here))]
    notes = []

    def locate(given, key):
        if given:
            return os.path.abspath(given)
        rec = _recorded(orig, key)
        if rec is None:
            return None
        if os.path.isfile(rec):
            return os.path.abspath(rec)
        for d in near:
            cand = os.path.join(d, os.path.basename(rec))
            if os.path.isfile(cand):
                notes.append(f"{key.replace('_', '-')} {rec} is not here; using {cand} (same name, next to the "
                             "checkpoint)")
                return cand
        return None

    lpath = locate(layers, "layer_def")
    if lpath is None:
        rec = _recorded(orig, "layer_def")
        said = f" It was trained with {rec}, which is not here (nor a file of that name next to it)." if rec else ""
        raise InputError(f"{orig.path}: the checkpoint holds the weights but not the layer definitions.{said} Give "
                         "the original layer files with --layers FILE --params FILE.")
    ppath = locate(params, "layer_params")
    if ppath is None:
        ppath = os.path.abspath(find_params_file(lpath, None))
        notes.append(f"layer-params file {_recorded(orig, 'layer_params') or '(not saved)'} is not here; using "
                     f"{ppath}")
    return lpath, ppath, notes


# ---- data sizes --------------------------------------------------------------------------------
def _inputs(orig: Original, d: dict) -> list[str]:
    names = list(orig.layers)
    out = []
    for i in d.get("inputs") or []:
        if isinstance(i, str):
            out.append(i)
        elif isinstance(i, (int, np.integer)) and 0 <= int(i) < len(names):
            out.append(names[int(i)])
    return out


def data_dims(orig: Original) -> dict[int, tuple[int, int, int]]:
    """Per dataIdx the per-case shape: C x S x S when a conv/local/pool... layer reads it with
    ``channels`` and ``imgSize``, else ``outputs`` x 1 x 1."""
    dims = {}
    for name, d in orig.layers.items():
        if d.get("type") != "data" or "dataIdx" not in d:
            continue
        n = int(d.get("outputs") or 0)
        shape = (n, 1, 1)
        for other in orig.layers.values():
            ins = _inputs(orig, other)
            if name not in ins:
                continue
            k = ins.index(name)
            try:
                c, s = int(other["channels"][k]), int(other["imgSize"][k])
            except (KeyError, IndexError, TypeError, ValueError):
                continue
            if c * s * s == n:
                shape = (c, s, s)
                break
        dims[int(d["dataIdx"])] = shape
    return dims


# ---- options, position, history ----------------------------------------------------------------
def _range_text(v) -> str | None:
    ok = isinstance(v, (list, tuple)) and v and all(isinstance(x, (int, np.integer)) for x in v)
    return format_range(v) if ok else None


def options_of(orig: Original, dims: dict) -> dict:
    """``ccn train``'s options from the original's (those that carry over)."""
    from .cli.train import DEFAULTS

    o, out = orig.options, dict(DEFAULTS)

    def num(key, cast, lo=None):
        v = o.get(key)
        try:
            v = cast(v)
        except (TypeError, ValueError):
            return None
        return v if lo is None or v >= lo else None

    out["data_path"] = o.get("data_path") if isinstance(o.get("data_path"), str) and o.get("data_path") else None
    out["train_range"] = _range_text(o.get("train_batch_range"))
    out["test_range"] = _range_text(o.get("test_batch_range"))
    for ours, theirs, cast, lo in (("epochs", "num_epochs", int, 1), ("mini", "minibatch_size", int, 1),
                                   ("test_freq", "testing_freq", int, 1), ("inner_size", "inner_size", int, 0),
                                   ("color_noise", "color_noise", float, 0.0), ("scalar_mean", "scalar_mean", float, None)):
        v = num(theirs, cast, lo)
        if v is not None and (not isinstance(v, float) or math.isfinite(v)):
            out[ours] = v
    for key in ("test_one", "multiview_test", "force_save"):  # (the same names in both)
        if isinstance(o.get(key), (bool, int)):
            out[key] = bool(o[key])
    border = num("crop_border", int, 1)  # cuda-convnet's CIFAR crops: the net saw the inner part
    if border and 0 in dims and dims[0][1] > 1:
        out["inner_size"] = dims[0][1]
    mb = num("max_filesize_mb", float, 0.0)
    if mb:  # 0 meant "keep only the newest"; ccn then keeps its default
        out["max_filesize"] = mb
    return out


def _position(orig: Original, train: list[int]) -> tuple[dict, list[tuple[int, int]]]:
    """(position, the (epoch, batch) of each training record, oldest first)."""
    e, b = orig.epoch, orig.batchnum
    done = len(orig.train_outputs)
    if b in train:
        i = train.index(b)
        nxt_e, nxt_i = (e, i + 1) if i + 1 < len(train) else (e + 1, 0)
        if not done:  # the originals' own count when no records were kept
            done = len(train) * (e - 1) + i + 1
        walk, where = (e, i), []
        for _ in range(len(orig.train_outputs)):
            # (more records than this range allows: the run changed ranges; the oldest stay at 1.first)
            where.append((walk[0], train[walk[1]]) if walk[0] >= 1 else (1, train[0]))
            walk = (walk[0], walk[1] - 1) if walk[1] > 0 else (walk[0] - 1, len(train) - 1)
        where.reverse()
    else:  # a batch outside the saved train range: start the range over in the next epoch
        nxt_e, nxt_i = e + 1, 0
        where = [(e, b)] * len(orig.train_outputs)
    pos = {"epoch": nxt_e, "index": nxt_i, "mb": 0, "batches_done": done, "test_index": 0, "last": [e, b],
           "partial": None, "train_range": list(train)}
    return pos, where


def _sums(rec, averaged: bool):
    if not (isinstance(rec, (tuple, list)) and len(rec) >= 2 and isinstance(rec[0], dict)):
        return None
    try:
        cases = int(rec[1])
        costs = {str(k): [float(x) * (cases if averaged else 1) for x in (v if isinstance(v, (list, tuple)) else [v])]
                 for k, v in rec[0].items()}
    except (TypeError, ValueError):
        return None
    return costs, cases


def history_of(orig: Original, where: list, test_freq: int, test_range: list[int], test_one: bool) -> dict:
    averaged = orig.dialect == "cuda-convnet"
    train = []
    for rec, (e, b) in zip(orig.train_outputs, where):
        s = _sums(rec, averaged)
        if s is not None:
            train.append({"epoch": e, "batch": b, "costs": s[0], "cases": s[1]})
    test = []
    for j, rec in enumerate(orig.test_outputs):
        s = _sums(rec, averaged)
        if s is None:
            continue
        k = min(len(where), (j + 1) * test_freq) - 1  # the training record the test followed
        e, b = where[k] if k >= 0 else (orig.epoch, orig.batchnum)
        batches = [test_range[j % len(test_range)]] if test_one and test_range else list(test_range)
        test.append({"epoch": e, "batch": b, "test_batches": batches, "costs": s[0], "cases": s[1]})
    return {"train": train, "test": test}


# ---- the weights -------------------------------------------------------------------------------
def _matrix(orig: Original, layer: str, key: str, idx: int | None, shape: tuple, what: str) -> np.ndarray:
    d = orig.layers[layer]
    v = d.get(key)
    if idx is not None:
        v = v[idx] if isinstance(v, (list, tuple)) and idx < len(v) else None
    if v is None and key.endswith("Inc"):
        return np.zeros(shape, np.float32)  # no momentum saved: start it from zero
    if not isinstance(v, np.ndarray) or v.dtype.kind != "f":
        raise InputError(f"{orig.path}: layer '{layer}' of the checkpoint has no float matrix {what}.")
    if tuple(v.shape) != tuple(shape):
        if v.size == int(np.prod(shape)) and v.ndim <= 2 and 1 in shape and (v.ndim < 2 or 1 in v.shape):
            v = v.reshape(shape)  # a bias vector stored as a row or a column
        else:
            raise InputError(f"{orig.path}: {what} of layer '{layer}' is {tuple(v.shape)} in the checkpoint but "
                             f"{tuple(shape)} in the net the layer files describe: they are not the files it was "
                             "trained with.")
    return np.ascontiguousarray(v, dtype=np.float32)


def _matrix_index(pname: str) -> int | None:
    """``L.weights[i]`` -> i; ``L.biases`` -> None (ccn's parameter names)."""
    part = pname.rsplit(".", 1)[1]
    return None if part == "biases" else int(part[part.index("[") + 1:-1])


def _rewritten(orig: Original, net) -> tuple[list[str], list[str]]:
    """(conv layers the checkpoint holds as local layers, "layer[i]" matrices the file takes
    through weightSource but the checkpoint holds as a copy of their own)."""
    params = {p.name: p for p in net.params}
    c2l, unshare = [], []
    for l in net.layers:
        d = orig.layers.get(l.name)
        if d is None:
            continue
        if l.type == "conv" and d.get("type") == "local":
            c2l.append(l.name)
        mine = d.get("weights")
        for i, w in enumerate(l.weights):
            src = params[w].layer
            # (a matrix of its own; one shared within the layer, weightSource=,conv7, is checked too)
            if w == f"{l.name}.weights[{i}]" or not isinstance(mine, (list, tuple)) or i >= len(mine):
                continue
            theirs = (orig.layers.get(src) or {}).get("weights") or []
            j = _matrix_index(w)
            # shared: one object in both layers (the pickle's memo); unshared: an array of its own
            if j < len(theirs) and mine[i] is not theirs[j] and isinstance(mine[i], np.ndarray):
                unshare.append(f"{l.name}[{i}]")
    return c2l, unshare


def convert(orig: Original, layers: str | None = None, params: str | None = None, data_path: str | None = None,
            seed: int | None = None):
    """(ccn Checkpoint, notes) for ``orig``, built on the net of the original layer files."""
    import secrets

    from .net import Net

    lpath, ppath, notes = find_layer_files(orig, layers, params)
    dims = data_dims(orig)
    if not dims:
        raise InputError(f"{orig.path}: the checkpoint has no data layers (type 'data' with a dataIdx).")
    net = Net(lpath, ppath, data_dims=dims, init=False)
    file_text = net.layers_text  # as read (a rewrite below changes net.layers_text)
    # the original's --conv-to-local and --unshare-weights changed the model, not its layer file: do the same
    # to the file's net (ccn.netedit), so that the checkpoint's matrices fit
    c2l, unshare = _rewritten(orig, net)
    if c2l or unshare:
        from .netedit import rewrite

        net = rewrite(net, ",".join(c2l), ",".join(unshare), echo=notes.append)
    net_layers = {l.name for l in net.layers}
    arrays, plist = {}, []
    for p in net.params:
        if p.layer not in orig.layers:
            raise InputError(f"{orig.path}: the checkpoint has no layer '{p.layer}', which {lpath} defines with "
                             "weights: the layer files are not those it was trained with.")
        i = _matrix_index(p.name)
        if i is None:
            w = _matrix(orig, p.layer, "biases", None, p.shape, "biases")
            inc = _matrix(orig, p.layer, "biasesInc", None, p.shape, "biasesInc")
        else:
            w = _matrix(orig, p.layer, "weights", i, p.shape, f"weights[{i}]")
            inc = _matrix(orig, p.layer, "weightsInc", i, p.shape, f"weightsInc[{i}]")
        arrays[f"w/{p.name}"], arrays[f"inc/{p.name}"] = w, inc
        arrays[f"grad/{p.name}"] = np.zeros(p.shape, np.float32)
        plist.append({"name": p.name, "shape": list(p.shape), "passes": 0})
    extra = [n for n, d in orig.layers.items() if d.get("weights") is not None and n not in net_layers]
    if extra:
        raise InputError(f"{orig.path}: the checkpoint has weight layers that {lpath} does not define "
                         f"({', '.join(extra)}): the layer files are not those it was trained with.")
    opts = options_of(orig, dims)
    if data_path:
        opts["data_path"] = os.path.abspath(data_path)
    opts["layers"], opts["params"] = lpath, ppath
    opts["seed"] = int(seed) if seed is not None else secrets.randbelow(2**31)
    train = parse_range(opts["train_range"], "train range") if opts["train_range"] else [orig.batchnum]
    test = parse_range(opts["test_range"], "test range") if opts["test_range"] else []
    pos, where = _position(orig, train)
    pos["seed"] = opts["seed"]
    meta = {
        "options": opts,
        "net": {"layers_path": lpath, "params_path": ppath, "seed": opts["seed"], "step": 0,
                "data_dims": {str(k): list(v) for k, v in dims.items()}, "params": plist,
                "layers_file_sha256": ck.text_sha256(file_text)},
        "position": pos,
        "history": history_of(orig, where, int(opts["test_freq"]), test, bool(opts["test_one"])),
        "imported": {"from": os.path.abspath(orig.path), "dialect": orig.dialect, "sha256": orig.sha256},
    }
    ckpt = ck.Checkpoint(meta=meta, arrays=arrays, layers_text=net.layers_text, params_text=net.params_text)
    return ckpt, notes
