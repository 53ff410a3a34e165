"""A run's config: the :class:`TrainConfig` dataclass (nanoGPT style: one flat dataclass, plain TOML
override files), its checks, how its paths resolve, and the command-line flags generated from it, so
that names, types and defaults are defined once. Its stored form, a run directory's ``config.toml``, is
a run record (:mod:`neuralgrok.experiments.records`).

Example (the same as ``neuralgrok run --config configs/demo.toml --method neuralgrok``)::

    from neuralgrok.experiments.config import TrainConfig
    config = TrainConfig.from_toml("configs/demo.toml")
    config = dataclasses.replace(config, method="neuralgrok")

A config names its task, model and method; what each of those reads and needs is in its record
(:mod:`neuralgrok.experiments.data`, :mod:`~neuralgrok.experiments.models`,
:mod:`~neuralgrok.experiments.methods`), which the checks here consult.
"""
import argparse
import dataclasses
import math
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Tuple, Union

import torch

from ..devices import unavailable_because
from ..optim.amplifier import NeuralAmplifier
from ..optim.neuralgrok import META_MODES
from ..storage.checkpoints import load_error_text, load_weights
from ..storage.files import read_toml
from .data import EMBEDDING_INITS, SPLITS, build_problems, task_names
from .logged_measures import MEASURES, measure_problems
from .methods import METHODS, OPTIMIZERS, base_optimizer_problems, uses_outer_split
from .models import LOSSES, MODELS
from .polygons import resnet18_weights_problem
from .tasks import LAYOUTS, inner_outer_counts, number_of_examples, task_problems

PATH_FIELDS = ("amplifier_path", "weights_path")  # stored in config.toml relative to the run directory
MAX_THREADS = 1024  # torch.set_num_threads(100_000) never returns
MAX_SEED = 2 ** 32 - 1  # NumPy's seeds
DEVICE_TYPES = ("cpu", "cuda", "mps")


class ConfigError(ValueError):
    """A config that cannot run; the message names each field at fault, its value and what is allowed."""


def option(default: Any, help: str) -> Any:
    """A config field whose help text the CLI shows (with the default)."""
    return field(default=default, metadata={"help": help})


def method_option(default: Any, help: str) -> Any:
    """An :func:`option` that only methods read (a :class:`~neuralgrok.experiments.methods.Method`'s
    ``options``): a run of a method that does not read it is the same run whatever its value
    (:func:`neuralgrok.experiments.methods.unread_options`)."""
    return field(default=default, metadata={"help": help, "method_option": True})


