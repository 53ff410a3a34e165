#!/usr/bin/env bash
# The data of notebooks/02_neuralgrok_paper.ipynb, at the reduced size its sweep files document:
# configs/sweep-demo.toml (a+b, three seeds; shared with 04_cost) and every configs/sweep-neuralgrok-*.toml,
# each run and exported to results/<its out directory's name>. The transfer sweep needs the amplifier
# NeuralGrok trains on a+b first: the demo's NeuralGrok run (seed 0), run here to
# runs/neuralgrok-transfer-source. JOBS=2 runs two at a time. About 3 CPU-hours in all.
#   bench/reproduce_02_neuralgrok_paper.sh
set -euo pipefail
cd "$(dirname "$0")/.."
make install
source=runs/neuralgrok-transfer-source
if [ ! -f "$source/summary.json" ]; then
  .venv/bin/neuralgrok run --config configs/demo.toml --method neuralgrok --quiet --out "$source"
fi
exec bench/reproduce_sweeps.sh configs/sweep-demo.toml configs/sweep-neuralgrok-*.toml
