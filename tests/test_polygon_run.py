"""The polygon task in the runner (``--task polygons --model resnet18``): tiny runs end to end and
resumed, evaluation in eval mode (batch norm), the L2 weight decay of Adam, and the field checks."""
import csv
import json
import shutil

import pytest
import torch

from neuralgrok.storage.checkpoints import read_checkpoint
from neuralgrok.experiments.data import IMAGE_DEFAULTS, TOKEN_DEFAULTS, build_data
from neuralgrok.experiments.loop import depends_on_mode
from neuralgrok.experiments.methods import build_base_optimizer
from neuralgrok.experiments.models import build_model
from neuralgrok.experiments.models import evaluate
from neuralgrok.experiments.polygons import NUM_CLASSES, polygon_split
from neuralgrok.experiments.resnet import ResNet
from neuralgrok.experiments.config import TrainConfig
from neuralgrok.experiments.loop import Evaluator, resume, seed_everything, train
from neuralgrok.experiments.records import CHECKPOINT, METRIC_COLUMNS

# 16 px and 48 of the 14,641 images (12 train, 36 test), batches of 5: a ResNet-18 step is cheap,
# and a checkpoint at step 7 falls in the middle of an epoch (3 batches).
TINY = dict(task="polygons", model="resnet18", image_size=16, image_count=48, train_fraction=0.25,
            optimizer="adam", weight_decay=1e-4, betas=(0.9, 0.999), warmup_steps=0, batch_size=5,
            steps=8, eval_every=4, checkpoint_every=7, measures="weight_age", threads=1)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("polygons")
    return train(TrainConfig(**TINY), out, progress=False), out


