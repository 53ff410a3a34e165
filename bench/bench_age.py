"""AGE op vs the pure-PyTorch reference on all gradients of the standard model.

    .venv/bin/python bench/bench_age.py        (or: make bench)
"""
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
    print("| variant | C++ op (us) | reference (us) | speed-up |")
    print("|---|---|---|---|")
    for per_tensor, normalized in [(False, False), (True, False), (False, True)]:
        op = median_seconds(lambda: torch.ops.neuralgrok.age(grads, per_tensor, normalized, 1e-8), repeats=51)
        ref = median_seconds(lambda: reference.age(grads, per_tensor, normalized), repeats=51)
        name = ("per-tensor" if per_tensor else "global") + (", normalized" if normalized else "")
        print(f"| {name} | {op * 1e6:.0f} | {ref * 1e6:.0f} | {ref / op:.1f}x |")


if __name__ == "__main__":
    main()
