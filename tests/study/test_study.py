"""Tests of the reproduction study: sharing trees, coefficient selection, tables, the whole pipeline."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from taan_core.relatedness import tree_from_checkpoint
from taan_study import (
    BRANCHED_VARIANTS,
    VARIANTS,
    StudyConfig,
    format_tables,
    run_study,
    select_coefficients,
)
from taan_study import figures as figures_module
from tests.core.test_relatedness import _taan_checkpoint

# ---------------------------------------------------------------------------------- selection


def _run(model, c, seed, val, reg="cosine", dataset="d"):
    return {"dataset": dataset, "model": model, "reg": reg, "c": c, "seed": seed, "val_main": val}


def test_select_coefficients_uses_mean_validation_and_ties_go_small():
    runs = [_run("TAAN+cosine", 0.1, 0, 0.9), _run("TAAN+cosine", 0.1, 1, 0.5),
            _run("TAAN+cosine", 1.0, 0, 0.8), _run("TAAN+cosine", 1.0, 1, 0.8),
            _run("TAAN+distance", 1.0, 0, 0.7, "distance"), _run("TAAN+distance", 0.1, 0, 0.7, "distance"),
            _run("TAAN", 0.0, 0, 0.1, "none")]
    chosen = select_coefficients(runs)
    assert chosen == {"d": {"TAAN+cosine": 1.0, "TAAN+distance": 0.1}}
    assert [r["selected"] for r in runs] == [False, False, True, True, False, True, True]
    # A given choice only marks.
    select_coefficients(runs, {"d": {"TAAN+cosine": 0.1, "TAAN+distance": 0.1}})
    assert [r["selected"] for r in runs] == [True, True, False, False, False, True, True]


# ---------------------------------------------------------------------------------- the whole study

_TINY = {"planted": {"data_config": {"samples_per_task": 40, "num_tasks": 4, "groups_per_layer": [1, 2],
                                     "hidden": [8, 8]},
                     "hidden": [6, 6], "num_hinges": 2, "epochs": 2, "batch_size": 8}}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    lines: list[str] = []
    results = run_study(StudyConfig(["planted"], 2, True, out, grid=[0.1, 1.0], grid_seeds=1, budgets=_TINY,
                                    workers=1, timing_repeats=1, figures=False), log=lines.append)
    return out, results, lines


@pytest.mark.slow
def test_study_writes_results_with_every_model_trained(study):
    out, results, lines = study
    stored = json.loads((out / "results.json").read_text())
    assert stored["format"] == "taan-reproduce" and stored["version"] == 1
    assert stored["settings"]["seeds"] == [0, 1] and stored["settings"]["grid_seeds"] == [0]
    for key in ("created", "machine", "settings", "datasets", "selected_c", "runs", "timing", "figures",
                "wall_seconds"):
        assert key in stored
    # Grid on seed 0 (2 values x 3 regularisers), chosen c on seed 1, 2 branched per seed; the three
    # linear baselines (tests/study/test_linear.py checks their records).
    assert len(stored["runs"]) == 2 * 6 + 2 * 3 + 3 + 2 * 2 + 3
    assert len(lines) >= len(stored["runs"])
    runs = [r for r in stored["runs"] if r["registry"] != "linear"]
    models = {*VARIANTS, *BRANCHED_VARIANTS}
    for seed in (0, 1):
        trained = {r["model"] for r in runs if r["seed"] == seed and r["selected"]}
        assert trained == models
    for run in runs:
        for key in ("dataset", "model", "reg", "c", "seed", "test", "parameters", "train_seconds_per_epoch",
                    "inference_seconds", "val_main", "test_main", "epochs_run", "selected"):
            assert key in run, key
        assert run["epochs_run"] == 2 and run["parameters"] > 0
        assert set(run["test"]["per_task"]) == {f"task_{k:02d}" for k in range(4)}
        assert math.isfinite(run["test"]["main"]) and run["test"]["main"] == run["test_main"]
        assert run["train_seconds_per_epoch"] > 0 and run["inference_seconds"] > 0
        assert (out / run["run_dir"] / "checkpoint.pt").is_file()
    taan = [r for r in runs if r["registry"] == "taan"]
    assert all(len(r["ari"]) == 2 and len(r["tree"]) == 2 for r in taan)
    branched = [r for r in runs if r["model"] == "Branched (TAAN tree)"]
    assert [r["tree_source"] for r in branched] == ["runs/planted/taan-s0", "runs/planted/taan-s1"]
    assert set(stored["timing"]["planted"]) == models
    chosen = stored["selected_c"]["planted"]
    assert set(chosen) == {"TAAN+tracenorm", "TAAN+cosine", "TAAN+distance"}
    assert all(c in (0.1, 1.0) for c in chosen.values())


@pytest.mark.slow
def test_study_tables(study):
    out, results, _ = study
    text = (out / "tables.md").read_text()
    assert text.startswith("Budget.") and "\nTable 1. " in text
    for model in (*VARIANTS, *BRANCHED_VARIANTS):
        assert f"| {model} |" in text
    assert "| HardShare | 1.00× | 1.00× |" in (out / "table2.md").read_text()
    tables = format_tables(results)
    assert list(tables) == ["budget", "table1", "table1b", "table1c", "table1d", "table2", "ari", "trees"]
    hard = [r["test_main"] for r in results["runs"] if r["model"] == "HardShare"]
    assert f"{np.mean(hard):.3f} ± {np.std(hard, ddof=1):.3f}" in tables["table1"]
    rmse = [r["test"]["mean"]["rmse"] for r in results["runs"] if r["model"] == "HardShare"]
    assert f"| HardShare | {np.mean(rmse):.3f} ± {np.std(rmse, ddof=1):.3f} |" in tables["table1c"]
    # The grid table shows the seed the choice was made on, not the other seeds' runs at the chosen c.
    chosen = results["selected_c"]["planted"]["TAAN+cosine"]
    seed0 = [r["val_main"] for r in results["runs"] if r["model"] == "TAAN+cosine" and r["c"] == chosen
             and r["seed"] == 0]
    assert f"**{seed0[0]:.3f}** ✓" in tables["table1b"]
    assert "| planted | 4 | " in tables["budget"]


@pytest.mark.slow
def test_study_records_linear_baselines(study):
    from taan_core.metrics import evaluate
    from taan_study.linear import LINEAR_BASELINES, fit_linear
    from taan_study.runner import load_study_data

    out, results, lines = study
    stored = json.loads((out / "results.json").read_text())
    linear = [r for r in stored["runs"] if r["registry"] == "linear"]
    names = [LINEAR_BASELINES[k][0] for k in LINEAR_BASELINES]
    assert [r["model"] for r in linear] == names and stored["linear_notes"] == {}
    data = load_study_data("planted", None, stored["settings"]["budgets"]["planted"]["data_config"])
    for record in linear:
        # The networks' data and evaluation; val and test recorded, the fit timed; no seed, no epochs.
        assert record["data_fingerprint"] == stored["datasets"]["planted"]["fingerprint"]
        model, _ = fit_linear(data, record["linear"]["kind"])
        assert record["test"]["main"] == record["test_main"] == evaluate(model, data.split("test"), data.tasks)["main"]
        assert record["val_main"] == evaluate(model, data.split("val"), data.tasks)["main"]
        assert record["seed"] is None and record["selected"] and record["epochs_run"] == 0
        assert record["fit_seconds"] > 0 and record["inference_seconds"] > 0
        assert any(line.startswith(f"planted {record['model']} (alpha=") for line in lines)
    text = (out / "tables.md").read_text()
    table1 = format_tables(results)["table1"]
    # Above the networks, under their own label; in Table 1d with the chosen penalty; not in Table 2.
    assert table1.index("| *linear baselines* |") < table1.index("| Ridge per task |") < table1.index("| *networks* |")
    assert table1.index("| *networks* |") < table1.index("| STL |")
    for name in names:
        assert f"| planted | {name} | " in text
        assert f"| {name} |" not in (out / "table2.md").read_text()


@pytest.mark.slow
def test_insert_tables_into_document(study, tmp_path):
    from taan_study import insert_tables
    from taan_study.tables import BEGIN_MARK, END_MARK

    _, results, _ = study
    doc = tmp_path / "results.md"
    doc.write_text(f"# Results\n\n{BEGIN_MARK}\nSTALE BLOCK\n{END_MARK}\n\nprose\n")
    insert_tables(doc, results)
    text = doc.read_text()
    assert "STALE BLOCK" not in text and text.endswith(f"{END_MARK}\n\nprose\n")
    assert format_tables(results)["table1"] in text
    insert_tables(doc, results)
    assert doc.read_text() == text  # idempotent
    doc.write_text("no marks")
    with pytest.raises(ValueError, match="expected a block between"):
        insert_tables(doc, results)


@pytest.mark.slow
def test_study_resumes_and_takes_tree_from_checkpoint(study, tmp_path):
    out, results, _ = study
    source = out / "runs/planted/taan-cosine-c0.1-s0/checkpoint.pt"
    lines: list[str] = []
    again = run_study(StudyConfig(["planted"], 2, True, out, grid=[0.1, 1.0], grid_seeds=1, budgets=_TINY,
                                  workers=1, timing_repeats=0, figures=False, tree_from=source), log=lines.append)
    # Only the branched networks are trained again (their tree changed); the rest is reused (the
    # linear baselines are refitted, which takes no training: their lines do not start with "[").
    assert len([line for line in lines if line.startswith("[")]) == 4
    branched = [r for r in again["runs"] if r["model"].startswith("Branched")]
    assert {r["tree_source"] for r in branched} == {str(source)}
    assert [r["tree"] for r in branched if r["model"] == "Branched (TAAN tree)"][0] == tree_from_checkpoint(source)
    assert again["timing"] == {}
    reused = {r["run_dir"]: r["test_main"] for r in again["runs"] if not r["model"].startswith("Branched")}
    assert reused == {r["run_dir"]: r["test_main"] for r in results["runs"] if not r["model"].startswith("Branched")}


def test_render_figures_without_taan_viz(monkeypatch, tmp_path):
    def no_viz(checkpoint):
        raise ImportError("No module named 'taan_viz'")

    monkeypatch.setattr(figures_module, "_analyse", no_viz)
    runs = [{"dataset": "planted", "registry": "taan", "selected": True, "val_main": 0.5, "model": "TAAN",
             "reg": "none", "c": 0.0, "seed": 0, "run_dir": "runs/planted/taan-s0"},
            {"dataset": "planted", "registry": "taan", "selected": True, "val_main": 0.7, "model": "TAAN+cosine",
             "reg": "cosine", "c": 0.1, "seed": 2, "run_dir": "runs/planted/taan-cosine-c0.1-s2"},
            {"dataset": "planted", "registry": "taan", "selected": False, "val_main": 0.9, "model": "TAAN+cosine",
             "reg": "cosine", "c": 1.0, "seed": 0, "run_dir": "runs/planted/taan-cosine-c1-s0"},
            {"dataset": "planted", "registry": "hard", "selected": True, "val_main": 0.95, "model": "HardShare",
             "reg": "none", "c": 0.0, "seed": 0, "run_dir": "runs/planted/hardshare-s0"}]
    results = {"settings": {"datasets": ["planted"], "tree_threshold": 0.1}, "runs": runs}
    entries = figures_module.render_figures(results, tmp_path)
    # The best selected TAAN of any kind, then the best plain TAAN; never an unselected c or a baseline.
    assert [(e["model"], e["seed"], e["kind"]) for e in entries] == [
        ("TAAN+cosine", 2, "heatmap"), ("TAAN+cosine", 2, "tree"), ("TAAN", 0, "heatmap"), ("TAAN", 0, "tree")]
    assert entries[0]["path"] == "figures/planted/taan-cosine-s2/heatmap.png"
    assert all(e["error"] == "No module named 'taan_viz'" for e in entries)


def test_render_figures_draws_in_process(monkeypatch, tmp_path):
    import subprocess

    def no_subprocess(*args, **kwargs):
        raise AssertionError("the study must not start a process to draw its figures")

    monkeypatch.setattr(subprocess, "run", no_subprocess)
    monkeypatch.setattr(subprocess, "Popen", no_subprocess)
    a, b = [0.0, 0.0, 0.0], [2.0, -1.0, 1.5]
    run_dir = tmp_path / "runs/planted/taan-s0"
    run_dir.mkdir(parents=True)
    _taan_checkpoint(run_dir, [[a, a, b, b], [a, b, b, b]]).rename(run_dir / "checkpoint.pt")
    runs = [{"dataset": "planted", "registry": "taan", "selected": True, "val_main": 0.5, "model": "TAAN",
             "reg": "none", "c": 0.0, "seed": 0, "run_dir": "runs/planted/taan-s0"},
            {"dataset": "planted", "registry": "taan", "selected": True, "val_main": 0.9, "model": "TAAN+cosine",
             "reg": "cosine", "c": 0.1, "seed": 0, "run_dir": "runs/planted/missing-s0"}]
    results = {"settings": {"datasets": ["planted"], "tree_threshold": 0.1}, "runs": runs}
    entries = figures_module.render_figures(results, tmp_path)
    drawn = [e for e in entries if e["model"] == "TAAN"]
    assert [e["kind"] for e in drawn] == ["heatmap", "tree"] and not any("error" in e for e in drawn)
    for entry in drawn:
        assert (tmp_path / entry["path"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # A checkpoint that cannot be read is one line in its entries, not a failed study.
    missing = [e for e in entries if e["model"] == "TAAN+cosine"]
    assert len(missing) == 2 and all("checkpoint.pt" in e["error"] and "\n" not in e["error"] for e in missing)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"datasets": ["omniglot"]}, ValueError, "data set 'omniglot' reads files: pass data_path"),
        ({"datasets": ["nope"]}, ValueError, "unknown data set 'nope'"),
        ({"datasets": []}, ValueError, "at least one data set"),
        ({"datasets": ["planted", "planted"]}, ValueError, "must not repeat"),
        ({"datasets": ["youtube8m"]}, ValueError, "reads files: pass data_path"),
        ({"seeds": 0}, ValueError, "seeds must be >= 1"),
        ({"seeds": True}, TypeError, "seeds must be an int"),
        ({"grid": [-1.0]}, ValueError, "grid must hold finite coefficients > 0"),
        ({"workers": 0}, ValueError, "workers must be an int >= 1"),
        ({"grid_seeds": 5}, ValueError, r"grid_seeds must be an int in \[1, 3\]"),
        ({"timing_repeats": -1}, ValueError, "timing_repeats must be an int >= 0"),
        ({"budgets": {"digits": {}}}, ValueError, "budgets names 'digits'"),
        ({"budgets": {"planted": {"epoch": 3}}}, ValueError, r"unknown budget entries \['epoch'\]"),
    ],
)
def test_study_config_errors(tmp_path, kwargs, error, match):
    kwargs = {"datasets": ["planted"], **kwargs}
    with pytest.raises(error, match=match):
        StudyConfig(out=tmp_path, **kwargs)


def test_reproduce_command_parses_and_reports_errors(tmp_path):
    import typer
    from typer.testing import CliRunner

    from taan_study import reproduce_command

    app = typer.Typer()
    app.command()(reproduce_command)
    result = CliRunner().invoke(app, ["--datasets", "omniglot", "--out", str(tmp_path)])
    assert isinstance(result.exception, ValueError) and "omniglot" in str(result.exception)
    result = CliRunner().invoke(app, ["--grid", "0.1,x", "--out", str(tmp_path)])
    assert isinstance(result.exception, ValueError) and "--grid must be comma-separated numbers" in str(result.exception)
    help_text = CliRunner().invoke(app, ["--help"]).output
    for option in ("--datasets", "--seeds", "--quick", "--out", "--data", "--tree-from"):
        assert option in help_text


def test_data_fingerprint_tells_data_apart():
    from taan_core.data import load_dataset
    from taan_study.runner import data_fingerprint

    config = {"samples_per_task": 20, "num_tasks": 2, "groups_per_layer": [1, 2], "hidden": [4, 4]}
    first = data_fingerprint(load_dataset("planted", **config))
    assert first == data_fingerprint(load_dataset("planted", **config))
    assert first != data_fingerprint(load_dataset("planted", **{**config, "seed": 1}))


@pytest.mark.slow
def test_runs_on_other_data_are_not_reused(study):
    from taan_study import RunSpec
    from taan_study.study import _check_data, _reuse

    out, results, _ = study
    record = next(r for r in results["runs"] if r["model"] == "HardShare")
    fingerprints = {"planted": record["data_fingerprint"]}
    spec = RunSpec.from_dict(record["spec"])
    assert _reuse(spec, out, fingerprints)["test_main"] == record["test_main"]
    assert _reuse(spec, out, {"planted": "0" * 16}) is None
    with pytest.raises(RuntimeError, match="differ from the data the study started with"):
        _check_data([record], {"planted": "0" * 16})


# ---------------------------------------------------------------------------------- one tree

def _partition(groups) -> list[list[int]]:
    """Each layer's groups numbered by first appearance in task order (names of groups differ)."""
    out = []
    for row in np.asarray(groups).tolist():
        ids: dict[int, int] = {}
        out.append([ids.setdefault(g, len(ids)) for g in row])
    return out


def _viz_tree(checkpoint, threshold):
    from taan_core.checkpoint import load_checkpoint
    from taan_viz import analyze

    return analyze(load_checkpoint(checkpoint), measure="data").sharing_tree(threshold).groups


def test_study_tree_equals_taan_viz_tree_at_every_threshold(tmp_path):
    from tests.viz.viz_helpers import make_checkpoint_dict

    # One rule (taan_viz.sharing calls taan_core.relatedness.sharing_groups); what is left to
    # check is what each side feeds it: the data measure of each layer and the RMS norms as
    # scales. Planted groups blurred by per-task jitter spread the distances, so every
    # threshold of the sweep cuts the tree differently and any difference shows.
    raw = make_checkpoint_dict(groups=[[0, 0, 0, 0, 1, 1, 1, 1], [0, 0, 1, 1, 2, 2, 3, 3], list(range(8))],
                               task_names=[f"t{k}" for k in range(8)], layer_names=["l1", "l2", "l3"])
    gen = torch.Generator().manual_seed(3)
    for layer in raw["layers"]:
        layer["alpha"] = layer["alpha"] + 0.15 * torch.randn(layer["alpha"].shape, generator=gen)
    path = tmp_path / "checkpoint.pt"
    torch.save(raw, path)
    seen = set()
    for threshold in np.linspace(0.0, 1.5, 31):
        core = tree_from_checkpoint(path, float(threshold))
        assert _partition(core) == _partition(_viz_tree(path, float(threshold))), threshold
        seen.add(tuple(map(tuple, core)))
    assert len(seen) >= 5, "the sweep must cut the tree in several ways"


