"""``neuralgrok sweep`` and ``neuralgrok compare``: naming, commands, skipping, errors, statistics."""
import csv
import json
import shlex
import subprocess
import sys

import pandas as pd
import pytest

from neuralgrok.experiments import compare, sweeps as sweep
from neuralgrok.storage.files import read_toml, to_toml
from neuralgrok.experiments.config import TrainConfig, config_from_flags
from neuralgrok.experiments.records import metrics_csv


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "neuralgrok", *args], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


TINY = '''out = "{out}"
[base]
p = 11
width = 32
depth = 1
steps = 100
eval_every = 10
[grid]
task = ["a+b"]
seed = [0, 1]
'''


def write_sweep(tmp_path, text=TINY):
    path = tmp_path / "sweep.toml"
    path.write_text(text.format(out=tmp_path / "runs"))
    return path


def test_run_names_are_deterministic_filesystem_safe_and_distinct():
    assert sweep.run_name({"task": "a+b", "method": "baseline", "seed": 0}) == "task=a+b,method=baseline,seed=0"
    assert sweep.run_name({"task": "a*b", "amplifier_hidden": [64, 64]}) == "task=a%2Ab,amplifier_hidden=64-64"
    assert sweep.run_name({"task": "a/b"}) != sweep.run_name({"task": "a_b"})
    assert "/" not in sweep.run_name({"task": "a/b", "lr": 0.001})


def test_commands_rebuild_each_config_with_one_thread(tmp_path):
    runs = sweep.load_sweep(write_sweep(tmp_path))
    assert [run.name for run in runs] == ["task=a+b,seed=0", "task=a+b,seed=1"]
    for seed, run in enumerate(runs):
        assert run.config == TrainConfig(task="a+b", p=11, width=32, depth=1, steps=100, eval_every=10,
                                         seed=seed, threads=1)
        assert run.command[:6] == [sys.executable, "-m", "neuralgrok", "run", "--quiet", "--out"]
        assert run.command[6] == str(tmp_path / "runs" / run.name)
        assert config_from_flags(run.command[7:]) == run.config


def test_config_threads_and_tuples_survive_the_command_line(tmp_path):
    text = TINY.replace("depth = 1", "depth = 1\nthreads = 2\nbetas = [0.8, 0.9]").replace(
        'task = ["a+b"]', 'amplifier_hidden = [[8], [16, 16]]')
    runs = sweep.load_sweep(write_sweep(tmp_path, text))
    assert [run.config.amplifier_hidden for run in runs] == [(8,), (8,), (16, 16), (16, 16)]
    assert {run.config.threads for run in runs} == {2}
    assert all(config_from_flags(run.command[7:]) == run.config for run in runs)


