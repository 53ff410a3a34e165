"""Cost of the progress measures relative to one training step of the standard model.

    .venv/bin/python bench/bench_measures.py        (or: make bench)

One step = forward, backward and AdamW update on a batch of 512 (2-layer width-128 transformer,
p = 97). Targets: MED and weight norm under 1% of a step, the Fourier measures under 1 step.
"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, median_seconds, standard_setup  # noqa: E402

from neuralgrok import measures  # noqa: E402
from neuralgrok.experiments import models, tasks

P = 97


def main():
    model, (inputs, labels) = standard_setup(p=P)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1.0)

    def train_step():
        optimizer.zero_grad()
        models.answer_loss(model, inputs, labels)[0].backward()
        optimizer.step()

    embedding = model.token_embedding.weight
    split = tasks.modular_task("a+b", P, train_fraction=0.5, seed=0)
    train_pairs = split.train_inputs[:, :2]
    evaluated = torch.cat([split.train_inputs, split.test_inputs])
    with torch.no_grad():
        evaluated_logits = model(evaluated)  # what evaluating both splits yields anyway
    table = measures.assemble_logit_table(evaluated[:, :2], evaluated_logits, P)
    all_pairs = tasks.all_examples("a+b", P)[0]
    keys = measures.key_frequencies(measures.fourier_norms(embedding, P), top_k=5)

    def embedding_fourier():
        measures.key_frequencies(measures.fourier_norms(embedding, P))
        measures.fourier_gini(embedding, P)

    def fourier_losses():
        measures.restricted_loss(table, keys)
        measures.excluded_loss(table, keys, train_pairs)

    def fourier_from_evaluation():  # a logging hook that reuses the evaluation logits
        logits = measures.assemble_logit_table(evaluated[:, :2], evaluated_logits, P)
        found = measures.key_frequencies(measures.fourier_norms(embedding, P), top_k=5)
        measures.fourier_gini(embedding, P)
        measures.restricted_loss(logits, found)
        measures.excluded_loss(logits, found, train_pairs)

    step = median_seconds(train_step, repeats=21)
    cases = [
        ("MED (embedding rows)", lambda: measures.med(embedding, P), 0.01, 21),
        ("weight norm (total)", lambda: measures.weight_norm(model), 0.01, 21),
        ("weight norm per module", lambda: measures.squared_weight_norm_per_module(model), 0.01, 21),
        ("gradient AGE per layer", lambda: measures.gradient_age(model, per_layer=True), None, 21),
        ("Fourier norms + keys + Gini of W_E", embedding_fourier, 1.0, 21),
        ("restricted + excluded loss (given logit table)", fourier_losses, 1.0, 21),
        ("all Fourier measures from evaluation logits", fourier_from_evaluation, 1.0, 21),
        ("extra forward on all p^2 pairs (logit_table)", lambda: measures.logit_table(model, all_pairs, P), None, 5),
    ]
    print(f"python bench/bench_measures.py; {machine()}")
    print(f"training step (batch {len(labels)}, p = {P}): {step * 1e3:.2f} ms (median of 21)\n")
    print("| measure | time (ms) | / step | target |")
    print("|---|---|---|---|")
    for name, fn, target, repeats in cases:
        seconds = median_seconds(fn, repeats=repeats, warmup=1)
        ratio = seconds / step
        verdict = "" if target is None else f"< {target:g} {'ok' if ratio < target else 'MISSED'}"
        print(f"| {name} | {seconds * 1e3:.3f} | {ratio:.4f} | {verdict} |")


if __name__ == "__main__":
    main()
