"""One training run: a flat dataclass config and a plain loop (nanoGPT style).

Example (the same as ``neuralgrok run --task a+b --p 47 --method grokfast-ema --out runs/x``)::

    from neuralgrok.train import TrainConfig, train
    result = train(TrainConfig(task="a+b", p=47, method="grokfast-ema"), out_dir="runs/x")
    result.summary["steps_to_test_95"]

A method is a function ``(base_optimizer, model, config, outer) -> optimizer`` in :data:`METHODS`
(``outer`` is the outer split, a :class:`neuralgrok.tasks.Split`, for a method that holds one out, else None);
adding one is a :func:`register_method` call plus its hyperparameter fields in :class:`TrainConfig`.
"""
import contextlib
import csv
import dataclasses
import io
import math
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from tqdm.auto import tqdm

from ..optim.amplifier import NeuralAmplifier
from .data import (EVAL_CHUNK, build_base_optimizer, build_data, build_model, build_problems, depends_on_mode,
                    eval_chunk)
from ..storage.checkpoints import (CheckpointError, load_error_text, load_weights, previous_path, read_checkpoint,
                          write_checkpoint)
from ..storage.files import (atomic_write, atomic_write_text, finite_or_none, locked_directory,
                    read_toml, remove_temporaries, strict_json, to_toml)
from .. import measures as progress_measures
from ..optim.grokfast import Grokfast
from ..measures.age import age
from ..optim.normalize import Normalize
from ..optim.neuralgrok import META_MODES, NeuralGrok
from .models import accuracy, answer_loss, example_losses
from .logged_measures import MEASURES, MeasureInput, compute_measures, measure_problems, needs_all_pairs
from .tasks import inner_outer_counts, number_of_examples, task_problems
from ..version import build_info
from ..optim.base import NonFiniteGradientError

METRIC_COLUMNS = ("step", "train_loss", "train_accuracy", "test_loss", "test_accuracy",
                  "grad_age", "step_grad_age", "weight_norm", "wall_time_s")
SNAPSHOTS = "snapshots"  # run-directory folder of the method's snapshot_state() files
CHECKPOINT = "checkpoint.pt"
TEST_ACCURACY_THRESHOLDS = (0.5, 0.9, 0.95, 0.99)
MEMORISATION_ACCURACY = 0.99
PATH_FIELDS = ("amplifier_path", "weights_path")  # stored in config.toml relative to the run directory
MAX_THREADS = 1024  # torch.set_num_threads(100_000) never returns
MAX_SEED = 2 ** 32 - 1  # NumPy's seeds
DEVICE_TYPES = ("cpu", "cuda", "mps")
# A run directory's files, in the order an overwrite deletes them: summary.json (the mark of a finished
# run) first, config.toml last, so a kill during the deletion never leaves what looks like a finished run.
RUN_FILES = ("summary.json", "metrics.csv", CHECKPOINT, previous_path(CHECKPOINT).name, "amplifier.pt", SNAPSHOTS,
             "analysis.csv", "config.toml")
DIVERGED = "diverged"  # summary.json's stop_reason of a run whose loss or gradient became NaN or infinite


class ConfigError(ValueError):
    """A config that cannot run; the message names each field at fault, its value and what is allowed."""


class RunDirectoryError(ValueError):
    """An output directory a run must not write into as asked (it holds another run)."""


