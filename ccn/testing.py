"""Testing a checkpoint: ``ccn test`` (cuda-convnet's ``convnet.py --test-only``) and the data
that ``ccn show-preds`` draws.

* :func:`load_model` rebuilds the net of a checkpoint from the layer texts saved in it and puts
  its weights back (no data provider needed: the data sizes are saved too).
* :func:`open_test_provider` opens the test data as ``ccn train`` did, with the checkpoint's
  options (data path, provider, crop size, mean) unless overridden.
* :func:`run_test` pushes batches through the net minibatch by minibatch and yields per
  minibatch the cost values, the labels, the probabilities fed to a ``cost.logreg`` layer and
  any layer outputs asked for, so that callers can write predictions and features on the way.
  It is also the trainer's periodic test (:meth:`ccn.train.Trainer.test`), so ``ccn test``
  reports exactly what training reported.

With ``multiview`` the provider returns 10 views per case (row ``i + v*n`` is view v of case
i); each ``cost.logreg`` is then computed from the probabilities averaged over the views,
other cost layers report their mean over the views.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import numpy as np

from . import checkpoint as ck
from .errors import CcnRuntimeError, InputError

VIEWS = 10


# ---- the model -------------------------------------------------------------------------------
def load_model(path: str):
    """(checkpoint, net) for a checkpoint folder or a save folder (its newest checkpoint)."""
    from .net import Net

    # reading weights across versions is fine; a save folder whose newest checkpoint is damaged gives
    # its newest intact one, with a warning (what ccn train -f FOLDER refuses to guess)
    ckpt = ck.load_newest_intact(path, check_version=False)
    nm = ckpt.net_meta
    dims = {int(k): tuple(int(x) for x in v) for k, v in nm.get("data_dims", {}).items()}
    # the texts come from the checkpoint, so errors in them name its copies (CKPT/layers.cfg), not the
    # files they were once read from (which may have changed since)
    net = Net(os.path.join(ckpt.path, ck.LAYERS), os.path.join(ckpt.path, ck.PARAMS), data_dims=dims,
              layers_text=ckpt.layers_text, params_text=ckpt.params_text, init=False, allow_unused=True)
    ck.restore_net(net, ckpt)
    return ckpt, net


def test_options(ckpt, **overrides) -> tuple[dict, list[int]]:
    """The checkpoint's options with the command line's overrides (those not None), and the
    test batches they name (an InputError when there are none)."""
    from .batchrange import parse_range

    opts = dict(ckpt.options)
    if overrides.get("data_path"):
        overrides["data_path"] = os.path.abspath(overrides["data_path"])
    opts.update({k: v for k, v in overrides.items() if v is not None})
    if not opts.get("test_range"):
        raise InputError("the checkpoint names no test range; give --test-range.")
    return opts, parse_range(opts["test_range"], "--test-range")


def checkpoint_label(ckpt) -> str:
    """A short name for file names: the checkpoint folder's name (``3.2``)."""
    return os.path.basename(os.path.normpath(ckpt.path)) or "checkpoint"


def layer_list(names) -> str:
    names = list(names)
    return ", ".join(names) if names else "none"


def find_logreg(net, name: str | None, option: str = "--logreg-name"):
    """The ``cost.logreg`` layer called ``name`` (or the one reading the softmax called ``name``,
    as shownet's --show-preds named it), or the net's first one when ``name`` is None (None when
    the net has none)."""
    layers = net.layers
    logregs = [l for l in layers if l.type == "cost.logreg"]
    if name is None:
        return logregs[0] if logregs else None
    for l in layers:
        if l.name == name:
            # shownet's --show-preds named the softmax: the one cost.logreg reading it stands for it
            readers = [x for x in logregs if len(x.inputs) > 1 and x.inputs[1] == name]
            if l.type != "cost.logreg" and len(readers) == 1:
                return readers[0]
            if l.type != "cost.logreg":
                raise InputError(f"{option} {name}: layer '{name}' has type {l.type}, not cost.logreg; the "
                                 f"cost.logreg layers of this net: {layer_list(x.name for x in logregs)}.")
            return l
    raise InputError(f"{option} {name}: the net has no layer '{name}'; its cost.logreg layers: "
                     f"{layer_list(x.name for x in logregs)}.")


