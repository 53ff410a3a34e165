"""Grid sweeps: one independent ``python -m neuralgrok run`` process per point of a grid.

A sweep file is TOML::

    out = "../runs/sweep-demo"       # relative paths are relative to this file's directory
    [base]                           # TrainConfig fields shared by every run
    p = 47
    steps = 4000
    [grid]                           # lists; their Cartesian product gives one run each
    method = ["baseline", "grokfast-ema"]
    seed = [0, 1, 2]

Relative paths in the file (``out``, and ``amplifier_path`` or ``weights_path`` in ``[base]`` or
``[grid]``) are relative to the sweep file's directory, so ``configs/sweep-demo.toml``'s
``out = "../runs/sweep-demo"`` is ``runs/sweep-demo`` beside ``configs/``, from wherever it is run.

Each run goes to ``OUT/<name>``, the name made of the grid's values in the grid's order, e.g.
``method=grokfast-ema,seed=1`` (characters other than letters, digits and ``+-._`` are %-escaped,
so ``a*b`` becomes ``a%2Ab``). A run whose ``summary.json`` exists is finished (or diverged, which
its summary says) and skipped; one that was started but not finished (its ``config.toml`` is this
sweep's config) is resumed from its checkpoint, so a sweep is resumed by running the same command
again. Runs get ``--threads 1`` unless the file sets ``threads``. Before anything is launched every
config is checked, the device and the files it names too (:func:`neuralgrok.experiments.config.validate_config`;
``--dry-run`` leaves out those machine checks, for commands run elsewhere), and every run directory:
one holding a run of another config is refused. A bad file exits with status 2 and writes nothing.

Commands::

    neuralgrok sweep configs/sweep-demo.toml --jobs 2     # the unfinished runs, 2 processes at a time
    neuralgrok sweep configs/sweep-demo.toml --dry-run    # print their commands, one per line
    neuralgrok sweep configs/sweep-grokking-insight-*.toml --jobs 2   # several files share one pool of jobs
    neuralgrok compare runs/sweep-demo                     # table and plot, see neuralgrok.experiments.compare

On a Slurm cluster, one array task per unfinished run::

    neuralgrok sweep configs/sweep-demo.toml --dry-run > commands.txt
    sbatch --array=1-$(wc -l < commands.txt) --wrap 'sed -n "${SLURM_ARRAY_TASK_ID}p" commands.txt | bash'

A run's output (its summary table, or its error) goes to ``OUT/<name>/log.txt`` under ``--jobs``.
"""
import argparse
import concurrent.futures
import dataclasses
import itertools
import os
import shlex
import subprocess
import sys
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Union

from ..storage.files import read_toml
from .config import TrainConfig, config_flags, config_from_flags, resolve_paths, validate_config
from .records import DIVERGED, EXIT_DIVERGED, run_config, run_files, same_config

SWEEP_KEYS = ("out", "base", "grid")


class SweepError(ValueError):
    """A sweep file that cannot be run as written."""


@dataclass
class PlannedRun:
    """One point of a sweep: its name, directory, config and the command that runs (or resumes) it."""

    name: str
    out_dir: Path
    config: TrainConfig
    command: List[str]

    def finished(self) -> bool:
        return (self.out_dir / "summary.json").exists()

    def resume_command(self) -> List[str]:
        """The command that continues this run from its directory's checkpoint."""
        return [sys.executable, "-m", "neuralgrok", "run", "--quiet", "--resume", str(self.out_dir)]


def _name_value(value):
    text = "-".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
    return urllib.parse.quote(text, safe="+-._")  # injective and safe as a file name


def run_name(point: Dict[str, Any]) -> str:
    """Directory name of one grid point: ``key=value`` pairs joined by commas, in the grid's order."""
    return ",".join(f"{key}={_name_value(value)}" for key, value in point.items())


def _check_tables(sweep):
    unknown = sorted(set(sweep) - set(SWEEP_KEYS))
    if unknown:
        raise SweepError(f"unknown top-level keys {unknown}; a sweep file has {list(SWEEP_KEYS)}")
    base, grid = sweep.get("base", {}), sweep.get("grid", {})
    if not isinstance(base, dict) or not isinstance(grid, dict):
        raise SweepError("[base] and [grid] must be tables")
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted((set(base) | set(grid)) - fields)
    if unknown:
        raise SweepError(f"unknown TrainConfig fields {unknown}")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise SweepError(f"grid.{key} must be a non-empty list of values")
    both = sorted(set(base) & set(grid))
    if both:
        raise SweepError(f"{both} in both [base] and [grid]")
    return base, grid


def sweep_out(path: Union[str, Path], sweep: Optional[dict] = None) -> Path:
    """The directory of a sweep file's runs: its ``out``, relative to the file's directory (``sweep``:
    the file's tables, if read already)."""
    sweep = read_toml(path) if sweep is None else sweep
    if not isinstance(sweep.get("out"), str) or not sweep["out"]:
        raise SweepError('the sweep file needs out = "DIR", the directory of its runs (relative to the file, '
                         'e.g. "../runs/NAME")')
    return Path(os.path.normpath(Path(path).parent / sweep["out"]))


