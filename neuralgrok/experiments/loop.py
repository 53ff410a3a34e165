"""One training run: a plain loop over a :class:`~neuralgrok.experiments.config.TrainConfig` (nanoGPT style).

Example (the same as ``neuralgrok run --task a+b --p 47 --method grokfast-ema --out runs/x``)::

    from neuralgrok.experiments import TrainConfig, train
    result = train(TrainConfig(task="a+b", p=47, method="grokfast-ema"), out_dir="runs/x")
    result.summary["steps_to_test_95"]

The loop follows the config one way: its task's record builds the data
(:func:`neuralgrok.experiments.data.build_data`), its model's record the model, its method's record the
optimizer the loop steps (:mod:`neuralgrok.experiments.methods`: a method is added there, never here),
and :mod:`neuralgrok.experiments.records` writes what the run leaves.
"""
import contextlib
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

import numpy as np
import torch
from tqdm.auto import tqdm

from ..measures.age import age
from ..measures.weights import weight_norm
from ..optim.base import NonFiniteGradientError
from ..storage.checkpoints import CheckpointError, read_checkpoint
from ..storage.files import atomic_write, atomic_write_text, locked_directory, remove_temporaries, strict_json, to_toml
from ..version import build_info
from .config import TrainConfig, validate_config
from .data import EVAL_CHUNK, RunData, build_data, eval_chunk
from .logged_measures import MeasureInput, compute_measures, needs_all_pairs
from .methods import METHODS, build_base_optimizer, uses_outer_split
from .models import accuracy, answer_loss, build_model, example_losses
from .records import (CHECKPOINT, EARLY_STOP, METRIC_COLUMNS, MODEL, PLATEAU, Divergence, checkpoint_choices,
                      checkpoint_to_resume, claim_run_directory, load_checkpoint, metrics_csv, part_columns,
                      peak_rss_mib, run_config, save_checkpoint, save_model, save_snapshot, stored_config, summarize)


@dataclass
class RunResult:
    config: TrainConfig
    history: List[Dict[str, float]]  # one row per evaluation, keys METRIC_COLUMNS
    summary: Dict[str, Optional[float]]
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    out_dir: Optional[Path] = None


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global RNGs with ``seed``."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class TrainingBatches:
    """Endless (inputs, labels) batches: the whole set each time for batch_size 0 (or at least its
    size), otherwise reshuffled epochs drawn from a generator of their own.

    ``state_dict()`` holds the generator as it was before the current epoch's shuffle and the
    position in that epoch, so a loaded copy redraws the same order and goes on where this is.
    """

    def __init__(self, inputs: torch.Tensor, labels: torch.Tensor, batch_size: int, seed: int):
        self.inputs, self.labels, self.batch_size = inputs, labels, batch_size
        self.whole = batch_size == 0 or batch_size >= len(labels)
        self.generator = torch.Generator().manual_seed(seed)
        self._start_epoch()

    def _start_epoch(self):
        self.epoch_generator_state = self.generator.get_state()
        self.order = None if self.whole else torch.randperm(len(self.labels), generator=self.generator)
        self.position = 0

    @property
    def steps_per_epoch(self) -> int:
        """Batches in one pass over the set (the last, partial one included); 1 for the whole set."""
        return 1 if self.whole else math.ceil(len(self.labels) / self.batch_size)

    def __iter__(self):
        return self

    def __next__(self) -> Tuple[torch.Tensor, torch.Tensor]:
        if self.whole:
            return self.inputs, self.labels
        if self.position >= len(self.labels):
            self._start_epoch()
        chosen = self.order[self.position:self.position + self.batch_size].to(self.inputs.device)
        self.position += self.batch_size
        return self.inputs[chosen], self.labels[chosen]

    def state_dict(self) -> Dict[str, Any]:
        return {"generator": self.epoch_generator_state, "position": self.position}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self._start_epoch()
        self.position = state["position"]


def held_accuracy(config: TrainConfig, history: List[Dict[str, float]]) -> bool:
    """Whether the early stop is due after ``history``: its last ``early_stop_evals`` rows all have a
    test accuracy of at least ``early_stop_accuracy`` (never when that is 0)."""
    window = history[-config.early_stop_evals:]
    return (config.early_stop_accuracy > 0 and len(window) == config.early_stop_evals
            and all(row["test_accuracy"] >= config.early_stop_accuracy for row in window))


