"""Modular-arithmetic tasks of the grokking papers: every tuple of operands (residues mod a prime p),
labelled with ``op(operands) mod p``, encoded in one of three token layouts and split as the papers do.

Token layouts (the answer is always a number token ``0 .. p-1``; m = the operation's operator count,
1 for most, 2 for ``a*a-b``, 3 for ``a*c+b*d-e``)::

    "neuralgrok"  [operands..., op_1 .. op_m, =]   numbers 0..p-1, op_i = p+i-1, "=" = p+m; vocabulary p+m+1
    "power"       [a, op, b, =]                    numbers 0..p-1, op = p, "=" = p+1;        vocabulary p+2
    "nanda"       [a, b + offset, =]               a: 0..p-1, b: offset..offset+p-1,
                                                   "=" = p+offset;                           vocabulary p+offset+1

"power" and "nanda" are for two-operand operations only. The "neuralgrok" layout of a one-operator
task, ``[a, b, op, =]`` with vocabulary p + 2, is the default everywhere.

Splits: :func:`modular_task` (random, by train fraction), :func:`inner_outer_test_split` (NeuralGrok's
bilevel split) and :func:`hold_out_split` (Gu et al.'s rectangle and strip hold-outs).

Example::

    from neuralgrok.experiments.tasks import modular_task
    data = modular_task("a+b", p=47, train_fraction=0.5, seed=0)
    data.train_inputs.shape   # (1104, 4)
"""
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import torch


@dataclass(frozen=True)
class Operation:
    """An operation on residues. ``compute(*operands, p)`` takes long tensors of operands and returns
    the (not yet reduced) answers; operands whose index is in ``nonzero`` exclude 0 from the task;
    ``operators`` is the number of operator tokens in the "neuralgrok" layout."""

    name: str
    compute: Callable[..., torch.Tensor]
    arity: int = 2
    nonzero: Tuple[int, ...] = ()
    operators: int = 1

    @property
    def nonzero_b(self):
        return 1 in self.nonzero


OPERATIONS: Dict[str, Operation] = {}


def register_operation(name: str, compute: Callable[..., torch.Tensor], *, nonzero_b: bool = False, arity: int = 2,
                       nonzero: Tuple[int, ...] = (), operators: int = 1) -> None:
    """Add an operation to :data:`OPERATIONS` under ``name`` (the name used in configs and the CLI)."""
    if name in OPERATIONS:
        raise ValueError(f"operation {name!r} is already registered")
    nonzero = tuple(sorted(set(nonzero) | ({1} if nonzero_b else set())))
    OPERATIONS[name] = Operation(name, compute, arity, nonzero, operators)


def register_alias(alias: str, name: str) -> None:
    """Make ``alias`` another name of the registered operation ``name``."""
    if alias in OPERATIONS:
        raise ValueError(f"operation {alias!r} is already registered")
    OPERATIONS[alias] = OPERATIONS[name]


def modular_inverse(b: torch.Tensor, p: int) -> torch.Tensor:
    """Inverse of every entry of ``b`` mod the prime ``p`` (Fermat: b^(p-2)); entries must be non-zero."""
    table = torch.tensor([0] + [pow(x, p - 2, p) for x in range(1, p)], dtype=torch.long)
    return table[b]


# NeuralGrok's tasks (c, d >= 1 for the five-operand task; its official code also draws b >= 1 for all
# four two-operand tasks, which a run asks for with nonzero_b, see operation_of).
register_operation("a+b", lambda a, b, p: a + b)
register_operation("a-b", lambda a, b, p: a - b)
register_operation("a*b", lambda a, b, p: a * b, nonzero_b=True)
register_operation("a/b", lambda a, b, p: a * modular_inverse(b, p), nonzero_b=True)
register_operation("a*a-b", lambda a, b, p: a * a - b, operators=2)
register_operation("a*c+b*d-e", lambda a, b, c, d, e, p: a * c + b * d - e, arity=5, nonzero=(2, 3), operators=3)
# Power et al.'s polynomials (all pairs); x^2+xy+y^2 is also one of Gu et al.'s tasks.
register_operation("x^2+y^2", lambda x, y, p: x * x + y * y)
register_operation("x^2+xy+y^2", lambda x, y, p: x * x + x * y + y * y)
register_operation("x^2+xy+y^2+x", lambda x, y, p: x * x + x * y + y * y + x)
register_operation("x^3+xy", lambda x, y, p: x * x * x + x * y)
register_operation("x^3+xy^2+y", lambda x, y, p: x * x * x + x * y * y + y)
register_alias("add", "a+b")
register_alias("sub", "a-b")
register_alias("mul", "a*b")
register_alias("div", "a/b")

