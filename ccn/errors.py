"""The one exception family of ccn.

Every error ccn reports is a :class:`CcnError`. The C++ core raises the same classes (its
``ccn::Error`` kinds map onto them), with the message intact. The CLI prints the message as
one paragraph and exits with the class's ``exit_code``: 2 for bad usage, configuration or
input; 1 for failures at run time.
"""


class CcnError(Exception):
    """Base of all ccn errors."""

    exit_code = 1


class ConfigError(CcnError):
    """A layer-definition or layer-params file (or an option) is invalid."""

    exit_code = 2


class InputError(CcnError):
    """Input data, a path, a checkpoint or an argument is missing or invalid."""

    exit_code = 2


class CcnRuntimeError(CcnError):
    """Something failed while running (out of memory, a GPU error, a non-finite cost)."""

    exit_code = 1
