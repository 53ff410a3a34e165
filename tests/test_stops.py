"""The plateau stop: a hold-out run whose train accuracy is 1 and whose test accuracy has stopped moving ends
there (``stop_reason = "plateau"``), a run whose test accuracy keeps moving does not, and a resumed run
stops where the uninterrupted one did. (The early stop is tested in test_paper_setup.py.) Also the per-first-operand
check of a hold-out run's held block (bench/holdout_by_operand.py) on the same toy strip."""
import dataclasses
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from neuralgrok.experiments.compare import group_row
from neuralgrok.experiments.config import ConfigError, TrainConfig, config_from_flags
from neuralgrok.experiments.loop import plateaued, resume, stop_due, train
from neuralgrok.experiments.records import CHECKPOINT, Run, read_metrics, summarize, summary_table
from neuralgrok.storage.checkpoints import read_checkpoint

# Gu et al.'s strip at a toy size: a+b mod 13, first operands 0..4 held out (their tokens never trained),
# so test accuracy is capped and settles in steps of 1/85 once the 84 training pairs are memorised.
STRIP = dict(task="a+b", p=13, layout="nanda", operand_offset=5, split="strip", holdout_k=4, model="nanda",
             train_fraction=0.5, width=32, depth=1, steps=400, lr=3e-3, weight_decay=0.0, eval_every=10,
             checkpoint_every=0, threads=1)


def rows(*pairs):
    return [{"step": 10 * i, "train_accuracy": train, "test_accuracy": test} for i, (train, test) in enumerate(pairs)]


def test_plateau_needs_train_accuracy_one_and_test_accuracy_within_the_tolerance_for_n_evaluations():
    config = TrainConfig(plateau_stop_evals=3, plateau_stop_tolerance=0.001)
    assert plateaued(config, rows((1.0, 0.3), (1.0, 0.3005), (1.0, 0.3009)))  # moved by 0.0009
    assert not plateaued(config, rows((1.0, 0.3), (1.0, 0.3005), (1.0, 0.3012)))  # 0.0012 > 0.001
    assert not plateaued(config, rows((1.0, 0.3), (1.0, 0.3)))  # only 2 evaluations
    assert not plateaued(config, rows((0.99, 0.3), (1.0, 0.3), (1.0, 0.3)))  # not yet memorised throughout
    # Creeping up by 0.0006 an evaluation: each move within the tolerance, but not the window's.
    assert not plateaued(config, rows(*[(1.0, 0.3 + 0.0006 * i) for i in range(10)]))
    assert plateaued(config, rows((0.5, 0.1), (1.0, 0.2), (1.0, 0.3), (1.0, 0.3), (1.0, 0.3)))
    assert not plateaued(TrainConfig(), rows(*[(1.0, 0.3)] * 50))  # off by default
    # The early stop takes precedence when both are due.
    both = TrainConfig(plateau_stop_evals=2, early_stop_accuracy=0.9, early_stop_evals=2)
    assert stop_due(both, rows((1.0, 0.95), (1.0, 0.95))) == "early_stop"
    assert stop_due(both, rows((1.0, 0.5), (1.0, 0.5))) == "plateau"
    assert stop_due(both, rows((1.0, 0.5), (1.0, 0.6))) is None


def test_plateau_outliers_let_a_few_spikes_in_the_window_pass():
    spiky = rows(*[(1.0, 0.3)] * 4, (0.8, 0.1), (1.0, 0.29), *[(1.0, 0.3)] * 4)  # a spike, then 0.01 off the band
    assert not plateaued(TrainConfig(plateau_stop_evals=10), spiky)
    assert not plateaued(TrainConfig(plateau_stop_evals=10, plateau_stop_outliers=1), spiky)
    assert plateaued(TrainConfig(plateau_stop_evals=10, plateau_stop_outliers=2), spiky)
    # The band is the narrowest that holds all but the outliers, wherever it lies.
    assert plateaued(TrainConfig(plateau_stop_evals=4, plateau_stop_outliers=1), rows(*[(1.0, 0.5), (1.0, 0.3), (1.0, 0.3005), (1.0, 0.3)]))
    # Outliers do not make a creeping test accuracy a plateau.
    creeping = rows(*[(1.0, 0.3 + 0.0006 * i) for i in range(10)])
    assert not plateaued(TrainConfig(plateau_stop_evals=10, plateau_stop_outliers=7), creeping)
    assert plateaued(TrainConfig(plateau_stop_evals=10, plateau_stop_outliers=8), creeping)  # 2 rows 0.0006 apart


@pytest.mark.parametrize("run, stop_at, final_test_accuracy", [
    ("sweep-gu-p97-strip/holdout_k=40", 8200, 0.3955), ("sweep-gu-p97-rectangle/holdout_k=40", 18200, 0.9027),
    ("sweep-gu-p97-strip/holdout_k=50", None, 0.2391), ("sweep-gu-p97-strip/holdout_k=60", None, 0.1037),
    ("sweep-gu-p97-strip/holdout_k=67", None, 0.0520), ("sweep-gu-p97-rectangle/holdout_k=50", None, 0.6139),
    ("sweep-gu-p97-rectangle/holdout_k=60", None, 0.4652), ("sweep-gu-p97-rectangle/holdout_k=67", None, 0.3086)])
