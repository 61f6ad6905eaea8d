"""`ccn show-net`: a net's layers, shapes, parameter counts and forward cost, from its layer files.

The data layers' sizes come from a data provider in cuda-convnet; here they come from options:

* ``--data-dims IDX=CxHxW`` or ``IDX=N`` sets dataIdx IDX exactly (repeatable);
* ``--image-size N`` makes every image data layer ``C x N x N``, with C read from the
  ``channels=`` key of the layers that take that data layer as input;
* a data layer that only feeds cost layers holds labels: 1 value per case.

Anything else is an error that says which option to give.
"""

from __future__ import annotations

import os
import re

import click

from ..errors import ConfigError, InputError
from .options import net_file_options

_DIMS = re.compile(r"^\s*(\d+)\s*=\s*(\d+)(?:\s*[xX]\s*(\d+)\s*[xX]\s*(\d+))?\s*$")
_MAX_VALUES = 2**31 - 1


def parse_data_dims(specs) -> dict[int, tuple[int, int, int]]:
    out = {}
    for s in specs:
        m = _DIMS.match(s)
        if not m:
            raise InputError(f"--data-dims '{s}': expected IDX=CxHxW (e.g. 0=3x32x32) or IDX=N (e.g. 1=1).")
        idx = int(m.group(1))
        c = int(m.group(2))
        h, w = (int(m.group(3)), int(m.group(4))) if m.group(3) else (1, 1)
        if min(c, h, w) < 1 or c * h * w > _MAX_VALUES:
            raise InputError(f"--data-dims '{s}': every size must be at least 1 and the product at most "
                             f"{_MAX_VALUES}.")
        if idx in out:
            raise InputError(f"--data-dims gives dataIdx {idx} twice.")
        out[idx] = (c, h, w)
    return out


def infer_data_dims(layers_path: str, text: str, image_size: int | None, given: dict) -> dict:
    """Per-case shapes of the data layers, from the options and the layers that read them."""
    from .._native import core
    from ..net import LABEL_COSTS

    secs, lines = {}, {}
    for name, _line, entries in core.parse_config(text, layers_path):
        secs[name] = {k.lower(): v for k, v, _ in entries}
        lines[name] = {k.lower(): ln for k, _, ln in entries}
    consumers: dict[str, list[str]] = {}
    for name, keys in secs.items():
        for inp in keys.get("inputs", "").split(","):
            consumers.setdefault(inp.strip(), []).append(name)
    dims = dict(given)
    known = set()
    for keys in secs.values():
        if keys.get("type") == "data":
            try:
                known.add(int(keys.get("dataidx", "")))
            except ValueError:
                pass
    extra = sorted(set(given) - known)
    if extra:
        raise InputError(f"--data-dims {extra[0]}=...: {layers_path} has no data layer with dataIdx={extra[0]} (its data "
                         f"layers have dataIdx {', '.join(map(str, sorted(known))) or 'none'}).")
    for name, keys in secs.items():
        if keys.get("type") != "data":
            continue
        try:
            idx = int(keys.get("dataidx", ""))
        except ValueError:
            continue  # the net reports the bad dataIdx with its line
        if idx in dims:
            continue
        users = consumers.get(name, [])
        as_labels = [u for u in users if secs[u].get("type", "").lower() in LABEL_COSTS
                     and secs[u].get("inputs", "").split(",")[0].strip() == name]
        as_images = [u for u in users if not secs[u].get("type", "").lower().startswith("cost.")]
        if as_labels and as_images:
            u = as_images[0]
            raise ConfigError(f"{layers_path}:{lines[u].get('inputs', 0)}: in section [{u}], key 'inputs': layer "
                              f"'{u}' (type={secs[u].get('type')}) reads data layer '{name}', which holds the labels "
                              f"of cost layer '{as_labels[0]}' ({LABEL_COSTS[secs[as_labels[0]]['type'].lower()]}); it "
                              f"should read the images' data layer. (If that is meant, give the layer's size with "
                              f"--data-dims {idx}=CxHxW.)")
        if not users or all(secs[u].get("type", "").startswith("cost.") for u in users):
            dims[idx] = (1, 1, 1)  # labels (or an unused data layer)
            continue
        chans = {}
        for u in users:
            if "channels" in secs[u]:
                first = secs[u]["channels"].split(",")[0].strip()
                if first.isdigit() and int(first) > 0:
                    chans[u] = int(first)
        if not chans:
            raise InputError(
                f"cannot tell the size of data layer '{name}' (dataIdx={idx}) in {layers_path}: the layers that read "
                f"it ({', '.join(users)}) have no channels= key. Give it with --data-dims {idx}=CxHxW or "
                f"--data-dims {idx}=N (N values per case).")
        if len(set(chans.values())) > 1:
            listed = ", ".join(f"{u} channels={c}" for u, c in chans.items())
            raise InputError(f"the layers that read data layer '{name}' (dataIdx={idx}) disagree on its channels "
                             f"({listed}); give its size with --data-dims {idx}=CxHxW.")
        (user, c), = list(chans.items())[:1]
        if image_size is None:
            raise InputError(
                f"data layer '{name}' (dataIdx={idx}) holds images with {c} channel{'s' if c != 1 else ''} "
                f"(channels= of layer '{user}') but their size is not known: give it with --image-size N "
                f"(e.g. 32 for CIFAR-10, 224 for ImageNet) or --data-dims {idx}={c}xNxN.")
        dims[idx] = (c, image_size, image_size)
    return dims


