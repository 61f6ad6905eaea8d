"""Option types shared by the commands, so that every command refuses the same bad values
with the same words (Click prints them as usage errors, exit code 2).

* :data:`SEED`: a seed is a non-negative integer below 2**63 (NumPy's generators refuse
  negative seeds; the core keeps it as an unsigned 64-bit number).
* :data:`THREADS` / :func:`check_threads`: 1 .. :data:`MAX_THREADS` CPU threads. Far more
  threads than that make OpenMP fail to start them, which ends the process without a word.
* :class:`Finite`: a float that must be finite (``nan`` and ``inf`` parse as floats but make
  no sense for a learning rate, a noise level or a size), optionally with a lower bound.
"""

from __future__ import annotations

import math

import click

from ..errors import InputError

MAX_SEED = 2**63 - 1
MAX_THREADS = 4096

SEED = click.IntRange(0, MAX_SEED)
THREADS = click.IntRange(1, MAX_THREADS)


def check_threads(n, option: str = "--threads") -> int:
    """``n`` as an int in 1..MAX_THREADS, else an InputError naming ``option``."""
    try:
        v = int(n)
    except (TypeError, ValueError):
        raise InputError(f"{option} must be a whole number of threads, got {n!r}.") from None
    if not 1 <= v <= MAX_THREADS:
        raise InputError(f"{option} must be between 1 and {MAX_THREADS}, got {n}.")
    return v


def check_seed(n, option: str = "--seed") -> int:
    try:
        v = int(n)
    except (TypeError, ValueError):
        raise InputError(f"{option} must be a whole number, got {n!r}.") from None
    if not 0 <= v <= MAX_SEED:
        raise InputError(f"{option} must be between 0 and 2**63-1, got {n}.")
    return v


class Finite(click.ParamType):
    """A finite float, optionally ``>= min`` (or ``> min`` with ``min_open``) and ``<= max``."""

    name = "float"

    def __init__(self, min: float | None = None, min_open: bool = False, max: float | None = None,
                 extra: tuple = ()):
        self.min = min
        self.min_open = min_open
        self.max = max
        self.extra = tuple(extra)  # values allowed besides the range (e.g. -1 meaning "off")

    def convert(self, value, param, ctx):
        if isinstance(value, float) and math.isfinite(value) and self._in_range(value):
            return value
        try:
            v = float(value)
        except (TypeError, ValueError):
            self.fail(f"'{value}' is not a number.", param, ctx)
        if not math.isfinite(v):
            self.fail(f"'{value}' is not a finite number.", param, ctx)
        if not self._in_range(v):
            bound = " and ".join(b for b in (
                None if self.min is None else f"{'above' if self.min_open else 'at least'} {self.min:g}",
                None if self.max is None else f"at most {self.max:g}") if b)
            also = "".join(f" (or {x:g})" for x in self.extra)
            self.fail(f"{v:g} is out of range: give a number {bound}{also}.", param, ctx)
        return v

    def _in_range(self, v: float) -> bool:
        if v in self.extra:
            return True
        if self.max is not None and v > self.max:
            return False
        if self.min is None:
            return True
        return v > self.min if self.min_open else v >= self.min


def net_file_options(params_help: str, max_image_size: int):
    """The options that name a net's files and its data sizes without a dataset:
    --layers (or --layer-def), --params (or --layer-params), --image-size and --data-dims (see
    ccn.cli.show_net for the rules)."""

    def decorate(f):
        for opt in reversed([
            # --layer-def / --layer-params: cuda-convnet's names, as ccn train takes them
            click.option("--layers", "--layer-def", "layers_path", required=True, type=click.Path(dir_okay=False),
                         help="Layer-definition file (layers-*.cfg or *.ini)."),
            click.option("--params", "--layer-params", "params_path", type=click.Path(dir_okay=False), default=None,
                         help=params_help),
            click.option("--image-size", type=click.IntRange(1, max_image_size), default=None,
                         help="Image data layers are CxNxN, C from the channels= of the layers that read them."),
            click.option("--data-dims", multiple=True, metavar="IDX=CxHxW|IDX=N",
                         help="Per-case size of dataIdx IDX (repeatable); overrides --image-size. "
                              "Labels default to 1."),
        ]):
            f = opt(f)
        return f

    return decorate
