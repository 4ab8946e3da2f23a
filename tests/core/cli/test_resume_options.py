"""--resume checks the data and refuses changed options."""

from __future__ import annotations



from taan_core.checkpoint import load_checkpoint

from tests.core.reliability_helpers import (  # noqa: F401 - fixtures and helpers
    npz,
    _write_npz,
    _cli,
    _one_line,
    _npz_args,
)


# --------------------------------------------------------------------------------- 9. resume and data


def test_resume_refuses_changed_data_unless_allowed(npz, tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = _cli(capsys, *_npz_args(npz, out, "--quiet"))
    assert code == 0, err
    assert len(load_checkpoint(out / "last.pt").raw["extra"]["data_fingerprint"]) == 16
    _write_npz(npz, seed=1)  # the same shapes, other values
    resume = ["train", "--out", str(out), "--resume", "--epochs", "2", "--quiet"]
    line = _one_line(*_cli(capsys, *resume)[::2])
    assert "the data changed since the run started" in line and "--allow-data-change" in line
    code, _, err = _cli(capsys, *resume, "--allow-data-change")
    assert code == 0, err
    assert load_checkpoint(out / "last.pt").raw["epoch"] == 2
    line = _one_line(*_cli(capsys, *_npz_args(npz, tmp_path / "other", "--allow-data-change"))[::2])
    assert "--allow-data-change applies only with --resume" in line


def test_resume_accepts_unchanged_options_and_refuses_changes(npz, tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = _cli(capsys, *_npz_args(npz, out, "--quiet", "--reg", "tracenorm", "--c", "0.5"))
    assert code == 0, err
    same = _npz_args(npz, out, "--quiet", "--reg", "tracenorm", "--c", "0.5", "--model", "taan", "--resume")
    same[same.index("--epochs") + 1] = "2"
    code, _, err = _cli(capsys, *same)
    assert code == 0, err
    assert load_checkpoint(out / "last.pt").raw["epoch"] == 2
    for option, value, stored in (("--lr", "0.02", "0.01"), ("--hidden", "16", "[8]"), ("--c", "0.1", "0.5"),
                                  ("--model", "hard", "taan")):
        changed = list(same)
        changed[changed.index(option) + 1] = value
        line = _one_line(*_cli(capsys, *changed)[::2])
        assert f"got {option} {value} (the run has {stored})" in line
