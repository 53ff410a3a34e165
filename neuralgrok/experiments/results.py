"""Committed results: small copies of finished runs that notebooks and tables read.

A run directory (``neuralgrok run --out`` or one run of a sweep) holds checkpoints and a
``metrics.csv`` row every ``eval_every`` steps. Its copy under ``results/<experiment>/<run name>/``
keeps ``config.toml`` and ``summary.json`` as they are (and a NeuralGrok run's ``amplifier.pt`` and
``snapshots/``, its amplifier during the run) and ``metrics.csv`` downsampled to at most
``max_rows`` rows: log-spaced steps (grokking is plotted on a log-x axis), the first and last row,
and the first row reaching each test-accuracy threshold and the memorisation accuracy, so the steps
and seconds to each threshold read from the copy are those of the full run. Nothing else is copied.

Commands::

    neuralgrok sweep configs/sweep-demo.toml                                      # the runs
    neuralgrok results export runs/sweep-demo results/sweep-demo         # their small copies
    neuralgrok results export --finished-only runs/sweep-x results/sweep-x  # those done so far
    neuralgrok results table results/sweep-demo results/sweep-neuralgrok-tasks   # README's table
    neuralgrok results table1 results/sweep-neuralgrok-table1      # NeuralGrok's Table 1, side by side
    neuralgrok results diff results/sweep-demo /tmp/clone/results/sweep-demo  # a regeneration agrees?

Reading them back (a results directory is laid out like a sweep directory, so
``neuralgrok compare results/sweep-demo --out DIR`` works on it too)::

    from neuralgrok.experiments import results
    runs = results.load("results/sweep-demo")              # neuralgrok.experiments.records.Run objects
    by_method = results.by_field(runs, "method")           # {"baseline": [run, ...], ...}
    seeds = results.matching(runs, method="baseline")      # one group of seeds, in seed order
    results.steps_text(seeds, 0.95)                        # their median steps to 95%: "3,040"
    results.seconds_to(runs[0], 0.95)                      # wall time when test accuracy first reached 95%

A notebook in quick mode (``NEURALGROK_QUICK=1``) regenerates a tiny version of the same sweep live
with :func:`regenerate` and reads it through the same path.
"""
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple, Union
import argparse
import csv
import json
import math
import os
import shutil
import statistics
import sys
from pathlib import Path

import numpy as np

from ..storage.files import atomic_write, atomic_write_text, read_toml, to_toml, toml_value
from .compare import PEAK_MEMORY_KEY, by_seed, diverged, group_runs, median_steps, steps_reached
from .config import PATH_FIELDS
from .methods import METHODS
from .records import (DIVERGED, MEMORISATION_ACCURACY, SNAPSHOTS, TEST_ACCURACY_THRESHOLDS, Run, first_step, load_runs, metrics_csv,
                      read_config, read_metrics, run_directories)
from .sweeps import SWEEP_KEYS, load_sweep, run_sweep
from .tasks import OPERATIONS

DEFAULT_MAX_ROWS = 200
COPIED_FILES = ("config.toml", "summary.json")  # copied verbatim; metrics.csv is downsampled
COPIED_BINARIES = ("amplifier.pt",)  # copied verbatim where a run has them, with its snapshots/
MACHINE_FIELDS = ("wall_time_s", "peak_rss_mib", "build")  # what the same run on another machine changes


def threshold_rows(history: List[Dict[str, float]]) -> Set[int]:
    """Indices of the first rows reaching each test-accuracy threshold and the memorisation accuracy."""
    wanted = [("test_accuracy", threshold) for threshold in TEST_ACCURACY_THRESHOLDS]
    wanted.append(("train_accuracy", MEMORISATION_ACCURACY))
    steps = {first_step(history, column, threshold) for column, threshold in wanted} - {None}
    return {index for index, row in enumerate(history) if row["step"] in steps}


