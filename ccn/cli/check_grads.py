"""`ccn check-grads`: numerical gradient checks of a whole net (cuda-convnet's --check-grads=1).

Builds the net from its layer files, feeds it a random minibatch (class indices for the label
inputs of cost layers, values uniform in [0, 1) elsewhere), and compares every weight matrix's analytic
gradient (and, with --inputs, every data input's) with central finite differences. Each line
says PASS or FAIL by the original's rule: relative error below 2%. Exit code 1 if any fails.
"""

from __future__ import annotations

import click

from ..errors import CcnRuntimeError
from .options import SEED, Finite, net_file_options


@click.command("check-grads")
@net_file_options("Layer-params file; default: found next to --layers by the params-file rule.",
                  max_image_size=4096)
@click.option("--mini", type=click.IntRange(1, 4096), default=8, show_default=True, help="Cases in the random minibatch.")
@click.option("--samples", type=click.IntRange(1, 10**7), default=60, show_default=True,
              help="Entries checked per matrix (all of them when smaller).")
@click.option("--inputs/--no-inputs", default=True, show_default=True, help="Also check the gradients w.r.t. the data.")
@click.option("--threshold", type=Finite(0, min_open=True, max=1), default=0.02, show_default=True,
              help="Largest relative error that passes.")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of the weights and the random data.")
def check_grads(layers_path, params_path, image_size, data_dims, mini, samples, inputs, threshold, seed):
    """Check a net's gradients against finite differences (2% rule).

    \b
    Example:
      ccn check-grads --layers layer-defs/gradcheck.ini --image-size 8 --data-dims 2=10
    """
    from .. import gradcheck
    from ..net import Net, check_memory
    from ..netfiles import find_params_file, read_text
    from .show_net import infer_data_dims, parse_data_dims

    text = read_text(layers_path, "layer-definition file")
    params_path = find_params_file(layers_path, params_path)
    dims = infer_data_dims(layers_path, text, image_size, parse_data_dims(data_dims))
    net = Net(layers_path, params_path, dims, seed=seed, layers_text=text, init=False)
    check_memory(net, mini, "--mini")
    net.init_weights(seed)
    results = gradcheck.check_grads(net, cases=mini, samples=samples, seed=seed, threshold=threshold,
                                    inputs=inputs)
    width = max(len(r.name) for r in results) if results else 10
    click.echo(f"Gradient check of {layers_path}: {mini} random cases, threshold {threshold:.0%}, "
               f"steps {', '.join(f'{h:g}' for h in gradcheck.STEPS)}")
    for r in results:
        click.echo(f"  {r.name:<{width}}  {r.kind:<7}  {r.checked:>5} usable of {r.sampled:>5} sampled of {r.size:<8} "
                   + (f"rel. error {r.rel_error:.2e}" if r.checked else f"rel. error {'-':^8}") + f"  {r.verdict}")
    failed = [r for r in results if r.verdict == "FAIL"]
    unsure = [r for r in results if r.unsure]
    why = (f"{len(unsure)} could not be decided (UNSURE: {', '.join(r.name for r in unsure)}), so they are not "
           "verified: too few of their finite differences can be trusted at any two neighbouring steps, because "
           "float32 rounding swamps them (slopes too small, as with tiny initW) or ReLU or max-pooling kinks lie "
           "inside the steps (activations or biases near 0 at the scale of the step). Weights of order 0.1 to 1, "
           "nonzero biases and smooth neurons check best (layer-defs/gradcheck.ini, cuda-convnet's layers.gc.cfg).")
    if failed:
        raise CcnRuntimeError(f"{len(failed)} of {len(results)} gradient checks failed: "
                              + ", ".join(f"{r.name} ({r.rel_error:.1%})" for r in failed) + "."
                              + (" " + why if unsure else ""))
    if unsure:
        raise CcnRuntimeError(f"{len(results) - len(unsure)} of {len(results)} gradient checks passed and "
                              f"{why}")
    click.echo(f"All {len(results)} gradient checks passed.")
