import pytest
import torch

import itertools

from neuralgrok.experiments.tasks import (OPERATIONS, all_examples, equals_token, hold_out_split,
                                          inner_outer_test_split, modular_task, operation_token, register_operation,
                                          token_layout, unseen_first_operand_ceiling, vocabulary_size)

BRUTE_FORCE = {
    "a+b": lambda a, b, p: (a + b) % p,
    "a-b": lambda a, b, p: (a - b) % p,
    "a*b": lambda a, b, p: (a * b) % p,
    # Division by search, independent of the Fermat inverse used by the task.
    "a/b": lambda a, b, p: next(c for c in range(p) if (c * b) % p == a),
    "a*a-b": lambda a, b, p: (a * a - b) % p,
    "x^2+xy+y^2": lambda a, b, p: (a * a + a * b + b * b) % p,
    "x^2+y^2": lambda x, y, p: (x ** 2 + y ** 2) % p,
    "x^2+xy+y^2+x": lambda x, y, p: (x ** 2 + x * y + y ** 2 + x) % p,
    "x^3+xy": lambda x, y, p: (x ** 3 + x * y) % p,
    "x^3+xy^2+y": lambda x, y, p: (x ** 3 + x * y ** 2 + y) % p,
    "a*c+b*d-e": lambda a, b, c, d, e, p: (a * c + b * d - e) % p,
}
ALIASES = {"add": "a+b", "sub": "a-b", "mul": "a*b", "div": "a/b"}
# Operands that exclude 0, and operator tokens in the "neuralgrok" layout, per the papers.
NONZERO = {"a*b": (1,), "a/b": (1,), "a*c+b*d-e": (2, 3)}
OPERATORS = {"a*a-b": 2, "a*c+b*d-e": 3}


def expected_operands(operation, p):
    arity = BRUTE_FORCE[operation].__code__.co_argcount - 1
    ranges = [range(1 if i in NONZERO.get(operation, ()) else 0, p) for i in range(arity)]
    return list(itertools.product(*ranges))


def test_every_registered_operation_has_a_brute_force_check():
    assert set(OPERATIONS) == set(BRUTE_FORCE) | set(ALIASES)
    assert all(OPERATIONS[alias] is OPERATIONS[name] for alias, name in ALIASES.items())


@pytest.mark.parametrize("operation", sorted(BRUTE_FORCE))
@pytest.mark.parametrize("p", [5, 7])
def test_labels_match_brute_force(operation, p):
    inputs, labels = all_examples(operation, p)
    operands = expected_operands(operation, p)
    arity, operators = len(operands[0]), OPERATORS.get(operation, 1)
    assert [tuple(row[:arity]) for row in inputs.tolist()] == operands
    assert labels.tolist() == [BRUTE_FORCE[operation](*row, p) for row in operands]
    assert inputs.dtype == labels.dtype == torch.long
    assert inputs.shape == (len(operands), arity + operators + 1)
    # The neuralgrok layout: operator tokens p, p+1, ... then "=", the last token of the vocabulary.
    assert inputs[:, arity:].tolist() == [list(range(p, p + operators + 1))] * len(operands)
    assert token_layout(operation, p).vocab_size == p + operators + 1


def test_neuralgrok_five_operand_task_has_the_papers_size():
    inputs, labels = all_examples("a*c+b*d-e", 7)
    assert inputs.shape == (12348, 9)
    assert token_layout("a*c+b*d-e", 7).vocab_size == 7 + 4  # numbers, three operators, "="


@pytest.mark.parametrize("alias", sorted(ALIASES))
def test_aliases_give_the_same_examples(alias):
    for got, expected in zip(all_examples(alias, 7), all_examples(ALIASES[alias], 7)):
        assert torch.equal(got, expected)


def test_power_layout_is_a_op_b_equals():
    p = 7
    inputs, labels = all_examples("x^3+xy", p, layout="power")
    pairs = expected_operands("x^3+xy", p)
    assert inputs.tolist() == [[a, p, b, p + 1] for a, b in pairs]
    assert token_layout("x^3+xy", p, "power").vocab_size == p + 2


@pytest.mark.parametrize("offset", [0, 3, 60])
def test_nanda_layout_shifts_the_second_operand(offset):
    p = 7
    inputs, labels = all_examples("a-b", p, layout="nanda", offset=offset)
    assert inputs.tolist() == [[a, b + offset, p + offset] for a, b in expected_operands("a-b", p)]
    assert token_layout("a-b", p, "nanda", offset).vocab_size == p + offset + 1 == int(inputs.max()) + 1


@pytest.mark.parametrize("operation, layout, offset, message", [
    ("a+b", "gpt", 0, "unknown layout"),
    ("a*c+b*d-e", "nanda", 0, "two-operand"),
    ("a+b", "power", 5, "offset"),
    ("a+b", "nanda", -1, "offset"),
])
def test_bad_layouts_are_clear_errors(operation, layout, offset, message):
    with pytest.raises(ValueError, match=message):
        all_examples(operation, 7, layout, offset)


def test_task_data_sizes_follow_the_layout():
    data = modular_task("a*a-b", 11, 0.5, seed=0, layout="neuralgrok")
    assert (data.vocab_size, data.sequence_length, data.num_classes) == (14, 5, 11)
    data = modular_task("a+b", 11, 0.5, seed=0, layout="nanda", offset=20)
    assert (data.vocab_size, data.sequence_length) == (32, 3)