def option(default, help):
    """A config field whose help text the CLI shows (with the default)."""
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    """Everything a run depends on; ``config.toml`` of a run is this, resolved."""

    # -- data ---------------------------------------------------------------------------------
    task: str = option("a+b", "operation mod p, or polygons: Gu et al.'s polygon-counting images "
                              "(model resnet18; see neuralgrok.polygons)")
    p: int = option(97, "prime modulus (not for polygons)")
    layout: str = option("neuralgrok", "token layout: neuralgrok [a, b, op, =], power [a, op, b, =], "
                                       "nanda [a, b + operand_offset, =]")
    operand_offset: int = option(0, "nanda layout: token id of the second operand's residue 0 (Gu et al.'s "
                                    "strip: 60, so first operands never appear in training as second ones)")
    split: str = option("random", "random (train_fraction of all examples), or Gu et al.'s hold-outs: "
                                  "rectangle (pairs with a, b <= holdout_k always in test) or strip (a <= holdout_k)")
    holdout_k: int = option(0, "rectangle/strip: the held block's bound k (1..p-2); 0 with split random")
    train_fraction: float = option(0.5, "fraction of all examples used for training (for rectangle/strip: "
                                        "int(train_fraction * all) of the pairs not held out)")
    nonzero_b: bool = option(False, "exclude b = 0 from a two-operand task (NeuralGrok's official code: b in "
                                    "1..p-1 for a+b, a-b, a*b and a*a-b: 9,312 pairs at p = 97)")
    seed: int = option(0, "seeds the split, the initialisation and the batch order")
    image_size: int = option(64, "polygons: image side in pixels, even, >= 16 (the paper: 224)")
    faithful: bool = option(False, "polygons: draw three cells' polygons as the reference code does "
                                   "(larger, rotated by pi; see neuralgrok.polygons)")
    image_count: int = option(0, "polygons: use a seeded subset of this many of the 14,641 images "
                                 "(train_fraction of them train), for quick runs; 0 = all")
    # -- model --------------------------------------------------------------------------------
    model: str = option("transformer", "transformer (Power et al./NeuralGrok, LayerNorm, GELU), nanda "
                                       "(Nanda/Gu et al., no LayerNorm, ReLU), mlp (Gu et al.'s MLP on "
                                       "concatenated embeddings), or resnet18 (torchvision's, for polygons; "
                                       "the size fields below do not apply to it)")
    weights_path: str = option("", "resnet18: start from this local state dict (e.g. torchvision's "
                                   "ImageNet weights) instead of a random init")
    width: int = option(128, "embedding width")
    depth: int = option(2, "number of transformer blocks (not mlp)")
    block: str = option("prenorm", "transformer block: prenorm (x + attn(LN1 x), then x + mlp(LN2 x)) or official "
                                   "(NeuralGrok's code: x = LN1 x; x + attn(x); x + mlp(LN2 x))")
    heads: int = option(4, "attention heads per block (not mlp)")
    mlp_width: int = option(512, "nanda: MLP width of a block; mlp: both hidden layers' width "
                                 "(the transformer's MLP is 4 x width)")
    embedding_init: str = option("default", "token embedding init: default (the model's own: N(0, 1) for "
                                            "transformer, N(0, 1/width) otherwise), gaussian N(0, 1/width), "
                                            "onehot_fixed (identity, frozen; width >= vocabulary) or toeplitz")
    init_scale: float = option(1.0, "multiplies every trained weight matrix at initialisation")
    # -- optimisation -------------------------------------------------------------------------
    loss: str = option("ce", "answer loss: ce (cross-entropy) or mse (logits vs the one-hot answer)")
    optimizer: str = option("adamw", "base optimizer every method wraps: adamw, adam or sgd")
    steps: int = option(10_000, "optimizer updates")
    batch_size: int = option(0, "examples per step; 0 = the whole training set")
    lr: float = option(1e-3, "learning rate of the base optimizer")
    weight_decay: float = option(1.0, "weight decay: decoupled for adamw, an L2 term in the gradient for adam and sgd")
    betas: Tuple[float, float] = option((0.9, 0.98), "adamw/adam betas")
    momentum: float = option(0.0, "sgd momentum")
    warmup_steps: int = option(10, "linear learning-rate warm-up; 0 = none")
    warmup_from_zero: bool = option(False, "the k-th update runs at lr * min((k - 1) / warmup_steps, 1), the first "
                                           "at lr 0, as NeuralGrok's official code; off: min(k / warmup_steps, 1)")
    # -- method -------------------------------------------------------------------------------
    method: str = option("baseline", "gradient method wrapping the base optimizer")
    ema_alpha: float = option(0.98, "grokfast-ema: EMA momentum")
    ema_lamb: float = option(2.0, "grokfast-ema: amplification")
    ma_window: int = option(100, "grokfast-ma: window in steps")
    ma_lamb: float = option(5.0, "grokfast-ma: amplification")
    amplifier_hidden: Tuple[int, ...] = option((128, 128), "neuralgrok: amplifier hidden sizes (the official code: "
                                                           "128 128; 1152 for a*c+b*d-e mod 7)")
    amplifier_rescale: float = option(1.0, "neuralgrok, normalize: c, the norm each transformed gradient tensor is "
                                           "rescaled to")
    meta_every: int = option(4, "neuralgrok: steps between amplifier updates (T; the official code: 4, 1 for "
                                "a*c+b*d-e mod 7)")
    meta_mode: str = option("paper", "neuralgrok: 'paper' recomputes the gradient after the step, 'fast' reuses it")
    meta_lr: float = option(1e-4, "neuralgrok: the amplifier's Adam learning rate")
    meta_weight_decay: float = option(1e-3, "neuralgrok: the amplifier's Adam L2 weight decay")
    virtual_lr: float = option(0.0, "neuralgrok: lr of the virtual step; 0 = the base lr (see virtual_lr_warmup)")
    virtual_lr_warmup: bool = option(False, "neuralgrok: with virtual_lr 0, multiply the base lr by the warm-up "
                                            "factor (off: the official code's constant base lr)")
    outer_fraction: float = option(0.01, "neuralgrok: fraction of all pairs moved from train to the outer split")
    clip_grad_norm: float = option(1.0, "neuralgrok, neuralgrok-frozen, normalize-clip: global norm the transformed "
                                        "gradients are clipped to; 0 = off")
    amplifier_path: str = option("", "neuralgrok: use this frozen amplifier.pt (transfer) instead of training one")
    # -- bookkeeping --------------------------------------------------------------------------
    eval_every: int = option(10, "steps between logged evaluations; 0 = once per epoch of the training batches "
                                 "(as NeuralGrok's Table 1 counts)")
    early_stop_accuracy: float = option(0.0, "end the run once test accuracy has held >= this for early_stop_evals "
                                             "evaluations in a row; 0 = off")
    early_stop_evals: int = option(20, "evaluations the early-stop accuracy must hold for")
    snapshot_every: int = option(0, "steps between snapshots of the method's small state (NeuralGrok: its amplifier) "
                                    "in snapshots/step_N.pt, from step 0; 0 = none")
    measures: str = option("", "progress measures logged at each evaluation, comma-separated: "
                                + ", ".join(sorted(MEASURES)) + " (see neuralgrok.run_measures)")
    checkpoint_every: int = option(500, "steps between checkpoint.pt (and metrics.csv) writes in the run "
                                        "directory, for --resume; 0 = none")
    threads: int = option(0, "torch CPU threads; 0 = torch's default")
    device: str = option("cpu", "torch device")

    def __post_init__(self):
        self.betas = tuple(float(b) for b in self.betas)
        if self.batch_size is None:
            self.batch_size = 0
        self.amplifier_hidden = tuple(int(h) for h in self.amplifier_hidden)
        problems = config_problems(self)
        if problems:
            raise ConfigError("invalid TrainConfig: " + "; ".join(problems))

    def measure_names(self):
        return [name.strip() for name in self.measures.split(",") if name.strip()]

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def defaults(cls):
        """``{field: value}``: what a run whose ``config.toml`` lacks a field (one written before
        the field existed) ran with: the field's default, or for a field whose default is not what
        runs did before it existed, :data:`ABSENT_FIELD_VALUES`'s value."""
        return {**{f.name: f.default for f in dataclasses.fields(cls)}, **ABSENT_FIELD_VALUES}

    @classmethod
    def typed_values(cls, values):
        """``values`` (a TOML file's, say) checked against the fields' types: an int where a float
        is due becomes a float, a list a tuple. Raises ValueError naming every unknown or
        ill-typed key, with the valid keys or the expected type."""
        defaults = cls.defaults()
        problems, typed = [], {}
        unknown = sorted(set(values) - set(defaults))
        if unknown:
            problems.append(f"unknown keys {unknown}; valid keys are {sorted(defaults)}")
        for name in sorted(set(values) & set(defaults)):
            try:
                typed[name] = _as_type_of(values[name], defaults[name])
            except TypeError:
                problems.append(f"{name} = {values[name]!r} is not {_type_name(defaults[name])}")
        if problems:
            raise ConfigError("invalid TrainConfig: " + "; ".join(problems))
        return typed

    @classmethod
    def from_dict(cls, values):
        return cls(**cls.typed_values(values))

    @classmethod
    def from_toml(cls, path):
        """Read a ``config.toml`` written by :func:`train` (or by hand); its relative paths
        (``amplifier_path``, ``weights_path``) are relative to the file's directory."""
        return cls.from_dict(resolve_paths(read_toml(path), Path(path).parent))


