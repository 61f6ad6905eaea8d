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


def read_sections(text: str, path: str = "layer-params") -> dict[str, dict[str, tuple[str, str]]]:
    """A layer file's text as ``{section: {key lower-cased: (key, value)}}``, read by the core's
    parser (native/netdef/config.cpp), so comments and continued values mean what they mean to a
    net built from the text."""
    from ._native import core

    return {name: {k.lower(): (k, v) for k, v, _line in entries}
            for name, _line, entries in core.parse_config(text or "", path)}


def params_changes(old_text: str, new_text: str) -> list[tuple[str, str, str | None, str | None]]:
    """What differs between two layer-params texts: ``(section, key, old value, new value)`` per
    changed key, ``None`` for a key (or section) that is not there, in the new text's order."""
    old, new = read_sections(old_text), read_sections(new_text)
    changes = []
    for sec in list(new) + [s for s in old if s not in new]:
        a, b = old.get(sec, {}), new.get(sec, {})
        for lk in list(b) + [k for k in a if k not in b]:
            va, vb = a.get(lk, (None, None))[1], b.get(lk, (None, None))[1]
            if va != vb:
                changes.append((sec, (b.get(lk) or a.get(lk))[0], va, vb))
    return changes


def describe_params_changes(old_text: str, new_text: str, limit: int = 10) -> str | None:
    """One note listing what changed in the layer-params since a checkpoint, grouped by layer
    (``fc10 epsW 0.01 -> 0.001; conv1 epsW 0.001 -> 0``), at most ``limit`` keys named; None if
    nothing did."""
    changes = params_changes(old_text, new_text)
    if not changes:
        return None
    groups: dict[str, list[str]] = {}
    for sec, key, va, vb in changes[:limit]:
        groups.setdefault(sec, []).append(f"{key} {'(unset)' if va is None else va} -> "
                                          f"{'(unset)' if vb is None else vb}")
    text = "; ".join(f"{sec} {', '.join(items)}" for sec, items in groups.items())
    more = len(changes) - limit
    if more > 0:
        layers = len({sec for sec, *_ in changes[limit:]})
        text += f"; and {more} more in {layers} layer{'s' if layers > 1 else ''}"
    return f"note: layer-params changed since the checkpoint: {text}."
