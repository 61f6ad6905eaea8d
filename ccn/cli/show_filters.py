"""`ccn show-filters`: a layer's learned filters as a PNG grid (shownet.py --show-filters).

See :mod:`ccn.viz` for the layout: 16 filters to a row, all stretched to 0..1 together as shownet
did (``--norm-filters`` first normalises each filter on its own), 3-channel filters in colour
(``--no-rgb`` puts the channels side by side in grayscale), fc
filters read as ``--channels`` x s x s images, at most 256 filters from ``--start``.
"""

from __future__ import annotations

import click

from .train import BOOL01


@click.command("show-filters")
@click.option("-f", "--load-file", "load_file", required=True, type=str,
              help="Checkpoint folder, or a save folder (its newest checkpoint).")
@click.option("--layer", "--show-filters", "layer", required=True, type=str, help="The layer whose filters to draw.")
@click.option("-o", "--output", type=str, help="PNG file to write. [filters-LAYER-CHECKPOINT.png]")
@click.option("--no-rgb", type=BOOL01, is_flag=False, flag_value="1", default=False, metavar="[0/1]",
              help="(A bare flag means 1.) Draw the channels of 3-channel filters side by side in grayscale, not as colour.")
@click.option("--norm-filters", type=BOOL01, is_flag=False, flag_value="1", default=False, metavar="[0/1]",
              help="(A bare flag means 1.) Bring each filter to zero mean and unit variance before the common "
              "stretch, as cuda-convnet2's shownet.py --norm-filters 1; by default all filters share one scale, so "
              "weak or dead filters look flat grey.")
@click.option("--channels", type=click.IntRange(1), help="Channels of an fc layer's filters. [its input's]")
@click.option("--input-idx", type=click.IntRange(0), default=0, show_default=True,
              help="Which weight matrix (input) of the layer.")
@click.option("--start", type=click.IntRange(0), default=0, show_default=True,
              help="First filter to draw (256 at most per picture).")
@click.option("--module", type=click.IntRange(0), default=0, show_default=True,
              help="For local layers: whose module's filters to draw.")
@click.option("--scale", type=click.IntRange(1, 64), help="Pixels per weight. [about 512 pixels wide]")
def show_filters(load_file, layer, output, no_rgb, norm_filters, channels, input_idx, start, module, scale):
    """Draw a layer's filters as a grid in a PNG file.

    \b
    ccn show-filters -f runs/a --layer conv1              # colour 5x5 filters
    ccn show-filters -f runs/a --layer conv1 --no-rgb     # channels side by side
    ccn show-filters -f runs/a --layer fc64 --channels 3  # an fc layer on images
    """
    write_filters(load_file, layer, output, no_rgb=no_rgb, channels=channels, input_idx=input_idx, start=start,
                  module=module, scale=scale, norm_filters=norm_filters, echo=click.echo)


def write_filters(load_file, layer, output=None, *, no_rgb=False, channels=None, input_idx=0, start=0, module=0,
                  scale=None, norm_filters=False, echo=print) -> str:
    from .. import testing as T
    from .. import viz
    from ..errors import InputError

    if output is not None:
        viz.check_output(output)
    ckpt, net = T.load_model(load_file)
    filters, desc = viz.layer_filters(net, layer, input_idx, channels, module)
    if start >= filters.shape[0]:
        raise InputError(f"--start {start}: layer '{layer}' has {filters.shape[0]} filters.")
    if output is None:
        # the options that change the picture are in its name, so pictures of one layer do not overwrite each other
        parts = [layer] + (["gray"] if no_rgb else []) + (["norm"] if norm_filters else []) + \
            ([f"in{input_idx}"] if input_idx else []) + \
            ([f"m{module}"] if module else []) + ([f"from{start}"] if start else [])
        output = viz.check_output(f"filters-{'-'.join(parts)}-{T.checkpoint_label(ckpt)}.png")
    img, first, end = viz.filter_grid(filters, rgb=not no_rgb, start=start, scale=scale, norm_filters=norm_filters)
    viz.save_png(output, img)
    colour = "colour" if img.ndim == 3 else "grayscale"
    echo(f"{desc}; filters {first}-{end - 1} in {colour}, {img.shape[1]}x{img.shape[0]} pixels")
    echo(f"Wrote {output}")
    return output
