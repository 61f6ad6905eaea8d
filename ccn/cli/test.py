"""`ccn test`: run the whole test set through a checkpoint's net (cuda-convnet's
``convnet.py -f CKPT --test-only 1``), optionally writing layer features and per-case
predictions.

The data path, provider, test range, minibatch size, crop size and multiview setting default
to the ones the checkpoint was trained with. See :mod:`ccn.testing`.

``--write-features LAYER --feature-path DIR`` writes, per test batch N, ``DIR/features_batch_N.npy``
(float32, cases x values of LAYER, NCHW flat) and then ``DIR/features.json``: the layer, its
per-case shape (C, H, W), the checkpoint, and per batch the file, its shape and the labels.
``--test-out FILE`` (``.npz`` or ``.csv``) writes per test case its batch, its index in the
batch, the true label and the top 5 classes with their probabilities.
"""

from __future__ import annotations

import csv
import io
import os
import re
import sys

import click
import numpy as np

from ..errors import InputError
from .options import THREADS, check_threads
from .train import BOOL01, check_num_gpus


@click.command("test")
@click.option("-f", "--load-file", "load_file", required=True, type=str,
              help="Checkpoint folder, or a save folder (its newest checkpoint).")
@click.option("--test-range", type=str, help="Test batches, e.g. 6 or 1001-1010. [the checkpoint's]")
@click.option("--data-path", type=str, help="Folder of the data batches. [the checkpoint's]")
@click.option("--data-provider", type=str, help="MODULE:FUNCTION of your own provider. [the checkpoint's]")
@click.option("--multiview-test", type=BOOL01, is_flag=False, flag_value="1",
              help="Average the predictions over 10 views (corners + centre, flipped). [the checkpoint's]")
@click.option("--logreg-name", type=str,
              help="The cost.logreg layer whose predictions --test-out writes. [the first one]")
@click.option("--mini", "--minibatch", "mini", type=click.IntRange(1), help="Cases per forward pass. [the checkpoint's]")
@click.option("--write-features", "feature_layer", type=str, help="Write this layer's outputs (with --feature-path).")
@click.option("--feature-path", type=str, help="Folder for the features of --write-features.")
@click.option("--test-out", type=str, help="Write per-case predictions (top 5) to this .npz or .csv file.")
@click.option("--threads", type=THREADS, help="CPU threads of the core. [all cores]")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), help="Where to run the net: cpu or cuda. [cpu]")
@click.option("--gpu", type=str, help="The GPU index, e.g. 0 (implies --device cuda). [0]")
@click.option("--test-only", type=BOOL01, hidden=True)
@click.option("--num-gpus", type=int, hidden=True)
def test(load_file, test_range, data_path, data_provider, multiview_test, logreg_name, mini, feature_layer,
         feature_path, test_out, threads, device, gpu, test_only, num_gpus):
    """Test a checkpoint on the whole test set: the cost layers' values (negative log
    probability, top-1 and top-k error).

    \b
    ccn test -f runs/a                      # newest checkpoint of runs/a, its test range
    ccn test -f runs/a/3.2 --test-range 6 --multiview-test
    ccn test -f runs/a --write-features fc64 --feature-path feats/ --test-out preds.csv
    """
    if test_only is not None:  # cuda-convnet's convnet.py -f CKPT --test-only 1 is what ccn test does
        if not test_only:
            raise InputError(f"--test-only 0 means training on; that is ccn train -f {load_file}.")
        click.echo("note: --test-only is accepted for cuda-convnet's command lines and has no effect: ccn test only "
                   "tests.", err=True)
    check_num_gpus(num_gpus)
    run_test_command(load_file, test_range=test_range, data_path=data_path, data_provider=data_provider,
                     multiview=multiview_test, logreg_name=logreg_name, mini=mini, feature_layer=feature_layer,
                     feature_path=feature_path, test_out=test_out, threads=threads, device=device, gpu=gpu)