def plateaued(config: TrainConfig, history: List[Dict[str, float]]) -> bool:
    """Whether the plateau stop is due after ``history``: of its last ``plateau_stop_evals`` rows, all but at
    most ``plateau_stop_outliers`` have a train accuracy of 1 and test accuracies within
    ``plateau_stop_tolerance`` of each other (max - min), as a hold-out whose test accuracy is capped ends
    (never when ``plateau_stop_evals`` is 0). The outliers let a run whose loss spikes now and then (a train
    accuracy that drops for an evaluation, then returns) stop once its test accuracy has settled."""
    count = config.plateau_stop_evals
    window = history[-count:] if count else []
    if len(window) < count or not window:
        return False
    test = sorted(row["test_accuracy"] for row in window if row["train_accuracy"] == 1.0)
    needed = count - config.plateau_stop_outliers
    if len(test) < needed:
        return False
    # The narrowest band holding ``needed`` of the sorted accuracies: consecutive ones.
    return min(test[i + needed - 1] - test[i] for i in range(len(test) - needed + 1)) <= config.plateau_stop_tolerance


def stop_due(config: TrainConfig, history: List[Dict[str, float]]) -> Optional[str]:
    """Why the run ends after ``history`` before its step budget, as summary.json's ``stop_reason``:
    ``"early_stop"`` (:func:`held_accuracy`), ``"plateau"`` (:func:`plateaued`), or None: it goes on."""
    if held_accuracy(config, history):
        return EARLY_STOP
    return PLATEAU if plateaued(config, history) else None


@contextlib.contextmanager
def cpu_threads(count: int) -> Iterator[None]:
    """Run the block with ``count`` torch CPU threads (0 = as they are), then restore the count."""
    before = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class Evaluator:
    """Loss and accuracy of the logged splits by one no-grad pass over all of them: ``train``
    (unless ``train_from_step``: a full-batch step's own forward gives it), ``test`` and its named
    parts (columns ``test_<part>_loss`` / ``_accuracy``), and with ``all_pairs`` the outer split too
    (no columns), so that the logits cover every example of the task (``inputs``, concatenated only
    then). The forward runs in eval mode (batch norm's running statistics, no dropout), in chunks of
    ``chunk`` examples: one forward over 9,409 examples of the 2 x 128 transformer took 2-4x as long
    as chunks of 2,048 (the activations no longer fit the caches); images need smaller chunks
    (:func:`neuralgrok.experiments.data.eval_chunk`)."""

    def __init__(self, data: RunData, loss: str, train_from_step: bool, all_pairs: bool, chunk: int = EVAL_CHUNK):
        splits = ([] if train_from_step else [("train", data.train)]) + [("test", data.test)]
        if all_pairs and data.outer is not None:
            splits.append(("outer", data.outer))
        self.split_inputs = [split.inputs for _, split in splits]  # not concatenated: 720 MB of 64 px images
        self.inputs = torch.cat(self.split_inputs) if all_pairs else None
        self.labels = torch.cat([split.labels for _, split in splits])
        self.loss, self.chunk = loss, chunk
        self.spans, start = {}, 0  # column prefix -> rows
        for name, split in splits:
            if name == "test":
                part_start = start
                for part_name, part in data.test_parts.items():
                    self.spans[f"test_{part_name}"] = slice(part_start, part_start + len(part))
                    part_start += len(part)
            if name != "outer":
                self.spans[name] = slice(start, start + len(split))
            start += len(split)

    @torch.no_grad()
    def __call__(self, model: torch.nn.Module) -> Tuple[Dict[str, float], torch.Tensor]:
        """``({prefix_loss, prefix_accuracy: float}, logits)``; NaN for an empty part."""
        was_training = model.training
        model.eval()
        try:
            logits = torch.cat([model(chunk) for inputs in self.split_inputs for chunk in inputs.split(self.chunk)])
        finally:
            model.train(was_training)
        losses = example_losses(logits, self.labels, self.loss)
        correct = (logits.argmax(dim=-1) == self.labels).to(losses.dtype)
        values = torch.stack([torch.stack([losses[rows].mean(), correct[rows].mean()])
                              for rows in self.spans.values()]).tolist()  # one host transfer
        metrics = {}
        for prefix, (loss, accuracy_) in zip(self.spans, values):
            metrics[f"{prefix}_loss"], metrics[f"{prefix}_accuracy"] = loss, accuracy_
        return metrics, logits


