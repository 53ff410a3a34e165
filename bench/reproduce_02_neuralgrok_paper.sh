#!/usr/bin/env bash
# The data of notebooks/02_neuralgrok_paper.ipynb (issue 6, not written yet): every sweep file configs/sweep-neuralgrok-*.toml,
# each run and exported to results/<its out directory's name>. JOBS=2 runs two at a time.
set -euo pipefail
cd "$(dirname "$0")/.."
shopt -s nullglob
sweeps=(configs/sweep-neuralgrok-*.toml)
if [ ${#sweeps[@]} -eq 0 ]; then
  echo "no configs/sweep-neuralgrok-*.toml sweep files yet: notebooks/02_neuralgrok_paper.ipynb is still to be written" >&2
  exit 1
fi
exec bench/reproduce_sweeps.sh "${sweeps[@]}"