@dataclass
class TrainConfig:
    """Everything a run depends on; ``config.toml`` of a run is this, resolved."""

    # -- data ---------------------------------------------------------------------------------
    task: str = option("a+b", "operation mod p, or polygons: Gu et al.'s polygon-counting images "
                              "(model resnet18; see neuralgrok.experiments.polygons)")
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
                                   "(larger, rotated by pi; see neuralgrok.experiments.polygons)")
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
    train_last_position_only: bool = option(False, "nanda: the last block computes only the read-out position in "
                                                   "training too, as in evaluation (the same maths for about a "
                                                   "quarter less work; the gradients round differently in the "
                                                   "last bits, so the run does not regenerate one made without it)")
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
    ema_alpha: float = method_option(0.98, "grokfast-ema: EMA momentum")
    ema_lamb: float = method_option(2.0, "grokfast-ema: amplification")
    ma_window: int = method_option(100, "grokfast-ma: window in steps")
    ma_lamb: float = method_option(5.0, "grokfast-ma: amplification")
    amplifier_hidden: Tuple[int, ...] = method_option((128, 128), "neuralgrok: amplifier hidden sizes (the official "
                                                                  "code: 128 128; 1152 for a*c+b*d-e mod 7)")
    amplifier_rescale: float = method_option(1.0, "neuralgrok, normalize: c, the norm each transformed gradient "
                                                  "tensor is rescaled to")
    meta_every: int = method_option(4, "neuralgrok: steps between amplifier updates (T; the official code: 4, 1 for "
                                       "a*c+b*d-e mod 7)")
    meta_mode: str = method_option("paper", "neuralgrok: 'paper' recomputes the gradient after the step, 'fast' "
                                            "reuses it")
    meta_lr: float = method_option(1e-4, "neuralgrok: the amplifier's Adam learning rate")
    meta_weight_decay: float = method_option(1e-3, "neuralgrok: the amplifier's Adam L2 weight decay")
    virtual_lr: float = method_option(0.0, "neuralgrok: lr of the virtual step; 0 = the base lr (see "
                                           "virtual_lr_warmup)")
    virtual_lr_warmup: bool = method_option(False, "neuralgrok: with virtual_lr 0, multiply the base lr by the warm-up "
                                                   "factor (off: the official code's constant base lr)")
    outer_fraction: float = method_option(0.01, "neuralgrok: fraction of all pairs moved from train to the outer split")
    clip_grad_norm: float = method_option(1.0, "neuralgrok, neuralgrok-frozen, normalize-clip, clip: global norm the "
                                               "(transformed) gradients are clipped to; 0 = off")
    amplifier_path: str = method_option("", "neuralgrok: use this frozen amplifier.pt (transfer) instead of training "
                                            "one")
    # -- bookkeeping --------------------------------------------------------------------------
    eval_every: int = option(10, "steps between logged evaluations; 0 = once per epoch of the training batches "
                                 "(as NeuralGrok's Table 1 counts)")
    early_stop_accuracy: float = option(0.0, "end the run once test accuracy has held >= this for early_stop_evals "
                                             "evaluations in a row; 0 = off")
    early_stop_evals: int = option(20, "evaluations the early-stop accuracy must hold for")
    plateau_stop_evals: int = option(0, "end the run once train accuracy has been 1 and test accuracy has stayed "
                                        "within plateau_stop_tolerance (max - min) for this many evaluations in a "
                                        "row, for hold-outs whose test accuracy is capped (Gu et al.'s strip); "
                                        "0 = off")
    plateau_stop_tolerance: float = option(0.001, "how far test accuracy may move over the plateau-stop window")
    plateau_stop_outliers: int = option(0, "evaluations of the plateau-stop window that may break it (a loss spike: "
                                           "train accuracy below 1, or test accuracy off the others' band); "
                                           "0 = every evaluation must hold")
    snapshot_every: int = option(0, "steps between snapshots of the method's small state (NeuralGrok: its amplifier) "
                                    "in snapshots/step_N.pt, from step 0; 0 = none")
    measures: str = option("", "progress measures logged at each evaluation, comma-separated: "
                                + ", ".join(sorted(MEASURES)) + " (see neuralgrok.experiments.logged_measures)")
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

    def measure_names(self) -> List[str]:
        """The ``measures`` field as a list of names."""
        return [name.strip() for name in self.measures.split(",") if name.strip()]

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def defaults(cls) -> Dict[str, Any]:
        """``{field: value}``: what a run whose ``config.toml`` lacks a field (one written before
        the field existed) ran with: the field's default, or for a field whose default is not what
        runs did before it existed, :data:`ABSENT_FIELD_VALUES`'s value."""
        return {**{f.name: f.default for f in dataclasses.fields(cls)}, **ABSENT_FIELD_VALUES}

    @classmethod
    def typed_values(cls, values: Dict[str, Any]) -> Dict[str, Any]:
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
    def from_dict(cls, values: Dict[str, Any]) -> "TrainConfig":
        return cls(**cls.typed_values(values))

    @classmethod
    def from_toml(cls, path: Union[str, Path]) -> "TrainConfig":
        """Read a ``config.toml`` written by :func:`train` (or by hand); its relative paths
        (``amplifier_path``, ``weights_path``) are relative to the file's directory."""
        return cls.from_dict(resolve_paths(read_toml(path), Path(path).parent))


def resolve_paths(values: Dict[str, object], base_dir: Union[str, Path]) -> Dict[str, object]:
    """``values`` (a TOML file's) with the relative paths of :data:`PATH_FIELDS` joined to ``base_dir``,
    the file's directory: a run directory's ``config.toml`` names files relative to itself, so a moved
    run (its files moved along) still finds them."""
    resolved = dict(values)
    for name in PATH_FIELDS:
        value = resolved.get(name)
        if isinstance(value, str) and value and not os.path.isabs(value):
            resolved[name] = os.path.normpath(os.path.join(base_dir, value))
    return resolved


def config_problems(config: "TrainConfig", environment: bool = False) -> List[str]:
    """Every problem of ``config``, as messages naming the field, its value and what is allowed (empty
    if none). Without ``environment`` the config alone is checked (what :class:`TrainConfig` checks
    when built); with it also what this machine must provide: the device, and the files the config
    names, which must exist and load (an amplifier of the config's hidden sizes)."""
    problems = _number_problems(config)
    problems += base_optimizer_problems(config) + build_problems(config, uses_outer_split(config))
    if config.method not in METHODS:
        problems.append(f"method={config.method!r} is not one of {sorted(METHODS)}")
    for name in ("width", "depth", "heads", "ma_window", "meta_every", "early_stop_evals"):
        if getattr(config, name) < 1:
            problems.append(f"{name}={getattr(config, name)} must be at least 1")
    for name in ("steps", "batch_size", "warmup_steps", "checkpoint_every", "eval_every", "snapshot_every",
                 "plateau_stop_evals"):
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
    if not 0.0 <= config.plateau_stop_tolerance < 1.0:
        problems.append(f"plateau_stop_tolerance={config.plateau_stop_tolerance} must be in [0, 1)")
    if config.plateau_stop_outliers < 0 or (config.plateau_stop_evals
                                            and config.plateau_stop_outliers >= config.plateau_stop_evals):
        problems.append(f"plateau_stop_outliers={config.plateau_stop_outliers} must be in 0..plateau_stop_evals - 1 "
                        f"(plateau_stop_evals={config.plateau_stop_evals})")
    if not 0.0 < config.outer_fraction < config.train_fraction:
        problems.append(f"outer_fraction={config.outer_fraction} must be in (0, train_fraction="
                        f"{config.train_fraction})")
    else:
        problems += _outer_split_problems(config)
    problems += _exclusive_option_problems(config)
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


