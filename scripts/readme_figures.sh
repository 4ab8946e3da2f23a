#!/usr/bin/env bash
# The figures README.md shows, from a trained checkpoint:
#   figures/heatmap.png, figures/curves.png, figures/tree.png and the report in figures/report/;
# and, at the scale of real data sets (65 tasks, scripts/large_figures.py), figures/large/.
# Usage: scripts/readme_figures.sh [CHECKPOINT (runs/demo/checkpoint.pt)] [OUT (figures)]
set -euo pipefail
checkpoint="${1:-runs/demo/checkpoint.pt}"
out="${2:-figures}"
viz="${TAAN_VIZ:-.venv/bin/taan-viz}"
python="${TAAN_PYTHON:-.venv/bin/python}"
"$viz" heatmap "$checkpoint" --out "$out" --dpi 200 --overwrite
"$viz" curves "$checkpoint" --out "$out" --dpi 200 --no-grid --overwrite
"$viz" tree "$checkpoint" --out "$out" --dpi 200 --overwrite
"$viz" report "$checkpoint" --out "$out/report" --overwrite
# 65 tasks: names stay readable, every task keeps one colour across the figures.
large="$(mktemp -d)"
trap 'rm -rf "$large"' EXIT
"$python" scripts/large_figures.py "$large" --tasks 65
"$viz" tree "$large/reference-65-tasks.pt" --out "$out/large" --dpi 150 --overwrite
