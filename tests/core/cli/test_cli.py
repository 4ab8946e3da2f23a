"""`taan-core train` and `taan-core eval`: results, resume, and one-line user errors (exit 2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from taan_core.checkpoint import load_checkpoint
from taan_core.cli import main

# A short run of the default planted benchmark: one epoch, few hinges, large batches.
_FAST = ["--epochs", "1", "--hinges", "2", "--batch-size", "128", "--quiet"]


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(list(args))
    captured = capsys.readouterr()
    return info.value.code, captured.out, captured.err


def _assert_user_error(code: int, out: str, err: str, match: str) -> None:
    assert code == 2
    assert "Traceback" not in err and "Traceback" not in out
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("taan-core: error: ")
    assert match in lines[0], lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "run"
    with pytest.raises(SystemExit) as info:
        main(["train", *_FAST, "--out", str(out)])
    assert info.value.code == 0
    return out


@pytest.mark.slow
def test_train_writes_a_loadable_run(trained):
    ckpt = load_checkpoint(trained / "checkpoint.pt")
    assert ckpt.data["name"] == "planted"
    assert len(ckpt.task_names) == len(ckpt.groups[0])
    assert [layer.num_hinges for layer in ckpt.layers] == [2] * len(ckpt.layers)
    # the planted student defaults to 32 units per layer, one layer per planted grouping, and
    # shares every weight like its teacher: one head, standardised pre-activations
    config = ckpt.raw["model"]["config"]
    assert config["hidden"] == [32] * len(ckpt.groups)
    assert config["shared_head"] is True and config["batch_norm"] is True and config["batch_norm_affine"] is False
    assert len((trained / "metrics.jsonl").read_text().splitlines()) == 1


@pytest.mark.slow
def test_eval_prints_per_task_table(trained, capsys):
    code, out, err = _cli(capsys, "eval", str(trained / "checkpoint.pt"), "--split", "val")
    assert code == 0, err
    ckpt = load_checkpoint(trained / "checkpoint.pt")
    for name in ckpt.task_names:
        assert name in out
    assert "mean" in out and "r2" in out
    main_value = ckpt.metrics[0]["val"]["main"]
    assert f"main: {main_value:.4f}" in out


@pytest.mark.slow
def test_eval_json(trained, capsys):
    code, out, _ = _cli(capsys, "eval", str(trained), "--split", "val", "--json")
    assert code == 0
    result = json.loads(out)
    ckpt = load_checkpoint(trained / "checkpoint.pt")
    assert result["main"] == pytest.approx(ckpt.metrics[0]["val"]["main"], rel=1e-5)
    assert set(result["per_task"]) == set(ckpt.task_names)


@pytest.mark.slow
def test_train_refuses_to_clobber_and_resume_checks(trained, capsys):
    _assert_user_error(*_cli(capsys, "train", "--out", str(trained)), "already holds a run")
    _assert_user_error(*_cli(capsys, "train", "--out", str(trained), "--resume", "--lr", "0.1"),
                       "only --epochs, --device, --threads and --quiet may change, got --lr")
    _assert_user_error(*_cli(capsys, "train", "--out", str(trained), "--resume", "--overwrite"),
                       "--resume and --overwrite exclude each other")
    _assert_user_error(*_cli(capsys, "train", "--out", str(trained.parent / "none"), "--resume"),
                       "last.pt: no such file, nothing to resume")


@pytest.mark.slow
def test_resume_through_the_cli_extends_the_run(trained, tmp_path, capsys):
    out = tmp_path / "copy"
    out.mkdir()
    for name in ("last.pt", "checkpoint.pt", "metrics.jsonl"):
        (out / name).write_bytes((trained / name).read_bytes())
    code, _, err = _cli(capsys, "train", "--out", str(out), "--resume", "--epochs", "2", "--quiet")
    assert code == 0, err
    last = load_checkpoint(out / "last.pt")
    assert last.raw["epoch"] == 2 and [h["epoch"] for h in last.history] == [1, 2]
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2


@pytest.mark.parametrize("args,match", [
    (["train", "--dataset", "mnist"], "Invalid value for '--dataset': 'mnist' is not one of 'planted', 'digits'"),
    (["train", "--model", "resnet"], "Invalid value for '--model': 'resnet' is not one of 'taan', 'taan-conv'"),
    (["train", "--reg", "l1"], "Invalid value for '--reg': 'l1' is not one of 'none', 'tracenorm'"),
    (["train", "--hidden", "64,x"], "--hidden must be comma-separated positive ints"),
    (["train", "--hidden", "0"], "--hidden must be comma-separated positive ints"),
    (["train", "--model", "hard", "--hinges", "4"], "--hinges applies to models with task-adaptive"),
    (["train", "--epochs", "0"], "epochs must be >= 1, got 0"),
    (["train", "--lr", "-1"], "lr must be finite and >= 0"),
    (["train", "--device", "tpu"], "device must be auto, cpu, cuda, cuda:N or mps, got 'tpu'"),
    (["train", "--epochs", "many"], "Invalid value for '--epochs'"),
    (["train", "--no-such-option"], "No such option: --no-such-option"),
    (["eval"], "Missing argument"),
    (["frobnicate"], "No such command"),
])
def test_bad_options_give_one_line(capsys, tmp_path, args, match):
    _assert_user_error(*_cli(capsys, *args, "--out", str(tmp_path / "x")) if args[0] == "train" and len(args) > 1
                       else _cli(capsys, *args), match)


def test_help(capsys):
    code, out, _ = _cli(capsys)
    assert code == 0 and "train" in out and "eval" in out
    code, out, _ = _cli(capsys, "train", "--help")
    assert code == 0 and "--resume" in out and "--overwrite" in out


def test_the_choices_offered_are_the_registries():
    # The CLI reads its choices from taan_core._names (no torch at start-up); the registries
    # map the same names to code. Neither may gain a name the other lacks. Read from --help as
    # a user sees it (wide enough that no choice list wraps).
    import re

    from taan_core.data import DATASETS
    from taan_core.models import MODELS
    from taan_core.nn.regularizers import REGULARIZERS
    from taan_core.train import DATASET_DEFAULTS

    shown = subprocess.run([sys.executable, "-m", "taan_core.cli", "train", "--help"], capture_output=True, text=True,
                           env={**os.environ, "COLUMNS": "400", "NO_COLOR": "1"}, check=True).stdout
    choices = {m[1]: m[2].split("|") for m in re.finditer(r"--([a-z-]+)\s+<([a-z0-9|-]+)>", shown)}
    assert choices["dataset"] == list(DATASETS) == list(DATASET_DEFAULTS)
    assert choices["model"] == list(MODELS)
    assert choices["reg"] == ["none", *REGULARIZERS]


def test_the_cli_and_the_study_train_planted_alike():
    # One table of defaults: the study's planted budget is taan-core train's (the patience
    # included, which once differed).
    from taan_core.train import DATASET_DEFAULTS
    from taan_study.budgets import BUDGETS

    defaults, budget = DATASET_DEFAULTS["planted"], BUDGETS["planted"]
    for key in ("epochs", "batch_size", "lr", "weight_decay", "schedule", "patience", "sampler", "starts"):
        assert budget[key] == defaults[key], key
    assert budget["hidden"] == defaults["hidden"] and budget["num_hinges"] == defaults["hinges"]
    assert budget["taan"] == defaults["taan_config"] and defaults["patience"] == 10


def _bad_file(kind: str, good: Path, folder: Path) -> tuple[Path, Path | None]:
    """Write one kind of broken checkpoint; return it and, for the malicious one, its marker file."""
    path = folder / f"{kind}.pt"
    marker = None
    if kind == "truncated":
        data = good.read_bytes()
        path.write_bytes(data[: len(data) // 3])
    elif kind == "random":
        path.write_bytes(os.urandom(4096).replace(b"\x80", b"\x00").replace(b"PK", b"pk"))
    elif kind == "json":
        path.write_text(json.dumps({"format": "taan-checkpoint", "version": 1}))
    elif kind == "malicious":
        marker = folder / "code-ran"
        payload = _Payload(marker)
        obj = torch.load(good, weights_only=True)
        obj["extra"] = {"payload": payload}
        torch.save(obj, path)
    else:
        obj = torch.load(good, weights_only=True)
        if kind == "version":
            obj["version"] = 3
        elif kind == "missing":
            del obj["layers"]
        elif kind == "shapes":
            obj["layers"][0]["alpha"] = obj["layers"][0]["alpha"][:, :1]
        torch.save(obj, path)
    return path, marker


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.slow
@pytest.mark.parametrize("kind,match", [
    ("truncated", "truncated or damaged zip archive"),
    ("random", "unrecognised format"),
    ("json", "got a JSON/text file"),
    ("version", "version: expected format version 2 (or 1), got 3"),
    ("missing", "layers: missing key"),
    ("shapes", "layers[0].hinges: expected shape (M,) with M = alpha.shape[1] = 1, got (2,)"),
    ("malicious", "refused to load"),
])
def test_eval_of_bad_checkpoint_gives_one_line(trained, tmp_path, capsys, kind, match):
    path, marker = _bad_file(kind, trained / "checkpoint.pt", tmp_path)
    code, out, err = _cli(capsys, "eval", str(path))
    _assert_user_error(code, out, err, match)
    assert str(path) in err
    if marker is not None:
        assert not marker.exists(), "unpickling ran code"


@pytest.mark.slow
def test_console_entry_point_reports_bad_files_in_one_line(trained, tmp_path):
    path, marker = _bad_file("malicious", trained / "checkpoint.pt", tmp_path)
    child = subprocess.run([sys.executable, "-m", "taan_core.cli", "eval", str(path)], capture_output=True,
                           text=True, timeout=120, env=dict(os.environ, PYTHONPATH=str(Path.cwd())))
    assert child.returncode == 2
    assert child.stdout == ""
    assert len(child.stderr.strip().splitlines()) == 1 and "Traceback" not in child.stderr
    assert not marker.exists()


@pytest.mark.slow
def test_eval_of_a_reference_import_needs_a_model(tmp_path, capsys):
    path = tmp_path / "reference.pt"
    torch.save({"layer1.alpha": torch.randn(3, 4), "layer1.basis": torch.randn(1, 4)}, path)
    _assert_user_error(*_cli(capsys, "eval", str(path)), "model: expected a full taan checkpoint")


@pytest.mark.slow
def test_branched_follows_the_sharing_tree_of_a_taan(trained, tmp_path, capsys):
    from taan_core.relatedness import branched_overrides

    out = tmp_path / "branched"
    code, _, err = _cli(capsys, "train", "--model", "branched", "--tree-from", str(trained / "checkpoint.pt"),
                        "--epochs", "1", "--batch-size", "128", "--quiet", "--out", str(out))
    assert code == 0, err
    ckpt = load_checkpoint(out / "checkpoint.pt")
    config = ckpt.raw["model"]["config"]
    expected = branched_overrides(trained / "checkpoint.pt")
    assert config["groups"] == expected["groups"]
    assert config["hidden"] == expected["hidden"]
    assert ckpt.raw["model"]["class"] == "Branched"
    assert ckpt.layers == []  # a hard-sharing network has no task-adaptive layers


@pytest.mark.parametrize("args,match", [
    (["--model", "branched"], "--model branched needs --tree-from"),
    (["--tree-from", "x.pt"], "--tree-from applies only to it"),
    (["--model", "branched", "--tree-from", "x.pt", "--hinges", "4"], "--hinges applies to models"),
])
def test_branched_option_errors(args, match, tmp_path, capsys):
    code, out, err = _cli(capsys, "train", *args, "--out", str(tmp_path / "run"))
    _assert_user_error(code, out, err, match)


def test_attributes_writes_the_planted_groups_as_categories(capsys, tmp_path):
    import csv

    out = tmp_path / "known.csv"
    code, _, err = _cli(capsys, "attributes", "--dataset", "planted", "-o", str(out))
    assert code == 0, err
    rows = list(csv.reader(out.open()))
    assert rows[0] == ["task", "layer1", "layer2", "layer3"] and len(rows) == 17
    from taan_core.data import load_dataset

    groups = load_dataset("planted").ground_truth["groups"]
    assert [r[1] for r in rows[1:]] == [f"g{g + 1}" for g in groups[0]]
    assert f"wrote {out}" in err


def test_attributes_of_a_data_set_that_knows_nothing_is_one_line(capsys, tmp_path):
    code, out, err = _cli(capsys, "attributes", "--dataset", "digits", "-o", str(tmp_path / "x.csv"))
    _assert_user_error(code, out, err, "records nothing known about its tasks")
    assert not (tmp_path / "x.csv").exists()


def test_train_test_prints_and_records_the_chosen_checkpoints_test_metrics(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, _ = _cli(capsys, "train", *_FAST, "--starts", "1", "--epochs", "2", "--test", "--out", str(out))
    assert code == 0
    raw = load_checkpoint(out / "checkpoint.pt").raw
    record = raw["extra"]["test"]
    assert record["split"] == "test" and record["epoch"] == raw["epoch"] == raw["extra"]["best_epoch"]
    assert set(record["pooled"]) == {"ev", "rmse", "n"} and record["main"] == pytest.approx(record["pooled"]["ev"])
    # Printed once, on stdout, with the headline "val main" names and the pooled RMSE.
    lines = stdout.strip().splitlines()
    assert len(lines) == 1
    assert lines[0] == (f"test main {record['main']:.4f} at epoch {record['epoch']} (pooled explained variance over "
                        f"the 16 tasks' samples); pooled RMSE {record['pooled']['rmse']:.4f} over "
                        f"{record['pooled']['n']} samples")
    # The recorded test metrics are those of the best epoch's model, evaluated afresh.
    from taan_core.checkpoint import model_from_checkpoint
    from taan_core.data import load_dataset
    from taan_core.metrics import evaluate

    ckpt = load_checkpoint(out / "checkpoint.pt")
    data = load_dataset("planted", **ckpt.data["config"])
    again = evaluate(model_from_checkpoint(ckpt), data.split("test"), list(data.tasks))
    assert again["main"] == pytest.approx(record["main"], rel=1e-6)


def test_image_size_reaches_the_omniglot_loader(tmp_path, capsys):
    from tests.core.data.test_omniglot import _tree

    root = _tree(tmp_path / "omniglot", {"images_background": {"Greek": 3, "Latin": 2}})
    out = tmp_path / "run"
    code, _, err = _cli(capsys, "train", "--dataset", "omniglot", "--data", str(root), "--image-size", "48",
                        "--hidden", "8", "--hinges", "2", "--epochs", "1", "--starts", "1", "--batch-size", "2",
                        "--quiet", "--out", str(out))
    assert code == 0, err
    ckpt = load_checkpoint(out / "checkpoint.pt")
    assert ckpt.data["config"]["image_size"] == 48
    assert ckpt.raw["model"]["config"]["input_shape"] == [1, 48, 48]


def test_image_size_is_refused_for_data_sets_without_it(tmp_path, capsys):
    code, out, err = _cli(capsys, "train", "--image-size", "28", "--out", str(tmp_path / "run"))
    _assert_user_error(code, out, err, "--image-size applies to data sets of images that are resized (omniglot), "
                                       "not 'planted'")
