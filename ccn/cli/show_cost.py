"""`ccn show-cost`: training and test cost curves of a checkpoint, as a PNG (shownet.py --show-cost).

``--smooth-test-errors 1`` is cuda-convnet2's shownet option: each test value becomes the mean
of the last N tests (fewer at the start), N the number of batches in the run's --test-range, so
that with --test-one 1 (one test batch in turn) the curve shows the whole test set's trend.
cuda-convnet2 smoothed by default, cuda-convnet's 2012 shownet never; ccn plots the tests as
recorded unless asked."""

from __future__ import annotations

import click

from .train import BOOL01


@click.command("show-cost")
@click.option("-f", "--load-file", "load_file", required=True, type=str,
              help="Checkpoint folder, or a save folder (its newest checkpoint).")
@click.option("--cost", "--show-cost", "cost", type=str, help="The cost layer to plot. [the first one]")
@click.option("--cost-idx", type=click.IntRange(0), default=0, show_default=True,
              help="Which of its values (cost.logreg: 0 logprob, 1 error, 2 top-k error).")
@click.option("--smooth-test-errors", type=BOOL01, is_flag=False, flag_value="1", default=False, metavar="[0/1]",
              help="(A bare flag means 1.) Plot each test as the mean of the last N tests, N the number of test "
              "batches, as cuda-convnet2's shownet.py --smooth-test-errors 1 (its default; cuda-convnet's 2012 "
              "shownet had no smoothing). [0]")
@click.option("-o", "--output", type=str, help="PNG file to write. [cost-COST-IDX-CHECKPOINT.png]")
def show_cost(load_file, cost, cost_idx, smooth_test_errors, output):
    """Plot one cost value of the training batches and the tests against epochs.

    \b
    ccn show-cost -f runs/a                  # logprob
    ccn show-cost -f runs/a --cost-idx 1     # the classification error
    """
    write_cost(load_file, cost, cost_idx, output, smooth=smooth_test_errors, echo=click.echo)


def write_cost(load_file, cost=None, cost_idx=0, output=None, smooth=False, echo=print) -> str:
    from .. import testing as T
    from .. import viz
    from ..batchrange import parse_range

    if output is not None:
        viz.check_output(output)
    ckpt, net = T.load_model(load_file)
    tx, ty, ex, ey, cost, vname = viz.cost_curves(ckpt.meta, cost, cost_idx, T.cost_names(net))
    note = ""
    if smooth:
        n = len(parse_range(ckpt.options["test_range"], "--test-range")) if ckpt.options.get("test_range") else 1
        ey = viz.smooth_tests(ey, n)
        note = f", test values smoothed over the last {n}"
    if output is None:
        output = viz.check_output(f"cost-{cost}-{cost_idx}{'-smooth' if smooth else ''}-"
                                  f"{T.checkpoint_label(ckpt)}.png")
    fig = viz.plot_cost(tx, ty, ex, ey, cost, vname, f"{cost}[{cost_idx}] ({vname}) - checkpoint {ckpt.path}")
    try:
        viz.save_figure(output, fig)
    finally:
        viz.pyplot().close(fig)
    echo(f"{cost} {vname}: {len(ty)} training batches (last {ty[-1]:.6f}), {len(ey)} tests (last {ey[-1]:.6f}"
         f"{note}), {tx[-1]:.2f} epochs")
    echo(f"Wrote {output}")
    return output
