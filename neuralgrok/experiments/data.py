"""What a run's config builds: its data splits, its model and its base optimizer.

Every function takes a :class:`neuralgrok.train.TrainConfig` (read by field name only, so this
module does not import the runner)::

    from neuralgrok.build import build_data, build_model
    data = build_data(config, with_outer=False)
    model = build_model(config, data.layout, data.sequence_length)

Splits (``config.split``): ``"random"`` shuffles all examples by the seed and trains on the first
``train_fraction`` of them, or for NeuralGrok's trained amplifier (``with_outer``) splits them
inner / outer / test with :func:`neuralgrok.tasks.inner_outer_test_split` (the outer split is
``outer_fraction`` of all examples, taken from the training share); ``"rectangle"`` and
``"strip"`` are Gu et al.'s hold-outs (:func:`neuralgrok.tasks.hold_out_split`) with ``holdout_k``,
training on the first ``int(train_fraction * N)`` shuffled remaining pairs (0.3 gives the paper's
2,822 at p = 97) and reporting the held block and the rest as named test parts.

``task="polygons"`` is Gu et al.'s image task instead (:mod:`neuralgrok.polygons`, ``image_size``,
``faithful``; ``image_count`` > 0 keeps a seeded subset of the images for quick runs), with
``model="resnet18"``: no tokens, so ``p``, the layout and the token models' size fields do not apply.
"""
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional

import torch

from . import polygons
from .models import BLOCKS, EMBEDDINGS, LOSSES, EmbeddingMLP, NandaTransformer, Transformer
from .tasks import (OPERATIONS, Split, TokenLayout, hold_out_split, inner_outer_test_split, modular_task,
                    number_of_examples, task_problems, token_layout)

POLYGONS = "polygons"  # the image task; every other task is a modular operation
TASKS = tuple(sorted(OPERATIONS)) + (POLYGONS,)
MODELS = ("transformer", "nanda", "mlp", "resnet18")
SPLITS = ("random", "rectangle", "strip")
EMBEDDING_INITS = ("default",) + EMBEDDINGS  # "default": the model's own (N(0, 1) for "transformer")
OPTIMIZERS = ("adamw", "adam", "sgd")
EVAL_CHUNK = 2048  # token sequences per evaluation forward (see eval_chunk)
# The fields of one kind of task, with the values the other kind must leave them at.
TOKEN_DEFAULTS = {"layout": "neuralgrok", "operand_offset": 0, "split": "random", "holdout_k": 0,
                  "embedding_init": "default", "nonzero_b": False, "block": "prenorm"}
IMAGE_DEFAULTS = {"image_size": 64, "faithful": False, "image_count": 0, "weights_path": ""}


@dataclass
class RunData:
    """The splits a run trains and evaluates on. ``test_parts`` names consecutive parts of ``test``
    (in order; together they are ``test``), e.g. a hold-out's ``held`` block and ``rest``."""

    layout: Optional[TokenLayout]  # None for the polygon images
    train: Split
    test: Split
    outer: Optional[Split] = None
    test_parts: Dict[str, Split] = field(default_factory=dict)

    @property
    def sequence_length(self):
        return self.train.inputs.shape[1]

    def to(self, device):
        """The same splits on ``device``."""
        def move(split):
            return None if split is None else Split(split.inputs.to(device), split.labels.to(device))

        return RunData(self.layout, move(self.train), move(self.test), move(self.outer),
                       {name: move(part) for name, part in self.test_parts.items()})


def hold_out_train_count(config):
    return int(config.train_fraction * number_of_examples(config.task, config.p, config.nonzero_b))


