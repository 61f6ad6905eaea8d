"""`ccn import-checkpoint`: a checkpoint of the original cuda-convnet or cuda-convnet2 as a ccn
checkpoint, to test, show or train on from there (see :mod:`ccn.legacy`)."""

from __future__ import annotations

import os

import click

from .options import check_seed


@click.command("import-checkpoint")
@click.argument("source", type=str)
@click.option("--save-path", required=True, type=str,
              help="Run folder to write the ccn checkpoint into (it is named EPOCH.BATCH, as the original).")
@click.option("--layers", "--layer-def", "layers", type=str,
              help="The original layer-definition file. [the one its options name, or a file of that name next to "
                   "the checkpoint]")
@click.option("--params", "--layer-params", "params", type=str,
              help="The original layer-params file. [likewise]")
@click.option("--data-path", type=str,
              help="ccn batches (ccn prepare-data) to train and test on from now on. [the original data path]")
@click.option("--seed", type=int, help="Seed for ccn's augmentation and dropout from now on. [random]")
def import_checkpoint(source, save_path, layers, params, data_path, seed):
    """Turn a cuda-convnet (2012) or cuda-convnet2 (2014) checkpoint into a ccn checkpoint.

    SOURCE is a checkpoint file (named like 12.3; cuda-convnet's --zip-save files too) or the
    folder holding them (ConvNet__...: its newest, as the original -f). Nothing in it is
    executed: the pickle is read with a whitelist. The weights, momentum increments, options,
    training position and cost history carry over; the layer files are needed as well.

    \b
    ccn import-checkpoint /storage/ConvNet__2014-07-01_12.00.00 --save-path runs/old \\
        --layers layers-imagenet-1gpu.cfg --params layer-params-imagenet-1gpu.cfg
    ccn test -f runs/old --data-path data/ilsvrc        # its test error under ccn
    ccn train -f runs/old --data-path data/ilsvrc       # train on from the next batch
    """
    from .. import checkpoint as ck
    from .. import legacy
    from ..errors import InputError

    if seed is not None:
        check_seed(seed)
    if data_path and not os.path.isdir(data_path):
        raise InputError(f"{data_path}: the data path does not exist or is not a folder (--data-path).")
    orig = legacy.read(source)
    ckpt, notes = legacy.convert(orig, layers=layers, params=params, data_path=data_path, seed=seed)
    held = ck.list_checkpoints(save_path)
    if held or os.path.exists(os.path.join(save_path, orig.name)):
        raise InputError(f"{save_path} holds checkpoints already ({os.path.basename(held[-1]) if held else orig.name}); "
                         "give a new or empty --save-path: a save folder holds one run's history, and nothing is "
                         "overwritten.")
    ck.check_writable(save_path)
    path = ck.write(save_path, orig.name, ckpt)
    pos, hist, opts = ckpt.position, ckpt.meta["history"], ckpt.options
    nweights = sum(int(v.size) for k, v in ckpt.arrays.items() if k.startswith("w/"))
    echo = click.echo
    echo(f"Read the {orig.dialect} checkpoint {orig.path}: epoch {orig.epoch}, data batch {orig.batchnum}, "
         f"{pos['batches_done']} data batches trained")
    for n in notes:
        echo(f"  {n}")
    echo(f"  layer files {opts['layers']} and {opts['params']}")
    echo(f"  {len(ckpt.net_meta['params'])} parameter matrices, {nweights} weights, with their momentum increments")
    echo(f"  history: {len(hist['train'])} training batches, {len(hist['test'])} tests")
    echo(f"Wrote {path}")
    dp = opts.get("data_path")
    if not dp or not os.path.isdir(dp):
        echo(f"The data it was trained on ({dp or 'not saved'}) is not here: give ccn test / ccn train the same "
             "data as ccn batches with --data-path (ccn prepare-data cifar / imagenet / folder ... writes them).")
        dp_arg = " --data-path DATA"
    else:
        dp_arg = ""
    echo(f"Next: ccn test -f {save_path}{dp_arg}    or    ccn train -f {save_path}{dp_arg}")
