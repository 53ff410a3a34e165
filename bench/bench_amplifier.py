"""Benchmark: NeuralGrok's amplifier, piecewise fast path vs dense, on the gradients of the
standard model (bench/common.py: 2-layer width-128 decoder transformer, a*b mod 97, batch 512).
Times, as medians over repeats in one run:
  transform       amplifier.amplify(grads) without autograd;
  meta-gradient   d <amplify(grads), cotangents> / d phi, forward included (what the outer step needs);
  AdamW step      one plain training step (forward, backward, AdamW) of the same model, for scale.

    .venv/bin/python bench/bench_amplifier.py [--hidden 512,512] [--repeats 5]
"""
import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, median_seconds, standard_setup  # noqa: E402

from neuralgrok import NeuralAmplifier  # noqa: E402
from neuralgrok.experiments import models


def adamw_step_seconds(repeats):
    model, batch = standard_setup()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.98))

    def step():
        opt.zero_grad()
        models.answer_loss(model, *batch)[0].backward()
        opt.step()

    return median_seconds(step, repeats=repeats), [p.grad.clone() for p in model.parameters()]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", default="512,512", help="amplifier hidden sizes, comma-separated")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    hidden = tuple(int(h) for h in args.hidden.split(","))

    step_seconds, grads = adamw_step_seconds(args.repeats)
    torch.manual_seed(0)
    amplifier = NeuralAmplifier(hidden)
    params = list(amplifier.parameters())
    cotangents = [torch.randn_like(g) for g in grads]
    entries = sum(g.numel() for g in grads)
    linears = [m for m in amplifier.mlp if isinstance(m, torch.nn.Linear)]
    all_entries = torch.cat([g.reshape(-1) for g in grads])
    breakpoints, _, _ = torch.ops.neuralgrok._relu_mlp_pieces(
        [m.weight.detach() for m in linears], [m.bias.detach() for m in linears],
        all_entries.min().item(), all_entries.max().item())

    def transform(method):
        with torch.no_grad():
            return amplifier.amplify(grads, method=method)

    def meta_gradient(method):
        return torch.autograd.grad(amplifier.amplify(grads, method=method), params, cotangents)

    # The two paths agree before anything is timed.
    value_error = max((a - b).abs().max().item() for a, b in zip(transform("piecewise"), transform("dense")))
    fast_meta, dense_meta = meta_gradient("piecewise"), meta_gradient("dense")
    # relative to the whole meta-gradient: some parts (the last bias) are zero in exact arithmetic
    meta_error = (max((a - b).abs().max().item() for a, b in zip(fast_meta, dense_meta))
                  / max(b.abs().max().item() for b in dense_meta))

    print(f"command: {sys.executable} {' '.join(sys.argv)}")
    print(f"{machine()}; amplifier hidden {hidden}; {len(grads)} gradient tensors, {entries} entries; "
          f"{len(breakpoints) + 1} pieces over [{all_entries.min().item():.3g}, {all_entries.max().item():.3g}]")
    print(f"piecewise vs dense: max |value difference| {value_error:.2e}, "
          f"max relative meta-gradient difference {meta_error:.2e}")
    print(f"plain AdamW training step: {step_seconds * 1e3:.1f} ms (median of {args.repeats})")
    print("| amplifier on all gradients | piecewise (ms) | dense (ms) | speed-up | piecewise / AdamW step |")
    print("|---|---|---|---|---|")
    for name, fn in (("transform", transform), ("meta-gradient", meta_gradient)):
        fast = median_seconds(lambda: fn("piecewise"), repeats=args.repeats, warmup=1)
        dense = median_seconds(lambda: fn("dense"), repeats=args.repeats, warmup=1)
        print(f"| {name} | {fast * 1e3:.2f} | {dense * 1e3:.0f} | {dense / fast:.0f}x | {fast / step_seconds:.1%} |")


if __name__ == "__main__":
    main()
