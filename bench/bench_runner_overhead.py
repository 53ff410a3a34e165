"""Evaluation and logging overhead of the runner, as a fraction of training time.

    .venv/bin/python bench/bench_runner_overhead.py [--evals 10] [--repeats 3] [--setups default demo]

Whole runs take 7 x evals x eval_every steps per setup: minutes for the demo, most of an hour for
"default" (1.4 s steps) and "neuralgrok" (eval_every 200); ``--evals 0`` times the parts only.

For each setup, whole ``train()`` runs of ``--evals`` x ``eval_every`` steps alternate in one
process: with the setup's ``eval_every`` ("on") and with ``eval_every = steps`` ("off": only the
two rows at the first and the last step); ``--evals 0`` skips them. A logged row costs ``(t_on - t_off) / (n_on - n_off)`` (n = rows logged), and
the training alone ``t_off - n_off * row``; the overhead is the logging cost per ``eval_every``
steps over the training time of those steps. Times are medians over ``--repeats`` pairs.
Target: <= 5% at the default ``eval_every``.

Whole runs on a loaded machine measure small overheads with a large error (the difference of two
noisy times), so the parts are also timed directly in the same process: one training step
(closure + optimizer step, as the loop runs it) and one logged row's extra work (the evaluation
forward, AGE of the gradient, weight norm, the config's measures: ``common.RunnerParts``), each the
median of ``--repeats`` x 5 calls; their ratio ``row / (eval_every x step)`` is the "parts" column.

Setups: ``default`` = TrainConfig()'s defaults (a+b mod 97, 2 x 128 transformer, full batch,
eval_every 10); ``demo`` = neuralgrok.experiments.demo.DEMO_CONFIG (p = 47, 1 x 64, batches of 512,
eval_every 20); ``neuralgrok`` = configs/neuralgrok/add.toml (p = 97, 2 x 128, batches of 512,
its eval_every), with the baseline method so that only the runner is timed. A path to a TOML
config is a setup too (e.g. configs/grokking_insight/strip_k40.toml).

The process first applies :func:`neuralgrok.allocator.keep_freed_memory`, as ``neuralgrok run``
does; ``--glibc-defaults`` leaves malloc as it is.
"""
import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import RunnerParts, machine, median_seconds  # noqa: E402

from neuralgrok.allocator import keep_freed_memory  # noqa: E402
from neuralgrok.experiments.demo import DEMO_CONFIG  # noqa: E402
from neuralgrok.experiments.config import TrainConfig  # noqa: E402
from neuralgrok.experiments.loop import train  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SETUPS = {
    "default": lambda: TrainConfig(threads=1),
    "demo": lambda: DEMO_CONFIG,
    "neuralgrok": lambda: dataclasses.replace(TrainConfig.from_toml(ROOT / "configs" / "neuralgrok" / "add.toml"),
                                              method="baseline"),
}


def parts_overhead(config, repeats):
    """``(row / (period x step), step seconds, row seconds, period)`` from the loop's parts timed one by one;
    ``period`` is the steps between logged rows (``eval_every``, or one epoch of batches where it is 0)."""
    parts = RunnerParts(config)
    period = config.eval_every or parts.batches.steps_per_epoch
    calls = repeats * 5
    step_seconds = median_seconds(parts.step, repeats=calls)  # first: the row's AGE needs gradients
    row_seconds = median_seconds(parts.row, repeats=calls)
    return row_seconds / (period * step_seconds), step_seconds, row_seconds, period


def timed_run(config):
    start = time.perf_counter()
    result = train(config, progress=False)
    return time.perf_counter() - start, len(result.history)


def overhead(config, period, evals, repeats):
    """``(overhead fraction, training seconds per step, seconds per logged row)``, a row every ``period`` steps."""
    steps = evals * period
    on = dataclasses.replace(config, steps=steps, checkpoint_every=0, eval_every=period)
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
    return row / (period * step), step, row


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evals", type=int, default=10, help="logged rows per whole run; 0 = no whole runs")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--setups", nargs="+", default=["default", "demo", "neuralgrok"],
                        help=f"{', '.join(SETUPS)} or config files")
    parser.add_argument("--glibc-defaults", action="store_true", help="do not tune malloc as neuralgrok run does")
    arguments = parser.parse_args()
    tuned = not arguments.glibc_defaults and keep_freed_memory()
    print(f"{machine()}; {arguments.evals} x eval_every steps per run, median of {arguments.repeats} pairs; "
          f"malloc {'tuned as by neuralgrok run' if tuned else 'as glibc defaults'}")
    print("| setup | eval_every | parts: step (ms) | parts: row (ms) | overhead, parts | whole runs: step (ms) | "
          "whole runs: row (ms) | overhead, whole runs | target |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in arguments.setups:
        config = SETUPS[name]() if name in SETUPS else TrainConfig.from_toml(name)
        parts, part_step, part_row, period = parts_overhead(config, arguments.repeats)
        parts_cells = f"{part_step * 1e3:.1f} | {part_row * 1e3:.1f} | {parts:.1%}"
        if arguments.evals:
            fraction, step, row = overhead(config, period, arguments.evals, arguments.repeats)
            whole = f"{step * 1e3:.1f} | {row * 1e3:.1f} | {fraction:.1%}"
        else:
            whole = "- | - | -"
        print(f"| {name} | {config.eval_every or f'0 (an epoch: {period})'} | {parts_cells} | {whole} | <= 5% |", flush=True)


if __name__ == "__main__":
    main()
