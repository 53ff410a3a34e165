"""What a run trains on: the tasks the runner knows, each described by a :class:`Task` record, and
:class:`RunData`, the splits a task's builder makes of a config.

Every function takes a :class:`neuralgrok.experiments.config.TrainConfig` (read by field name only, so
this module does not import the config)::

    from neuralgrok.experiments.data import build_data
    data = build_data(config, with_outer=False)      # RunData: train, test (and its parts), outer

The modular-arithmetic tasks (:mod:`neuralgrok.experiments.tasks`; every registered operation name is
one) split by ``config.split``: ``"random"`` shuffles all examples by the seed and trains on the first
``train_fraction`` of them, or for a method that needs an outer split (``with_outer``) splits them
inner / outer / test with :func:`neuralgrok.experiments.tasks.inner_outer_test_split` (the outer split is
``outer_fraction`` of all examples, taken from the training share); ``"rectangle"`` and ``"strip"`` are
Gu et al.'s hold-outs (:func:`neuralgrok.experiments.tasks.hold_out_split`) with ``holdout_k``, training on
the first ``int(train_fraction * N)`` shuffled remaining pairs (0.3 gives the paper's 2,822 at p = 97)
and reporting the held block and the rest as named test parts.

``task="polygons"`` is Gu et al.'s image task (:mod:`neuralgrok.experiments.polygons`, ``image_size``,
``faithful``; ``image_count`` > 0 keeps a seeded subset of the images for quick runs): images, not
tokens, so only the models that take images go with it (see :mod:`neuralgrok.experiments.models`).

Adding a task: its builder and its checks, and one :func:`register_task` call.
"""
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from . import polygons
from .models import BLOCKS, EMBEDDINGS, LOSSES, MODELS
from .tasks import (OPERATIONS, Split, TokenLayout, hold_out_split, inner_outer_test_split, modular_task,
                    number_of_examples, task_problems, token_layout)

SPLITS = ("random", "rectangle", "strip")
EMBEDDING_INITS = ("default",) + EMBEDDINGS  # "default": the model's own (N(0, 1) for "transformer")
EVAL_CHUNK = 2048  # token sequences per evaluation forward (see Task.eval_chunk)
# The fields of one kind of task, with the values the other kind must leave them at.
TOKEN_DEFAULTS = {"layout": "neuralgrok", "operand_offset": 0, "split": "random", "holdout_k": 0,
                  "embedding_init": "default", "nonzero_b": False, "block": "prenorm"}
IMAGE_DEFAULTS = {"image_size": 64, "faithful": False, "image_count": 0, "weights_path": ""}


@dataclass
class RunData:
    """The splits a run trains and evaluates on. ``test_parts`` names consecutive parts of ``test``
    (in order; together they are ``test``), e.g. a hold-out's ``held`` block and ``rest``. Inputs are
    ``(N, T)`` long tokens or ``(N, 3, S, S)`` float images, labels ``(N,)`` long class indices."""

    layout: Optional[TokenLayout]  # None for images
    train: Split
    test: Split
    outer: Optional[Split] = None
    test_parts: Dict[str, Split] = field(default_factory=dict)

    @property
    def sequence_length(self) -> int:
        return self.train.inputs.shape[1]

    def to(self, device: Any) -> "RunData":
        """The same splits on ``device``."""
        def move(split):
            return None if split is None else Split(split.inputs.to(device), split.labels.to(device))

        return RunData(self.layout, move(self.train), move(self.test), move(self.outer),
                       {name: move(part) for name, part in self.test_parts.items()})


@dataclass(frozen=True)
class Task:
    """One kind of task, as the runner sees it.

    Attributes:
        name: the record's name (``"modular"``: every operation of
            :data:`neuralgrok.experiments.tasks.OPERATIONS`; ``"polygons"``).
        build: ``(config, with_outer, progress) -> RunData`` on the CPU; ``with_outer``: hold out the
            outer split a method needs (see :class:`neuralgrok.experiments.methods.Method`).
        problems: ``(config, with_outer) -> [message]``: what is wrong with the config's task fields.
        inputs: ``"tokens"`` or ``"images"``: the models that go with the task take these
            (:class:`neuralgrok.experiments.models.Model`).
        eval_chunk: ``config -> int``: examples per evaluation forward.
        options: ``{field: default}`` of the fields only this kind of task reads.
    """

    name: str
    build: Callable[[Any, bool, bool], RunData]
    problems: Callable[[Any, bool], List[str]]
    inputs: str = "tokens"
    eval_chunk: Callable[[Any], int] = lambda config: EVAL_CHUNK
    options: Dict[str, Any] = field(default_factory=dict)


