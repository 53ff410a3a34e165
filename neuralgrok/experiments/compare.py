"""Compare finished runs, grouped by everything in their config except the seed.

Commands::

    neuralgrok compare runs/sweep-demo                          # a sweep directory: all its runs
    neuralgrok compare runs/a runs/b runs/sweep-x --out runs/cmp

Each argument is a run directory (it holds ``config.toml``) or a directory of them (a sweep's
``out``). Runs without ``summary.json`` (unfinished) are left out with a warning. The table has one
row per group: the config fields that differ between groups (task, method, ...), the number of
seeds, the median and the range over seeds of the steps to 50/90/95/99% test accuracy, the
median wall time and the median peak memory (``peak_rss_mib`` of summary.json: the run process's
peak resident set size in MiB, see :func:`neuralgrok.experiments.records.peak_rss_mib`; "-" for runs written
before it was recorded). It is printed and written to ``OUT/comparison.md`` and ``OUT/comparison.csv``;
``OUT/comparison_accuracy.png`` overlays the test-accuracy curves (a colour per group, a thin
line per seed, log-x).

A run that diverged (its loss or gradient became NaN or infinite; ``stop_reason = "diverged"`` in its
summary) stays in its group and never reached the thresholds it had not reached by then; a
``diverged`` column then counts such runs per group (only when some run diverged). Runs ended by the
plateau stop (``stop_reason = "plateau"``: a hold-out whose test accuracy stopped moving) are counted
the same way, in a ``plateau`` column.

A run that never reached a threshold is never dropped: it counts as "more than its steps budget"
(shown ``>4000`` for a budget of 4,000 steps) and sorts after every run that reached it. A median
is the middle value, or the mean of the two middle values for an even count; a median involving
an unreached run is a lower bound, shown with ">" (two seeds at 3,000 and never by 4,000: ``>3500``).
"""
from typing import Any, Dict, List, Sequence, Tuple, Union
import argparse
import csv
import io
import statistics
from pathlib import Path

from ..storage.files import atomic_write_text
from .records import DIVERGED, PLATEAU, TEST_ACCURACY_THRESHOLDS, CompareError, Run, load_runs

THRESHOLD_KEYS = tuple(f"steps_to_test_{round(t * 100)}" for t in TEST_ACCURACY_THRESHOLDS)
COUNTED_STOPS = (DIVERGED, PLATEAU)  # stop reasons counted per group, each in its column where some run has it
PEAK_MEMORY_KEY = "peak_rss_mib"


def by_seed(runs: List[Run]) -> List[Run]:
    """``runs`` sorted by their config's seed (a run without one counts as seed 0)."""
    return sorted(runs, key=lambda run: run.config.get("seed", 0))


def group_runs(runs: List[Run]) -> Tuple[List[str], Dict[Tuple[Any, ...], List[Run]]]:
    """``(fields, groups)``: the non-seed config fields that differ between runs, and the runs
    grouped by those fields' values (the same as by their whole config except the seed)."""
    keys = dict.fromkeys(key for run in runs for key in run.config if key != "seed")
    fields = [key for key in keys if len({run.config.get(key) for run in runs}) > 1]
    groups = {}
    for run in by_seed(runs):
        groups.setdefault(tuple(run.config.get(key) for key in fields), []).append(run)
    return fields, groups


def steps_reached(runs: List[Run], key: str) -> List[Tuple[float, bool]]:
    """``(steps, unreached)`` per run, sorted; an unreached threshold counts as the steps budget."""
    return sorted((run.summary[key], False) if run.summary.get(key) is not None else (run.config["steps"], True)
                  for run in runs)


