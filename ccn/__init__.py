"""ccn: a modern rebuild of cuda-convnet.

The Python API is small: :class:`ccn.Net` builds a net from cuda-convnet layer-definition
and layer-params files and exposes its layers, shapes and weights as NumPy arrays.
"""

from importlib.metadata import PackageNotFoundError, version as _version

from .errors import CcnError, CcnRuntimeError, ConfigError, InputError

try:
    __version__ = _version("ccn")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+dev"


def __getattr__(name):
    # Import the native core lazily so `ccn --help` stays fast and import errors are clear.
    if name == "Net":
        from .net import Net

        return Net
    raise AttributeError(name)


__all__ = ["Net", "CcnError", "ConfigError", "InputError", "CcnRuntimeError", "__version__"]
