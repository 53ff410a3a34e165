#!/usr/bin/env bash
# Gu et al. ("Beyond Progress Measures") at the paper's own scale, p = 97 (issue 17): the base runs (a+b seeds
# 0-2, a-b and x^2+xy+y^2 seed 0), the rectangle and strip hold-outs at k 40, 50, 60, 67, the MLP, one-hot, MSE
# and Toeplitz variants, the Toeplitz run's default-embedding control, and both at seeds 1 and 2
# (configs/sweep-gu-p97-*.toml, 22 runs), and seeds 1-2 of the 32-pixel polygon ResNet-18; each exported to
# results/<its out directory's name>, then `neuralgrok analyze` of each sweep (results/<sweep>/correlations.csv).
# Capped at 30,000 full-batch steps with the early and plateau stops; 0.05-0.4 s a step on one thread here
# (BENCHMARKS.md), so more than one session: runs resume when the same command is given again.
# The order puts the paper's central run first (a+b, seed 0), then the cheap hold-outs, then the rest.
#   JOBS=2 bench/reproduce_gu_p97.sh
set -euo pipefail
cd "$(dirname "$0")/.."
sweeps=(configs/sweep-gu-p97-{base,strip,rectangle,base-tasks,base-seeds,toeplitz,mse,mlp,onehot,toeplitz-control}.toml
        configs/sweep-gu-p97-toeplitz-seeds.toml
        configs/sweep-gu-polygons-seeds.toml)
# Every logged row is exported (at most 1,501: 30,000 steps at eval_every 20), not the default 200 log-spaced
# ones: the correlation table's Spearman coefficients and change points are over the whole run.
MAX_ROWS=2000 bench/reproduce_sweeps.sh "${sweeps[@]}"
for out in sweep-gu-p97-{base,rectangle,strip,variants,toeplitz-seeds}; do
  .venv/bin/neuralgrok analyze "results/$out"
done
