"""The methods a run can train with, each described by a :class:`Method` record, and the base
optimizer every one of them wraps.

A method turns the base optimizer into the optimizer the loop steps: ``build(base_optimizer, model,
config, outer)``, ``outer`` being the outer split (a :class:`neuralgrok.experiments.tasks.Split` held out
of the training pairs) where the record's ``outer_split(config)`` says the method needs one, else None.
The loop reads nothing else of a method but its record: what it needs (an outer split), and what it
leaves in the run directory at the end (``artifacts``, e.g. NeuralGrok's ``amplifier.pt``).

Adding a method: its optimizer in one file of :mod:`neuralgrok.optim` (a
:class:`~neuralgrok.optim.base.GradientTransformOptimizer`), one :func:`register_method` call below (or in
your own code), and its tests; hyperparameters it needs beyond the existing ones are new
:class:`~neuralgrok.experiments.config.TrainConfig` fields, declared with ``method_option`` and listed in
its ``options`` (a run of another method then resumes whatever their value: :func:`unread_options`).
``clip`` is the smallest example::

    register_method("clip", lambda base, model, config, outer: ClipGradNorm(base, config.clip_grad_norm),
                    options=("clip_grad_norm",), help="...")
"""
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, FrozenSet, List, Optional, Tuple

import torch
from torch import nn

from ..optim.amplifier import NeuralAmplifier
from ..optim.clip import ClipGradNorm
from ..optim.grokfast import Grokfast
from ..optim.neuralgrok import NeuralGrok
from ..optim.normalize import Normalize
from ..storage.checkpoints import load_weights
from .models import answer_loss
from .tasks import Split

OPTIMIZERS = ("adamw", "adam", "sgd")
Builder = Callable[[torch.optim.Optimizer, nn.Module, Any, Optional[Split]], torch.optim.Optimizer]


def _never(config: Any) -> bool:
    return False


def _no_artifacts(optimizer: torch.optim.Optimizer) -> Dict[str, Any]:
    return {}


@dataclass(frozen=True)
class Method:
    """One training method, as the runner sees it.

    Attributes:
        name: its name in configs and on the command line (``method = "..."``).
        build: ``(base_optimizer, model, config, outer) -> optimizer`` (see the module docstring).
        options: the :class:`~neuralgrok.experiments.config.TrainConfig` fields ``build`` reads.
        outer_split: ``config -> bool``: whether the run holds NeuralGrok's outer split out of the
            training pairs (``outer_fraction`` of all examples) and passes it as ``outer``.
        artifacts: ``optimizer -> {file name: object}``: what the run directory keeps of the method at
            the end (each object is ``torch.save`` d there), e.g. ``{"amplifier.pt": state dict}``.
        exclusive_options: ``{field: hint}``: fields that no other method may set (their non-default
            value with another method is refused; the hint says why).
        help: one line for ``neuralgrok run --help``.
    """

    name: str
    build: Builder
    options: Tuple[str, ...] = ()
    outer_split: Callable[[Any], bool] = _never
    artifacts: Callable[[torch.optim.Optimizer], Dict[str, Any]] = _no_artifacts
    exclusive_options: Dict[str, str] = field(default_factory=dict)
    help: str = ""


METHODS: Dict[str, Method] = {}


def register_method(name: str, build: Builder, *, outer_split: Any = False, options: Tuple[str, ...] = (),
                    artifacts: Optional[Callable[[torch.optim.Optimizer], Dict[str, Any]]] = None,
                    exclusive_options: Optional[Dict[str, str]] = None, help: str = "") -> Method:
    """Register a method under ``name`` (see :class:`Method`; ``outer_split`` may be a bool or a
    ``config -> bool``) and return its record. A name taken already raises ValueError."""
    if name in METHODS:
        raise ValueError(f"method {name!r} is already registered")
    needs_outer = outer_split if callable(outer_split) else (lambda config: True) if outer_split else _never
    METHODS[name] = Method(name, build, tuple(options), needs_outer, artifacts or _no_artifacts,
                           dict(exclusive_options or {}), help)
    return METHODS[name]


def method_of(config: Any) -> Optional[Method]:
    """The record of ``config.method`` (None for a name not registered)."""
    return METHODS.get(config.method)


def unread_options(config: Any) -> FrozenSet[str]:
    """The config's method-only fields (declared with
    :func:`~neuralgrok.experiments.config.method_option`) that its method does not read, i.e. that are not in
    its :attr:`Method.options` (for ``baseline``: all of them). Two configs of one method that differ only
    in these train the same run: :func:`neuralgrok.experiments.records.same_config` ignores them, so a run
    directory written when such a field had another default still resumes. ``tests/test_methods.py``
    checks, by training, that each built-in method's options list every such field it reads."""
    own = method_of(config)
    method_only = {f.name for f in dataclasses.fields(config) if f.metadata.get("method_option")}
    return frozenset(method_only - set(own.options if own else ()))


def uses_outer_split(config: Any) -> bool:
    """Whether the run's training pairs lose an outer split for its method (see :class:`Method`)."""
    method = method_of(config)
    return method is not None and method.outer_split(config)


