"""Atomic file writes: a temporary file in the destination folder, flushed and fsynced, then
moved into place with ``os.replace``. A crash at any moment leaves the old file or the new one,
never a torn one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

__all__ = ["atomic_write"]


def _fsync_dir(folder: Path) -> None:
    # The rename is durable only once the directory entry is on disk; not every platform
    # lets a directory be opened, and then there is nothing more to do.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """Write ``path`` atomically: ``write(fh)`` fills a binary temporary file beside it.

    Parameters
    ----------
    path : path-like
        Destination; its folder is created if missing.
    write : callable
        Receives the open temporary file (binary mode) and writes the whole content.

    Returns
    -------
    Path
        The destination path. On any exception the temporary file is removed and the
        destination is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path
