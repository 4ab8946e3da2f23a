#!/usr/bin/env bash
# README's figures of a real data set: TAANs trained on the school data (139 London schools)
# with five seeds, combined by taan-viz consensus into figures/large/.
#   figures/large/support-tree.png  the consensus sharing tree, each group coloured by its support
#   figures/large/distance.png      the mean and spread over the seeds of every layer's distances
#   figures/large/network.png       the mean over the seeds of the whole-network distances
#                                   (taan-viz network, which also prints how well the seeds agree)
# The school data are not shipped (docs/data.md says where to get school.mat), so `make demo`
# does not run this; about 6 minutes on two cores.
# Usage: scripts/school_figures.sh PATH/school.mat [OUT (figures/large)] [RUNS (runs/school-seeds)]
set -euo pipefail
data="${1:?usage: scripts/school_figures.sh PATH/school.mat [OUT] [RUNS]}"
out="${2:-figures/large}"
runs="${3:-runs/school-seeds}"
core="${TAAN_CORE:-.venv/bin/taan-core}"
viz="${TAAN_VIZ:-.venv/bin/taan-viz}"
if [ ! -f "$runs/seed-4/checkpoint.pt" ]; then
    "$core" train --dataset school --data "$data" --seeds 0-4 --workers 2 --out "$runs"
fi
consensus="$(mktemp -d)"
trap 'rm -rf "$consensus"' EXIT
"$viz" consensus "$runs" --out "$consensus" --dpi 150 --overwrite
mkdir -p "$out"
cp "$consensus/support-tree.png" "$consensus/distance.png" "$out/"
"$viz" network "$runs" --out "$consensus/network" --dpi 150 --overwrite
cp "$consensus/network/network-mean.png" "$out/network.png"
