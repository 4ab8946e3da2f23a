"""taan_viz.report: the self-contained HTML page and its manifest, checked as text and in a
real headless browser."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from tests.viz.viz_helpers import TASK_NAMES, make_checkpoint_dict

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    from taan_core.checkpoint import load_checkpoint
    from taan_viz.analysis import analyze, history_geometry
    from taan_viz.report import build_report

    folder = tmp_path_factory.mktemp("report")
    path = folder / "checkpoint.pt"
    torch.save(make_checkpoint_dict(), path)
    ckpt = load_checkpoint(path)
    analysis = analyze(ckpt)
    info = {"path": str(path), "sha256": ckpt.sha256, "format_version": 1, "data_name": "planted", "epoch": 4}
    build_report(analysis, folder / "out", checkpoint=info, snapshots=history_geometry(ckpt), dpi=60,
                 arguments={"threshold": 0.1})
    return folder / "out"


def test_files_and_embedded_images(report_dir):
    html = (report_dir / "index.html").read_text(encoding="utf-8")
    images = re.findall(r'<img src="data:image/png;base64,([^"]+)"', html)
    manifest = json.loads((report_dir / "manifest.json").read_text())
    assert len(images) == len(manifest["figures"]) >= 9
    for data in images:
        with Image.open(io.BytesIO(base64.b64decode(data))) as im:
            assert im.format == "PNG" and im.size[0] > 100
    # Offline: nothing is fetched from anywhere.
    assert not re.search(r'(src|href)="(https?:)?//', html)
    for name in TASK_NAMES:
        assert name in html
    assert "The math used" in html and "Training metrics" in html and "ARI vs planted" in html


def test_manifest(report_dir):
    manifest = json.loads((report_dir / "manifest.json").read_text())
    assert manifest["tool"] == "taan-viz"
    assert {"taan", "torch", "numpy", "matplotlib", "python"} <= set(manifest["versions"])
    assert len(manifest["checkpoint"]["sha256"]) == 64
    assert manifest["arguments"] == {"threshold": 0.1}
    assert manifest["measure"]["spec"] == "data"
    import hashlib

    data = (report_dir / "index.html").read_bytes()
    assert manifest["files"]["index.html"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert {"heatmap", "curves", "cluster", "tree", "mds", "evolution", "training"} <= set(manifest["figures"])


def test_refuses_to_overwrite(report_dir, analysis):
    from taan_viz.report import build_report

    with pytest.raises(FileExistsError, match="pass --overwrite"):
        build_report(analysis, report_dir, checkpoint={})


@pytest.mark.slow
def test_without_history_or_metrics(tmp_path):
    from taan_core.checkpoint import load_checkpoint
    from taan_viz.analysis import analyze
    from taan_viz.report import render_report

    path = tmp_path / "c.pt"
    obj = make_checkpoint_dict(epochs=0, planted=False)
    torch.save(obj, path)
    page, keys = render_report(analyze(load_checkpoint(path)), checkpoint={"path": str(path)}, dpi=40)
    assert "evolution" not in keys and "training" not in keys
    assert "No history snapshots" in page and "records no per-epoch metrics" in page


@pytest.mark.slow
@pytest.mark.browser
def test_report_in_headless_chromium(report_dir, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium); .ci/run installs it")
    executable = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    errors: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, headless=True, args=[
            "--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
            "--disable-dev-shm-usage", "--no-first-run"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto((report_dir / "index.html").resolve().as_uri())
            page.wait_for_load_state("load")
            decoded = page.eval_on_selector_all("img", "els => els.map(e => e.complete && e.naturalWidth)")
            tables = page.eval_on_selector_all("table", "els => els.map(e => e.rows.length)")
            headings = page.eval_on_selector_all("h2", "els => els.map(e => e.textContent)")
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        finally:
            browser.close()
    assert decoded and all(w and w > 0 for w in decoded), decoded
    assert not errors, errors
    # Meta table, layer summary, one task table per layer, training metrics.
    assert len(tables) == 1 + 1 + 3 + 1 and all(rows > 1 for rows in tables)
    assert headings == ["Layers", "Figures", "Tasks per layer", "Training metrics", "The math used"]
    with Image.open(tmp_path / "report.png") as shot:
        assert shot.size[0] == 1280 and shot.size[1] > 3000


def test_names_are_escaped_and_sections_extend_the_page(tmp_path):
    """The template autoescapes whatever comes from the checkpoint, and a further section is one
    more ReportSection."""
    from taan_core.checkpoint import load_checkpoint
    from taan_viz.analysis import analyze
    from taan_viz.report import ReportSection, render_report

    path = tmp_path / "c.pt"
    names = ["<script>alert(1)</script>", "a&b", "cats", "dogs", "birds", 'say "hi"']
    torch.save(make_checkpoint_dict(task_names=names, epochs=0), path)
    extra = ReportSection(id="consensus", title="Consensus <of runs>", paragraphs=["2 < 3"],
                          tables=[(["task", "agreement"], [["a&b", 1.0]])], notes=["n"])
    page, keys = render_report(analyze(load_checkpoint(path)), checkpoint={"path": str(path)}, dpi=30,
                               sections=[extra])
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "a&amp;b" in page and "a&b<" not in page
    assert '<h2 id="consensus">Consensus &lt;of runs&gt;</h2>' in page and "<p>2 &lt; 3</p>" in page
    assert '<a href="#consensus">' in page
    assert page.index('id="training"') < page.index('id="consensus"') < page.index('id="math"')


@pytest.mark.slow
def test_consensus_section_says_which_layers_differ_between_runs(tmp_path, monkeypatch):
    """Runs built to disagree: the consensus section holds the one-line warning of each layer
    below the threshold, and the single-run figures beside it drop their single-run line."""
    from taan_core.checkpoint import load_checkpoint
    from taan_viz._consensus_report import consensus_section
    from taan_viz.analysis import analyze
    from taan_viz.consensus import consensus
    import importlib
    from taan_viz.report import render_report
    from tests.viz.viz_helpers import GROUPS

    other = [[0, 0, 0, 0, 0, 0], [0, 0, 1, 1, 1, 1], [0, 1, 1, 2, 2, 3]]
    analyses = []
    for k, groups in enumerate([GROUPS, GROUPS, other]):
        path = tmp_path / f"seed-{k}.pt"
        torch.save(make_checkpoint_dict(groups=groups, seed=k, epochs=0), path)
        analyses.append(analyze(load_checkpoint(path)))
    cons = consensus(analyses)
    assert len(cons.warnings) == 2
    single_run = []
    heatmap_module = importlib.import_module("taan_viz.plots.heatmap")
    real = heatmap_module.plot_heatmaps
    monkeypatch.setattr(heatmap_module, "plot_heatmaps",
                        lambda *a, **k: single_run.append(k.get("single_run", True)) or real(*a, **k))
    page, _ = render_report(analyses[0], checkpoint={"path": "seed-0.pt"}, dpi=30,
                            sections=[consensus_section(cons, dpi=30)])
    section = page[page.index('<h2 id="consensus">'):page.index('<h2 id="math">')]
    for line in cons.warnings:
        assert f'<p class="warning">{line.replace("<", "&lt;")}</p>' in section
    assert "layer 2: groups differ between runs (stability 0.55 &lt; 0.8); do not read them as real" in section
    assert single_run == [False, False]
    # Alone, a run's figures say that one run cannot tell.
    single_run.clear()
    render_report(analyses[0], checkpoint={"path": "seed-0.pt"}, dpi=30)
    assert single_run == [True, True]


def test_a_link_planted_as_a_report_file_is_refused(tmp_path, analysis):
    from taan_core._atomic import WriteError
    from taan_viz.report import build_report

    target = tmp_path / "precious.txt"
    target.write_text("keep")
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.json").symlink_to(target)
    with pytest.raises(WriteError, match=rf"^{out / 'manifest.json'} is a symbolic link"):
        build_report(analysis, out, checkpoint={}, overwrite=True)
    assert target.read_text() == "keep" and [p.name for p in out.iterdir()] == ["manifest.json"]
