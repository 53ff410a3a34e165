"""Cost of one training step per method on the standard model (decoder transformer, 2 layers,
width 128, 4 heads, a*b mod 97, batch 512), against plain AdamW measured in the same run.

NeuralGrok steps are averaged over blocks of T = meta_every steps (one meta step per block); the
outer split is 1% of all pairs as in the paper's code. Peak memory is the growth of the process's
maximum RSS over what it was after building the model and data, each method in its own process.

    .venv/bin/python bench/bench_neuralgrok.py [--repeats 7] [--meta-every 4] [--hidden 512 512]
"""
import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, median_seconds, standard_setup  # noqa: E402

import neuralgrok  # noqa: E402
from neuralgrok import models  # noqa: E402

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


def measure(method, repeats, meta_every, hidden):
    """Seconds per step and peak-RSS growth (MiB) of ``method``, in this process."""
    model, batch = standard_setup()
    outer_size = round(0.01 * 97 * 96)
    outer = (batch[0][:outer_size], batch[1][:outer_size])
    opt, closure = build(method, model, batch, outer, meta_every, hidden)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    block = meta_every if method.startswith("neuralgrok") else 1

    def steps():
        for _ in range(block):
            opt.step(closure)

    seconds = median_seconds(steps, repeats=repeats, warmup=2) / block
    peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    return {"method": method, "seconds_per_step": seconds, "peak_rss_growth_mib": peak}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--meta-every", type=int, default=4)
    parser.add_argument("--hidden", type=int, nargs="+", default=[512, 512])
    parser.add_argument("--one", choices=METHODS, help=argparse.SUPPRESS)  # child process mode
    args = parser.parse_args()
    hidden = tuple(args.hidden)
    if args.one:
        print(json.dumps(measure(args.one, args.repeats, args.meta_every, hidden)))
        return
    rows = []
    for method in METHODS:
        out = subprocess.run([sys.executable, __file__, "--one", method, "--repeats", str(args.repeats),
                              "--meta-every", str(args.meta_every), "--hidden", *map(str, hidden)],
                             check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    base = rows[0]
    print(f"Step cost on the standard model; {machine()}; amplifier hidden {hidden}, T = {args.meta_every}, "
          f"median of {args.repeats}")
    print("| method | ms / step | vs AdamW | peak RSS growth (MiB) | vs AdamW |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['method']} | {row['seconds_per_step'] * 1e3:.1f} | "
              f"{row['seconds_per_step'] / base['seconds_per_step']:.2f}x | {row['peak_rss_growth_mib']:.0f} | "
              f"{row['peak_rss_growth_mib'] / max(base['peak_rss_growth_mib'], 1e-9):.2f}x |")


if __name__ == "__main__":
    main()
