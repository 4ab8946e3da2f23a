"""One way for the three command lines (taan-core, taan-viz, taan-study) to end.

:func:`run_app` runs a typer app and turns what it raises into an exit status:

- a usage error of the parser (unknown option, bad choice) and a :class:`~taan_core.errors.UserError`
  (bad option values, unreadable files and checkpoints, data errors): one line on stderr, status 2;
- an ``OSError`` (a missing file, no permission, a full disk): one line naming the file, status 2;
- running out of memory: one line, status 2;
- errors a command declares as expected (taan-core's diverged training): one line, their status;
- Ctrl-C: the command's interruption line, status 130;
- anything else is a bug: the traceback, a line saying so, status 1.

``--debug`` anywhere on the command line (or ``TAAN_DEBUG=1``) shows the traceback of every error.
:func:`user_input` marks the code that checks what the user gave: the ``ValueError`` and
``TypeError`` with which library functions refuse bad arguments become user errors there, and
only there.
"""

from __future__ import annotations

import contextlib
import os
import sys
import traceback
from typing import Any, Callable, Iterator, Mapping

from taan_core.errors import UserError

__all__ = ["DEBUG_FLAG", "run_app", "user_input"]

DEBUG_FLAG = "--debug"


@contextlib.contextmanager
def user_input(reword: Callable[[str], str] | None = None) -> Iterator[None]:
    """Inside, a ``ValueError`` or ``TypeError`` is a refusal of the user's input: re-raised as a
    :class:`UserError` (its text passed through ``reword``, e.g. to name the command-line options)."""
    try:
        yield
    except (ValueError, TypeError) as err:
        text = one_line(err)
        worded = reword(text) if reword is not None else text
        if isinstance(err, UserError) and worded == text:
            raise
        raise UserError(worded) from err


def one_line(err: BaseException | str) -> str:
    """The message on one line (whitespace runs collapsed), or the exception's type name."""
    text = " ".join(str(err).split())
    return text or (type(err).__name__ if isinstance(err, BaseException) else "")


def _os_error_line(err: OSError) -> str:
    # Python's own OSErrors read "[Errno 2] No such file or directory: 'x'"; say it the short way.
    if err.filename is not None and err.strerror and type(err).__str__ is OSError.__str__:
        return f"{err.filename}: {err.strerror}"
    return one_line(err)


# torch's words for a failed CPU allocation, raised as a plain RuntimeError ("DefaultCPUAllocator:
# not enough memory: you tried to allocate ...", or the system's "can't allocate memory").
_CPU_OUT_OF_MEMORY = ("not enough memory", "can't allocate memory")


def _is_out_of_memory(err: BaseException) -> bool:
    if isinstance(err, MemoryError):
        return True
    torch = sys.modules.get("torch")
    oom = getattr(torch, "OutOfMemoryError", None) if torch is not None else None
    if oom is not None and isinstance(err, oom):
        return True
    return isinstance(err, RuntimeError) and any(words in str(err) for words in _CPU_OUT_OF_MEMORY)


def _usage_error_class(typer_module: Any) -> type[BaseException]:
    # typer raises click's exceptions (vendored in newer typer, the click package in older):
    # find the class through typer's public BadParameter instead of importing either.
    return next(cls for cls in typer_module.BadParameter.__mro__ if cls.__name__ == "UsageError")


def run_app(
    app: Any,
    prog: str,
    argv: list[str] | None,
    *,
    on_interrupt: Callable[[], str] | None = None,
    expected: Callable[[], Mapping[type[BaseException], int]] | None = None,
    no_args: list[str] | None = None,
) -> None:
    """Run ``app`` as the command ``prog`` and exit with its status (see the module docstring).

    Parameters
    ----------
    app : typer.Typer
    prog : str
        The command's name, which starts every error line (``"taan-core: error: ..."``).
    argv : list of str or None
        The arguments (``sys.argv[1:]`` when None). ``--debug`` is taken out of them.
    on_interrupt : callable, optional
        Returns the line printed on Ctrl-C (default ``"<prog>: interrupted"``).
    expected : callable, optional
        Returns ``{exception class: exit status}`` for failures that are not bugs but not the
        user's either (called only when an error happens, so its imports cost nothing before).
    no_args : list of str, optional
        The arguments used when none are given (e.g. ``["--help"]``).
    """
    import typer

    args = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in args or bool(os.environ.get("TAAN_DEBUG"))
    args = [a for a in args if a != DEBUG_FLAG]
    if not args and no_args is not None:
        args = list(no_args)
    usage_error = _usage_error_class(typer)

    def fail(line: str, code: int) -> None:
        print(f"{prog}: error: {line}", file=sys.stderr)
        sys.exit(code)

    try:
        code = app(args=args, prog_name=prog, standalone_mode=False)
    except SystemExit:
        raise
    except usage_error as err:
        if type(err).__name__ == "NoArgsIsHelpError":
            print(err.format_message())
            sys.exit(0)
        # typer words Enum refusals "Value error, 'x' is not one of ..."; the option name is enough.
        fail(one_line(err.format_message()).replace("Value error, ", ""), 2)
    except (typer.Abort, KeyboardInterrupt):
        print(on_interrupt() if on_interrupt is not None else f"{prog}: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as err:  # noqa: BLE001 - every error ends here, classified below
        if debug:
            raise
        if isinstance(err, UserError):
            fail(one_line(err), 2)
        if isinstance(err, OSError):
            fail(_os_error_line(err), 2)
        if _is_out_of_memory(err):
            fail(f"out of memory ({one_line(err)}); use a smaller data set, batch or model", 2)
        for cls, status in (expected() if expected is not None else {}).items():
            if isinstance(err, cls):
                fail(one_line(err), status)
        traceback.print_exc()
        print(f"{prog}: internal error: {type(err).__name__} (a bug, not a problem with your input; "
              f"please report it with the traceback above)", file=sys.stderr)
        sys.exit(1)
    if code == 130:  # typer's answer to a KeyboardInterrupt it caught itself
        print(on_interrupt() if on_interrupt is not None else f"{prog}: interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
