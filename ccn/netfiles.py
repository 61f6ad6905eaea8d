"""Finding and reading the two files that describe a net.

The params-file rule (used by every command that takes ``--layers``): an explicit
``--params`` wins; otherwise, next to the layer-definition file ``DIR/STEM.EXT``:

1. cuda-convnet's pairs: ``layers-X.EXT`` -> ``layer-params-X.EXT``,
   ``layers.X.EXT`` -> ``layer-params.X.EXT`` (e.g. ``layers.gc.cfg``) and
   ``layers.EXT`` -> ``layer-params.EXT``;
2. ``STEM-params.EXT`` (our ``layer-defs/alexnet.ini`` -> ``alexnet-params.ini``);
3. ``STEM.params.EXT``.

The first that exists is used; if none does, the error lists the names tried.
"""

from __future__ import annotations

import os

from .errors import InputError


def params_candidates(layers_path: str) -> list[str]:
    folder, base = os.path.split(layers_path)
    stem, ext = os.path.splitext(base)
    names = ["layer-params" + ext] if stem == "layers" else []
    for prefix, repl in (("layers-", "layer-params-"), ("layers.", "layer-params.")):
        if stem.startswith(prefix):
            names.append(repl + stem[len(prefix):] + ext)
    names += [f"{stem}-params{ext}", f"{stem}.params{ext}"]
    return [os.path.join(folder, n) for n in names]


def find_params_file(layers_path: str, params_path: str | None = None) -> str:
    if params_path:
        if not os.path.isfile(params_path):
            raise InputError(f"{params_path}: the layer-params file does not exist or is not a file.")
        return params_path
    cands = params_candidates(layers_path)
    for c in cands:
        if os.path.isfile(c):
            return c
    tried = ", ".join(os.path.basename(c) for c in cands)
    raise InputError(
        f"{layers_path}: no layer-params file found next to it (tried {tried}); "
        "give one with --params FILE."
    )


def read_text(path: str, what: str) -> str:
    if not os.path.exists(path):
        raise InputError(f"{path}: the {what} does not exist.")
    if os.path.isdir(path):
        raise InputError(f"{path}: the {what} is a folder, expected a file.")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise InputError(f"{path}: cannot read the {what} ({e.strerror}).") from e
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: the {what} is not UTF-8 text (byte {e.start}); is it the right file?") from e