def _fmt_count(n: int) -> str:
    return f"{n:,}"


@click.command("show-net")
@net_file_options("Layer-params file; default: found next to --layers by the params-file rule (optional here).",
                  max_image_size=65536)
def show_net(layers_path, params_path, image_size, data_dims):
    """Show a net's layers: type, inputs, output shape, parameters and forward MFLOPs per case.

    \b
    Examples:
      ccn show-net --layers layer-defs/alexnet.ini --image-size 224
      ccn show-net --layers layers-18pct.cfg --data-dims 0=3x32x32
    """
    from rich.console import Console
    from rich.table import Table

    from ..net import Net
    from ..netfiles import find_params_file, read_text

    text = read_text(layers_path, "layer-definition file")
    note = None
    if params_path is None:
        try:
            params_path = find_params_file(layers_path)
        except InputError:
            note = "none found next to the layer file; the net is shown without one."
    else:
        params_path = find_params_file(layers_path, params_path)
    dims = infer_data_dims(layers_path, text, image_size, parse_data_dims(data_dims))
    net = Net(layers_path, params_path, dims, layers_text=text, init=False)

    params = net.params
    own: dict[str, int] = {}
    shares: set[str] = set()
    for p in params:
        own[p.layer] = own.get(p.layer, 0) + p.shape[0] * p.shape[1]
    layers = net.layers
    for l in layers:
        if any(not w.startswith(l.name + ".") for w in l.weights):
            shares.add(l.name)

    table = Table(title=f"{os.path.basename(layers_path)}" + (f" + {os.path.basename(params_path)}" if params_path else ""),
                  title_justify="left")
    table.add_column("layer", no_wrap=True)
    table.add_column("type", no_wrap=True)
    table.add_column("inputs")
    table.add_column("output (C x H x W)", justify="right", no_wrap=True)
    table.add_column("params", justify="right", no_wrap=True)
    table.add_column("fwd MFLOPs/case", justify="right", no_wrap=True)
    total_flops = 0.0
    for l in layers:
        typ = l.type + (f" ({l.neuron})" if l.neuron else "")
        c, h, w = l.shape
        shape = "-" if l.is_cost else f"{c} x {h} x {w}"
        n = own.get(l.name, 0)
        pc = _fmt_count(n) if n else ("-" if l.name not in shares else "0")
        if l.name in shares:
            pc += " + shared"
        total_flops += l.flops_per_case
        table.add_row(l.name, typ, ", ".join(l.inputs), shape, pc, f"{l.flops_per_case / 1e6:,.3f}")
    total_params = sum(p.shape[0] * p.shape[1] for p in params)
    table.add_section()
    table.add_row(f"total ({len(layers)} layers)", "", "", "", _fmt_count(total_params), f"{total_flops / 1e6:,.3f}")

    console = Console(width=None if Console().is_terminal else 160, highlight=False)
    console.print(table)
    dd = ", ".join(f"{i}: {'x'.join(map(str, d))}" for i, d in sorted(dims.items()))
    console.print(f"data (dataIdx: C x H x W per case): {dd}")
    if note:
        console.print(f"params: {note}")
    if net.gpus_needed > 1:
        from ..layout import layout_of

        console.print(f"this net needs {net.gpus_needed} GPUs (gpu= in {layers_path}): "
                      f"{layout_of(net).describe()}. On the CPU, ccn train simulates the layout in one process; "
                      "training it across GPUs is not supported yet.")
    else:
        console.print("GPUs: 1")
