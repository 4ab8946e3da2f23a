"""docs/library.md runs as written: its Python blocks in order, then its taan-viz commands."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "library.md"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", DOC.read_text(), re.S | re.M)


def _code_lines(block: str) -> int:
    return sum(1 for line in block.splitlines() if line.strip() and not line.strip().startswith("#"))


def test_bring_your_own_model_is_under_40_lines():
    first = _blocks("python")[0]
    assert "taan_core.save" in first and "functional_penalty" in first and "TALinear" in first
    assert _code_lines(first) < 40


@pytest.mark.slow
def test_library_doc_runs_as_written(tmp_path, monkeypatch):
    from taan_viz.cli import main

    monkeypatch.chdir(tmp_path)
    python, shell = _blocks("python"), _blocks("bash")
    assert len(python) >= 3 and len(shell) >= 2
    namespace: dict = {"__name__": "library_doc"}
    commands = [line.split("#")[0].strip() for block in shell for line in block.splitlines()]
    commands = [c for c in commands if c]
    assert all(c.startswith("taan-viz ") for c in commands)
    # Each shell block follows the Python block before it in the page.
    text = DOC.read_text()
    order = sorted([(text.index(b), "python", b) for b in python] + [(text.index(b), "bash", b) for b in shell])
    ran = 0
    for _, kind, block in order:
        if kind == "python":
            with pytest.warns(UserWarning) if "taan_core.save(" in block else _nothing():
                exec(compile(block, f"{DOC}:block", "exec"), namespace)
            continue
        for line in block.splitlines():
            command = line.split("#")[0].strip()
            if not command:
                continue
            args = shlex.split(command)[1:]
            with pytest.raises(SystemExit) as exc:
                main(args)
            assert exc.value.code == 0, command
            out = Path(args[args.index("-o") + 1])
            assert (out / "heatmap.png").stat().st_size > 0
            ran += 1
    assert ran == len(commands) == 3
    # What the page claims about the model it trained.
    model = namespace["model"]
    assert [name for name, _ in __import__("taan_core").adaptive_layers(model)] == ["l1.act", "l2.act"]
    assert [name for name, _ in __import__("taan_core").adaptive_layers(namespace["cnn"])] == ["2", "5"]
    assert namespace["logits"].shape == (16, 10)
    # The warm-up section: released after epoch 10, so the coefficients moved; metrics per task.
    mlp, metrics = namespace["mlp"], namespace["metrics"]
    assert all(p.requires_grad for p in __import__("taan_core").adaptive_parameters(mlp))
    assert float(mlp[1].alpha.detach().abs().max()) > 0.1
    assert sorted(metrics["per_task"]) == ["a", "b", "c", "d"] and metrics["pooled"]["n"] == 512
    assert metrics["main"] > 0.8


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