def run_test_command(load_file, *, test_range=None, data_path=None, data_provider=None, multiview=None,
                     logreg_name=None, mini=None, feature_layer=None, feature_path=None, test_out=None,
                     threads=None, out=None, device=None, gpu=None) -> dict:
    """The command without Click; returns the summed costs, names and number of cases."""
    from .. import testing as T
    from ..batchrange import format_range
    from ..train import _CostSum, format_costs, shown_names, shown_values
    from .. import viz

    echo = (lambda s: print(s, file=out, flush=True)) if out is not None else click.echo
    # ---- options, checked before anything heavy
    if bool(feature_layer) != bool(feature_path):
        raise InputError("--write-features LAYER and --feature-path DIR go together; give both.")
    if test_out is not None:
        ext = os.path.splitext(test_out)[1].lower()
        if ext not in (".npz", ".csv"):
            raise InputError(f"--test-out {test_out}: the file name must end in .npz or .csv. (In cuda-convnet2 "
                             "--test-out named a folder of test_preds_N pickles; ccn writes one file instead, with "
                             "every test case's batch, index, true label and top-5 classes with their probabilities, "
                             f"e.g. --test-out {test_out.rstrip('/' + os.sep) or 'preds'}.npz. For every class's "
                             "probability, write the softmax layer's outputs: --write-features LAYER --feature-path "
                             "DIR.)")
        viz.check_output(test_out, "predictions", "--test-out", suffix=None)
    from .. import device as dev

    # --device cuda where it cannot work fails before the checkpoint is read; like --threads,
    # where to run is not taken from the checkpoint (any checkpoint runs on either backend)
    placement = dev.select(device, gpu, command="ccn test")
    ckpt, net = T.load_model(load_file)
    if placement.device == "cuda":
        dev.select(device, placement.gpu, command="ccn test", gpus_needed=net.gpus_needed)
        dev.place(net, placement)
    opts, batches = T.test_options(ckpt, data_path=data_path, data_provider=data_provider, test_range=test_range,
                                   mini=mini, multiview_test=multiview, threads=threads)
    mv = bool(opts.get("multiview_test"))
    mini = int(opts.get("mini") or 128)
    logreg = T.find_logreg(net, logreg_name)
    if (test_out or logreg_name) and logreg is None:
        raise InputError("the net has no cost.logreg layer, so it makes no class predictions to write (--test-out).")
    if feature_layer is not None:
        valid = [l.name for l in net.layers if l.type != "data" and not l.is_cost]
        if feature_layer not in valid:
            kind = next((l.type for l in net.layers if l.name == feature_layer), None)
            what = {"data": "a data layer (its outputs are the inputs themselves)"}.get(kind, f"a {kind} layer") \
                if kind else "no such layer"
            raise InputError(f"--write-features {feature_layer}: {what}; the layers with features: "
                             f"{', '.join(valid)}.")
        if mv:
            why = "leave out --multiview-test" if multiview else \
                "the checkpoint was trained with --multiview-test 1, so give --multiview-test 0"
            raise InputError(f"--write-features reads one view per case; {why} to write features.")
    if feature_path is not None:  # (made only once the request is known to be good: no empty folder left)
        try:
            os.makedirs(feature_path, exist_ok=True)
        except OSError as e:
            raise InputError(f"--feature-path {feature_path}: cannot create the folder ({e.strerror or e}).") from None
        viz.check_output(os.path.join(feature_path, "features.json"), "features", "--feature-path", suffix=None)
    if opts.get("threads"):
        from .._native import core

        core.set_threads(check_threads(opts["threads"]))
    dp = T.open_test_provider(opts, batches, mv, net=net)
    names = T.cost_names(net)
    total = sum(int(dp.num_cases(b)) for b in batches)
    echo(f"ccn test: {ckpt.path}" + ("" if placement.device == "cpu" else f" on {dev.describe(placement)}"))
    echo(f"  data {opts['data_path']}: test batches {format_range(batches)}, {total} cases"
         f"{', 10 views each' if mv else ''}; minibatch {mini}")

    sums = _CostSum()
    preds = {"batch": [], "case": [], "label": [], "top": [], "prob": []}
    feats: list[dict] = []
    cur: dict = {}
    layer_shape = net.layer(feature_layer).shape if feature_layer else None

    def flush_features():
        if not cur:
            return
        b = cur["batch"]
        arr = np.concatenate(cur["rows"]) if cur["rows"] else np.zeros((0, int(np.prod(layer_shape))), np.float32)
        fname = f"features_batch_{b}.npy"
        from ..fsutil import atomic_save_npy

        atomic_save_npy(os.path.join(feature_path, fname), arr.astype(np.float32))
        labs = np.concatenate(cur["labels"]).tolist() if cur["labels"] else []
        feats.append({"batch": b, "file": fname, "shape": list(arr.shape), "labels": [int(x) for x in labs]})
        cur.clear()

    progress = None
    if out is None and sys.stderr.isatty():
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        progress = Progress(TextColumn("testing"), BarColumn(), MofNCompleteColumn(), TextColumn("cases ETA"),
                            TimeRemainingColumn(), console=Console(stderr=True), transient=True)
        task = progress.add_task("test", total=total)
        progress.start()
    lab_layers = {l.name: l for l in net.layers}
    classes = 0
    try:
        for mb in T.run_test(net, dp, batches, mini=mini, multiview=mv, logreg=logreg,
                             outputs=(feature_layer,) if feature_layer else ()):
            sums.add(mb.costs, mb.cases)
            if mb.probs is not None:
                classes = mb.probs.shape[1]
            if test_out:
                top, p = T.top_classes(mb.probs, 5)
                preds["batch"].append(np.full(mb.cases, mb.batch, np.int64))
                preds["case"].append(np.arange(mb.lo, mb.lo + mb.cases, dtype=np.int64))
                preds["label"].append(mb.labels)
                preds["top"].append(top)
                preds["prob"].append(p)
            if feature_layer:
                if cur.get("batch") != mb.batch:
                    flush_features()
                    cur.update(batch=mb.batch, rows=[], labels=[])
                cur["rows"].append(mb.outputs[feature_layer])
                if mb.labels is not None:  # the labels of the cost.logreg layer (none without one)
                    cur["labels"].append(mb.labels)
            if progress is not None:
                progress.advance(task, mb.cases)
        if feature_layer:
            flush_features()
    finally:
        if progress is not None:
            progress.stop()
        close = getattr(dp, "close", None)
        if callable(close):
            close()

    echo("======================Test output======================")
    types = {l.name: l.type for l in net.layers if l.is_cost}
    echo(format_costs(sums.values, sums.cases, types, T.label_names(dp, 0)))
    echo("-------------------------------------------------------")
    for layer, vals in sums.values.items():
        vn = shown_names(types.get(layer), names.get(layer, []))
        parts = []
        for i, mean in enumerate(shown_values(types.get(layer), vals, sums.cases)):
            nm = vn[i] if i < len(vn) else f"value {i}"
            parts.append(f"{nm} {mean:.6f}" + (f" ({100 * mean:.2f}%)" if "error" in nm else ""))
        echo(f"{layer}: " + ", ".join(parts) + f"  over {sums.cases} cases")
    if feature_layer:
        index = {"format": "ccn-features", "version": 1, "layer": feature_layer,
                 "layer_type": lab_layers[feature_layer].type, "shape": list(layer_shape),
                 "checkpoint": os.path.abspath(ckpt.path), "data_path": opts["data_path"],
                 "label_names": T.label_names(dp, classes or int(getattr(dp, "num_classes", 0) or 0)),
                 "cases": sum(f["shape"][0] for f in feats), "batches": feats,
                 "layout": "each file: float32 cases x (C*H*W), channels slowest, x fastest"}
        from ..fsutil import atomic_write_json

        atomic_write_json(os.path.join(feature_path, "features.json"), index)
        echo(f"Wrote the outputs of layer '{feature_layer}' ({len(feats)} batch files, "
             f"{index['cases']} x {int(np.prod(layer_shape))}) and features.json to {feature_path}")
        # an earlier run's batch files that features.json no longer lists would be read by a glob
        mine = {f"features_batch_{f['batch']}.npy" for f in feats}
        stale = sorted(n for n in os.listdir(feature_path)
                       if re.fullmatch(r"features_batch_\d+\.npy", n) and n not in mine)
        for n in stale:
            try:
                os.unlink(os.path.join(feature_path, n))
            except OSError:
                pass
        if stale:
            echo(f"Removed {len(stale)} feature file(s) of an earlier run from {feature_path} ({', '.join(stale)}).")
    if test_out:
        _write_test_out(test_out, preds, T.label_names(dp, classes))
        echo(f"Wrote the predictions for {sums.cases} cases to {test_out}")
    return {"costs": sums.values, "cases": sums.cases, "names": names}


