"""`taan-core train --seeds`: one normal run folder per seed, side by side with --workers, and a
failing seed reported without stopping the others."""

from __future__ import annotations

import pytest

from taan_core.train._multiseed import parse_seeds
from taan_core.checkpoint import load_checkpoint

from tests.core.test_cli import _FAST, _cli


@pytest.mark.parametrize("text, seeds", [("0,1,2", [0, 1, 2]), ("0-3", [0, 1, 2, 3]), (" 4, 0-1 ,9", [4, 0, 1, 9]),
                                         ("7", [7])])
def test_parse_seeds(text, seeds):
    assert parse_seeds(text) == seeds


@pytest.mark.parametrize("text, match", [("", "at least one seed"), ("a,b", "comma-separated ints"),
                                         ("3-1", "ranges like"), ("-1", "each >= 0"), ("1,1", "seed 1 twice")])
def test_parse_seeds_errors(text, match):
    with pytest.raises(ValueError, match=match):
        parse_seeds(text)


@pytest.mark.parametrize("args, match", [
    (["--seeds", "0,x"], "--seeds must be comma-separated ints"),
    (["--workers", "2"], "--workers applies only with --seeds"),
    (["--seeds", "0,1", "--seed", "3"], "--seed and --seeds exclude each other"),
    (["--seeds", "0,1", "--workers", "0"], "--workers must be an int >= 1, got 0"),
    (["--seeds", "0", "--dataset", "nope"], "Invalid value for '--dataset': 'nope' is not one of"),
])
def test_seed_option_errors_are_one_line(capsys, tmp_path, args, match):
    code, out, err = _cli(capsys, "train", *args, "--out", str(tmp_path / "runs"))
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("taan-core: error: ") and match in lines[0], err
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_seeds_write_one_run_per_seed_and_report_a_failing_one(capsys, tmp_path):
    out = tmp_path / "runs"
    # seed 2's folder already holds a run: that seed fails, the others still train.
    (out / "seed-2").mkdir(parents=True)
    (out / "seed-2" / "last.pt").write_bytes(b"taken")
    code, _, err = _cli(capsys, "train", *_FAST, "--seeds", "0,2,1", "--workers", "2", "--out", str(out))
    assert code == 1
    for seed in (0, 1):
        ckpt = load_checkpoint(out / f"seed-{seed}" / "checkpoint.pt")
        config = ckpt.raw["extra"]["train_config"]
        assert config["seed"] == seed and config["epochs"] == 1 and config["batch_size"] == 128
        assert [layer.num_hinges for layer in ckpt.layers] == [2] * len(ckpt.layers)
        assert (out / "logs" / f"seed-{seed}.log").is_file()
    first = load_checkpoint(out / "seed-0" / "checkpoint.pt").layers[0].alpha
    other = load_checkpoint(out / "seed-1" / "checkpoint.pt").layers[0].alpha
    assert not bool((first == other).all())  # different seeds, different runs
    assert not (out / "seed-2" / "checkpoint.pt").exists()
    assert "already holds a run" in (out / "logs" / "seed-2.log").read_text()
    assert "seed 2: failed with exit status 2" in err
    assert "2 of 3 seeds trained" in err and "failed: 2" in err