TASKS: Dict[str, Task] = {}  # by task name; every modular operation is MODULAR (see task_of)


def register_task(name: str, task: Task) -> Task:
    """Make ``task`` the record of the task ``name`` (a config's ``task``); returns it."""
    if name in TASKS or name in OPERATIONS:
        raise ValueError(f"task {name!r} is already registered")
    TASKS[name] = task
    return task


def task_of(config: Any) -> Task:
    """The record of ``config.task``: a registered task, else the modular-arithmetic tasks (whose checks
    say so when the name is no operation either)."""
    return TASKS.get(config.task, MODULAR)


def task_names() -> Tuple[str, ...]:
    """Every task a config may name: the operations (sorted), then the other registered tasks."""
    return tuple(sorted(OPERATIONS)) + tuple(TASKS)


def build_data(config: Any, with_outer: bool, progress: bool = True) -> RunData:
    """The config's :class:`RunData` (on the CPU); ``with_outer``: hold out the outer split;
    ``progress``: a progress bar where a task draws its data (the first run of an image size)."""
    return task_of(config).build(config, with_outer, progress)


def eval_chunk(config: Any) -> int:
    """Examples per evaluation forward, as the config's task says."""
    return task_of(config).eval_chunk(config)


def _choice_problems(config):
    choices = {"model": tuple(MODELS), "split": SPLITS, "embedding_init": EMBEDDING_INITS, "loss": LOSSES,
               "block": BLOCKS}
    return [f"{name}={getattr(config, name)!r} is not one of {list(valid)}"
            for name, valid in choices.items() if getattr(config, name) not in valid]


def build_problems(config: Any, with_outer: bool) -> List[str]:
    """What is wrong with the config's task and model fields, as messages naming the fields (empty if
    nothing); ``with_outer``: the method needs an outer split."""
    problems = _choice_problems(config)
    task, model = task_of(config), MODELS.get(config.model)
    if model is not None and model.inputs != task.inputs:
        takes = [name for name, other in MODELS.items() if other.inputs == model.inputs]
        problems.append(f"task={config.task!r} and model={config.model!r} do not go together: model="
                        f"{config.model!r} takes {model.inputs} (the {task.inputs} of task={config.task!r} go "
                        f"with model {' or '.join(map(repr, sorted(set(MODELS) - set(takes))))})")
    return problems + task.problems(config, with_outer)


# -- the modular-arithmetic tasks ----------------------------------------------------------------------


def hold_out_train_count(config: Any) -> int:
    return int(config.train_fraction * number_of_examples(config.task, config.p, config.nonzero_b))


def _modular_data(config, with_outer, progress):
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


def _modular_problems(config, with_outer):
    problems = [f"{name}={getattr(config, name)!r} is for task='polygons'"
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
        problems.append(f"method={config.method!r} trains on an outer split of split='random' only; "
                        f"got split={config.split!r} (set amplifier_path to use a trained amplifier)")
    return problems


MODULAR = Task("modular", _modular_data, _modular_problems, inputs="tokens", options=TOKEN_DEFAULTS)


# -- Gu et al.'s polygon images ------------------------------------------------------------------------


def _polygon_data(config, with_outer, progress):
    train_x, train_y, test_x, test_y = polygons.polygon_split(config.image_size, config.train_fraction,
                                                              config.seed, config.faithful, progress=progress)
    if config.image_count:  # prefixes of the shuffled split: a seeded random subset of each side
        n_train = round(config.train_fraction * config.image_count)
        train_x, train_y = train_x[:n_train], train_y[:n_train]
        test_x, test_y = test_x[:config.image_count - n_train], test_y[:config.image_count - n_train]
    return RunData(None, Split(train_x, train_y), Split(test_x, test_y))


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
        problems.append(f"method={config.method!r} trains on an outer split of a modular task; task='polygons' "
                        f"has none (set amplifier_path to use a trained amplifier)")
    return problems


def _polygon_eval_chunk(config):
    """Images of 2^18 pixels in all (64 at 64 px): ResNet-18's first activation holds 16 floats per input
    pixel, and on our CPU chunks of 32-64 images at 64 px evaluated 1.5-4x as fast as chunks of 512-2,048."""
    return max(1, 2 ** 18 // config.image_size ** 2)


register_task("polygons", Task("polygons", _polygon_data, _polygon_problems, inputs="images",
                               eval_chunk=_polygon_eval_chunk, options=IMAGE_DEFAULTS))
