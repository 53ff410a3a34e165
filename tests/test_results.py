"""neuralgrok.experiments.results: downsampling keeps the threshold rows, exports are small and complete, loading and costs."""
import dataclasses
import json
import math
import re
import shutil
from pathlib import Path

import pytest
import torch

from neuralgrok.experiments import cli, results
from neuralgrok.storage.files import atomic_write_text, to_toml
from neuralgrok.experiments.sweeps import check_runs, load_sweep, sweep_out
from neuralgrok.experiments.config import TrainConfig
from neuralgrok.experiments.loop import train
from neuralgrok.experiments.records import Divergence, metrics_csv, summarize

THRESHOLD_KEYS = ("memorisation_step", "steps_to_test_50", "steps_to_test_90", "steps_to_test_95", "steps_to_test_99")
TINY = dict(task="a+b", p=11, width=16, depth=1, heads=4, eval_every=1, threads=1)


def grokking_history(steps=20_000, every=10, grok_at=12_345.0, never_above=1.0):
    """A metrics history whose train accuracy rises early and whose test accuracy rises late, smoothly,
    so every threshold is crossed at one row that an evenly spaced subset would likely miss."""
    rows = []
    for step in range(0, steps + 1, every):
        test = min(never_above, 1 / (1 + math.exp(-(step - grok_at) / 300)))
        rows.append({"step": step, "train_loss": 1.0, "train_accuracy": min(1.0, step / 1_000),
                     "test_loss": 1.0 - test, "test_accuracy": test, "grad_age": 1.0, "weight_norm": 1.0,
                     "wall_time_s": step * 0.01})
    return rows


def write_run(directory, config, history, diverged=None):
    atomic_write_text(directory / "config.toml", to_toml(config.to_dict()))
    atomic_write_text(directory / "metrics.csv", metrics_csv(history))
    summary = summarize(config, history, history[-1]["wall_time_s"], diverged)
    atomic_write_text(directory / "summary.json", json.dumps(summary))
    return summary


def test_downsample_keeps_ends_threshold_crossings_and_is_log_spaced():
    history = grokking_history()
    kept = results.downsample(history, max_rows=50)
    assert 45 <= len(kept) <= 50  # the budget is used, not wasted on rows picked twice
    assert kept[0] is history[0] and kept[-1] is history[-1]
    steps = [row["step"] for row in kept]
    assert steps == sorted(set(steps))
    config = TrainConfig(steps=20_000)
    full, small = summarize(config, history, 1.0), summarize(config, kept, 1.0)
    assert all(full[key] is not None for key in THRESHOLD_KEYS)
    assert {key: small[key] for key in THRESHOLD_KEYS} == {key: full[key] for key in THRESHOLD_KEYS}
    # Log spacing: the first 1% of the steps gets a good share of the rows (an even spacing gives it 0 or 1).
    assert sum(step <= 200 for step in steps) >= 8


def test_downsample_leaves_short_histories_alone_and_checks_max_rows():
    history = grokking_history(steps=100)
    assert results.downsample(history, max_rows=11) == history
    with pytest.raises(ValueError, match="max_rows=3 must be at least"):
        results.downsample(history, max_rows=3)
    with pytest.raises(TypeError, match="max_rows must be an int"):
        results.downsample(history, max_rows=50.0)


def test_export_run_copies_config_and_summary_and_downsamples_metrics(tmp_path):
    config = TrainConfig(**TINY, steps=300, checkpoint_every=100)
    run = train(config, tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "checkpoint.pt").is_file()
    dest = results.export_run(tmp_path / "run", tmp_path / "results" / "run", max_rows=30)
    assert sorted(path.name for path in dest.iterdir()) == ["config.toml", "metrics.csv", "summary.json"]
    for name in ("config.toml", "summary.json"):
        assert (dest / name).read_text() == (tmp_path / "run" / name).read_text()
    [loaded] = results.load(tmp_path / "results")
    assert len(loaded.history) <= 30 and len(run.history) == 301
    assert loaded.history[-1] == pytest.approx(run.history[-1])
    assert loaded.summary["memorisation_step"] is not None  # so the next line checks a real crossing
    exported = summarize(config, loaded.history, run.summary["wall_time_s"])
    assert {key: exported[key] for key in THRESHOLD_KEYS} == {key: run.summary[key] for key in THRESHOLD_KEYS}


