"""Evaluation and logging overhead of the runner, as a fraction of training time.

    .venv/bin/python bench/bench_runner_overhead.py [--steps 100] [--repeats 5] [--setups default demo]

For each setup, whole ``train()`` runs of ``--steps`` steps alternate in one process: with the
setup's ``eval_every`` ("on") and with ``eval_every = steps`` ("off": only the two rows at the first
and the last step). A logged row costs ``(t_on - t_off) / (n_on - n_off)`` (n = rows logged), and
the training alone ``t_off - n_off * row``; the overhead is the logging cost per ``eval_every``
steps over the training time of those steps. Times are medians over ``--repeats`` pairs.
Target: <= 5% at the default ``eval_every``.

Setups: ``default`` = TrainConfig()'s defaults (a+b mod 97, 2 x 128 transformer, full batch,
eval_every 10); ``demo`` = neuralgrok.demo.DEMO_CONFIG (p = 47, 1 x 64, batches of 512,
eval_every 20); ``neuralgrok`` = configs/neuralgrok/add.toml (p = 97, 2 x 128, batches of 512,
its eval_every), with the baseline method so that only the runner is timed.
"""
import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import machine  # noqa: E402

from neuralgrok.demo import DEMO_CONFIG  # noqa: E402
from neuralgrok.train import TrainConfig, train  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SETUPS = {
    "default": lambda: TrainConfig(threads=1),
    "demo": lambda: DEMO_CONFIG,
    "neuralgrok": lambda: dataclasses.replace(TrainConfig.from_toml(ROOT / "configs" / "neuralgrok" / "add.toml"),
                                              method="baseline"),
}


def timed_run(config):
    start = time.perf_counter()
    result = train(config, progress=False)
    return time.perf_counter() - start, len(result.history)


def overhead(config, steps, repeats):
    """``(overhead fraction, training seconds per step, seconds per logged row)``."""
    on = dataclasses.replace(config, steps=steps, checkpoint_every=0)
    off = dataclasses.replace(on, eval_every=steps)
    timed_run(on)  # warm-up
    times = {"on": [], "off": []}
    for _ in range(repeats):  # round-robin, so load changes hit both alike
        for name, run_config in (("on", on), ("off", off)):
            seconds, rows = timed_run(run_config)
            times[name].append(seconds)
            times[f"rows_{name}"] = rows
    t_on, t_off = statistics.median(times["on"]), statistics.median(times["off"])
    row = (t_on - t_off) / (times["rows_on"] - times["rows_off"])
    step = (t_off - times["rows_off"] * row) / steps
    return row / (config.eval_every * step), step, row


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--setups", nargs="+", choices=sorted(SETUPS), default=["default", "demo", "neuralgrok"])
    arguments = parser.parse_args()
    print(f"{machine()}; {arguments.steps} steps per run, median of {arguments.repeats} pairs")
    print("| setup | eval_every | train step (ms) | logged row (ms) | overhead | target |")
    print("|---|---|---|---|---|---|")
    for name in arguments.setups:
        config = SETUPS[name]()
        fraction, step, row = overhead(config, arguments.steps, arguments.repeats)
        print(f"| {name} | {config.eval_every} | {step * 1e3:.1f} | {row * 1e3:.1f} | {fraction:.1%} | <= 5% |",
              flush=True)


if __name__ == "__main__":
    main()