def _optimise(config, progress, out_dir=None, resume=False):
    """The training loop; returns ``(model, optimizer, history, wall time in seconds, divergence, stop
    reason)`` (divergence: a :class:`Divergence`, or None; stop reason: :func:`stop_due`'s, or None)."""
    seed_everything(config.seed)
    device = torch.device(config.device)
    with_outer = uses_outer_split(config)
    data = build_data(config, with_outer, progress=progress).to(device)
    model = build_model(config, data.layout, data.sequence_length).to(device)
    base_optimizer = build_base_optimizer(config, [p for p in model.parameters() if p.requires_grad])
    optimizer = METHODS[config.method].build(base_optimizer, model, config, data.outer if with_outer else None)
    # `done` updates made before this one: the official code's factor is min(done / w, 1) (its first
    # update at lr 0), the runner's default min((done + 1) / w, 1).
    ahead = 0 if config.warmup_from_zero else 1
    warmup = torch.optim.lr_scheduler.LambdaLR(
        base_optimizer, lambda done: min((done + ahead) / config.warmup_steps, 1.0) if config.warmup_steps else 1.0)
    batches = TrainingBatches(data.train.inputs, data.train.labels, config.batch_size, config.seed)
    eval_period = config.eval_every or batches.steps_per_epoch
    records_age = hasattr(optimizer, "record_age")  # a GradientTransformOptimizer: AGE after its transform
    snapshots = out_dir is not None and config.snapshot_every > 0 and hasattr(optimizer, "snapshot_state")
    measure_names = config.measure_names()
    # A full-batch step's forward is over the whole training set at the logged weights: its loss
    # and accuracy are the train metrics (where training mode computes what eval mode would), so
    # evaluation only runs the other splits.
    train_from_step = batches.whole and not needs_all_pairs(measure_names) and not depends_on_mode(model)
    evaluator = Evaluator(data, config.loss, train_from_step, needs_all_pairs(measure_names), eval_chunk(config))
    columns = list(METRIC_COLUMNS) + part_columns(data.test_parts) + measure_names

    parts = {"model": model, "optimizer": optimizer, "warmup": warmup, "batches": batches}
    checkpoint = out_dir / CHECKPOINT if out_dir is not None and config.checkpoint_every else None
    first_step, history, wall_time_s, diverged, stop_reason = 0, [], 0.0, None, None
    start_from = checkpoint_to_resume(out_dir) if resume and checkpoint is not None else None
    if start_from is not None:
        try:
            first_step, history, wall_time_s = load_checkpoint(start_from, config, parts)
        except CheckpointError as error:
            raise checkpoint_choices(error, out_dir) from None
    start = time.perf_counter() - wall_time_s  # wall time counts the interrupted part too
    bar = tqdm(total=config.steps, initial=first_step, disable=not progress, desc=config.method, dynamic_ncols=True)
    try:
        # Iteration `step` logs the weights after `step` updates (the AGE of the raw gradient
        # there is taken in the closure's first call, before any method transforms it, and that of
        # the gradient the base optimizer steps on after the transform). On a logged step the loop
        # makes that first call itself, so that the stop rules see the row's train metrics, and the
        # optimizer's own first call returns its loss (the gradients are those already in .grad).
        # The last iteration (the budget's, or the one where a stop is due) only measures, so the
        # final weights get a logged row too.
        for step in range(first_step, config.steps + 1):
            inputs, labels = next(batches)
            log_now = step % eval_period == 0 or step == config.steps
            at_logged_weights = {}  # filled by the closure's first call

            def closure():
                optimizer.zero_grad(set_to_none=True)
                loss, logits = answer_loss(model, inputs, labels, config.loss)
                loss.backward()
                if log_now and not at_logged_weights:
                    at_logged_weights["grad_age"] = float(age(model))
                    if train_from_step:
                        at_logged_weights.update(train_loss=loss.item(), train_accuracy=accuracy(logits, labels))
                return loss

            last = step == config.steps
            computed = []  # a logged step's loss, its gradients in .grad: the optimizer's first closure call
            if log_now:
                evaluated, logits = evaluator(model)
                norm = weight_norm(model)  # the L2 norm, not its square
                logged_measures = compute_measures(measure_names, MeasureInput(model, config, data, evaluator.inputs,
                                                                               logits))
                computed.append(closure())  # the row's gradient AGE (and a full batch's train metrics) first
                stop_reason = stop_due(config, history + [{**at_logged_weights, **evaluated}])
                last = last or stop_reason is not None
            if snapshots and (step % config.snapshot_every == 0 or last):
                state = optimizer.snapshot_state()
                if state is not None:
                    save_snapshot(out_dir, step, state)
            if not last:
                if records_age:
                    optimizer.record_age, optimizer.recorded_age = log_now, None
                try:
                    optimizer.step(lambda: computed.pop() if computed else closure())
                except NonFiniteGradientError as error:  # raised before anything was updated
                    diverged = Divergence(step, str(error).split(";")[0])
                    last = True
                else:
                    warmup.step()
                    bar.update()
            if log_now:
                # A plain optimizer steps on the raw gradient; a transform's last row has no step.
                stepped_age = at_logged_weights["grad_age"] if not records_age else \
                    None if last else optimizer.recorded_age
                row = {"step": step, **at_logged_weights, **evaluated, "weight_norm": norm,
                       "step_grad_age": math.nan if stepped_age is None else stepped_age,
                       "wall_time_s": time.perf_counter() - start, **logged_measures}
                history.append({column: row[column] for column in columns})
                bar.set_postfix(train_acc=f"{row['train_accuracy']:.3f}", test_acc=f"{row['test_accuracy']:.3f}",
                                train_loss=f"{row['train_loss']:.2e}", test_loss=f"{row['test_loss']:.2e}",
                                refresh=False)
                unfinite = [name for name in ("train_loss", "test_loss") if not math.isfinite(row[name])]
                if unfinite and diverged is None:
                    diverged = Divergence(step, f"{' and '.join(unfinite)} not finite (NaN or infinite) at step {step}")
                    last = True
            if last:
                break
            done = step + 1  # updates made so far
            if checkpoint is not None and done % config.checkpoint_every == 0 and done < config.steps:
                save_checkpoint(checkpoint, config, done, parts, history, time.perf_counter() - start)
                atomic_write_text(out_dir / "metrics.csv", metrics_csv(history))  # to watch long runs
    finally:
        bar.close()
    return model, optimizer, history, time.perf_counter() - start, diverged, stop_reason