def test_export_runs_refuses_unfinished_runs_and_writes_nothing(tmp_path):
    write_run(tmp_path / "sweep" / "seed=0", TrainConfig(steps=20_000), grokking_history())
    write_run(tmp_path / "sweep" / "seed=1", TrainConfig(steps=20_000, seed=1), grokking_history())
    (tmp_path / "sweep" / "seed=1" / "summary.json").unlink()
    with pytest.raises(ValueError, match="unfinished runs .*seed=1"):
        results.export_runs([tmp_path / "sweep"], tmp_path / "results")
    assert not (tmp_path / "results").exists()


def test_export_finished_only_leaves_running_runs_and_copies_amplifier_snapshots(tmp_path):
    write_run(tmp_path / "sweep" / "seed=0", TrainConfig(steps=20_000), grokking_history())
    (tmp_path / "sweep" / "seed=1").mkdir(parents=True)  # a run still going: no summary.json
    config = TrainConfig(**dict(TINY, method="neuralgrok", amplifier_hidden=(4,), steps=10, snapshot_every=5))
    train(config, tmp_path / "sweep" / "ng", progress=False)
    written = results.export_runs([tmp_path / "sweep"], tmp_path / "results", finished_only=True)
    assert sorted(d.name for d in written) == ["ng", "seed=0"]
    ng = tmp_path / "results" / "ng"
    assert sorted(p.name for p in (ng / "snapshots").iterdir()) == ["step_0000000.pt", "step_0000005.pt",
                                                                     "step_0000010.pt"]
    for name in ("amplifier.pt", "snapshots/step_0000005.pt"):
        assert (ng / name).read_bytes() == (tmp_path / "sweep" / "ng" / name).read_bytes()


def test_steps_table_shows_table1_beside_runs_at_its_setting(tmp_path):
    at_table1 = dict(p=97, optimizer="adam", weight_decay=1e-3, steps=20_000)
    for seed, grok_at in [(0, 12_445), (1, 13_445)]:
        write_run(tmp_path / f"ng{seed}", TrainConfig(method="neuralgrok", seed=seed, **at_table1),
                  grokking_history(grok_at=grok_at))
    write_run(tmp_path / "frozen", TrainConfig(method="neuralgrok-frozen", **at_table1), grokking_history())
    write_run(tmp_path / "other", TrainConfig(method="neuralgrok", p=47, optimizer="adam", weight_decay=1e-3,
                                              steps=20_000), grokking_history())
    rows = results.steps_table_rows(results.load(tmp_path))
    published = {(row["task"], row["method"]): row["published"] for row in rows}
    assert published == {("a+b mod 47", "neuralgrok"): "-", ("a+b mod 97", "neuralgrok"): "900 (NeuralGrok Table 1)",
                         ("a+b mod 97", "neuralgrok-frozen"): "-"}
    [ng] = [row for row in rows if row["task"] == "a+b mod 97" and row["method"] == "neuralgrok"]
    assert ng["seeds"] == 2 and "/" in ng["steps to 95%: median (per seed)"]


