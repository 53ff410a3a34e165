import csv
import dataclasses
import json
import math
import os

import pytest
import torch

from neuralgrok import NeuralGrok, measures
from neuralgrok.storage.files import atomic_write, atomic_write_text, read_toml, to_toml
from neuralgrok.optim.grokfast import Grokfast
from neuralgrok.experiments.data import build_data
from neuralgrok.experiments.models import EmbeddingMLP, NandaTransformer, evaluate
from neuralgrok.experiments.tasks import all_examples, inner_outer_test_split
from neuralgrok.experiments.config import TrainConfig, validate_config
from neuralgrok.experiments.logged_measures import MeasureInput
from neuralgrok.experiments.loop import TrainingBatches, train, trained_model
from neuralgrok.experiments.methods import METHODS, register_method
from neuralgrok.experiments.records import METRIC_COLUMNS, save_model, summarize, summary_table
from neuralgrok.storage.checkpoints import CheckpointError

TINY = dict(task="a+b", p=11, train_fraction=0.5, width=32, depth=1, steps=150, lr=3e-3, weight_decay=0.0,
            eval_every=25, threads=1)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    return train(TrainConfig(**TINY), out_dir=out, progress=False), out


def test_tiny_run_memorises(tiny_run):
    result, _ = tiny_run
    assert result.history[-1]["train_accuracy"] == 1.0
    assert result.summary["memorisation_step"] is not None
    assert result.summary["final_train_accuracy"] == 1.0