def resolve_paths(values: Dict[str, object], base_dir) -> Dict[str, object]:
    """``values`` (a TOML file's) with the relative paths of :data:`PATH_FIELDS` joined to ``base_dir``,
    the file's directory: a run directory's ``config.toml`` names files relative to itself, so a moved
    run (its files moved along) still finds them."""
    resolved = dict(values)
    for name in PATH_FIELDS:
        value = resolved.get(name)
        if isinstance(value, str) and value and not os.path.isabs(value):
            resolved[name] = os.path.normpath(os.path.join(base_dir, value))
    return resolved


def stored_config(config: "TrainConfig", out_dir) -> Dict[str, object]:
    """``config`` as ``config.toml`` in ``out_dir`` holds it: a dict, the paths of :data:`PATH_FIELDS`
    relative to ``out_dir`` (see :func:`resolve_paths`)."""
    values = config.to_dict()
    for name in PATH_FIELDS:
        if values[name]:
            values[name] = os.path.relpath(os.path.abspath(values[name]), os.path.abspath(out_dir))
    return values


def run_config(out_dir) -> "TrainConfig":
    """The config of the run in ``out_dir``, from its ``config.toml``: a field the file lacks takes the
    value runs had before it existed (:meth:`TrainConfig.defaults`), its relative paths are relative
    to ``out_dir``. Raises ConfigError (or OSError, a TOML ValueError) for a file that does not make one."""
    written = resolve_paths(read_toml(Path(out_dir) / "config.toml"), out_dir)
    return TrainConfig.from_dict({**TrainConfig.defaults(), **written})


def same_config(a: "TrainConfig", b: "TrainConfig", out_dir) -> bool:
    """Whether configs ``a`` and ``b`` are one run's in ``out_dir``: equal fields, their paths naming the
    same files (compared as stored there, relative to ``out_dir``)."""
    return stored_config(a, out_dir) == stored_config(b, out_dir)


def config_problems(config: "TrainConfig", environment: bool = False) -> List[str]:
    """Every problem of ``config``, as messages naming the field, its value and what is allowed (empty
    if none). Without ``environment`` the config alone is checked (what :class:`TrainConfig` checks
    when built); with it also what this machine must provide: the device, and the files the config
    names, which must exist and load (an amplifier of the config's hidden sizes)."""
    problems = _number_problems(config)
    problems += build_problems(config, uses_outer_split(config))
    if config.method not in METHODS:
        problems.append(f"method={config.method!r} is not one of {sorted(METHODS)}")
    for name in ("width", "depth", "heads", "ma_window", "meta_every", "early_stop_evals"):
        if getattr(config, name) < 1:
            problems.append(f"{name}={getattr(config, name)} must be at least 1")
    for name in ("steps", "batch_size", "warmup_steps", "checkpoint_every", "eval_every", "snapshot_every"):
        if getattr(config, name) < 0:
            problems.append(f"{name}={getattr(config, name)} must not be negative")
    if config.width % max(config.heads, 1):
        problems.append(f"width={config.width} must be divisible by heads={config.heads}")
    if len(config.betas) != 2 or not all(0.0 <= b < 1.0 for b in config.betas):
        problems.append(f"betas={config.betas} must be two numbers in [0, 1)")
    if not config.lr > 0:
        problems.append(f"lr={config.lr} must be positive")
    if not problems:  # which measures apply depends on a valid task and model
        problems += measure_problems(config.measure_names(), config)
    if not config.amplifier_hidden or min(config.amplifier_hidden) < 1:
        problems.append(f"amplifier_hidden={config.amplifier_hidden} must be one or more positive widths")
    if config.meta_mode not in META_MODES:
        problems.append(f"meta_mode={config.meta_mode!r} is not one of {list(META_MODES)}")
    if not config.meta_lr > 0:
        problems.append(f"meta_lr={config.meta_lr} must be positive")
    if not config.amplifier_rescale > 0:
        problems.append(f"amplifier_rescale={config.amplifier_rescale} must be positive")
    if not config.clip_grad_norm >= 0:
        problems.append(f"clip_grad_norm={config.clip_grad_norm} must not be negative (0 = off)")
    for name in ("meta_weight_decay", "virtual_lr"):
        if not getattr(config, name) >= 0:
            problems.append(f"{name}={getattr(config, name)} must not be negative")
    if not 0.0 <= config.ema_alpha <= 1.0:
        problems.append(f"ema_alpha={config.ema_alpha} must be in [0, 1]")
    if not 0.0 <= config.early_stop_accuracy <= 1.0:
        problems.append(f"early_stop_accuracy={config.early_stop_accuracy} must be in [0, 1] (0 = off)")
    if not 0.0 < config.outer_fraction < config.train_fraction:
        problems.append(f"outer_fraction={config.outer_fraction} must be in (0, train_fraction="
                        f"{config.train_fraction})")
    else:
        problems += _outer_split_problems(config)
    if config.amplifier_path and config.method != "neuralgrok":
        problems.append(f"amplifier_path is for method='neuralgrok' (got {config.method!r}; neuralgrok-frozen "
                        f"keeps the amplifier at its initialisation)")
    problems += _device_problems(config.device, environment)
    if environment:
        problems += _file_problems(config)
    return problems