def downsample(history: List[Dict[str, float]], max_rows: int = DEFAULT_MAX_ROWS) -> List[Dict[str, float]]:
    """At most ``max_rows`` of ``history``'s rows, in order: the first and the last, every threshold
    crossing (:func:`threshold_rows`) and, filling the rest, the rows nearest to log-spaced steps
    (as many of those as fit: several targets near the start share a row)."""
    if not isinstance(max_rows, int) or isinstance(max_rows, bool):
        raise TypeError(f"max_rows must be an int, got {type(max_rows).__name__}")
    if max_rows < len(TEST_ACCURACY_THRESHOLDS) + 3:  # room for the first, last and crossing rows
        raise ValueError(f"max_rows={max_rows} must be at least {len(TEST_ACCURACY_THRESHOLDS) + 3}")
    if len(history) <= max_rows:
        return list(history)
    required = {0, len(history) - 1} | threshold_rows(history)
    steps = np.array([row["step"] for row in history], dtype=float)
    positive = np.flatnonzero(steps > 0)  # step 0 has no place on a log axis; it is kept as the first row
    chosen, low, high = required, 1, len(positive)
    while low <= high:  # the most log-spaced targets whose rows still fit
        count = (low + high) // 2
        rows = required | {int(positive[i]) for i in _nearest(np.log(steps[positive]), count)}
        if len(rows) <= max_rows:
            chosen, low = rows, count + 1
        else:
            high = count - 1
    return [history[index] for index in sorted(chosen)]


def _nearest(sorted_values, count):
    """Indices of the entries of ``sorted_values`` nearest to ``count`` evenly spaced points over their range."""
    targets = np.linspace(sorted_values[0], sorted_values[-1], count)
    above = np.clip(np.searchsorted(sorted_values, targets), 1, len(sorted_values) - 1)
    below = above - 1
    return np.where(targets - sorted_values[below] <= sorted_values[above] - targets, below, above)


def export_run(run_dir: Union[str, Path], dest_dir: Union[str, Path], max_rows: int = DEFAULT_MAX_ROWS) -> Path:
    """Copy the finished run ``run_dir`` to ``dest_dir`` (see the module docstring); return ``dest_dir``."""
    run_dir, dest_dir = Path(run_dir), Path(dest_dir)
    missing = [name for name in (*COPIED_FILES, "metrics.csv") if not (run_dir / name).is_file()]
    if missing:
        raise ValueError(f"{run_dir} is not a finished run: it has no {', '.join(missing)}")
    history = downsample(read_metrics(run_dir / "metrics.csv"), max_rows)
    for name in COPIED_FILES:
        atomic_write_text(dest_dir / name, (run_dir / name).read_text())
    binaries = [run_dir / name for name in COPIED_BINARIES if (run_dir / name).is_file()]
    binaries += sorted((run_dir / SNAPSHOTS).glob("*.pt"))
    for source in binaries:
        with atomic_write(dest_dir / source.relative_to(run_dir), "wb") as f:
            f.write(source.read_bytes())
    atomic_write_text(dest_dir / "metrics.csv", metrics_csv(history))
    return dest_dir


def export_runs(paths: List[Union[str, Path]], dest_dir: Union[str, Path], max_rows: int = DEFAULT_MAX_ROWS,
                finished_only: bool = False) -> List[Path]:
    """Export every run in ``paths`` (run directories or sweep directories) to ``dest_dir/<run name>``.

    All must be finished: committed results are complete or not written at all (checked before
    anything is copied), unless ``finished_only``, which exports the finished ones and leaves the
    others (a sweep still running). Returns the new directories.
    """
    directories = run_directories(paths)
    unfinished = [str(d) for d in directories if not (d / "summary.json").is_file()]
    if finished_only:
        directories = [d for d in directories if (d / "summary.json").is_file()]
    elif unfinished:
        raise ValueError(f"unfinished runs (no summary.json): {', '.join(unfinished)}")
    names = [d.name for d in directories]
    if len(set(names)) != len(names):
        raise ValueError(f"two runs share a name, so their copies would share a directory: {sorted(names)}")
    return [export_run(d, Path(dest_dir) / d.name, max_rows) for d in directories]


