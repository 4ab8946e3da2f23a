"""No false success, no silent corruption: the training and CLI guarantees of the adversarial pass.

Divergence stops a run, non-finite weights are never saved, metrics.jsonl is strict JSON, a run
folder is locked, write failures are one line, numeric options are bounded, Ctrl-C prints its
line, leftovers are cleaned, resume checks the data, and the console says what it did.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from taan_core._atomic import WriteError, atomic_write, remove_stale_temporaries
from taan_core.train._support import LOCK_FILE, _append_jsonl, _json_line
from taan_core.checkpoint import CheckpointError, build_checkpoint, load_checkpoint, save_checkpoint
from taan_core.cli import main
from taan_core.data import load_dataset, save_npz
from taan_core.models import build_model
from taan_core.train import RunLock, RunLockedError, TrainConfig, Trainer, TrainingDivergedError

_ROOT = Path(__file__).resolve().parents[2]
_TINY = dict(num_tasks=4, groups_per_layer=[2, 4], input_dim=6, hidden=[8, 8], num_hinges=4, num_outputs=2,
             samples_per_task=60)
_KINDS = ["regression", "binary", "multiclass", "multilabel"]


def _strict(text: str) -> list:
    def refuse(token):
        raise ValueError(f"non-standard JSON token {token}")

    return [json.loads(line, parse_constant=refuse) for line in text.splitlines()]


def _write_npz(path: Path, seed: int = 0, n: int = 40) -> Path:
    rng = np.random.default_rng(seed)
    t = np.repeat(np.arange(4), n)
    y = np.zeros((4 * n, 3))
    y[t == 0] = rng.normal(size=(n, 3))
    y[t == 1, 0] = rng.integers(0, 2, n)
    y[t == 2, 0] = rng.integers(0, 3, n)
    y[t == 3] = rng.integers(0, 2, (n, 3))
    save_npz(path, features=rng.normal(size=(4 * n, 5)), task_ids=t, labels=y,
             task_names=["reg", "bin", "multi", "tags"], kinds=_KINDS, num_outputs=[3, 1, 3, 3])
    return path


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    captured = capsys.readouterr()
    return info.value.code, captured.out, captured.err


def _one_line(code: int, err: str, status: int = 2) -> str:
    assert code == status, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("taan-core: ")
    return lines[0]


def _npz_args(npz: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--dataset", "npz", "--data", str(npz), "--hidden", "8", "--hinges", "2", "--epochs", "1",
            "--batch-size", "8", "--lr", "0.01", "--threads", "1", "--device", "cpu", "--starts", "1", "--out", str(out),
            *extra]


@pytest.fixture(scope="module")
def data():
    return load_dataset("planted", **_TINY)


@pytest.fixture
def npz(tmp_path) -> Path:
    return _write_npz(tmp_path / "mixed.npz")


def _model(data, name="taan", **overrides):
    torch.manual_seed(0)
    overrides.setdefault("hidden", [8, 8])
    if name in ("taan",):
        overrides.setdefault("num_hinges", 4)
    return build_model(name, data.input_shape, [t.num_outputs for t in data.tasks], **overrides)


def _config(out: Path, **kw) -> TrainConfig:
    kw.setdefault("epochs", 2)
    kw.setdefault("batch_size", 8)
    kw.setdefault("lr", 1e-2)
    kw.setdefault("starts", 1)  # one start: the hooks below act on the run's own epochs
    return TrainConfig(out=str(out), quiet=True, device="cpu", threads=1, **kw)


# ---------------------------------------------------------------------------------- 1. divergence


@pytest.mark.parametrize("model", ["hard", "stl", "mmoe", "taan"])
def test_diverged_training_stops_with_one_line_and_writes_nothing(model, npz, tmp_path, capsys):
    out = tmp_path / "new" / "run"
    args = _npz_args(npz, out, "--model", model, "--lr", "1e6", "--epochs", "3", "--quiet")
    args[args.index("--hidden") + 1] = "8,8,8"
    if model != "taan":
        del args[args.index("--hinges"):args.index("--hinges") + 2]
    line = _one_line(*_cli(capsys, *args)[::2], status=1)
    assert "training diverged at epoch 1, step" in line
    assert "learning rate (lr 1e+06) is probably too high" in line
    assert "nothing was saved" in line
    assert not (tmp_path / "new").exists()  # the folders it created went with the failure


def test_divergence_keeps_the_last_completed_epoch(data, tmp_path):
    def poison(trainer, epoch, batch):
        if (epoch, batch) == (2, 1):
            with torch.no_grad():
                next(trainer.model.parameters()).fill_(float("nan"))

    out = tmp_path / "run"
    with pytest.raises(TrainingDivergedError, match=r"at epoch 2, step 3 of \d+ \(loss nan\).*keeps epoch 1"):
        Trainer(_model(data), data, _config(out, epochs=3), on_step=poison).fit()
    last = load_checkpoint(out / "last.pt")
    assert last.raw["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in last.raw["model"]["state_dict"].values() if v.is_floating_point())
    assert len(_strict((out / "metrics.jsonl").read_text())) == 1


def test_non_finite_weights_with_finite_loss_are_caught_at_the_end_of_the_epoch(data, tmp_path):
    def poison(trainer, epoch, batch):
        if epoch == 1 and batch == len(trainer.sampler) - 1:
            with torch.no_grad():
                next(trainer.model.parameters()).fill_(float("inf"))

    with pytest.raises(TrainingDivergedError, match=r"in epoch 1: the weights \(.*\) became NaN or infinite"):
        Trainer(_model(data), data, _config(tmp_path / "run"), on_step=poison).fit()


@pytest.mark.parametrize("name", ["hard", "stl", "mmoe", "taan"])
@pytest.mark.parametrize("validate", [True, False])
def test_save_checkpoint_refuses_non_finite_weights_of_any_model(data, tmp_path, name, validate):
    kw = {} if name == "taan" else {"hidden": [8]}
    model = _model(data, name, **kw)
    with torch.no_grad():
        list(model.parameters())[-1].view(-1)[0] = float("nan")
    ckpt = build_checkpoint(model, task_names=data.task_names)
    path = tmp_path / "c.pt"
    with pytest.raises(CheckpointError, match=r"c.pt: model.state_dict.*refusing to write non-finite values"):
        save_checkpoint(ckpt, path, validate=validate)
    assert not path.exists() and list(tmp_path.iterdir()) == []


def test_save_checkpoint_refuses_non_finite_alpha(data, tmp_path):
    ckpt = build_checkpoint(_model(data), task_names=data.task_names)
    ckpt["layers"][0]["alpha"][0, 0] = float("inf")
    with pytest.raises(CheckpointError, match=r"layers\[0\].alpha: refusing to write non-finite"):
        save_checkpoint(ckpt, tmp_path / "c.pt", validate=False)


def test_metrics_jsonl_is_strict_json_and_the_cli_names_only_files_that_exist(npz, tmp_path, capsys, monkeypatch):
    # Validation that is never finite (as with one validation sample per task): no best epoch.
    def never_finite(self):
        tasks = {t.name: {"accuracy": float("nan")} for t in self.tasks}
        return {"per_task": tasks, "mean": {"accuracy": float("nan")}, "main": float("nan")}

    monkeypatch.setattr(Trainer, "_evaluate", never_finite)
    out = tmp_path / "run"
    code, _, err = _cli(capsys, *_npz_args(npz, out, "--epochs", "2"))
    assert code == 0, err
    assert not (out / "checkpoint.pt").exists()
    assert "checkpoint.pt" not in err.split("wrote", 1)[1]
    assert "val main was never finite" in err and "no checkpoint.pt was written" in err
    assert f"wrote {out / 'last.pt'}, {out / 'metrics.jsonl'}" in err
    records = _strict((out / "metrics.jsonl").read_text())
    assert [r["val"]["main"] for r in records] == [None, None]
    assert records[0]["val"]["per_task"]["reg"]["accuracy"] is None
    assert _json_line({"a": float("inf"), "b": [float("-inf"), 1.5]}) == '{"a": null, "b": [null, 1.5]}\n'


# ---------------------------------------------------------------------------------- 3. the run lock


def test_a_locked_run_folder_refuses_a_second_training(npz, tmp_path, capsys, data):
    out = tmp_path / "run"
    out.mkdir()
    with RunLock(out):
        assert (out / LOCK_FILE).read_text().strip() == str(os.getpid())
        for extra in ((), ("--overwrite",)):
            line = _one_line(*_cli(capsys, *_npz_args(npz, out, *extra))[::2])
            assert f"{out} is in use by another training (pid {os.getpid()})" in line
        with pytest.raises(RunLockedError, match=f"pid {os.getpid()}"):
            Trainer(_model(data), data, _config(out)).fit(overwrite=True)
    assert not (out / LOCK_FILE).exists()
    code, _, err = _cli(capsys, *_npz_args(npz, out, "--quiet"))
    assert code == 0, err
    assert not (out / LOCK_FILE).exists()  # released, and its file removed, at the end


def test_a_stale_lock_of_a_killed_process_never_blocks(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    script = textwrap.dedent(f"""
        import os, signal
        from taan_core.train import RunLock
        RunLock({str(out)!r}).acquire()
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    child = subprocess.run([sys.executable, "-c", script], env=dict(os.environ, PYTHONPATH=str(_ROOT)), timeout=120)
    assert child.returncode == -signal.SIGKILL
    assert (out / LOCK_FILE).exists()  # the file stays, the kernel dropped the lock
    with RunLock(out):
        assert (out / LOCK_FILE).read_text().strip() == str(os.getpid())


