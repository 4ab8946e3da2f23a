"""taan_core._atomic: a failed write leaves the old file and no temporary file behind."""

from __future__ import annotations

import pytest

from taan_core._atomic import atomic_write


def test_atomic_write_replaces_and_creates_the_folder(tmp_path):
    path = tmp_path / "new" / "file.bin"
    assert atomic_write(path, lambda fh: fh.write(b"one")) == path
    atomic_write(path, lambda fh: fh.write(b"two"))
    assert path.read_bytes() == b"two"
    assert sorted(p.name for p in path.parent.iterdir()) == ["file.bin"]


def test_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "file.bin"
    path.write_bytes(b"old")

    def half_then_fail(fh):
        fh.write(b"partial")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, half_then_fail)
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.bin"]
