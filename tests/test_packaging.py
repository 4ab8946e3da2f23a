"""The declared torch floor agrees with what the code uses and with the Makefile's default."""

from __future__ import annotations

import re
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _pyproject_torch() -> str:
    # A regex rather than tomllib, which is Python 3.11+ (the project supports 3.10).
    specs = re.findall(r'^\s*"(torch[<>=!~][^"]*)",?$', (ROOT / "pyproject.toml").read_text(), re.M)
    assert len(specs) == 1, f"expected one torch requirement in pyproject.toml, got {specs}"
    return specs[0]


def _floor(spec: str) -> tuple[int, ...]:
    match = re.fullmatch(r"torch>=(\d+)\.(\d+)", spec.strip())
    assert match, f"expected torch>=X.Y, got {spec!r}"
    return tuple(int(g) for g in match.groups())


def test_torch_floor_is_the_one_the_code_needs():
    spec = _pyproject_torch()
    # torch.library.custom_op and register_fake, which taan_core.nn._lookup uses, are torch 2.4.
    assert _floor(spec) == (2, 4)
    assert hasattr(torch.library, "custom_op")


def test_makefile_default_matches_pyproject():
    spec = _pyproject_torch()
    make = re.search(r"^TORCH \?= (\S+)$", (ROOT / "Makefile").read_text(), re.M)
    assert make and _floor(make.group(1)) == _floor(spec)
