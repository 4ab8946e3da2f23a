"""Numbers out: the analysis as CSV, JSON, NPZ and Newick files for other tools.

Files written by :func:`export_analysis` (``L<l>-<name>`` identifies a layer by its 1-based
position and its name made file-safe):

``<metric>-L<l>-<name>.csv``
    The layer's T x T matrix of the chosen metric, square, first row and column the task names.
``<metric>-pairs.csv``
    Long format, one row per layer and unordered task pair (s < t): layer position, layer,
    task_a, task_b, value. Written for at most :data:`PAIRS_LIMIT` (2000) tasks, beyond that only
    when asked (``pairs=True``, ``taan-viz export --pairs``): at T = 10,000 it holds 50 million
    rows per layer, several GB that the square CSV and ``geometry.npz`` already hold.
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

Every file is written row by row into a temporary file that then replaces the target (atomic,
see :mod:`taan_core._atomic`), so no file is ever held in memory whole.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from taan_core._atomic import atomic_write, refuse_link
from taan_viz.analysis import METRICS, Analysis, check_metric

__all__ = ["PAIRS_LIMIT", "export_analysis", "export_names", "layer_slug"]

#: Beyond this many tasks ``<metric>-pairs.csv`` (T^2 / 2 rows per layer) is written only on request.
PAIRS_LIMIT = 2000

# Formatted rows are kept for reuse by the three text files of a layer up to this many tasks
# (about 20 bytes a number: 80 MB a layer at the limit); beyond it each file formats them again
# as it streams, so memory stays at one row.
_KEEP_ROWS = 2000

# Text is handed to the file in pieces of about this many characters.
_CHUNK = 1 << 20


def layer_slug(index: int, name: str) -> str:
    """``L<index+1>-<name>`` with every run of characters other than letters, digits, ``.``,
    ``_`` and ``-`` replaced by ``-`` (unique per layer because of the position)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "layer"
    return f"L{index + 1}-{safe}"


def _csv_field(text: str) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow([text])
    return buf.getvalue()


def _format_row(row: np.ndarray) -> str:
    """Comma-separated shortest round-trip decimals (valid CSV and JSON numbers)."""
    return ",".join(map(repr, row.tolist()))


class _Rows(Sequence[str]):
    """The formatted rows of one matrix, made on first use.

    Formatting floats is most of the cost of an export at T = 1000, so up to ``_KEEP_ROWS`` tasks
    every file reuses these strings instead of formatting the same numbers again; beyond that they
    are not kept (the three text files of a layer at T = 10,000 would hold 6 GB of them).
    """

    def __init__(self, mat: np.ndarray):
        self._mat = mat
        self._kept: list | None = [None] * mat.shape[0] if mat.shape[0] <= _KEEP_ROWS else None

    def __len__(self) -> int:
        return self._mat.shape[0]

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        if self._kept is None:
            return _format_row(self._mat[i])
        if self._kept[i] is None:
            self._kept[i] = _format_row(self._mat[i])
        return self._kept[i]


def _streamed(pieces: Iterable[str]) -> Callable[[BinaryIO], None]:
    """A writer for :func:`atomic_write` that encodes ``pieces`` as UTF-8 in chunks."""

    def write(fh: BinaryIO) -> None:
        buf: list[str] = []
        size = 0
        for piece in pieces:
            buf.append(piece)
            size += len(piece)
            if size >= _CHUNK:
                fh.write("".join(buf).encode("utf-8"))
                buf, size = [], 0
        if buf:
            fh.write("".join(buf).encode("utf-8"))

    return write


def _square_csv(names: list[str], rows: Sequence[str]) -> Iterator[str]:
    quoted = [_csv_field(n) for n in names]
    yield "task," + ",".join(quoted) + "\n"
    for name, row in zip(quoted, rows):
        yield f"{name},{row}\n"


