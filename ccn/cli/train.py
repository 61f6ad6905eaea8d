"""`ccn train`: train a net from its layer files on numbered data batches (cuda-convnet's convnet.py).

Options keep cuda-convnet's names (``--layer-def``, ``--layer-params``, ``--mini``,
``--test-one 0``, ...) next to the modern spellings. ``-f/--load-file`` resumes from a
checkpoint (or a save folder: its newest checkpoint); the options saved there are used
unless given again. See :mod:`ccn.train` for the loop, :mod:`ccn.checkpoint` for the
checkpoint format and :mod:`ccn.netedit` for ``--conv-to-local`` / ``--unshare-weights``.

The data provider: ``--data-provider`` unset (or one of cuda-convnet's names ``cifar``,
``image``, ``default``) uses ``ccn.data.provider.open_provider``, which detects the kind of
data from the batch metadata; ``--data-provider MODULE:FUNCTION`` uses your own function
with the same signature (``FUNCTION(data_path, batch_range, *, train, options)``).
"""

from __future__ import annotations

import importlib
import math
import os
import secrets
import sys
from dataclasses import dataclass

import click

from ..batchrange import format_range, parse_range  # noqa: F401 (parse_range: ccn.cli.train's API)
from ..errors import CcnRuntimeError, ConfigError, InputError
from .options import check_seed, check_threads

DEFAULTS = {
    "data_path": None, "data_provider": None, "train_range": None, "test_range": None,
    "epochs": 50000, "mini": 128, "test_freq": 57, "test_one": True, "save_path": None,
    "max_filesize": 5000.0, "conv_to_local": "", "unshare_weights": "", "inner_size": 0,
    "color_noise": 0.0, "scalar_mean": -1.0, "multiview_test": False, "force_save": False,
    "layers": None, "params": None, "layer_path": "", "seed": None, "threads": None,
    "device": "cpu", "gpu": None,
}
PATH_OPTIONS = ("data_path", "save_path")
KNOWN_PROVIDERS = ("default", "auto", "cifar", "cifar-cropped", "image", "imagenet")
# cuda-convnet options that became commands of their own (or mean nothing here): what to say
REDIRECTED = {
    "test_only": "testing a checkpoint is its own command in ccn: ccn test -f CHECKPOINT (it takes --test-range, "
                 "--multiview-test, --test-out, --write-features)",
    "check_grads": "gradient checks are their own command in ccn: ccn check-grads --layers FILE",
    "write_features": "writing a layer's outputs is part of testing in ccn: ccn test -f CHECKPOINT --write-features "
                      "LAYER --feature-path DIR",
    "feature_path": "writing a layer's outputs is part of testing in ccn: ccn test -f CHECKPOINT --write-features "
                    "LAYER --feature-path DIR",
    "test_out": "per-case test predictions are written by ccn test -f CHECKPOINT --test-out FILE.npz (or .csv)",
}
IGNORED = {
    "logreg_name": "ccn train's tests (multiview too) report every cost layer; ccn test -f CHECKPOINT --logreg-name "
                   "NAME picks the one whose predictions it writes",
    "zip_save": "checkpoints are .npz archives (float weights barely compress)",
    "conserve_mem": "ccn keeps no spare copies to free (see the memory estimate ccn train prints on failure)",
}
NUM_GPUS_NOTE = ("ccn runs one process on one device: --gpu INDEX (or --device cuda) puts it on a GPU, the CPU is "
                 "the default; to spread training over several processes or machines, run data-parallel MPI ranks "
                 "(mpiexec -n N ccn train ..., on CPUs for now)")


def check_num_gpus(n) -> None:
    """cuda-convnet's --num-gpus: 1 (or 0) is what ccn does anyway (a note); more is refused."""
    if n is None:
        return
    if n > 1:
        raise InputError(f"--num-gpus {n}: running one net on several GPUs at once is not implemented; "
                         f"{NUM_GPUS_NOTE}.")
    click.echo(f"note: --num-gpus is accepted for cuda-convnet's command lines and has no effect: {NUM_GPUS_NOTE}.",
               err=True)


class Bool01(click.ParamType):
    """cuda-convnet's 0/1 booleans (true/false/yes/no accepted too)."""

    name = "0/1"

    def convert(self, value, param, ctx):
        if isinstance(value, bool):
            return value
        s = str(value).strip().lower()
        if s in ("1", "true", "yes", "on"):
            return True
        if s in ("0", "false", "no", "off"):
            return False
        self.fail(f"expected 0 or 1, got '{value}'.", param, ctx)


BOOL01 = Bool01()


@dataclass
class _FallbackProviderOptions:  # the contract's ProviderOptions, for plugin modules without one
    inner_size: int = 0
    color_noise: float = 0.0
    scalar_mean: float | None = None
    multiview: bool = False
    seed: int = 0
    threads: int = 0