def _build_run(out, values, point):
    """One run; its command must rebuild exactly the config the file describes."""
    name = run_name(point) or "run"
    try:
        config = TrainConfig.from_dict(values)
        flags = config_flags(values)
        if config_from_flags(flags) != config:
            raise ValueError("a value changes on the command line (an int field given a float?)")
    except (ValueError, TypeError, argparse.ArgumentError) as error:
        raise SweepError(f"run {name}: {error}") from None
    command = [sys.executable, "-m", "neuralgrok", "run", "--quiet", "--out", str(out / name), *flags]
    return PlannedRun(name, out / name, config, command)


def load_sweep(path: Union[str, Path]) -> List[PlannedRun]:
    """Every run of a sweep file, each config built and checked; raises :class:`SweepError`."""
    try:
        sweep = read_toml(path)
    except (OSError, ValueError) as error:  # tomllib.TOMLDecodeError is a ValueError
        raise SweepError(f"cannot read {path}: {error}") from None
    base, grid = _check_tables(sweep)
    out, here = sweep_out(path, sweep), Path(path).parent
    runs = []
    for combination in itertools.product(*grid.values()):
        point = dict(zip(grid, combination))
        runs.append(_build_run(out, resolve_paths({"threads": 1, **base, **point}, here), point))
    names = [run.name for run in runs]
    if len(set(names)) != len(names):
        raise SweepError("the grid repeats a value, so two runs would share a directory")
    return runs


def check_runs(runs: List[PlannedRun], environment: bool = True) -> List[PlannedRun]:
    """What :func:`run_sweep` checks before it launches anything: every run's directory is empty, or
    holds a run of the same config (one that was started and not finished is then resumed: its
    command becomes :meth:`PlannedRun.resume_command`); every unfinished run's config is valid on this
    machine, its device and files too (:func:`neuralgrok.experiments.config.validate_config`; not without
    ``environment``). Raises :class:`SweepError` listing every problem; returns ``runs``."""
    problems = []
    for run in runs:
        present = run_files(run.out_dir)
        if present:
            try:
                same = same_config(run_config(run.out_dir), run.config, run.out_dir)
            except (OSError, ValueError):
                same = False
            if not same:
                state = "a finished run" if run.finished() else "a run"
                problems.append(f"run {run.name}: {run.out_dir} holds {state} of another config ({', '.join(present)}; "
                                f"was the sweep file changed?); delete or move that directory first")
                continue
            if not run.finished():
                run.command = run.resume_command()
        if environment and not run.finished():
            try:
                validate_config(run.config)
            except ValueError as error:
                problems.append(f"run {run.name}: {error}")
    if problems:
        raise SweepError("; ".join(problems))
    return runs


def _launch(run):
    """Run one command, its output to ``log.txt`` beside its results; return (run, exit status, seconds)."""
    run.out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(run.out_dir / "log.txt", "w") as log:
        status = subprocess.run(run.command, stdout=log, stderr=subprocess.STDOUT).returncode
    return run, status, time.perf_counter() - start


def run_sweep(runs: List[PlannedRun], jobs: int = 1, log: Callable[[str], None] = print) -> int:
    """Check the unfinished ``runs`` (:func:`check_runs`, which raises :class:`SweepError` before
    anything is launched), then run them, ``jobs`` processes at a time; return how many failed (a
    run that diverged is finished, with a result that says so, and is logged as such, not counted)."""
    check_runs(runs)
    pending = [run for run in runs if not run.finished()]
    log(f"{len(runs) - len(pending)} of {len(runs)} runs already finished; running {len(pending)}")
    failed = diverged = 0
    # Threads only wait on the child processes, which do the work.
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(_launch, run) for run in pending]
        for done, future in enumerate(concurrent.futures.as_completed(futures), 1):
            run, status, seconds = future.result()
            outcome = ("done" if status == 0 else f"{DIVERGED} (see its summary.json)" if status == EXIT_DIVERGED
                       else f"FAILED (exit {status}), see {run.out_dir / 'log.txt'}")
            log(f"[{done}/{len(pending)}] {run.name}: {outcome} ({seconds:.1f} s)")
            failed += status not in (0, EXIT_DIVERGED)
            diverged += status == EXIT_DIVERGED
    if diverged:
        log(f"{diverged} of {len(pending)} runs diverged (their loss or gradient became NaN or infinite)")
    return failed


def load_sweeps(paths: List[Union[str, Path]]) -> List[PlannedRun]:
    """Every run of several sweep files, in file order; raises :class:`SweepError` if two share a directory."""
    runs = [run for path in paths for run in load_sweep(path)]
    directories = [run.out_dir.resolve() for run in runs]
    shared = sorted({str(d) for d in directories if directories.count(d) > 1})
    if shared:
        raise SweepError(f"two sweep files write the same run directory: {', '.join(shared)}")
    return runs


def main(arguments: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """The ``neuralgrok sweep`` command; returns the exit status."""
    if arguments.jobs < 1:
        parser.error(f"--jobs={arguments.jobs} must be at least 1")
    try:
        runs = load_sweeps(arguments.sweep_files)
        if arguments.dry_run:
            check_runs(runs, environment=False)
            for run in runs:
                if not run.finished():
                    print(shlex.join(run.command))
            return 0
        return 1 if run_sweep(runs, arguments.jobs) else 0
    except SweepError as error:
        parser.error(str(error))  # exits with status 2