def amplifier_snapshots(run: Run) -> Dict[int, Any]:
    """A NeuralGrok run's amplifier at each saved step (``--snapshot-every``): ``{step: NeuralAmplifier}``
    in step order, read from ``run.path/snapshots/`` (empty where the run saved none)."""
    from ..optim.amplifier import NeuralAmplifier
    from ..storage.checkpoints import load_weights

    snapshots = {}
    for path in sorted((Path(run.path) / SNAPSHOTS).glob("step_*.pt")):
        state = load_weights(path)
        amplifier = NeuralAmplifier(tuple(run.config["amplifier_hidden"]), rescale=run.config["amplifier_rescale"])
        amplifier.load_state_dict(state["amplifier"])
        snapshots[int(path.stem.split("_")[1])] = amplifier
    return snapshots


def amplifier_spread_rows(runs: List[Run], low: float = 1e-9, high: float = 0.1) -> List[Dict[str, str]]:
    """One row per run that saved amplifier snapshots: its task, method and seed, and the amplifier's
    :meth:`~neuralgrok.optim.amplifier.NeuralAmplifier.spread` (``max w / min w`` over ``±|g|`` in
    ``[low, high]``) at the first and the last snapshot, with the smallest and largest over all of them."""
    rows = []
    for run in runs:
        snapshots = amplifier_snapshots(run)
        if not snapshots:
            continue
        spreads = {step: amplifier.spread(low, high) for step, amplifier in snapshots.items()}
        first, last = min(spreads), max(spreads)
        rows.append({"task": f"{run.config['task']} mod {run.config['p']}", "method": run.config["method"],
                     "seed": str(run.config["seed"]),
                     "spread at the first snapshot": f"{spreads[first]:.4f} (step {first:,})",
                     "at the last": f"{spreads[last]:.4f} (step {last:,})",
                     "min to max over snapshots": f"{min(spreads.values()):.4f} to {max(spreads.values()):.4f}"})
    return rows


def load(results_dir: Union[str, Path]) -> List[Run]:
    """The runs under ``results_dir`` as :class:`neuralgrok.experiments.records.Run` (config, summary, history)."""
    return load_runs([results_dir])


def by_field(runs: List[Run], field: str) -> Dict[Any, List[Run]]:
    """``{value of config field: [runs]}`` in the order the values first appear (seeds in order)."""
    grouped = {}
    for run in by_seed(runs):
        grouped.setdefault(run.config[field], []).append(run)
    return grouped


def matching(runs: List[Run], **fields: Any) -> List[Run]:
    """The runs whose config has every ``field=value`` of ``fields``, in seed order: one group of
    seeds, e.g. ``matching(runs, holdout_k=13, split="strip")``. A field no run has raises ValueError
    (a misspelt field would otherwise select nothing)."""
    unknown = sorted(field for field in fields if not any(field in run.config for run in runs))
    if unknown:
        raise ValueError(f"no run's config has the field(s) {unknown}")
    return by_seed([run for run in runs if all(run.config.get(key) == value for key, value in fields.items())])


def per_seed_text(values: Sequence[Any], digits: int = 3, separator: str = ", ") -> str:
    """One value per seed as ``"a, b, c"`` (joined by ``separator``): ints with thousands separators,
    floats to ``digits`` decimals, ``"-"`` for None or NaN (a threshold not reached, a test part
    without examples), text as it is (``"diverged"``)."""
    def text(value):
        if isinstance(value, str):
            return value
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "-"
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            return f"{value:,}"
        return f"{value:.{digits}f}"

    return separator.join(text(value) for value in values)


def bound_text(pair: Tuple[float, bool]) -> str:
    """A median ``(value, is_lower_bound)`` as text: ``"3,040"``, or ``"> 3,520"`` for a lower bound."""
    value, unreached = pair
    return f"> {value:,.0f}" if unreached else f"{value:,.0f}"


