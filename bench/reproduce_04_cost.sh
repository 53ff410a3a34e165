#!/usr/bin/env bash
# The data of notebooks/04_cost.ipynb (results/sweep-demo): the demo sweep (4 methods x 3 seeds, about
# 15 minutes on one core of an idle machine), its small exported copy, and each method's peak memory.
set -euo pipefail
cd "$(dirname "$0")/.."
bench/reproduce_sweeps.sh configs/sweep-demo.toml
.venv/bin/python bench/method_cost.py configs/sweep-demo.toml --steps 200 --out results/sweep-demo/method_cost.csv
