"""The pictures of cuda-convnet's ``shownet.py``, written as PNG files (no window).

* :func:`layer_filters` + :func:`filter_grid`: a layer's filters as one image (``ccn
  show-filters``). Like shownet, 16 filters to a row (fewer when each filter shows its
  channels side by side, or when there are fewer filters), a 1-pixel black border around every tile, at most 256 filters per
  picture; 3-channel filters in colour unless ``no_rgb``, other channel counts side by side in
  grayscale. As in shownet, all the filters of the weight matrix are stretched to the full
  range together (so a dead filter is flat grey); ``norm_filters`` first brings each filter to
  zero mean and unit variance (cuda-convnet2's ``--norm-filters 1``). The grid is drawn in
  pixels (no plotting library) and then enlarged by a whole factor.
* :func:`cost_curves` + :func:`plot_cost`: one cost value of the training and test records
  saved in a checkpoint, against epochs (``ccn show-cost``).
* :func:`plot_preds`: test images with their true label and the model's top 5 as bars, the
  true label's bar in red (``ccn show-preds``).

Files are written atomically (temporary name in the same folder, then renamed).
"""

from __future__ import annotations

import io
import math
import os

import numpy as np

from .errors import InputError
from .fsutil import atomic_write, probe_writable

FILTERS_PER_ROW = 16
MAX_FILTERS = 256


# ---- output files ----------------------------------------------------------------------------
def check_output(path: str, what: str = "picture", option: str = "-o", suffix: str | None = ".png") -> str:
    """Make sure ``path`` can be written (its folder exists and takes a file: probed, since
    permissions do not tell on a read-only file system or for root) and, given ``suffix``, ends
    in it; return it."""
    path = os.path.expanduser(path)
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise InputError(f"{path}: is a folder; give a file name for the {what} ({option} FILE).")
    if suffix and os.path.splitext(path)[1].lower() != suffix:
        raise InputError(f"{path}: the {what}s are {suffix[1:].upper()} files; give a name ending in {suffix} "
                         f"({option} FILE{suffix}).")
    parent = folder
    while parent and not os.path.exists(parent) and os.path.dirname(parent) != parent:
        parent = os.path.dirname(parent)
    if os.path.exists(parent) and not os.path.isdir(parent):
        raise InputError(f"{path}: cannot write the {what} there: {parent} is a file, not a folder.")
    if not os.path.isdir(folder):
        raise InputError(f"{path}: cannot write the {what} there: the folder {folder} does not exist.")
    try:
        probe_writable(folder)
    except OSError as e:
        raise InputError(f"{path}: cannot write the {what} there: the folder {folder} is not writable "
                         f"({e.strerror or e}).") from None
    return path


def write_bytes(path: str, data: bytes) -> None:
    atomic_write(path, [data])


def save_png(path: str, image: np.ndarray) -> None:
    """An H x W (gray) or H x W x 3 uint8 array as a PNG, atomically."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    write_bytes(path, buf.getvalue())


def save_figure(path: str, fig) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    write_bytes(path, buf.getvalue())


def pyplot():
    """matplotlib.pyplot with the file-only Agg backend."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


# ---- filters ---------------------------------------------------------------------------------
def weight_layers(net) -> list[str]:
    return [l.name for l in net.layers if l.weights]