def steps_text(runs: List[Run], threshold: float = 0.95) -> str:
    """The median over ``runs`` (seeds) of the steps to ``threshold`` test accuracy, as text: ``"3,040"``,
    or ``"> 3,520"`` when the median is a lower bound because some run never got there (it counts as
    its steps budget, see :func:`neuralgrok.experiments.compare.median_steps`)."""
    return bound_text(median_steps(steps_reached(runs, steps_key(threshold))))


def seconds_to(run: Run, threshold: float) -> Optional[float]:
    """Wall time (s) of the first logged row with test accuracy >= ``threshold``; None if never."""
    return next((row["wall_time_s"] for row in run.history if row["test_accuracy"] >= threshold), None)


def seconds_reached(runs: List[Run], threshold: float) -> List[Tuple[float, bool]]:
    """``(seconds, unreached)`` per run, sorted; a run that never reached ``threshold`` counts as its
    whole wall time (a lower bound), as :func:`neuralgrok.experiments.compare.steps_reached` counts steps."""
    pairs = []
    for run in runs:
        seconds = seconds_to(run, threshold)
        pairs.append((run.summary["wall_time_s"], True) if seconds is None else (seconds, False))
    return sorted(pairs)


def median_seconds_to(runs: List[Run], threshold: float) -> Tuple[float, bool]:
    """Median over ``runs`` of the seconds to ``threshold``: ``(seconds, is_lower_bound)``."""
    return median_steps(seconds_reached(runs, threshold))


def steps_key(threshold: float) -> str:
    """The summary.json key of the steps to ``threshold`` test accuracy (one of the runner's thresholds)."""
    if threshold not in TEST_ACCURACY_THRESHOLDS:
        raise ValueError(f"threshold={threshold!r}: the runs record steps to {list(TEST_ACCURACY_THRESHOLDS)} only")
    return f"steps_to_test_{round(threshold * 100)}"


def cost_rows(runs: List[Run], threshold: float = 0.95, field: str = "method") -> List[Dict[str, Any]]:
    """Per value of ``field`` (a group of seeds): the median steps and seconds to ``threshold`` test
    accuracy, each with a flag saying it is a lower bound (some run never got there), and the median
    wall time per step in ms (evaluation included)."""
    rows = []
    for value, group in by_field(runs, field).items():
        steps, steps_bound = median_steps(steps_reached(group, steps_key(threshold)))
        seconds, seconds_bound = median_seconds_to(group, threshold)
        rows.append({field: value, "seeds": len(group), "steps": steps, "steps_lower_bound": steps_bound,
                     "seconds": seconds, "seconds_lower_bound": seconds_bound,
                     "ms_per_step": statistics.median(1000 * run.summary["wall_time_s"] / run.config["steps"]
                                                      for run in group)})
    return rows


# Published steps to 95% test accuracy recorded in shared/papers.md, keyed by (task, method): Grokfast's
# README, a*b mod 97 with 50% train.
PUBLISHED_STEPS = {("a*b", "baseline"): "39,890 (Grokfast README, p 97, its setting)",
                   ("a*b", "grokfast-ema"): "910 (Grokfast README, wd 0.005)",
                   ("a*b", "grokfast-ma"): "790 (Grokfast README, wd 0.01)"}
# NeuralGrok's Table 1 (steps to 95% test accuracy; None: fails within 1e6 steps), keyed by (task, method),
# shown for runs at its setting: p = 97 (7 for a*c+b*d-e) with Adam's L2 weight decay 1e-3.
TABLE1_STEPS = {("a+b", "baseline"): 1650, ("a+b", "grokfast-ma"): 1780, ("a+b", "grokfast-ema"): 1820,
                ("a+b", "neuralgrok"): 900,
                ("a-b", "baseline"): 4330, ("a-b", "grokfast-ma"): 2990, ("a-b", "grokfast-ema"): 1340,
                ("a-b", "neuralgrok"): 1467,
                ("a*b", "baseline"): 1280, ("a*b", "grokfast-ma"): 1150, ("a*b", "grokfast-ema"): 1400,
                ("a*b", "neuralgrok"): 918,
                ("a*a-b", "baseline"): 4820, ("a*a-b", "grokfast-ma"): 3830, ("a*a-b", "grokfast-ema"): 2730,
                ("a*a-b", "neuralgrok"): 1845,
                ("a*c+b*d-e", "baseline"): None, ("a*c+b*d-e", "grokfast-ma"): 8853, ("a*c+b*d-e", "grokfast-ema"): None,
                ("a*c+b*d-e", "neuralgrok"): 1896}
