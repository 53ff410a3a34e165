"""Benchmark: NeuralGrok's amplifier, piecewise fast path vs dense, on a standard model's gradients.

The gradients have the parameter shapes of the standard grokking model (2-layer decoder
transformer, width 128, vocab 101, 4 heads, MLP 512; about 420k entries) and realistic magnitudes
(normal, std 1e-3). Times, as medians over repeats in one run:
  transform       amplifier.amplify(grads) without autograd;
  meta-gradient   d <amplify(grads), cotangents> / d phi, forward included (what the outer step needs).

    .venv/bin/python bench/bench_amplifier.py [--hidden 512,512] [--repeats 5]
"""
import argparse
import statistics
import sys
import time

import torch

from neuralgrok import NeuralAmplifier

VOCAB, WIDTH, CONTEXT, MLP_WIDTH, LAYERS = 101, 128, 5, 512, 2


def standard_model_shapes():
    shapes = [(VOCAB, WIDTH), (CONTEXT, WIDTH)]
    for _ in range(LAYERS):
        shapes += [(3 * WIDTH, WIDTH), (3 * WIDTH,), (WIDTH, WIDTH), (WIDTH,)]  # attention in/out projections
        shapes += [(WIDTH,)] * 4  # two LayerNorms
        shapes += [(MLP_WIDTH, WIDTH), (MLP_WIDTH,), (WIDTH, MLP_WIDTH), (WIDTH,)]
    return shapes + [(WIDTH,), (WIDTH,), (VOCAB, WIDTH)]  # final LayerNorm, head


def median_seconds(fn, repeats):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", default="512,512", help="amplifier hidden sizes, comma-separated")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--grad-std", type=float, default=1e-3)
    args = parser.parse_args()
    hidden = tuple(int(h) for h in args.hidden.split(","))

    torch.manual_seed(0)
    amplifier = NeuralAmplifier(hidden)
    params = list(amplifier.parameters())
    grads = [torch.randn(shape) * args.grad_std for shape in standard_model_shapes()]
    cotangents = [torch.randn(shape) for shape in standard_model_shapes()]
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
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; amplifier hidden {hidden}; "
          f"{len(grads)} tensors, {entries} entries, grad std {args.grad_std}; "
          f"{len(breakpoints) + 1} pieces over [{all_entries.min().item():.3g}, {all_entries.max().item():.3g}]")
    print(f"piecewise vs dense: max |value difference| {value_error:.2e}, "
          f"max relative meta-gradient difference {meta_error:.2e}")
    print(f"{'':16}{'piecewise':>12}{'dense':>12}{'speed-up':>10}   (median of {args.repeats})")
    for name, fn in (("transform", transform), ("meta-gradient", meta_gradient)):
        fast = median_seconds(lambda: fn("piecewise"), args.repeats)
        dense = median_seconds(lambda: fn("dense"), args.repeats)
        print(f"{name:16}{fast * 1e3:10.2f}ms{dense * 1e3:10.1f}ms{dense / fast:9.0f}x")


if __name__ == "__main__":
    main()