def validate_config(config: "TrainConfig") -> None:
    """Raise :class:`ConfigError` listing every problem of ``config`` (:func:`config_problems` with the
    environment: the device and the files too); what :func:`train` runs before it writes anything."""
    problems = config_problems(config, environment=True)
    if problems:
        raise ConfigError("invalid TrainConfig: " + "; ".join(problems))


def _number_problems(config):
    """Non-finite numbers (NaN or infinite: a NaN loss from the first step), seeds and thread counts."""
    problems = []
    for config_field in dataclasses.fields(config):
        value = getattr(config, config_field.name)
        values = value if isinstance(value, tuple) else (value,)
        if any(isinstance(v, float) and not math.isfinite(v) for v in values):
            problems.append(f"{config_field.name}={value} must be a finite number")
    if not 0 <= config.seed <= MAX_SEED:
        problems.append(f"seed={config.seed} must be in 0..{MAX_SEED} (2^32 - 1)")
    if not 0 <= config.threads <= MAX_THREADS:
        problems.append(f"threads={config.threads} must be in 0..{MAX_THREADS} (0 = torch's default)")
    return problems


def _outer_split_problems(config):
    """An inner, outer or test split that NeuralGrok's int-truncated fractions leave empty."""
    if not uses_outer_split(config) or config.split != "random" or task_problems(
            config.task, config.p, config.train_fraction, config.layout, config.operand_offset, config.nonzero_b):
        return []  # no outer split, or the task's own problems are reported
    total = number_of_examples(config.task, config.p, config.nonzero_b)
    counts = inner_outer_counts(total, config.train_fraction - config.outer_fraction, config.outer_fraction)
    empty = [name for name, count in zip(("inner (training)", "outer", "test"), counts) if count <= 0]
    if not empty:
        return []
    return [f"outer_fraction={config.outer_fraction} with train_fraction={config.train_fraction} leaves the "
            f"{' and '.join(empty)} split empty (int-truncated shares of the {total} examples: inner "
            f"{counts[0]}, outer {counts[1]}, test {counts[2]}); each needs at least one example"]


def _device_problems(name, available):
    """``device`` must parse as a torch device the runner supports; with ``available`` it must also be
    present on this machine."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        return [f"device={name!r} is not a torch device; use one of cpu, cuda, cuda:N, mps"]
    if device.type not in DEVICE_TYPES:
        return [f"device={name!r}: the runner runs on {', '.join(DEVICE_TYPES)}"]
    if not available or device.type == "cpu":
        return []
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            return [f"device={name!r} is not available: this torch ({torch.__version__}) sees no CUDA device; "
                    f"use device='cpu'"]
        if device.index is not None and device.index >= count:
            return [f"device={name!r} is not available: this machine has {count} CUDA device(s), "
                    f"cuda:0..cuda:{count - 1}"]
        return []
    backend = getattr(torch.backends, "mps", None)
    if backend is None or not backend.is_available():
        return [f"device={name!r} is not available on this machine (no Apple GPU); use device='cpu'"]
    return []


def _file_problems(config):
    """The files the config names must exist and load; an amplifier must have the config's hidden sizes."""
    problems = []
    for name in PATH_FIELDS:
        path = getattr(config, name)
        if not path:
            continue
        if not Path(path).is_file():
            problems.append(f"{name}={path!r} is not a file")
            continue
        try:
            state = load_weights(path)
        except Exception as error:  # pickle, zip and torch errors alike: the file is not a weights file
            problems.append(f"{name}={path!r} cannot be loaded as a state dict of tensors: {load_error_text(error)}")
            continue
        if not isinstance(state, dict):
            problems.append(f"{name}={path!r} holds a {type(state).__name__}, not a state dict")
        elif name == "amplifier_path":
            try:
                hidden = NeuralAmplifier.hidden_sizes_of(state)
            except ValueError as error:
                problems.append(f"amplifier_path={path!r}: {error}")
                continue
            if hidden != config.amplifier_hidden:
                problems.append(f"amplifier_path={path!r} holds an amplifier of hidden sizes {list(hidden)}, but "
                                f"amplifier_hidden={list(config.amplifier_hidden)}; set amplifier_hidden to "
                                f"{list(hidden)} (--amplifier-hidden {' '.join(map(str, hidden))})")
    return problems