def test_amplifier_snapshots_and_their_response(tmp_path):
    config = TrainConfig(**dict(TINY, method="neuralgrok", amplifier_hidden=(4,), steps=12, snapshot_every=6,
                                meta_every=1))
    result = train(config, tmp_path / "sweep" / "ng", progress=False)
    results.export_runs([tmp_path / "sweep"], tmp_path / "results")
    [run] = results.load(tmp_path / "results")
    snapshots = results.amplifier_snapshots(run)
    assert list(snapshots) == [0, 6, 12]
    final = snapshots[12]
    for a, b in zip(final.parameters(), result.optimizer.amplifier.parameters()):
        assert torch.equal(a, b)
    values = torch.tensor([-1e-2, 0.0, 1e-3])
    response = final.response(values)
    scores = final.mlp(values.reshape(-1, 1)).reshape(-1).detach()
    torch.testing.assert_close(response["score"], scores)
    torch.testing.assert_close(response["weight"], torch.exp(scores - scores[1]))
    # The weights are the amplifier's: an amplified tensor is c * (w * g) / ||w * g||.
    g = torch.tensor([-1e-2, 0.0, 1e-3])
    weighted = response["weight"] * g
    torch.testing.assert_close(final(g), weighted / weighted.norm() * final.rescale)
    # baseline: 95% at steps 13,330 and 14,330 (0.01 s per step); grokfast-ema: one seed never gets there.
    for method, seed, grok_at, never_above in [("baseline", 0, 12_445, 1.0), ("baseline", 1, 13_445, 1.0),
                                               ("grokfast-ema", 0, 5_445, 1.0), ("grokfast-ema", 1, 5_445, 0.9)]:
        config = TrainConfig(steps=20_000, method=method, seed=seed)
        write_run(tmp_path / f"{method}-{seed}", config, grokking_history(grok_at=grok_at, never_above=never_above))
    runs = results.load(tmp_path)
    assert [len(group) for group in results.by_field(runs, "method").values()] == [2, 2]
    baseline, ema = results.cost_rows(runs, 0.95)
    assert baseline["method"] == "baseline" and baseline["seeds"] == 2
    assert (baseline["steps"], baseline["steps_lower_bound"]) == (13_830, False)
    assert (baseline["seconds"], baseline["seconds_lower_bound"]) == (pytest.approx(138.3), False)
    assert baseline["ms_per_step"] == pytest.approx(10.0)
    # The unreached seed counts as its budget: median of 6,330 and 20,000 steps (200 s), a lower bound.
    assert (ema["steps"], ema["steps_lower_bound"]) == (13_165, True)
    assert (ema["seconds"], ema["seconds_lower_bound"]) == (pytest.approx(131.65), True)
    with pytest.raises(ValueError, match="threshold=0.8"):
        results.cost_rows(runs, 0.8)


def test_matching_selects_a_group_of_seeds_in_seed_order_and_names_unknown_fields(tmp_path):
    for method, seed in [("baseline", 2), ("grokfast-ema", 0), ("baseline", 0), ("baseline", 1)]:
        write_run(tmp_path / f"{method}-{seed}", TrainConfig(steps=100, method=method, seed=seed),
                  grokking_history(steps=100))
    runs = results.load(tmp_path)
    assert [run.config["seed"] for run in results.matching(runs, method="baseline")] == [0, 1, 2]
    assert [run.path.name for run in results.matching(runs, method="baseline", seed=1)] == ["baseline-1"]
    assert results.matching(runs, method="neuralgrok") == []
    with pytest.raises(ValueError, match="holdout_kk"):
        results.matching(runs, holdout_kk=13)


def test_per_seed_text_formats_ints_floats_and_missing_values():
    assert results.per_seed_text([3040, None, 2300]) == "3,040, -, 2,300"
    assert results.per_seed_text([0.12345, float("nan"), 1.0], digits=2) == "0.12, -, 1.00"
    assert results.per_seed_text([]) == ""


def test_steps_text_is_the_median_over_seeds_marked_when_a_lower_bound(tmp_path):
    # 95% at steps 13,330 and 14,330; a third seed never gets there within its 20,000 steps.
    for seed, never_above in [(0, 1.0), (1, 1.0), (2, 0.9)]:
        write_run(tmp_path / f"seed-{seed}", TrainConfig(steps=20_000, seed=seed),
                  grokking_history(grok_at=12_445 + 1_000 * seed, never_above=never_above))
    runs = results.load(tmp_path)
    assert results.steps_text(runs[:2], 0.95) == "13,830"
    assert results.steps_text(runs, 0.95) == "14,330"  # the unreached seed sorts last: not the median
    assert results.steps_text([runs[0], runs[2]], 0.95) == "> 16,665"