def test_plateau_outliers_would_have_ended_the_committed_hold_outs_at_their_final_accuracy(run, stop_at,
                                                                                              final_test_accuracy):
    """The README's claim: the p = 97 hold-outs' loss spikes kept the plateau stop (100 evaluations within
    0.001) from firing, so they ran all 30,000 steps; with 5 outliers allowed it fires at ``stop_at``, where
    the test accuracy is already the final one, or (None) still never, where test accuracy never settles."""
    history = read_metrics(Path(__file__).resolve().parents[1] / "results" / run / "metrics.csv")
    config = TrainConfig(plateau_stop_evals=100, plateau_stop_tolerance=0.001)
    assert first_plateau(config, history) is None
    index = first_plateau(dataclasses.replace(config, plateau_stop_outliers=5), history)
    assert history[-1]["test_accuracy"] == pytest.approx(final_test_accuracy, abs=1e-4)
    if stop_at is None:  # test accuracy never settles: the run still goes to the cap
        assert index is None
        return
    assert history[index]["step"] == stop_at
    assert history[index]["test_accuracy"] == pytest.approx(final_test_accuracy, abs=0.002)


@pytest.mark.parametrize("bad, message", [
    ({"plateau_stop_evals": -1}, "plateau_stop_evals=-1 must not be negative"),
    ({"plateau_stop_tolerance": -0.1}, r"plateau_stop_tolerance=-0.1 must be in \[0, 1\)"),
    ({"plateau_stop_tolerance": 1.0}, r"plateau_stop_tolerance=1.0 must be in \[0, 1\)"),
    ({"plateau_stop_outliers": -1}, r"plateau_stop_outliers=-1 must be in 0..plateau_stop_evals - 1"),
    ({"plateau_stop_evals": 5, "plateau_stop_outliers": 5}, r"plateau_stop_outliers=5 must be in 0..plateau_stop_evals"),
])
def test_plateau_fields_are_checked(bad, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**bad)


def test_plateau_flags_come_from_the_dataclass_and_old_configs_read_as_off(tmp_path):
    config = config_from_flags(["--plateau-stop-evals", "7", "--plateau-stop-tolerance", "0.01",
                                "--plateau-stop-outliers", "2"])
    assert (config.plateau_stop_evals, config.plateau_stop_tolerance, config.plateau_stop_outliers) == (7, 0.01, 2)
    defaults = TrainConfig.defaults()
    assert (defaults["plateau_stop_evals"], defaults["plateau_stop_tolerance"], defaults["plateau_stop_outliers"]) == (
        0, 0.001, 0)
    run = tmp_path / "old"
    run.mkdir()
    (run / "config.toml").write_text('task = "a+b"\np = 11\nsteps = 5\n')  # written before the fields existed
    from neuralgrok.experiments.records import run_config

    assert run_config(run).plateau_stop_evals == 0


def without_wall_time(history):
    return [{key: value for key, value in row.items() if key != "wall_time_s"} for row in history]


def first_plateau(config, history):
    """The index of the first row after which the plateau stop is due, or None."""
    return next((i for i in range(len(history)) if plateaued(config, history[:i + 1])), None)


@pytest.fixture(scope="module")
def uninterrupted():
    """The strip run without a stop: the rows a stopped run must be a prefix of."""
    return train(TrainConfig(**STRIP), progress=False)


def test_a_run_that_plateaus_stops_there_with_its_weights(uninterrupted, tmp_path):
    config = TrainConfig(**STRIP, plateau_stop_evals=5)
    stop = first_plateau(config, uninterrupted.history)
    assert stop is not None and uninterrupted.history[stop]["step"] < STRIP["steps"]
    result = train(config, tmp_path / "run", progress=False)
    assert without_wall_time(result.history) == without_wall_time(uninterrupted.history[:stop + 1])
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["stop_reason"] == "plateau" and summary["steps_done"] == result.history[-1]["step"]
    # The last row describes the final weights: no update after it.
    at_stop = train(TrainConfig(**dict(STRIP, steps=summary["steps_done"])), progress=False)
    assert all(torch.equal(a, b) for a, b in zip(result.model.parameters(), at_stop.model.parameters()))
    assert f"plateau at {summary['steps_done']:,}" in summary_table([summary])


def test_a_run_whose_test_accuracy_keeps_moving_does_not_stop(uninterrupted):
    # Long windows of memorised rows exist, but the test accuracy moves by 1/85 within each of them.
    config = TrainConfig(**STRIP, plateau_stop_evals=20)
    memorised = [i for i, row in enumerate(uninterrupted.history) if row["train_accuracy"] == 1.0]
    assert len(memorised) > config.plateau_stop_evals and first_plateau(config, uninterrupted.history) is None
    result = train(config, progress=False)
    assert result.summary["stop_reason"] == "steps" and result.summary["steps_done"] == STRIP["steps"]
    assert without_wall_time(result.history) == without_wall_time(uninterrupted.history)
    # A tolerance wider than those moves makes the same run stop.
    wider = TrainConfig(**STRIP, plateau_stop_evals=20, plateau_stop_tolerance=0.05)
    assert first_plateau(wider, uninterrupted.history) is not None
    assert train(wider, progress=False).summary["stop_reason"] == "plateau"