LAYOUTS = ("neuralgrok", "power", "nanda")


@dataclass(frozen=True)
class TokenLayout:
    """How one task's operands become tokens (see the module docstring for the three layouts)."""

    name: str
    p: int
    operators: int = 1
    offset: int = 0

    @property
    def equals_token(self):
        # "=" follows the last number or operator token.
        return self.p + {"neuralgrok": self.operators, "power": 1, "nanda": self.offset}[self.name]

    @property
    def vocab_size(self):
        return self.equals_token + 1

    def encode(self, operands):
        """``(N, arity)`` operands -> ``(N, T)`` long tokens."""
        n = len(operands)
        equals = torch.full((n, 1), self.equals_token, dtype=torch.long)
        if self.name == "nanda":
            return torch.cat([operands[:, :1], operands[:, 1:] + self.offset, equals], dim=1)
        if self.name == "power":
            return torch.cat([operands[:, :1], torch.full((n, 1), self.p, dtype=torch.long), operands[:, 1:], equals], dim=1)
        operators = (self.p + torch.arange(self.operators)).expand(n, -1)
        return torch.cat([operands, operators, equals], dim=1)

    def decode(self, inputs):
        """``(N, T)`` tokens -> the ``(N, arity)`` operands they encode (the inverse of :meth:`encode`)."""
        if self.name == "nanda":
            return torch.stack([inputs[:, 0], inputs[:, 1] - self.offset], dim=1)
        if self.name == "power":
            return inputs[:, [0, 2]]
        return inputs[:, :-(self.operators + 1)]

    @property
    def operand_offsets(self):
        """Token id of residue 0 in the first and in the second operand position."""
        return 0, self.offset


def token_layout(operation: str, p: int, layout: str = "neuralgrok", offset: int = 0) -> "TokenLayout":
    """The :class:`TokenLayout` of ``operation`` mod ``p`` (settings checked)."""
    _check(task_problems(operation, p, layout=layout, offset=offset))
    return TokenLayout(layout, p, OPERATIONS[operation].operators, offset)


# The default layout of a one-operator task, kept as functions for existing callers.
def operation_token(p: int) -> int:
    return p


def equals_token(p: int) -> int:
    return TokenLayout("neuralgrok", p).equals_token


def vocabulary_size(p: int) -> int:
    return TokenLayout("neuralgrok", p).vocab_size


MAX_EXAMPLES = 10 ** 7  # every example is built in memory at once


def is_prime(n: int) -> bool:
    return n >= 2 and all(n % d for d in range(2, int(n ** 0.5) + 1))


def operation_of(operation: str, nonzero_b: bool = False) -> Operation:
    """The registered :class:`Operation` named ``operation``; with ``nonzero_b``, its second operand
    excludes 0 (NeuralGrok's official code draws b from 1..p-1 for all four two-operand tasks)."""
    op = OPERATIONS[operation]
    if nonzero_b and not op.nonzero_b:
        op = Operation(op.name, op.compute, op.arity, tuple(sorted(set(op.nonzero) | {1})), op.operators)
    return op


def number_of_examples(operation: str, p: int, nonzero_b: bool = False) -> int:
    """How many operand tuples the task has (residues mod ``p``, 0 left out where the operation says)."""
    op = operation_of(operation, nonzero_b)
    return (p - 1) ** len(op.nonzero) * p ** (op.arity - len(op.nonzero))


