#!/usr/bin/env bash
# The data of notebooks/02_neuralgrok_paper.ipynb: NeuralGrok's Table 1 at the paper's settings with seeds
# and controls (configs/sweep-neuralgrok-table1.toml, 84 runs), the c ablation and the normalisation sweep
# (configs/sweep-neuralgrok-rescale.toml, 10 runs), the mod-7 task (configs/sweep-neuralgrok-poly7-paper.toml,
# 3 runs) and the standard run with stronger weight decay (configs/sweep-neuralgrok-mechanism.toml, 3 runs), each run and exported to results/<its out directory's name>. Runs resume: give the same command
# again after an interruption. JOBS=2 runs two at a time; about 15-30 minutes a run on one thread here,
# some 35 hours of CPU in all (most runs end early, once test accuracy has held 99% for 20 epochs).
#   JOBS=2 bench/reproduce_02_neuralgrok_paper.sh
set -euo pipefail
cd "$(dirname "$0")/.."
exec bench/reproduce_sweeps.sh configs/sweep-neuralgrok-table1.toml configs/sweep-neuralgrok-rescale.toml \
  configs/sweep-neuralgrok-poly7-paper.toml configs/sweep-neuralgrok-mechanism.toml