def train(config: TrainConfig, out_dir: Optional[Union[str, Path]] = None, progress: bool = True, resume: bool = False,
          overwrite: bool = False) -> "RunResult":
    """Train one model as ``config`` says; log every ``eval_every`` steps and at the end.

    Each logged row describes the weights after ``step`` updates: train/test loss and accuracy
    (whole splits), the AGE of the raw (untransformed) gradient of the training batch there,
    the weight norm (:func:`neuralgrok.measures.weight_norm`), the wall time so far, a hold-out's
    test parts (:func:`part_columns`) and the ``--measures``. The summary (:func:`summarize`) adds
    ``peak_rss_mib`` (:func:`peak_rss_mib`) and ``build`` (:func:`neuralgrok.version.build_info`).

    The config is checked first (:func:`validate_config`: :class:`ConfigError`), before anything is
    written. With ``out_dir``: the directory is locked for this process (a second writer gets
    :class:`neuralgrok.storage.files.DirectoryInUseError`); a directory that holds another run is refused
    (:class:`RunDirectoryError`) unless ``overwrite``, which deletes that run's files first;
    ``config.toml`` is written, ``checkpoint.pt`` (with its checksum, the one before kept as
    ``checkpoint.prev.pt``) and ``metrics.csv`` every ``checkpoint_every`` steps, then at the end
    ``metrics.csv``, the final weights ``model.pt`` (not for a run whose weights became NaN or infinite;
    :func:`trained_model` loads it), the method's artifacts (NeuralGrok's ``amplifier.pt``) and, last,
    ``summary.json`` (strict JSON:
    its presence marks a finished run), each atomically. With ``resume``, training continues from
    ``out_dir``'s checkpoint (if it has one), with the same metrics as an uninterrupted run; a damaged
    checkpoint raises :class:`neuralgrok.storage.checkpoints.CheckpointError` saying what to do.

    A loss or gradient that becomes NaN or infinite ends the run: its summary says
    ``stop_reason = "diverged"`` (:func:`summarize`). The stop rules end it before its step budget at a
    logged row (:func:`stop_due`): ``"early_stop"`` once test accuracy has held (``early_stop_accuracy``,
    ``early_stop_evals``), ``"plateau"`` once train accuracy is 1 and test accuracy has stopped moving
    (``plateau_stop_evals``, ``plateau_stop_tolerance``, ``plateau_stop_outliers``).
    """
    validate_config(config)
    if out_dir is None:
        with cpu_threads(config.threads):
            return _train(config, None, progress, resume)
    out_dir = Path(out_dir)
    with locked_directory(out_dir), cpu_threads(config.threads):
        claim_run_directory(out_dir, config, resume, overwrite)
        remove_temporaries(out_dir)  # left by a killed run; this run is the directory's only writer
        atomic_write_text(out_dir / "config.toml", to_toml(stored_config(config, out_dir)))
        return _train(config, out_dir, progress, resume)


