"""`ccn`: the Click group, error handling and command registry.

Errors: a :class:`ccn.errors.CcnError` is printed as one paragraph (``error: ...``) and the
process exits with its ``exit_code`` (2 for usage, config and input, 1 for runtime).
Anything else is a bug: one line naming it, exit 1. ``--debug`` (or ``CCN_DEBUG=1``) shows
the traceback instead. Every option can also be set as ``CCN_<COMMAND>_<OPTION>``.
"""

from __future__ import annotations

import importlib
import sys
import traceback

import click

from .. import __version__
from ..errors import CcnError

# name -> "module:function"; a command is listed here only once it works.
COMMANDS = {
    "info": "ccn.cli.info:info",
    "check-grads": "ccn.cli.check_grads:check_grads",
    "show-net": "ccn.cli.show_net:show_net",
    "train": "ccn.cli.train:train",
    "prepare-data": "ccn.cli.prepare_data:prepare_data",
    "test": "ccn.cli.test:test",
    "show-filters": "ccn.cli.show_filters:show_filters",
    "show-cost": "ccn.cli.show_cost:show_cost",
    "show-preds": "ccn.cli.show_preds:show_preds",
    "import-checkpoint": "ccn.cli.import_checkpoint:import_checkpoint",
}


class CcnGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except CcnError as e:
            if ctx.obj and ctx.obj.get("debug"):
                traceback.print_exc()
            _print_error(str(e))
            ctx.exit(e.exit_code)
        except click.BadParameter as e:
            _name_the_variable(e)
            raise
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except KeyboardInterrupt:
            _print_error("interrupted.")
            ctx.exit(130)
        except BrokenPipeError:  # `ccn ... | head`: the reader has all it wanted; exit as SIGPIPE would
            from .train import _quiet_stdout

            _quiet_stdout()
            ctx.exit(141)
        except MemoryError as e:  # a run-time failure, not a bug: sizes too large for this machine
            if ctx.obj and ctx.obj.get("debug"):
                traceback.print_exc()
            detail = f" ({e})" if str(e) else ""
            _print_error(f"out of memory{detail}. Nothing was saved by this step; try smaller sizes (--batch-size, "
                         "--mini, --image-size) or a machine with more memory.")
            ctx.exit(1)
        except Exception as e:  # a bug in ccn
            if ctx.obj and ctx.obj.get("debug"):
                traceback.print_exc()
            _print_error(f"internal error: {type(e).__name__}: {e}. This is a bug in ccn; rerun with --debug "
                         "for the traceback and report it.")
            ctx.exit(1)


def _name_the_variable(e: click.BadParameter) -> None:
    """A bad value that came from a CCN_* environment variable (set, and the option not on the
    command line): say so, or the user looks for it on a command line that does not have it."""
    import os

    if e.ctx is None or e.param is None or not e.param.name or not e.ctx.auto_envvar_prefix:
        return
    var = f"{e.ctx.auto_envvar_prefix}_{e.param.name.upper()}"
    given = any(a == o or a.startswith(o + "=") for a in sys.argv[1:] for o in getattr(e.param, "opts", []))
    if os.environ.get(var) is not None and not given:
        e.message = f"{e.message.rstrip('.')} (the value comes from the environment variable {var})."


def _unknown_variables(ctx: click.Context, name: str) -> list[str]:
    """Warnings for CCN_<COMMAND>_* environment variables that set no option of the command
    (e.g. CCN_TRAIN_MINIBATCH, where --minibatch is another name of --mini: CCN_TRAIN_MINI)."""
    import difflib
    import os

    cmd = ctx.command.get_command(ctx, name) if isinstance(ctx.command, click.Group) else None
    if cmd is None or isinstance(cmd, click.Group):
        return []
    prefix = "CCN_" + name.upper().replace("-", "_") + "_"
    known = {prefix + p.name.upper() for p in cmd.params if p.name}
    for p in cmd.params:  # an option's own envvar= (e.g. --json's CCN_INFO_JSON)
        known.update([p.envvar] if isinstance(p.envvar, str) else list(p.envvar or []))
    out = []
    for var in sorted(os.environ):
        if var.startswith(prefix) and var not in known:
            close = difflib.get_close_matches(var, sorted(known), n=1, cutoff=0.8)
            hint = (f"did you mean {close[0]}?" if close else
                    f"the variables of its options are {prefix} + the option's name with - as _, e.g. "
                    f"{sorted(known)[0]}.")
            out.append(f"warning: the environment variable {var} sets no option of `ccn {name}` and is ignored; "
                       + hint)
    return out


def _print_error(msg: str) -> None:
    click.echo(f"error: {msg}", err=True)


@click.group(cls=CcnGroup, context_settings={"help_option_names": ["-h", "--help"], "auto_envvar_prefix": "CCN"})
@click.version_option(__version__, "--version", prog_name="ccn")
@click.option("--debug", is_flag=True, envvar="CCN_DEBUG", help="Show Python tracebacks on errors.")
@click.pass_context
def cli(ctx, debug):
    """ccn: train cuda-convnet nets from their layer files, on CPUs and GPUs."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    if ctx.invoked_subcommand:
        for w in _unknown_variables(ctx, ctx.invoked_subcommand):
            click.echo(w, err=True)
    if ctx.invoked_subcommand != "info":  # info shows the setting and what this CPU has
        _check_simd_setting()


def _check_simd_setting() -> None:
    """CCN_SIMD names the instruction-set path of the CPU loops (native/core/simd.h); a value
    the CPU cannot run would otherwise fall back silently to the widest path, and a comparison
    the user meant to make between paths would compare nothing."""
    import os

    want = os.environ.get("CCN_SIMD", "")
    if not want:
        return
    from .._native import core

    have = list(core.simd_paths())
    if want not in have:
        from ..errors import InputError

        raise InputError(f"the environment variable CCN_SIMD is '{want}', which this CPU cannot run; it must be "
                         f"one of {', '.join(have)} (or unset, for the widest). `ccn info` lists them.")


def main(argv=None):
    try:
        cli.main(args=argv, prog_name="ccn", standalone_mode=True, auto_envvar_prefix="CCN")
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        # Click exits 2 for usage errors already; keep it.
        sys.exit(code)


if __name__ == "__main__":  # python -m ccn.cli.main
    main()
