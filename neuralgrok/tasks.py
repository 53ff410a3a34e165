"""Modular-arithmetic tasks of the grokking papers: every pair (a, b) of residues mod a prime p,
labelled with ``op(a, b) mod p``.

Token ids (vocabulary ``p + 2``)::

    0 .. p-1   the numbers
    p          the operation token (one task = one operation, so one token serves them all)
    p + 1      "="

An example is the sequence ``[a, b, op, =]`` (the layout of NeuralGrok's code); its target is the
answer, a number token in ``0 .. p-1``. A new operation is one :func:`register_operation` line.

Example::

    from neuralgrok.tasks import modular_task
    data = modular_task("a+b", p=47, train_fraction=0.5, seed=0)
    data.train_inputs.shape   # (1104, 4)
"""
from dataclasses import dataclass
from typing import Callable, Dict

import torch

SEQUENCE_LENGTH = 4


@dataclass(frozen=True)
class Operation:
    """A binary operation on residues. ``compute(a, b, p)`` takes long tensors of operands and
    returns the (not yet reduced) answers; ``nonzero_b`` excludes b = 0 from the task."""

    name: str
    compute: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]
    nonzero_b: bool = False


OPERATIONS: Dict[str, Operation] = {}


def register_operation(name, compute, *, nonzero_b=False):
    """Add an operation to :data:`OPERATIONS` under ``name`` (the name used in configs and the CLI)."""
    if name in OPERATIONS:
        raise ValueError(f"operation {name!r} is already registered")
    OPERATIONS[name] = Operation(name, compute, nonzero_b)


def modular_inverse(b, p):
    """Inverse of every entry of ``b`` mod the prime ``p`` (Fermat: b^(p-2)); entries must be non-zero."""
    table = torch.tensor([0] + [pow(x, p - 2, p) for x in range(1, p)], dtype=torch.long)
    return table[b]


register_operation("a+b", lambda a, b, p: a + b)
register_operation("a-b", lambda a, b, p: a - b)
register_operation("a*b", lambda a, b, p: a * b, nonzero_b=True)
register_operation("a/b", lambda a, b, p: a * modular_inverse(b, p), nonzero_b=True)
register_operation("a*a-b", lambda a, b, p: a * a - b)
register_operation("x^2+xy+y^2", lambda a, b, p: a * a + a * b + b * b)


def operation_token(p):
    return p


def equals_token(p):
    return p + 1


def vocabulary_size(p):
    return p + 2


def is_prime(n):
    return n >= 2 and all(n % d for d in range(2, int(n ** 0.5) + 1))


def number_of_examples(operation, p):
    return p * (p - 1 if OPERATIONS[operation].nonzero_b else p)


def task_problems(operation, p, train_fraction=None):
    """What is wrong with these task settings, as messages (empty if nothing)."""
    if operation not in OPERATIONS:
        return [f"unknown operation {operation!r}; choose one of {sorted(OPERATIONS)}"]
    if not is_prime(p):
        return [f"p={p} is not a prime (division and the papers' tasks need a prime modulus)"]
    if train_fraction is None:
        return []
    if not 0.0 < train_fraction < 1.0:
        return [f"train_fraction={train_fraction} must be strictly between 0 and 1"]
    n_all = number_of_examples(operation, p)
    if not 0 < round(train_fraction * n_all) < n_all:
        return [f"train_fraction={train_fraction} leaves an empty train or test set "
                f"({n_all} examples for {operation} mod {p})"]
    return []


def _check(problems):
    if problems:
        raise ValueError("; ".join(problems))


def all_examples(operation, p):
    """Every example of the task, in (a, b) order: inputs ``(N, 4)`` long, labels ``(N,)`` long."""
    _check(task_problems(operation, p))
    op = OPERATIONS[operation]
    a, b = torch.cartesian_prod(torch.arange(p), torch.arange(1 if op.nonzero_b else 0, p)).unbind(1)
    inputs = torch.stack([a, b, torch.full_like(a, operation_token(p)), torch.full_like(a, equals_token(p))], dim=1)
    # remainder() is the mathematical mod (non-negative for a-b), unlike C-style fmod.
    labels = torch.remainder(op.compute(a, b, p), p)
    return inputs, labels


@dataclass
class TaskData:
    """A train/test split of one modular task, plus the sizes a model needs."""

    operation: str
    p: int
    train_inputs: torch.Tensor
    train_labels: torch.Tensor
    test_inputs: torch.Tensor
    test_labels: torch.Tensor

    @property
    def vocab_size(self):
        return vocabulary_size(self.p)

    @property
    def num_classes(self):
        return self.p

    @property
    def sequence_length(self):
        return SEQUENCE_LENGTH


def modular_task(operation, p, train_fraction, seed):
    """All examples of ``operation`` mod ``p``, shuffled by ``seed`` (its own generator, so global
    RNG state neither affects nor is affected by the split) and split: the first
    ``round(train_fraction * N)`` are the training set, the rest the test set."""
    _check(task_problems(operation, p, train_fraction))
    inputs, labels = all_examples(operation, p)
    n_train = round(train_fraction * len(labels))
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(labels), generator=generator)
    train, test = order[:n_train], order[n_train:]
    return TaskData(operation, p, inputs[train], labels[train], inputs[test], labels[test])
