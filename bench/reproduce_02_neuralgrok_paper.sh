#!/usr/bin/env bash
# The data of notebooks/02_neuralgrok_paper.ipynb, at the reduced size its sweep files document:
# configs/sweep-demo.toml (a+b, three seeds; shared with 04_cost) and every configs/sweep-neuralgrok-*.toml,
# each run and exported to results/<its out directory's name>. JOBS=2 runs two at a time.
#   bench/reproduce_02_neuralgrok_paper.sh
set -euo pipefail
cd "$(dirname "$0")/.."
exec bench/reproduce_sweeps.sh configs/sweep-demo.toml configs/sweep-neuralgrok-*.toml
