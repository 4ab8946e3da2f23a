"""Numbers out: the analysis as CSV, JSON, NPZ and Newick files for other tools.

Files written by :func:`export_analysis` (``L<l>-<name>`` identifies a layer by its 1-based
position and its name made file-safe):

``<metric>-L<l>-<name>.csv``
    The layer's T x T matrix of the chosen metric, square, first row and column the task names.
``<metric>-pairs.csv``
    Long format, one row per layer and unordered task pair (s < t): layer position, layer,
    task_a, task_b, value.
``geometry.json``
    Task and layer names, the measure, the metric's definition, and per layer the matrix,
    the norms, the cophenetic correlation, the flat clusters and the tree in Newick.
``geometry.npz``
    Every array: per layer ``L<l>_inner_product``, ``_distance``, ``_squared_distance``,
    ``_cosine``, ``_alpha``, ``_hinges``, ``_linkage``, ``_order``, ``_clusters``, ``_mu_sigma``;
    and ``task_names``, ``layer_names``.
``tree-L<l>-<name>.nwk``
    The layer's hierarchical clustering in Newick format.
``sharing-tree.nwk``
    The sharing tree (root ``input``, one level per layer, tasks as leaves).
``clusters.csv``
    Per task: its group ("cluster": the groups every figure colours, by default the sharing
    tree's) and sharing group at each layer (and planted group when known).

Cluster, sharing-group and planted-group ids are numbered from 1 in every file, as in the
report's tables; indices into the task list (``_order``, the linkage matrix) stay 0-based.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from taan_core._atomic import refuse_link, write_file
from taan_viz.analysis import METRICS, Analysis, check_metric

__all__ = ["export_analysis", "export_names", "layer_slug"]


def layer_slug(index: int, name: str) -> str:
    """``L<index+1>-<name>`` with every run of characters other than letters, digits, ``.``,
    ``_`` and ``-`` replaced by ``-`` (unique per layer because of the position)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "layer"
    return f"L{index + 1}-{safe}"


def _csv_field(text: str) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow([text])
    return buf.getvalue()


def _format_rows(mat: np.ndarray) -> list[str]:
    """Each row as comma-separated shortest round-trip decimals (valid CSV and JSON numbers).

    Formatting floats is most of the cost of an export at T = 1000, so every file reuses these
    strings instead of formatting the same numbers again.
    """
    return [",".join(map(repr, row)) for row in mat.tolist()]


def _square_csv(names: list[str], rows: list[str]) -> str:
    quoted = [_csv_field(n) for n in names]
    lines = ["task," + ",".join(quoted)]
    lines.extend(f"{name},{row}" for name, row in zip(quoted, rows))
    return "\n".join(lines) + "\n"


def _pairs_csv(analysis: Analysis, metric: str, formatted: list[list[str]]) -> str:
    quoted = [_csv_field(n) for n in analysis.task_names]
    lines = [f"layer_position,layer,task_a,task_b,{metric.replace('-', '_')}"]
    for la, rows in zip(analysis.layers, formatted):
        head = f"{la.index + 1},{_csv_field(la.name)},"
        for i, row in enumerate(rows):
            values = row.split(",")
            lines.extend(f"{head}{quoted[i]},{quoted[j]},{values[j]}" for j in range(i + 1, len(values)))
    return "\n".join(lines) + "\n"


def _clusters_csv(analysis: Analysis, clusters: list[np.ndarray], sharing: np.ndarray) -> str:
    header = ["task"]
    depth = {la.index: k for k, la in enumerate(sorted(analysis.layers, key=lambda la: la.index))}
    for la in analysis.layers:
        slug = layer_slug(la.index, la.name)
        header += [f"{slug} cluster", f"{slug} sharing group"]
        if la.planted is not None:
            header.append(f"{slug} planted group")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for t, name in enumerate(analysis.task_names):
        row: list = [name]
        for la, lab in zip(analysis.layers, clusters):
            row += [int(lab[t]) + 1, int(sharing[depth[la.index], t]) + 1]
            if la.planted is not None:
                row.append(int(la.planted[t]) + 1)
        writer.writerow(row)
    return buf.getvalue()


def _json_value(value, indent: str) -> str:
    text = json.dumps(value, indent=1, allow_nan=False)
    return text.replace("\n", "\n" + indent)