# Fields added with a default other than what runs did before they existed (see TrainConfig.defaults):
# NeuralGrok's amplifier Adam had no weight decay, and its virtual step used the warmed-up lr.
ABSENT_FIELD_VALUES = {"meta_weight_decay": 0.0, "virtual_lr_warmup": True}


def _as_type_of(value, default):
    """``value`` as the type of ``default``; TypeError where it does not fit (bools are not ints)."""
    if isinstance(default, tuple) and isinstance(value, (list, tuple)):
        return tuple(_as_type_of(v, default[0]) for v in value)
    if isinstance(default, float) and type(value) is int:
        return float(value)
    if type(value) is type(default):
        return value
    raise TypeError(value)


def _type_name(default):
    if isinstance(default, tuple):
        return f"a list of {type(default[0]).__name__}"
    return {bool: "a bool", int: "an int", float: "a number", str: "a string"}[type(default)]


def _build_grokfast(mode):
    def build(base_optimizer, model, config, outer):
        names = {p: n for n, p in model.named_parameters()}  # for its non-finite gradient errors
        if mode == "ema":
            return Grokfast(base_optimizer, mode="ema", alpha=config.ema_alpha, lamb=config.ema_lamb, param_names=names)
        return Grokfast(base_optimizer, mode="ma", window=config.ma_window, lamb=config.ma_lamb, param_names=names)

    return build


def uses_outer_split(config):
    """Whether the run's training pairs lose NeuralGrok's outer split: NeuralGrok trains its
    amplifier on it, and its frozen control trains on the same inner split (so the two differ only
    in the amplifier's training)."""
    return config.method in OUTER_SPLIT_METHODS and not config.amplifier_path


def _virtual_lr(config):
    if config.virtual_lr:
        return config.virtual_lr
    return "current" if config.virtual_lr_warmup else "initial"


def _build_neuralgrok(train_amplifier):
    def build(base_optimizer, model, config, outer):
        amplifier = NeuralAmplifier(config.amplifier_hidden, rescale=config.amplifier_rescale).to(config.device)
        if config.amplifier_path:
            amplifier.load_state_dict(load_weights(config.amplifier_path))
        trains = train_amplifier and outer is not None
        return NeuralGrok(base_optimizer, amplifier, meta_every=config.meta_every, meta=config.meta_mode,
                          meta_lr=config.meta_lr, meta_weight_decay=config.meta_weight_decay,
                          virtual_lr=_virtual_lr(config), clip_grad_norm=config.clip_grad_norm or None,
                          train_amplifier=trains,
                          outer_closure=(lambda: answer_loss(model, outer.inputs, outer.labels, config.loss)[0])
                          if trains else None,
                          param_names={p: n for n, p in model.named_parameters()})

    return build


def _build_normalize(clip):
    def build(base_optimizer, model, config, outer):
        return Normalize(base_optimizer, rescale=config.amplifier_rescale,
                         clip_grad_norm=(config.clip_grad_norm or None) if clip else None,
                         param_names={p: n for n, p in model.named_parameters()})

    return build


METHODS = {
    "baseline": lambda base_optimizer, model, config, outer: base_optimizer,
    "grokfast-ema": _build_grokfast("ema"),
    "grokfast-ma": _build_grokfast("ma"),
    "neuralgrok": _build_neuralgrok(train_amplifier=True),
    # The paper's own controls: its amplifier frozen at initialisation (same seed, split and clip),
    # and per-tensor normalisation c * g / ||g|| without an amplifier (Fig. 2, 3), with and without the clip.
    "neuralgrok-frozen": _build_neuralgrok(train_amplifier=False),
    "normalize": _build_normalize(clip=False),
    "normalize-clip": _build_normalize(clip=True),
}
OUTER_SPLIT_METHODS = {"neuralgrok", "neuralgrok-frozen"}


def register_method(name, build, *, outer_split=False):
    """``build(base_optimizer, model, config, outer)`` returns the optimizer the loop steps;
    ``outer_split``: the method is given NeuralGrok's outer split (a :class:`neuralgrok.tasks.Split`
    held out of the training pairs, ``outer_fraction`` of all examples) as ``outer``."""
    if name in METHODS:
        raise ValueError(f"method {name!r} is already registered")
    METHODS[name] = build
    if outer_split:
        OUTER_SPLIT_METHODS.add(name)


@dataclass
class RunResult:
    config: TrainConfig
    history: List[Dict[str, float]]  # one row per evaluation, keys METRIC_COLUMNS
    summary: Dict[str, Optional[float]]
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    out_dir: Optional[Path] = None


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class TrainingBatches:
    """Endless (inputs, labels) batches: the whole set each time for batch_size 0 (or at least its
    size), otherwise reshuffled epochs drawn from a generator of their own.

    ``state_dict()`` holds the generator as it was before the current epoch's shuffle and the
    position in that epoch, so a loaded copy redraws the same order and goes on where this is.
    """

    def __init__(self, inputs, labels, batch_size, seed):
        self.inputs, self.labels, self.batch_size = inputs, labels, batch_size
        self.whole = batch_size == 0 or batch_size >= len(labels)
        self.generator = torch.Generator().manual_seed(seed)
        self._start_epoch()

    def _start_epoch(self):
        self.epoch_generator_state = self.generator.get_state()
        self.order = None if self.whole else torch.randperm(len(self.labels), generator=self.generator)
        self.position = 0

    @property
    def steps_per_epoch(self):
        """Batches in one pass over the set (the last, partial one included); 1 for the whole set."""
        return 1 if self.whole else math.ceil(len(self.labels) / self.batch_size)

    def __iter__(self):
        return self

    def __next__(self):
        if self.whole:
            return self.inputs, self.labels
        if self.position >= len(self.labels):
            self._start_epoch()
        chosen = self.order[self.position:self.position + self.batch_size].to(self.inputs.device)
        self.position += self.batch_size
        return self.inputs[chosen], self.labels[chosen]

    def state_dict(self):
        return {"generator": self.epoch_generator_state, "position": self.position}

    def load_state_dict(self, state):
        self.generator.set_state(state["generator"])
        self._start_epoch()
        self.position = state["position"]