def task_problems(operation: str, p: int, train_fraction: Optional[float] = None, layout: str = "neuralgrok",
                  offset: int = 0, nonzero_b: bool = False) -> List[str]:
    """What is wrong with these task settings, as messages (empty if nothing)."""
    if operation not in OPERATIONS:
        return [f"unknown operation {operation!r}; choose one of {sorted(OPERATIONS)}"]
    if not is_prime(p):
        return [f"p={p} is not a prime (division and the papers' tasks need a prime modulus)"]
    if layout not in LAYOUTS:
        return [f"unknown layout {layout!r}; choose one of {list(LAYOUTS)}"]
    if layout != "neuralgrok" and OPERATIONS[operation].arity != 2:
        return [f"layout {layout!r} needs a two-operand operation; {operation} has {OPERATIONS[operation].arity}"]
    if offset < 0 or (offset and layout != "nanda"):
        return [f"offset={offset}: only the 'nanda' layout takes an offset, and it must be >= 0"]
    if nonzero_b and OPERATIONS[operation].arity < 2:
        return [f"nonzero_b: {operation} has no second operand"]
    n_all = number_of_examples(operation, p, nonzero_b)
    if n_all > MAX_EXAMPLES:
        return [f"{operation} mod {p} has {n_all} examples, over the {MAX_EXAMPLES} "
                f"this module builds in memory (NeuralGrok uses p = 7 for a*c+b*d-e)"]
    if train_fraction is None:
        return []
    if not 0.0 < train_fraction < 1.0:
        return [f"train_fraction={train_fraction} must be strictly between 0 and 1"]
    if not 0 < round(train_fraction * n_all) < n_all:
        return [f"train_fraction={train_fraction} leaves an empty train or test set "
                f"({n_all} examples for {operation} mod {p})"]
    return []


def _check(problems):
    if problems:
        raise ValueError("; ".join(problems))


