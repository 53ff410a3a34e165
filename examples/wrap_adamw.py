"""Wrap an existing AdamW training loop with NeuralGrok: the three lines marked ``# NeuralGrok``.

The same loop runs twice on a+b mod 47 (the demo's task and model), once as it was and once
wrapped, and prints the steps each needed to reach 95% test accuracy:

    .venv/bin/python examples/wrap_adamw.py [--steps 4000] [--seed 0]
"""
import argparse

import torch

from neuralgrok import NeuralGrok, models, tasks


def train(wrap, steps, seed):
    torch.manual_seed(seed)
    data = tasks.modular_task("a+b", 47, train_fraction=0.5, seed=seed)
    x, y = data.train_inputs, data.train_labels
    model = models.Transformer(data.vocab_size, data.num_classes, data.sequence_length, width=64, depth=1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.98), weight_decay=1.0)
    if wrap:
        (x_outer, y_outer), (x, y) = (x[:22], y[:22]), (x[22:], y[22:])  # NeuralGrok: 1% of all pairs held out
        opt = NeuralGrok(opt, outer_closure=lambda: models.answer_loss(model, x_outer, y_outer)[0])  # NeuralGrok
    batches = torch.Generator().manual_seed(seed)
    for step in range(1, steps + 1):
        batch = torch.randint(len(y), (512,), generator=batches)

        def closure():
            opt.zero_grad()
            loss = models.answer_loss(model, x[batch], y[batch])[0]
            loss.backward()
            return loss

        opt.step(closure)  # NeuralGrok: step with a closure (it recomputes the gradient for its meta step)
        if step % 50 == 0:
            test_accuracy = models.evaluate(model, data.test_inputs, data.test_labels)[1]
            if test_accuracy >= 0.95:
                return step
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    for name, wrap in (("AdamW", False), ("NeuralGrok(AdamW)", True)):
        reached = train(wrap, args.steps, args.seed)
        print(f"{name:>18}: 95% test accuracy " + (f"at step {reached}" if reached else f"not reached in {args.steps} steps"))


if __name__ == "__main__":
    main()