def test_tiny_polygon_run_writes_metrics_summary_and_checkpoint(tiny_run):
    result, out = tiny_run
    assert isinstance(result.model, ResNet) and result.model.fc.out_features == NUM_CLASSES
    assert type(result.optimizer) is torch.optim.Adam and result.optimizer.defaults["weight_decay"] == 1e-4
    with open(out / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(METRIC_COLUMNS) + ["weight_age"]
    assert [int(row["step"]) for row in rows] == [0, 4, 8]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["final_test_accuracy"] == result.history[-1]["test_accuracy"]
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert read_checkpoint(out / CHECKPOINT)["step"] == 7  # the runner's own reader (numpy RNG state inside)
    assert TrainConfig.from_toml(out / "config.toml") == result.config


def test_image_count_keeps_a_seeded_subset_of_the_split():
    data = build_data(TrainConfig(**TINY), with_outer=False)
    train_x, train_y, test_x, test_y = polygon_split(16, 0.25, seed=0)
    assert (len(data.train), len(data.test)) == (12, 36) and data.layout is None
    assert torch.equal(data.train.inputs, train_x[:12]) and torch.equal(data.test.labels, test_y[:36])


def test_resumed_polygon_run_has_the_metrics_of_an_uninterrupted_one(tiny_run, tmp_path):
    _, whole = tiny_run
    for name in ("config.toml", CHECKPOINT):
        shutil.copy(whole / name, tmp_path / name)
    resume(tmp_path, progress=False)

    def rows(run_dir):
        with open(run_dir / "metrics.csv", newline="") as f:
            return [{k: v for k, v in row.items() if k != "wall_time_s"} for row in csv.DictReader(f)]

    assert rows(tmp_path) == rows(whole)


def test_evaluation_runs_in_eval_mode_and_restores_training_mode():
    config = TrainConfig(**TINY)
    data = build_data(config, with_outer=False)
    model = build_model(config, data.layout, data.sequence_length)
    before = {name: value.clone() for name, value in model.state_dict().items()}  # batch norm's running stats too
    metrics, logits = Evaluator(data, config.loss, train_from_step=False, all_pairs=False, chunk=7)(model)
    assert model.training
    assert all(torch.equal(value, before[name]) for name, value in model.state_dict().items())
    model.eval()
    with torch.no_grad():
        expected = model(torch.cat([data.train.inputs, data.test.inputs]))
    assert torch.allclose(logits, expected, atol=1e-5)
    assert metrics["test_loss"] == pytest.approx(evaluate(model, data.test.inputs, data.test.labels)[0], rel=1e-5)


def test_full_batch_train_metrics_of_a_batch_norm_model_come_from_eval_mode():
    # batch_size 0: the training step's forward (batch statistics) must not stand in for the evaluation.
    config = TrainConfig(**dict(TINY, batch_size=0, steps=0, checkpoint_every=0))
    result = train(config, progress=False)
    seed_everything(config.seed)
    data = build_data(config, with_outer=False)
    fresh = build_model(config, data.layout, data.sequence_length)  # the run's initial weights
    loss, accuracy = evaluate(fresh, data.train.inputs, data.train.labels)
    assert depends_on_mode(fresh) and not depends_on_mode(torch.nn.Linear(2, 2))
    assert result.history[0]["train_loss"] == pytest.approx(loss, rel=1e-5)
    assert result.history[0]["train_accuracy"] == accuracy


def test_adam_weight_decay_is_an_l2_term_in_the_gradient():
    def one_step(optimizer_name, weight_decay, gradient):
        weight = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
        optimizer = build_base_optimizer(TrainConfig(optimizer=optimizer_name, weight_decay=weight_decay, lr=0.1),
                                         [weight])
        for _ in range(3):  # the same gradient each step, so Adam's moments do not reduce it to its sign
            weight.grad = gradient(weight.detach().clone())
            optimizer.step()
        return weight.detach()

    raw = torch.tensor([0.5, 0.1, -0.2])
    l2 = one_step("adam", 0.3, lambda w: raw.clone())
    assert torch.allclose(l2, one_step("adam", 0.0, lambda w: raw + 0.3 * w))
    assert not torch.allclose(l2, one_step("adamw", 0.3, lambda w: raw.clone()))


def test_the_task_kinds_defaults_are_the_configs():
    defaults = TrainConfig()
    assert {name: getattr(defaults, name) for name in {**TOKEN_DEFAULTS, **IMAGE_DEFAULTS}} == {
        **TOKEN_DEFAULTS, **IMAGE_DEFAULTS}


def test_polygons_need_no_prime():
    assert TrainConfig(task="polygons", model="resnet18", p=100).p == 100


POLYGONS = dict(task="polygons", model="resnet18")


@pytest.mark.parametrize("bad, message", [
    ({"task": "polygons"}, "task='polygons' and model='transformer' do not go together"),
    ({"model": "resnet18"}, "task='a\\+b' and model='resnet18' do not go together"),
    (dict(POLYGONS, layout="nanda"), "layout='nanda' is for the modular tasks' tokens"),
    (dict(POLYGONS, layout="nanda", operand_offset=60), "operand_offset=60 is for the modular tasks' tokens"),
    (dict(POLYGONS, split="strip", holdout_k=40), "split='strip' is for .*holdout_k=40 is for"),
    (dict(POLYGONS, embedding_init="toeplitz"), "embedding_init='toeplitz' is for the modular tasks' tokens"),
    (dict(POLYGONS, measures="med"), "measure 'med' does not apply: it measures a modular task's tokens.*"
                                     r"for this config are \['weight_age'\]"),
    (dict(POLYGONS, measures="restricted_loss"), "measure 'restricted_loss' does not apply"),
    (dict(POLYGONS, image_size=31), "image_size=31 must be even"),
    (dict(POLYGONS, image_size=8), "image_size=8 must be even and at least 16"),
    (dict(POLYGONS, image_count=20000), "image_count=20000 must be in 0..14641"),
    (dict(POLYGONS, image_count=10, train_fraction=0.01), "train_fraction=0.01 leaves an empty train"),
    (dict(POLYGONS, method="neuralgrok"), "task='polygons' has none"),
    (dict(POLYGONS, weights_path="/nonexistent/resnet18.pth"), "weights_path='/nonexistent/resnet18.pth' is not"),
    (dict(POLYGONS, weight_decay=-1.0), "weight_decay=-1.0 must not be negative"),
    ({"image_size": 32}, "image_size=32 is for task='polygons'"),
    ({"faithful": True}, "faithful=True is for task='polygons'"),
])
def test_polygon_field_combinations_are_checked(bad, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**bad)