def _provider_module(name: str | None, near: str | None = None):
    """The module whose open_provider (or the MODULE:FUNCTION given) opens the data; the user's
    module is also looked for in the current folder and next to ``near`` (the layer file)."""
    if name and ":" in name:
        from ..plugins import import_user_module

        mod_name, func = name.split(":", 1)
        try:
            mod = import_user_module(mod_name, near)
            fn = getattr(mod, func)
        except (ImportError, AttributeError) as e:
            raise InputError(f"--data-provider {name}: cannot load '{func}' from module '{mod_name}' ({e}).") from e
        except Exception as e:  # the module itself fails on import: the user's code, not ccn's
            raise InputError(f"--data-provider {name}: importing module '{mod_name}' failed: "
                             f"{type(e).__name__}: {e}. Rerun with --debug for the traceback.") from e
        if not callable(fn):
            raise InputError(f"--data-provider {name}: '{func}' in module '{mod_name}' is a {type(fn).__name__}, "
                             "not a function; give MODULE:FUNCTION with FUNCTION(data_path, batch_range, *, train, "
                             "options).")
        return mod, _plugin_call(name, fn)
    if name and name.lower().startswith("dummy-"):  # cuda-convnet2's dummy-lr-N / dummy-cn-N (python_util/data.py)
        raise InputError(f"--data-provider {name}: cuda-convnet2's dummy providers (dummy-lr-N, dummy-cn-N: random "
                         "data with random labels, for debugging its own code) are not part of ccn. To check a net's "
                         "gradients on random data use ccn check-grads --layers FILE; for a small dataset without a "
                         "download, ccn prepare-data builtin --out DIR and then --data-path DIR; or give your own "
                         "provider as --data-provider MODULE:FUNCTION.")
    if name and name.lower() not in KNOWN_PROVIDERS:
        raise InputError(f"--data-provider: unknown provider '{name}'. Leave it out to detect the kind of data from "
                         f"the batch metadata ({', '.join(KNOWN_PROVIDERS)} do the same), or give MODULE:FUNCTION "
                         "for your own provider.")
    try:
        mod = importlib.import_module("ccn.data.provider")
    except ImportError as e:
        raise CcnRuntimeError(f"the data providers (ccn.data.provider) are not available in this build of ccn ({e}); "
                              "give your own with --data-provider MODULE:FUNCTION.") from e
    return mod, mod.open_provider


def _plugin_call(name: str, fn):
    """``fn`` (the user's provider function) with its failures reported as the provider's, not
    ccn's, and the provider it returns wrapped the same way (see _PluginProvider)."""
    import functools

    from ..errors import CcnError

    @functools.wraps(fn)
    def call(*args, **kw):
        try:
            dp = fn(*args, **kw)
        except CcnError:
            raise
        except Exception as e:
            raise CcnRuntimeError(f"--data-provider {name}: the provider function failed: {type(e).__name__}: {e}. "
                                  "Rerun with --debug for the traceback.") from e
        if dp is None:
            raise InputError(f"--data-provider {name}: the function returned None; it must return a provider object "
                             "(load, num_cases, data_dims, batch_nums: see ccn/data/provider.py).")
        return _PluginProvider(name, dp)

    return call


class _PluginProvider:
    """The user's provider, its failures named as its own: a method that raises is an InputError
    naming the provider and the call (so training saves what it trained before it, as for any
    data error), and a missing method of the contract is named instead of an AttributeError."""

    REQUIRED = ("load", "num_cases", "data_dims", "batch_nums")

    def __init__(self, name: str, dp):
        self._name, self._dp = name, dp

    def __getattr__(self, attr):
        try:
            value = getattr(self._dp, attr)
        except AttributeError:
            if attr in self.REQUIRED:
                raise InputError(f"--data-provider {self._name}: the provider ({type(self._dp).__name__}) has no "
                                 f"'{attr}', which ccn needs (the contract: load(batch, epoch), num_cases(batch), "
                                 "data_dims(), batch_nums; see ccn/data/provider.py).") from None
            raise
        if not callable(value):
            return value
        from ..errors import CcnError

        def call(*args, **kw):
            try:
                return value(*args, **kw)
            except CcnError:
                raise
            except Exception as e:
                shown = ", ".join(repr(a) for a in args)
                raise InputError(f"--data-provider {self._name}: the provider's {attr}({shown}) failed: "
                                 f"{type(e).__name__}: {e}. Rerun with --debug for the traceback.") from e
        return call


def _given(ctx, name) -> bool:
    src = ctx.get_parameter_source(name)
    return src is not None and src.name in ("COMMANDLINE", "ENVIRONMENT")


@click.command(context_settings={"show_default": False})
@click.option("--data-path", type=str, help="Folder of the data batches (data_batch_N + batches.meta.json).")
@click.option("--data-provider", type=str,
              help="Data provider: detected from the batch metadata if left out; MODULE:FUNCTION for your own.")
@click.option("--train-range", type=str, help="Training data batches, e.g. 1-5.")
@click.option("--test-range", type=str, help="Test data batches, e.g. 6.")
@click.option("--epochs", type=int, help="Number of epochs (passes over the train batches). [50000]")
@click.option("--mini", "--minibatch", "mini", type=int, help="Minibatch size (cases per weight update). [128]")
@click.option("--test-freq", type=int, help="Test and save a checkpoint every this many data batches. [57]")
@click.option("--test-one", type=BOOL01, is_flag=False, flag_value="1",
              help="1: test on one test batch in turn; 0: on all of them. [1]")