def build_data(config, with_outer, progress=True):
    """The config's :class:`RunData` (on the CPU); ``with_outer``: hold out NeuralGrok's outer split;
    ``progress``: a progress bar while polygon images are drawn (the first run of a size)."""
    if config.task == POLYGONS:
        return _polygon_data(config, progress)
    if config.split == "random" and with_outer:
        inner, outer, test = inner_outer_test_split(
            config.task, config.p, config.seed, inner_fraction=config.train_fraction - config.outer_fraction,
            outer_fraction=config.outer_fraction, layout=config.layout, offset=config.operand_offset,
            nonzero_b=config.nonzero_b)
        return RunData(token_layout(config.task, config.p, config.layout, config.operand_offset), inner, test, outer)
    if config.split == "random":
        data = modular_task(config.task, config.p, config.train_fraction, config.seed, config.layout,
                            config.operand_offset, config.nonzero_b)
        return RunData(data.layout, Split(data.train_inputs, data.train_labels),
                       Split(data.test_inputs, data.test_labels))
    split = hold_out_split(config.task, config.p, config.split, config.holdout_k, seed=config.seed,
                           train_count=hold_out_train_count(config), layout=config.layout,
                           offset=config.operand_offset)
    return RunData(split.layout, split.train, split.test, test_parts={"held": split.held, "rest": split.rest})


def _polygon_data(config, progress):
    train_x, train_y, test_x, test_y = polygons.polygon_split(config.image_size, config.train_fraction,
                                                              config.seed, config.faithful, progress=progress)
    if config.image_count:  # prefixes of the shuffled split: a seeded random subset of each side
        n_train = round(config.train_fraction * config.image_count)
        train_x, train_y = train_x[:n_train], train_y[:n_train]
        test_x, test_y = test_x[:config.image_count - n_train], test_y[:config.image_count - n_train]
    return RunData(None, Split(train_x, train_y), Split(test_x, test_y))


def build_model(config, layout, sequence_length):
    """The config's model for ``layout``'s vocabulary, drawn from the global torch RNG."""
    if config.model == "resnet18":
        return polygons.resnet18(weights_path=config.weights_path or None)
    common = dict(init_scale=config.init_scale, embedding_seed=config.seed)
    embedding = None if config.embedding_init == "default" else config.embedding_init
    if config.model == "transformer":
        return Transformer(layout.vocab_size, config.p, sequence_length, width=config.width, depth=config.depth,
                           heads=config.heads, embedding=embedding, block=config.block, **common)
    if config.model == "nanda":
        return NandaTransformer(layout.vocab_size, config.p, sequence_length, width=config.width,
                                depth=config.depth, heads=config.heads, mlp_width=config.mlp_width,
                                embedding=embedding or "gaussian", **common)
    return EmbeddingMLP(layout.vocab_size, config.p, sequence_length, width=config.width, hidden=config.mlp_width,
                        embedding=embedding or "gaussian", **common)