def cost_names(net) -> dict[str, list[str]]:
    """Each cost layer's value names, e.g. ``{"logprob": ["logprob", "error", "top-5 error"]}``."""
    return {c["layer"]: list(c["names"]) for c in net.costs()}


def topk_of(net, logreg_name: str) -> int:
    """The ``topk`` of a cost.logreg layer (1 unless its third value is a top-k error)."""
    names = cost_names(net).get(logreg_name, [])
    if len(names) > 2 and names[2].startswith("top-"):
        return int(names[2].split()[0][4:])
    return 1


# ---- data -------------------------------------------------------------------------------------
def check_data_dims(expected: dict, dp, data_path: str, what: str, options: str = "--data-path") -> None:
    """Refuse a provider whose per-case data sizes differ from those ``what`` (a net or a
    checkpoint) was built for: name the data path and both sizes, not a layer deep inside."""
    from .net import _dims

    want = _dims(expected)
    try:
        got = _dims(dp.data_dims())
    except (AttributeError, TypeError, ValueError):
        return  # a provider without usable data_dims() is reported when its data arrive
    fmt = lambda d: "x".join(str(x) for x in d)  # noqa: E731
    for idx, shape in sorted(want.items()):
        have = got.get(idx)
        if have is not None and have != shape and int(np.prod(have)) != int(np.prod(shape)):
            raise InputError(f"{data_path}: its data for dataIdx {idx} are {fmt(have)} values per case, but {what} "
                             f"was trained on {fmt(shape)}; give the {options} it was trained with.")


def check_classes(net, dp, data_path: str) -> list[str]:
    """The data's classes against each cost.logreg's outputs: more classes than outputs is an
    InputError (a label would have no output); fewer gives a warning line (outputs no label
    ever names), returned for the caller to print."""
    have = getattr(dp, "num_classes", None)
    if not isinstance(have, int) or have < 1:
        return []
    warn = []
    for l in net.layers:
        if l.type != "cost.logreg" or len(l.inputs) != 2:
            continue
        labels, probs = (net.layer(n) for n in l.inputs)
        if labels.type != "data" or labels.data_idx != 1:  # the providers' labels are dataIdx 1
            continue
        k = probs.outputs
        if have > k:
            raise InputError(f"{data_path} has {have} classes (labels 0..{have - 1}) but cost layer '{l.name}' gets "
                             f"{k} probabilities from '{probs.name}' (classes 0..{k - 1}): give the layer that makes "
                             f"them outputs={have}, or use data with {k} classes.")
        if have < k:
            warn.append(f"warning: {data_path} has {have} classes but cost layer '{l.name}' gets {k} probabilities "
                        f"from '{probs.name}': outputs {have}..{k - 1} never get a label.")
    return warn


