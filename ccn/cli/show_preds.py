"""`ccn show-preds`: test images with their true label and the model's top 5 as bars, as a PNG
(shownet.py --show-preds). The true label's bar is red; a title in red marks a wrong top-1.

The images are a random choice (``--seed``) from the first test batch, or with
``--only-errors`` from the cases whose most probable class is wrong (read batch after batch
of the test range until enough are found). With the checkpoint's (or the option's) multiview
test, the probabilities are the mean over the ten views, as ``ccn test`` computes them, and the
picture shows the centre view.
"""

from __future__ import annotations

import click
import numpy as np

from .options import SEED
from .train import BOOL01


@click.command("show-preds")
@click.option("-f", "--load-file", "load_file", required=True, type=str,
              help="Checkpoint folder, or a save folder (its newest checkpoint).")
@click.option("--only-errors", type=click.BOOL, is_flag=False, flag_value="1", default=False, metavar="[0/1]",
              help="Show only images whose top-1 prediction is wrong. (A bare flag means 1.)")
@click.option("-o", "--output", type=str, help="PNG file to write. [preds-CHECKPOINT.png, errors-CHECKPOINT.png]")
@click.option("--num", type=click.IntRange(1, 64), default=8, show_default=True, help="How many images.")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of the random choice of images.")
@click.option("--logreg-name", "--show-preds", "logreg_name", type=str,
              help="The cost.logreg layer whose predictions to show, or its softmax (shownet's --show-preds). "
                   "[the first one]")
@click.option("--test-range", type=str, help="Test batches to take images from. [the checkpoint's]")
@click.option("--data-path", type=str, help="Folder of the data batches. [the checkpoint's]")
@click.option("--data-provider", type=str, help="MODULE:FUNCTION of your own provider. [the checkpoint's]")
@click.option("--multiview-test", type=BOOL01, is_flag=False, flag_value="1",
              help="Average the probabilities over the ten views, as ccn test does. [the checkpoint's]")
def show_preds(load_file, only_errors, output, num, seed, logreg_name, test_range, data_path, data_provider,
               multiview_test):
    """Draw test images with the model's five most probable classes.

    \b
    ccn show-preds -f runs/a
    ccn show-preds -f runs/a --only-errors -o mistakes.png
    """
    write_preds(load_file, only_errors=only_errors, output=output, num=num, seed=seed, logreg_name=logreg_name,
                test_range=test_range, data_path=data_path, data_provider=data_provider, multiview=multiview_test,
                echo=click.echo)


def _first_view(images: np.ndarray, multiview: bool) -> np.ndarray:
    """The images to draw: with multiview (ten blocks of n rows, view v of case i at row
    i + v*n; views 0-3 the corners, 4 the centre, 5-9 their mirror images) the centre view."""
    if not multiview:
        return images
    from ..testing import VIEWS

    n = images.shape[0] // VIEWS
    return images[4 * n:5 * n]


def plottable(dp, images: np.ndarray, dims) -> np.ndarray:
    """N x H x W x C floats in 0..1: the provider's own view when it has one, else each image
    stretched to 0..1."""
    from ..errors import InputError

    fn = getattr(dp, "get_plottable_data", None)
    if callable(fn):
        return np.asarray(fn(images), np.float32)
    c, h, w = dims
    if h * w <= 1 or c not in (1, 3):
        raise InputError(f"the test data are not images (dataIdx 0 holds {c} x {h} x {w} values per case); "
                         "show-preds draws images with 1 or 3 channels.")
    x = images.reshape(-1, c, h, w).transpose(0, 2, 3, 1).astype(np.float64)
    lo = x.min(axis=(1, 2, 3), keepdims=True)
    span = x.max(axis=(1, 2, 3), keepdims=True) - lo
    return ((x - lo) / np.where(span > 0, span, 1)).astype(np.float32)


def write_preds(load_file, *, only_errors=False, output=None, num=8, seed=0, logreg_name=None, test_range=None,
                data_path=None, data_provider=None, multiview=None, echo=print) -> dict:
    """Write the picture; return its path and what it shows (batch, case, label, top classes)."""
    from .. import testing as T
    from .. import viz
    from ..errors import InputError

    if output is not None:
        viz.check_output(output)
    ckpt, net = T.load_model(load_file)
    logreg = T.find_logreg(net, logreg_name)
    if logreg is None:
        raise InputError("the net has no cost.logreg layer, so it makes no class predictions to show.")
    opts, batches = T.test_options(ckpt, data_path=data_path, data_provider=data_provider, test_range=test_range,
                                   multiview_test=multiview)
    mv = bool(opts.get("multiview_test"))
    dp = T.open_test_provider(opts, batches, multiview=mv, net=net)
    mini = int(opts.get("mini") or 128)
    loaded: dict = {}
    found: list = []  # (batch, case, label, probs)
    used = []
    try:
        for b in batches:
            probs, labels = [], []
            for mb in T.run_test(net, dp, [b], mini=mini, logreg=logreg, multiview=mv,
                                 on_load=lambda bb, data: loaded.__setitem__(bb, _first_view(data[0], mv))):
                probs.append(mb.probs)
                labels.append(mb.labels)
            p, y = np.concatenate(probs), np.concatenate(labels)
            pick = np.flatnonzero(p.argmax(axis=1) != y) if only_errors else np.arange(len(y))
            found += [(b, int(i), int(y[i]), p[i]) for i in pick]
            used.append(b)
            if len(found) >= num or not only_errors:
                break
            if not any(f[0] == b for f in found):
                loaded.pop(b, None)  # keep only the images of batches that give cases
    finally:
        close = getattr(dp, "close", None)
        if callable(close):
            close()
    where = f"test batch{'es' if len(used) > 1 else ''} {', '.join(str(b) for b in used)}"
    if not found:
        raise InputError(f"the net makes no errors on {where}, so --only-errors has nothing to show.")
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(len(found), size=min(num, len(found)), replace=False).tolist())
    sel = [found[i] for i in chosen]
    dims = net.data_dims.get(0, (1, 1, 1))
    images = np.stack([plottable(dp, loaded[b][i:i + 1], dims)[0] for b, i, _, _ in sel])
    probs = np.stack([s[3] for s in sel])
    labels = np.array([s[2] for s in sel])
    top, tp = T.top_classes(probs, 5)
    names = [n.split(",")[0] for n in T.label_names(dp, probs.shape[1])]
    if output is None:
        output = viz.check_output(f"{'errors' if only_errors else 'preds'}-{T.checkpoint_label(ckpt)}.png")
    kind = "Mistaken" if only_errors else "Random"
    fig = viz.plot_preds(images, labels, top, tp, names, f"{kind} test cases from {where} - checkpoint "
                         f"{T.checkpoint_label(ckpt)}" + (" (mean of 10 views; centre view shown)" if mv else ""))
    try:
        viz.save_figure(output, fig)
    finally:
        viz.pyplot().close(fig)
    right = int((top[:, 0] == labels).sum())
    pool = f"{len(found)} mistaken" if only_errors else f"{len(found)}"
    echo(f"{len(sel)} of {pool} cases of {where}; top-1 right on {right} of them")
    echo(f"Wrote {output}")
    return {"output": output, "batch": [s[0] for s in sel], "case": [s[1] for s in sel], "label": labels.tolist(),
            "top": top.tolist(), "prob": tp.tolist(), "pool": len(found)}