def all_operands(operation: str, p: int, nonzero_b: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
    """Every operand tuple of the task in lexicographic order, ``(N, arity)`` long, and the labels ``(N,)``
    (``nonzero_b``: see :func:`operation_of`)."""
    _check(task_problems(operation, p, nonzero_b=nonzero_b))
    op = operation_of(operation, nonzero_b)
    ranges = [torch.arange(1 if i in op.nonzero else 0, p) for i in range(op.arity)]
    operands = torch.cartesian_prod(*ranges).reshape(-1, op.arity)  # cartesian_prod of one range is 1-D
    # remainder() is the mathematical mod (non-negative for a-b), unlike C-style fmod.
    labels = torch.remainder(op.compute(*operands.unbind(1), p), p)
    return operands, labels


def all_examples(operation: str, p: int, layout: str = "neuralgrok", offset: int = 0,
                 nonzero_b: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
    """Every example of the task, in operand order: inputs ``(N, T)`` long, labels ``(N,)`` long."""
    operands, labels = all_operands(operation, p, nonzero_b)
    return token_layout(operation, p, layout, offset).encode(operands), labels


@dataclass
class TaskData:
    """A train/test split of one modular task, plus the sizes a model needs."""

    operation: str
    p: int
    train_inputs: torch.Tensor
    train_labels: torch.Tensor
    test_inputs: torch.Tensor
    test_labels: torch.Tensor
    layout: Optional[TokenLayout] = None  # None: the operation's "neuralgrok" layout

    def __post_init__(self):
        if self.layout is None:
            self.layout = token_layout(self.operation, self.p)

    @property
    def vocab_size(self):
        return self.layout.vocab_size

    @property
    def num_classes(self):
        return self.p

    @property
    def sequence_length(self):
        return self.train_inputs.shape[1]


def _permutation(n, seed):
    # Its own generator, so global RNG state neither affects nor is affected by the split.
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


def modular_task(operation: str, p: int, train_fraction: float, seed: int, layout: str = "neuralgrok", offset: int = 0,
                 nonzero_b: bool = False) -> "TaskData":
    """All examples of ``operation`` mod ``p``, shuffled by ``seed`` and split: the first
    ``round(train_fraction * N)`` are the training set, the rest the test set."""
    _check(task_problems(operation, p, train_fraction, layout, offset, nonzero_b))
    inputs, labels = all_examples(operation, p, layout, offset, nonzero_b)
    n_train = round(train_fraction * len(labels))
    order = _permutation(len(labels), seed)
    train, test = order[:n_train], order[n_train:]
    return TaskData(operation, p, inputs[train], labels[train], inputs[test], labels[test],
                    token_layout(operation, p, layout, offset))


@dataclass
class Split:
    """Inputs ``(N, T)`` and labels ``(N,)`` of one split."""

    inputs: torch.Tensor
    labels: torch.Tensor

    def __len__(self):
        return len(self.labels)


def _take(inputs, labels, index):
    return Split(inputs[index], labels[index])


def inner_outer_counts(total: int, inner_fraction: float, outer_fraction: float) -> Tuple[int, int, int]:
    """``(inner, outer, test)`` sizes of :func:`inner_outer_test_split` for ``total`` examples: the
    int-truncated shares, the test set the rest."""
    n_inner, n_outer = int(inner_fraction * total), int(outer_fraction * total)
    return n_inner, n_outer, total - n_inner - n_outer


def inner_outer_test_split(operation: str, p: int, seed: int, inner_fraction: float = 0.49, outer_fraction: float = 0.01,
                           layout: str = "neuralgrok", offset: int = 0,
                           nonzero_b: bool = False) -> Tuple["Split", "Split", "Split"]:
    """NeuralGrok's bilevel split: all examples shuffled by ``seed``; the first
    ``int(inner_fraction * N)`` train the model, the next ``int(outer_fraction * N)`` train the
    amplifier, the rest are the test set (truncated as the official code does: 4,562 / 93 / 4,657 of
    9,312 pairs). Returns ``(inner, outer, test)`` :class:`Split` s."""
    inputs, labels = all_examples(operation, p, layout, offset, nonzero_b)
    n_inner, n_outer, n_test = inner_outer_counts(len(labels), inner_fraction, outer_fraction)
    if min(n_inner, n_outer, n_test) <= 0:
        raise ValueError(f"fractions inner={inner_fraction}, outer={outer_fraction} leave an empty split "
                         f"of the {len(labels)} examples of {operation} mod {p}")
    order = _permutation(len(labels), seed)
    bounds = [order[:n_inner], order[n_inner:n_inner + n_outer], order[n_inner + n_outer:]]
    return tuple(_take(inputs, labels, index) for index in bounds)


@dataclass
class HoldOutSplit:
    """Gu et al.'s hold-out split: ``held`` is the block always in test, ``rest`` the remaining pairs
    not drawn for training; ``layout`` gives the vocabulary."""

    layout: TokenLayout
    train: Split
    held: Split
    rest: Split

    @property
    def test(self):
        """Both test sets together (the test set of the paper)."""
        return Split(torch.cat([self.held.inputs, self.rest.inputs]), torch.cat([self.held.labels, self.rest.labels]))


HOLD_OUT_SHAPES = ("rectangle", "strip")


def hold_out_split(operation: str, p: int, shape: str, k: int, seed: int = 0, train_count: Optional[int] = None,
                   layout: str = "nanda", offset: int = 0) -> "HoldOutSplit":
    """Pairs (i, j) with i <= k and j <= k ("rectangle") or with i <= k ("strip") are held out; the
    others are shuffled by ``seed`` and the first ``train_count`` train (default ``int(0.3 * p^2)``,
    the paper's 2822 at p = 97; rounding would give 2823).
    If fewer pairs remain than ``train_count``, all of them train and ``rest`` is empty (as slicing
    does in the paper's code: the strip with k = 67 at p = 97)."""
    if shape not in HOLD_OUT_SHAPES:
        raise ValueError(f"unknown hold-out shape {shape!r}; choose one of {list(HOLD_OUT_SHAPES)}")
    tokens = token_layout(operation, p, layout, offset)
    if OPERATIONS[operation].arity != 2:
        raise ValueError(f"hold-outs are over pairs; {operation} has {OPERATIONS[operation].arity} operands")
    operands, labels = all_operands(operation, p)
    inputs = tokens.encode(operands)
    held = operands[:, 0] <= k
    if shape == "rectangle":
        held &= operands[:, 1] <= k
    remaining = torch.nonzero(~held).flatten()
    remaining = remaining[_permutation(len(remaining), seed)]
    count = int(0.3 * p * p) if train_count is None else train_count
    return HoldOutSplit(tokens, _take(inputs, labels, remaining[:count]), _take(inputs, labels, held),
                        _take(inputs, labels, remaining[count:]))


def unseen_first_operand_ceiling(split: "HoldOutSplit", anywhere: bool = False) -> float:
    """Upper bound on test accuracy (up to lucky guesses): the fraction of test pairs whose first
    operand token was seen in training. A token never trained on keeps its initial (decaying)
    embedding, so the model cannot have learned what it means.

    "Seen" means in the first position of some training input, or with ``anywhere`` in any position:
    with the "nanda" layout and an offset <= k, first-operand tokens offset..k also occur in training
    as second operands (b = 0 .. k-offset), which raises the anywhere-ceiling."""
    train = split.train.inputs if anywhere else split.train.inputs[:, :1]
    first = split.test.inputs[:, 0]
    return torch.isin(first, train.flatten().unique()).double().mean().item()
