import pytest
import torch

from neuralgrok.tasks import (OPERATIONS, all_examples, equals_token, modular_task, operation_token,
                              register_operation, vocabulary_size)

BRUTE_FORCE = {
    "a+b": lambda a, b, p: (a + b) % p,
    "a-b": lambda a, b, p: (a - b) % p,
    "a*b": lambda a, b, p: (a * b) % p,
    # Division by search, independent of the Fermat inverse used by the task.
    "a/b": lambda a, b, p: next(c for c in range(p) if (c * b) % p == a),
    "a*a-b": lambda a, b, p: (a * a - b) % p,
    "x^2+xy+y^2": lambda a, b, p: (a * a + a * b + b * b) % p,
}


def test_every_registered_operation_has_a_brute_force_check():
    assert set(OPERATIONS) == set(BRUTE_FORCE)


@pytest.mark.parametrize("operation", sorted(BRUTE_FORCE))
@pytest.mark.parametrize("p", [5, 13])
def test_labels_match_brute_force(operation, p):
    inputs, labels = all_examples(operation, p)
    nonzero_b = operation in ("a*b", "a/b")
    expected_pairs = [(a, b) for a in range(p) for b in range(p) if not (nonzero_b and b == 0)]
    assert [tuple(row[:2]) for row in inputs.tolist()] == expected_pairs
    assert labels.tolist() == [BRUTE_FORCE[operation](a, b, p) for a, b in expected_pairs]
    assert inputs.dtype == labels.dtype == torch.long
    assert inputs.shape == (len(expected_pairs), 4)


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