def test_a_resumed_run_stops_where_the_uninterrupted_one_did(tmp_path):
    config = TrainConfig(**dict(STRIP, checkpoint_every=13), plateau_stop_evals=5)
    whole = train(config, tmp_path / "whole", progress=False)
    assert whole.summary["stop_reason"] == "plateau"
    # What a kill after the last checkpoint leaves: config.toml and checkpoint.pt.
    interrupted = tmp_path / "interrupted"
    interrupted.mkdir()
    for name in ("config.toml", CHECKPOINT):
        shutil.copy(tmp_path / "whole" / name, interrupted / name)
    assert 0 < read_checkpoint(interrupted / CHECKPOINT)["step"] < whole.summary["steps_done"]
    resumed = resume(interrupted, progress=False)
    assert without_wall_time(resumed.history) == without_wall_time(whole.history)
    assert {k: v for k, v in resumed.summary.items() if k not in ("wall_time_s", "peak_rss_mib")} == \
        {k: v for k, v in whole.summary.items() if k not in ("wall_time_s", "peak_rss_mib")}


def test_summaries_and_tables_say_plateau(tmp_path, capsys):
    history = rows((0.5, 0.1), (1.0, 0.3), (1.0, 0.3))
    for row in history:
        row.update(train_loss=0.1, test_loss=2.0)
    config = TrainConfig(steps=1000)
    summary = summarize(config, history, 1.0, stopped="plateau")
    assert summary["stop_reason"] == "plateau" and json.loads(json.dumps(summary, allow_nan=False)) == summary
    assert summarize(config, history, 1.0)["stop_reason"] == "early_stop"  # ended early, no reason given
    table = summary_table([summary, summarize(TrainConfig(steps=20), history, 1.0)]).splitlines()
    assert table[0].split()[-7] == "stopped"
    assert "plateau at 20" in table[2] and table[3].split()[-3] == "steps"
    # The comparison counts plateaued runs per group, as it counts diverged ones.
    run = Run(tmp_path, config.to_dict(), summary, history)
    assert group_row([], (), [run, run], counts=["plateau"])["plateau"] == "2"
    # A plain run's table is unchanged: no column for it.
    assert "stopped" not in summary_table([summarize(TrainConfig(steps=20), history, 1.0)])


def test_holdout_by_operand_says_which_held_first_operands_were_trained(tmp_path):
    """bench/holdout_by_operand.py (the README's per-operand check of the strips): with the second operand's
    tokens offset by 3 and k = 4, the held first operands 3 and 4 are trained as the second operand's 0 and 1,
    while 0..2 occur in no training input and keep their (decayed) initial embeddings."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from holdout_by_operand import by_first_operand

    config = TrainConfig(**{**STRIP, "operand_offset": 3, "steps": 21, "weight_decay": 0.5,
                            "optimizer": "adamw", "checkpoint_every": 10})
    train(config, tmp_path, progress=False)  # checkpoints at steps 10 and 20, the final weights (21) in model.pt
    final_step, final = by_first_operand(tmp_path)  # model.pt where the run finished
    assert final_step == 21
    step, table = by_first_operand(tmp_path, "checkpoint.pt")
    assert step == 20
    assert [row["token"] for row in final] == [row["token"] for row in table]
    assert final[0]["embedding_norm"] == pytest.approx(table[0]["embedding_norm"] * (1 - config.lr * config.weight_decay))
    assert [row["token"] for row in table] == [0, 1, 2, 3, 4]
    assert [row["trained"] for row in table] == [False, False, False, True, True]
    assert all(row["pairs"] == 13 for row in table)  # every second operand 0..12 with each held first operand
    assert all(0.0 <= row["accuracy"] <= 1.0 for row in table)
    # Adam never moves an embedding row whose gradient was always 0; AdamW's decoupled decay shrinks it by
    # (1 - lr * wd) a step: from step 10 (the kept previous checkpoint) to 20, past the warm-up.
    before_step, before = by_first_operand(tmp_path, "checkpoint.prev.pt")
    assert before_step == 10
    ratios = [row["embedding_norm"] / old["embedding_norm"] for row, old in zip(table, before)]
    assert ratios[:3] == pytest.approx([(1 - config.lr * config.weight_decay) ** 10] * 3, rel=1e-5)
    assert all(abs(ratio - (1 - config.lr * config.weight_decay) ** 10) > 1e-3 for ratio in ratios[3:])
    random = tmp_path / "random"
    train(TrainConfig(task="a+b", p=7, steps=2, checkpoint_every=1, threads=1), random, progress=False)
    with pytest.raises(ValueError, match="not a hold-out run"):
        by_first_operand(random)