@click.option("--save-path", "--save-file", "save_path", type=str,
              help="Folder for the checkpoints (one sub-folder per checkpoint).")
@click.option("--max-filesize", type=float,
              help="Keep only as many checkpoints as fit in this many MiB (the newest always stays; 0 keeps only "
              "the newest, as cuda-convnet did). [5000]")
@click.option("-f", "--load-file", type=str,
              help="Resume from this checkpoint, or from the newest one in this save folder.")
@click.option("--conv-to-local", type=str,
              help="Convert these conv layers (comma list) to unshared local layers, same outputs (see ccn.netedit).")
@click.option("--unshare-weights", type=str,
              help="Give these layers (comma list of L or L[i]) their own copy of the weights they take through "
              "weightSource.")
@click.option("--inner-size", type=int, help="Random crops of this size when training, centre crop when testing. [0]")
@click.option("--crop-border", type=int,
              help="cuda-convnet's cropped CIFAR provider: crops this many pixels in from each side, i.e. "
              "--inner-size = image size - 2 x this. [4 with --data-provider cifar-cropped]")
@click.option("--test-only", type=BOOL01, hidden=True)
@click.option("--check-grads", type=BOOL01, hidden=True)
@click.option("--write-features", type=str, hidden=True)
@click.option("--feature-path", type=str, hidden=True)
@click.option("--test-out", type=str, hidden=True)
@click.option("--num-gpus", type=int, hidden=True)
@click.option("--logreg-name", type=str, hidden=True)
@click.option("--zip-save", type=BOOL01, hidden=True)
@click.option("--conserve-mem", type=BOOL01, hidden=True)
@click.option("--color-noise", type=float, help="Standard deviation of PCA colour noise (AlexNet §4.1). [0]")
@click.option("--scalar-mean", type=float, help="Subtract this scalar instead of the mean image (-1 = off). [-1]")
@click.option("--multiview-test", type=BOOL01, is_flag=False, flag_value="1",
              help="Average the test predictions over 10 views (corners + centre, flipped). [0]")
@click.option("--force-save", type=BOOL01, is_flag=False, flag_value="1",
              help="Also save a checkpoint when training ends. [0]")
@click.option("--layers", "--layer-def", "layers", type=str, help="The layer-definition file.")
@click.option("--params", "--layer-params", "params", type=str,
              help="The layer-params file (default: found next to the layer-definition file).")
@click.option("--layer-path", type=str, help="Folder prefix for --layers and --params (cuda-convnet's option).")
@click.option("--seed", type=int, help="Seed of the initial weights, the data order and the core's random numbers "
              "(default: random, printed and saved).")
@click.option("--threads", type=int, help="CPU threads of the core (OpenMP and BLAS). [all cores]")
@click.option("--device", type=click.Choice(["cpu", "cuda"]),
              help="Where to train: cpu, or cuda (one GPU; not taken from a checkpoint). [cpu]")
@click.option("--gpu", type=str, help="The GPU index to train on, e.g. 0 (implies --device cuda). [0]")
@click.pass_context
def train(ctx, **kw):
    """Train a net described by cuda-convnet layer files on numbered data batches.

    \b
    Start:   ccn train --layers L.cfg --data-path D --train-range 1-5 --test-range 6 --save-path S
    Resume:  ccn train -f S            (S/E.B is one checkpoint; a folder means its newest)

    Options given when resuming override the saved ones; the layer-params file is re-read, so
    edited learning rates take effect. Ctrl-C finishes the minibatch, saves and stops.
    """
    load_file = kw.pop("load_file")
    for k, why in REDIRECTED.items():
        v = kw.pop(k)
        if v:  # (--test-only 0 and the like are what ccn train does anyway)
            raise InputError(f"--{k.replace('_', '-')}: {why}.")
    check_num_gpus(kw.pop("num_gpus"))
    for k, why in IGNORED.items():
        if kw.pop(k) is not None:
            click.echo(f"note: --{k.replace('_', '-')} is accepted for cuda-convnet's command lines and has no effect: "
                       f"{why}.", err=True)
    given = {k: v for k, v in kw.items() if _given(ctx, k)}
    run_train(given, load_file, command=True)


def run_train(given: dict, load_file: str | None = None, out=None, stop_after: int | None = None,
              command: bool = False):
    """The command without Click: ``given`` maps option names (as in DEFAULTS) to values.

    Started by an MPI launcher (``mpiexec -n N ccn train ...``), or with RANK/WORLD_SIZE/
    MASTER_ADDR/MASTER_PORT (torchrun, a shell loop), it trains data-parallel over the N ranks
    (see :mod:`ccn.parallel`; the latter restarts the process under ``mpiexec -n 1``, so only
    the ``ccn train`` command itself, ``command=True``, may do it)."""
    from ..parallel import init_world, run_guarded

    return run_guarded(init_world(may_reexec=command),
                       lambda world: _run_train(given, load_file, out, stop_after, world))


