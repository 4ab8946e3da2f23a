"""The public API: every re-exported name resolves, and importing stays light."""

from __future__ import annotations

import subprocess
import sys

import pytest

import taan_core
import taan_viz


@pytest.mark.parametrize("package", [taan_core, taan_viz], ids=["taan_core", "taan_viz"])
def test_every_public_name_is_the_object_of_its_module(package):
    # A lazy re-export must hand out the very object its module defines, not a stand-in.
    import importlib

    for name, module in package._EXPORTS.items():
        source = importlib.import_module(f"{package.__name__}.{module}")
        assert getattr(package, name) is getattr(source, name), name
    assert sorted(package.__all__) == sorted(["__version__", *package._EXPORTS])


def test_unknown_name_raises_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        taan_core.nope  # noqa: B018


def test_import_does_not_load_sympy_or_training_code():
    code = (
        "import sys, taan_core, taan_viz; "
        "bad = [m for m in ('sympy', 'taan_core.train', 'taan_core.symbolic') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
