#!/usr/bin/env bash
# Run sweep files, JOBS runs at a time across all of them (default 1), then export each to
# results/<name of its out directory>, the layout the notebooks read; MAX_ROWS (default: the export's own, 200
# log-spaced rows) caps each copy's metrics.csv:
#   JOBS=2 bench/reproduce_sweeps.sh configs/sweep-neuralgrok-*.toml
# The notebooks' own scripts (bench/reproduce_0*.sh) call this with their sweep files.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -eq 0 ]; then echo "usage: $0 SWEEP.toml ..." >&2; exit 2; fi
make install
.venv/bin/neuralgrok sweep "$@" --jobs "${JOBS:-1}"  # one pool, so a long run does not leave a core idle
for sweep in "$@"; do
  out=$(.venv/bin/python -c 'import sys; from neuralgrok.experiments.sweeps import sweep_out; print(sweep_out(sys.argv[1]))' "$sweep")
  .venv/bin/neuralgrok results export ${MAX_ROWS:+--max-rows "$MAX_ROWS"} "$out" "results/$(basename "$out")"
done