def _crop_border(opts: dict, given: dict, resuming: bool) -> str | None:
    """cuda-convnet's cropped CIFAR provider (``--data-provider cifar-cropped [--crop-border B]``,
    B = 4 by default) as ``--inner-size`` = image size - 2B; the note to print, if any."""
    crop = opts.pop("crop_border", None)
    cropped = str(opts.get("data_provider") or "").lower() == "cifar-cropped"
    if crop is None and cropped and not resuming and "inner_size" not in given:
        crop = 4
    if crop is None:
        return None
    if "inner_size" in given:
        raise InputError("give --crop-border or --inner-size, not both (--inner-size = image size - 2 x --crop-border).")
    if ":" in str(opts.get("data_provider") or ""):
        raise InputError("--crop-border works with ccn's own data batches; for your own provider give --inner-size.")
    from ..data import batchfmt

    size = min(int(x) for x in batchfmt.read_meta(opts["data_path"])["image_size"])
    if crop < 0 or size - 2 * crop < 1:
        raise InputError(f"--crop-border {crop}: the images of {opts['data_path']} are {size} pixels wide, so the border "
                         f"must be between 0 and {(size - 1) // 2}.")
    opts["inner_size"] = size - 2 * crop
    return (f"--crop-border {crop}: {size - 2 * crop} x {size - 2 * crop} crops of the {size} x {size} images "
            "(random when training, the centre when testing)")


def _check_save_folder(folder: str, ckpt, load_file: str | None = None) -> None:
    """Refuse a save folder where this run's checkpoints would mix with another history: one
    holding checkpoints for a new run (or for a run resumed from elsewhere), or, resuming in a
    checkpoint's own folder, one holding checkpoints newer than it. ``-f`` would later resume the
    wrong one, and ``--max-filesize`` (which keeps the newest by name) would delete the others."""
    from .. import checkpoint as ck

    found = ck.list_checkpoints(folder)
    if not found:
        return
    names = [os.path.basename(p) for p in found]
    held = names[0] if len(names) == 1 else f"{names[0]} ... {names[-1]}"
    if ckpt is None or os.path.dirname(os.path.abspath(ckpt.path)) != os.path.abspath(folder):
        what = "a new run" if ckpt is None else f"the run of {ckpt.path}"
        raise InputError(f"{folder} already holds the checkpoints of another run ({held}); saving {what} there "
                         f"would mix the two (-f {folder} would resume the wrong one, and --max-filesize would delete "
                         f"checkpoints of either). Resume that run with -f {folder}, or give a new or empty "
                         "--save-path.")
    mine = ck._order_key(os.path.basename(ckpt.path))
    if mine is None:  # a checkpoint folder renamed (e.g. a copy called "best"): no place in the run's order
        raise InputError(f"{ckpt.path} is not named EPOCH.BATCH like the checkpoints of {folder}, so training on from "
                         f"it there would mix it into that run's history; give --save-path NEW_FOLDER.")
    newer = [os.path.basename(p) for p in ck.checkpoints_after(folder, ckpt.path)]
    if newer and load_file and os.path.abspath(load_file) == os.path.abspath(folder):
        # -f FOLDER read the newest, and newer ones appeared since: a run saving there ended meanwhile
        raise InputError(f"{os.path.join(folder, newer[-1])} was saved after this run read the newest checkpoint of "
                         f"{folder} ({os.path.basename(ckpt.path)}): another run was saving there and has just ended. "
                         f"Run the same command again to go on from {newer[-1]}.")
    if newer:
        paths = [os.path.join(folder, n) for n in newer]
        aside = (ck.aside_commands(paths) if len(paths) <= 4 else
                 f"the {len(paths)} checkpoint folders {newer[0]} ... {newer[-1]}, e.g. {ck.aside_commands(paths[:1])}")
        raise InputError(f"{ckpt.path} is not the newest checkpoint of {folder} ({newer[-1]} is): training on from "
                         f"it there would mix two histories, and --max-filesize would delete the new checkpoints "
                         f"first. To branch from it, give --save-path NEW_FOLDER (the new folder starts with its "
                         f"history); to drop the newer ones and go on from it in {folder}, first move them aside "
                         f"({aside}; a name that is not EPOCH.BATCH is ignored by ccn); to go on from the newest, "
                         f"-f {folder}.")


def _mid_batch_mini_message(ckpt, mini: int, save_path) -> str:
    """The refusal of a new --mini for a checkpoint saved inside a data batch (E.B-mbK: its position
    counts minibatches of the old size), with the routes that work."""
    from .. import checkpoint as ck

    old = ckpt.options.get("mini")
    folder = os.path.dirname(os.path.abspath(ckpt.path))
    here = ck._order_key(os.path.basename(ckpt.path))
    between = [p for p in ck.list_checkpoints(folder)
               if not ck._NAME_RE.match(os.path.basename(p)).group(3) and here is not None
               and ck._order_key(os.path.basename(p)) < here]
    msg = (f"{ckpt.path} was saved in the middle of a data batch with --mini {old}: its position counts minibatches "
           f"of {old} cases, so it resumes only with --mini {old} (give it, or leave --mini out; the minibatch can "
           "change at a checkpoint saved between batches).")
    if not between:
        return msg + (f" {folder} holds no checkpoint saved between batches before it: to train with --mini {mini} "
                      "now, start a new run.")
    prev = between[-1]
    newer = ck.checkpoints_after(folder, prev)
    return msg + (f" To switch to --mini {mini} now, go back to {prev}, the last checkpoint saved between batches "
                  f"before it (the minibatches trained since are dropped): branch into a new folder, which starts "
                  f"with its history, with ccn train -f {prev} --mini {mini} --save-path NEW_FOLDER; or, to go on in "
                  f"{folder}, move the newer checkpoint folder{'s' if len(newer) > 1 else ''} aside first "
                  f"({ck.aside_commands(newer)}; a name that is not EPOCH.BATCH is ignored by ccn), then ccn train -f "
                  f"{folder} --mini {mini}.")