def part_columns(parts):
    """The metrics.csv columns of the named test parts (a hold-out's ``held`` block and ``rest``),
    after :data:`METRIC_COLUMNS` and before the ``--measures`` columns."""
    return [f"test_{part}_{metric}" for part in parts for metric in ("loss", "accuracy")]


def first_step(history, column, threshold):
    return next((row["step"] for row in history if row[column] >= threshold), None)


def summarize(config: "TrainConfig", history: List[Dict[str, float]], wall_time_s: float,
              diverged: Optional["Divergence"] = None) -> Dict[str, object]:
    """Steps to each (whole) test-accuracy threshold, memorisation step, final metrics including
    the test parts' (None = not reached, or not a finite number: a part without examples, a diverged
    run's NaN), the steps run and why the run ended (``stop_reason``: ``"steps"``, its budget,
    ``"early_stop"``, see :func:`held_accuracy`, or ``"diverged"``: then ``diverged_at_step`` and
    ``diverged_because`` say where and why, see ``diverged``, a :class:`Divergence`)."""
    final = history[-1]
    reason = DIVERGED if diverged else "early_stop" if final["step"] < config.steps else "steps"
    summary = {"method": config.method, "steps": config.steps, "steps_done": final["step"], "stop_reason": reason,
               "memorisation_step": first_step(history, "train_accuracy", MEMORISATION_ACCURACY)}
    if diverged:
        summary.update(diverged_at_step=diverged.step, diverged_because=diverged.because)
    for threshold in TEST_ACCURACY_THRESHOLDS:
        summary[f"steps_to_test_{round(threshold * 100)}"] = first_step(history, "test_accuracy", threshold)
    for column in ("train_loss", "train_accuracy", "test_loss", "test_accuracy"):
        summary[f"final_{column}"] = final[column]
    for column in final:
        if column.startswith("test_") and column not in METRIC_COLUMNS:  # test parts: test_held_accuracy, ...
            summary[f"final_{column}"] = final[column]
    summary["wall_time_s"] = wall_time_s
    return finite_or_none(summary)


@dataclass
class Divergence:
    """Where and why a run diverged: the step whose loss or gradient was NaN or infinite."""
    step: int
    because: str


def held_accuracy(config, history):
    """Whether the early stop is due after ``history``: its last ``early_stop_evals`` rows all have a
    test accuracy of at least ``early_stop_accuracy`` (never when that is 0)."""
    window = history[-config.early_stop_evals:]
    return (config.early_stop_accuracy > 0 and len(window) == config.early_stop_evals
            and all(row["test_accuracy"] >= config.early_stop_accuracy for row in window))


def save_snapshot(out_dir, step, state):
    """``state`` (a method's :meth:`snapshot_state`) to ``out_dir/snapshots/step_<step>.pt``."""
    folder = Path(out_dir) / SNAPSHOTS
    folder.mkdir(exist_ok=True)
    with atomic_write(folder / f"step_{step:07d}.pt", "wb") as f:
        torch.save(state, f)


def peak_rss_mib():
    """Peak resident set size of this process so far, in MiB (2^20 bytes): ``getrusage``'s
    ``ru_maxrss`` (KiB on Linux, bytes on macOS); None where the ``resource`` module is missing.
    It counts everything the process holds (Python, torch's libraries, the data, the allocator's
    cache) at its fullest moment, and it never goes down: for a ``neuralgrok run`` process that is
    the run's peak, after several runs in one process the largest of them, for a resumed run the
    resuming process's."""
    try:
        import resource
    except ImportError:
        return None
    maximum = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maximum / (2 ** 20 if sys.platform == "darwin" else 2 ** 10)


