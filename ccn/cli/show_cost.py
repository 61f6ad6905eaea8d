"""`ccn show-cost`: training and test cost curves of a checkpoint, as a PNG (shownet.py --show-cost)."""

from __future__ import annotations

import click


@click.command("show-cost")
@click.option("-f", "--load-file", "load_file", required=True, type=str,
              help="Checkpoint folder, or a save folder (its newest checkpoint).")
@click.option("--cost", "--show-cost", "cost", type=str, help="The cost layer to plot. [the first one]")
@click.option("--cost-idx", type=click.IntRange(0), default=0, show_default=True,
              help="Which of its values (cost.logreg: 0 logprob, 1 error, 2 top-k error).")
@click.option("-o", "--output", type=str, help="PNG file to write. [cost-COST-IDX-CHECKPOINT.png]")
def show_cost(load_file, cost, cost_idx, output):
    """Plot one cost value of the training batches and the tests against epochs.

    \b
    ccn show-cost -f runs/a                  # logprob
    ccn show-cost -f runs/a --cost-idx 1     # the classification error
    """
    write_cost(load_file, cost, cost_idx, output, echo=click.echo)


def write_cost(load_file, cost=None, cost_idx=0, output=None, echo=print) -> str:
    from .. import testing as T
    from .. import viz

    if output is not None:
        viz.check_output(output)
    ckpt, net = T.load_model(load_file)
    tx, ty, ex, ey, cost, vname = viz.cost_curves(ckpt.meta, cost, cost_idx, T.cost_names(net))
    if output is None:
        output = viz.check_output(f"cost-{cost}-{cost_idx}-{T.checkpoint_label(ckpt)}.png")
    fig = viz.plot_cost(tx, ty, ex, ey, cost, vname, f"{cost}[{cost_idx}] ({vname}) - checkpoint {ckpt.path}")
    try:
        viz.save_figure(output, fig)
    finally:
        viz.pyplot().close(fig)
    echo(f"{cost} {vname}: {len(ty)} training batches (last {ty[-1]:.6f}), {len(ey)} tests (last {ey[-1]:.6f}), "
         f"{tx[-1]:.2f} epochs")
    echo(f"Wrote {output}")
    return output