def layer_filters(net, layer_name: str, input_idx: int = 0, channels: int | None = None, module: int = 0):
    """The filters of one weight matrix as a ``filters x channels x size x size`` array, and a
    description. conv/local rows are ``c*fs^2 + y*fs + x`` (local: per module, the modules
    slowest); fc rows are the inputs, read as ``channels x s x s`` (``channels`` given, or the
    channels of the input when it is an image)."""
    from ._native import core

    layers = {l.name: l for l in net.layers}
    with_w = weight_layers(net)
    if layer_name not in layers:
        raise InputError(f"the net has no layer '{layer_name}'; layers with weights: {', '.join(with_w) or 'none'}.")
    layer = layers[layer_name]
    if not layer.weights:
        raise InputError(f"layer '{layer_name}' (type {layer.type}) has no weights to show; layers with weights: "
                         f"{', '.join(with_w) or 'none'}.")
    if not 0 <= input_idx < len(layer.weights):
        raise InputError(f"--input-idx {input_idx}: layer '{layer_name}' has {len(layer.weights)} weight "
                         f"matri{'x' if len(layer.weights) == 1 else 'ces'} (one per input: "
                         f"{', '.join(layer.inputs)}); give 0..{len(layer.weights) - 1}.")
    if module and layer.type != "local":
        raise InputError(f"--module {module}: layer '{layer_name}' has type {layer.type}; --module picks a module "
                         "of a local layer (unshared filters), leave it out for other layers.")
    w = np.asarray(net.get(layer.weights[input_idx]), np.float32)
    rows, nf = w.shape
    src = layers.get(layer.inputs[input_idx]) if input_idx < len(layer.inputs) else None
    if layer.type in ("conv", "local"):
        fsizes = core.netdef_get(net.layers_text, net.layers_path, layer_name, "filterSize", "int_list",
                                 len(layer.inputs), False)
        fs = int(fsizes[input_idx])
        per_module = rows
        desc = ""
        if layer.type == "local":
            modules = layer.shape[1] * layer.shape[2]
            if not 0 <= module < modules:
                raise InputError(f"--module {module}: layer '{layer_name}' has {modules} modules; give 0..{modules - 1}.")
            per_module = rows // modules
            w = w.reshape(modules, per_module, nf)[module]
            desc = f", module {module} of {modules}"
        fch = per_module // (fs * fs)
        if fch * fs * fs != per_module:
            raise InputError(f"layer '{layer_name}': {per_module} weights per filter are not channels x {fs}x{fs}.")
        if channels is not None and channels != fch:
            raise InputError(f"--channels {channels}: the filters of {layer.type} layer '{layer_name}' have {fch} "
                             "channels; --channels is for fc layers only.")
        return w.T.reshape(nf, fch, fs, fs), f"{layer.type} layer {layer_name}: {nf} filters of {fch} x {fs}x{fs}{desc}"
    if layer.type != "fc":
        raise InputError(f"layer '{layer_name}' has type {layer.type}; show-filters draws conv, local and fc layers.")
    if channels is None:
        channels = src.shape[0] if src is not None and src.shape[1] * src.shape[2] > 1 else 1
    if channels < 1 or rows % channels:
        raise InputError(f"--channels {channels}: fc layer '{layer_name}' has {rows} inputs per filter, not a "
                         "multiple of that.")
    px = rows // channels
    s = math.isqrt(px)
    if s * s != px:
        fits = [c for c in range(1, rows) if rows % c == 0 and math.isqrt(rows // c) ** 2 == rows // c]
        hint = (f"--channels {' or '.join(str(c) for c in fits[:4])} would make square images" if fits else
                "no number of channels makes square images of them, so they cannot be drawn as images")
        raise InputError(f"fc layer '{layer_name}' has {rows} inputs per filter = {channels} channel(s) x {px}, "
                         f"and {px} is not a square image; {hint}.")
    return w.T.reshape(nf, channels, s, s), f"fc layer {layer_name}: {nf} filters read as {channels} x {s}x{s}"


def normalise(filters: np.ndarray, per_filter: bool = False) -> np.ndarray:
    """All the filters stretched to 0..1 together, as shownet.py's plot_filters did
    (``filters - filters.min()``, then ``/ filters.max()``); all equal gives 0.5 everywhere.
    ``per_filter`` (cuda-convnet2's --norm-filters 1) first brings each filter, all its
    channels together, to zero mean and unit variance (a constant filter to all zeros, where
    the original divided by 0)."""
    f = filters.astype(np.float64)
    if per_filter:
        f = f - f.mean(axis=(1, 2, 3), keepdims=True)
        sd = f.std(axis=(1, 2, 3), keepdims=True)
        f = f / np.where(sd > 0, sd, 1)
    if f.size == 0:
        return f
    lo, hi = f.min(), f.max()
    return (f - lo) / (hi - lo) if hi > lo else np.full_like(f, 0.5)


def grid_geometry(nf: int, channels: int, size: int, rgb: bool) -> tuple[int, int, int, int]:
    """(filters per row, rows, height, width) of the unscaled grid of ``nf`` filters."""
    tiles = 1 if rgb else channels
    per_row = max(1, min(nf, math.ceil(FILTERS_PER_ROW / tiles)))
    nrows = math.ceil(nf / per_row)
    return per_row, nrows, nrows * (size + 1) + 1, per_row * (size * tiles + 1) + 1


def filter_grid(filters: np.ndarray, rgb: bool, start: int = 0, scale: int | None = None,
                norm_filters: bool = False) -> tuple[np.ndarray, int, int]:
    """Filters ``start .. start+255`` as a uint8 image (H x W x 3 with ``rgb`` and 3 channels,
    H x W otherwise), enlarged ``scale`` times (default: to about 512 pixels wide); the
    grey levels are those of :func:`normalise` over all of ``filters`` (the pictures of one
    layer from different --start share one scale, as shownet's did). Returns (image, first, last+1)."""
    nf, c, s, _ = filters.shape
    rgb = rgb and c == 3
    end = min(nf, start + MAX_FILTERS)
    sel = normalise(filters, per_filter=norm_filters)[start:end]
    per_row, nrows, h, w = grid_geometry(end - start, c, s, rgb)
    pic = np.zeros((h, w, 3) if rgb else (h, w), np.float64)
    for i in range(end - start):
        y, x = divmod(i, per_row)
        top = 1 + y * (s + 1)
        if rgb:
            left = 1 + x * (s + 1)
            pic[top:top + s, left:left + s, :] = sel[i].transpose(1, 2, 0)
        else:
            left = 1 + x * (s * c + 1)
            for ch in range(c):
                pic[top:top + s, left + ch * s:left + (ch + 1) * s] = sel[i, ch]
    if scale is None:
        scale = max(1, min(16, 512 // w))
    img = np.round(pic * 255).astype(np.uint8)
    img = np.repeat(np.repeat(img, scale, axis=0), scale, axis=1)
    return img, start, end


# ---- cost curves -----------------------------------------------------------------------------
def cost_curves(meta: dict, cost: str | None, cost_idx: int, names: dict[str, list[str]]):
    """(train x, train y, test x, test y, cost name, value name) from a checkpoint's history.
    x is in epochs: the k-th batch of epoch e ends at e - 1 + k / (batches of epoch e)."""
    hist = meta.get("history", {})
    train, test = hist.get("train", []), hist.get("test", [])
    if not train:
        raise InputError("the checkpoint holds no training records yet (it was saved before the first data batch "
                         "finished).")
    if not test:
        raise InputError("the checkpoint holds no test results (no test ran before it was saved: test batches are "
                         "run every --test-freq batches). Train on until a test has run, or use a later checkpoint.")
    recorded = list(train[-1]["costs"])
    if not recorded:
        raise InputError("the checkpoint records no cost values: its net has no cost layer.")
    if cost is None:
        cost = recorded[0]
    if cost not in recorded:
        raise InputError(f"--cost {cost}: the checkpoint records no cost layer '{cost}'; it records "
                         f"{', '.join(recorded)}.")
    vnames = names.get(cost) or [f"value {i}" for i in range(len(train[-1]["costs"][cost]))]
    nvals = len(train[-1]["costs"][cost])
    if not 0 <= cost_idx < nvals:
        listed = ", ".join(f"{i} = {n}" for i, n in enumerate(vnames[:nvals]))
        raise InputError(f"--cost-idx {cost_idx}: cost layer '{cost}' has {nvals} values ({listed}).")
    # x of a record: its epoch's start plus its share of that epoch. An epoch's size is the number of
    # batches trained in it once a later epoch began; the current one's is the range in force now (so a
    # run resumed on another --train-range keeps each epoch at its own size).
    now = len((meta.get("position") or {}).get("train_range") or []) or len({r["batch"] for r in train}) or 1
    last_epoch = max(int(r["epoch"]) for r in train)
    sizes: dict = {}
    for r in train:
        sizes[int(r["epoch"])] = sizes.get(int(r["epoch"]), 0) + 1
    seen: dict = {}
    where: dict = {}
    tx, ty = [], []
    for r in train:
        e = int(r["epoch"])
        seen[e] = seen.get(e, 0) + 1
        size = sizes[e] if e < last_epoch else max(now, sizes[e])
        x = (e - 1) + seen[e] / size
        where[(r["epoch"], r["batch"])] = x
        vals = r["costs"].get(cost)
        if vals is None or cost_idx >= len(vals):
            continue
        tx.append(x)
        ty.append(vals[cost_idx] / max(1, r["cases"]))
    ex, ey = [], []
    for r in test:
        vals = r["costs"].get(cost)
        x = where.get((r["epoch"], r["batch"]))
        if vals is None or x is None or cost_idx >= len(vals):
            continue
        ex.append(x)
        ey.append(vals[cost_idx] / max(1, r["cases"]))
    vname = vnames[cost_idx] if cost_idx < len(vnames) else f"value {cost_idx}"
    return np.array(tx), np.array(ty), np.array(ex), np.array(ey), cost, vname


def smooth_tests(ey, n: int) -> np.ndarray:
    """cuda-convnet2 shownet's --smooth-test-errors: value i becomes the mean of values
    max(0, i-n+1) .. i (``n`` = the number of test batches)."""
    ey = np.asarray(ey, dtype=np.float64)
    n = max(1, int(n))
    return np.array([ey[max(0, i + 1 - n):i + 1].mean() for i in range(len(ey))])


def plot_cost(tx, ty, ex, ey, cost: str, vname: str, title: str):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    ax.plot(tx, ty, "k-", lw=1, label="Training set")
    ax.plot(ex, ey, "r-", marker="o", ms=3, lw=1.5, label="Test set")
    ax.set_xlabel("Epoch")
    ax.set_ylabel(f"{cost}: {vname}")
    ax.set_title(title)
    ax.set_xlim(left=0)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


# ---- predictions -----------------------------------------------------------------------------
def _short(name: str, width: int) -> str:
    """A class name cut to ``width`` characters (with an ellipsis), so panels do not overlap."""
    return name if len(name) <= width else name[:width - 1] + "\u2026"


def plot_preds(images: np.ndarray, labels, top_idx, top_p, names: list[str], title: str, cols: int = 4):
    """images: N x H x W x C floats in 0..1 (C = 1 or 3); top_idx/top_p: N x k, most probable first."""
    plt = pyplot()
    from matplotlib import gridspec

    n = len(images)
    cols = max(1, min(cols, n))
    rows = math.ceil(n / cols)
    height = 3.6 * rows + 0.9
    fig = plt.figure(figsize=(3 * cols, height))
    fig.suptitle(title, fontsize=13, y=1 - 0.2 / height)
    gs = gridspec.GridSpec(rows * 2, cols, height_ratios=[2, 1.1] * rows, hspace=0.25, wspace=0.3,
                           top=1 - 0.75 / height, bottom=0.3 / height, left=0.03, right=0.97)
    k = top_idx.shape[1]
    for i in range(n):
        r, c = divmod(i, cols)
        ax = fig.add_subplot(gs[2 * r, c])
        img = images[i]
        if img.shape[2] == 1:
            ax.imshow(img[:, :, 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        else:
            ax.imshow(np.clip(img, 0, 1), interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ok = top_idx[i, 0] == labels[i]
        ax.set_title(_short(names[labels[i]], 22), fontsize=12, fontweight="bold", color="black" if ok else "#b00000")
        bx = fig.add_subplot(gs[2 * r + 1, c])
        ys = np.arange(k)[::-1]  # most probable on top
        colours = ["#ff7070" if top_idx[i, j] == labels[i] else "#9aa8ff" for j in range(k)]
        bx.barh(ys, top_p[i], height=0.8, color=colours)
        for j in range(k):
            # the probability first, so a long name never pushes it out of the panel
            bx.text(0.02, ys[j], f"{top_p[i, j]:.2f}  {_short(names[top_idx[i, j]], 26)}", va="center", fontsize=9,
                    fontweight="bold" if top_idx[i, j] == labels[i] else "normal")
        bx.set_xlim(0, 1)
        bx.set_ylim(-0.5, k - 0.5)
        bx.set_yticks([])
        bx.set_xticks([0, 0.5, 1])
        bx.tick_params(labelsize=7)
    return fig