TABLE1_SETTING = {"weight_decay": 1e-3, "optimizer": "adam"}  # and p 97 (7 for the five-operand task)


def published_steps(config: Dict[str, Any]) -> str:
    """The published steps to 95% for a run's ``config`` (a dict): NeuralGrok's Table 1 at its setting,
    else Grokfast's README figure for the task and method, else ``"-"``."""
    task, method = config["task"], config["method"]
    at_table1 = (config["p"] == (7 if task == "a*c+b*d-e" else 97)
                 and all(config.get(key) == value for key, value in TABLE1_SETTING.items()))
    if at_table1 and (task, method) in TABLE1_STEPS:
        steps = TABLE1_STEPS[(task, method)]
        return "fails within 1e6 (NeuralGrok Table 1)" if steps is None else f"{steps:,} (NeuralGrok Table 1)"
    return PUBLISHED_STEPS.get((task, method), "-")
TABLE_KEY = ("task", "p", "weight_decay", "method")  # one row of the steps table per value


def steps_table_rows(runs: List[Run], thresholds: Sequence[float] = (0.95, 0.99)) -> List[Dict[str, Any]]:
    """The task x method table of README and BENCHMARKS.md: one row per (task, p, weight decay, method),
    in the registries' order of tasks and methods. Each has the median steps to each threshold with every
    seed's step ("-": never reached; a median counting one is a lower bound, "> N"), the median
    seconds to the first threshold, the median peak RSS and the published number where one exists. A
    seed that diverged before reaching a threshold shows ``diverged`` there (and counts as unreached).

    Runs of one row must differ only in their seed: a ``ValueError`` names the other fields."""
    groups = {}
    for run in by_seed(runs):
        groups.setdefault(tuple(run.config[key] for key in TABLE_KEY), []).append(run)

    def order(key):  # registry order; names not registered (a user's own task) after, alphabetically
        def rank(names, name):
            return (list(names).index(name), "") if name in names else (len(names), name)

        task, p, weight_decay, method = key
        return (*rank(OPERATIONS, task), p, -weight_decay, *rank(METHODS, method))

    rows = []
    for (task, p, weight_decay, method), group in sorted(groups.items(), key=lambda item: order(item[0])):
        fields, _ = group_runs(group)
        if fields:
            raise ValueError(f"the runs of {task} mod {p}, weight decay {weight_decay:g}, {method} also differ "
                             f"in {', '.join(fields)}: one setting per row")
        row = {"task": f"{task} mod {p}", "weight decay": f"{weight_decay:g}", "method": method,
               "seeds": len(group)}
        for threshold in thresholds:
            reached = [run.summary.get(steps_key(threshold)) for run in group]
            per_seed = per_seed_text([DIVERGED if steps is None and diverged(run) else steps
                                      for steps, run in zip(reached, group)], separator=" / ")
            row[f"steps to {threshold:.0%}: median (per seed)"] = f"{steps_text(group, threshold)} ({per_seed})"
        row[f"seconds to {thresholds[0]:.0%}: median"] = bound_text(median_seconds_to(group, thresholds[0]))
        memory = [run.summary.get(PEAK_MEMORY_KEY) for run in group]
        row["peak RSS (MiB): median"] = "-" if None in memory else f"{statistics.median(memory):,.0f}"
        row["published"] = published_steps(group[0].config)
        rows.append(row)
    return rows


