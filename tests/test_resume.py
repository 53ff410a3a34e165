"""Config files and resumable runs: checkpoints continue a run bit for bit (except wall time),
even after a SIGKILL, and bad config files exit 2 writing nothing."""
import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from neuralgrok.experiments import cli
from neuralgrok.experiments.demo import DEMO_CONFIG
from neuralgrok.storage.files import read_toml, to_toml
from neuralgrok.storage.checkpoints import read_checkpoint
from neuralgrok.experiments.config import TrainConfig
from neuralgrok.experiments.loop import resume, train
from neuralgrok.experiments.records import CHECKPOINT, METRIC_COLUMNS

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
# Minibatches of 16 (about 4 per epoch) and checkpoints at odd steps, so a resume starts
# mid-epoch and, for neuralgrok (meta_every 2), between meta steps.
TINY = dict(task="a+b", p=11, train_fraction=0.5, width=32, depth=1, steps=40, batch_size=16, lr=3e-3,
            weight_decay=0.0, eval_every=5, checkpoint_every=13, threads=1)


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "neuralgrok", *args], capture_output=True, text=True, timeout=300)


def cli_error(capsys, *args):
    """stderr of an in-process ``neuralgrok`` call that must exit with status 2."""
    with pytest.raises(SystemExit) as exit_info:
        cli.main(list(args))
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def metric_rows(run_dir):
    """metrics.csv rows without the wall-time column."""
    with open(Path(run_dir) / "metrics.csv", newline="") as f:
        return [{k: v for k, v in row.items() if k != "wall_time_s"} for row in csv.DictReader(f)]


@pytest.mark.parametrize("method", ["baseline", "grokfast-ema", "neuralgrok"])
def test_resumed_run_has_the_metrics_of_an_uninterrupted_one(tmp_path, method):
    config = TrainConfig(**TINY, method=method, meta_mode="paper")
    whole = train(config, tmp_path / "whole", progress=False)
    # The run as a kill after its last checkpoint (step 39) leaves it: config.toml and checkpoint.pt.
    interrupted = tmp_path / "interrupted"
    interrupted.mkdir()
    for name in ("config.toml", CHECKPOINT):
        shutil.copy(tmp_path / "whole" / name, interrupted / name)
    assert read_checkpoint(interrupted / CHECKPOINT)["step"] == 39
    resumed = resume(interrupted, progress=False)
    assert metric_rows(interrupted) == metric_rows(tmp_path / "whole")
    assert len(resumed.history) == len(whole.history) == 9
    assert resumed.summary["wall_time_s"] > 0


def test_resume_without_a_checkpoint_starts_from_scratch(tmp_path):
    config = TrainConfig(**dict(TINY, steps=10))
    train(config, tmp_path / "whole", progress=False)
    (tmp_path / "fresh").mkdir()
    shutil.copy(tmp_path / "whole" / "config.toml", tmp_path / "fresh" / "config.toml")
    resume(tmp_path / "fresh", progress=False)
    assert metric_rows(tmp_path / "fresh") == metric_rows(tmp_path / "whole")


def test_checkpoint_of_another_config_is_refused(tmp_path, capsys):
    train(TrainConfig(**TINY), tmp_path, progress=False)
    (tmp_path / "summary.json").unlink()
    (tmp_path / "config.toml").write_text(to_toml(TrainConfig(**dict(TINY, lr=1e-2)).to_dict()))
    assert "another config" in cli_error(capsys, "run", "--resume", str(tmp_path), "--quiet")


def assert_every_file_parses(run_dir, temporaries_allowed):
    for path in Path(run_dir).iterdir():
        if path.name.startswith("."):  # an atomic_write temporary a SIGKILL can leave behind
            assert temporaries_allowed and path.name.endswith(".tmp"), path.name
        elif path.suffix == ".toml":
            TrainConfig.from_dict(read_toml(path))
        elif path.suffix == ".csv":
            assert metric_rows(path.parent) and path.read_text().splitlines()[0] == ",".join(METRIC_COLUMNS)
        elif path.suffix == ".pt":
            assert read_checkpoint(path)["step"] > 0
        else:
            assert path.name == "summary.json"