def median_steps(ordered: List[Tuple[float, bool]]) -> Tuple[float, bool]:
    """Median of sorted ``(steps, unreached)`` pairs, itself such a pair (unreached: a lower bound)."""
    low, high = ordered[(len(ordered) - 1) // 2], ordered[len(ordered) // 2]
    return (low[0] + high[0]) / 2, low[1] or high[1]


def _steps_text(pair):
    value, unreached = pair
    text = f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"
    return (">" if unreached else "") + text


def _median_text(values, digits):
    return "-" if None in values else f"{statistics.median(values):.{digits}f}"


def diverged(run: Run) -> bool:
    """Whether ``run`` (a :class:`Run`) diverged."""
    return run.summary.get("stop_reason") == DIVERGED


def stop_reasons_present(runs: List[Run]) -> List[str]:
    """The :data:`COUNTED_STOPS` that some of ``runs`` ended with, in that order."""
    return [reason for reason in COUNTED_STOPS if any(run.summary.get("stop_reason") == reason for run in runs)]


def group_row(fields: List[str], label: Tuple[Any, ...], runs: List[Run], counts: Sequence[str] = ()) -> Dict[str, str]:
    """One group's cells, keyed by CSV column name (``counts``: stop reasons, each a column counting the
    group's runs that ended so, e.g. ``diverged``)."""
    row = {field: "-".join(map(str, v)) if isinstance(v, tuple) else str(v) for field, v in zip(fields, label)}
    row["seeds"] = str(len(runs))
    for reason in counts:
        row[reason] = str(sum(run.summary.get("stop_reason") == reason for run in runs))
    for key in THRESHOLD_KEYS:
        ordered = steps_reached(runs, key)
        for statistic, pair in (("median", median_steps(ordered)), ("min", ordered[0]), ("max", ordered[-1])):
            row[f"{key}_{statistic}"] = _steps_text(pair)
    row["wall_time_s_median"] = _median_text([run.summary.get("wall_time_s") for run in runs], 1)
    row[f"{PEAK_MEMORY_KEY}_median"] = _median_text([run.summary.get(PEAK_MEMORY_KEY) for run in runs], 0)
    return row


def csv_text(rows: List[Dict[str, str]]) -> str:
    """``rows`` (dicts with the same keys) as CSV text, a header line first."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def markdown_text(fields: List[str], rows: List[Dict[str, str]]) -> str:
    """An aligned Markdown table; each threshold's range is shown as [min, max]."""
    counts = [reason for reason in COUNTED_STOPS if rows and reason in rows[0]]
    header = [*fields, "seeds", *counts]
    for threshold in TEST_ACCURACY_THRESHOLDS:
        header += [f"test {threshold:.0%} median", f"test {threshold:.0%} range"]
    header += ["wall time (s)", "peak RSS (MiB)"]
    table = [header]
    for row in rows:
        cells = [row[field] for field in fields] + [row["seeds"]] + [row[key] for key in counts]
        for key in THRESHOLD_KEYS:
            cells += [row[f"{key}_median"], f"[{row[f'{key}_min']}, {row[f'{key}_max']}]"]
        cells += [row["wall_time_s_median"], row[f"{PEAK_MEMORY_KEY}_median"]]
        table.append([cell.replace("|", r"\|") for cell in cells])
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    lines = ["| " + " | ".join(cell.ljust(width) for cell, width in zip(line, widths)) + " |" for line in table]
    lines.insert(1, "|" + "|".join("-" * (width + 2) for width in widths) + "|")
    return "\n".join(lines) + "\n"


def compare(paths: List[Union[str, Path]], out_dir: Union[str, Path]) -> str:
    """Write ``comparison.csv``, ``comparison.md`` and ``comparison_accuracy.png`` under ``out_dir``;
    return the Markdown table."""
    out_dir = Path(out_dir)
    runs = load_runs(paths)
    fields, groups = group_runs(runs)
    counts = stop_reasons_present(runs)
    rows = [group_row(fields, label, group, counts) for label, group in groups.items()]
    markdown = markdown_text(fields, rows)
    atomic_write_text(out_dir / "comparison.csv", csv_text(rows))
    atomic_write_text(out_dir / "comparison.md", markdown)
    from .plots import plot_groups  # matplotlib (the plots extra): only here, so neuralgrok.experiments.results needs none

    plot_groups({", ".join(f"{field}={row[field]}" for field in fields) or "all runs": [run.history for run in group]
                 for row, group in zip(rows, groups.values())}, out_dir / "comparison_accuracy.png")
    return markdown


def main(arguments: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """The ``neuralgrok compare`` command; returns the exit status."""
    out_dir = arguments.out
    if out_dir is None:
        if len(arguments.runs) != 1 or (Path(arguments.runs[0]) / "config.toml").is_file():
            parser.error("--out is needed unless the one argument is a sweep directory")
        out_dir = arguments.runs[0]
    try:
        print(compare(arguments.runs, out_dir), end="")
    except CompareError as error:
        parser.error(str(error))  # exits with status 2
    print(f"comparison.csv, comparison.md and comparison_accuracy.png written under {out_dir}")
    return 0
