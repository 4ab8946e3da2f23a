"""What taan-core says: errors in the options' words, sizes refused at once, the settings and
files of a run, eval of mixed kinds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import torch

from taan_core.checkpoint import build_checkpoint, load_checkpoint, save_checkpoint
from taan_core.train import Trainer

from tests.core.reliability_helpers import (  # noqa: F401 - fixtures and helpers
    data,
    npz,
    _ROOT,
    _KINDS,
    _cli,
    _one_line,
    _npz_args,
    _model,
    _config,
)


# ----------------------------------------------------------------------------- 11/13. messages, sizes


def test_a_too_narrow_measure_names_the_layer_before_anything_is_printed(data, tmp_path, capsys):
    from taan_viz.cli import main as viz_main
    from taan_viz.geometry import layer_geometry

    with pytest.raises(ValueError, match=r"layer l0: .* N\(0, 1e-300²\) is not finite: sigma is too small"):
        layer_geometry(torch.randn(3, 4), torch.linspace(-1, 1, 4), 0.0, 1e-300, name="l0")
    ckpt = build_checkpoint(_model(data), task_names=data.task_names)
    ckpt["layers"][1]["preact_std_overall"] = 1e-300
    path = save_checkpoint(ckpt, tmp_path / "narrow.pt")
    for args in (["inspect", str(path)], ["inspect", str(path), "--measure", "0,1e-300"]):
        with pytest.raises(SystemExit) as info:
            viz_main(args)
        captured = capsys.readouterr()
        assert info.value.code == 2
        assert captured.out == ""  # no half table
        name = ckpt["layer_names"][1] if "--measure" not in args else ckpt["layer_names"][0]
        assert f"layer {name}: " in captured.err and "1e-300" in captured.err


@pytest.mark.parametrize("sampler,match", [
    ("balanced", "the largest task has 36 training samples"),
    ("proportional", "the training split has 144 samples"),
])
def test_a_batch_larger_than_the_data_is_refused_at_once(data, sampler, match, tmp_path):
    with pytest.raises(ValueError, match=f"batch_size must be at most the size of the training data, got 100000000: "
                                         f"{match}"):
        Trainer(_model(data), data, _config(tmp_path / "run", batch_size=100_000_000, sampler=sampler))


def test_the_cli_refuses_a_huge_batch_in_one_line(npz, tmp_path, capsys):
    start = time.perf_counter()
    line = _one_line(*_cli(capsys, *_npz_args(npz, tmp_path / "run", "--batch-size", "100000000"))[::2])
    assert "--batch-size must be at most the size of the training data, got 100000000" in line
    assert time.perf_counter() - start < 30
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------ issue 13: eval and console


def test_eval_of_mixed_kinds_shows_each_kind_and_no_nan(npz, tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = _cli(capsys, *_npz_args(npz, out, "--quiet"))
    assert code == 0, err
    code, table, err = _cli(capsys, "eval", str(out), "--split", "val")
    assert code == 0, err
    code, text, _ = _cli(capsys, "eval", str(out), "--split", "val", "--json")
    result = json.loads(text)
    assert "nan" not in table.lower()
    header = next(line for line in table.splitlines() if "task" in line and "kind" in line)
    assert [m for m in ("rmse", "r2", "accuracy", "map@10") if m in header] == ["rmse", "r2", "accuracy", "map@10"]
    for task, kind in zip(("reg", "bin", "multi", "tags"), _KINDS):
        row = next(line for line in table.splitlines() if line.strip("│ ").startswith(task + " "))
        assert kind in row
        for value in result["per_task"][task].values():
            assert f"{value:.4f}" in row
    mean_row = next(line for line in table.splitlines() if line.strip("│ ").startswith("mean"))
    for value in result["mean"].values():
        assert f"{value:.4f}" in mean_row
    assert f"main: {result['main']:.4f} (mean over the 4 tasks of each task's headline metric" in table


def test_train_prints_its_settings_and_the_files_it_wrote(npz, tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = _cli(capsys, *_npz_args(npz, out, "--epochs", "2", "--patience", "7"))
    assert code == 0, err
    lines = err.splitlines()
    settings = {line.split()[0]: line for line in lines[:7]}
    assert "trunk mlp 8," in settings["model"] and "hinges 2" in settings["model"]
    assert "lr 0.01" in settings["optimiser"]
    assert "2, patience 7, batch 8" in settings["epochs"]
    assert settings["device"].split()[1:] == ["cpu,", "1", "thread"]
    assert "val main  mean over the 4 tasks of each task's headline metric: pooled explained variance (1 task), accuracy (2 tasks)" in err
    assert "ran 2 of 2 epochs (no early stop)" in err
    assert lines[-1] == f"wrote {out / 'checkpoint.pt'}, {out / 'last.pt'}, {out / 'metrics.jsonl'}"


def test_train_says_when_it_stopped_early(npz, tmp_path, capsys, monkeypatch):
    mains = iter([0.5, 0.4, 0.3, 0.2])

    def worse_each_epoch(self):
        return {"per_task": {}, "mean": {}, "main": next(mains)}

    monkeypatch.setattr(Trainer, "_evaluate", worse_each_epoch)
    code, _, err = _cli(capsys, *_npz_args(npz, tmp_path / "run", "--epochs", "4", "--patience", "1"))
    assert code == 0, err
    assert "stopped early after epoch 2 of 4: val main did not improve for 1 epochs" in err
    assert "best epoch 1: val main 0.5000" in err


def test_help_shows_whole_choice_lists_at_80_columns():
    child = subprocess.run([sys.executable, "-m", "taan_core.cli", "train", "--help"], capture_output=True, text=True,
                           timeout=120, env=dict(os.environ, PYTHONPATH=str(_ROOT), COLUMNS="80", TERM="dumb"))
    assert child.returncode == 0
    assert "…" not in child.stdout
    lines = child.stdout.splitlines()
    for option, choices, help_text in (
            ("--dataset", "planted|digits|exam|school|youtube8m|omniglot|npz", "Data set"),
            ("--model", "taan|taan-conv|stl|hard|soft-order|cross-stitch|mmoe|branched|hard-conv|stl-conv|"
                        "soft-order-conv|cross-stitch-conv|mmoe-conv|branched-conv", "Model"),
            ("--reg", "none|tracenorm|rownorm|cosine|distance", "Regulariser"),
            ("--sampler", "balanced|proportional", "Batch sampling")):
        # The metavar column of the option's rows, which wraps the list over several lines.
        first = next(i for i, line in enumerate(lines) if line.startswith(f"│ {option} "))
        start, end = lines[first].index("<"), lines[first].index(help_text)
        column = lines[first][start:end].strip()
        for line in lines[first + 1:]:
            if line.startswith("│ --") or not line.startswith("│"):
                break
            column += line[start:end].strip()
        assert column.startswith(f"<{choices}>"), column
    assert "--val-fraction" in child.stdout and "--allow-data-change" in child.stdout


@pytest.mark.parametrize("args,match", [
    (["--dataset", "npz"], "the npz data set needs --data"),
    (["--val-fraction", "0.9", "--test-fraction", "0.5"], "--val-fraction + --test-fraction must be < 1"),
    (["--dataset", "digits", "--data", "x.npz"], "reads no files; got --data 'x.npz'"),
])
def test_errors_name_the_cli_option(capsys, tmp_path, args, match):
    line = _one_line(*_cli(capsys, "train", *args, "--out", str(tmp_path / "x"))[::2])
    assert match in line


def test_val_and_test_fractions_reach_the_data(npz, tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = _cli(capsys, *_npz_args(npz, out, "--quiet", "--val-fraction", "0.25", "--test-fraction", "0.25"))
    assert code == 0, err
    config = load_checkpoint(out).data["config"]
    assert (config["val_fraction"], config["test_fraction"]) == (0.25, 0.25)


def test_a_memory_error_is_one_line(capsys, monkeypatch, tmp_path):
    import taan_core.data

    def too_big(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(taan_core.data, "load_dataset", too_big)
    line = _one_line(*_cli(capsys, "train", "--out", str(tmp_path / "run"))[::2])
    assert line.startswith("taan-core: error: out of memory")
