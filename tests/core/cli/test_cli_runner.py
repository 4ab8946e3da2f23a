"""One error path for the three command lines: user errors are one line and exit 2, a bug keeps
its traceback and exits 1, --debug shows every traceback."""

from __future__ import annotations

import pytest
import typer

from taan_core._cli_runner import run_app, user_input
from taan_core.errors import MissingDependencyError, UserError, require


def _app(body) -> typer.Typer:
    app = typer.Typer(add_completion=False)

    @app.command()
    def go(value: int = 1) -> None:
        body(value)

    @app.command()
    def other() -> None:  # two commands, so the app takes the command's name
        pass

    return app


def _run(capsys, app, *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as info:
        run_app(app, "prog", list(args), on_interrupt=lambda: "prog: stopped")
    return info.value.code, capsys.readouterr().err


def _raise(err: BaseException):
    def body(value: int) -> None:
        raise err
    return body


def test_a_user_error_is_one_line_and_status_2(capsys):
    code, err = _run(capsys, _app(_raise(UserError("--value must be\n  positive"))), "go")
    assert code == 2 and err == "prog: error: --value must be positive\n"


def test_a_library_refusal_inside_user_input_is_a_user_error(capsys):
    def body(value: int) -> None:
        with user_input(reword=lambda text: text.replace("value", "--value")):
            raise ValueError("value must be > 0")

    code, err = _run(capsys, _app(body), "go")
    assert code == 2 and err == "prog: error: --value must be > 0\n"


@pytest.mark.parametrize("error", [ValueError("a slip in the code"), TypeError("bad operand"), KeyError("k"),
                                   RuntimeError("shape mismatch")])
def test_anything_else_is_a_bug_with_its_traceback_and_status_1(capsys, error):
    code, err = _run(capsys, _app(_raise(error)), "go")
    assert code == 1
    assert "Traceback (most recent call last)" in err and type(error).__name__ in err
    assert err.strip().splitlines()[-1].startswith(f"prog: internal error: {type(error).__name__} (a bug")


def test_os_errors_name_the_file(capsys):
    code, err = _run(capsys, _app(_raise(FileNotFoundError(2, "No such file or directory", "/x/y.pt"))), "go")
    assert code == 2 and err == "prog: error: /x/y.pt: No such file or directory\n"


def test_out_of_memory_is_one_line(capsys):
    code, err = _run(capsys, _app(_raise(MemoryError())), "go")
    assert code == 2 and err.startswith("prog: error: out of memory") and err.count("\n") == 1


def test_expected_failures_keep_their_status(capsys):
    class Diverged(RuntimeError):
        pass

    app = _app(_raise(Diverged("loss is nan at epoch 3")))
    with pytest.raises(SystemExit) as info:
        run_app(app, "prog", ["go"], expected=lambda: {Diverged: 1})
    assert info.value.code == 1 and capsys.readouterr().err == "prog: error: loss is nan at epoch 3\n"


def test_usage_errors_and_interrupts(capsys):
    app = _app(_raise(KeyboardInterrupt()))
    code, err = _run(capsys, app, "go", "--value", "x")
    assert code == 2 and err.startswith("prog: error: Invalid value for '--value'") and err.count("\n") == 1
    code, err = _run(capsys, app, "go")
    assert code == 130 and err == "prog: stopped\n"


@pytest.mark.parametrize("how", ["flag", "env"])
def test_debug_shows_the_traceback_of_a_user_error(capsys, monkeypatch, how):
    app = _app(_raise(UserError("--value must be positive")))
    args = ["go"]
    if how == "flag":
        args.append("--debug")
    else:
        monkeypatch.setenv("TAAN_DEBUG", "1")
    with pytest.raises(UserError, match="--value must be positive"):
        run_app(app, "prog", args)


def test_require_names_the_extra(monkeypatch):
    import builtins

    real = builtins.__import__

    def no_h5py(name, *args, **kwargs):
        if name == "h5py":
            raise ImportError("No module named 'h5py'")
        return real(name, *args, **kwargs)

    monkeypatch.delitem(__import__("sys").modules, "h5py", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_h5py)
    with pytest.raises(MissingDependencyError, match=r"the cache needs the h5py package: pip install 'taan\[youtube8m\]'"):
        require("h5py", package="h5py", extra="youtube8m", purpose="the cache")
    assert issubclass(MissingDependencyError, ImportError) and issubclass(MissingDependencyError, UserError)


def test_a_bug_while_drawing_is_not_reported_as_the_users(capsys, monkeypatch, tmp_path):
    # taan-viz: the options and the checkpoint are fine; a ValueError from the figure code is a bug.
    import taan_core
    from taan_core.models import build_model
    from taan_viz import cli as viz_cli

    path = tmp_path / "c.pt"
    taan_core.save(build_model("taan", (3,), [1, 1], hidden=[4], num_hinges=2), path)

    def broken(*args, **kwargs):
        raise ValueError("index 3 is out of bounds")

    monkeypatch.setattr("taan_viz.plots.tree.plot_sharing_tree", broken)
    with pytest.raises(SystemExit) as info:
        viz_cli.main(["tree", str(path), "-o", str(tmp_path / "out"), "--dpi", "40"])
    err = capsys.readouterr().err
    assert info.value.code == 1 and "Traceback" in err and "index 3 is out of bounds" in err