def build_base_optimizer(config: Any, parameters: List[torch.Tensor]) -> torch.optim.Optimizer:
    """The optimizer every method wraps, over ``parameters`` (the trained ones)."""
    if config.optimizer == "adamw":
        return torch.optim.AdamW(parameters, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)
    if config.optimizer == "adam":  # weight decay as an L2 term added to the gradient
        return torch.optim.Adam(parameters, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)
    return torch.optim.SGD(parameters, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


def base_optimizer_problems(config: Any) -> List[str]:
    """What is wrong with the base optimizer's fields (empty if nothing)."""
    problems = []
    if config.optimizer not in OPTIMIZERS:
        problems.append(f"optimizer={config.optimizer!r} is not one of {list(OPTIMIZERS)}")
    if config.weight_decay < 0:
        problems.append(f"weight_decay={config.weight_decay} must not be negative")
    if not 0.0 <= config.momentum < 1.0:
        problems.append(f"momentum={config.momentum} must be in [0, 1)")
    elif config.momentum and config.optimizer != "sgd":
        problems.append(f"momentum={config.momentum} is for optimizer='sgd' (got {config.optimizer!r}; "
                        f"adam and adamw take betas)")
    return problems


def _parameter_names(model: nn.Module) -> Dict[torch.Tensor, str]:
    return {p: n for n, p in model.named_parameters()}  # for a method's non-finite gradient errors


def _build_grokfast(mode: str) -> Builder:
    def build(base_optimizer, model, config, outer):
        names = _parameter_names(model)
        if mode == "ema":
            return Grokfast(base_optimizer, mode="ema", alpha=config.ema_alpha, lamb=config.ema_lamb, param_names=names)
        return Grokfast(base_optimizer, mode="ma", window=config.ma_window, lamb=config.ma_lamb, param_names=names)

    return build


def _virtual_lr(config: Any) -> Any:
    if config.virtual_lr:
        return config.virtual_lr
    return "current" if config.virtual_lr_warmup else "initial"


def _build_neuralgrok(train_amplifier: bool) -> Builder:
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
                          param_names=_parameter_names(model))

    return build


def _build_normalize(clip: bool) -> Builder:
    def build(base_optimizer, model, config, outer):
        return Normalize(base_optimizer, rescale=config.amplifier_rescale,
                         clip_grad_norm=(config.clip_grad_norm or None) if clip else None,
                         param_names=_parameter_names(model))

    return build


def _build_clip(base_optimizer, model, config, outer):
    return ClipGradNorm(base_optimizer, config.clip_grad_norm or None, param_names=_parameter_names(model))


def _without_transfer(config: Any) -> bool:
    # A transferred amplifier (amplifier_path) is frozen: nothing to train on an outer split.
    return not config.amplifier_path


def _amplifier_file(optimizer: NeuralGrok) -> Dict[str, Any]:
    return {"amplifier.pt": optimizer.amplifier.state_dict()}  # for transfer: --amplifier-path runs/NAME/amplifier.pt


_NEURALGROK_OPTIONS = ("amplifier_hidden", "amplifier_rescale", "amplifier_path", "meta_every", "meta_mode", "meta_lr",
                       "meta_weight_decay", "virtual_lr", "virtual_lr_warmup", "clip_grad_norm", "outer_fraction")

register_method("baseline", lambda base_optimizer, model, config, outer: base_optimizer,
                help="the base optimizer alone")
register_method("grokfast-ema", _build_grokfast("ema"), options=("ema_alpha", "ema_lamb"),
                help="Grokfast's EMA filter (Lee et al., arXiv 2405.20233)")
register_method("grokfast-ma", _build_grokfast("ma"), options=("ma_window", "ma_lamb"),
                help="Grokfast's moving-average filter")
register_method("neuralgrok", _build_neuralgrok(train_amplifier=True), options=_NEURALGROK_OPTIONS,
                outer_split=_without_transfer, artifacts=_amplifier_file,
                exclusive_options={"amplifier_path": "neuralgrok-frozen keeps the amplifier at its initialisation"},
                help="NeuralGrok's meta-learned amplifier (arXiv 2504.17243)")
# The paper's own controls: its amplifier frozen at initialisation (same seed, split and clip), and per-tensor
# normalisation c * g / ||g|| without an amplifier (Fig. 2, 3), with and without the clip; and the clip alone.
register_method("neuralgrok-frozen", _build_neuralgrok(train_amplifier=False), options=_NEURALGROK_OPTIONS,
                outer_split=_without_transfer, artifacts=_amplifier_file, help="NeuralGrok with its amplifier frozen at initialisation")
register_method("normalize", _build_normalize(clip=False), options=("amplifier_rescale",),
                help="per-tensor normalisation c * g / ||g||")
register_method("normalize-clip", _build_normalize(clip=True), options=("amplifier_rescale", "clip_grad_norm"),
                help="per-tensor normalisation, then the global clip")
register_method("clip", _build_clip, options=("clip_grad_norm",),
                help="the gradient's global norm clipped to clip_grad_norm, nothing else")