def eval_chunk(config):
    """Examples per evaluation forward: 2,048 token sequences, or images of 2^18 pixels in all (64 at
    64 px): ResNet-18's first activation holds 16 floats per input pixel, and on our CPU chunks of
    32-64 images at 64 px evaluated 1.5-4x as fast as chunks of 512-2,048."""
    if config.task == POLYGONS:
        return max(1, 2 ** 18 // config.image_size ** 2)
    return EVAL_CHUNK


def depends_on_mode(model):
    """Whether ``model`` computes differently in training mode (batch norm, dropout)."""
    return any(isinstance(module, (torch.nn.modules.batchnorm._BatchNorm, torch.nn.modules.dropout._DropoutNd))
               for module in model.modules())


def build_base_optimizer(config, parameters):
    """The optimizer every method wraps, over ``parameters`` (the trained ones)."""
    if config.optimizer == "adamw":
        return torch.optim.AdamW(parameters, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)
    if config.optimizer == "adam":  # weight decay as an L2 term added to the gradient
        return torch.optim.Adam(parameters, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)
    return torch.optim.SGD(parameters, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


def _choice_problems(config):
    choices = {"model": MODELS, "split": SPLITS, "embedding_init": EMBEDDING_INITS, "loss": LOSSES,
               "optimizer": OPTIMIZERS, "block": BLOCKS}
    return [f"{name}={getattr(config, name)!r} is not one of {list(valid)}"
            for name, valid in choices.items() if getattr(config, name) not in valid]


def build_problems(config, with_outer):
    """What is wrong with the config's data, model and optimizer fields, as messages naming the
    fields (empty if nothing)."""
    problems = _choice_problems(config) + _optimizer_problems(config)
    if (config.task == POLYGONS) != (config.model == "resnet18"):
        problems.append(f"task={config.task!r} and model={config.model!r} do not go together: "
                        f"model='resnet18' is for task='polygons' and only it")
    if config.task == POLYGONS:
        return problems + _polygon_problems(config, with_outer)
    problems += [f"{name}={getattr(config, name)!r} is for task='polygons'"
                 for name, default in IMAGE_DEFAULTS.items() if getattr(config, name) != default]
    if config.block != "prenorm" and config.model != "transformer":
        problems.append(f"block={config.block!r} is for model='transformer' (got {config.model!r})")
    if config.operand_offset and config.layout != "nanda":
        problems.append(f"operand_offset={config.operand_offset} needs layout='nanda' (got {config.layout!r})")
    elif config.operand_offset < 0:
        problems.append(f"operand_offset={config.operand_offset} must not be negative")
    task = task_problems(config.task, config.p, config.train_fraction, config.layout, config.operand_offset,
                         config.nonzero_b)
    if problems or task:
        return problems + task  # the checks below need a valid task and valid choices
    vocab_size = token_layout(config.task, config.p, config.layout, config.operand_offset).vocab_size
    if config.embedding_init in ("onehot_fixed", "toeplitz") and config.width < vocab_size:
        problems.append(f"embedding_init={config.embedding_init!r} needs width >= the vocabulary size "
                        f"{vocab_size} (p={config.p}, layout={config.layout!r}, operand_offset="
                        f"{config.operand_offset}); got width={config.width}")
    if not config.init_scale > 0:
        problems.append(f"init_scale={config.init_scale} must be positive")
    if config.mlp_width < 1:
        problems.append(f"mlp_width={config.mlp_width} must be at least 1")
    return problems + _split_problems(config, with_outer)


def _optimizer_problems(config):
    problems = []
    if config.weight_decay < 0:
        problems.append(f"weight_decay={config.weight_decay} must not be negative")
    if not 0.0 <= config.momentum < 1.0:
        problems.append(f"momentum={config.momentum} must be in [0, 1)")
    elif config.momentum and config.optimizer != "sgd":
        problems.append(f"momentum={config.momentum} is for optimizer='sgd' (got {config.optimizer!r}; "
                        f"adam and adamw take betas)")
    return problems


def _polygon_problems(config, with_outer):
    problems = [f"{name}={getattr(config, name)!r} is for the modular tasks' tokens; task='polygons' "
                f"takes {name}={default!r}" for name, default in TOKEN_DEFAULTS.items()
                if getattr(config, name) != default]
    if not 0 <= config.image_count <= polygons.NUM_IMAGES:
        problems.append(f"image_count={config.image_count} must be in 0..{polygons.NUM_IMAGES} (0 = all)")
    checks = (lambda: polygons.split_indices(config.image_count or polygons.NUM_IMAGES, config.train_fraction),
              lambda: polygons.check_image_size(config.image_size))
    for check in checks:
        try:
            check()
        except (TypeError, ValueError) as error:
            problems.append(str(error))
    if config.weights_path and not Path(config.weights_path).is_file():
        problems.append(f"weights_path={config.weights_path!r} is not a file")
    if with_outer:
        problems.append("method='neuralgrok' trains its amplifier on an outer split of a modular task; "
                        "task='polygons' has none (set amplifier_path to use a trained amplifier)")
    return problems


def _split_problems(config, with_outer):
    if config.split == "random":
        if config.holdout_k:
            return [f"holdout_k={config.holdout_k} is set but split='random'; use split='rectangle' or 'strip'"]
        return []
    problems = []
    if config.nonzero_b:
        problems.append(f"nonzero_b is for split='random' (got split={config.split!r})")
    arity = OPERATIONS[config.task].arity
    if arity != 2:
        problems.append(f"split={config.split!r} holds out pairs; task={config.task!r} has {arity} operands")
    if not 1 <= config.holdout_k <= config.p - 2:
        problems.append(f"split={config.split!r} needs holdout_k in 1..p-2 = 1..{config.p - 2}; "
                        f"got holdout_k={config.holdout_k}")
    if hold_out_train_count(config) < 1:
        problems.append(f"train_fraction={config.train_fraction} leaves no training pair for split={config.split!r}")
    if with_outer:
        problems.append(f"method='neuralgrok' trains its amplifier on an outer split of split='random' only; "
                        f"got split={config.split!r} (set amplifier_path to use a trained amplifier)")
    return problems