def _train(config, out_dir, progress, resume):
    model, optimizer, history, wall_time_s, diverged, stop_reason = _optimise(config, progress, out_dir, resume)
    summary = summarize(config, history, wall_time_s, diverged, stop_reason)
    summary.update(peak_rss_mib=peak_rss_mib(), build=build_info())
    if out_dir is not None:
        atomic_write_text(out_dir / "metrics.csv", metrics_csv(history))
        if history:
            save_model(out_dir / MODEL, history[-1]["step"], model)  # the weights of the last logged row
        for name, state in METHODS[config.method].artifacts(optimizer).items():  # NeuralGrok's amplifier.pt
            with atomic_write(out_dir / name, "wb") as f:
                torch.save(state, f)
        atomic_write_text(out_dir / "summary.json", strict_json(summary))  # last: the run is finished
    return RunResult(config, history, summary, model, optimizer, out_dir)


def resume(out_dir: Union[str, Path], progress: bool = True) -> "RunResult":
    """Continue the run in ``out_dir`` as its ``config.toml`` says (see :func:`train`; a field the file
    lacks takes the value runs had before it existed, :meth:`TrainConfig.defaults`; its relative paths
    are relative to ``out_dir``)."""
    return train(run_config(out_dir), out_dir, progress, resume=True)


def trained_model(run_dir: Union[str, Path], file: Optional[str] = None) -> Tuple[int, torch.nn.Module]:
    """``(step, model)``: the model of the run in ``run_dir`` (built as its ``config.toml`` says, on the CPU,
    in eval mode) with the weights of ``file`` there: a finished run's final weights (``model.pt``), or a
    checkpoint's (``checkpoint.pt``, ``checkpoint.prev.pt``). By default the newest the run has: ``model.pt``
    where it exists, else ``checkpoint.pt`` (a run still going, or one written before model.pt existed). A
    missing or damaged file raises :class:`neuralgrok.storage.checkpoints.CheckpointError`. Example::

        step, model = trained_model("runs/sweep-gu-p97-strip/holdout_k=67")
    """
    if file is None:
        file = MODEL if (Path(run_dir) / MODEL).exists() else CHECKPOINT
    config = run_config(run_dir)
    data = build_data(config, with_outer=False, progress=False)
    model = build_model(config, data.layout, data.sequence_length)
    path = Path(run_dir) / file
    if not path.exists():
        raise CheckpointError(path, "does not exist (model.pt is written when a run finishes; runs written before "
                                    "it existed, and runs still going, have checkpoint.pt)")
    state = read_checkpoint(path)
    try:
        model.load_state_dict(state["model"])
    except (KeyError, RuntimeError) as error:
        raise CheckpointError(path, f"its model weights do not load into {config.model}: {error}") from None
    return state["step"], model.eval()


def depends_on_mode(model: torch.nn.Module) -> bool:
    """Whether ``model`` computes differently in training mode (batch norm, dropout)."""
    return any(isinstance(module, (torch.nn.modules.batchnorm._BatchNorm, torch.nn.modules.dropout._DropoutNd))
               for module in model.modules())
