"""The error a user can fix.

Library functions refuse bad arguments with ``ValueError`` or ``TypeError``, as numpy and torch
do. Whether such a refusal is the user's doing or a bug depends on where it happens: a
``ValueError`` from checking ``--lr`` is the user's, one from inside a training step is a bug.
So the checks of what the user gave (options, data files, checkpoints, output paths) raise
:class:`UserError`, or run inside :func:`taan_core._cli_runner.user_input`, which turns the
library's refusals into one. The command lines print a ``UserError`` as one line and exit with
status 2; anything else is a bug and keeps its traceback (exit status 1).

``UserError`` is a ``ValueError``, so code that catches ``ValueError`` around the library keeps
working.
"""

from __future__ import annotations

__all__ = ["MissingDependencyError", "UserError", "require"]


class UserError(ValueError):
    """Bad input the user can fix: a command line prints it as one line and exits with status 2."""


class MissingDependencyError(UserError, ImportError):
    """An optional package that a feature needs is not installed (also an ``ImportError``)."""


def require(module: str, *, package: str, extra: str, purpose: str):
    """Import ``module``, or say in one line which extra of taan installs it.

    Parameters
    ----------
    module : str
        The module to import (``"h5py"``, ``"sklearn.datasets"``).
    package : str
        Its name on PyPI (``"h5py"``, ``"scikit-learn"``).
    extra : str
        The extra of taan that installs it (``pip install 'taan[EXTRA]'``).
    purpose : str
        What needs it, starting the message (``"the youtube8m data set"``).

    Raises
    ------
    MissingDependencyError
    """
    import sys

    try:
        __import__(module)  # through builtins.__import__, which tests may replace
        return sys.modules[module]
    except ImportError as err:
        raise MissingDependencyError(f"{purpose} needs the {package} package: pip install 'taan[{extra}]' "
                                     f"(or pip install {package})") from err
