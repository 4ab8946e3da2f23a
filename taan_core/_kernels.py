"""Fused CPU kernels for the segment lookup (placeholder: the plain torch path is used)."""

from __future__ import annotations

__all__: list[str] = []

_enabled = True


def available() -> bool:
    return False


def enabled() -> bool:
    return _enabled


def set_enabled(flag: bool) -> None:
    global _enabled
    _enabled = bool(flag)


def usable(z, slope) -> bool:
    return False
