#!/usr/bin/env bash
# The data of notebooks/03_grokking_insight.ipynb (issue 6, not written yet): every sweep file configs/sweep-grokking-insight-*.toml,
# each run and exported to results/<its out directory's name>. JOBS=2 runs two at a time.
set -euo pipefail
cd "$(dirname "$0")/.."
shopt -s nullglob
sweeps=(configs/sweep-grokking-insight-*.toml)
if [ ${#sweeps[@]} -eq 0 ]; then
  echo "no configs/sweep-grokking-insight-*.toml sweep files yet: notebooks/03_grokking_insight.ipynb is still to be written" >&2
  exit 1
fi
exec bench/reproduce_sweeps.sh "${sweeps[@]}"