# ------------------------------------------------------------------------------- 5/6. write failures


@pytest.mark.parametrize("error,reason", [
    (RuntimeError("unexpected pos 64 vs 0"), "unexpected pos 64 vs 0 (is the disk full?)"),
    (RuntimeError("[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed writing file data/0"),
     "PytorchStreamWriter failed writing file"),
    (OSError(errno.ENOSPC, "No space left on device"), "no space left on the device"),
])
def test_a_failure_inside_torch_save_is_one_line_and_keeps_the_previous_file(data, tmp_path, monkeypatch, error,
                                                                             reason):
    path = tmp_path / "c.pt"
    save_checkpoint(build_checkpoint(_model(data), task_names=data.task_names), path)
    before = path.read_bytes()

    def full_disk(obj, fh):
        fh.write(b"PK\x03\x04 partial")
        raise error

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(WriteError) as info:
        save_checkpoint(build_checkpoint(_model(data, hidden=[8, 8]), task_names=data.task_names), path)
    message = str(info.value)
    assert "\n" not in message and f"cannot write {path}" in message and reason in message
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt"]


def test_the_cli_reports_a_failed_write_in_one_line(npz, tmp_path, capsys, monkeypatch):
    def full_disk(obj, fh):
        raise RuntimeError("unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", full_disk)
    out = tmp_path / "run"
    line = _one_line(*_cli(capsys, *_npz_args(npz, out, "--quiet"))[::2])
    assert f"cannot write {out}" in line and "unexpected pos 64 vs 0" in line