def _write_test_out(path: str, preds: dict, names: list[str]) -> None:
    from .. import viz

    cat = {k: (np.concatenate(v) if v else np.zeros(0)) for k, v in preds.items()}
    k = cat["top"].shape[1] if cat["top"].ndim == 2 else 0
    if path.lower().endswith(".npz"):
        buf = io.BytesIO()
        np.savez(buf, batch=cat["batch"], case=cat["case"], label=cat["label"].astype(np.int64),
                 top_classes=cat["top"].astype(np.int64), top_probs=cat["prob"].astype(np.float32),
                 label_names=np.array(names))
        viz.write_bytes(path, buf.getvalue())
        return
    s = io.StringIO()
    w = csv.writer(s, lineterminator="\n")
    w.writerow(["batch", "case", "label", "label_name"] + [f"top{j + 1}" for j in range(k)] +
               [f"top{j + 1}_name" for j in range(k)] + [f"prob{j + 1}" for j in range(k)])
    for i in range(len(cat["batch"])):
        top = [int(x) for x in cat["top"][i]]
        lab = int(cat["label"][i])
        w.writerow([int(cat["batch"][i]), int(cat["case"][i]), lab, names[lab] if lab < len(names) else lab] + top +
                   [names[t] if t < len(names) else t for t in top] + ["%.6f" % p for p in cat["prob"][i]])
    viz.write_bytes(path, s.getvalue().encode("utf-8"))
