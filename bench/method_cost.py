"""Cost of each method of a sweep per step: peak memory and wall time, from short runs in child processes.

    .venv/bin/python bench/method_cost.py configs/sweep-demo.toml --steps 200 --out results/sweep-demo/method_cost.csv

For each distinct method of the sweep file (its first run, i.e. the first seed), and once with
``--steps 0`` (the interpreter, torch, the data and the model: what every method pays), the run's
own command is started with ``--steps N`` (N >= the Grokfast MA window, so its window is full) and
no checkpoints. Per run: its peak resident set size, read from the kernel when it exits
(``os.wait4``: that child's ``ru_maxrss``), and its wall time per step (``wall_time_s`` of its
summary.json over N; evaluation included, as in the sweep's runs). The methods take turns, repeat
after repeat, so a change in the machine's load hits them alike; the CSV has the medians over
``--repeats``. RSS counts allocator caching, so differences under a few MiB are noise; what it shows
well is state that grows with the model (Grokfast MA keeps ``ma_window`` gradients).
"""
import argparse
import json
import os
import statistics
import subprocess
import tempfile
from pathlib import Path

from neuralgrok.experiments.compare import csv_text
from neuralgrok.storage.files import atomic_write_text
from neuralgrok.experiments.sweeps import load_sweep

FIXED_COST = "steps=0"  # the row every method's memory growth is measured against


def peak_rss_mib(command):
    """Run ``command`` to completion; return its peak RSS in MiB (ru_maxrss is in KiB on Linux)."""
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    with child.stderr:
        stderr = child.stderr.read()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)  # already reaped; keeps Popen from waiting again
    if child.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, command))} failed (exit {child.returncode}):\n{stderr.decode()[-2000:]}")
    return usage.ru_maxrss / 1024


def short_runs(sweep_file, steps):
    """``{label: (command without its output directory, steps)}``: the fixed-cost run, then the
    first run of each method."""
    first_of_method = {}
    for run in load_sweep(sweep_file):
        first_of_method.setdefault(run.config.method, run)
    labelled = [(FIXED_COST, next(iter(first_of_method.values())), 0),
                *((method, run, steps) for method, run in first_of_method.items())]
    return {label: (run.command, run_steps) for label, run, run_steps in labelled}


def measure_once(command, steps, out_dir):
    """Run ``command`` into ``out_dir`` for ``steps`` steps: ``(peak RSS in MiB, ms per step or None)``."""
    out = command.index("--out") + 1
    command = [*command[:out], str(out_dir), *command[out + 1:], "--steps", str(steps), "--checkpoint-every", "0"]
    peak = peak_rss_mib(command)  # the flags appended last win over the sweep's own
    wall_time_s = json.loads((out_dir / "summary.json").read_text())["wall_time_s"]
    return peak, 1000 * wall_time_s / steps if steps else None


def measure(sweep_file, steps, repeats):
    """Rows of the CSV: method, steps, peak RSS, its growth over the fixed cost (MiB), ms per step (medians)."""
    runs = short_runs(sweep_file, steps)
    samples = {label: [] for label in runs}
    with tempfile.TemporaryDirectory() as work_dir:
        for repeat in range(repeats):  # round robin
            for label, (command, run_steps) in runs.items():
                samples[label].append(measure_once(command, run_steps, Path(work_dir) / f"{label},{repeat}"))
    peaks = {label: statistics.median(peak for peak, _ in values) for label, values in samples.items()}
    return [{"method": label, "steps": run_steps, "peak_rss_mib": f"{peaks[label]:.1f}",
             "growth_mib": f"{peaks[label] - peaks[FIXED_COST]:.1f}",
             "ms_per_step": f"{statistics.median(ms for _, ms in samples[label]):.2f}" if run_steps else ""}
            for label, (_, run_steps) in runs.items()]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep_file")
    parser.add_argument("--steps", type=int, default=200, help="steps per measured run (default: 200)")
    parser.add_argument("--repeats", type=int, default=5, help="runs per method; medians are kept (default: 5)")
    parser.add_argument("--out", required=True, help="the CSV to write")
    arguments = parser.parse_args()
    if arguments.steps < 1 or arguments.repeats < 1:
        parser.error("--steps and --repeats must be at least 1")
    text = csv_text(measure(arguments.sweep_file, arguments.steps, arguments.repeats))
    atomic_write_text(arguments.out, text)
    print(text, end="")


if __name__ == "__main__":
    main()