def test_inner_outer_test_split_sizes_and_disjointness():
    inner, outer, test = inner_outer_test_split("a+b", 23, seed=0)
    assert (len(inner), len(outer), len(test)) == (round(0.49 * 529), round(0.01 * 529), 529 - 259 - 5)
    rows = [{tuple(r) for r in split.inputs.tolist()} for split in (inner, outer, test)]
    assert sum(map(len, rows)) == len(set.union(*rows)) == 529
    assert inner.labels.tolist() == [(a + b) % 23 for a, b in inner.inputs[:, :2].tolist()]
    with pytest.raises(ValueError, match="empty split"):
        inner_outer_test_split("a+b", 5, seed=0, outer_fraction=0.01)


def pairs(split, offset):
    return {(a, b - offset) for a, b, _ in split.inputs.tolist()}


@pytest.mark.parametrize("shape", ["rectangle", "strip"])
def test_hold_out_membership_and_sizes(shape):
    p, k, offset = 13, 4, 2
    split = hold_out_split("a+b", p, shape, k, seed=0, train_count=50, offset=offset)
    held = {(i, j) for i in range(p) for j in range(p) if i <= k and (shape == "strip" or j <= k)}
    assert pairs(split.held, offset) == held
    train, rest = pairs(split.train, offset), pairs(split.rest, offset)
    assert len(train) == len(split.train) == 50 and not train & held and not train & rest
    assert train | rest | held == {(i, j) for i in range(p) for j in range(p)}
    assert len(split.test) == len(split.held) + len(split.rest)
    assert split.rest.labels.tolist() == [(a + b - offset) % p for a, b, _ in split.rest.inputs.tolist()]
    assert split.layout.vocab_size == p + offset + 1


def test_hold_out_default_train_count_and_too_few_remaining_pairs():
    assert len(hold_out_split("a+b", 97, "rectangle", 40).train) == 2822  # int(0.3 * 97^2), as in the paper
    small = hold_out_split("a+b", 5, "strip", 3, train_count=100)  # only 5 pairs remain
    assert (len(small.train), len(small.rest)) == (5, 0)


@pytest.mark.parametrize("k, ceiling, anywhere_ceiling", [
    (40, 0.396, 0.396), (50, 0.249, 0.249), (60, 0.102, 0.116), (67, 0.0, 0.118)])
def test_strip_ceilings_of_the_paper(k, ceiling, anywhere_ceiling):
    split = hold_out_split("a+b", 97, "strip", k, seed=0, offset=60)
    # The paper's numbers: first operands 0..k never stand first in a training input.
    assert unseen_first_operand_ceiling(split) == pytest.approx(ceiling, abs=5e-4)
    # As token ids, first operands 60..k also appear in training as second operands 0..k-60.
    assert unseen_first_operand_ceiling(split, anywhere=True) == pytest.approx(anywhere_ceiling, abs=5e-4)


def test_token_layout_is_a_b_op_equals():
    p = 7
    inputs, labels = all_examples("a+b", p)
    assert (inputs[:, 2] == operation_token(p)).all() and (inputs[:, 3] == equals_token(p)).all()
    assert int(inputs.max()) == vocabulary_size(p) - 1 == p + 1
    assert int(labels.max()) < p


def test_split_sizes_are_disjoint_and_cover_everything():
    data = modular_task("a-b", p=23, train_fraction=0.3, seed=1)
    assert len(data.train_labels) == round(0.3 * 23 * 23)
    assert len(data.train_labels) + len(data.test_labels) == 23 * 23
    train_pairs = {tuple(r) for r in data.train_inputs[:, :2].tolist()}
    test_pairs = {tuple(r) for r in data.test_inputs[:, :2].tolist()}
    assert not train_pairs & test_pairs
    assert len(train_pairs | test_pairs) == 23 * 23
    # Labels stay attached to their inputs through the shuffle.
    assert data.train_labels.tolist() == [(a - b) % 23 for a, b in data.train_inputs[:, :2].tolist()]


def test_split_is_deterministic_by_seed_and_ignores_global_rng():
    torch.manual_seed(0)
    first = modular_task("a+b", 11, 0.5, seed=3)
    torch.manual_seed(12345)
    state = torch.get_rng_state()
    again = modular_task("a+b", 11, 0.5, seed=3)
    assert torch.equal(torch.get_rng_state(), state)  # the split drew nothing from the global RNG
    other = modular_task("a+b", 11, 0.5, seed=4)
    assert torch.equal(first.train_inputs, again.train_inputs)
    assert not torch.equal(first.train_inputs, other.train_inputs)


@pytest.mark.parametrize("kwargs, message", [
    ({"operation": "a^b", "p": 7, "train_fraction": 0.5, "seed": 0}, "unknown operation"),
    ({"operation": "a+b", "p": 9, "train_fraction": 0.5, "seed": 0}, "not a prime"),
    ({"operation": "a+b", "p": 7, "train_fraction": 1.0, "seed": 0}, "strictly between"),
    ({"operation": "a+b", "p": 2, "train_fraction": 0.01, "seed": 0}, "empty train"),
    ({"operation": "a*c+b*d-e", "p": 97, "train_fraction": 0.5, "seed": 0}, "in memory"),
])
def test_bad_task_settings_are_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        modular_task(**kwargs)


def test_registering_an_operation_is_one_line():
    register_operation("test:a+2b", lambda a, b, p: a + 2 * b)
    try:
        inputs, labels = all_examples("test:a+2b", 5)
        assert labels.tolist() == [(a + 2 * b) % 5 for a, b in inputs[:, :2].tolist()]
        with pytest.raises(ValueError, match="already registered"):
            register_operation("test:a+2b", lambda a, b, p: a)
    finally:
        del OPERATIONS["test:a+2b"]
