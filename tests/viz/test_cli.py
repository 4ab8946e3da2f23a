"""taan-viz commands: expected files, options, and one-line errors with exit status 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from PIL import Image

from tests.viz.viz_helpers import TASK_NAMES, make_checkpoint_dict
from taan_viz.cli import main


def run(*args: str) -> int:
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    return exc.value.code


def test_heatmap_default_out_next_to_checkpoint(checkpoint_path, capsys):
    assert run("heatmap", checkpoint_path) == 0
    out = checkpoint_path.parent / "checkpoint-viz" / "heatmap.png"
    assert capsys.readouterr().out.strip() == str(out)
    with Image.open(out) as im:
        assert im.info["Software"].startswith("taan-viz") and len(im.info["Checkpoint-SHA256"]) == 64
        assert im.size[0] > 1500  # 300 dpi, two-column width


def test_heatmap_options(checkpoint_path, tmp_path):
    out = tmp_path / "figs"
    assert run("heatmap", checkpoint_path, "-o", out, "--metric", "cosine", "--format", "svg", "--layers", "2,3",
               "--measure", "standard", "--order-by", "3", "--scale", "layer", "--no-annotate") == 0
    svg = (out / "heatmap-cosine.svg").read_text()
    assert "<text" in svg and "blocks.1.act" in svg and "blocks.0.act" not in svg and "sha256:" in svg
    assert run("heatmap", checkpoint_path, "-o", out, "--format", "pdf", "--order-by", "none", "--dpi", "72") == 0
    assert (out / "heatmap.pdf").read_bytes().startswith(b"%PDF")


def test_task_names_file(checkpoint_path, tmp_path):
    names = tmp_path / "names.txt"
    names.write_text("\n".join(f"T{i}" for i in range(6)))
    assert run("export", checkpoint_path, "-o", tmp_path / "x", "--task-names", names, "--layers", "1") == 0
    doc = json.loads((tmp_path / "x" / "geometry.json").read_text())
    assert doc["task_names"] == [f"T{i}" for i in range(6)]


@pytest.mark.slow
def test_every_figure_command(checkpoint_path, tmp_path, capsys):
    out = tmp_path / "all"
    assert run("curves", checkpoint_path, "-o", out, "--grid", "--residual", "--dpi", "50", "--layers", "3") == 0
    assert run("cluster", checkpoint_path, "-o", out, "--clusters", "2", "--dpi", "50", "--layers", "2,3",
               "--clustermaps", "all") == 0
    assert run("tree", checkpoint_path, "-o", out, "--threshold", "0.2", "--dpi", "50") == 0
    assert run("evolution", checkpoint_path, "-o", out, "--columns", "2", "--dpi", "50", "--fps", "5",
               "--layers", "3") == 0
    written = capsys.readouterr().out.split()
    expected = ["curves.png", "curves-tasks-L3-blocks.2.act.png", "cluster.png", "clustermap-L2-blocks.1.act.png",
                "clustermap-L3-blocks.2.act.png", "mds.png", "tree.png", "evolution.png", "evolution-curves.png",
                "evolution.gif"]
    assert [p.split("/")[-1] for p in written] == expected
    assert sorted(p.name for p in out.iterdir()) == sorted(expected)


@pytest.mark.slow
def test_cluster_draws_the_deepest_clustermap_unless_asked(checkpoint_path, tmp_path, capsys):
    out = tmp_path / "c"
    assert run("cluster", checkpoint_path, "-o", out, "--dpi", "40") == 0
    assert sorted(p.name for p in out.iterdir()) == ["cluster.png", "clustermap-L3-blocks.2.act.png", "mds.png"]
    assert run("cluster", checkpoint_path, "-o", out / "n", "--dpi", "40", "--clustermaps", "none") == 0
    assert sorted(p.name for p in (out / "n").iterdir()) == ["cluster.png", "mds.png"]
    capsys.readouterr()
    assert "--clustermaps must be one of deepest, all, none, got 'some'" in _one_line_error(
        capsys, "cluster", checkpoint_path, "--clustermaps", "some")


def test_report_and_export(checkpoint_path, tmp_path):
    assert run("report", checkpoint_path, "--dpi", "30", "--layers", "3") == 0
    report = checkpoint_path.parent / "checkpoint-viz" / "report"
    manifest = json.loads((report / "manifest.json").read_text())
    assert manifest["arguments"]["dpi"] == 30 and manifest["checkpoint"]["data_name"] == "planted"
    assert run("export", checkpoint_path, "-o", tmp_path / "e", "--metric", "squared-distance") == 0
    assert (tmp_path / "e" / "squared-distance-L2-blocks.1.act.csv").exists()


def test_inspect(checkpoint_path, capsys):
    assert run("inspect", checkpoint_path) == 0
    text = capsys.readouterr().out
    for expected in ("blocks.2.act", "sha256", "Nearest task", "val.main", *TASK_NAMES):
        assert expected in text


def test_reference_state_dict_and_safetensors(reference_path, checkpoint, tmp_path, capsys):
    assert run("heatmap", reference_path, "-o", tmp_path, "--dpi", "50") == 0
    assert run("inspect", reference_path) == 0
    text = capsys.readouterr().out
    assert "fc1" in text and "task_4" in text and "state_dict (imported)" in text
    from taan_core.checkpoint import export_safetensors

    st = export_safetensors(checkpoint, tmp_path / "c.safetensors")
    assert run("export", st, "-o", tmp_path / "st") == 0
    doc = json.loads((tmp_path / "st" / "geometry.json").read_text())
    assert doc["task_names"] == TASK_NAMES


def test_version_and_help(capsys):
    assert run("--version") == 0
    assert capsys.readouterr().out.startswith("taan-viz ")
    assert run("heatmap", "--help") == 0
    assert "--order-by" in capsys.readouterr().out
    assert run() == 0
    assert "heatmap" in capsys.readouterr().out


def _one_line_error(capsys, *args) -> str:
    assert run(*args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("taan-viz: error: ") and "Traceback" not in err
    return err


@pytest.mark.parametrize("args, match", [
    (("--measure", "0,0"), "SIGMA must be > 0"),
    (("--measure", "gauss"), "'data', 'standard' or 'MU,SIGMA'"),
    (("--metric", "l2"), "metric must be one of"),
    (("--format", "jpg"), "--format must be one of png, svg, pdf"),
    (("--dpi", "5"), r"--dpi must be in \[20, 2400\]"),
    (("--layers", "7"), "position 7 is out of range 1..3"),
    (("--layers", "conv9"), "no layer named 'conv9'"),
    (("--layers", "1", "--order-by", "3"), "--order-by layer '3' must be one of the selected --layers"),
    (("--scale", "log"), "scale must be 'shared' or 'layer'"),
    (("--threshold", "-1"), "--threshold must be a finite number >= 0"),
    (("--bogus",), "No such option: --bogus"),
    (("--dpi", "many"), "Invalid value for '--dpi'"),
])
def test_heatmap_user_errors(checkpoint_path, tmp_path, capsys, args, match):
    import re

    err = _one_line_error(capsys, "heatmap", checkpoint_path, "-o", tmp_path, *args)
    assert re.search(match, err), err


def test_input_errors(tmp_path, capsys, checkpoint_path):
    assert "no such file" in _one_line_error(capsys, "heatmap", tmp_path / "missing.pt")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    assert "unrecognised format" in _one_line_error(capsys, "tree", text)
    json_file = tmp_path / "x.json"
    json_file.write_text("{}")
    assert "JSON/text file" in _one_line_error(capsys, "curves", json_file)
    bad = tmp_path / "bad.pt"
    torch.save({"weights": torch.zeros(3)}, bad)
    assert "'<layer>.alpha' keys" in _one_line_error(capsys, "export", bad)
    names = tmp_path / "names.txt"
    names.write_text("a\nb\n")
    assert "must hold 6 names" in _one_line_error(capsys, "heatmap", checkpoint_path, "--task-names", names)
    assert "--clusters must be >= 1" in _one_line_error(capsys, "cluster", checkpoint_path, "--clusters", "0")


def test_refuses_to_overwrite(checkpoint_path, tmp_path, capsys):
    assert run("tree", checkpoint_path, "-o", tmp_path, "--dpi", "40") == 0
    before = (tmp_path / "tree.png").read_bytes()
    assert "tree.png exists; pass --overwrite" in _one_line_error(capsys, "tree", checkpoint_path, "-o", tmp_path)
    assert (tmp_path / "tree.png").read_bytes() == before
    assert run("tree", checkpoint_path, "-o", tmp_path, "--dpi", "40", "--overwrite") == 0
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert "is not a folder" in _one_line_error(capsys, "tree", checkpoint_path, "-o", blocker)


def test_evolution_needs_history(tmp_path, capsys):
    path = tmp_path / "c.pt"
    torch.save(make_checkpoint_dict(epochs=0), path)
    assert "no history snapshots" in _one_line_error(capsys, "evolution", path)
    assert "--columns must be >= 1" in _one_line_error(capsys, "evolution", path, "--columns", "0")


@pytest.mark.slow
def test_heatmap_imports_no_sympy_training_or_sklearn(checkpoint_path, tmp_path):
    code = (
        "import sys\n"
        "from taan_viz.cli import main\n"
        "try:\n"
        f"    main(['heatmap', {str(checkpoint_path)!r}, '-o', {str(tmp_path)!r}])\n"
        "except SystemExit as e:\n"
        "    assert e.code == 0, e.code\n"
        "heavy = ('sympy', 'mpmath', 'sklearn', 'seaborn', 'pandas', 'taan_core.train', 'taan_core.models',\n"
        "         'taan_core.symbolic', 'taan_core.data')\n"
        "print(sorted(m for m in sys.modules if m in heavy or m.split('.')[0] in heavy))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout
    assert (tmp_path / "heatmap.png").exists()


@pytest.mark.slow
def test_console_script_error_has_no_traceback(tmp_path):
    code = "import sys; from taan_viz.cli import main; sys.argv[0] = 'taan-viz'; main()"
    result = subprocess.run([sys.executable, "-c", code, "report", str(tmp_path / "nope.pt")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"taan-viz: error: {tmp_path / 'nope.pt'}: no such file"]
    assert result.stdout == ""


def test_imported_reference_says_it_has_no_statistics(reference_path, tmp_path, capsys):
    """The 'data' measure of a file without statistics is N(0, 1), and every output says why."""
    assert run("inspect", reference_path) == 0
    assert "N(0, 1): the file records no statistics" in " ".join(capsys.readouterr().out.split())
    assert run("report", reference_path, "-o", tmp_path / "report", "--dpi", "30") == 0
    manifest = json.loads((tmp_path / "report" / "manifest.json").read_text())
    assert manifest["measure"]["description"] == "N(0, 1): the file records no statistics"
    assert "N(0, 1): the file records no statistics" in (tmp_path / "report" / "index.html").read_text()


def test_labels_and_grid_options(checkpoint_path, tmp_path, capsys):
    out = tmp_path / "o"
    assert run("heatmap", checkpoint_path, "-o", out, "--labels", "none", "--dpi", "30") == 0
    assert run("tree", checkpoint_path, "-o", out, "--labels", "all", "--dpi", "30") == 0
    # The per-task grid only when asked.
    assert run("curves", checkpoint_path, "-o", out, "--dpi", "30") == 0
    assert sorted(p.name for p in out.iterdir()) == ["curves.png", "heatmap.png", "tree.png"]
    capsys.readouterr()
    assert run("cluster", checkpoint_path, "--labels", "some") == 2
    assert capsys.readouterr().err.strip() == "taan-viz: error: labels must be one of auto, all, none, got 'some'"


def test_a_symbolic_link_loop_is_one_line(tmp_path, capsys):
    loop = tmp_path / "loop.pt"
    loop.symlink_to(loop)
    dangling = tmp_path / "gone.pt"
    dangling.symlink_to(tmp_path / "nowhere.pt")
    for args, match in ((["heatmap", loop], f"{loop}: a loop of symbolic links, which leads to no file"),
                        (["consensus", loop, dangling], f"{loop}: a loop of symbolic links"),
                        (["consensus", dangling, loop], f"{dangling}: a symbolic link to {tmp_path / 'nowhere.pt'}, "
                                                        "which does not exist")):
        assert run(*args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"taan-viz: error: {match}"), err


@pytest.mark.parametrize("command", ["heatmap", "tree"])
def test_groups_not_separated_are_named_on_stderr(tmp_path, capsys, command):
    from tests.viz.viz_helpers import continuum_checkpoint_dict

    path = tmp_path / "c" / "checkpoint.pt"
    path.parent.mkdir()
    torch.save(continuum_checkpoint_dict(), path)
    assert run(command, path, "-o", tmp_path / "out", "--dpi", "50") == 0
    err = capsys.readouterr().err
    assert err.startswith("taan-viz: note: c: groups not separated in layer 2 (")
    torch.save(make_checkpoint_dict(), path)
    assert run(command, path, "-o", tmp_path / "planted", "--dpi", "50") == 0
    assert "not separated" not in capsys.readouterr().err