def test_a_failed_metrics_append_leaves_no_torn_line(tmp_path, monkeypatch):
    path = tmp_path / "metrics.jsonl"
    _append_jsonl(path, {"epoch": 1})
    real_write = os.write

    def half_then_full(fd, data):
        real_write(fd, bytes(data[:5]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(WriteError, match="cannot write .*metrics.jsonl: no space left on the device"):
        _append_jsonl(path, {"epoch": 2, "val": {"main": 0.5}})
    monkeypatch.undo()
    assert _strict(path.read_text()) == [{"epoch": 1}]


# --------------------------------------------------------------------------------- 6. numeric bounds


@pytest.mark.parametrize("args,match", [
    (["--lr", "1e38"], "--lr must be <= 1e+06, got 1e+38"),
    (["--lr", "0"], "--lr must be > 0"),
    (["--weight-decay", "1e30"], "--weight-decay must be <= 1e+06"),
    (["--reg", "tracenorm", "--c", "1e38"], "--c must be <= 1e+06"),
    (["--seed", "100000000000000000000"], "--seed must be <= 2**63 - 1, got 100000000000000000000"),
    (["--seed", "-1"], "--seed must be >= 0"),
    (["--epochs", "0"], "--epochs must be >= 1"),
    (["--threads", "100000"], "--threads must be at most the"),
])
def test_numeric_options_are_bounded_and_named(capsys, tmp_path, args, match):
    line = _one_line(*_cli(capsys, "train", *args, "--out", str(tmp_path / "x"))[::2])
    assert match in line
    assert not (tmp_path / "x").exists()


def test_the_largest_learning_rate_does_not_crash_the_optimiser(data, tmp_path):
    # 1e38 overflowed inside Adam (RuntimeError); at the bound the run trains or diverges cleanly.
    try:
        result = Trainer(_model(data), data, _config(tmp_path / "run", lr=1e6, epochs=1)).fit()
    except TrainingDivergedError as err:
        assert "epoch" in str(err) and "step" in str(err)  # names where it diverged
    else:
        assert result.epochs == 1 and (tmp_path / "run" / "last.pt").is_file()


# ----------------------------------------------------------------------------------------- 7. SIGINT


def test_sigint_during_start_up_prints_the_line(tmp_path):
    # A Ctrl-C while the command imports its modules (simulated at the import of typer).
    script = textwrap.dedent("""
        import runpy, sys
        class Interrupt:
            def find_spec(self, name, path=None, target=None):
                if name == "typer":
                    raise KeyboardInterrupt
        sys.meta_path.insert(0, Interrupt())
        sys.argv = ["taan-core", "train"]
        runpy.run_module("taan_core.cli", run_name="__main__")
    """)
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                           env=dict(os.environ, PYTHONPATH=str(_ROOT)))
    assert child.returncode == 130
    assert child.stderr.strip() == "taan-core: interrupted"


def test_sigint_before_training_prints_the_line(capsys, monkeypatch, tmp_path):
    import taan_core.data

    def interrupted_load(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)  # the handler fires at once

    monkeypatch.setattr(taan_core.data, "load_dataset", interrupted_load)
    before = signal.getsignal(signal.SIGINT)
    line = _one_line(*_cli(capsys, "train", "--out", str(tmp_path / "run"))[::2], status=130)
    assert line == "taan-core: interrupted"
    assert signal.getsignal(signal.SIGINT) is before


@pytest.mark.slow
def test_sigint_during_training_prints_the_line_and_resume_continues(npz, tmp_path):
    out = tmp_path / "run"
    args = _npz_args(npz, out, "--epochs", "100000")
    child = subprocess.Popen([sys.executable, "-m", "taan_core.cli", *args], stderr=subprocess.PIPE, text=True,
                             env=dict(os.environ, PYTHONPATH=str(_ROOT)))
    lines = []
    for line in child.stderr:
        lines.append(line)
        if line.startswith("epoch   2"):
            break
    child.send_signal(signal.SIGINT)
    rest = child.stderr.read()
    child.wait(timeout=120)
    assert child.returncode == 130, "".join(lines) + rest
    assert rest.strip().splitlines()[-1] == "taan-core: interrupted (continue with --resume)"
    assert "Traceback" not in rest
    assert not (out / LOCK_FILE).exists()
    epoch = load_checkpoint(out / "last.pt").raw["epoch"]
    assert epoch >= 1
    code = subprocess.run([sys.executable, "-m", "taan_core.cli", *args[:-2], "--epochs", str(epoch + 1), "--resume",
                           "--quiet"], env=dict(os.environ, PYTHONPATH=str(_ROOT)), timeout=120).returncode
    assert code == 0
    assert load_checkpoint(out / "last.pt").raw["epoch"] == epoch + 1


# -------------------------------------------------------------------------------------- 8. leftovers


def test_stale_temporaries_of_dead_processes_are_removed_at_the_next_start(data, tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "run"
    out.mkdir()
    names = {
        f".last.pt.{dead.pid}.abc123_x.tmp": False,  # a dead writer's: removed
        ".checkpoint.pt.q1w2e3r4.tmp": False,  # no pid (older name) of a run file: removed under the lock
        f".last.pt.{os.getpid()}.live1234.tmp": True,  # a live writer's: kept
        ".notes.txt.q1w2e3r4.tmp": True,  # not ours, no pid: kept
    }
    for name in names:
        (out / name).write_bytes(b"x")
    Trainer(_model(data), data, _config(out, epochs=1)).fit()
    for name, kept in names.items():
        assert (out / name).exists() == kept, name
    assert remove_stale_temporaries(tmp_path / "missing") == []


def test_atomic_write_names_temporaries_with_the_pid(tmp_path, monkeypatch):
    seen = []

    def spy(fh):
        seen.extend(p.name for p in tmp_path.iterdir())
        fh.write(b"x")

    atomic_write(tmp_path / "f.bin", spy)
    assert len(seen) == 1
    assert seen[0].startswith(f".f.bin.{os.getpid()}.") and seen[0].endswith(".tmp")


def test_a_failed_command_removes_only_the_folders_it_created(npz, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    for out in (tmp_path / "a" / "b", mine):
        args = _npz_args(npz, out, "--model", "hard", "--lr", "1e6", "--epochs", "2")
        del args[args.index("--hinges"):args.index("--hinges") + 2]
        args[args.index("--hidden") + 1] = "8,8,8"
        code, _, err = _cli(capsys, *args)
        assert code == 1, err
    assert not (tmp_path / "a").exists()
    assert mine.is_dir() and list(mine.iterdir()) == []


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_run_files_get_the_modes_of_plain_files(data, tmp_path, umask):
    old = os.umask(umask)
    try:
        out = tmp_path / "run"
        Trainer(_model(data), data, _config(out, epochs=1)).fit()
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in out.iterdir()}
    assert modes == {name: 0o666 & ~umask for name in ("checkpoint.pt", "last.pt", "metrics.jsonl")}


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


# ---------------------------------------------------------------------- --overwrite keeps the old run


def _files(out: Path) -> dict[str, bytes]:
    return {name: (out / name).read_bytes() for name in ("checkpoint.pt", "last.pt", "metrics.jsonl")}


class _Crash(Exception):
    pass


def _crash(trainer, epoch, batch):
    raise _Crash


@pytest.mark.parametrize("starts", [1, 2])
def test_overwrite_keeps_the_old_run_until_the_new_one_has_a_checkpoint(data, tmp_path, starts, monkeypatch):
    out = tmp_path / "run"
    Trainer(_model(data), data, _config(out, epochs=1)).fit()
    old = _files(out)
    # A crash in the new run's first epoch (or its candidate starts), before anything is saved,
    # leaves the old run as it was.
    trainer = Trainer(_model(data), data, _config(out, epochs=2, starts=starts, start_epochs=0.5))
    with monkeypatch.context() as patch:
        patch.setattr(trainer, "_evaluate", lambda: _crash(trainer, 1, 0))
        with pytest.raises(_Crash):
            trainer.fit(overwrite=True)
    assert _files(out) == old
    assert not list(out.glob(".overwrite-*")) and trainer.out == out
    # A run that completes replaces every file; its metrics are its own epochs only.
    result = Trainer(_model(data, hidden=[8, 4]), data, _config(out, epochs=2, starts=starts, start_epochs=0.5)).fit(
        overwrite=True)
    assert result.out == out and not list(out.glob(".overwrite-*"))
    assert all(_files(out)[name] != old[name] for name in old)
    assert [r["epoch"] for r in _strict((out / "metrics.jsonl").read_text())] == [1, 2]
    assert load_checkpoint(out / "last.pt").raw["model"]["config"]["hidden"] == [8, 4]


def test_overwrite_swaps_at_the_first_saved_epoch(data, tmp_path):
    out = tmp_path / "run"
    Trainer(_model(data), data, _config(out, epochs=1)).fit()
    old = _files(out)
    seen = []

    def look(trainer, epoch, batch):
        if batch == 0:
            seen.append((epoch, (out / "last.pt").read_bytes() == old["last.pt"], sorted(
                p.name for p in out.glob(".overwrite-*/*"))))

    Trainer(_model(data), data, _config(out, epochs=2), on_step=look).fit(overwrite=True)
    # Epoch 1 runs while the old run is in place (the new one writes nothing yet); by epoch 2 the
    # new run's files have taken its place.
    assert seen == [(1, True, []), (2, False, [])]


def test_a_staging_folder_of_a_killed_run_is_removed_by_the_next(data, tmp_path):
    out = tmp_path / "run"
    Trainer(_model(data), data, _config(out, epochs=1)).fit()
    leftover = out / ".overwrite-dead1234"
    leftover.mkdir()
    (leftover / "last.pt").write_bytes(b"half")
    Trainer(_model(data), data, _config(out, epochs=1)).fit(overwrite=True)
    assert not leftover.exists()


def test_the_cli_overwrite_interrupted_before_its_first_epoch_keeps_the_old_run(npz, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    code, _, err = _cli(capsys, *_npz_args(npz, out))
    assert code == 0, err
    old = _files(out)
    from taan_core.train import _trainer

    def interrupted(self, world, progress):
        raise KeyboardInterrupt

    monkeypatch.setattr(_trainer.Trainer, "_run_epoch", interrupted)
    code, _, err = _cli(capsys, *_npz_args(npz, out, "--overwrite"))
    assert code == 130
    # The old run is whole, so --resume can still continue it.
    assert err.strip().splitlines()[-1] == "taan-core: interrupted (continue with --resume)"
    assert _files(out) == old and not list(out.glob(".overwrite-*"))
