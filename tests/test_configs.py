"""The shipped paper configs: each loads with ``neuralgrok run --config`` and runs end to end at
reduced size, writing the columns and summary keys its setup calls for; the strip configs' splits
have the paper's test-accuracy ceilings."""
import csv
import dataclasses
import json
from pathlib import Path

import pytest
import torch

from neuralgrok.experiments import cli
from neuralgrok.experiments.data import build_data
from neuralgrok.storage.files import read_toml
from neuralgrok.experiments.tasks import unseen_first_operand_ceiling
from neuralgrok.experiments.config import TrainConfig
from neuralgrok.experiments.records import METRIC_COLUMNS, TEST_ACCURACY_THRESHOLDS
from neuralgrok.experiments.sweeps import load_sweeps

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
NEURALGROK = ["add", "sub", "mul", "square_sub", "poly7"]
GROKKING_INSIGHT = (["base_add", "base_sub", "base_x2xyy2", "mlp", "mse", "onehot", "toeplitz", "toeplitz_control",
                     "polygons_resnet18"]
                    + [f"{shape}_k{k}" for shape in ("rectangle", "strip") for k in (40, 50, 60, 67)])
SHIPPED = ([CONFIGS / "neuralgrok" / f"{name}.toml" for name in NEURALGROK]
           + [CONFIGS / "grokking_insight" / f"{name}.toml" for name in GROKKING_INSIGHT])


def test_the_shipped_configs_are_these():
    found = sorted(CONFIGS.glob("neuralgrok/*.toml")) + sorted(CONFIGS.glob("grokking_insight/*.toml"))
    assert sorted(found) == sorted(SHIPPED)


REDUCED = ("steps", "eval_every", "checkpoint_every", "mlp_width", "amplifier_hidden", "width", "p", "image_size",
           "image_count")


def reduced_flags(values):
    """Flags shrinking a config to a few cheap steps: width 16 (with p = 11 where the one-hot or
    Toeplitz embedding needs width >= vocabulary), p = 5 for NeuralGrok's five-operand task,
    40 images of 16 pixels for the polygons."""
    flags = ["--steps", "2", "--eval-every", "2", "--checkpoint-every", "0", "--mlp-width", "16",
             "--amplifier-hidden", "8", "--width", "16"]
    if values.get("embedding_init", "default") not in ("default", "gaussian"):
        flags += ["--p", "11"]
    if values["task"] == "a*c+b*d-e":  # 12,348 examples at p = 7; 2,000 at p = 5
        flags += ["--p", "5"]
    if values["task"] == "polygons":
        flags += ["--image-size", "16", "--image-count", "40"]
    return flags