def test_sweep_runs_in_parallel_then_skips_finished_runs(tmp_path):
    path = write_sweep(tmp_path)
    dry = run_cli("sweep", str(path), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    commands = dry.stdout.splitlines()
    assert [shlex.split(line) for line in commands] == [run.command for run in sweep.load_sweep(path)]
    assert not (tmp_path / "runs").exists()  # a dry run writes nothing

    first = run_cli("sweep", str(path), "--jobs", "2")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "0 of 2 runs already finished; running 2" in first.stdout
    for name in ("task=a+b,seed=0", "task=a+b,seed=1"):
        run_dir = tmp_path / "runs" / name
        assert json.loads((run_dir / "summary.json").read_text())["steps"] == 100
        assert TrainConfig.from_toml(run_dir / "config.toml").threads == 1

    second = run_cli("sweep", str(path), "--jobs", "2")
    assert second.returncode == 0
    assert "2 of 2 runs already finished; running 0" in second.stdout
    assert run_cli("sweep", str(path), "--dry-run").stdout == ""

    compared = run_cli("compare", str(tmp_path / "runs"))
    assert compared.returncode == 0, compared.stderr
    table = pd.read_csv(tmp_path / "runs" / "comparison.csv")
    assert list(table["seeds"]) == [2]  # no field varies but the seed: one group


def test_several_sweep_files_share_one_pool_and_may_not_share_a_run_directory(tmp_path):
    first = write_sweep(tmp_path)
    second = tmp_path / "other.toml"
    second.write_text(TINY.format(out=tmp_path / "other").replace('task = ["a+b"]', 'task = ["a-b"]'))
    dry = run_cli("sweep", str(first), str(second), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    expected = sweep.load_sweep(first) + sweep.load_sweep(second)
    assert [shlex.split(line) for line in dry.stdout.splitlines()] == [run.command for run in expected]

    same_out = tmp_path / "same.toml"
    same_out.write_text(TINY.format(out=tmp_path / "runs"))  # the same runs as ``first``
    clash = run_cli("sweep", str(first), str(same_out), "--jobs", "2")
    assert clash.returncode == 2
    assert f"two sweep files write the same run directory: {tmp_path / 'runs' / 'task=a+b,seed=0'}" in clash.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("text, message", [
    (TINY.replace("width = 32", "widht = 32"), "unknown TrainConfig fields ['widht']"),
    ("extra = 1\n" + TINY, "unknown top-level keys"),
    (TINY.replace('out = "{out}"', ""), "needs out ="),
    (TINY.replace("seed = [0, 1]", "seed = 0"), "grid.seed must be a non-empty list"),
    (TINY.replace("seed = [0, 1]", "seed = [0, 1]\nheads = [4, 5]"), "run task=a+b,seed=0,heads=5: invalid"),
    (TINY.replace("p = 11", "p = 11.0"), "p = 11.0 is not an int"),
    (TINY.replace("seed = [0, 1]", "seed = [0, 0]"), "repeats a value"),
    (TINY.replace("[grid]", "[grid]\nsteps = [5]"), "in both [base] and [grid]"),
    ("out = [", "cannot read"),
])
def test_bad_sweep_files_exit_2_and_write_nothing(tmp_path, text, message):
    result = run_cli("sweep", str(write_sweep(tmp_path, text)), "--jobs", "2")
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep.toml"]


def fake_run(directory, seed, method, steps_to, wall_time_s, steps=1000, peak_rss_mib=None):
    """A run directory by hand: ``steps_to`` maps a threshold (50, 90, 95, 99) to a step or None;
    ``peak_rss_mib`` None leaves it out, as in runs written before it was recorded."""
    config = TrainConfig(method=method, seed=seed, steps=steps)
    directory.mkdir(parents=True)
    (directory / "config.toml").write_text(to_toml(config.to_dict()))
    summary = {"method": method, "steps": steps, "wall_time_s": wall_time_s,
               **{f"steps_to_test_{t}": steps_to.get(t) for t in (50, 90, 95, 99)}}
    if peak_rss_mib is not None:
        summary["peak_rss_mib"] = peak_rss_mib
    (directory / "summary.json").write_text(json.dumps(summary))
    history = [{"step": s, "train_loss": 1.0, "train_accuracy": 1.0, "test_loss": 1.0,
                "test_accuracy": s / steps, "grad_age": 0.5, "weight_norm": 1.0, "wall_time_s": 0.1}
               for s in (0, steps // 2, steps)]
    (directory / "metrics.csv").write_text(metrics_csv(history))


def test_compare_medians_and_ranges_count_unreached_thresholds(tmp_path):
    sweep_dir = tmp_path / "sweep"
    fake_run(sweep_dir / "a0", 0, "baseline", {50: 100, 90: 300, 95: 600, 99: None}, 10.0)
    fake_run(sweep_dir / "a1", 1, "baseline", {50: 200, 90: 500, 95: None, 99: None}, 20.0)
    fake_run(sweep_dir / "a2", 2, "baseline", {50: 300, 90: 400, 95: 900, 99: None}, 40.0)
    fake_run(tmp_path / "b0", 0, "grokfast-ema", {50: 50, 90: 80, 95: 90, 99: 990}, 5.0, peak_rss_mib=300.0)
    fake_run(tmp_path / "b1", 1, "grokfast-ema", {50: 70, 90: 100, 95: None, 99: None}, 7.0, peak_rss_mib=320.0)
    (tmp_path / "unfinished").mkdir()
    (tmp_path / "unfinished" / "config.toml").write_text(to_toml(TrainConfig().to_dict()))

    result = run_cli("compare", str(sweep_dir), str(tmp_path / "b0"), str(tmp_path / "b1"),
                     str(tmp_path / "unfinished"), "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert "unfinished has no summary.json" in result.stderr

    with open(tmp_path / "out" / "comparison.csv", newline="") as f:
        rows = {row["method"]: row for row in csv.DictReader(f)}
    base, ema = rows["baseline"], rows["grokfast-ema"]
    assert base["seeds"] == "3" and ema["seeds"] == "2"
    assert [base[f"steps_to_test_50_{s}"] for s in ("median", "min", "max")] == ["200", "100", "300"]
    assert [base[f"steps_to_test_95_{s}"] for s in ("median", "min", "max")] == ["900", "600", ">1000"]
    assert [base[f"steps_to_test_99_{s}"] for s in ("median", "min", "max")] == [">1000", ">1000", ">1000"]
    assert ema["steps_to_test_50_median"] == "60"
    assert ema["steps_to_test_99_median"] == ">995"  # mean of 990 and more than 1,000: a lower bound
    assert [base["wall_time_s_median"], ema["wall_time_s_median"]] == ["20.0", "6.0"]
    assert base["peak_rss_mib_median"] == "-" and ema["peak_rss_mib_median"] == "310"

    markdown = (tmp_path / "out" / "comparison.md").read_text()
    assert markdown == result.stdout.split("comparison.csv, ")[0]
    lines = markdown.splitlines()
    assert len(lines) == 4 and all(line.startswith("|") and line.endswith("|") for line in lines)
    assert lines[0].split("|")[1].strip() == "method"
    assert "[600, >1000]" in lines[2]
    assert "peak RSS (MiB)" in lines[0] and lines[3].split("|")[-2].strip() == "310"
    assert (tmp_path / "out" / "comparison_accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_groups_by_every_field_but_the_seed(tmp_path):
    fake_run(tmp_path / "x", 0, "baseline", {}, 1.0)
    fake_run(tmp_path / "y", 1, "baseline", {}, 1.0, steps=2000)
    runs = compare.load_runs([tmp_path])
    fields, groups = compare.group_runs(runs)
    assert fields == ["steps"]
    assert list(groups) == [(1000,), (2000,)]


def test_compare_reads_a_field_an_older_config_toml_lacks_as_its_default(tmp_path):
    fake_run(tmp_path / "old", 0, "baseline", {}, 1.0)
    fake_run(tmp_path / "new", 1, "baseline", {}, 1.0)
    older = read_toml(tmp_path / "old" / "config.toml")
    del older["model"], older["optimizer"]  # written before these fields existed
    (tmp_path / "old" / "config.toml").write_text(to_toml(older))
    runs = compare.load_runs([tmp_path])
    assert [run.config["model"] for run in runs] == ["transformer", "transformer"]
    fields, groups = compare.group_runs(runs)
    assert fields == [] and [len(group) for group in groups.values()] == [2]


@pytest.mark.parametrize("args, message", [
    (["compare", "nowhere"], "neither a run directory"),
    (["compare", "a", "b"], "--out is needed"),
])
def test_bad_compare_arguments_exit_2(tmp_path, args, message):
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