def _run_train(given: dict, load_file, out, stop_after, world):
    locks = []  # the save folder's lock, held to the end of the run (ccn.checkpoint.lock_save_folder)
    try:
        return _run_train_locked(given, load_file, out, stop_after, world, locks)
    finally:
        for lock in locks:
            lock.release()


def _run_train_locked(given: dict, load_file, out, stop_after, world, locks: list):
    from .. import checkpoint as ck
    from .. import __version__
    from ..netfiles import find_params_file

    ckpt = None
    opts = dict(DEFAULTS)
    cli_mode = out is None
    if world is not None and world.rank != 0:  # rank 0 prints; the others report only errors
        from ..parallel import _Quiet

        out = _Quiet()
    saved_device = None
    if load_file:
        ckpt = ck.load(load_file)
        opts.update({k: v for k, v in ckpt.options.items() if k in DEFAULTS})
        # Where to run is a property of this run, not of the model: a checkpoint written on a
        # GPU resumes on the CPU unless --device cuda is given again (and vice versa).
        saved_device = ckpt.options.get("device")
        opts["device"], opts["gpu"] = DEFAULTS["device"], DEFAULTS["gpu"]
    for k, v in given.items():
        if k in PATH_OPTIONS and v:
            v = os.path.abspath(v)
        opts[k] = v
    for k in ("layers", "params"):
        if k in given and given[k]:
            opts[k] = os.path.abspath(_with_prefix(given[k], opts["layer_path"]))

    # ---- options that cannot work (yet) fail before anything happens
    from .. import device as dev

    placement = dev.select(given.get("device"), opts["gpu"], command="ccn train", data_parallel=world is not None)
    opts["device"], opts["gpu"] = placement.device, (None if placement.gpu is None else str(placement.gpu))
    if ckpt is not None and "data_provider" in given:
        # cifar-cropped sets the crop (--inner-size) when a run starts, as cuda-convnet's --crop-border
        # was set once: taking it up or dropping it on resume would change the net's input size
        def cropped(p):
            return str(p or "").lower() == "cifar-cropped"

        saved_dp = ckpt.options.get("data_provider")
        if cropped(given["data_provider"]) != cropped(saved_dp):
            raise InputError(f"--data-provider {given['data_provider']}: {ckpt.path} was trained with "
                             f"{'--data-provider ' + saved_dp if saved_dp else 'the detected provider'}, and cuda-"
                             "convnet's cropped CIFAR provider (its crop, --crop-border) is chosen when a run starts: "
                             "the net's input size cannot change on resume. Leave out --data-provider to go on as "
                             "the run was trained, or start a new run (--save-path NEW) with --data-provider "
                             "cifar-cropped.")
    if ckpt is not None and not given.get("save_path"):
        # next to the checkpoint resumed (as cuda-convnet saved into the folder it loaded from),
        # not where it was once saved: a copied or moved run goes on in its own folder
        opts["save_path"] = os.path.dirname(os.path.abspath(ckpt.path))
    missing = [f"--{k.replace('_', '-')}" for k in ("data_path", "train_range", "test_range", "save_path")
               if not opts[k]]
    if ckpt is None and not opts["layers"]:
        missing.insert(0, "--layers")
    if missing:
        raise InputError(f"missing {', '.join(missing)} (needed unless resuming with -f CHECKPOINT). "
                         "See ccn train --help.")
    train_range = parse_range(opts["train_range"], "--train-range")
    test_range = parse_range(opts["test_range"], "--test-range")
    for k, lo in (("epochs", 1), ("mini", 1), ("test_freq", 1), ("inner_size", 0)):
        if opts[k] is None or int(opts[k]) < lo:
            raise InputError(f"--{k.replace('_', '-')} must be at least {lo}, got {opts[k]}.")
    for k, lo in (("max_filesize", 0.0), ("color_noise", 0.0), ("scalar_mean", None)):
        v = opts[k]
        if v is not None and (not math.isfinite(float(v)) or (lo is not None and float(v) < lo)):
            raise InputError(f"--{k.replace('_', '-')} must be a finite number" + ("" if lo is None else " >= 0")
                             + f", got {v}.")
    if opts["threads"] is not None:
        check_threads(opts["threads"])
    if opts["seed"] is not None:
        check_seed(opts["seed"])
    if not os.path.isdir(opts["data_path"]):
        raise InputError(f"{opts['data_path']}: the data path does not exist or is not a folder (--data-path).")
    crop_note = _crop_border(opts, given, ckpt is not None)
    seed_note = None
    if ckpt is not None:
        # a run has one seed (the weights' draw, the data order and augmentation, the core's random
        # numbers): resuming keeps the checkpoint's everywhere, the provider included, so that the
        # resumed stretch is the one the saved options and the header describe, and can be reproduced
        saved_seed = ckpt.position.get("seed", ckpt.options.get("seed", ckpt.net_meta.get("seed")))
        if saved_seed is not None:
            if "seed" in given and given["seed"] is not None and int(given["seed"]) != int(saved_seed):
                seed_note = (f"note: --seed {given['seed']} is ignored on resume: the run goes on with its own seed "
                             f"{int(saved_seed)} (the checkpoint's), so that it can be reproduced; a new seed needs a "
                             "new run (e.g. --save-path NEW).")
            opts["seed"] = int(saved_seed)
    if opts["seed"] is None:
        opts["seed"] = secrets.randbelow(2**31)
    if world is not None:  # the same weights and data order on every rank
        opts["seed"] = world.comm.bcast(opts["seed"], root=0)

    from .._native import core
    from ..net import Net

    if opts["threads"]:
        core.set_threads(check_threads(opts["threads"]))
    elif world is not None and world.local_size > 1:  # ranks sharing a machine share its cores
        core.set_threads(max(1, (os.cpu_count() or 1) // world.local_size))

    # ---- data
    mod, open_fn = _provider_module(opts["data_provider"], opts.get("layers"))
    avail_fn = getattr(mod, "available_batches", None)
    if avail_fn is not None:
        avail = list(avail_fn(opts["data_path"]))
        for rng_name, rng in (("--train-range", train_range), ("--test-range", test_range)):
            bad = [b for b in rng if b not in avail]
            if bad:
                raise InputError(f"{rng_name}: {opts['data_path']} has no data batch {bad[0]} (it has "
                                 f"{format_range(avail)}).")
    popt_cls = getattr(mod, "ProviderOptions", _FallbackProviderOptions)
    scalar_mean = opts["scalar_mean"]
    common = dict(inner_size=int(opts["inner_size"]), color_noise=float(opts["color_noise"]),
                  scalar_mean=None if scalar_mean is None or scalar_mean == -1 else float(scalar_mean),
                  seed=int(opts["seed"]), threads=int(opts["threads"] or 0))
    train_dp = open_fn(opts["data_path"], train_range, train=True, options=popt_cls(multiview=False, **common))
    test_dp = open_fn(opts["data_path"], test_range, train=False,
                      options=popt_cls(multiview=bool(opts["multiview_test"]), **common))
    dims = train_dp.data_dims()
    if ckpt is not None:
        from ..testing import check_data_dims

        saved_dims = ckpt.net_meta.get("data_dims") or {}
        check_data_dims({int(k): v for k, v in saved_dims.items()}, train_dp, opts["data_path"],
                        f"the checkpoint {ckpt.path}", "--data-path (and --inner-size)")

    # ---- net
    from ..net import check_memory

    # the most cases a step holds; memory is checked before the weights are drawn or restored: until
    # then the parameters are untouched zero pages (native/core/tensor.h), so a net too big for this
    # machine (or its cgroup) is refused with a message instead of ending in the kernel's OOM killer
    from ..testing import cases_per_step

    step_cases = cases_per_step(int(opts["mini"]), (train_dp, train_range), (test_dp, test_range),
                                ranks=1 if world is None else world.size)
    layers_note = params_note = None
    if ckpt is None:
        layers = opts["layers"]
        params = os.path.abspath(find_params_file(layers, opts["params"]))
        opts["layers"], opts["params"] = layers, params
        net = Net(layers, params, data_dims=dims, seed=int(opts["seed"]), init=False)
        check_memory(net, step_cases, "--mini")
        net.init_weights(int(opts["seed"]))
        layers_sha = ck.text_sha256(net.layers_text)  # the file's text as read, kept even when --conv-to-local rewrites it
    else:
        from ..netfiles import read_text

        saved_layers = ckpt.net_meta.get("layers_path") or "layers.cfg"
        layers_sha = ckpt.net_meta.get("layers_file_sha256") or ck.text_sha256(ckpt.layers_text)
        if "layers" not in given and saved_layers and os.path.isfile(saved_layers):
            try:
                if ck.text_sha256(read_text(saved_layers, "layer-definition file")) != layers_sha:
                    layers_note = (f"note: {saved_layers} has changed since the checkpoint was saved; training goes on "
                                   "with the layer definition saved in the checkpoint (the architecture cannot change "
                                   "on resume; start a new run for the edited net).")
            except InputError:
                pass
        if "layers" in given:
            text = read_text(opts["layers"], "layer-definition file")
            if text != ckpt.layers_text:
                raise InputError(f"{ckpt.path}: the checkpoint belongs to another net: its layer definition differs "
                                 f"from {opts['layers']}. Leave out --layers to continue with the saved one (the "
                                 "architecture cannot change on resume).")
        params = opts["params"]
        params_text = None
        if "params" not in given and (not params or not os.path.isfile(params)):
            click.echo(f"warning: the layer-params file {params} is gone; continuing with the copy saved in the "
                       "checkpoint.", err=True)
            params_text = ckpt.params_text
            params = params or "params.cfg"
        elif "params" in given:
            params = find_params_file(saved_layers, params)
        net = Net(saved_layers, params, data_dims=dims, layers_text=ckpt.layers_text, params_text=params_text,
                  init=False, allow_unused=True)  # (an older ccn may have saved a net with an unused layer)
        check_memory(net, step_cases, "--mini")
        ck.restore_net(net, ckpt)
        from ..netfiles import describe_params_changes

        params_note = describe_params_changes(ckpt.params_text, net.params_text)
    if not net.cost_layers():
        raise ConfigError(f"{net.layers_path}: the net has no cost layer (cost.logreg, cost.sum2, ...), so there is "
                          "nothing to train it on; add one that reads the net's output and the labels.")
    # ---- --conv-to-local / --unshare-weights rewrite the net once (ccn.netedit); as in the
    # original they are not kept in the saved options: the checkpoints hold the rewritten net.
    rewritten = bool(opts["conv_to_local"] or opts["unshare_weights"])
    if rewritten:
        from ..netedit import rewrite

        say = (lambda s: print(s, file=out, flush=True)) if out is not None else click.echo
        net = rewrite(net, opts["conv_to_local"], opts["unshare_weights"], echo=say)
    opts["conv_to_local"], opts["unshare_weights"] = "", ""
    layout_line = None
    if placement.device == "cuda":
        dev.select(given.get("device"), placement.gpu, command="ccn train", gpus_needed=net.gpus_needed)
        dev.place(net, placement)  # the parameters move; the core pulls them back for checkpoints
    elif net.gpus_needed > 1:  # cuda-convnet2's gpu= layouts: logical devices, all in this process on the CPU
        from ..layout import layout_of

        layout_line = (f"  gpu= layout: {layout_of(net).describe()}; simulated on the CPU: every logical device "
                       "runs in this process, which computes exactly the single-device result")

    # ---- state and checks before the first step
    from ..train import Trainer, TrainConfig, TrainState

    if rewritten or placement.device == "cuda":  # a larger net (local layers), or the GPU's free memory
        check_memory(net, step_cases, "--mini")
    from ..testing import check_classes

    class_warnings = check_classes(net, train_dp, opts["data_path"])

    state = TrainState.from_checkpoint(ckpt) if ckpt is not None else TrainState()
    if ckpt is not None and state.mb > 0 and int(ckpt.options.get("mini", opts["mini"])) != int(opts["mini"]):
        raise InputError(_mid_batch_mini_message(ckpt, int(opts["mini"]), given.get("save_path")))
    if world is None or world.rank == 0:
        ck.check_writable(opts["save_path"])
        # one run per save folder: a second one (the same -f twice, two new runs with one --save-path)
        # is refused before it looks at the folder's checkpoints, and so before it writes any
        locks.append(ck.lock_save_folder(opts["save_path"], warn=lambda s: click.echo(s, err=True)))
        _check_save_folder(opts["save_path"], ckpt, load_file)
    saved_opts = {k: v for k, v in opts.items()}
    from ..parallel import _under_mpi_launcher

    # no live progress display under an MPI launcher: Open MPI gives each rank's stdout a terminal
    # (a pty) of its own even when mpiexec writes to a pipe or a log file, which then filled with
    # the display's escape codes instead of the progress lines (MPICH gives a pipe)
    progress_bar = out is None and sys.stdout.isatty() and not _under_mpi_launcher()
    cfg = TrainConfig(epochs=int(opts["epochs"]), mini=int(opts["mini"]), test_freq=int(opts["test_freq"]),
                      test_one=bool(opts["test_one"]), save_path=opts["save_path"],
                      max_filesize_mb=opts["max_filesize"], force_save=bool(opts["force_save"]),
                      provider_seed=int(opts["seed"]), multiview=bool(opts["multiview_test"]),
                      options=saved_opts, layers_file_sha256=layers_sha,
                      progress_bar=progress_bar)
    if world is not None:
        world.check_same(_what_ranks_share(opts, net, train_dp, state))
    if world is None:
        trainer = Trainer(net, train_dp, test_dp, cfg, state=state, out=out)
    else:
        from ..parallel import data_parallel_trainer

        saved_opts["world_size"] = world.size
        trainer = data_parallel_trainer(world, net, train_dp, test_dp, cfg, state, out)
    echo = (lambda s: print(s, file=out, flush=True)) if out is not None else (lambda s: click.echo(s))
    nparams = sum(p.shape[0] * p.shape[1] for p in net.params)
    echo("=========================")
    echo(f"ccn {__version__}: training {net.layers_path}")
    echo(f"  params file {net.params_path}; {len(net.layers)} layers, {nparams} weights")
    echo(f"  data {opts['data_path']}: train batches {format_range(train_range)}, test batches {format_range(test_range)}")
    echo(f"  {cfg.epochs} epochs, minibatch {cfg.mini}, test every {cfg.test_freq} batches; seed {opts['seed']}")
    echo(f"  device {dev.describe(placement)}" + (
        "; the next minibatch is copied to the GPU while the current one computes" if placement.device == "cuda"
        else ""))
    if layout_line:
        echo(layout_line)
    if world is not None:
        hosts = len({h for h, _ in world.where})
        echo(f"  data parallel over {world.size} MPI ranks on {hosts} machine{'s' if hosts > 1 else ''}: each "
             f"minibatch of {cfg.mini} is split into {world.size} parts of about {cfg.mini // world.size}, each "
             "rank loading only its part; gradients summed by one all-reduce per step"
             + (f" (ranks joined through RANK/WORLD_SIZE at {world.launcher.addr}:{world.launcher.port})"
                if world.launcher is not None else ""))
    for line in class_warnings:
        echo(line)
    testing = set(test_range)
    both = [b for b in train_range if b in testing]
    if both:
        echo(f"warning: batch{'es' if len(both) > 1 else ''} {format_range(both)} {'are' if len(both) > 1 else 'is'} "
             "in both --train-range and --test-range: the test error is measured on training data.")
    if layers_note:
        echo(layers_note)
    if seed_note:
        echo(seed_note)
    if crop_note:
        echo(f"  {crop_note}")
    if ckpt is not None:
        echo(f"  resuming from {ckpt.path}")
        if getattr(trainer, "range_note", None):
            echo(f"  {trainer.range_note}")
        if params_note:
            echo(f"  {params_note}")
        if saved_device and saved_device != placement.device:
            echo(f"  the checkpoint was trained with --device {saved_device}; this run is on {placement.label} "
                 f"(give --device {saved_device} to continue there)")
        saved_ws = int(ckpt.options.get("world_size", 1))
        if saved_ws != (world.size if world is not None else 1):
            echo(f"  the checkpoint was written by {saved_ws} rank{'s' if saved_ws > 1 else ''}, this run has "
                 f"{world.size if world is not None else 1}: training continues the same run (the global minibatch "
                 "and the state are the same), equal up to float rounding rather than bitwise")
    echo(f"Saving checkpoints to {cfg.save_path}")
    echo("=========================")
    done_before = trainer.state.batches_done
    if trainer.state.epoch > cfg.epochs:
        echo(f"Nothing to train: the run is past epoch {cfg.epochs} already (next: epoch {trainer.state.epoch}); "
             "give a larger --epochs to train on.")
    try:
        result = trainer.run(stop_after=stop_after)
    finally:
        for dp in (train_dp, test_dp):
            close = getattr(dp, "close", None)
            if callable(close):
                close()
    trained = result.state.batches_done - done_before
    if not result.interrupted and result.checkpoint is None and trained > 0:
        echo(f"No checkpoint was written: checkpoints are saved with the tests, every --test-freq {cfg.test_freq} "
             f"data batches, and this run trained {trained}; --force-save 1 also saves one at the end.")
    elif not result.interrupted and result.checkpoint is not None and result.state.last is not None:
        last = ck.checkpoint_name(*result.state.last)
        if os.path.basename(os.path.normpath(result.checkpoint)) != last:
            echo(f"note: the batches trained after checkpoint {os.path.basename(os.path.normpath(result.checkpoint))}"
                 f" (up to {last}) are not saved: checkpoints are saved with the tests, every --test-freq "
                 f"{cfg.test_freq} data batches; --force-save 1 also saves one at the end.")
    if result.interrupted:
        import signal

        where = result.checkpoint or "(nothing saved)"
        if getattr(trainer, "stop_signal", None) == signal.SIGPIPE:  # stdout is gone: say it on stderr
            print(f"Stopped because the output pipe was closed. Resume with: ccn train -f {cfg.save_path}  "
                  f"(checkpoint {where})", file=sys.stderr, flush=True)
            if cli_mode:
                _quiet_stdout()
                sys.exit(141)
            return result
        term = getattr(trainer, "stop_signal", None) == signal.SIGTERM
        echo(f"Stopped by {'SIGTERM' if term else 'Ctrl-C'}. Resume with: ccn train -f {cfg.save_path}  "
             f"(checkpoint {where})")
        if cli_mode:
            sys.exit(143 if term else 130)
    return result


def _what_ranks_share(opts: dict, net, train_dp, state) -> dict:
    """What every rank of a data-parallel run must agree on (the save options and paths, which
    can differ between machines, are left out)."""
    import hashlib
    import json

    def digest(text) -> str:
        return hashlib.sha256((text or "").encode("utf-8")).hexdigest()[:16]

    same = {f"--{k.replace('_', '-')}": opts.get(k) for k in (
        "train_range", "test_range", "epochs", "mini", "test_freq", "test_one", "multiview_test", "inner_size",
        "color_noise", "scalar_mean", "crop_border", "data_provider", "seed")}
    same["the layer definition (sha256)"] = digest(net.layers_text)
    same["the layer params (sha256)"] = digest(net.params_text)
    meta = getattr(train_dp, "meta", None)
    if isinstance(meta, dict):
        same["the data's batches.meta.json (sha256)"] = digest(json.dumps(meta, sort_keys=True, default=str))
    same["the position (epoch, batch, minibatch)"] = (state.epoch, state.index, state.mb, state.batches_done)
    return same


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so that flushing it at exit raises no second BrokenPipeError."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def _with_prefix(path: str | None, prefix: str | None) -> str | None:
    if path is None or not prefix or os.path.isabs(path):
        return path
    return os.path.join(prefix, path)