def _exclusive_option_problems(config):
    """A field that one method keeps to itself (:attr:`Method.exclusive_options`) set for another method."""
    defaults = {f.name: f.default for f in dataclasses.fields(config)}
    return [f"{name} is for method={owner.name!r} (got {config.method!r}; {hint})"
            for owner in METHODS.values() if owner.name != config.method
            for name, hint in owner.exclusive_options.items() if getattr(config, name) != defaults[name]]


def _device_problems(name, available):
    """``device`` must parse as a torch device the runner supports; with ``available`` it must also be
    usable on this machine (:func:`neuralgrok.devices.unavailable_because`, the check of
    :func:`neuralgrok.devices.check_device`)."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        return [f"device={name!r} is not a torch device; use one of cpu, cuda, cuda:N, mps"]
    if device.type not in DEVICE_TYPES:
        return [f"device={name!r}: the runner runs on {', '.join(DEVICE_TYPES)}"]
    reason = unavailable_because(device) if available else None
    return [] if reason is None else [f"device={name!r} is not available: {reason}"]


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
        elif name == "weights_path" and config.model == "resnet18":
            problem = resnet18_weights_problem(state)
            if problem is not None:
                problems.append(f"weights_path={path!r} {problem}; it must be a ResNet-18 state dict (e.g. "
                                f"torchvision's resnet18-f37072fd.pth)")
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

CHOICES = {"task": task_names, "method": lambda: sorted(METHODS), "layout": lambda: LAYOUTS,
           "split": lambda: SPLITS, "model": lambda: tuple(MODELS), "embedding_init": lambda: EMBEDDING_INITS,
           "loss": lambda: LOSSES, "optimizer": lambda: OPTIMIZERS, "meta_mode": lambda: META_MODES}


def add_config_arguments(parser: argparse.ArgumentParser, defaults: "TrainConfig" = None) -> None:
    """One ``--field-name`` flag per TrainConfig field, typed from the dataclass. Flags not given
    are absent from the parsed namespace (default SUPPRESS), so that only the flags a user passed
    override a config file; the help shows the dataclass defaults (or ``defaults``')."""
    defaults = TrainConfig() if defaults is None else defaults
    for config_field in dataclasses.fields(TrainConfig):
        default = getattr(defaults, config_field.name)
        shown = " ".join(map(str, default)) if isinstance(default, tuple) else str(default)
        options = {"dest": config_field.name, "default": argparse.SUPPRESS,
                   "help": config_field.metadata.get("help", "") + f" (default: {shown.replace('%', '%%')})"}
        if isinstance(default, bool):
            options["action"] = argparse.BooleanOptionalAction
        elif isinstance(default, tuple):
            variadic = typing.get_args(config_field.type)[-1:] == (Ellipsis,)  # Tuple[int, ...]
            options.update(nargs="+" if variadic else len(default), type=type(default[0]),
                           metavar=config_field.name.upper() if variadic else
                           tuple(f"{config_field.name.upper()}{i + 1}" for i in range(len(default))))
        else:
            options["type"] = type(default)
        if config_field.name in CHOICES:
            options["choices"] = CHOICES[config_field.name]()
        parser.add_argument("--" + config_field.name.replace("_", "-"), **options)


def given_config_flags(arguments: argparse.Namespace) -> Dict[str, Any]:
    """The TrainConfig fields set on the command line."""
    return {f.name: getattr(arguments, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(arguments, f.name)}


def config_flags(values: Dict[str, Any]) -> List[str]:
    """``neuralgrok run`` flags setting exactly the given TrainConfig fields."""
    flags = []
    for key, value in values.items():
        if isinstance(value, bool):
            flags.append(("--" if value else "--no-") + key.replace("_", "-"))
        else:
            flags += ["--" + key.replace("_", "-"), *_flag_values(value)]
    return flags


def _flag_values(value):
    values = value if isinstance(value, (list, tuple)) else [value]
    return [repr(v) if isinstance(v, float) else str(v) for v in values]


def config_from_flags(flags: List[str]) -> "TrainConfig":
    """The TrainConfig ``neuralgrok run`` builds from ``flags`` (argparse errors raise, not exit)."""
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_config_arguments(parser)
    return TrainConfig(**vars(parser.parse_args(flags)))
