"""Atomic file writes: a temporary file in the destination folder, flushed and fsynced, then
moved into place with ``os.replace``. A crash at any moment leaves the old file or the new one,
never a torn one.

Temporary files are named ``.<name>.<pid>.<random>.tmp``: the pid lets the next run tell the
leftovers of a killed process from the files another live process is writing
(``remove_stale_temporaries``). Finished files get the mode of a plain ``open()`` (0666 less
the umask), not the 0600 of ``mkstemp``.

Symbolic links. ``mkstemp`` creates the temporary file with ``O_CREAT | O_EXCL | O_NOFOLLOW``,
so nothing planted under its random name is ever written through; ``os.replace`` onto a
destination that is a symbolic link replaces the link itself and leaves its target untouched,
which is what a writer that owns the destination name wants. Files that are opened in place
(appended to, locked, truncated) go through :func:`open_nofollow`, which refuses a link in one
line instead of following it.
"""

from __future__ import annotations

import errno
import os
import re
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable, Iterable

__all__ = ["WriteError", "atomic_write", "open_nofollow", "refuse_link", "remove_stale_temporaries", "write_file"]

_TEMP_NAME = re.compile(r"\.(?P<name>.+)\.(?P<pid>\d+)\.[A-Za-z0-9_]+\.tmp")


class WriteError(OSError):
    """A file could not be written; the previous file, if any, is intact. One line of text."""


def _link_message(path: "str | os.PathLike") -> str:
    return f"{path} is a symbolic link; refused to write through it (remove the link, or choose another folder)"


def refuse_link(path: "str | os.PathLike") -> None:
    """Raise WriteError (one line) when ``path`` itself is a symbolic link (broken or not)."""
    if os.path.islink(path):
        raise WriteError(_link_message(path))


def open_nofollow(path: "str | os.PathLike", flags: int, mode: int = 0o666) -> int:
    """``os.open(path, flags | O_NOFOLLOW, mode)``: a file descriptor, never one of a link's target.

    Raises
    ------
    WriteError
        One line, when ``path`` is a symbolic link (checked after the fact too where the
        platform lacks ``O_NOFOLLOW``).
    OSError
        Any other failure of ``os.open``, unchanged.
    """
    nofollow = getattr(os, "O_NOFOLLOW", 0)
    if not nofollow:  # pragma: no cover - platforms without O_NOFOLLOW
        refuse_link(path)
    try:
        return os.open(path, flags | nofollow, mode)
    except OSError as err:
        # ELOOP on Linux and macOS; EMLINK on FreeBSD; EEXIST when O_EXCL meets a dangling link.
        if err.errno in (errno.ELOOP, errno.EMLINK, errno.EEXIST) and os.path.islink(path):
            raise WriteError(_link_message(path)) from None
        raise


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


def _file_mode() -> int:
    # os.umask can only be read by setting it; it is restored at once (a thread creating a file
    # in between would see 0o022, the usual umask, at worst).
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def _reason(err: BaseException) -> str:
    # torch's zip writer turns the OSError of a full disk into a RuntimeError about positions;
    # the OSError stays its context.
    if isinstance(err, RuntimeError) and isinstance(err.__context__, OSError):
        err = err.__context__
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        return "no space left on the device"
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    lines = str(err).strip().splitlines()
    text = lines[0] if lines else type(err).__name__
    if isinstance(err, RuntimeError):
        # torch's zip writer reports a full disk as "unexpected pos N vs M" or a failed write.
        return f"{text} (is the disk full?)"
    return text


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
        The destination path.

    Raises
    ------
    WriteError
        When the file system refuses the write (no space, no permission, ...), or ``write``
        raises OSError or RuntimeError (as ``torch.save`` does on a full disk). The message is
        one line naming ``path``; the temporary file is removed and the destination untouched.
        Other exceptions of ``write`` propagate unchanged, with the same clean-up.
    """
    path = Path(path)
    tmp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
        tmp = Path(tmp_name)
        with os.fdopen(fd, "wb") as fh:
            if hasattr(os, "fchmod"):
                os.fchmod(fh.fileno(), _file_mode())
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        if isinstance(err, (OSError, RuntimeError)) and not isinstance(err, WriteError):
            raise WriteError(f"cannot write {path}: {_reason(err)}; the previous file, if any, is intact") from err
        raise
    _fsync_dir(path.parent)
    return path


def write_file(path: str | os.PathLike, data: "bytes | str") -> Path:
    """``atomic_write`` of ``data`` (str is written as UTF-8): never through a link at ``path``."""
    payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    return atomic_write(path, lambda fh: fh.write(payload))


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # another user's process, or no way to tell: keep its files
    return True


def remove_stale_temporaries(folder: str | os.PathLike, *, names: Iterable[str] = ()) -> list[Path]:
    """Delete temporary files of ``atomic_write`` left in ``folder`` by processes that died.

    Parameters
    ----------
    folder : path-like
    names : iterable of str
        Destination names whose temporary files without a pid (written before temporary names
        carried one) are removed too; only safe while the caller holds the folder's lock.

    Returns
    -------
    list of Path
        The files removed.
    """
    folder = Path(folder)
    names = set(names)
    removed = []
    if not folder.is_dir():
        return removed
    for tmp in folder.glob(".*.tmp"):
        match = _TEMP_NAME.fullmatch(tmp.name)
        stale = (not _alive(int(match["pid"]))) if match else any(tmp.name.startswith(f".{n}.") for n in names)
        if stale and tmp.is_file():
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed
