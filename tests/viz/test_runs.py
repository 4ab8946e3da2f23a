"""Several runs on the taan-viz command line: folders of runs, per-run outputs, consensus,
the report of several runs, refusal of runs that differ, and the measure warning."""

from __future__ import annotations

import json
import os

import pytest
import torch
from PIL import Image

from taan_core.checkpoint import load_checkpoint
from taan_viz.analysis import analyze
from taan_viz.cli import main
from taan_viz.measure_check import measure_mismatch, regularizer_measure
from taan_viz.runs import expand_runs, run_labels
from tests.viz.viz_helpers import GROUPS, TASK_NAMES, make_checkpoint_dict

OTHER_GROUPS = [[0, 0, 0, 0, 0, 0], [0, 0, 1, 1, 1, 1], [0, 1, 1, 2, 2, 3]]


def run(*args) -> int:
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    return exc.value.code


@pytest.fixture
def runs_dir(tmp_path):
    """runs/seed-{0,1,2}: two runs with the planted nesting, one with another."""
    base = tmp_path / "runs"
    for k, groups in enumerate([GROUPS, GROUPS, OTHER_GROUPS]):
        (base / f"seed-{k}").mkdir(parents=True)
        torch.save(make_checkpoint_dict(groups=groups, seed=k, epochs=2), base / f"seed-{k}" / "checkpoint.pt")
    return base


def _user_error(capsys, code: int, match: str) -> None:
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("taan-viz: error: ") and match in err[0], err


# ----------------------------------------------------------------------------------------------
# which runs


def test_expand_runs_orders_seeds_naturally(tmp_path):
    for k in (10, 2, 1):
        (tmp_path / f"seed-{k}").mkdir()
        (tmp_path / f"seed-{k}" / "checkpoint.pt").write_bytes(b"x")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "checkpoint.pt").write_bytes(b"x")
    found = expand_runs([tmp_path])
    assert [p.parent.name for p in found] == ["seed-1", "seed-2", "seed-10"]
    assert run_labels(found) == ["seed-1", "seed-2", "seed-10"]
    # a run folder is one run, a file is one run; without seed-* folders every */checkpoint.pt counts
    assert expand_runs([tmp_path / "seed-2", tmp_path / "other" / "checkpoint.pt"]) == [
        tmp_path / "seed-2" / "checkpoint.pt", tmp_path / "other" / "checkpoint.pt"]
    other = tmp_path / "plain"
    for name in ("b", "a"):
        (other / name).mkdir(parents=True)
        (other / name / "checkpoint.pt").write_bytes(b"x")
    assert [p.parent.name for p in expand_runs([other])] == ["a", "b"]


def test_expand_runs_errors(tmp_path):
    with pytest.raises(ValueError, match="at least one checkpoint"):
        expand_runs([])
    with pytest.raises(ValueError, match=r"empty: no checkpoint.pt and no runs in it"):
        (tmp_path / "empty").mkdir()
        expand_runs([tmp_path / "empty"])
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "checkpoint.pt").write_bytes(b"x")
    with pytest.raises(ValueError, match="the same run is given twice"):
        expand_runs([tmp_path / "r", tmp_path / "r" / "checkpoint.pt"])


def test_run_labels_stay_distinct(tmp_path):
    paths = [tmp_path / "a" / "seed-0" / "checkpoint.pt", tmp_path / "b" / "seed-0" / "checkpoint.pt",
             tmp_path / "x.pt"]
    assert run_labels(paths) == ["a/seed-0", "b/seed-0", f"{tmp_path.name}/x"]
    assert run_labels([tmp_path / "x.pt", tmp_path / "y.pt"]) == ["x", "y"]


# ----------------------------------------------------------------------------------------------
# commands on several runs


@pytest.mark.slow
def test_consensus_command_writes_figures_and_json(runs_dir, capsys):
    assert run("consensus", runs_dir, "--dpi", "60") == 0
    out = runs_dir / "consensus"
    written = capsys.readouterr().out.split()
    assert written == [str(out / n) for n in ("coclustering.png", "distance.png", "support-tree.png",
                                                "consensus.json")]
    doc = json.loads((out / "consensus.json").read_text())
    assert [r["label"] for r in doc["runs"]] == ["seed-0", "seed-1", "seed-2"]
    assert doc["task_names"] == TASK_NAMES and len(doc["layers"]) == 3
    assert doc["layers"][0]["stability"] == 1.0 and doc["layers"][1]["stability"] < 1.0
    c = doc["layers"][1]["coclustering"]
    assert c[0][2] == pytest.approx(2 / 3) and c[2][3] == pytest.approx(1 / 3)
    with Image.open(out / "coclustering.png") as im:
        assert im.info["Software"].startswith("taan-viz") and "3 runs" in im.info["Description"]
    # refuses to replace, and --clusters / -o work
    assert run("consensus", runs_dir) == 2
    assert "coclustering.png exists; pass --overwrite" in capsys.readouterr().err
    assert run("consensus", runs_dir / "seed-0", runs_dir / "seed-2", "-o", runs_dir / "two", "--clusters", "2",
               "--layers", "2,3", "--dpi", "60") == 0
    doc = json.loads((runs_dir / "two" / "consensus.json").read_text())
    assert doc["n_clusters"] == 2 and [la["position"] for la in doc["layers"]] == [2, 3]


def test_consensus_needs_two_runs(runs_dir, capsys):
    _user_error(capsys, run("consensus", runs_dir / "seed-0"), "consensus needs at least 2 runs, got 1")


def test_runs_that_differ_are_refused_in_one_line(runs_dir, capsys):
    odd = runs_dir / "seed-3"
    odd.mkdir()
    torch.save(make_checkpoint_dict(task_names=TASK_NAMES[:5] + ["fish"]), odd / "checkpoint.pt")
    _user_error(capsys, run("consensus", runs_dir), f"{odd / 'checkpoint.pt'}: runs must have the same tasks")
    _user_error(capsys, run("heatmap", runs_dir), "runs must have the same tasks")
    torch.save(make_checkpoint_dict(groups=GROUPS[:2], layer_names=["blocks.0.act", "x.act"]), odd / "checkpoint.pt")
    _user_error(capsys, run("report", runs_dir), f"{odd / 'checkpoint.pt'}: runs must have the same layers")
    assert not (runs_dir / "report").exists() and not (runs_dir / "seed-0" / "checkpoint-viz").exists()


@pytest.mark.slow
def test_single_run_commands_draw_each_run(runs_dir, tmp_path, capsys):
    assert run("tree", runs_dir, "--dpi", "40") == 0
    captured = capsys.readouterr()
    assert captured.out.split() == [str(runs_dir / f"seed-{k}" / "checkpoint-viz" / "tree.png") for k in range(3)]
    assert "drew 3 runs one by one" in captured.err and "taan-viz consensus" in captured.err
    out = tmp_path / "figs"
    assert run("heatmap", runs_dir / "seed-0", runs_dir / "seed-1", "-o", out, "--dpi", "40") == 0
    assert (out / "seed-0" / "heatmap.png").is_file() and (out / "seed-1" / "heatmap.png").is_file()
    assert run("export", runs_dir, "-o", out / "x") == 0
    assert all((out / "x" / f"seed-{k}" / "geometry.json").is_file() for k in range(3))
    capsys.readouterr()
    assert run("inspect", runs_dir / "seed-0", runs_dir / "seed-2") == 0
    text = capsys.readouterr().out
    assert "== run seed-0 (1 of 2) ==" in text and "== run seed-2 (2 of 2) ==" in text
    # one run: no note, output exactly as before
    assert run("tree", runs_dir / "seed-1", "-o", out / "one", "--dpi", "40") == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == str(out / "one" / "tree.png") and "note" not in captured.err


@pytest.mark.slow
def test_report_of_several_runs_includes_the_consensus(runs_dir, capsys):
    assert run("report", runs_dir, "--dpi", "40") == 0
    out = runs_dir / "report"
    page = (out / "index.html").read_text()
    assert 'id="consensus"' in page and "Consensus of 3 runs" in page and page.count('id="fig-consensus-') == 3
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["consensus"]["runs"] == ["seed-0", "seed-1", "seed-2"]
    assert manifest["consensus"]["representative"] in ("seed-0", "seed-1")
    assert manifest["checkpoint"]["path"].endswith(f"{manifest['consensus']['representative']}/checkpoint.pt")
    assert manifest["consensus"]["stability"]["blocks.0.act"] == 1.0


# ----------------------------------------------------------------------------------------------
# the measure of the figures against the regulariser's


def _regularised(tmp_path, reg="cosine", measure="standard", c=0.1, name="reg.pt"):
    raw = make_checkpoint_dict()  # layer stats: mu 0.2 + 0.1 l, sigma 0.8 + 0.1 l
    raw["extra"] = {"train_config": {"reg": reg, "c": c, "measure": measure}}
    path = tmp_path / name
    torch.save(raw, path)
    return load_checkpoint(path)


def test_measure_mismatch_names_the_layers_beyond_tolerance(tmp_path):
    ckpt = _regularised(tmp_path)
    assert regularizer_measure(ckpt) == ("cosine", "standard")
    found = measure_mismatch(ckpt, analyze(ckpt))
    # layer 1: N(0.2, 0.8^2) vs N(0, 1): |dmu| = 0.2 > 0.1 and sigma ratio 0.8; layer 3: N(0.4, 1)
    assert [name for name, *_ in found.layers] == ["blocks.0.act", "blocks.1.act", "blocks.2.act"]
    assert "blocks.0.act drawn under N(0.2, 0.8²), regularised under N(0, 1²)" in found.message()
    assert "--measure standard" in found.message()
    assert measure_mismatch(ckpt, analyze(ckpt, measure="standard")) is None
    assert measure_mismatch(ckpt, analyze(ckpt, measure="0.05,1.05")) is None  # within tolerance
    assert measure_mismatch(ckpt, analyze(ckpt, measure="0.15,1")) is not None  # mean beyond 0.1 sigma


@pytest.mark.parametrize("reg, measure, c", [("none", "standard", 0.1), ("tracenorm", "standard", 0.1),
                                             ("cosine", "standard", 0.0), ("distance", "data", 0.1)])
def test_no_warning_without_a_differing_functional_regulariser(tmp_path, reg, measure, c):
    ckpt = _regularised(tmp_path, reg, measure, c)
    assert measure_mismatch(ckpt, analyze(ckpt)) is None


def test_no_warning_without_a_training_configuration(checkpoint):
    assert regularizer_measure(checkpoint) is None and measure_mismatch(checkpoint, analyze(checkpoint)) is None


@pytest.mark.slow
def test_commands_warn_in_one_line_and_record_it(tmp_path, capsys):
    ckpt = _regularised(tmp_path, "distance", "standard")
    assert run("tree", ckpt.path, "-o", tmp_path / "t", "--dpi", "40") == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"taan-viz: warning: {ckpt.path}: the figures' measure differs")
    with Image.open(tmp_path / "t" / "tree.png") as im:
        assert "Warning: the figures' measure differs" in im.info["Description"]
    assert run("report", ckpt.path, "-o", tmp_path / "r", "--dpi", "40") == 0
    manifest = json.loads((tmp_path / "r" / "manifest.json").read_text())
    assert "distance regulariser" in manifest["measure_warning"]
    assert 'id="measure-warning"' in (tmp_path / "r" / "index.html").read_text()
    capsys.readouterr()
    assert run("tree", ckpt.path, "-o", tmp_path / "s", "--measure", "standard", "--dpi", "40") == 0
    assert capsys.readouterr().err == ""


