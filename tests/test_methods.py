"""The method records (neuralgrok.experiments.methods) and the `clip` control, the example of a method added by
one file (neuralgrok/optim/clip.py) plus its registration, with no edit to the loop."""
import dataclasses
import math

import pytest
import torch

import neuralgrok
from neuralgrok.experiments.config import TrainConfig
from neuralgrok.experiments.loop import train
from neuralgrok.experiments.methods import METHODS, Method, register_method, unread_options, uses_outer_split
from neuralgrok.experiments.records import same_config
from neuralgrok.optim.clip import ClipGradNorm

TINY = dict(task="a+b", p=11, train_fraction=0.5, width=32, depth=1, steps=30, batch_size=16, lr=3e-3,
            weight_decay=0.0, eval_every=5, threads=1)


def gradients(model):
    return [p.grad.clone() for p in model.parameters()]


def test_clip_scales_the_global_norm_down_to_the_limit_and_leaves_smaller_gradients_alone():
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 3)
    x, y = torch.randn(32, 8), torch.randint(3, (32,))
    for limit in (1e-3, 1e3):
        opt = ClipGradNorm(torch.optim.SGD(model.parameters(), lr=0.0), clip_grad_norm=limit)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        raw = gradients(model)
        raw_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in raw]))
        opt.step()  # lr 0: only the gradients change
        clipped = gradients(model)
        if raw_norm > limit:
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in clipped]))
            assert norm.item() == pytest.approx(limit, rel=1e-5)
            for before, after in zip(raw, clipped):  # one factor for every tensor: the direction is kept
                torch.testing.assert_close(after, before * (limit / raw_norm), rtol=1e-5, atol=0)
        else:
            assert all(torch.equal(a, b) for a, b in zip(raw, clipped))


@pytest.mark.parametrize("limit", [0.0, -1.0, math.inf, math.nan, True, "1"])
def test_clip_refuses_a_limit_that_is_not_a_positive_number(limit):
    with pytest.raises(ValueError, match="clip_grad_norm"):
        ClipGradNorm(torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1), clip_grad_norm=limit)


def test_clip_is_registered_as_a_record_and_exported():
    record = METHODS["clip"]
    assert isinstance(record, Method) and record.options == ("clip_grad_norm",)
    assert not uses_outer_split(TrainConfig(method="clip"))
    assert neuralgrok.ClipGradNorm is ClipGradNorm
    model = torch.nn.Linear(2, 2)
    optimizer = record.build(torch.optim.AdamW(model.parameters()), model, TrainConfig(method="clip",
                                                                                      clip_grad_norm=0.5), None)
    assert isinstance(optimizer, ClipGradNorm) and optimizer.clip_grad_norm == 0.5


def test_a_clip_no_gradient_reaches_trains_exactly_as_the_baseline():
    histories = {method: train(TrainConfig(**TINY, method=method, clip_grad_norm=1e9), progress=False).history
                 for method in ("baseline", "clip")}
    for column in ("train_loss", "train_accuracy", "test_loss", "test_accuracy", "grad_age", "weight_norm"):
        assert [row[column] for row in histories["clip"]] == [row[column] for row in histories["baseline"]], column
    # The AGE of the gradient each step took: the same, but for the last row, where a transform takes no step
    # (the baseline's row shows the raw gradient's there).
    stepped = [[row["step_grad_age"] for row in histories[method][:-1]] for method in ("clip", "baseline")]
    assert stepped[0] == stepped[1] and math.isnan(histories["clip"][-1]["step_grad_age"])


def test_a_tight_clip_changes_training_and_leaves_no_artifact(tmp_path):
    clipped = train(TrainConfig(**TINY, method="clip", clip_grad_norm=1e-3), tmp_path / "clip", progress=False)
    baseline = train(TrainConfig(**TINY), progress=False)
    assert clipped.history[-1]["train_loss"] != baseline.history[-1]["train_loss"]
    assert not (tmp_path / "clip" / "amplifier.pt").exists() and (tmp_path / "clip" / "summary.json").exists()


def test_a_method_record_says_what_the_loop_gives_it_and_what_the_run_keeps(tmp_path):
    seen = {}

    def build(base_optimizer, model, config, outer):
        seen["outer"] = None if outer is None else len(outer)
        return base_optimizer

    register_method("test-outer", build, outer_split=True, artifacts=lambda optimizer: {"extra.pt": {"x": 1}})
    try:
        result = train(TrainConfig(**TINY, method="test-outer", outer_fraction=0.1), tmp_path / "run", progress=False)
    finally:
        del METHODS["test-outer"]
    assert seen["outer"] == int(0.1 * 121)  # the outer split the record asked for, held out of training
    assert torch.load(tmp_path / "run" / "extra.pt") == {"x": 1}
    assert result.summary["method"] == "test-outer"


# A valid value other than the default for every method-only field (amplifier_path is left out: only neuralgrok,
# which reads it, may set it).
OTHER_VALUES = dict(ema_alpha=0.5, ema_lamb=3.0, ma_window=3, ma_lamb=1.5, amplifier_hidden=(16,),
                    amplifier_rescale=2.0, meta_every=2, meta_mode="fast", meta_lr=1e-2, meta_weight_decay=0.0,
                    virtual_lr=1e-2, virtual_lr_warmup=True, clip_grad_norm=0.05, outer_fraction=0.05)
BUILT_IN = ("baseline", "grokfast-ema", "grokfast-ma", "neuralgrok", "neuralgrok-frozen", "normalize", "normalize-clip",
            "clip")


def logged(config):
    return [{k: v for k, v in row.items() if k != "wall_time_s"} for row in train(config, progress=False).history]


def test_every_method_only_field_has_another_value_in_this_test():
    method_only = {f.name for f in dataclasses.fields(TrainConfig) if f.metadata.get("method_option")}
    assert method_only == set(OTHER_VALUES) | {"amplifier_path"}
    assert set(BUILT_IN) <= set(METHODS)


@pytest.mark.parametrize("method", BUILT_IN)
def test_a_method_trains_the_same_run_whatever_its_unread_options_and_another_with_its_own_changed(method):
    # What same_config relies on: unread_options(config) are fields the method's run never reads.
    config = TrainConfig(**TINY, method=method)
    unread = unread_options(config) - {"amplifier_path"}
    own = set(OTHER_VALUES) - unread
    assert own == set(METHODS[method].options) - {"amplifier_path"}
    assert logged(dataclasses.replace(config, **{name: OTHER_VALUES[name] for name in unread})) == logged(config)
    if own:
        assert logged(dataclasses.replace(config, **{name: OTHER_VALUES[name] for name in own})) != logged(config)


def test_same_config_ignores_exactly_the_fields_the_method_does_not_read(tmp_path):
    baseline = TrainConfig(**TINY)
    assert same_config(baseline, dataclasses.replace(baseline, amplifier_hidden=(16,), ema_alpha=0.5), tmp_path)
    assert not same_config(baseline, dataclasses.replace(baseline, lr=1e-2), tmp_path)
    assert not same_config(baseline, dataclasses.replace(baseline, method="clip"), tmp_path)
    neuralgrok_run = dataclasses.replace(baseline, method="neuralgrok")
    assert not same_config(neuralgrok_run, dataclasses.replace(neuralgrok_run, amplifier_hidden=(16,)), tmp_path)
    assert same_config(neuralgrok_run, dataclasses.replace(neuralgrok_run, ema_alpha=0.5), tmp_path)
