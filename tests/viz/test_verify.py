"""`taan-viz verify` and the library function behind it."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
import typer
from typer.testing import CliRunner

from taan_viz import verify
from taan_viz.verify import max_relative_error, parse_hinges, verify_command, verify_gram

FAST = ["--precision", "30", "--samples", "4000"]


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    # A group with a callback, so that "verify" is a subcommand however many commands the real
    # taan-viz app registers.
    group = typer.Typer(add_completion=False, pretty_exceptions_enable=False)

    @group.callback()
    def _root() -> None:
        pass

    group.command("verify")(verify_command)
    return group


def test_cli_registers_verify():
    from taan_viz.cli import app as cli_app

    names = [c.name for c in cli_app.registered_commands]
    assert "verify" in names
    assert any(c.callback is verify_command for c in cli_app.registered_commands)


def test_verify_prints_table_and_exits_0(app):
    result = CliRunner().invoke(app, ["verify", *FAST])
    assert result.exit_code == 0, result.output
    out = result.stdout
    for text in ("relu-relu", "relu-hinge:b>0", "relu-hinge:b<=0", "hinge-hinge:bi<=bj",
                 "G[3,3]", "quadrature", "Monte Carlo", "max relative error, closed form vs sympy"):
        assert text in out
    worst = float(out.split("closed form vs sympy:")[1].split()[0])
    assert worst <= 1e-10


def test_verify_reports_hinges_in_either_order(app):
    result = CliRunner().invoke(app, ["verify", "--hinges=2,-1", "--mu", "0.5", "--sigma", "0.3", *FAST])
    assert result.exit_code == 0, result.output
    assert "hinge-hinge:bi>bj" in result.stdout


def test_verify_exits_1_when_closed_form_disagrees(app, monkeypatch):
    import taan_core.gaussian

    true_gram = taan_core.gaussian.gram_matrix

    def perturbed(hinges, mu=0.0, sigma=1.0):
        return true_gram(hinges, mu, sigma) * (1 + 1e-6)

    monkeypatch.setattr(taan_core.gaussian, "gram_matrix", perturbed)
    result = CliRunner().invoke(app, ["verify", *FAST])
    assert result.exit_code == 1, result.output
    worst = float(result.stdout.split("closed form vs sympy:")[1].split()[0])
    assert 5e-7 < worst < 2e-6


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--hinges", "a,b"], "hinges must be comma-separated numbers"),
        (["--hinges", ""], "hinges must be comma-separated numbers"),
        (["--hinges", "1,inf"], "hinges must be finite"),
        (["--sigma", "0"], "sigma must be > 0"),
        (["--mu", "nan"], "mu must be finite"),
        (["--samples", "1"], "samples must be >= 2"),
        (["--precision", "0"], "precision must be >= 1"),
        (["--tolerance", "0"], "tolerance must be a finite number > 0"),
    ],
)
def test_verify_bad_input_exits_2_with_one_line(capsys, args, match):
    from taan_viz.cli import main

    with pytest.raises(SystemExit) as info:
        main(["verify", *args])
    captured = capsys.readouterr()
    assert info.value.code == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("taan-viz: error: ")
    assert match in lines[0]
    assert captured.out == ""


def test_verify_gram_rows_agree_four_ways():
    hinges, mu, sigma = [-1.0, 0.5, 2.0, 0.5], 0.3, 1.7
    rows = verify_gram(hinges, mu, sigma, precision=30, samples=20_000, seed=1)
    assert len(rows) == 15  # (M + 1)(M + 2) / 2
    assert [(r.i, r.j) for r in rows][:3] == [(0, 0), (0, 1), (0, 2)]
    for r in rows:
        assert r.rel_err_closed <= 1e-12
        assert r.rel_err_quadrature <= 1e-9
        if r.monte_carlo_se > 0:
            assert abs(r.monte_carlo_z) < 5
        else:
            assert r.monte_carlo == 0 and float(r.symbolic) == 0
    assert max_relative_error(rows) == max(r.rel_err_closed for r in rows)
    assert max_relative_error(rows, "quadrature") == max(r.rel_err_quadrature for r in rows)


def test_verify_gram_quadrature_resolves_narrow_and_tail_measures():
    # sigma << hinge spacing puts all the mass in a sliver of the support; hinges 30 sigma below
    # the mean put the support in a far tail. quad must be split finely enough for both.
    rows = verify_gram([-0.03, 0.0005, 25.0], mu=0.0, sigma=1e-3, precision=30, samples=100)
    assert max_relative_error(rows, "quadrature") <= 1e-9
    assert max_relative_error(rows) <= 1e-10
    tail = [r for r in rows if (r.i, r.j) == (1, 1)][0]
    assert 0 < float(tail.symbolic) < 1e-190


def test_verify_gram_rejects_bad_input():
    with pytest.raises(ValueError, match="at least one hinge"):
        verify_gram([])
    with pytest.raises(TypeError, match="samples must be an int"):
        verify_gram([0.5], samples=10.0)
    with pytest.raises(ValueError, match="sigma must be > 0"):
        verify_gram([0.5], sigma=-1.0)
    with pytest.raises(ValueError, match="against must be"):
        max_relative_error([], against="mc")


def test_parse_hinges():
    assert parse_hinges("-1, 0.5,2") == [-1.0, 0.5, 2.0]
    assert parse_hinges("1e-3") == [1e-3]
    with pytest.raises(ValueError, match="comma-separated"):
        parse_hinges("1,,2")
    with pytest.raises(ValueError, match="finite"):
        parse_hinges("nan")


def test_relative_error_floor_for_entries_below_float64():
    assert verify._relative(0.0, 1e-320) < 1e-10
    assert verify._relative(1.0, 2.0) == 0.5
    assert math.isnan(verify.VerifyRow(0, 0, "relu-relu", "", 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0).monte_carlo_z)


@pytest.mark.slow
def test_importing_cli_does_not_import_sympy():
    code = "import sys, taan_viz.cli; print('sympy' in sys.modules, 'mpmath' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_verify_uses_float64_closed_form(monkeypatch):
    import taan_core.gaussian

    seen = []
    true_gram = taan_core.gaussian.gram_matrix

    def spy(hinges, mu=0.0, sigma=1.0):
        seen.append(hinges.dtype)
        return true_gram(hinges, mu, sigma)

    monkeypatch.setattr(taan_core.gaussian, "gram_matrix", spy)
    verify_gram([0.5], precision=20, samples=10)
    assert seen == [torch.float64]
