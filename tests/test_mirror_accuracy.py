"""bench/mirror_accuracy.py (the README's check of the p = 97 x^2+xy+y^2 base run): the test pairs split by
whether their mirror was trained, counted and scored as a brute-force pass over the pairs does."""
import math
import sys
from pathlib import Path

import pytest
import torch

from neuralgrok.experiments.config import TrainConfig
from neuralgrok.experiments.data import build_data
from neuralgrok.experiments.loop import train, trained_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from mirror_accuracy import PARTS, by_mirror  # noqa: E402


@pytest.mark.parametrize("layout,offset", [("nanda", 0), ("nanda", 4), ("neuralgrok", 0)])
def test_parts_match_a_brute_force_pass(tmp_path, layout, offset):
    config = TrainConfig(task="x^2+xy+y^2", p=11, layout=layout, operand_offset=offset,
                         train_fraction=0.5, steps=30, lr=3e-3, checkpoint_every=0, threads=1)
    train(config, tmp_path, progress=False)
    step, parts = by_mirror(tmp_path)
    assert step == 30 and tuple(parts) == PARTS
    data = build_data(config, with_outer=False, progress=False)
    _, model = trained_model(tmp_path)
    with torch.no_grad():
        predicted = model(data.test.inputs).argmax(-1).tolist()
    train_pairs = {(row[0], row[1] - offset) for row in data.train.inputs.tolist()}
    counts = {name: [0, 0] for name in PARTS}
    for row, guess, label in zip(data.test.inputs.tolist(), predicted, data.test.labels.tolist()):
        a, b = row[0], row[1] - offset  # the second operand's tokens start at the offset (nanda)
        name = "diagonal" if a == b else "mirror trained" if (b, a) in train_pairs else "mirror not trained"
        counts[name][0] += 1
        counts[name][1] += guess == label
    assert {name: part["pairs"] for name, part in parts.items()} == {name: n for name, (n, _) in counts.items()}
    assert sum(n for n, _ in counts.values()) == len(data.test.labels) == 121 - len(train_pairs)
    assert counts["mirror trained"][0] > 0 and counts["mirror not trained"][0] > 0 and counts["diagonal"][0] > 0
    for name, (n, hits) in counts.items():
        assert parts[name]["accuracy"] == pytest.approx(hits / n)


def test_only_two_operand_tasks(tmp_path):
    train(TrainConfig(task="a*c+b*d-e", p=3, steps=2, threads=1, checkpoint_every=0), tmp_path, progress=False)
    with pytest.raises(ValueError, match="not a two-operand task"):
        by_mirror(tmp_path)


def test_an_empty_part_has_no_accuracy(tmp_path):
    # All pairs trained but one: the test set is a single pair.
    config = TrainConfig(task="a+b", p=3, layout="nanda", train_fraction=8 / 9, steps=2, checkpoint_every=0,
                         threads=1)
    train(config, tmp_path, progress=False)
    _, parts = by_mirror(tmp_path)
    assert sum(part["pairs"] for part in parts.values()) == 1
    assert sum(math.isnan(part["accuracy"]) for part in parts.values()) == 2
