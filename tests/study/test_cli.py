"""``taan-study``: the study's command line, its help and its one-line user errors."""

from __future__ import annotations

import pytest

from taan_study.cli import main


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(list(args))
    captured = capsys.readouterr()
    return info.value.code, captured.out, captured.err


def test_help_lists_the_study_options(capsys):
    code, out, _ = _cli(capsys, "--help")
    assert code == 0
    for option in ("--datasets", "--seeds", "--quick", "--out", "--data", "--tree-from", "--grid", "--doc"):
        assert option in out


@pytest.mark.parametrize(("args", "match"), [
    (["--datasets", "omniglot"], "data set 'omniglot' reads files: pass data_path (--data PATH)"),
    (["--grid", "0.1,x"], "--grid must be comma-separated numbers"),
    (["--seeds", "0"], "seeds must be >= 1"),
    (["--seeds", "100000000"], "seeds must be at most 10000, got 100000000"),
    (["--nope"], "No such option: --nope"),
])
def test_user_errors_are_one_line(capsys, tmp_path, args, match):
    code, out, err = _cli(capsys, *args, "--out", str(tmp_path / "study"))
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("taan-study: error: ") and match in lines[0], lines[0]
    assert not (tmp_path / "study").exists()


def test_taan_core_no_longer_runs_the_study(capsys):
    from taan_core.cli import main as core_main

    with pytest.raises(SystemExit) as info:
        core_main(["reproduce", "--help"])
    assert info.value.code == 2
    assert "No such command 'reproduce'" in capsys.readouterr().err