def metrics_csv(history):
    buffer = io.StringIO()
    # METRIC_COLUMNS, then the run's --measures columns, as in its rows.
    writer = csv.DictWriter(buffer, fieldnames=list(history[0]) if history else METRIC_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    return buffer.getvalue()


def read_metrics(path):
    """The rows of a ``metrics.csv`` written by :func:`train`: ``step`` an int, the rest floats."""
    with open(path, newline="") as f:
        return [{key: int(value) if key == "step" else float(value) for key, value in row.items()}
                for row in csv.DictReader(f)]


def train(config: "TrainConfig", out_dir=None, progress: bool = True, resume: bool = False,
          overwrite: bool = False) -> "RunResult":
    """Train one model as ``config`` says; log every ``eval_every`` steps and at the end.

    Each logged row describes the weights after ``step`` updates: train/test loss and accuracy
    (whole splits), the AGE of the raw (untransformed) gradient of the training batch there,
    the weight norm (:func:`neuralgrok.measures.weight_norm`), the wall time so far, a hold-out's
    test parts (:func:`part_columns`) and the ``--measures``. The summary (:func:`summarize`) adds
    ``peak_rss_mib`` (:func:`peak_rss_mib`) and ``build`` (:func:`neuralgrok.version.build_info`).

    The config is checked first (:func:`validate_config`: :class:`ConfigError`), before anything is
    written. With ``out_dir``: the directory is locked for this process (a second writer gets
    :class:`neuralgrok.files.DirectoryInUseError`); a directory that holds another run is refused
    (:class:`RunDirectoryError`) unless ``overwrite``, which deletes that run's files first;
    ``config.toml`` is written, ``checkpoint.pt`` (with its checksum, the one before kept as
    ``checkpoint.prev.pt``) and ``metrics.csv`` every ``checkpoint_every`` steps, then at the end
    ``metrics.csv``, a NeuralGrok run's ``amplifier.pt`` and, last, ``summary.json`` (strict JSON:
    its presence marks a finished run), each atomically. With ``resume``, training continues from
    ``out_dir``'s checkpoint (if it has one), with the same metrics as an uninterrupted run; a damaged
    checkpoint raises :class:`neuralgrok.checkpoints.CheckpointError` saying what to do.

    A loss or gradient that becomes NaN or infinite ends the run: its summary says
    ``stop_reason = "diverged"`` (:func:`summarize`).
    """
    validate_config(config)
    if out_dir is None:
        with cpu_threads(config.threads):
            return _train(config, None, progress, resume)
    out_dir = Path(out_dir)
    with locked_directory(out_dir), cpu_threads(config.threads):
        _claim_run_directory(out_dir, config, resume, overwrite)
        remove_temporaries(out_dir)  # left by a killed run; this run is the directory's only writer
        atomic_write_text(out_dir / "config.toml", to_toml(stored_config(config, out_dir)))
        return _train(config, out_dir, progress, resume)


def _train(config, out_dir, progress, resume):
    model, optimizer, history, wall_time_s, diverged = _optimise(config, progress, out_dir, resume)
    summary = summarize(config, history, wall_time_s, diverged)
    summary.update(peak_rss_mib=peak_rss_mib(), build=build_info())
    if out_dir is not None:
        atomic_write_text(out_dir / "metrics.csv", metrics_csv(history))
        if isinstance(optimizer, NeuralGrok):  # for transfer: --amplifier-path runs/NAME/amplifier.pt
            with atomic_write(out_dir / "amplifier.pt", "wb") as f:
                torch.save(optimizer.amplifier.state_dict(), f)
        atomic_write_text(out_dir / "summary.json", strict_json(summary))  # last: the run is finished
    return RunResult(config, history, summary, model, optimizer, out_dir)


def run_files(out_dir) -> List[str]:
    """The names of :data:`RUN_FILES` present in ``out_dir``, in that order."""
    return [name for name in RUN_FILES if (Path(out_dir) / name).exists()]


def _claim_run_directory(out_dir, config, resume, overwrite):
    """Refuse a directory that holds another run (unless ``overwrite``: delete its files, summary.json first)."""
    present = run_files(out_dir)
    if resume or not present:
        return
    if overwrite:
        for name in present:
            path = out_dir / name
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        return
    hint = ""
    if "summary.json" not in present and "config.toml" in present:
        with contextlib.suppress(Exception):  # an unreadable config.toml is simply another run
            if same_config(run_config(out_dir), config, out_dir):
                hint = f", or --resume {out_dir} to continue it (the same config, unfinished)"
    state = "a finished run" if "summary.json" in present else "another run"
    raise RunDirectoryError(f"{out_dir} holds {state} ({', '.join(present)}); pass --overwrite (overwrite=True) to "
                            f"delete those files and start this run there, or choose another --out{hint}")


def resume(out_dir, progress: bool = True) -> "RunResult":
    """Continue the run in ``out_dir`` as its ``config.toml`` says (see :func:`train`; a field the file
    lacks takes the value runs had before it existed, :meth:`TrainConfig.defaults`; its relative paths
    are relative to ``out_dir``)."""
    return train(run_config(out_dir), out_dir, progress, resume=True)


def rng_states() -> Dict[str, object]:
    """The global Python, NumPy and torch RNG states (NumPy's as a tensor and numbers, so that a
    weights-only load reads them)."""
    name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    numpy_state = {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                   "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)}
    return {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}


def set_rng_states(states: Dict[str, object]) -> None:
    """Restore :func:`rng_states`."""
    random.setstate(states["python"])
    n = states["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["position"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(states["torch"])


CHECKPOINT_KEYS = ("config", "step", "history", "rng", "wall_time_s")


def save_checkpoint(path, config, step, parts, history, wall_time_s):
    """Write everything :func:`load_checkpoint` needs to go on at ``step``; ``parts`` maps names
    to objects with ``state_dict()`` (model, optimizer, scheduler, batches). The file carries its
    checksum and the one it replaces is kept (:func:`neuralgrok.checkpoints.write_checkpoint`)."""
    path = Path(path)
    state = {name: part.state_dict() for name, part in parts.items()}
    state.update(config=stored_config(config, path.parent), step=step, history=history, rng=rng_states(),
                 wall_time_s=wall_time_s)
    write_checkpoint(path, state)


def load_checkpoint(path, config, parts):
    """Load a :func:`save_checkpoint` file into ``parts`` and the global RNGs; return
    ``(step, history, wall_time_s)``. A file that is damaged, truncated, of an older format or of
    another config raises :class:`neuralgrok.checkpoints.CheckpointError` (one line)."""
    path = Path(path)
    state = read_checkpoint(path)
    missing = [key for key in (*parts, *CHECKPOINT_KEYS) if key not in state]
    if missing:
        raise CheckpointError(path, f"lacks {missing}; it is not a checkpoint of this runner")
    try:
        same = same_config(TrainConfig.from_dict(resolve_paths(state["config"], path.parent)), config, path.parent)
    except ValueError:
        same = False
    if not same:
        raise CheckpointError(path, "was written by a run with another config than config.toml's")
    for name, part in parts.items():
        try:
            part.load_state_dict(state[name])
        except (ValueError, KeyError, RuntimeError) as error:
            raise CheckpointError(path, f"its {name} state does not load: {error}") from None
    set_rng_states(state["rng"])
    return state["step"], state["history"], state["wall_time_s"]


def checkpoint_to_resume(out_dir) -> Optional[Path]:
    """The checkpoint a resume of ``out_dir`` starts from: ``checkpoint.pt``, else the kept previous one
    (``checkpoint.prev.pt``: a kill between the two renames, or a damaged newest one moved away); None
    if neither exists."""
    for path in (Path(out_dir) / CHECKPOINT, previous_path(Path(out_dir) / CHECKPOINT)):
        if path.exists():
            return path
    return None


def _checkpoint_choices(error, out_dir):
    """``error`` (a :class:`CheckpointError` of ``out_dir``'s checkpoint) with what the user can do."""
    choices = [f"start the run over with: neuralgrok run --config {out_dir / 'config.toml'} --out {out_dir} "
               f"--overwrite"]
    previous = previous_path(out_dir / CHECKPOINT)
    if error.path != previous and previous.exists():
        try:
            step = read_checkpoint(previous)["step"]
        except CheckpointError:
            pass
        else:
            choices.insert(0, f"move {error.path.name} away and --resume again to go on from the previous "
                              f"checkpoint {previous.name} (step {step}, intact)")
    return CheckpointError(error.path, f"{error.problem}; to go on, " + "; or ".join(choices))


@contextlib.contextmanager
def cpu_threads(count):
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
    (:func:`neuralgrok.build.eval_chunk`)."""

    def __init__(self, data, loss, train_from_step, all_pairs, chunk=EVAL_CHUNK):
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
    def __call__(self, model):
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
    """The training loop; returns ``(model, optimizer, history, wall time in seconds, divergence)``
    (divergence: a :class:`Divergence`, or None)."""
    seed_everything(config.seed)
    device = torch.device(config.device)
    with_outer = uses_outer_split(config)
    data = build_data(config, with_outer, progress=progress).to(device)
    model = build_model(config, data.layout, data.sequence_length).to(device)
    base_optimizer = build_base_optimizer(config, [p for p in model.parameters() if p.requires_grad])
    optimizer = METHODS[config.method](base_optimizer, model, config, data.outer if with_outer else None)
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
    first_step, history, wall_time_s, diverged = 0, [], 0.0, None
    start_from = checkpoint_to_resume(out_dir) if resume and checkpoint is not None else None
    if start_from is not None:
        try:
            first_step, history, wall_time_s = load_checkpoint(start_from, config, parts)
        except CheckpointError as error:
            raise _checkpoint_choices(error, out_dir) from None
    start = time.perf_counter() - wall_time_s  # wall time counts the interrupted part too
    bar = tqdm(total=config.steps, initial=first_step, disable=not progress, desc=config.method, dynamic_ncols=True)
    try:
        # Iteration `step` logs the weights after `step` updates (the AGE of the raw gradient
        # there is taken in the closure's first call, before any method transforms it, and that of
        # the gradient the base optimizer steps on after the transform); the last iteration (the
        # budget's, or the one where the early stop is due) only measures, so the final weights
        # get a logged row too.
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
            if log_now:
                evaluated, logits = evaluator(model)
                norm = progress_measures.weight_norm(model)  # the L2 norm, not its square
                logged_measures = compute_measures(measure_names, MeasureInput(model, config, data, evaluator.inputs,
                                                                               logits))
                last = last or held_accuracy(config, history + [evaluated])
            if snapshots and (step % config.snapshot_every == 0 or last):
                state = optimizer.snapshot_state()
                if state is not None:
                    save_snapshot(out_dir, step, state)
            if last:
                closure()
            else:
                if records_age:
                    optimizer.record_age, optimizer.recorded_age = log_now, None
                try:
                    optimizer.step(closure)
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
    return model, optimizer, history, time.perf_counter() - start, diverged


def _cell(value, kind):
    if value is None:
        return "-"
    return {"step": f"{value:,}", "accuracy": f"{value:.3f}", "seconds": f"{value:.1f}"}[kind]


SUMMARY_TABLE_COLUMNS = (
    ("method", "method", None),
    ("memorised", "memorisation_step", "step"),
    ("test 50%", "steps_to_test_50", "step"),
    ("test 90%", "steps_to_test_90", "step"),
    ("test 95%", "steps_to_test_95", "step"),
    ("test 99%", "steps_to_test_99", "step"),
    ("final test acc", "final_test_accuracy", "accuracy"),
    ("wall time (s)", "wall_time_s", "seconds"),
)


def summary_table(summaries):
    """Runs' summaries as an aligned text table ("-" = threshold never reached; a diverged run's
    final accuracy reads "diverged")."""
    rows = [[title for title, _, _ in SUMMARY_TABLE_COLUMNS]]
    for summary in summaries:
        diverged = summary.get("stop_reason") == DIVERGED
        rows.append([summary[key] if kind is None else DIVERGED if diverged and key == "final_test_accuracy"
                     else _cell(summary[key], kind) for _, key, kind in SUMMARY_TABLE_COLUMNS])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines) + "\n"