def seeds_range_text(runs: List[Run], threshold: float = 0.95) -> str:
    """The steps to ``threshold`` over ``runs`` (seeds) as ``"median (min to max, n seeds)"``, e.g.
    ``"1,296 (1,250 to 1,340, 3 seeds)"``; a seed that never got there counts as its budget, shown ``> N``
    (a median or maximum ``> N`` is a lower bound). One seed: just its step."""
    reached = steps_reached(runs, steps_key(threshold))
    median = bound_text(median_steps(reached))
    if len(reached) == 1:
        return median
    return f"{median} ({bound_text(reached[0])} to {bound_text(reached[-1])}, {len(reached)} seeds)"


def table1_rows(runs: List[Run], threshold: float = 0.95) -> List[Dict[str, str]]:
    """NeuralGrok's Table 1 beside ``runs``: one row per method (registry order), one column per task
    (Table 1's order): :func:`seeds_range_text` of the steps to ``threshold`` test accuracy, followed by
    the paper's number in brackets where Table 1 has one (its numbers are steps to 95%, so they are
    shown only for ``threshold`` 0.95); ``"-"`` where no run of that cell is committed. Runs of one cell
    must differ only in their seed, as in :func:`steps_table_rows` (``ValueError`` otherwise)."""
    moduli = {run.config["task"]: run.config["p"] for run in runs}
    tasks = [task for task in dict.fromkeys(task for task, _ in TABLE1_STEPS) if task in moduli]
    methods = [method for method in METHODS if any(run.config["method"] == method for run in runs)]
    rows = []
    for method in methods:
        row = {"method": method}
        for task in tasks:
            cell = [run for run in runs if run.config["task"] == task and run.config["method"] == method]
            fields, _ = group_runs(cell)
            if fields:
                raise ValueError(f"the {task} {method} runs also differ in {', '.join(fields)}: one setting per cell")
            text = seeds_range_text(cell, threshold) if cell else "-"
            paper = TABLE1_STEPS.get((task, method), "") if threshold == 0.95 else ""
            if paper != "":
                text += " [fails within 1e6]" if paper is None else f" [{paper:,}]"
            row[f"{task} mod {moduli[task]}"] = text
        rows.append(row)
    return rows


def markdown_table(rows: List[Dict[str, Any]]) -> str:
    """``rows`` (dicts with the same keys) as a GitHub Markdown table."""
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(str(value).replace("|", r"\|") for value in row.values()) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _number(text):
    """A CSV cell as a float (empty: NaN), or the text itself if it is not a number."""
    try:
        return float(text) if text != "" else math.nan
    except ValueError:
        return text


def _deviation(committed, regenerated):
    """How far apart two values are: 0 if equal (NaN equals NaN), inf if one is NaN or not a number."""
    if committed == regenerated:
        return 0.0
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (committed, regenerated))
    if numbers and math.isnan(committed) and math.isnan(regenerated):
        return 0.0
    if not numbers or math.isnan(committed) or math.isnan(regenerated):
        return math.inf
    return abs(committed - regenerated)


def _csv_differences(name, committed_path, regenerated_path, atol):
    """Differences between two CSV files whose rows are keyed by their first column (step, measure)."""
    tables = []
    for path in (committed_path, regenerated_path):
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            key_column = reader.fieldnames[0]
            tables.append({row[key_column]: row for row in reader})
    committed, regenerated = tables
    found = []
    only = [sorted(set(a) - set(b), key=_number) for a, b in ((committed, regenerated), (regenerated, committed))]
    if any(only):
        found.append(f"{name}: {key_column} only committed {only[0][:5]}, only regenerated {only[1][:5]}")
    common = [key for key in committed if key in regenerated]
    columns = [c for c in next(iter(committed.values()), {}) if c not in MACHINE_FIELDS]
    for column in columns:
        worst, where = max(((_deviation(_number(committed[key].get(column, "")),
                                        _number(regenerated[key].get(column, ""))), key) for key in common),
                           key=lambda pair: pair[0], default=(0.0, None))
        if worst > atol:
            found.append(f"{name}: {column} differs by up to {worst:.3g} (at {key_column} {where})")
    return found


