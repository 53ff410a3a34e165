"""The examples run and print what their docstrings promise."""
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_wrap_adamw_prints_one_result_per_variant_and_seed():
    out = subprocess.run([sys.executable, str(EXAMPLES / "wrap_adamw.py"), "--optimizer", "sgd", "--lr", "0.3",
                          "--steps", "50", "--seeds", "0", "1"], check=True, capture_output=True, text=True).stdout
    lines = out.strip().splitlines()
    assert lines[0].startswith("sgd, lr 0.3")
    results = dict(line.split(":") for line in lines[1:])
    assert [name.strip() for name in results] == ["as is", "clipped to norm 1", "NeuralGrok",
                                                  "NeuralGrok, frozen amplifier"]
    for steps in results.values():  # 50 steps: no variant can have reached 95% test accuracy on either seed
        assert steps.split() == ["-", "-"]