def test_killed_run_resumes_through_the_cli_to_the_uninterrupted_metrics(tmp_path):
    flags = ["--p", "11", "--width", "32", "--depth", "1", "--steps", "1000", "--batch-size", "16",
             "--method", "grokfast-ema", "--eval-every", "50", "--checkpoint-every", "25", "--threads", "1"]
    killed = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "-m", "neuralgrok", "run", *flags, "--quiet", "--out", str(killed)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300  # only guards a hang: on a loaded 2-core machine (CI runs two legs at once,
    # a sweep may run beside) importing torch and reaching the first checkpoint took over 60 s
    while not (killed / CHECKPOINT).exists():
        assert process.poll() is None and time.monotonic() < deadline, "no checkpoint before the run ended"
        time.sleep(0.01)
    time.sleep(0.3)  # into later checkpoints, so the kill may land mid-write
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (killed / "summary.json").exists(), "the run finished before the kill"
    assert_every_file_parses(killed, temporaries_allowed=True)

    result = run_cli("run", "--resume", str(killed), "--quiet")
    assert result.returncode == 0, result.stderr
    assert_every_file_parses(killed, temporaries_allowed=False)
    parser = cli.build_parser()
    whole = train(cli.config_from_arguments(parser.parse_args(["run", *flags]), parser), tmp_path / "whole",
                  progress=False)
    assert metric_rows(killed) == metric_rows(tmp_path / "whole")
    assert len(whole.history) == 21

    again = run_cli("run", "--resume", str(killed))
    assert again.returncode == 0 and "has finished" in again.stdout


def test_demo_toml_is_the_demo_config():
    assert TrainConfig.from_toml(CONFIGS / "demo.toml") == DEMO_CONFIG


def test_flags_given_override_the_config_file_and_only_those():
    parser = cli.build_parser()
    arguments = parser.parse_args(["run", "--config", str(CONFIGS / "demo.toml"), "--method", "neuralgrok",
                                   "--betas", "0.8", "0.9"])
    assert cli.config_from_arguments(arguments, parser) == TrainConfig(
        **dict(DEMO_CONFIG.to_dict(), method="neuralgrok", betas=(0.8, 0.9)))


def test_config_file_integers_fill_float_fields(tmp_path):
    (tmp_path / "x.toml").write_text("lr = 1\namplifier_hidden = [8, 8]\n")
    assert TrainConfig.from_toml(tmp_path / "x.toml") == TrainConfig(lr=1.0, amplifier_hidden=(8, 8))


@pytest.mark.parametrize("text, message", [
    ("p = 11\nlearning_rate = 0.1\n", "unknown keys ['learning_rate']; valid keys are ["),
    ('p = "eleven"\n', "p = 'eleven' is not an int"),
    ("steps = true\n", "steps = True is not an int"),
    ("lr = 0.1\nbetas = [0.9, \"x\"]\n", "is not a list of float"),
    ('method = "sgd"\n', "is not one of ['baseline'"),
    ("p = \n", "--config"),
])
def test_bad_config_file_exits_2_and_writes_nothing(tmp_path, capsys, text, message):
    (tmp_path / "bad.toml").write_text(text)
    assert message in cli_error(capsys, "run", "--config", str(tmp_path / "bad.toml"), "--out", str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, message", [
    (["--p", "13"], "drop ['p']"),
    (["--out", "x"], "drop ['out']"),
])
def test_resume_takes_no_config_flags(tmp_path, capsys, args, message):
    assert message in cli_error(capsys, "run", "--resume", str(tmp_path), *args)


def test_resume_needs_a_run_directory(tmp_path, capsys):
    assert "no config.toml" in cli_error(capsys, "run", "--resume", str(tmp_path / "nothing"))
