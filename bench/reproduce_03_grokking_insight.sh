#!/usr/bin/env bash
# The reduced-size data (p = 31) that notebooks/03_grokking_insight.ipynb drew before the p = 97 runs (it still
# draws the polygon runs), at the size its sweep files document: every
# configs/sweep-grokking-insight-*.toml, run and exported to results/<its out directory's name>, then
# `neuralgrok analyze` of each full run (MED against test loss; the ResNet-18 polygon run, which has no MED,
# gets its weight norm's and weight AGE's), its analysis.csv copied beside the export.
# JOBS=2 runs two at a time: 1 h 38 min from a fresh clone on the project's 2-core machine, build included
# (BENCHMARKS.md, "Regenerating the committed results").
#   bench/reproduce_03_grokking_insight.sh
set -euo pipefail
cd "$(dirname "$0")/.."
sweeps=(configs/sweep-grokking-insight-*.toml)
bench/reproduce_sweeps.sh "${sweeps[@]}"
for sweep in "${sweeps[@]}"; do
  out=$(.venv/bin/python -c 'import sys; from neuralgrok.experiments.sweeps import sweep_out; print(sweep_out(sys.argv[1]))' "$sweep")
  for run in "$out"/*/; do
    .venv/bin/neuralgrok analyze "$run" > /dev/null
    cp "$run/analysis.csv" "results/$(basename "$out")/$(basename "$run")/analysis.csv"
  done
done