def test_sweep_text_round_trips_through_load_sweep(tmp_path):
    path = tmp_path / "sweep.toml"
    path.write_text(results.sweep_text(tmp_path / "runs", {"p": 11, "betas": [0.9, 0.98], "task": "a*b"},
                                       {"method": ["baseline", "neuralgrok"], "seed": [0, 1]}))
    runs = load_sweep(path)
    assert [run.name for run in runs] == ["method=baseline,seed=0", "method=baseline,seed=1",
                                          "method=neuralgrok,seed=0", "method=neuralgrok,seed=1"]
    assert {(run.config.p, run.config.task, run.config.betas) for run in runs} == {(11, "a*b", (0.9, 0.98))}
    assert runs[0].out_dir == tmp_path / "runs" / "method=baseline,seed=0"


def test_regenerate_runs_a_shrunk_sweep_and_exports_it(tmp_path):
    sweep = tmp_path / "sweep.toml"
    sweep.write_text(results.sweep_text("runs/never-used", {**TINY, "steps": 5_000},
                                        {"method": ["baseline", "grokfast-ema"], "seed": [0, 1]}))
    with pytest.raises(ValueError, match="'out' is a sweep table"):
        results.regenerate(sweep, tmp_path / "work", {"out": "elsewhere"})
    results_dir = results.regenerate(sweep, tmp_path / "work", {"steps": 20, "method": ["grokfast-ema"], "seed": [0]},
                                     log=lambda text: None)
    [run] = results.load(results_dir)
    assert (run.config["method"], run.config["seed"], run.config["steps"]) == ("grokfast-ema", 0, 20)
    assert run.history[-1]["step"] == 20
    assert (tmp_path / "work" / "runs" / "method=grokfast-ema,seed=0" / "summary.json").is_file()


