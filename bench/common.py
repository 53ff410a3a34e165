"""Shared benchmark helpers: timing by median of repeats, and the standard model's gradients.

The standard model is the NeuralGrok paper's: decoder transformer, 2 layers, width 128, 4 heads,
p = 97, batch 512.
"""
import platform
import statistics
import time

import torch

from neuralgrok.experiments import models, tasks


def median_seconds(fn, repeats=15, warmup=3):
    """Median wall time of ``fn()`` over ``repeats`` calls, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def standard_setup(p=97, width=128, depth=2, heads=4, batch_size=512, seed=0):
    """The standard model and one training batch of a*b mod p."""
    torch.manual_seed(seed)
    data = tasks.modular_task("a*b", p, train_fraction=0.5, seed=seed)
    model = models.Transformer(data.vocab_size, data.num_classes, data.sequence_length, width=width,
                               depth=depth, heads=heads)
    batch = (data.train_inputs[:batch_size], data.train_labels[:batch_size])
    return model, batch


def standard_gradients(**kwargs):
    model, (inputs, labels) = standard_setup(**kwargs)
    models.answer_loss(model, inputs, labels)[0].backward()
    return [p.grad for p in model.parameters()]


def machine():
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}"
