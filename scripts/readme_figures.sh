#!/usr/bin/env bash
# The figures README.md shows, from a trained checkpoint:
#   figures/heatmap.png, figures/curves.png, figures/tree.png and the report in figures/report/.
# The figures of a real data set, figures/large/, come from scripts/school_figures.sh.
# Usage: scripts/readme_figures.sh [CHECKPOINT (runs/demo/checkpoint.pt)] [OUT (figures)]
set -euo pipefail
checkpoint="${1:-runs/demo/checkpoint.pt}"
out="${2:-figures}"
viz="${TAAN_VIZ:-.venv/bin/taan-viz}"
"$viz" heatmap "$checkpoint" --out "$out" --dpi 200 --overwrite
"$viz" curves "$checkpoint" --out "$out" --dpi 200 --no-grid --overwrite
"$viz" tree "$checkpoint" --out "$out" --dpi 200 --overwrite
"$viz" report "$checkpoint" --out "$out/report" --overwrite
