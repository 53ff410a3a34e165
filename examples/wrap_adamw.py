"""Wrap an existing training loop with NeuralGrok: the three lines marked ``# NeuralGrok``.

The same loop (a+b mod 47, the demo's 1-layer width-64 transformer, batches of 512) runs as it was
and wrapped, and prints the step at which each first reached 95% test accuracy (checked every 50
steps). Two ablations say where a difference comes from: the loop with its gradients clipped to
global norm 1.0 (NeuralGrok's default clipping, without the amplifier), and NeuralGrok with its
amplifier frozen at initialisation (its transform is then close to per-tensor normalisation).

    .venv/bin/python examples/wrap_adamw.py                                   # AdamW, lr 1e-3, wd 1.0
    .venv/bin/python examples/wrap_adamw.py --optimizer sgd --lr 0.3 --weight-decay 1e-3 --steps 3000
"""
import argparse

import torch

from neuralgrok import NeuralAmplifier, NeuralGrok
from neuralgrok.experiments import models, tasks

VARIANTS = ("as is", "clipped to norm 1", "NeuralGrok", "NeuralGrok, frozen amplifier")


def base_optimizer(name, params, lr, weight_decay):
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.98), weight_decay=weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)


def train(variant, args, seed):
    torch.manual_seed(seed)
    inner, outer, test = tasks.inner_outer_test_split("a+b", 47, seed)  # 49% / 1% / 50% of all pairs
    model = models.Transformer(47 + 4, 47, inner.inputs.shape[1], width=64, depth=1)
    opt = base_optimizer(args.optimizer, model.parameters(), args.lr, args.weight_decay)
    if variant.startswith("NeuralGrok"):
        opt = NeuralGrok(opt, NeuralAmplifier((32,)), train_amplifier=variant == "NeuralGrok",  # NeuralGrok
                         outer_closure=lambda: models.answer_loss(model, outer.inputs, outer.labels)[0])  # NeuralGrok
    batches = torch.Generator().manual_seed(seed)
    for step in range(1, args.steps + 1):
        batch = torch.randint(len(inner), (512,), generator=batches)

        def closure():
            opt.zero_grad()
            loss = models.answer_loss(model, inner.inputs[batch], inner.labels[batch])[0]
            loss.backward()
            if variant == "clipped to norm 1":
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            return loss

        opt.step(closure)  # NeuralGrok: step with a closure (it recomputes the gradient for its meta step)
        if step % 50 == 0 and models.evaluate(model, test.inputs, test.labels)[1] >= 0.95:
            return step
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--optimizer", choices=("adamw", "sgd"), default="adamw",
                        help="the loop's optimizer (SGD with momentum 0.9)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=1.0)
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"{args.optimizer}, lr {args.lr}, weight decay {args.weight_decay}: step of 95% test accuracy "
          f"('-' = not within {args.steps} steps), seeds {args.seeds}")
    for variant in args.variants:
        reached = [train(variant, args, seed) for seed in args.seeds]
        print(f"{variant:>30}: " + "  ".join(f"{r:,}" if r else "-" for r in reached), flush=True)


if __name__ == "__main__":
    main()
