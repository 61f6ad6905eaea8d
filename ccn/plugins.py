"""The user's own Python code named in a layer file (``initWFunc``, ``initBFunc``) or on the
command line (``--data-provider MODULE:FUNCTION``).

cuda-convnet imported such modules from the folder of its own code, where people put them;
ccn is an installed command, so it looks on the Python path first, then in the current folder
and in the folder of the layer file.
"""

from __future__ import annotations

import importlib
import os
import sys
from types import ModuleType


def import_user_module(name: str, near: str | None = None) -> ModuleType:
    """Import module ``name`` (dotted), falling back to the current folder and to ``near``
    (a file or folder: the layer file), which are then added to the end of ``sys.path``.
    A module that is not found anywhere raises ModuleNotFoundError naming where ccn looked."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name != name.split(".")[0]:
            raise  # the module was found but imports something missing
    folders = [os.getcwd()]
    if near:
        folders.append(os.path.abspath(near if os.path.isdir(near) else os.path.dirname(near) or "."))
    added = [f for f in dict.fromkeys(folders) if f not in sys.path]
    sys.path.extend(added)
    importlib.invalidate_caches()
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name != name.split(".")[0]:
            raise
        where = " and ".join(dict.fromkeys(folders))
        raise ModuleNotFoundError(f"no module named '{name}' on the Python path or in {where}",
                                  name=e.name) from None
