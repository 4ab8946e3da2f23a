"""The public API: every re-exported name resolves, and importing stays light."""

from __future__ import annotations

import subprocess
import sys

import pytest

import taan_core
import taan_viz


@pytest.mark.parametrize("name", [n for n in taan_core.__all__ if n != "__version__"])
def test_every_public_name_resolves(name):
    assert getattr(taan_core, name) is not None


@pytest.mark.parametrize("name", [n for n in taan_viz.__all__ if n != "__version__"])
def test_every_viz_name_resolves(name):
    assert getattr(taan_viz, name) is not None


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