@pytest.mark.slow
def test_recorded_trees_equal_taan_viz_trees(study):
    out, results, _ = study
    threshold = results["settings"]["tree_threshold"]
    taan = [r for r in results["runs"] if r["registry"] == "taan"]
    assert taan
    for run in taan:
        checkpoint = out / run["run_dir"] / "checkpoint.pt"
        assert run["tree"] == tree_from_checkpoint(checkpoint, threshold)
        assert _partition(run["tree"]) == _partition(_viz_tree(checkpoint, threshold)), run["run_dir"]


@pytest.mark.slow
def test_recorded_ari_equals_taan_viz_ari(study):
    from taan_core.checkpoint import load_checkpoint
    from taan_viz import analyze

    out, results, _ = study
    for run in (r for r in results["runs"] if r["registry"] == "taan"):
        analysis = analyze(load_checkpoint(out / run["run_dir"] / "checkpoint.pt"), measure="data")
        assert run["ari"] == pytest.approx([la.ari for la in analysis.layers]), run["run_dir"]


# ---------------------------------------------------------------------------------- typed settings

def test_study_config_normalises_and_run_study_takes_only_a_config(tmp_path):
    config = StudyConfig("planted,digits", [2, 0], quick=True, out=str(tmp_path), budgets={"planted": {"epochs": 1}})
    assert config.datasets == ("planted", "digits") and config.seeds == (2, 0) and config.out == tmp_path
    assert config.grid == (0.01, 0.1) and config.grid_seeds == 2 and config.timing_repeats == 1
    assert config.budget("planted")["epochs"] == 1 and config.budget("digits")["epochs"] == 2
    config.budget("planted")["epochs"] = 99  # a copy: the config does not change
    assert config.budget("planted")["epochs"] == 1
    with pytest.raises(TypeError, match="config must be a StudyConfig, got dict"):
        run_study({"datasets": ["planted"]})