def _json_doc(analysis: Analysis, metric: str, clusters: list[np.ndarray], metadata: Mapping[str, str],
              formatted: list[list[str]]) -> str:
    for la in analysis.layers:
        if not np.isfinite(la.geometry.matrix(metric)).all():
            raise ValueError(f"layer {la.name}: the {metric} matrix has non-finite values, which JSON cannot hold")
    layers = []
    for la, lab in zip(analysis.layers, clusters):
        g = la.geometry
        coph = la.clustering.cophenetic_correlation
        layers.append({
            "position": la.index + 1,
            "name": la.name,
            "mu": g.mu,
            "sigma": g.sigma,
            "num_hinges": int(g.hinges.shape[0]),
            "norms": g.norms.tolist(),
            "matrix": None,  # written below, one row per line
            "cophenetic_correlation": None if np.isnan(coph) else coph,
            "clusters": (lab + 1).tolist(),
            "leaf_order": la.clustering.order.tolist(),
            "newick": la.clustering.to_newick(),
            "adjusted_rand_index": la.ari,
        })
    doc = {
        "tool": "taan-viz",
        "version": metadata.get("version", ""),
        "checkpoint": {"path": analysis.source, "sha256": analysis.sha256},
        "measure": {"spec": analysis.measure.spec, "description": analysis.describe_measure()},
        "metric": metric,
        "definition": METRICS[metric][1],
        "linkage": analysis.method,
        "task_names": list(analysis.task_names),
        "layers": layers,
    }
    # The document is assembled from json.dumps of its own values, never by replacing text in
    # it, so no task or layer name can be mistaken for a part of the structure. Matrices go one
    # row per line (the rows are already valid JSON numbers): indenting every number would make
    # the file, and the time to write it, several times larger for thousands of tasks.
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


def _npz_bytes(analysis: Analysis, clusters: list[np.ndarray]) -> bytes:
    arrays: dict[str, np.ndarray] = {
        "task_names": np.array(analysis.task_names, dtype=str),
        "layer_names": np.array(analysis.layer_names, dtype=str),
    }
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
    # Uncompressed: float matrices barely compress, and compressing costs seconds at T = 1000.
    np.savez(buf, **arrays)
    return buf.getvalue()


def export_names(analysis: Analysis, metric: str = "distance") -> list[str]:
    """The file names :func:`export_analysis` writes, in writing order."""
    check_metric(metric)
    names = [f"{metric}-{layer_slug(la.index, la.name)}.csv" for la in analysis.layers]
    names += [f"{metric}-pairs.csv", "geometry.json", "geometry.npz"]
    names += [f"tree-{layer_slug(la.index, la.name)}.nwk" for la in analysis.layers]
    return names + ["sharing-tree.nwk", "clusters.csv"]


def export_analysis(
    analysis: Analysis,
    out: "str | Path",
    *,
    metric: str = "distance",
    threshold: float = 0.1,
    n_clusters: int | None = None,
    overwrite: bool = False,
    metadata: Mapping[str, str] | None = None,
) -> list[Path]:
    """Write the analysis of every layer into ``out`` (see the module docstring for the files).

    Parameters
    ----------
    analysis : Analysis
    out : path-like
        Folder, created when missing.
    metric : str, default "distance"
        The matrix of the square CSV files and of ``geometry.json``.
    threshold : float, default 0.1
        Relative threshold of the flat clusters and the sharing tree.
    n_clusters : int, optional
        Flat clusters by count instead.
    overwrite : bool, default False
        Replace existing files; otherwise an existing file is an error and nothing is written.
    metadata : mapping, optional
        ``version`` of the tool, recorded in ``geometry.json``.

    Returns
    -------
    list of Path
        The files written.

    Raises
    ------
    FileExistsError
        A target exists and ``overwrite`` is False.
    taan_core._atomic.WriteError
        A target is a symbolic link (refused whatever ``overwrite`` says; nothing is written),
        or the file system refuses a write.
    """
    check_metric(metric)
    out = Path(out)
    names = export_names(analysis, metric)
    for name in names:
        refuse_link(out / name)
    if not overwrite:
        existing = [n for n in names if os.path.lexists(out / n)]
        if existing:
            raise FileExistsError(f"{out / existing[0]} exists ({len(existing)} of the export files do); "
                                  "pass --overwrite to replace them")
    clusters = analysis.cluster_labels(n_clusters=n_clusters, threshold=threshold)
    tree = analysis.sharing_tree(threshold)
    meta = dict(metadata or {})
    formatted = [_format_rows(la.geometry.matrix(metric)) for la in analysis.layers]
    writers: list[tuple[str, Callable[[], "str | bytes"]]] = []
    for la, rows in zip(analysis.layers, formatted):
        writers.append((f"{metric}-{layer_slug(la.index, la.name)}.csv",
                        lambda rows=rows: _square_csv(list(analysis.task_names), rows)))
    writers += [
        (f"{metric}-pairs.csv", lambda: _pairs_csv(analysis, metric, formatted)),
        ("geometry.json", lambda: _json_doc(analysis, metric, clusters, meta, formatted)),
        ("geometry.npz", lambda: _npz_bytes(analysis, clusters)),
    ]
    for la in analysis.layers:
        writers.append((f"tree-{layer_slug(la.index, la.name)}.nwk", lambda la=la: la.clustering.to_newick() + "\n"))
    writers += [
        ("sharing-tree.nwk", lambda: tree.to_newick() + "\n"),
        ("clusters.csv", lambda: _clusters_csv(analysis, clusters, tree.groups)),
    ]
    assert [n for n, _ in writers] == names
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, make in writers:
        # Atomic: a file appears whole or not at all, and a link at its name is replaced, never
        # written through.
        written.append(write_file(out / name, make()))
    return written
