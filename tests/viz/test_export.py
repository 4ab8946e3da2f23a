"""taan_viz.export: CSV, JSON, NPZ, Newick and cluster files."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from tests.viz.viz_helpers import TASK_NAMES
from taan_viz.export import export_analysis, export_names, layer_slug


def test_layer_slug():
    assert layer_slug(0, "blocks.0.act") == "L1-blocks.0.act"
    assert layer_slug(2, "a b/c") == "L3-a-b-c"
    assert layer_slug(1, "///") == "L2-layer"


def test_export_files(tmp_path, analysis):
    paths = export_analysis(analysis, tmp_path / "out", metric="cosine", metadata={"version": "1.2"})
    assert [p.name for p in paths] == export_names(analysis, "cosine")
    assert all(p.exists() for p in paths)
    out = tmp_path / "out"

    # Square CSV: header and first column are the task names, values the metric.
    with open(out / "cosine-L3-blocks.2.act.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["task", *TASK_NAMES] and [r[0] for r in rows[1:]] == TASK_NAMES
    np.testing.assert_array_equal(np.array([r[1:] for r in rows[1:]], dtype=float), analysis.layers[2].geometry.cosine)

    # Long CSV: one row per layer and unordered pair.
    with open(out / "cosine-pairs.csv", newline="") as fh:
        pairs = list(csv.DictReader(fh))
    assert len(pairs) == 3 * 15
    row = next(r for r in pairs if r["layer"] == "blocks.1.act" and r["task_a"] == "cars" and r["task_b"] == "cats")
    assert float(row["cosine"]) == analysis.layers[1].geometry.cosine[0, 3]

    doc = json.loads((out / "geometry.json").read_text())
    assert doc["metric"] == "cosine" and doc["definition"].startswith("cos(F_s, F_t)")
    assert doc["task_names"] == TASK_NAMES and doc["version"] == "1.2"
    assert doc["checkpoint"]["sha256"] == analysis.sha256 and doc["measure"]["spec"] == "data"
    layer = doc["layers"][2]
    np.testing.assert_array_equal(np.array(layer["matrix"]), analysis.layers[2].geometry.cosine)
    assert layer["adjusted_rand_index"] == pytest.approx(1.0) and layer["newick"].endswith(";")
    assert doc["layers"][0]["cophenetic_correlation"] is None  # undefined, not NaN, in JSON

    npz = np.load(out / "geometry.npz")
    assert list(npz["task_names"]) == TASK_NAMES
    np.testing.assert_array_equal(npz["L2_distance"], analysis.layers[1].geometry.distance)
    np.testing.assert_array_equal(npz["L3_alpha"], analysis.layers[2].geometry.alpha)
    assert npz["L1_mu_sigma"].tolist() == pytest.approx([0.2, 0.8])

    newick = (out / "tree-L3-blocks.2.act.nwk").read_text().strip()
    assert newick == analysis.layers[2].clustering.to_newick()
    assert (out / "sharing-tree.nwk").read_text().strip() == analysis.sharing_tree().to_newick()

    with open(out / "clusters.csv", newline="") as fh:
        clusters = list(csv.DictReader(fh))
    assert [r["task"] for r in clusters] == TASK_NAMES
    assert [int(r["L2-blocks.1.act planted group"]) for r in clusters] == [1, 1, 1, 2, 2, 2]
    assert len({r["L1-blocks.0.act cluster"] for r in clusters}) == 1


def test_export_refuses_to_overwrite(tmp_path, analysis):
    export_analysis(analysis, tmp_path)
    with pytest.raises(FileExistsError, match="pass --overwrite"):
        export_analysis(analysis, tmp_path)
    assert export_analysis(analysis, tmp_path, overwrite=True)


def test_export_quotes_awkward_names(tmp_path, checkpoint):
    from taan_viz.analysis import analyze

    names = ['a,b', 'say "hi"', "c", "d", "e", "f"]
    export_analysis(analyze(checkpoint, task_names=names, layers=[0]), tmp_path)
    with open(tmp_path / "distance-L1-blocks.0.act.csv", newline="") as fh:
        assert next(csv.reader(fh))[1:] == names


def test_export_rejects_metric(tmp_path, analysis):
    with pytest.raises(ValueError, match="metric must be one of"):
        export_analysis(analysis, tmp_path, metric="spearman")


@pytest.mark.parametrize("overwrite", [False, True])
@pytest.mark.parametrize("dangling", [False, True], ids=["to-a-file", "dangling"])
def test_a_link_planted_as_an_export_target_is_refused(tmp_path, analysis, overwrite, dangling):
    from taan_core._atomic import WriteError

    target = tmp_path / "precious.txt"
    if not dangling:
        target.write_text("keep")
    out = tmp_path / "out"
    out.mkdir()
    link = out / "geometry.json"
    link.symlink_to(target)
    with pytest.raises(WriteError, match=rf"^{link} is a symbolic link; refused to write through it"):
        export_analysis(analysis, out, overwrite=overwrite)
    assert (target.read_text() == "keep") if not dangling else not target.exists()
    assert [p.name for p in out.iterdir()] == ["geometry.json"]  # nothing written


def test_export_cli_names_a_planted_link_in_one_line(checkpoint_path, tmp_path, capsys):
    from taan_viz.cli import main

    target = tmp_path / "precious.txt"
    target.write_text("keep")
    out = tmp_path / "out"
    out.mkdir()
    (out / "clusters.csv").symlink_to(target)
    with pytest.raises(SystemExit) as exc:
        main(["export", str(checkpoint_path), "-o", str(out), "--overwrite"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith(f"taan-viz: error: {out / 'clusters.csv'} is a symbolic link")
    assert target.read_text() == "keep"


def test_names_like_the_old_placeholders_cannot_swap_data(tmp_path):
    # Names that the earlier text substitution took for its own placeholders ("@matrix0@").
    import torch

    from taan_core.checkpoint import load_checkpoint
    from taan_viz.analysis import analyze
    from tests.viz.viz_helpers import make_checkpoint_dict

    raw = make_checkpoint_dict()
    tasks = ["@matrix0@", '"@matrix1@"', "@matrix2@\n"] + raw["task_names"][3:]
    raw["task_names"] = tasks
    names = ["@matrix1@", '"@matrix0@"', "[\n@matrix2@\n]"]
    raw["layer_names"] = names
    for layer, name in zip(raw["layers"], names):
        layer["name"] = name
    torch.save(raw, tmp_path / "checkpoint.pt")
    analysis = analyze(load_checkpoint(tmp_path / "checkpoint.pt"))
    export_analysis(analysis, tmp_path / "out")
    doc = json.loads((tmp_path / "out" / "geometry.json").read_text())
    assert doc["task_names"] == tasks and [la["name"] for la in doc["layers"]] == names
    for la, layer in zip(analysis.layers, doc["layers"]):
        np.testing.assert_array_equal(np.array(layer["matrix"]), la.geometry.distance)
        assert layer["position"] == la.index + 1


# --- streaming: the files equal the single-string output of before -----------------------------


def _previous_rows(mat):
    return [",".join(map(repr, row)) for row in mat.tolist()]


def _previous_square_csv(names, rows):
    from taan_viz.export import _csv_field

    quoted = [_csv_field(n) for n in names]
    lines = ["task," + ",".join(quoted)]
    lines.extend(f"{name},{row}" for name, row in zip(quoted, rows))
    return "\n".join(lines) + "\n"


def _previous_pairs_csv(analysis, metric, formatted):
    from taan_viz.export import _csv_field

    quoted = [_csv_field(n) for n in analysis.task_names]
    lines = [f"layer_position,layer,task_a,task_b,{metric.replace('-', '_')}"]
    for la, rows in zip(analysis.layers, formatted):
        head = f"{la.index + 1},{_csv_field(la.name)},"
        for i, row in enumerate(rows):
            values = row.split(",")
            lines.extend(f"{head}{quoted[i]},{quoted[j]},{values[j]}" for j in range(i + 1, len(values)))
    return "\n".join(lines) + "\n"


def _previous_json_doc(analysis, metric, clusters, metadata, formatted):
    from taan_viz.analysis import METRICS
    from taan_viz.export import _json_value

    layers = []
    for la, lab in zip(analysis.layers, clusters):
        g = la.geometry
        coph = la.clustering.cophenetic_correlation
        layers.append({
            "position": la.index + 1, "name": la.name, "mu": g.mu, "sigma": g.sigma,
            "num_hinges": int(g.hinges.shape[0]), "norms": g.norms.tolist(), "matrix": None,
            "cophenetic_correlation": None if np.isnan(coph) else coph, "clusters": (lab + 1).tolist(),
            "leaf_order": la.clustering.order.tolist(), "newick": la.clustering.to_newick(),
            "adjusted_rand_index": la.ari,
        })
    doc = {
        "tool": "taan-viz", "version": metadata.get("version", ""),
        "checkpoint": {"path": analysis.source, "sha256": analysis.sha256},
        "measure": {"spec": analysis.measure.spec, "description": analysis.describe_measure()},
        "metric": metric, "definition": METRICS[metric][1], "linkage": analysis.method,
        "task_names": list(analysis.task_names), "layers": layers,
    }
    fields = [f' {json.dumps(key)}: {_json_value(value, " ")}' for key, value in doc.items() if key != "layers"]
    entries = []
    for layer, rows in zip(layers, formatted):
        parts = []
        for key, value in layer.items():
            text = "[\n" + ",\n".join(f"[{row}]" for row in rows) + "\n   ]" if key == "matrix" else \
                _json_value(value, "   ")
            parts.append(f"   {json.dumps(key)}: {text}")
        entries.append("  {\n" + ",\n".join(parts) + "\n  }")
    fields.append(' "layers": [\n' + ",\n".join(entries) + "\n ]")
    return "{\n" + ",\n".join(fields) + "\n}\n"


def _previous_npz(analysis, clusters):
    import io

    arrays = {"task_names": np.array(analysis.task_names, dtype=str),
              "layer_names": np.array(analysis.layer_names, dtype=str)}
    for la, lab in zip(analysis.layers, clusters):
        g, key = la.geometry, f"L{la.index + 1}"
        arrays.update({
            f"{key}_inner_product": g.inner_product, f"{key}_distance": g.distance,
            f"{key}_squared_distance": g.squared_distance, f"{key}_cosine": g.cosine,
            f"{key}_alpha": g.alpha, f"{key}_hinges": g.hinges, f"{key}_linkage": la.clustering.linkage,
            f"{key}_order": la.clustering.order, f"{key}_clusters": lab + 1,
            f"{key}_mu_sigma": np.array([g.mu, g.sigma]),
        })
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


@pytest.mark.parametrize("metric", ["distance", "cosine"])
@pytest.mark.parametrize("keep_rows,chunk", [(2000, 1 << 20), (0, 7)])
def test_streamed_files_equal_the_single_string_output_byte_for_byte(tmp_path, monkeypatch, metric, keep_rows,
                                                                      chunk):
    import torch

    import taan_viz.export as export
    from taan_core.checkpoint import load_checkpoint
    from taan_viz.analysis import analyze
    from tests.viz.viz_helpers import make_checkpoint_dict

    raw = make_checkpoint_dict()
    raw["task_names"] = ['a,"b"', "ü\nline", "plain", "x y", "'q'", "z"][: len(raw["task_names"])] + \
        raw["task_names"][6:]
    raw["layers"][0]["name"] = raw["layer_names"][0] = 'first, "layer"'
    torch.save(raw, tmp_path / "checkpoint.pt")
    analysis = analyze(load_checkpoint(tmp_path / "checkpoint.pt"))
    monkeypatch.setattr(export, "_KEEP_ROWS", keep_rows)
    monkeypatch.setattr(export, "_CHUNK", chunk)
    out = tmp_path / "out"
    export_analysis(analysis, out, metric=metric, metadata={"version": "9.9"})
    clusters = analysis.cluster_labels(threshold=0.1)
    formatted = [_previous_rows(la.geometry.matrix(metric)) for la in analysis.layers]
    for la, rows in zip(analysis.layers, formatted):
        name = f"{metric}-{layer_slug(la.index, la.name)}.csv"
        assert (out / name).read_bytes() == _previous_square_csv(analysis.task_names, rows).encode()
    assert (out / f"{metric}-pairs.csv").read_bytes() == _previous_pairs_csv(analysis, metric, formatted).encode()
    assert (out / "geometry.json").read_bytes() == \
        _previous_json_doc(analysis, metric, clusters, {"version": "9.9"}, formatted).encode()
    assert (out / "geometry.npz").read_bytes() == _previous_npz(analysis, clusters)
    assert not list(out.glob(".*.tmp"))


def test_pairs_file_is_opt_in_beyond_the_limit(tmp_path, monkeypatch, analysis, checkpoint_path, capsys):
    import taan_viz.export as export
    from taan_viz.cli import main

    assert export.PAIRS_LIMIT == 2000
    assert "distance-pairs.csv" in export_names(analysis)  # T = 6: always written
    monkeypatch.setattr(export, "PAIRS_LIMIT", analysis.num_tasks - 1)
    names = export_names(analysis)
    assert "distance-pairs.csv" not in names
    assert [p.name for p in export_analysis(analysis, tmp_path / "a")] == names
    assert not (tmp_path / "a" / "distance-pairs.csv").exists()
    written = export_analysis(analysis, tmp_path / "b", pairs=True)
    assert [p.name for p in written] == export_names(analysis, pairs=True)
    assert (tmp_path / "b" / "distance-pairs.csv").exists()
    with pytest.raises(SystemExit) as exc:
        main(["export", str(checkpoint_path), "-o", str(tmp_path / "c")])
    assert exc.value.code == 0
    err = capsys.readouterr().err
    assert not (tmp_path / "c" / "distance-pairs.csv").exists()
    assert "distance-pairs.csv not written: 6 tasks > 5 (15 rows a layer); pass --pairs" in err
    with pytest.raises(SystemExit) as exc:
        main(["export", str(checkpoint_path), "-o", str(tmp_path / "d"), "--pairs"])
    assert exc.value.code == 0
    assert (tmp_path / "d" / "distance-pairs.csv").exists()
    assert "not written" not in capsys.readouterr().err