def test_export_command_exits_2_naming_a_directory_without_runs(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        results.main(["export", str(tmp_path), str(tmp_path / "results")])
    assert exit_info.value.code == 2
    assert "neither a run directory nor a directory of runs" in capsys.readouterr().err


def test_steps_table_rows_orders_by_registry_and_marks_unreached_medians(tmp_path, capsys):
    # a*b (listed after a+b in the task registry) written first; baseline after grokfast-ma.
    for task, method, seed, grok_at, never_above in [("a*b", "grokfast-ma", 0, 2_445, 1.0),
                                                     ("a*b", "baseline", 0, 12_445, 1.0),
                                                     ("a*b", "baseline", 1, 13_445, 0.97),
                                                     ("a*b", "baseline", 2, 14_445, 0.97),
                                                     ("a+b", "baseline", 0, 5_445, 1.0)]:
        config = TrainConfig(task=task, steps=20_000, method=method, seed=seed)
        write_run(tmp_path / f"{task}-{method}-{seed}", config, grokking_history(grok_at=grok_at, never_above=never_above))
    rows = results.steps_table_rows(results.load(tmp_path))
    assert [(row["task"], row["method"], row["seeds"]) for row in rows] == [
        ("a+b mod 97", "baseline", 1), ("a*b mod 97", "baseline", 3), ("a*b mod 97", "grokfast-ma", 1)]
    baseline = rows[1]
    # Every seed reaches 95%; only seed 0 reaches 99%, so that median is a 20,000-step budget: a lower bound.
    assert baseline["steps to 95%: median (per seed)"] == "14,330 (13,330 / 14,330 / 15,330)"
    assert baseline["steps to 99%: median (per seed)"] == "> 20,000 (13,830 / - / -)"
    assert baseline["published"].startswith("39,890") and rows[0]["published"] == "-"
    assert results.main(["table", str(tmp_path)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("| task | weight decay | method |") and len(printed) == 2 + len(rows)
    assert cli.main(["results", "table", str(tmp_path)]) == 0  # the same command as `neuralgrok results table`
    assert capsys.readouterr().out.splitlines() == printed


def test_steps_table_rows_marks_a_seed_that_diverged(tmp_path):
    for seed in (0, 1):
        config = TrainConfig(steps=20_000, seed=seed)
        history = grokking_history(grok_at=5_445)
        if seed == 1:  # NaN from step 3,000 on, before any test threshold
            history = history[:301]
            history[-1] = dict(history[-1], train_loss=math.nan, test_loss=math.nan)
        write_run(tmp_path / f"run-{seed}", config, history,
                  Divergence(3_000, "train_loss not finite") if seed == 1 else None)
    row, = results.steps_table_rows(results.load(tmp_path))
    # The diverged seed counts as unreached (its budget, 20,000): the median of two is a lower bound.
    assert row["steps to 95%: median (per seed)"] == "> 13,165 (6,330 / diverged)"
    assert row["steps to 99%: median (per seed)"].endswith("(6,830 / diverged)")


def test_table1_rows_put_median_range_and_the_paper_side_by_side(tmp_path, capsys):
    for task, method, seed, grok_at in [("a+b", "baseline", 0, 1_445), ("a+b", "baseline", 1, 2_445),
                                        ("a+b", "baseline", 2, 25_000), ("a-b", "neuralgrok", 0, 845)]:
        config = TrainConfig(task=task, method=method, seed=seed, steps=10_000)
        write_run(tmp_path / f"{task}-{method}-{seed}", config, grokking_history(steps=10_000, grok_at=grok_at))
    rows = results.table1_rows(results.load(tmp_path))
    assert rows == [  # seed 2 never reached 95% within 10,000 steps: the range's top is a lower bound
        {"method": "baseline", "a+b mod 97": "3,330 (2,330 to > 10,000, 3 seeds) [1,650]", "a-b mod 97": "- [4,330]"},
        {"method": "neuralgrok", "a+b mod 97": "- [900]", "a-b mod 97": "1,730 [1,467]"}]
    at_99 = results.table1_rows(results.load(tmp_path), threshold=0.99)
    assert at_99[1] == {"method": "neuralgrok", "a+b mod 97": "-", "a-b mod 97": "2,230"}  # Table 1 is at 95%
    assert results.main(["table1", str(tmp_path)]) == 0
    assert capsys.readouterr().out.splitlines()[2].startswith("| baseline | 3,330 (2,330 to > 10,000, 3 seeds) [1,650] |")


def test_steps_table_rows_refuses_a_row_mixing_settings(tmp_path):
    for seed, width in [(0, 64), (1, 128)]:
        config = TrainConfig(steps=2_000, seed=seed, width=width)
        write_run(tmp_path / f"run-{seed}", config, grokking_history(steps=2_000))
    with pytest.raises(ValueError, match="also differ in width"):
        results.steps_table_rows(results.load(tmp_path))


def test_diff_ignores_machine_fields_and_names_every_other_difference(tmp_path, capsys):
    config = TrainConfig(steps=2_000)
    for name in ("committed", "regenerated"):
        for seed in (0, 1):
            write_run(tmp_path / name / f"seed={seed}", dataclasses.replace(config, seed=seed),
                      grokking_history(steps=2_000, grok_at=900))
    committed, regenerated = tmp_path / "committed", tmp_path / "regenerated"
    # Another machine: other wall times, peak memory and build; the same numbers otherwise.
    slower = [dict(row, wall_time_s=row["wall_time_s"] * 2) for row in grokking_history(steps=2_000, grok_at=900)]
    summary = write_run(regenerated / "seed=0", dataclasses.replace(config, seed=0), slower)
    atomic_write_text(regenerated / "seed=0" / "summary.json",
                      json.dumps({**summary, "peak_rss_mib": 512.0, "build": {"torch_version": "2.4.0"}}))
    older = committed / "seed=0" / "config.toml"  # written before the field image_size existed
    older.write_text("".join(line for line in older.read_text().splitlines(keepends=True)
                             if not line.startswith("image_size")))
    assert results.differences(committed, regenerated) == []
    assert results.main(["diff", str(committed), str(regenerated)]) == 0
    assert "agrees with" in capsys.readouterr().out

    nudged = grokking_history(steps=2_000, grok_at=900)
    nudged[50]["test_loss"] += 1e-6
    write_run(regenerated / "seed=1", dataclasses.replace(config, seed=1), nudged)
    atomic_write_text(regenerated / "seed=1" / "analysis.csv", "measure,pearson\nmed,0.5\n")
    atomic_write_text(committed / "seed=1" / "analysis.csv", "measure,pearson\nmed,0.25\n")
    assert results.differences(committed, regenerated) == [
        "seed=1: analysis.csv: pearson differs by up to 0.25 (at measure med)",
        "seed=1: metrics.csv: test_loss differs by up to 1e-06 (at step 500)"]
    assert results.differences(committed, regenerated, atol=0.3) == []

    later = grokking_history(steps=2_000, grok_at=1_200)  # grokking moved: summary and downsampled rows differ
    write_run(regenerated / "seed=0", dataclasses.replace(config, seed=0, lr=2e-3), later)
    (regenerated / "seed=1" / "analysis.csv").unlink()
    found = results.differences(committed, regenerated, atol=0.3)
    assert "seed=0: config.toml lr 0.001 -> 0.002" in found
    assert any(line.startswith("seed=0: summary.json steps_to_test_95 ") for line in found)
    assert f"seed=1: analysis.csv missing from {regenerated}" in found
    shutil.rmtree(committed / "seed=1")
    assert results.differences(committed, regenerated, atol=0.3)[0] == f"seed=1: only in {regenerated}"
    assert results.main(["diff", str(committed), str(regenerated)]) == 1


def test_amplifier_command_prints_each_runs_spread_over_its_snapshots(tmp_path, capsys):
    config = TrainConfig(**dict(TINY, method="neuralgrok", amplifier_hidden=(4,), steps=12, snapshot_every=6,
                                meta_every=1))
    train(config, tmp_path / "sweep" / "ng", progress=False)
    write_run(tmp_path / "sweep" / "plain", TrainConfig(steps=2_000), grokking_history(steps=2_000))  # no snapshots
    results.export_runs([tmp_path / "sweep"], tmp_path / "results")
    [row] = results.amplifier_spread_rows(results.load(tmp_path / "results"))
    [run] = [run for run in results.load(tmp_path / "results") if run.config["method"] == "neuralgrok"]
    spreads = {step: amplifier.spread() for step, amplifier in results.amplifier_snapshots(run).items()}
    assert list(spreads) == [0, 6, 12] and len(set(spreads.values())) == 3  # the meta steps moved it
    assert row == {"task": "a+b mod 11", "method": "neuralgrok", "seed": "0",
                   "spread at the first snapshot": f"{spreads[0]:.4f} (step 0)", "at the last": f"{spreads[12]:.4f} (step 12)",
                   "min to max over snapshots": f"{min(spreads.values()):.4f} to {max(spreads.values()):.4f}"}
    assert results.main(["amplifier", str(tmp_path / "results")]) == 0
    assert capsys.readouterr().out.splitlines()[2].startswith(f"| a+b mod 11 | neuralgrok | 0 | {spreads[0]:.4f}")
    with pytest.raises(SystemExit) as exit_info:
        results.main(["amplifier", str(tmp_path / "sweep" / "plain")])
    assert exit_info.value.code == 2 and "saved amplifier snapshots" in capsys.readouterr().err


REPO = Path(__file__).resolve().parent.parent
# Its committed config.toml files name the source amplifier as runs/neuralgrok-transfer-source/amplifier.pt, a
# file results/ does not hold (the runs predate run-relative paths); the sweep re-runs them from the source run.
NOT_RESUMABLE = {"sweep-neuralgrok-transfer.toml"}


@pytest.mark.parametrize("sweep_file", sorted(path.name for path in (REPO / "configs").glob("sweep-*.toml")))
def test_every_committed_sweep_is_still_its_sweep_files(sweep_file, tmp_path):
    # What `bench/pinned_sweep.sh COMMIT --unpark` relies on: a sweep started from the committed runs takes each
    # one as its own (finished: skipped), rather than refusing it as a run of another config.
    if sweep_file in NOT_RESUMABLE:
        pytest.skip("its committed runs name a file outside results/")
    text = (REPO / "configs" / sweep_file).read_text()
    committed = REPO / "results" / sweep_out(REPO / "configs" / sweep_file).name
    if not committed.is_dir():
        pytest.skip(f"nothing of {sweep_file} is committed")
    copy = tmp_path / sweep_file
    copy.write_text(re.sub(r'^out = .*$', f'out = "{committed.as_posix()}"', text, count=1, flags=re.M))
    runs = load_sweep(copy)
    if not any(run.finished() for run in runs):
        pytest.skip(f"none of {sweep_file}'s runs is committed yet")  # the out is another file's too
    check_runs(runs, environment=False)  # raises SweepError for a run of another config
