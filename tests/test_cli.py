import dataclasses
import subprocess
import sys

import pytest

import neuralgrok
from neuralgrok.experiments import cli
from neuralgrok.experiments.demo import DEMO_METHODS
from neuralgrok.experiments.config import TrainConfig
from neuralgrok.experiments.records import METRIC_COLUMNS


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "neuralgrok", *args], capture_output=True, text=True, timeout=300)


def test_version_prints_package_and_build_info():
    result = run_cli("--version")
    assert result.returncode == 0
    line = result.stdout.strip()
    assert line.startswith(f"neuralgrok {neuralgrok.__version__} ")
    for value in (neuralgrok.BUILD_INFO["torch_version"], neuralgrok.BUILD_INFO["build_type"],
                  neuralgrok.BUILD_INFO["compiler"], "C++11 ABI"):
        assert value in line
    assert "\n" not in line


def test_run_help_lists_every_config_field_with_the_dataclass_default(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["run", "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # undo argparse's line wrapping
    for config_field in dataclasses.fields(TrainConfig):
        assert "--" + config_field.name.replace("_", "-") in text
    assert "--lr LR learning rate of the base optimizer (default: 0.001)" in text
    assert "--model {transformer,nanda,mlp,resnet18} transformer" in text
    assert ",polygons}" in text and "--faithful, --no-faithful" in text
    assert "(default: 0.9 0.98)" in text


def test_flags_map_onto_the_config():
    parser = cli.build_parser()
    arguments = parser.parse_args(["run", "--p", "23", "--train-fraction", "0.3", "--betas", "0.8", "0.9",
                                   "--method", "grokfast-ema", "--ema-lamb", "3"])
    config = cli.config_from_arguments(arguments, parser)
    assert config == TrainConfig(p=23, train_fraction=0.3, betas=(0.8, 0.9), method="grokfast-ema", ema_lamb=3.0)


@pytest.mark.parametrize("args, message", [
    (["run", "--p", "10"], "not a prime"),
    (["run", "--steps", "many"], "invalid int value"),
    (["run", "--method", "sgd"], "invalid choice"),
    (["demo"], "--out"),
    (["demo", "--out", "x", "--steps", "-1"], "must not be negative"),
    (["fly"], "invalid choice"),
    ([], "COMMAND"),
])
def test_bad_arguments_exit_2_with_a_message(args, message):
    result = run_cli(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_run_writes_its_files(tmp_path):
    result = run_cli("run", "--p", "7", "--width", "16", "--depth", "1", "--steps", "4", "--eval-every", "2",
                     "--quiet", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.toml", "metrics.csv", "model.pt", "summary.json"]
    assert "memorised" in result.stdout


def test_tiny_demo_writes_plots_runs_and_table(tmp_path):
    result = run_cli("demo", "--out", str(tmp_path), "--steps", "20", "--quiet")
    assert result.returncode == 0, result.stderr
    for name in ("accuracy.png", "loss.png", "age.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lines = result.stdout.splitlines()
    assert lines[0].split()[:2] == ["method", "memorised"]
    assert [line.split()[0] for line in lines[2:2 + len(DEMO_METHODS)]] == list(DEMO_METHODS)
    assert (tmp_path / "summary.txt").read_text() == "\n".join(lines[:2 + len(DEMO_METHODS)]) + "\n"
    for method in DEMO_METHODS:
        header = (tmp_path / method / "metrics.csv").read_text().splitlines()[0]
        assert header == ",".join(METRIC_COLUMNS)