# ----------------------------------------------------------------------------------------------
# runs that did not finish


def _trained(groups, seed, *, ended=True, epochs=2):
    ckpt = make_checkpoint_dict(groups=groups, seed=seed, epochs=epochs)
    ckpt["extra"] = {"train_config": {"epochs": epochs, "seed": seed}}
    if ended:
        ckpt["extra"].update(stopped_early=False, epochs_run=epochs)
    return ckpt


@pytest.fixture
def seed_runs(tmp_path):
    """runs/seed-{0,1,2}, each finished by the trainer."""
    base = tmp_path / "runs"
    for k, groups in enumerate([GROUPS, GROUPS, OTHER_GROUPS]):
        (base / f"seed-{k}").mkdir(parents=True)
        torch.save(_trained(groups, k), base / f"seed-{k}" / "checkpoint.pt")
    return base


def _killed_with_a_stale_lock(folder):
    # What SIGKILL leaves: a best epoch's checkpoint.pt (no epochs_run) and the lock file.
    torch.save(_trained(OTHER_GROUPS, 2, ended=False), folder / "checkpoint.pt")
    (folder / ".train.lock").write_text("999999999\n")


def test_unfinished_follows_the_documented_rule(seed_runs):
    from taan_viz.runs import unfinished

    done = seed_runs / "seed-0" / "checkpoint.pt"
    assert unfinished(done, torch.load(done, weights_only=True)) is None
    assert unfinished(done, make_checkpoint_dict()) is None  # not from the trainer: nothing says otherwise
    assert "has no extra.epochs_run" in unfinished(done, _trained(GROUPS, 0, ended=False))
    (seed_runs / "seed-0" / "metrics.jsonl").write_text('{"epoch": 1}\n{"epoch": 2}\n{"epoch": 3}\n')
    assert "metrics.jsonl reaches epoch 3, checkpoint.pt's run ended at 2" in unfinished(done, _trained(GROUPS, 0))
    (seed_runs / "seed-0" / ".train.lock").write_text(f"{os.getpid()}\n")
    assert "still running" in unfinished(done, _trained(GROUPS, 0))


def test_consensus_skips_a_seed_that_was_killed_in_one_line(seed_runs, capsys):
    _killed_with_a_stale_lock(seed_runs / "seed-2")
    assert run("consensus", seed_runs, "--dpi", "60") == 0
    err = capsys.readouterr().err.splitlines()
    skipped = [line for line in err if "skipped" in line]
    assert skipped == [f"taan-viz: warning: skipped {seed_runs / 'seed-2'}: its training has not ended "
                       f"({seed_runs / 'seed-2' / '.train.lock'} exists: pid 999999999, no longer running)"]
    doc = json.loads((seed_runs / "consensus" / "consensus.json").read_text())
    assert [r["label"] for r in doc["runs"]] == ["seed-0", "seed-1"]
    assert doc["layers"][1]["stability"] == 1.0  # the unfinished run's other grouping is not in it


def test_consensus_of_runs_none_of_which_finished_is_one_line(seed_runs, capsys):
    for k in range(3):
        torch.save(_trained(GROUPS, k, ended=False), seed_runs / f"seed-{k}" / "checkpoint.pt")
    code = run("consensus", seed_runs)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and sum("skipped" in line for line in err) == 3
    assert err[-1] == "taan-viz: error: none of the 3 runs finished (see the warnings above); resume them with " \
                      "taan-core train --resume, or name a checkpoint alone to draw it"


def test_a_single_unfinished_run_is_still_drawn(seed_runs, tmp_path, capsys):
    _killed_with_a_stale_lock(seed_runs / "seed-2")
    assert run("heatmap", seed_runs / "seed-2", "-o", tmp_path / "one", "--dpi", "60") == 0
    assert "skipped" not in capsys.readouterr().err