def test_run_spec_round_trips_through_its_stored_form():
    from taan_study import RunSpec

    spec = RunSpec(dataset="planted", variant="TAAN", registry="taan", model_config={"hidden": [4]}, reg="none",
                   c=0.0, seed=1, train={"epochs": 2}, run_dir="runs/planted/taan-s1")
    stored = json.loads(json.dumps(spec.to_dict()))
    assert RunSpec.from_dict(stored) == spec
    with pytest.raises(ValueError, match=r"unknown run spec fields \['nope'\]"):
        RunSpec.from_dict({**stored, "nope": 1})


def test_school_budget_is_the_command_lines_defaults(tmp_path):
    from taan_core.train import DATASET_DEFAULTS
    from taan_study.study import _variant_spec

    config = StudyConfig("school", [0], data_path=str(tmp_path / "school.mat"), out=str(tmp_path))
    defaults = DATASET_DEFAULTS["school"]
    taan = _variant_spec(config, "school", config.budget("school"), "TAAN", 0)
    hard = _variant_spec(config, "school", config.budget("school"), "HardShare", 0)
    for spec in (taan, hard):
        assert spec.data_path == str(tmp_path / "school.mat")
        assert {k: spec.train[k] for k in ("epochs", "batch_size", "lr", "sampler", "starts", "patience")} == {
            k: defaults[k] for k in ("epochs", "batch_size", "lr", "sampler", "starts", "patience")}
        assert spec.model_config["hidden"] == defaults["hidden"]
    assert taan.model_config["num_hinges"] == defaults["hinges"]
    assert {k: taan.model_config[k] for k in defaults["model_config"]} == defaults["model_config"]
    with pytest.raises(ValueError, match="reads files: pass data_path"):
        StudyConfig("school", [0], out=str(tmp_path))