@pytest.mark.parametrize("path", SHIPPED, ids=lambda path: f"{path.parent.name}/{path.stem}")
def test_config_runs_end_to_end_at_reduced_size(path, tmp_path, capsys):
    values = read_toml(path)
    out = tmp_path / "run"
    assert cli.main(["run", "--config", str(path), *reduced_flags(values), "--quiet", "--out", str(out)]) == 0
    assert "memorised" in capsys.readouterr().out
    config = TrainConfig.from_toml(out / "config.toml")
    kept = {key: value for key, value in TrainConfig.typed_values(values).items() if key not in REDUCED}
    assert {key: getattr(config, key) for key in kept} == kept
    assert config.steps == 2

    with open(out / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    parts = ["test_held_loss", "test_held_accuracy", "test_rest_loss", "test_rest_accuracy"]
    expected_columns = list(METRIC_COLUMNS) + (parts if config.split != "random" else []) + config.measure_names()
    assert list(rows[0]) == expected_columns
    assert [int(row["step"]) for row in rows] == [0, 2]

    summary = json.loads((out / "summary.json").read_text())
    for threshold in TEST_ACCURACY_THRESHOLDS:
        assert f"steps_to_test_{round(threshold * 100)}" in summary
    assert summary["peak_rss_mib"] > 0 and summary["build"]["torch_version"] == torch.__version__
    if config.split != "random":
        assert all(f"final_{part}" in summary for part in parts)
        data = build_data(config, with_outer=False)
        held, rest = len(data.test_parts["held"]), len(data.test_parts["rest"])
        last = {key: float(value) for key, value in rows[-1].items()}
        if rest:  # the whole test accuracy is the size-weighted mean of its parts'
            assert last["test_accuracy"] == pytest.approx(
                (held * last["test_held_accuracy"] + rest * last["test_rest_accuracy"]) / (held + rest), abs=1e-6)
        else:  # strip k = 67: every remaining pair trains
            assert summary["final_test_rest_accuracy"] is None and last["test_accuracy"] == last["test_held_accuracy"]
    if config.method == "neuralgrok":
        assert (out / "amplifier.pt").is_file()


@pytest.mark.parametrize("k, ceiling", [(40, 0.396), (50, 0.249), (60, 0.102), (67, 0.0)])
def test_strip_configs_have_the_papers_test_accuracy_ceilings(k, ceiling):
    config = TrainConfig.from_toml(CONFIGS / "grokking_insight" / f"strip_k{k}.toml")
    data = build_data(config, with_outer=False)
    assert len(data.train) == min(2822, (96 - k) * 97)  # k = 67: all 2,813 remaining pairs train
    assert unseen_first_operand_ceiling(data) == pytest.approx(ceiling, abs=5e-4)
    held_first = data.test_parts["held"].inputs[:, 0]
    assert len(held_first) == (k + 1) * 97 and held_first.max() == k
    assert data.train.inputs[:, 0].min() == k + 1  # no first operand 0..k trains
    assert data.train.inputs[:, 1].min() >= 60  # second operands are shifted by the offset


# Gu et al. at p = 97 (issue 17): each run of configs/sweep-gu-p97-*.toml is one of the configs above.
GU_P97 = {"base": {"seed=0,task=a+b": "base_add", "seed=0,task=a-b": "base_sub",
                   "seed=0,task=x%5E2+xy+y%5E2": "base_x2xyy2", "seed=1,task=a+b": "base_add",
                   "seed=2,task=a+b": "base_add"},
          "rectangle": {f"holdout_k={k}": f"rectangle_k{k}" for k in (40, 50, 60, 67)},
          "strip": {f"holdout_k={k}": f"strip_k{k}" for k in (40, 50, 60, 67)},
          "variants": {"model=mlp": "mlp", "embedding_init=onehot_fixed": "onehot", "loss=mse": "mse",
                       "embedding_init=toeplitz": "toeplitz", "embedding_init=default": "toeplitz_control"},
          "toeplitz-seeds": {f"seed={seed},embedding_init={init}": name for seed in (1, 2)
                             for init, name in (("toeplitz", "toeplitz"), ("default", "toeplitz_control"))}}


def test_the_p97_sweeps_run_exactly_the_paper_scale_configs():
    runs = load_sweeps(sorted(CONFIGS.glob("sweep-gu-p97-*.toml")))
    planned = {(run.out_dir.parent.name, run.out_dir.name): run.config for run in runs}
    expected = {(f"sweep-gu-p97-{out}", name): config for out, names in GU_P97.items() for name, config in names.items()}
    assert sorted(planned) == sorted(expected)
    for key, name in expected.items():
        config = TrainConfig.from_toml(CONFIGS / "grokking_insight" / f"{name}.toml")
        seed = int(key[1].split(",")[0].split("=")[1]) if key[1].startswith("seed=") else config.seed
        assert planned[key] == dataclasses.replace(config, seed=seed), key


def test_the_mechanism_sweep_is_the_table1_standard_run_with_stronger_weight_decay():
    # configs/sweep-neuralgrok-mechanism.toml: add.toml's standard run, only the L2 weight decay changed.
    runs = load_sweeps([CONFIGS / "sweep-neuralgrok-mechanism.toml"])
    table1 = TrainConfig.from_toml(CONFIGS / "neuralgrok" / "add.toml")
    assert [run.config.weight_decay for run in runs] == [2.69e-3, 5.39e-3, 1.08e-2]
    for run in runs:
        assert run.config == dataclasses.replace(table1, method="baseline", weight_decay=run.config.weight_decay)


def test_the_grokfast_weight_decay_sweep_is_table1s_ema_runs_with_weight_decay_5e_3():
    # configs/sweep-neuralgrok-grokfast-wd.toml: the Table 1 sweep's Grokfast-EMA runs of seed 0, only the L2
    # weight decay changed (1e-3 -> 5e-3).
    table1 = {run.name: run.config for run in load_sweeps([CONFIGS / "sweep-neuralgrok-table1.toml"])}
    runs = load_sweeps([CONFIGS / "sweep-neuralgrok-grokfast-wd.toml"])
    assert [run.config.task for run in runs] == ["a+b", "a-b", "a*b", "a*a-b"]
    for run in runs:
        name = f"seed=0,task={run.name.split(',')[0].split('=')[1]},method=grokfast-ema"
        assert run.config == dataclasses.replace(table1[name], weight_decay=5e-3), run.name


def test_the_polygon_seeds_file_runs_seeds_1_and_2_of_the_polygon_sweep_into_its_out():
    # configs/sweep-gu-polygons-seeds.toml repeats sweep-grokking-insight-polygons.toml's settings (a sweep file
    # cannot include another): its runs must be that file's seed-1 and seed-2 runs, in the same directories.
    full = {run.out_dir: run.config for run in load_sweeps([CONFIGS / "sweep-grokking-insight-polygons.toml"])}
    seeds = load_sweeps([CONFIGS / "sweep-gu-polygons-seeds.toml"])
    assert [run.config.seed for run in seeds] == [1, 2]
    for run in seeds:
        assert full[run.out_dir] == run.config, run.out_dir
