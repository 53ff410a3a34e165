"""Milliseconds per training step of Gu et al.'s base run at p = 97, on one thread, split into its parts.

    OMP_NUM_THREADS=1 .venv/bin/python bench/gu_step.py [--config configs/grokking_insight/base_add.toml]
        [--rounds 3] [--run-steps 20] [--chunks 256 512 2048] [--profile] [--changes | --option FIELD=VALUE]

The config's run (a+b mod 97, the 2 x 128 Nanda transformer, full batch: 4,704 training pairs, 4,705 test pairs;
``med,med_cv`` logged every ``eval_every`` = 20 steps) is built as the runner builds it
(``common.RunnerParts``), and each round times, in this order:

- ``step``: the optimizer step alone, as the loop runs it between logged rows: the closure (zero the gradients,
  forward and backward over the 4,704 pairs) and the optimizer's step; the median of ``--steps-per-round`` calls;
- ``row``: a logged row's extra work: the evaluation (the test split in chunks, losses and accuracies), the
  weight norm, the config's measures and the gradient's AGE; the median of ``--rows-per-round`` calls;
- ``run``: ``train()`` of ``--run-steps`` steps, whole (the setup, the steps, a row every ``eval_every`` steps and
  one at the end, the last iteration's forward and backward), and ``setup``, building what ``train()`` builds
  first (data, model, optimizer, evaluator).

The loop's own overhead per step is what the whole run costs beyond its parts:
``(run - setup - (run_steps + 1) x step - rows x row) / run_steps`` (rows at 0, eval_every, ... and the last; the
``+ 1`` step is the last iteration's forward and backward, which has no optimizer step: slightly over-counted).
It is the difference of large times, so a few ms either way are noise. Per step at the config's ``eval_every``:
``step + row / eval_every + loop``. Each figure is the median over ``--rounds`` rounds.

``--changes`` times only ``step`` and ``row``, this checkout's change to them undone (:func:`undo_changes`: the
Nanda model's evaluation through every position) and as it is, in turns within each round, in one process: the
change's own effect, with less of the machine's drift.
``--chunks`` also times the evaluation alone at each chunk size (examples per no-grad forward); ``--profile``
prints ``torch.profiler``'s table over 3 steps and 1 row. One line of JSON at the end holds the medians (ms),
so runs of two checkouts back to back can be compared, e.g. before and after a change (BENCHMARKS.md)::

    for tree in /tmp/before . /tmp/before .; do PYTHONPATH=$tree OMP_NUM_THREADS=1 .venv/bin/python bench/gu_step.py; done
"""
import argparse
import dataclasses
import json
import statistics
import sys
import time
import tomllib
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import RunnerParts, machine, median_seconds  # noqa: E402

import neuralgrok  # noqa: E402
from neuralgrok.allocator import keep_freed_memory  # noqa: E402
from neuralgrok.experiments.config import ConfigError, TrainConfig  # noqa: E402
from neuralgrok.experiments.loop import train  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def timed(fn):
    """``fn()``'s wall time in seconds."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def round_times(config, steps, rows, run_steps):
    """One round's seconds: ``step``, ``row`` (medians of ``steps`` and ``rows`` calls), ``setup`` and ``run``."""
    parts = RunnerParts(config)
    times = {"step": median_seconds(parts.step, repeats=steps, warmup=1),
             "row": median_seconds(parts.row, repeats=rows, warmup=1),
             "setup": timed(lambda: RunnerParts(config))}
    times["run"] = timed(lambda: train(dataclasses.replace(config, steps=run_steps, checkpoint_every=0),
                                       progress=False))
    return times


def undo_changes(parts):
    """``parts`` as the evaluation ran before this benchmark's change (commit b848e45): a Nanda model that runs
    every position through its last block in evaluation too."""
    model = parts.model
    model.forward = lambda inputs: model.head(model.hidden_states(inputs)[:, -1])
    return parts


def change_times(config, rounds, steps, rows, option=None):
    """Median ms of ``step`` and ``row`` with the change undone (``before``) and as it is (``after``), the two
    taking turns within each round, first one then the other first (a drift within rounds hits both alike).
    With ``option`` (a ``{field: value}`` override of the config), ``before`` is the config as it is and
    ``after`` the config with the override, and no code change is undone."""
    times = {(variant, part): [] for variant in ("before", "after") for part in ("step", "row")}
    for index in range(rounds):
        for variant in ("before", "after")[::1 if index % 2 == 0 else -1]:
            if option is None:
                parts = RunnerParts(config)
                if variant == "before":
                    undo_changes(parts)
            else:
                parts = RunnerParts(dataclasses.replace(config, **option) if variant == "after" else config)
            times[variant, "step"].append(median_seconds(parts.step, repeats=steps, warmup=1))
            times[variant, "row"].append(median_seconds(parts.row, repeats=rows, warmup=1))
    return {key: 1e3 * statistics.median(values) for key, values in times.items()}


