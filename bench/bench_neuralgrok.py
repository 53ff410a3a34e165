"""Cost of one training step per method on the standard model (decoder transformer, 2 layers,
width 128, 4 heads, a*b mod 97, batch 512), against plain AdamW measured in the same run.

NeuralGrok steps are averaged over blocks of T = meta_every steps (one meta step per block); the
outer split is 1% of all pairs as in the paper's code. Times are medians over repeats taken
round-robin in one process (each method on its own copy of the same model), so slow drifts of the
machine hit every method alike. Peak memory is the growth of the maximum RSS over what it was after
building the model and data, each method in a process of its own.

    .venv/bin/python bench/bench_neuralgrok.py [--repeats 15] [--meta-every 4] [--hidden 512 512]
"""
import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, standard_setup  # noqa: E402

import neuralgrok  # noqa: E402
from neuralgrok.experiments import models  # noqa: E402

METHODS = ("adamw", "grokfast-ema", "neuralgrok-paper", "neuralgrok-fast")


def build(method, model, batch, outer, meta_every, hidden):
    base = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.98))
    if method == "adamw":
        opt = base
    elif method == "grokfast-ema":
        opt = neuralgrok.Grokfast(base, mode="ema")
    else:
        opt = neuralgrok.NeuralGrok(base, neuralgrok.NeuralAmplifier(hidden_sizes=hidden), meta_every=meta_every,
                                    meta=method.split("-")[1],
                                    outer_closure=lambda: models.answer_loss(model, *outer)[0])

    def closure():
        opt.zero_grad()
        loss = models.answer_loss(model, *batch)[0]
        loss.backward()
        return loss

    return opt, closure


def setup(method, meta_every, hidden):
    """A fresh standard model with ``method``'s optimizer; returns the function doing one block
    of steps (T for NeuralGrok, 1 otherwise) and the block's length."""
    model, batch = standard_setup()
    outer_size = round(0.01 * 97 * 96)
    outer = (batch[0][:outer_size], batch[1][:outer_size])
    opt, closure = build(method, model, batch, outer, meta_every, hidden)
    block = meta_every if method.startswith("neuralgrok") else 1

    def steps():
        for _ in range(block):
            opt.step(closure)

    return steps, block


def seconds_per_step(repeats, meta_every, hidden):
    """Median seconds per step of every method, timed round-robin in this process."""
    runs = {method: setup(method, meta_every, hidden) for method in METHODS}
    times = {method: [] for method in METHODS}
    for steps, _ in runs.values():
        steps()  # warm-up
    for _ in range(repeats):
        for method, (steps, block) in runs.items():
            start = time.perf_counter()
            steps()
            times[method].append((time.perf_counter() - start) / block)
    return {method: statistics.median(values) for method, values in times.items()}


def peak_rss_growth_mib(method, meta_every, hidden):
    """Growth of this process's peak RSS over a few steps of ``method`` (run it in a fresh process)."""
    steps, _ = setup(method, meta_every, hidden)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(3):
        steps()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--meta-every", type=int, default=4)
    parser.add_argument("--hidden", type=int, nargs="+", default=[512, 512])
    parser.add_argument("--one", choices=METHODS, help=argparse.SUPPRESS)  # child process mode
    args = parser.parse_args()
    hidden = tuple(args.hidden)
    if args.one:
        print(json.dumps(peak_rss_growth_mib(args.one, args.meta_every, hidden)))
        return
    memory = {}
    for method in METHODS:
        out = subprocess.run([sys.executable, __file__, "--one", method, "--meta-every", str(args.meta_every),
                              "--hidden", *map(str, hidden)], check=True, capture_output=True, text=True).stdout
        memory[method] = json.loads(out.strip().splitlines()[-1])
    seconds = seconds_per_step(args.repeats, args.meta_every, hidden)
    print(f"Step cost on the standard model; {machine()}; amplifier hidden {hidden}, T = {args.meta_every}, "
          f"median of {args.repeats} round-robin repeats")
    print("| method | ms / step | vs AdamW | peak RSS growth (MiB) | vs AdamW |")
    print("|---|---|---|---|---|")
    for method in METHODS:
        print(f"| {method} | {seconds[method] * 1e3:.1f} | {seconds[method] / seconds['adamw']:.2f}x | "
              f"{memory[method]:.0f} | {memory[method] / max(memory['adamw'], 1e-9):.2f}x |")

if __name__ == "__main__":
    main()
