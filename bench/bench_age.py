"""AGE op vs the pure-PyTorch reference on all gradients of the standard model, at one thread and at
all of this machine's threads (the op's value must not depend on the thread count: checked here).

    .venv/bin/python bench/bench_age.py        (or: make bench)
"""
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, median_seconds, standard_gradients  # noqa: E402

from neuralgrok.optim import reference  # noqa: E402


def main():
    grads = standard_gradients()
    numel = sum(g.numel() for g in grads)
    print(f"AGE of {len(grads)} gradient tensors, {numel} entries; {machine()}")
    print("| variant | threads | C++ op (us) | reference (us) | speed-up |")
    print("|---|---|---|---|---|")
    for threads in sorted({1, os.cpu_count() or 1}):
        torch.set_num_threads(threads)
        for per_tensor, normalized in [(False, False), (True, False), (False, True)]:
            value = torch.ops.neuralgrok.age(grads, per_tensor, normalized, 0.0)
            torch.set_num_threads(1)
            single = torch.ops.neuralgrok.age(grads, per_tensor, normalized, 0.0)
            torch.set_num_threads(threads)
            if not torch.equal(value, single):
                raise SystemExit(f"the op's value depends on the thread count: {value} vs {single}")
            op = median_seconds(lambda: torch.ops.neuralgrok.age(grads, per_tensor, normalized, 0.0), repeats=51)
            ref = median_seconds(lambda: reference.age(grads, per_tensor, normalized), repeats=51)
            name = ("per-tensor" if per_tensor else "global") + (", normalized" if normalized else "")
            print(f"| {name} | {threads} | {op * 1e6:.0f} | {ref * 1e6:.0f} | {ref / op:.1f}x |")


if __name__ == "__main__":
    main()
