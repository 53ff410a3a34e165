"""Short runs at a fixed seed log exactly the metrics that commit b848e45 logged, bit for bit: every column of
every row but the wall time, compared as exact floats. Since then the p = 97 step was made cheaper without
changing its arithmetic (bench/gu_step.py): the Nanda model's evaluation runs the read-out position only
through its last block, and the loop's stop rules see a logged step's train metrics first; NeuralGrok's
amplify op got a fused forward, and the wrapper a cheaper non-finite check.

The numbers depend on the machine's floating-point kernels, so they were recorded for one torch build and CPU
capability (``ENVIRONMENT`` in the file) and the test is skipped elsewhere. To record them for another
machine, run this file with the starting commit's package first on the path::

    git worktree add /tmp/before b848e45   # then build or copy its neuralgrok/_C*.so there
    PYTHONPATH=/tmp/before python tests/test_pinned_runs.py --write tests/data/pinned_runs.json
"""
import json
import math
import sys
from pathlib import Path

import pytest
import torch

from neuralgrok.experiments.config import TrainConfig
from neuralgrok.experiments.loop import train

PINNED = Path(__file__).resolve().parent / "data" / "pinned_runs.json"
COMMON = dict(task="a+b", p=97, layout="nanda", model="nanda", width=32, heads=4, mlp_width=64, lr=1e-3,
              weight_decay=1.0, steps=30, eval_every=10, checkpoint_every=0, threads=1)
# The base run (a full-batch step gives the train metrics; 4,705 test pairs in several evaluation chunks), the
# strip hold-out (test parts), and a run whose measures need every pair's logits (train evaluated too).
RUNS = {
    "base": dict(COMMON, depth=2, train_fraction=0.5, measures="med,med_cv,fourier_gini,neuron_logit_gini"),
    "strip": dict(COMMON, depth=1, train_fraction=0.3, split="strip", holdout_k=40, operand_offset=60,
                  measures="med,med_cv"),
    "all_pairs": dict(COMMON, depth=1, train_fraction=0.3, measures="restricted_loss,excluded_loss"),
    # NeuralGrok at the Table 1 setup (configs/neuralgrok/add.toml) on a narrow model: the amplify op's
    # piecewise path with the (128, 128) amplifier, meta steps every 4 (its CPU kernels must keep std::exp's
    # values by default: kernels/select.h), the non-finite checks and the clip.
    "neuralgrok": dict(task="a+b", p=97, nonzero_b=True, train_fraction=0.5, model="transformer", block="official",
                       width=32, depth=1, heads=4, optimizer="adam", lr=1e-3, weight_decay=1e-3, betas=[0.9, 0.98],
                       warmup_steps=10, warmup_from_zero=True, batch_size=512, method="neuralgrok",
                       amplifier_hidden=[128, 128], meta_every=4, meta_lr=1e-4, meta_weight_decay=1e-3,
                       clip_grad_norm=1.0, steps=30, eval_every=10, checkpoint_every=0, threads=1),
}


def environment() -> str:
    cpu = getattr(torch.backends, "cpu", None)  # torch >= 2.0; torch 1.13 has none
    capability = cpu.get_cpu_capability() if hasattr(cpu, "get_cpu_capability") else "unknown"
    return f"torch {torch.__version__}, CPU capability {capability}"


def logged(name: str) -> list:
    """The run's rows without the wall time, each number as its exact hex form (NaN as the string)."""
    history = train(TrainConfig(**RUNS[name]), progress=False).history
    return [{key: float(value).hex() if not math.isnan(value) else "nan" for key, value in row.items()
             if key != "wall_time_s"} for row in history]


@pytest.mark.parametrize("name", sorted(RUNS))
def test_short_runs_log_the_starting_commits_metrics_bit_for_bit(name):
    pinned = json.loads(PINNED.read_text())
    if pinned["environment"] != environment():
        pytest.skip(f"pinned for {pinned['environment']}, this is {environment()} (see the module docstring)")
    assert logged(name) == pinned["runs"][name]


if __name__ == "__main__":
    if sys.argv[1:2] != ["--write"] or len(sys.argv) != 3:
        sys.exit("usage: python tests/test_pinned_runs.py --write FILE.json")
    record = {"environment": environment(), "runs": {name: logged(name) for name in sorted(RUNS)}}
    Path(sys.argv[2]).write_text(json.dumps(record, indent=1) + "\n")