def test_run_writes_config_metrics_and_summary(tiny_run):
    result, out = tiny_run
    assert sorted(os.listdir(out)) == ["config.toml", "metrics.csv", "model.pt", "summary.json"]
    assert TrainConfig.from_toml(out / "config.toml") == result.config
    with open(out / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == METRIC_COLUMNS
    assert [int(r["step"]) for r in rows] == list(range(0, 151, 25))
    for row in rows:
        assert all(math.isfinite(float(row[c])) for c in METRIC_COLUMNS)
    assert json.loads((out / "summary.json").read_text()) == result.summary


def test_model_pt_holds_the_final_weights_and_trained_model_loads_them(tiny_run, tmp_path):
    result, out = tiny_run
    step, model = trained_model(out)
    assert step == 150 and not model.training
    final = result.model.state_dict()
    assert model.state_dict().keys() == final.keys()
    assert all(torch.equal(value, final[name]) for name, value in model.state_dict().items())
    data = build_data(result.config, with_outer=False)
    with torch.no_grad():
        assert torch.equal(model(data.test.inputs), result.model.eval()(data.test.inputs))
    with pytest.raises(CheckpointError, match="checkpoint.pt: does not exist"):
        trained_model(out, "checkpoint.pt")  # the tiny run keeps no checkpoint
    # A model whose weights are not finite is not written (a diverged run leaves no model.pt).
    broken = torch.nn.Linear(2, 2)
    with torch.no_grad():
        broken.weight[0, 0] = math.nan
    assert not save_model(tmp_path / "model.pt", 3, broken) and not (tmp_path / "model.pt").exists()
    assert save_model(tmp_path / "model.pt", 3, torch.nn.Linear(2, 2)) and (tmp_path / "model.pt").exists()


def test_trained_model_defaults_to_the_newest_weights_the_run_has(tmp_path):
    # model.pt where the run finished; without it (a run still going, or written before model.pt existed)
    # the last checkpoint; an explicit file is taken as given.
    config = TrainConfig(task="a+b", p=7, steps=5, checkpoint_every=2, threads=1)
    train(config, tmp_path, progress=False)  # checkpoints at steps 2 and 4, the final weights (5) in model.pt
    assert trained_model(tmp_path)[0] == 5
    assert trained_model(tmp_path, "checkpoint.prev.pt")[0] == 2
    (tmp_path / "model.pt").unlink()
    assert trained_model(tmp_path)[0] == 4
    (tmp_path / "checkpoint.pt").unlink()
    with pytest.raises(CheckpointError, match="checkpoint.pt: does not exist"):
        trained_model(tmp_path)


def test_history_values_are_sane(tiny_run):
    result, _ = tiny_run
    first, last = result.history[0], result.history[-1]
    assert last["train_loss"] < first["train_loss"]
    assert 0 < first["grad_age"] and 0 < last["weight_norm"]
    assert all(0 <= row["test_accuracy"] <= 1 for row in result.history)
    walls = [row["wall_time_s"] for row in result.history]
    assert walls == sorted(walls)


def test_same_seed_same_run_different_seed_different_run():
    config = TrainConfig(**dict(TINY, steps=20, eval_every=10))
    runs = [train(config, progress=False), train(config, progress=False),
            train(TrainConfig(**dict(TINY, steps=20, eval_every=10, seed=1)), progress=False)]
    strip = [[{k: v for k, v in row.items() if k != "wall_time_s"} for row in run.history] for run in runs]
    assert strip[0] == strip[1]
    assert strip[0] != strip[2]


def test_minibatches_cover_every_example_once_per_epoch():
    inputs, labels = torch.arange(10).unsqueeze(1), torch.arange(10)
    batches = TrainingBatches(inputs, labels, batch_size=4, seed=0)
    epoch = [next(batches) for _ in range(3)]
    assert [len(b[1]) for b in epoch] == [4, 4, 2]
    assert sorted(torch.cat([b[1] for b in epoch]).tolist()) == list(range(10))
    full = TrainingBatches(inputs, labels, batch_size=0, seed=0)
    assert next(full)[1] is labels


def test_minibatch_training_runs():
    result = train(TrainConfig(**dict(TINY, steps=5, eval_every=5, batch_size=16)), progress=False)
    assert [row["step"] for row in result.history] == [0, 5]


def test_summary_thresholds_and_table():
    history = [{"step": s, "train_accuracy": tr, "test_accuracy": te, "train_loss": 1.0, "test_loss": 2.0}
               for s, tr, te in [(0, 0.1, 0.0), (10, 0.995, 0.2), (20, 1.0, 0.6), (30, 1.0, 0.96)]]
    summary = summarize(TrainConfig(steps=30), history, wall_time_s=1.5)
    assert summary["memorisation_step"] == 10
    assert (summary["steps_to_test_50"], summary["steps_to_test_90"], summary["steps_to_test_95"]) == (20, 30, 30)
    assert summary["steps_to_test_99"] is None
    table = summary_table([summary])
    assert table.splitlines()[0].split()[:2] == ["method", "memorised"]
    assert table.splitlines()[2].split() == ["baseline", "10", "20", "30", "30", "-", "0.960", "1.5"]


@pytest.mark.parametrize("bad, message", [
    ({"method": "nope"}, "method='nope'"), ({"task": "a^b"}, "unknown operation"), ({"p": 15}, "not a prime"),
    ({"width": 30}, "divisible"), ({"steps": -1}, "steps=-1"), ({"betas": (0.9,)}, "betas"),
])
def test_config_validation(bad, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**bad)


def test_registered_method_is_used():
    calls = []

    def build(base_optimizer, model, config, outer):
        calls.append(config.method)
        return base_optimizer

    register_method("test-method", build)
    try:
        train(TrainConfig(**dict(TINY, steps=2, eval_every=1, method="test-method")), progress=False)
        assert calls == ["test-method"]
    finally:
        del METHODS["test-method"]


def test_toml_round_trip(tmp_path):
    values = {"s": 'a "quoted" \\ path\n', "i": -3, "f": 1e-3, "big": 1e20, "t": True, "pair": (0.9, 0.98),
              "inf": math.inf}
    atomic_write_text(tmp_path / "x.toml", to_toml(values))
    back = read_toml(tmp_path / "x.toml")
    assert back == dict(values, pair=[0.9, 0.98])


def test_atomic_write_leaves_no_temporary_files(tmp_path):
    target = tmp_path / "file.txt"
    atomic_write_text(target, "first")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as f:
            f.write("half of the second")
            raise RuntimeError("killed")
    assert target.read_text() == "first"
    atomic_write_text(target, "second")
    assert target.read_text() == "second"
    assert os.listdir(tmp_path) == ["file.txt"]


@pytest.mark.parametrize("method, expected", [
    ("grokfast-ema", {"mode": "ema", "alpha": 0.9, "lamb": 3.0}),
    ("grokfast-ma", {"mode": "ma", "window": 7, "lamb": 4.0}),
])
def test_grokfast_methods_wrap_adamw_with_the_configs_hyperparameters(method, expected):
    config = TrainConfig(method=method, ema_alpha=0.9, ema_lamb=3.0, ma_window=7, ma_lamb=4.0)
    model = torch.nn.Linear(2, 2)
    base = torch.optim.AdamW(model.parameters())
    optimizer = METHODS[method].build(base, model, config, None)
    assert isinstance(optimizer, Grokfast) and optimizer.base_optimizer is base
    assert optimizer.mode == expected.pop("mode")
    assert optimizer.filter.hyperparameters() == expected


def test_thread_count_is_restored_after_a_run():
    before = torch.get_num_threads()
    train(TrainConfig(**dict(TINY, steps=1, eval_every=1, threads=before + 1)), progress=False)
    assert torch.get_num_threads() == before


def test_neuralgrok_method_holds_out_an_outer_split_and_saves_its_amplifier(tmp_path):
    config = TrainConfig(**dict(TINY, steps=4, eval_every=2, method="neuralgrok", meta_every=2, outer_fraction=0.05))
    result = train(config, out_dir=tmp_path / "ng", progress=False)
    optimizer = result.optimizer
    assert isinstance(optimizer, NeuralGrok) and optimizer.meta_steps == 2
    assert result.summary["steps"] == 4
    saved = torch.load(tmp_path / "ng" / "amplifier.pt")
    assert all(torch.equal(saved[k], v) for k, v in optimizer.amplifier.state_dict().items())

    # Transfer: the saved amplifier, frozen, on a fresh run (no outer split, no meta steps).
    transfer = train(TrainConfig(**dict(TINY, steps=3, eval_every=1, method="neuralgrok",
                                        amplifier_path=str(tmp_path / "ng" / "amplifier.pt"))), progress=False)
    assert transfer.optimizer.meta_steps == 0 and not transfer.optimizer.train_amplifier
    assert all(torch.equal(saved[k], v) for k, v in transfer.optimizer.amplifier.state_dict().items())


def test_neuralgrok_split_is_the_tasks_inner_outer_test_split():
    config = TrainConfig(**dict(TINY, method="neuralgrok", outer_fraction=0.05))
    data = build_data(config, with_outer=True)
    inner, outer, test = inner_outer_test_split("a+b", 11, seed=0, inner_fraction=0.45, outer_fraction=0.05)
    for got, expected in ((data.train, inner), (data.outer, outer), (data.test, test)):
        assert torch.equal(got.inputs, expected.inputs) and torch.equal(got.labels, expected.labels)
    assert (len(data.train), len(data.outer), len(data.test)) == (54, 6, 61)  # round(0.45 * 121), round(0.05 * 121)


def test_neuralgrok_config_errors():
    with pytest.raises(ValueError, match="meta_mode"):
        TrainConfig(method="neuralgrok", meta_mode="slow")
    with pytest.raises(ValueError, match="outer_fraction"):
        TrainConfig(method="neuralgrok", outer_fraction=0.6, train_fraction=0.5)
    config = TrainConfig(method="neuralgrok", amplifier_path="/nonexistent/amplifier.pt")  # may exist where it runs
    with pytest.raises(ValueError, match="amplifier_path='/nonexistent/amplifier.pt' is not a file"):
        validate_config(config)  # the check before a run: the files too


@pytest.mark.parametrize("bad, message", [
    ({"model": "cnn"}, "model='cnn' is not one of"),
    ({"layout": "nanda", "embedding_init": "onehot_fixed", "width": 64},
     "embedding_init='onehot_fixed' needs width >= the vocabulary size 98"),
    ({"operand_offset": 60}, "operand_offset=60 needs layout='nanda'"),
    ({"split": "strip"}, "split='strip' needs holdout_k in 1..p-2"),
    ({"holdout_k": 40}, "holdout_k=40 is set but split='random'"),
    ({"split": "rectangle", "holdout_k": 3, "task": "a*c+b*d-e", "p": 7}, r"task='a\*c\+b\*d-e' has 5 operands"),
    ({"split": "strip", "holdout_k": 40, "method": "neuralgrok"}, "outer split of split='random' only"),
    ({"momentum": 0.9}, "momentum=0.9 is for optimizer='sgd'"),
    ({"loss": "hinge"}, "loss='hinge' is not one of"),
    ({"measures": "med,magic"}, r"measures \['magic'\] unknown; choose from \['excluded_loss'"),
    ({"measures": "restricted_loss", "task": "a*b"}, "measure 'restricted_loss' does not apply: .*task='a\\*b'"),
    ({"measures": "hidden_med"}, "measure 'hidden_med' does not apply: it needs model='mlp'.*for this config are"),
    ({"measures": "restricted_loss", "layout": "nanda", "model": "nanda", "embedding_init": "onehot_fixed",
      "width": 128}, "measure 'restricted_loss' does not apply: with embedding_init='onehot_fixed' .*model='nanda'"),
])
def test_invalid_combinations_name_the_fields(bad, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**bad)


def test_models_and_optimizers_are_the_configs():
    result = train(TrainConfig(**dict(TINY, steps=2, eval_every=1, model="nanda", layout="nanda", mlp_width=16,
                                      optimizer="sgd", momentum=0.5, lr=0.1)), progress=False)
    assert isinstance(result.model, NandaTransformer) and result.model.blocks[0].mlp[0].out_features == 16
    assert isinstance(result.optimizer, torch.optim.SGD) and result.optimizer.defaults["momentum"] == 0.5
    adam = train(TrainConfig(**dict(TINY, steps=1, eval_every=1, optimizer="adam", weight_decay=0.1)), progress=False)
    assert type(adam.optimizer) is torch.optim.Adam and adam.optimizer.defaults["weight_decay"] == 0.1


def test_fixed_one_hot_embedding_stays_the_identity_and_hidden_med_is_logged():
    config = TrainConfig(**dict(TINY, steps=3, eval_every=1, model="mlp", layout="nanda", embedding_init="onehot_fixed",
                                mlp_width=16, measures="hidden_med,med", weight_decay=1.0))
    result = train(config, progress=False)
    assert isinstance(result.model, EmbeddingMLP)
    assert torch.equal(result.model.token_embedding.weight, torch.eye(12, 32))  # vocabulary p + 1 = 12
    assert all(row["med"] == pytest.approx(math.sqrt(2)) for row in result.history)
    diagonal = torch.tensor([[i, i, 11] for i in range(11)])
    expected = measures.hidden_layer_med(result.model.first_hidden, diagonal).value
    assert result.history[-1]["hidden_med"] == pytest.approx(expected)
    assert result.history[0]["hidden_med"] != result.history[-1]["hidden_med"]


def test_key_frequencies_of_a_fixed_one_hot_mlp_come_from_its_first_layer():
    # The frozen identity embedding has a flat spectrum (at p = 97 no frequency passes key_frequencies' 5% share:
    # the restricted loss would be ln p at every step; at p = 11 all do); the first layer's columns on the first
    # operand are what the model makes of each residue.
    p, k = 11, 3
    config = TrainConfig(**dict(TINY, model="mlp", layout="nanda", embedding_init="onehot_fixed", mlp_width=16,
                                measures="restricted_loss,excluded_loss"))
    model = EmbeddingMLP(vocab_size=12, num_classes=p, width=32, hidden=16, embedding="onehot_fixed")
    flat = measures.fourier_norms(model.token_embedding.weight, p)[1:]  # every frequency alike: none stands out
    assert torch.allclose(flat, flat[0].expand_as(flat))
    residues = torch.arange(p, dtype=torch.float64)
    with torch.no_grad():
        model.mlp[0].weight.zero_()
        for row in range(16):  # each hidden unit a cosine of frequency k in the first operand, its own phase
            model.mlp[0].weight[row, :p] = torch.cos(2 * math.pi * k * residues / p + row).float()
    seen = MeasureInput(model, config, data=None, inputs=None, logits=torch.zeros(0))
    assert seen.key_frequencies() == [k]
    # In a run: the logged losses use those frequencies.
    config = dataclasses.replace(config, steps=3, eval_every=3, weight_decay=1.0)
    result = train(config, progress=False)
    inputs, _ = all_examples("a+b", p, layout="nanda")
    table = measures.logit_table(result.model.eval(), inputs, p)
    effective = result.model.token_embedding.weight @ result.model.mlp[0].weight[:, :32].T
    keys = measures.key_frequencies(measures.fourier_norms(effective, p))
    assert keys and result.history[-1]["restricted_loss"] == pytest.approx(measures.restricted_loss(table, keys),
                                                                           rel=1e-5)
    assert result.history[-1]["restricted_loss"] != pytest.approx(math.log(p))


def test_med_measures_the_layouts_operand_ranges():
    config = TrainConfig(**dict(TINY, steps=2, eval_every=2, model="nanda", layout="nanda", operand_offset=5,
                                mlp_width=16, measures="med,weight_age"))
    result = train(config, progress=False)
    embedding = result.model.token_embedding.weight
    assert result.history[-1]["med"] == pytest.approx(measures.med(embedding, 11, ranges=(0, 5)).value)
    assert result.history[-1]["med"] != pytest.approx(measures.med(embedding, 11).value)
    assert result.history[-1]["weight_age"] == pytest.approx(measures.weight_age(result.model))


def test_full_batch_train_metrics_from_the_step_equal_an_evaluation():
    result = train(TrainConfig(**dict(TINY, steps=30, eval_every=10, loss="mse")), progress=False)
    data = build_data(result.config, with_outer=False)
    loss, accuracy = evaluate(result.model, data.train.inputs, data.train.labels, loss="mse")
    assert result.history[-1]["train_loss"] == pytest.approx(loss, rel=1e-5)
    assert result.history[-1]["train_accuracy"] == accuracy


def test_restricted_and_excluded_loss_use_every_pair():
    config = TrainConfig(**dict(TINY, steps=2, eval_every=2, measures="restricted_loss,excluded_loss",
                                method="neuralgrok", outer_fraction=0.05))
    result = train(config, progress=False)
    inputs, _ = all_examples("a+b", 11)
    table = measures.logit_table(result.model.eval(), inputs, 11)
    keys = measures.key_frequencies(measures.fourier_norms(result.model.token_embedding.weight, 11))
    train_pairs = build_data(config, with_outer=True).train.inputs[:, :2]
    assert result.history[-1]["restricted_loss"] == pytest.approx(measures.restricted_loss(table, keys), rel=1e-5)
    assert result.history[-1]["excluded_loss"] == pytest.approx(measures.excluded_loss(table, keys, train_pairs),
                                                                rel=1e-5)
