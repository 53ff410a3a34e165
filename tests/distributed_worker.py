"""One rank of tests/test_distributed.py: NeuralGrok under DistributedDataParallel (gloo, CPU).

    python tests/distributed_worker.py RANK WORLD_SIZE INIT_FILE OUT_DIR META
"""
import sys

import torch
import torch.distributed as dist
from torch import nn

from neuralgrok import NeuralAmplifier, NeuralGrok


def main(rank, world_size, init_file, out_dir, meta):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    torch.manual_seed(0)  # identical initial model and amplifier on every rank
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    amplifier = NeuralAmplifier(hidden_sizes=(8, 8))
    ddp = nn.parallel.DistributedDataParallel(model)
    g = torch.Generator().manual_seed(100 + rank)  # each rank sees its own inner and outer data
    x, y = torch.randn(40, 6, generator=g), torch.randint(0, 3, (40,), generator=g)
    x_outer, y_outer = torch.randn(8, 6, generator=g), torch.randint(0, 3, (8,), generator=g)

    def outer_loss():
        return nn.functional.cross_entropy(ddp.module(x_outer), y_outer)

    opt = NeuralGrok(torch.optim.AdamW(ddp.parameters(), lr=1e-2), amplifier, outer_closure=outer_loss,
                     meta_every=1, meta=meta, meta_lr=1e-2)

    def closure():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(ddp(x), y)
        loss.backward()
        return loss

    for _ in range(3):
        opt.step(closure)
    torch.save({"model": model.state_dict(), "amplifier": amplifier.state_dict(),
                "outer_loss": outer_loss().item(), "meta_steps": opt.meta_steps}, f"{out_dir}/rank{rank}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5])