def _pairs_csv(analysis: Analysis, metric: str, formatted: list[_Rows]) -> Iterator[str]:
    quoted = [_csv_field(n) for n in analysis.task_names]
    yield f"layer_position,layer,task_a,task_b,{metric.replace('-', '_')}\n"
    for la, rows in zip(analysis.layers, formatted):
        head = f"{la.index + 1},{_csv_field(la.name)},"
        for i, row in enumerate(rows):
            values = row.split(",")
            yield "".join(f"{head}{quoted[i]},{quoted[j]},{values[j]}\n" for j in range(i + 1, len(values)))


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
              formatted: list[_Rows]) -> Iterator[str]:
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
    }
    # The document is assembled from json.dumps of its own values, never by replacing text in
    # it, so no task or layer name can be mistaken for a part of the structure. Matrices go one
    # row per line (the rows are already valid JSON numbers): indenting every number would make
    # the file, and the time to write it, several times larger for thousands of tasks.
    yield "{\n"
    for key, value in doc.items():
        yield f' {json.dumps(key)}: {_json_value(value, " ")},\n'
    yield ' "layers": ['
    for k, (layer, rows) in enumerate(zip(layers, formatted)):
        yield (",\n" if k else "\n") + "  {\n"
        for p, (key, value) in enumerate(layer.items()):
            yield (",\n" if p else "") + f"   {json.dumps(key)}: "
            if key == "matrix":
                yield "[\n"
                for r, row in enumerate(rows):
                    yield (",\n[" if r else "[") + row + "]"
                yield "\n   ]"
            else:
                yield _json_value(value, "   ")
        yield "\n  }"
    yield "\n ]\n}\n" if layers else "\n\n ]\n}\n"


def _npz_writer(analysis: Analysis, clusters: list[np.ndarray]) -> Callable[[BinaryIO], None]:
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
    # Uncompressed: float matrices barely compress, and compressing costs seconds at T = 1000.
    # Written straight into the temporary file, one array after the other.
    return lambda fh: np.savez(fh, **arrays)


def _writes_pairs(analysis: Analysis, pairs: bool) -> bool:
    return pairs or analysis.num_tasks <= PAIRS_LIMIT


def export_names(analysis: Analysis, metric: str = "distance", pairs: bool = False) -> list[str]:
    """The file names :func:`export_analysis` writes (with the same ``pairs``), in writing order."""
    check_metric(metric)
    names = [f"{metric}-{layer_slug(la.index, la.name)}.csv" for la in analysis.layers]
    names += [f"{metric}-pairs.csv"] if _writes_pairs(analysis, pairs) else []
    names += ["geometry.json", "geometry.npz"]
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
    pairs: bool = False,
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
    pairs : bool, default False
        Write ``<metric>-pairs.csv`` even beyond :data:`PAIRS_LIMIT` tasks (up to it, it is
        always written).

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
    names = export_names(analysis, metric, pairs)
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
    formatted = [_Rows(la.geometry.matrix(metric)) for la in analysis.layers]
    text = _streamed
    writers: list[tuple[str, Callable[[], Callable[[BinaryIO], None]]]] = []
    for la, rows in zip(analysis.layers, formatted):
        writers.append((f"{metric}-{layer_slug(la.index, la.name)}.csv",
                        lambda rows=rows: text(_square_csv(list(analysis.task_names), rows))))
    if _writes_pairs(analysis, pairs):
        writers.append((f"{metric}-pairs.csv", lambda: text(_pairs_csv(analysis, metric, formatted))))
    writers += [
        ("geometry.json", lambda: text(_json_doc(analysis, metric, clusters, meta, formatted))),
        ("geometry.npz", lambda: _npz_writer(analysis, clusters)),
    ]
    for la in analysis.layers:
        writers.append((f"tree-{layer_slug(la.index, la.name)}.nwk",
                        lambda la=la: text([la.clustering.to_newick() + "\n"])))
    writers += [
        ("sharing-tree.nwk", lambda: text([tree.to_newick() + "\n"])),
        ("clusters.csv", lambda: text([_clusters_csv(analysis, clusters, tree.groups)])),
    ]
    assert [n for n, _ in writers] == names
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, make in writers:
        # Atomic: a file appears whole or not at all, and a link at its name is replaced, never
        # written through. Each writer streams its rows into the temporary file.
        written.append(atomic_write(out / name, make()))
    return written