def differences(committed_dir: Union[str, Path], regenerated_dir: Union[str, Path], atol: float = 0.0) -> List[str]:
    """How the runs under ``regenerated_dir`` differ from those under ``committed_dir``, as lines of
    text (empty: they agree). Configs, summaries, ``metrics.csv`` and any other CSV beside them
    (``analysis.csv``) are compared, rows matched by their first column; measured numbers may differ
    by up to ``atol``, configs (a field an older one lacks read as its default) not at all.
    :data:`MACHINE_FIELDS` (wall time, peak memory, build) are left out."""
    committed = {d.name: d for d in run_directories([committed_dir])}
    regenerated = {d.name: d for d in run_directories([regenerated_dir])}
    found = [f"{name}: only in {where}" for names, other, where in
             ((committed, regenerated, committed_dir), (regenerated, committed, regenerated_dir))
             for name in sorted(set(names) - set(other))]
    for name in sorted(set(committed) & set(regenerated)):
        a, b = committed[name], regenerated[name]
        configs = read_config(a), read_config(b)
        summaries = [{key: value for key, value in json.loads((d / "summary.json").read_text()).items()
                      if key not in MACHINE_FIELDS} for d in (a, b)]
        for file, (x, y), tolerance in (("config.toml", configs, 0.0), ("summary.json", summaries, atol)):
            for key in sorted(set(x) | set(y)):
                if _deviation(x.get(key), y.get(key)) > tolerance:
                    found.append(f"{name}: {file} {key} {x.get(key)!r} -> {y.get(key)!r}")
        for path in sorted(a.glob("*.csv")):
            if not (b / path.name).is_file():
                found.append(f"{name}: {path.name} missing from {regenerated_dir}")
                continue
            found += [f"{name}: {line}" for line in _csv_differences(path.name, path, b / path.name, atol)]
    return found


def sweep_text(out: Union[str, Path], base: Dict[str, Any], grid: Dict[str, List[Any]]) -> str:
    """A sweep file's text (``out``, ``[base]``, ``[grid]``), readable by :func:`neuralgrok.experiments.sweeps.load_sweep`."""
    return f"out = {toml_value(str(out))}\n[base]\n{to_toml(base)}[grid]\n{to_toml(grid)}"


