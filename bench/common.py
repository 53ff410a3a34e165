"""Shared benchmark helpers: timing by median of repeats, the standard model's gradients, the
runner's parts of one run (:class:`RunnerParts`), and the command line of the scripts that read one run's
weights (:func:`run_weights_arguments`).

The standard model is the NeuralGrok paper's: decoder transformer, 2 layers, width 128, 4 heads,
p = 97, batch 512.
"""
import argparse
import platform
import statistics
import time
from pathlib import Path
from typing import Tuple

import torch

from neuralgrok.experiments import models, tasks
from neuralgrok.experiments.data import build_data, eval_chunk
from neuralgrok.experiments.logged_measures import MeasureInput, compute_measures, needs_all_pairs
from neuralgrok.experiments.loop import Evaluator, TrainingBatches, depends_on_mode, seed_everything
from neuralgrok.experiments.methods import build_base_optimizer
from neuralgrok.measures import weight_norm
from neuralgrok.measures.age import age


def run_weights_arguments(doc: str) -> Tuple[argparse.ArgumentParser, argparse.Namespace]:
    """The parser and parsed arguments of a script that reads one run's weights (its first docstring
    paragraph describes it): ``RUN_DIR [--checkpoint FILE]``, the file None unless given (the newest:
    :func:`neuralgrok.experiments.loop.trained_model`)."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--checkpoint", default=None,
                        help="weights file in RUN_DIR (default: model.pt where the run finished, else checkpoint.pt)")
    return parser, parser.parse_args()


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


class RunnerParts:
    """One run of ``config`` as ``neuralgrok.experiments.loop`` builds it (data, model, the base optimizer that the
    baseline method steps, training batches, the evaluator), and the loop's two kinds of work as calls:
    :meth:`step`, a training step between logged rows, and :meth:`row`, a logged row's extra work."""

    def __init__(self, config, chunk=None):
        """``chunk``: examples per evaluation forward (default: the task's, as the runner evaluates)."""
        seed_everything(config.seed)
        self.config, self.measures = config, config.measure_names()
        self.data = build_data(config, with_outer=False)
        self.model = models.build_model(config, self.data.layout, self.data.sequence_length)
        self.optimizer = build_base_optimizer(config, [p for p in self.model.parameters() if p.requires_grad])
        self.batches = TrainingBatches(self.data.train.inputs, self.data.train.labels, config.batch_size, config.seed)
        all_pairs = needs_all_pairs(self.measures)
        train_from_step = self.batches.whole and not all_pairs and not depends_on_mode(self.model)
        self.evaluator = Evaluator(self.data, config.loss, train_from_step, all_pairs, chunk or eval_chunk(config))

    def step(self):
        """The closure (zero the gradients, forward and backward over the batch), then the optimizer's step."""
        inputs, labels = next(self.batches)

        def closure():
            self.optimizer.zero_grad(set_to_none=True)
            loss = models.answer_loss(self.model, inputs, labels, self.config.loss)[0]
            loss.backward()
            return loss

        self.optimizer.step(closure)

    def row(self):
        """The evaluation (loss and accuracy of the evaluated splits), the weight norm, the config's measures and
        the gradient's AGE (of the last step's gradients); the train metrics of a full batch, from the step's own
        forward, are not counted."""
        _, logits = self.evaluator(self.model)
        weight_norm(self.model)
        compute_measures(self.measures, MeasureInput(self.model, self.config, self.data, self.evaluator.inputs, logits))
        float(age(self.model))