def chunk_times(config, chunks, repeats):
    """Seconds of one evaluation (the no-grad forwards and the metrics) at each chunk size."""
    parts = RunnerParts(config)
    seconds = {}
    for chunk in chunks:
        evaluator = RunnerParts(config, chunk).evaluator
        seconds[chunk] = median_seconds(lambda: evaluator(parts.model), repeats=repeats, warmup=1)
    return seconds


def profile(config):
    """torch.profiler's table (self CPU time) over 3 steps and 1 row."""
    from torch.profiler import ProfilerActivity, profile as torch_profile

    parts = RunnerParts(config)
    parts.step()
    with torch_profile(activities=[ProfilerActivity.CPU]) as profiler:
        for _ in range(3):
            parts.step()
        parts.row()
    return profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=20)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "grokking_insight" / "base_add.toml"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps-per-round", type=int, default=4)
    parser.add_argument("--rows-per-round", type=int, default=3)
    parser.add_argument("--run-steps", type=int, default=20, help="steps of the whole train() run of each round")
    parser.add_argument("--chunks", type=int, nargs="*", default=[], help="evaluation chunk sizes to time")
    parser.add_argument("--profile", action="store_true", help="print torch.profiler's table first")
    parser.add_argument("--changes", action="store_true",
                        help="time step and row only, with this checkout's changes undone and as they are, in turns")
    parser.add_argument("--option", metavar="FIELD=VALUE",
                        help="time step and row only, with the config as it is and with FIELD set to VALUE (a TOML "
                             "value, e.g. train_last_position_only=true), in turns")
    arguments = parser.parse_args()
    keep_freed_memory()  # as `neuralgrok run` does
    config = dataclasses.replace(TrainConfig.from_toml(arguments.config), threads=1)
    torch.set_num_threads(1)
    print(f"{machine()}; neuralgrok from {Path(neuralgrok.__file__).parent}; {arguments.config}")
    if arguments.profile:
        print(profile(config))
    if arguments.chunks:
        for chunk, seconds in chunk_times(config, arguments.chunks, repeats=5).items():
            print(f"evaluation in chunks of {chunk}: {seconds * 1e3:.1f} ms")
    if arguments.changes or arguments.option:
        option = None
        if arguments.option:
            try:
                option = TrainConfig.typed_values(tomllib.loads(arguments.option))  # unknown or ill-typed fields
            except tomllib.TOMLDecodeError as error:
                parser.error(f"--option {arguments.option!r} is not FIELD=VALUE with a TOML value: {error}")
            except ConfigError as error:
                parser.error(f"--option {arguments.option!r}: {error}")
        ms = change_times(config, arguments.rounds, arguments.steps_per_round, arguments.rows_per_round, option)
        for part in ("step", "row"):
            print(f"{part}: {ms['before', part]:.1f} ms before, {ms['after', part]:.1f} ms after "
                  f"({ms['after', part] / ms['before', part]:.2f}x), median of {arguments.rounds} rounds")
        print(json.dumps({f"{variant}_{part}": round(value, 2) for (variant, part), value in ms.items()}))
        return
    rounds = [round_times(config, arguments.steps_per_round, arguments.rows_per_round, arguments.run_steps)
              for _ in range(arguments.rounds)]
    ms = {key: 1e3 * statistics.median(r[key] for r in rounds) for key in rounds[0]}
    rows = len(range(0, arguments.run_steps + 1, config.eval_every)) + (arguments.run_steps % config.eval_every > 0)
    ms["loop"] = statistics.median(
        1e3 * (r["run"] - r["setup"] - (arguments.run_steps + 1) * r["step"] - rows * r["row"]) / arguments.run_steps
        for r in rounds)
    ms["per_step"] = ms["step"] + ms["row"] / config.eval_every + ms["loop"]
    print(f"step {ms['step']:.1f} ms | row {ms['row']:.1f} ms ({ms['row'] / config.eval_every:.1f} ms a step at "
          f"eval_every {config.eval_every}) | loop overhead {ms['loop']:.1f} ms a step | in all {ms['per_step']:.1f} "
          f"ms a step | setup {ms['setup']:.0f} ms; whole run of {arguments.run_steps} steps {ms['run']:.0f} ms; "
          f"median of {arguments.rounds} rounds")
    print(json.dumps({"neuralgrok": str(Path(neuralgrok.__file__).parent), **{k: round(v, 2) for k, v in ms.items()}}))


if __name__ == "__main__":
    main()
