"""The one place that imports the private extension module ``ccn._core``.

The default build links the BLAS from the ``scipy-openblas32`` wheel. It is loaded here
first, with RTLD_GLOBAL, so the extension finds it however ccn was installed (wheel,
editable, or an in-place developer build).
"""

import ctypes
import os

from .errors import CcnRuntimeError, InputError


def _preload_blas():
    try:
        import scipy_openblas32
    except ImportError:  # a build against a system BLAS or MKL needs no preload
        return
    lib = os.path.join(scipy_openblas32.get_lib_dir(), scipy_openblas32.get_library(fullname=True))
    ctypes.CDLL(lib, mode=ctypes.RTLD_GLOBAL)


def _cublas_dirs():
    """Library folders of the pip package nvidia-cublas (nvidia/cu13/lib, nvidia/cublas/lib),
    where the CUDA backend looks for libcublas at run time (native/cuda/cublas.h)."""
    import glob
    import importlib.util

    try:
        spec = importlib.util.find_spec("nvidia")
    except (ImportError, ValueError):
        return []
    if spec is None or not spec.submodule_search_locations:
        return []
    out = []
    for root in spec.submodule_search_locations:
        for lib in sorted(glob.glob(os.path.join(root, "*", "lib", "libcublas.so*")), reverse=True):
            d = os.path.dirname(lib)
            if d not in out:
                out.append(d)
    return out


# OpenMP threads that wait at the end of a parallel region sleep instead of spinning. ccn's
# parallel regions are coarse, so the wake-up costs little; spinning threads took the cores
# from the threads still working whenever the machine had other load (a 2-core training step
# ran 3x slower, tools/perf-notes.md). Read by libgomp when the extension loads it, below; a
# value set by the user wins. `ccn info` reports it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
_preload_blas()


def _load_core_file(path):
    """The extension from another build, e.g. the CUDA simulator's (tools/cudasim/run.sh)."""
    import importlib.machinery
    import importlib.util
    import sys

    if not os.path.isfile(path):
        raise InputError(f"the environment variable CCN_CORE names {path}, which is not a file: it must name a built "
                         "ccn extension (tools/cudasim/build.sh writes build/sim/lib/_core*.so), or be unset.")
    name = f"{__package__}._core"
    # the loader named: spec_from_file_location guesses it from the suffix (none for a wrong one)
    spec = importlib.util.spec_from_file_location(name, path, loader=importlib.machinery.ExtensionFileLoader(name, path))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    sys.modules[spec.name] = mod
    return mod


try:
    if os.environ.get("CCN_CORE"):
        core = _load_core_file(os.environ["CCN_CORE"])
    else:
        from . import _core as core  # noqa: E402
except ImportError as e:  # pragma: no cover - depends on the installation
    if os.environ.get("CCN_CORE"):
        raise CcnRuntimeError(f"the native core that CCN_CORE names could not be loaded ({e}). Unset CCN_CORE to use "
                              "this ccn's own, or build that one again (tools/cudasim/build.sh).") from e
    _here = os.path.dirname(os.path.abspath(__file__))
    _tree = os.path.isfile(os.path.join(os.path.dirname(_here), "CMakeLists.txt"))
    raise CcnRuntimeError(
        f"the ccn native core could not be loaded ({e}). "
        + (f"This ccn is the source tree {_here}, which Python imports ahead of an installed ccn when run from "
           "the repository folder (or with it on the path); its extension is built only by `pip install -e .` or "
           "`tools/dev-build.sh`. Do one of those, or run from another folder."
           if _tree else "Reinstall ccn with `pip install .` (or `pip install -e .`) so that the C++ extension is built.")
    ) from e
if "cuda" in core.build_info()["backends"]:
    for _d in _cublas_dirs():
        core.cublas_add_search_dir(_d)

__all__ = ["core"]