def open_test_provider(opts: dict, batches: list[int], multiview: bool, net=None):
    """The test data provider for ``batches``, opened the way ``ccn train`` opened it (and,
    given ``net``, checked to deliver the data sizes the net was built for)."""
    from .cli.train import _FallbackProviderOptions, _provider_module

    data_path = opts.get("data_path")
    if not data_path:
        raise InputError("the checkpoint does not say where its data is; give --data-path.")
    if not os.path.isdir(data_path):
        raise InputError(f"{data_path}: the data path does not exist or is not a folder (give --data-path).")
    mod, open_fn = _provider_module(opts.get("data_provider"), opts.get("layers"))
    avail_fn = getattr(mod, "available_batches", None)
    if avail_fn is not None:
        avail = list(avail_fn(data_path))
        bad = [b for b in batches if b not in avail]
        if bad:
            raise InputError(f"--test-range: {data_path} has no data batch {bad[0]} (it has "
                             f"{', '.join(str(b) for b in avail)}).")
    popt_cls = getattr(mod, "ProviderOptions", _FallbackProviderOptions)
    sm = opts.get("scalar_mean")
    popts = popt_cls(inner_size=int(opts.get("inner_size") or 0), color_noise=0.0,
                     scalar_mean=None if sm is None or sm == -1 else float(sm), multiview=bool(multiview),
                     seed=int(opts.get("seed") or 0), threads=int(opts.get("threads") or 0))
    dp = open_fn(data_path, list(batches), train=False, options=popts)
    if net is not None:
        try:
            check_data_dims(net.data_dims, dp, data_path, "the checkpoint's net")
        except InputError:
            close = getattr(dp, "close", None)
            if callable(close):
                close()
            raise
    return dp


def as_matrices(data, batch: int, allow_empty: bool = False) -> list[np.ndarray]:
    """A provider's batch as float32 ``cases x values`` matrices (the trainer's and the tests'
    one reading of it). A batch with no cases is refused unless ``allow_empty`` (a data-parallel
    rank's share of a small minibatch can be empty)."""
    if not isinstance(data, (list, tuple)) or not data:
        raise InputError(f"the data provider returned {type(data).__name__} for batch {batch}; expected a list of "
                         "matrices (images, labels, ...).")
    out = []
    for i, d in enumerate(data):
        try:
            a = np.asarray(d, dtype=np.float32)
        except (TypeError, ValueError) as e:
            raise InputError(f"the data provider's matrix {i} for batch {batch} is not numbers ({e}).") from None
        if a.ndim == 0:
            raise InputError(f"the data provider's matrix {i} for batch {batch} is a single number; expected one row "
                             "per case (e.g. labels as an N x 1 matrix).")
        if a.ndim == 1:
            a = a.reshape(-1, 1)
        # (no -1: zero rows cannot infer it)
        out.append(np.ascontiguousarray(a.reshape(a.shape[0], int(np.prod(a.shape[1:])))))
    if any(a.shape[0] != out[0].shape[0] for a in out):
        raise InputError(f"the data provider's matrices for batch {batch} disagree on the number of cases: "
                         f"{[a.shape[0] for a in out]}.")
    if out[0].shape[0] == 0 and not allow_empty:
        raise InputError(f"the data provider returned no cases for batch {batch}.")
    return out


def check_rows(dp, batch: int, rows: int, views: int = 1) -> None:
    """The rows a provider's load gave for ``batch`` against its own num_cases (times the views of
    a multiview test): a provider that ignores options.multiview, or miscounts, is named instead
    of its rows being read as something else."""
    try:
        n = int(dp.num_cases(batch))
    except Exception:  # (num_cases itself failing is reported where it is first called)
        return
    if rows != n * views:
        what = f"{n} cases x {views} views = {n * views}" if views > 1 else f"{n} cases"
        hint = (" Does it return the ten views of every case when options.multiview is set?" if views > 1 else "")
        raise InputError(f"the data provider's load gave {rows} rows for batch {batch}, but its num_cases says "
                         f"{what}.{hint}")


def label_names(dp, classes: int) -> list[str]:
    names = getattr(dp, "label_names", None)
    if names is None:
        names = (getattr(dp, "meta", None) or {}).get("label_names")
    names = [str(n) for n in names] if names else []
    if len(names) < classes:
        names += [str(i) for i in range(len(names), classes)]
    return names


# ---- the loop ---------------------------------------------------------------------------------
@dataclass
class Minibatch:
    batch: int
    lo: int                    # first case of the batch in this minibatch
    cases: int
    costs: list[dict]          # the net's cost records (values summed over these cases)
    labels: np.ndarray | None  # int64 class labels of the logreg layer (None without one)
    probs: np.ndarray | None   # cases x classes probabilities seen by the logreg layer
    outputs: dict = field(default_factory=dict)  # layer name -> cases x values


