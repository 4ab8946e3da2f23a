"""Lazy re-exports for package ``__init__`` modules (PEP 562).

A package lists ``name -> submodule`` and gets a module ``__getattr__`` that imports the submodule
on first access, so importing the package costs nothing until a name is used.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

__all__: list[str] = []


def lazy_exports(package: str, exports: dict[str, str], namespace: dict[str, Any]) -> tuple[
    Callable[[str], Any], Callable[[], list[str]]
]:
    """Return ``(__getattr__, __dir__)`` for ``package`` re-exporting ``exports`` lazily.

    Parameters
    ----------
    package : str
        The package's import name, e.g. ``"taan_core"``.
    exports : dict of str to str
        Public name -> submodule (relative to the package) that defines it.
    namespace : dict
        The package's ``globals()``: a resolved name is cached there so the next access is direct.
    """

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(namespace.get("__all__", exports))

    return __getattr__, __dir__