def regenerate(sweep_file: Union[str, Path], work_dir: Union[str, Path], overrides: Dict[str, Any],
               log: Callable[[str], None] = print) -> Path:
    """Run a shrunk copy of ``sweep_file`` under ``work_dir`` and export it; return the results directory.

    ``overrides`` replaces values of the file's ``[base]`` or ``[grid]`` (a list for a grid key),
    e.g. ``{"steps": 60, "p": 11, "seed": [0]}``. The runs go to ``work_dir/runs``, their exported
    copies to ``work_dir/results``, read back with :func:`load` like committed results.
    """
    sweep = read_toml(sweep_file)
    base, grid = dict(sweep.get("base", {})), dict(sweep.get("grid", {}))
    for key, value in overrides.items():
        if key in SWEEP_KEYS:
            raise ValueError(f"override {key!r} is a sweep table, not a TrainConfig field")
        (grid if key in grid else base)[key] = value
    work_dir = Path(work_dir)
    here = Path(sweep_file).parent  # the file's relative paths, made absolute for its copy elsewhere
    base = {key: os.path.abspath(here / value) if key in PATH_FIELDS and value else value
            for key, value in base.items()}
    grid = {key: [os.path.abspath(here / v) if v else v for v in values] if key in PATH_FIELDS else values
            for key, values in grid.items()}
    shrunk = work_dir / Path(sweep_file).name
    atomic_write_text(shrunk, sweep_text("runs", base, grid))  # out: relative to the copy, in work_dir
    if run_sweep(load_sweep(shrunk), jobs=1, log=log):
        raise RuntimeError(f"some runs of {shrunk} failed; see log.txt in their directories under {work_dir / 'runs'}")
    results_dir = work_dir / "results"
    shutil.rmtree(results_dir, ignore_errors=True)  # only this sweep's runs
    export_runs([work_dir / "runs"], results_dir)
    return results_dir


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="neuralgrok results", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser("export", help="copy finished runs, metrics downsampled, to a results directory")
    export.add_argument("runs", nargs="+", help="run directories or sweep directories")
    export.add_argument("dest", help="results directory, e.g. results/sweep-demo")
    export.add_argument("--max-rows", type=int, default=DEFAULT_MAX_ROWS,
                        help=f"metrics rows kept per run (default: {DEFAULT_MAX_ROWS})")
    export.add_argument("--finished-only", action="store_true",
                        help="export the finished runs and leave the unfinished ones (a sweep still running)")
    table = commands.add_parser("table", help="print the task x method steps-to-grok table (Markdown)")
    table.add_argument("results", nargs="+", help="results or sweep directories, e.g. results/sweep-demo")
    table1 = commands.add_parser("table1", help="print NeuralGrok's Table 1 beside these runs (Markdown): "
                                                "method x task, median (min to max, seeds) [paper]")
    table1.add_argument("results", nargs="+", help="e.g. results/sweep-neuralgrok-table1")
    table1.add_argument("--threshold", type=float, default=0.95, choices=TEST_ACCURACY_THRESHOLDS,
                        help="test accuracy (default: 0.95, Table 1's)")
    spread = commands.add_parser("amplifier", help="print each NeuralGrok run's amplifier spread (Markdown): "
                                                    "max w / min w over |g| in [low, high], first and last snapshot")
    spread.add_argument("results", nargs="+", help="e.g. results/sweep-neuralgrok-table1")
    spread.add_argument("--low", type=float, default=1e-9, help="smallest |g| (default: 1e-9)")
    spread.add_argument("--high", type=float, default=0.1, help="largest |g| (default: 0.1)")
    diff = commands.add_parser("diff", help="compare regenerated results with committed ones; exit 1 if they differ",
                               description="Compare two results (or sweep) directories run by run, leaving out "
                                           f"{', '.join(MACHINE_FIELDS)}; print each difference, exit 1 if any.")
    diff.add_argument("committed", help="e.g. results/sweep-demo")
    diff.add_argument("regenerated", help="e.g. the same directory in a clone that ran bench/reproduce_*.sh")
    diff.add_argument("--atol", type=float, default=0.0, help="numbers may differ by this much (default: 0, exact)")
    arguments = parser.parse_args(argv)
    try:
        if arguments.command == "table":
            print(markdown_table(steps_table_rows(load_runs(arguments.results))), end="")
            return 0
        if arguments.command == "table1":
            print(markdown_table(table1_rows(load_runs(arguments.results), arguments.threshold)), end="")
            return 0
        if arguments.command == "amplifier":
            rows = amplifier_spread_rows(load_runs(arguments.results), arguments.low, arguments.high)
            if not rows:
                raise ValueError(f"no run under {', '.join(arguments.results)} saved amplifier snapshots "
                                 "(NeuralGrok runs with --snapshot-every)")
            print(markdown_table(rows), end="")
            return 0
        if arguments.command == "diff":
            found = differences(arguments.committed, arguments.regenerated, arguments.atol)
            print("\n".join(found) if found else f"{arguments.regenerated} agrees with {arguments.committed} "
                  f"(leaving out {', '.join(MACHINE_FIELDS)})")
            return 1 if found else 0
        written = export_runs(arguments.runs, arguments.dest, arguments.max_rows, arguments.finished_only)
    except (ValueError, TypeError) as error:
        parser.error(str(error))  # exits with status 2
    print(f"{len(written)} runs exported to {arguments.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