def logreg_values(probs: np.ndarray, labels: np.ndarray, topk: int = 1, nll: float | None = None) -> list[float]:
    """cost.logreg's values summed over cases: -log p[label], top-1 error, (top-k error): a label
    tied with t classes for the last slots gets a share of the credit (the core's rule)."""
    p = np.asarray(probs, np.float64)
    idx = np.arange(p.shape[0])
    pl = p[idx, labels]
    greater = (p > pl[:, None]).sum(axis=1)
    equal = (p == pl[:, None]).sum(axis=1)

    def wrong(k):
        slots = k - greater
        credit = np.where(greater >= k, 0.0, np.where(slots >= equal, 1.0, slots / np.maximum(equal, 1)))
        return float((1.0 - credit).sum())

    vals = [float(-np.log(np.maximum(pl, 1e-38)).sum()) if nll is None else float(nll), wrong(1)]
    if topk > 1:
        vals.append(wrong(topk))
    return vals


def label_log_probs(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """log softmax(x)[label] per row, in float64 from the logits (finite where p underflows)."""
    x = np.asarray(logits, np.float64)
    m = x.max(axis=1)
    return x[np.arange(len(x)), labels] - m - np.log(np.exp(x - m[:, None]).sum(axis=1))


def _nonfinite(costs) -> bool:
    return any(not math.isfinite(float(v)) for c in costs for v in c["values"])


def _check_finite(net, costs, where):
    if _nonfinite(costs):
        layer = net._net.first_nonfinite_layer()
        bad = ", ".join(f"{c['layer']} = {[float(v) for v in c['values']]}" for c in costs)
        first = f"the first layer whose output is not finite is '{layer}'" if layer else \
            "no layer output is non-finite, so the cost itself overflowed"
        raise CcnRuntimeError(f"the cost is NaN or infinite while {where} ({bad}); {first}.")


def cases_per_step(mini: int, *sources, ranks: int = 1) -> int:
    """The most cases one step holds: --mini, or a whole batch when the batches of ``sources``
    ((provider, batches) pairs) are smaller, and with ``ranks`` data-parallel ranks one rank's
    share of it."""
    try:
        largest = max(int(dp.num_cases(b)) for dp, batches in sources for b in batches)
        cases = min(mini, max(largest, 1))
    except Exception:  # no batches, or a provider without num_cases for every batch: --mini it is
        cases = mini
    return -(-cases // ranks)


def run_test(net, dp, batches, *, mini: int, epoch: int = 1, multiview: bool = False, logreg=None,
             outputs=(), on_load=None, load=None, on_nonfinite=None, allow_empty: bool = False):
    """Yield a :class:`Minibatch` for every minibatch of every batch in ``batches``.

    This is the one test loop of ccn: ``ccn test``, ``ccn show-preds`` and the trainer's
    periodic test (:meth:`ccn.train.Trainer.test`) all run through it.

    ``logreg``: a cost.logreg LayerInfo whose labels and probabilities to return (or None).
    ``outputs``: names of layers whose outputs to return (not with ``multiview``).
    ``on_load(batch, data)`` is called with each batch's matrices as loaded.
    ``load(batch)`` replaces ``dp.load(batch, epoch)`` (the trainer's prefetching loader).
    ``on_nonfinite(costs, where)`` is called (and must raise) when a cost is NaN or infinite;
    by default a :class:`CcnRuntimeError` names the first non-finite layer. ``allow_empty``:
    a batch may hold no cases (a data-parallel rank's share).
    """
    from .net import check_memory

    check_memory(net, cases_per_step(mini, (dp, batches)) * (VIEWS if multiview else 1), "testing with --mini")
    check = _check_finite if on_nonfinite is None else \
        (lambda net_, costs, where: on_nonfinite(costs, where) if _nonfinite(costs) else None)
    layers = {l.name: l for l in net.layers}
    lab_idx = layers[logreg.inputs[0]].data_idx if logreg is not None else None
    prob_layer = logreg.inputs[1] if logreg is not None else None
    logregs = {l.name: l for l in layers.values() if l.type == "cost.logreg"}
    topks = {name: topk_of(net, name) for name in logregs} if multiview else {}
    # a fused logreg reports -log p from the logits (the core's rule); over the views, -log of the mean
    # probability from the views' log-probabilities, so that saturated cases are not capped either
    logits = {name: l.fused_logits for name, l in logregs.items()}  # (the core's choice: LayerInfo)
    if multiview and outputs:
        raise InputError("layer outputs (--write-features) are read from one view per case; leave out "
                         "--multiview-test to write them.")
    for b in batches:
        data = as_matrices(dp.load(b, epoch) if load is None else load(b), b, allow_empty)
        if not allow_empty:  # (a data-parallel rank's share is not the whole batch)
            check_rows(dp, b, data[0].shape[0], VIEWS if multiview else 1)
        if on_load is not None:
            on_load(b, data)
        rows = data[0].shape[0]
        if not multiview:
            for lo in range(0, rows, mini):
                hi = min(rows, lo + mini)
                net.forward([d[lo:hi] for d in data], train=False)
                costs = net.costs()
                check(net, costs, f"testing on batch {b}")
                labels = data[lab_idx][lo:hi, 0].astype(np.int64) if logreg is not None else None
                probs = net.output(prob_layer).copy() if logreg is not None else None
                yield Minibatch(b, lo, hi - lo, costs, labels, probs, {name: net.output(name).copy() for name in outputs})
            continue
        if rows % VIEWS:
            raise InputError(f"multiview test: batch {b} has {rows} rows, not a multiple of {VIEWS} views.")
        n = rows // VIEWS
        for lo in range(0, n, mini):
            hi = min(n, lo + mini)
            probs = {name: 0.0 for name in logregs}
            logps: dict = {name: [] for name in logregs}
            labs = {name: data[layers[l.inputs[0]].data_idx][lo:hi, 0].astype(np.int64) for name, l in logregs.items()}
            other: dict = {}
            order = None
            for v in range(VIEWS):
                net.forward([d[v * n + lo:v * n + hi] for d in data], train=False)
                costs = net.costs()
                check(net, costs, f"testing on batch {b}, view {v + 1}")
                order = costs
                for name, l in logregs.items():
                    probs[name] = probs[name] + net.output(l.inputs[1]).astype(np.float64)
                    if logits[name] is not None:
                        logps[name].append(label_log_probs(net.output(logits[name]), labs[name]))
                for c in costs:
                    if c["layer"] not in logregs:
                        vals = np.asarray(c["values"], np.float64) / VIEWS
                        other[c["layer"]] = other.get(c["layer"], 0.0) + vals
            result = []
            for c in order:
                name = c["layer"]
                if name in logregs:
                    nll = None
                    if logps[name]:  # -log mean_v p_v = -(logsumexp_v log p_v - log V)
                        lp = np.stack(logps[name])
                        top = lp.max(axis=0)
                        nll = -np.sum(top + np.log(np.exp(lp - top).sum(axis=0)) - np.log(VIEWS))
                    vals = logreg_values(probs[name] / VIEWS, labs[name], topks[name], nll=nll)
                    result.append({**c, "values": vals})
                else:
                    result.append({**c, "values": [float(x) for x in other[name]]})
            labels = data[lab_idx][lo:hi, 0].astype(np.int64) if logreg is not None else None
            p = (probs[logreg.name] / VIEWS).astype(np.float32) if logreg is not None else None
            yield Minibatch(b, lo, hi - lo, result, labels, p, {})


def top_classes(probs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k most probable classes per row (most probable first; ties: lower class first) and
    their probabilities."""
    k = min(k, probs.shape[1])
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(probs, order, axis=1)
