"""NeuralGrok under DistributedDataParallel: 2 real processes on the gloo backend."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

WORKER = Path(__file__).with_name("distributed_worker.py")

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="torch.distributed with gloo is not available")


@pytest.mark.parametrize("meta", ["paper", "fast"])
def test_ranks_keep_identical_model_and_amplifier(tmp_path, meta):
    world_size = 2
    procs = [subprocess.Popen([sys.executable, str(WORKER), str(rank), str(world_size), str(tmp_path / "init"),
                               str(tmp_path), meta], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for rank in range(world_size)]
    for proc in procs:
        output, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, output.decode()
    results = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(world_size)]
    assert all(r["meta_steps"] == 3 for r in results)
    # The ranks' outer data differ, so their local meta-gradients differ: only the all-reduce
    # keeps the amplifiers equal.
    assert results[0]["outer_loss"] != results[1]["outer_loss"]
    for key, value in results[0]["amplifier"].items():
        assert torch.equal(value, results[1]["amplifier"][key]), key
    for key, value in results[0]["model"].items():
        assert torch.equal(value, results[1]["model"][key]), key
