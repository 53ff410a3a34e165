"""A run's records: its directory's files (``config.toml``: :func:`stored_config` and :func:`run_config`;
``checkpoint.pt``, ``metrics.csv``, ``summary.json``, the final weights ``model.pt`` (:func:`save_model`), a
method's artifacts and snapshots), what each holds,
and reading finished runs back.

:func:`summarize` makes ``summary.json`` of a run's metrics history; :func:`save_checkpoint` and
:func:`load_checkpoint` hold everything a resumed run needs (their keys, the ``metrics.csv`` columns and
the ``summary.json`` keys are a file format: older runs must keep loading); :func:`load_runs` reads
finished runs back as :class:`Run` records for comparison and analysis::

    from neuralgrok.experiments.records import load_runs
    runs = load_runs(["runs/sweep-demo"])       # [Run(path, config, summary, history), ...]
"""
import contextlib
import csv
import io
import json
import os
import random
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import numpy as np
import torch

from ..storage.checkpoints import CheckpointError, previous_path, read_checkpoint, write_checkpoint
from ..storage.files import atomic_write, finite_or_none, read_toml
from .config import PATH_FIELDS, TrainConfig, resolve_paths
from .methods import unread_options

METRIC_COLUMNS = ("step", "train_loss", "train_accuracy", "test_loss", "test_accuracy",
                  "grad_age", "step_grad_age", "weight_norm", "wall_time_s")
SNAPSHOTS = "snapshots"  # run-directory folder of the method's snapshot_state() files
CHECKPOINT = "checkpoint.pt"
MODEL = "model.pt"  # the final weights of a finished run (save_model)
TEST_ACCURACY_THRESHOLDS = (0.5, 0.9, 0.95, 0.99)
MEMORISATION_ACCURACY = 0.99

RUN_FILES = ("summary.json", "metrics.csv", CHECKPOINT, previous_path(CHECKPOINT).name, MODEL, "amplifier.pt", SNAPSHOTS,
             "analysis.csv", "config.toml")
# summary.json's stop_reason: the step budget ran out, test accuracy held (the early stop), a hold-out's test
# accuracy stopped moving after memorisation (the plateau stop), the loss or gradient became NaN or infinite.
STEPS, EARLY_STOP, PLATEAU, DIVERGED = "steps", "early_stop", "plateau", "diverged"

EXIT_DIVERGED = 3  # the exit status of a run process (``neuralgrok run``) that diverged


def stored_config(config: TrainConfig, out_dir: Union[str, Path]) -> Dict[str, object]:
    """``config`` as ``config.toml`` in ``out_dir`` holds it: a dict, the paths of :data:`PATH_FIELDS`
    relative to ``out_dir`` (see :func:`resolve_paths`)."""
    values = config.to_dict()
    for name in PATH_FIELDS:
        if values[name]:
            values[name] = os.path.relpath(os.path.abspath(values[name]), os.path.abspath(out_dir))
    return values


def run_config(out_dir: Union[str, Path]) -> TrainConfig:
    """The config of the run in ``out_dir``, from its ``config.toml``: a field the file lacks takes the
    value runs had before it existed (:meth:`TrainConfig.defaults`), its relative paths are relative
    to ``out_dir``. Raises ConfigError (or OSError, a TOML ValueError) for a file that does not make one."""
    written = resolve_paths(read_toml(Path(out_dir) / "config.toml"), out_dir)
    return TrainConfig.from_dict({**TrainConfig.defaults(), **written})


def same_config(a: TrainConfig, b: TrainConfig, out_dir: Union[str, Path]) -> bool:
    """Whether configs ``a`` and ``b`` are one run's in ``out_dir``: equal fields, their paths naming the
    same files (compared as stored there, relative to ``out_dir``), except the fields that only other
    methods read (:func:`neuralgrok.experiments.methods.unread_options`) when both have one method."""
    ignored = unread_options(a) if a.method == b.method else frozenset()

    def compared(config: TrainConfig) -> Dict[str, Any]:
        return {name: value for name, value in stored_config(config, out_dir).items() if name not in ignored}

    return compared(a) == compared(b)


class RunDirectoryError(ValueError):
    """An output directory a run must not write into as asked (it holds another run)."""


def run_files(out_dir: Union[str, Path]) -> List[str]:
    """The names of :data:`RUN_FILES` present in ``out_dir``, in that order."""
    return [name for name in RUN_FILES if (Path(out_dir) / name).exists()]


def claim_run_directory(out_dir: Path, config: TrainConfig, resume: bool, overwrite: bool) -> None:
    """Refuse a directory that holds another run (unless ``overwrite``: delete its files, summary.json first)."""
    present = run_files(out_dir)
    if resume or not present:
        return
    if overwrite:
        for name in present:
            path = out_dir / name
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        return
    hint = ""
    if "summary.json" not in present and "config.toml" in present:
        with contextlib.suppress(Exception):  # an unreadable config.toml is simply another run
            if same_config(run_config(out_dir), config, out_dir):
                hint = f", or --resume {out_dir} to continue it (the same config, unfinished)"
    state = "a finished run" if "summary.json" in present else "another run"
    raise RunDirectoryError(f"{out_dir} holds {state} ({', '.join(present)}); pass --overwrite (overwrite=True) to "
                            f"delete those files and start this run there, or choose another --out{hint}")


def part_columns(parts: Dict[str, Any]) -> List[str]:
    """The metrics.csv columns of the named test parts (a hold-out's ``held`` block and ``rest``),
    after :data:`METRIC_COLUMNS` and before the ``--measures`` columns."""
    return [f"test_{part}_{metric}" for part in parts for metric in ("loss", "accuracy")]


def first_step(history: List[Dict[str, float]], column: str, threshold: float) -> Optional[int]:
    """The first logged step whose ``column`` is at least ``threshold`` (None: never)."""
    return next((row["step"] for row in history if row[column] >= threshold), None)


def summarize(config: "TrainConfig", history: List[Dict[str, float]], wall_time_s: float,
              diverged: Optional["Divergence"] = None, stopped: Optional[str] = None) -> Dict[str, object]:
    """Steps to each (whole) test-accuracy threshold, memorisation step, final metrics including
    the test parts' (None = not reached, or not a finite number: a part without examples, a diverged
    run's NaN), the steps run and why the run ended (``stop_reason``: ``"steps"``, its budget;
    ``stopped``, the stop rule that ended it early: ``"early_stop"`` (test accuracy held, see
    :func:`neuralgrok.experiments.loop.held_accuracy`) or ``"plateau"`` (see
    :func:`neuralgrok.experiments.loop.plateaued`), a run that ended early without ``stopped`` counting
    as ``"early_stop"``; or ``"diverged"``: then ``diverged_at_step`` and ``diverged_because`` say where
    and why, see ``diverged``, a :class:`Divergence`)."""
    final = history[-1]
    reason = DIVERGED if diverged else stopped or (EARLY_STOP if final["step"] < config.steps else STEPS)
    summary = {"method": config.method, "steps": config.steps, "steps_done": final["step"], "stop_reason": reason,
               "memorisation_step": first_step(history, "train_accuracy", MEMORISATION_ACCURACY)}
    if diverged:
        summary.update(diverged_at_step=diverged.step, diverged_because=diverged.because)
    for threshold in TEST_ACCURACY_THRESHOLDS:
        summary[f"steps_to_test_{round(threshold * 100)}"] = first_step(history, "test_accuracy", threshold)
    for column in ("train_loss", "train_accuracy", "test_loss", "test_accuracy"):
        summary[f"final_{column}"] = final[column]
    for column in final:
        if column.startswith("test_") and column not in METRIC_COLUMNS:  # test parts: test_held_accuracy, ...
            summary[f"final_{column}"] = final[column]
    summary["wall_time_s"] = wall_time_s
    return finite_or_none(summary)


@dataclass
class Divergence:
    """Where and why a run diverged: the step whose loss or gradient was NaN or infinite."""
    step: int
    because: str


def save_snapshot(out_dir: Union[str, Path], step: int, state: Dict[str, Any]) -> None:
    """``state`` (a method's :meth:`snapshot_state`) to ``out_dir/snapshots/step_<step>.pt``."""
    folder = Path(out_dir) / SNAPSHOTS
    folder.mkdir(exist_ok=True)
    with atomic_write(folder / f"step_{step:07d}.pt", "wb") as f:
        torch.save(state, f)


def peak_rss_mib() -> Optional[float]:
    """Peak resident set size of this process so far, in MiB (2^20 bytes): ``getrusage``'s
    ``ru_maxrss`` (KiB on Linux, bytes on macOS); None where the ``resource`` module is missing.
    It counts everything the process holds (Python, torch's libraries, the data, the allocator's
    cache) at its fullest moment, and it never goes down: for a ``neuralgrok run`` process that is
    the run's peak, after several runs in one process the largest of them, for a resumed run the
    resuming process's."""
    try:
        import resource
    except ImportError:
        return None
    maximum = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maximum / (2 ** 20 if sys.platform == "darwin" else 2 ** 10)


def metrics_csv(history: List[Dict[str, float]]) -> str:
    """``history`` as ``metrics.csv`` text: its rows' columns in order, one row per logged step."""
    buffer = io.StringIO()
    # METRIC_COLUMNS, then the run's --measures columns, as in its rows.
    writer = csv.DictWriter(buffer, fieldnames=list(history[0]) if history else METRIC_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    return buffer.getvalue()


def read_metrics(path: Union[str, Path]) -> List[Dict[str, float]]:
    """The rows of a ``metrics.csv`` written by :func:`train`: ``step`` an int, the rest floats."""
    with open(path, newline="") as f:
        return [{key: int(value) if key == "step" else float(value) for key, value in row.items()}
                for row in csv.DictReader(f)]


def rng_states() -> Dict[str, object]:
    """The global Python, NumPy and torch RNG states (NumPy's as a tensor and numbers, so that a
    weights-only load reads them)."""
    name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    numpy_state = {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                   "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)}
    return {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}


def set_rng_states(states: Dict[str, object]) -> None:
    """Restore :func:`rng_states`."""
    random.setstate(states["python"])
    n = states["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["position"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(states["torch"])


CHECKPOINT_KEYS = ("config", "step", "history", "rng", "wall_time_s")


def save_checkpoint(path: Union[str, Path], config: TrainConfig, step: int, parts: Dict[str, Any],
                    history: List[Dict[str, float]], wall_time_s: float) -> None:
    """Write everything :func:`load_checkpoint` needs to go on at ``step``; ``parts`` maps names
    to objects with ``state_dict()`` (model, optimizer, scheduler, batches). The file carries its
    checksum and the one it replaces is kept (:func:`neuralgrok.storage.checkpoints.write_checkpoint`)."""
    path = Path(path)
    state = {name: part.state_dict() for name, part in parts.items()}
    state.update(config=stored_config(config, path.parent), step=step, history=history, rng=rng_states(),
                 wall_time_s=wall_time_s)
    write_checkpoint(path, state)


def save_model(path: Union[str, Path], step: int, model: torch.nn.Module) -> bool:
    """Write ``model``'s weights after ``step`` updates to ``path`` as a checkpoint file (its checksum;
    ``{"step", "model"}``), or nothing if a weight is NaN or infinite (a diverged run): whether it wrote."""
    weights = model.state_dict()
    if not all(torch.isfinite(w).all() for w in weights.values() if w.is_floating_point()):
        return False
    write_checkpoint(path, {"step": step, "model": weights}, keep_previous=False)
    return True


def load_checkpoint(path: Union[str, Path], config: TrainConfig,
                    parts: Dict[str, Any]) -> Tuple[int, List[Dict[str, float]], float]:
    """Load a :func:`save_checkpoint` file into ``parts`` and the global RNGs; return
    ``(step, history, wall_time_s)``. A file that is damaged, truncated, of an older format or of
    another config raises :class:`neuralgrok.storage.checkpoints.CheckpointError` (one line)."""
    path = Path(path)
    state = read_checkpoint(path)
    missing = [key for key in (*parts, *CHECKPOINT_KEYS) if key not in state]
    if missing:
        raise CheckpointError(path, f"lacks {missing}; it is not a checkpoint of this runner")
    try:
        same = same_config(TrainConfig.from_dict(resolve_paths(state["config"], path.parent)), config, path.parent)
    except ValueError:
        same = False
    if not same:
        raise CheckpointError(path, "was written by a run with another config than config.toml's")
    for name, part in parts.items():
        try:
            part.load_state_dict(state[name])
        except (ValueError, KeyError, RuntimeError) as error:
            raise CheckpointError(path, f"its {name} state does not load: {error}") from None
    set_rng_states(state["rng"])
    return state["step"], state["history"], state["wall_time_s"]


def checkpoint_to_resume(out_dir: Union[str, Path]) -> Optional[Path]:
    """The checkpoint a resume of ``out_dir`` starts from: ``checkpoint.pt``, else the kept previous one
    (``checkpoint.prev.pt``: a kill between the two renames, or a damaged newest one moved away); None
    if neither exists."""
    for path in (Path(out_dir) / CHECKPOINT, previous_path(Path(out_dir) / CHECKPOINT)):
        if path.exists():
            return path
    return None


def checkpoint_choices(error: CheckpointError, out_dir: Path) -> CheckpointError:
    """``error`` (a :class:`CheckpointError` of ``out_dir``'s checkpoint) with what the user can do."""
    choices = [f"start the run over with: neuralgrok run --config {out_dir / 'config.toml'} --out {out_dir} "
               f"--overwrite"]
    previous = previous_path(out_dir / CHECKPOINT)
    if error.path != previous and previous.exists():
        try:
            step = read_checkpoint(previous)["step"]
        except CheckpointError:
            pass
        else:
            choices.insert(0, f"move {error.path.name} away and --resume again to go on from the previous "
                              f"checkpoint {previous.name} (step {step}, intact)")
    return CheckpointError(error.path, f"{error.problem}; to go on, " + "; or ".join(choices))


def _cell(value, kind):
    if value is None:
        return "-"
    return {"step": f"{value:,}", "accuracy": f"{value:.3f}", "seconds": f"{value:.1f}"}[kind]


def _stop_cell(summary):
    reason = summary.get("stop_reason", STEPS)
    return f"{reason} at {summary['steps_done']:,}" if reason in (EARLY_STOP, PLATEAU) else reason


SUMMARY_TABLE_COLUMNS = (
    ("method", "method", None),
    ("memorised", "memorisation_step", "step"),
    ("test 50%", "steps_to_test_50", "step"),
    ("test 90%", "steps_to_test_90", "step"),
    ("test 95%", "steps_to_test_95", "step"),
    ("test 99%", "steps_to_test_99", "step"),
    ("final test acc", "final_test_accuracy", "accuracy"),
    ("wall time (s)", "wall_time_s", "seconds"),
)


def summary_table(summaries: List[Dict[str, Any]]) -> str:
    """Runs' summaries as an aligned text table ("-" = threshold never reached; a diverged run's
    final accuracy reads "diverged"). When a run ended early by a stop rule, a ``stopped`` column
    before the final accuracy gives each run's ``stop_reason`` with the step it stopped at
    (``plateau at 12,340``; ``steps`` for one that ran its budget)."""
    stopped_early = any(summary.get("stop_reason") in (EARLY_STOP, PLATEAU) for summary in summaries)
    columns = list(SUMMARY_TABLE_COLUMNS)
    if stopped_early:
        columns.insert(-2, ("stopped", "stop_reason", "stop"))
    rows = [[title for title, _, _ in columns]]
    for summary in summaries:
        diverged = summary.get("stop_reason") == DIVERGED
        rows.append([summary[key] if kind is None else DIVERGED if diverged and key == "final_test_accuracy"
                     else _stop_cell(summary) if kind == "stop" else _cell(summary[key], kind)
                     for _, key, kind in columns])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines) + "\n"


# -- finished runs, read back ---------------------------------------------------------------------------


class CompareError(ValueError):
    """Arguments that name no comparable (finished) runs."""


@dataclass
class Run:
    """A finished run read back from its directory: ``config.toml`` (a dict, fields it lacks at their
    defaults), ``summary.json`` and the rows of ``metrics.csv``."""

    path: Path
    config: Dict[str, object]
    summary: Dict[str, object]
    history: List[Dict[str, float]]


def run_directories(paths: List[Union[str, Path]]) -> List[Path]:
    """Each path itself if it is a run directory, else the run directories directly inside it."""
    found = []
    for path in map(Path, paths):
        if (path / "config.toml").is_file():
            found.append(path)
            continue
        inside = sorted(child for child in path.glob("*") if (child / "config.toml").is_file())
        if not inside:
            raise CompareError(f"{path} is neither a run directory nor a directory of runs")
        found += inside
    return found


def read_config(run_dir: Union[str, Path]) -> Dict[str, Any]:
    """A run's ``config.toml`` as a dict, the fields it lacks (written before they existed) filled
    with their defaults, which the run ran with; so such runs group with newer ones of the same settings."""
    return {**TrainConfig.defaults(), **read_toml(Path(run_dir) / "config.toml")}


def load_runs(paths: List[Any], warn: Callable[[str], None] = lambda text: print(text, file=sys.stderr)) -> List["Run"]:
    """The finished runs under ``paths`` (run directories or directories of them, see
    :func:`run_directories`); unfinished or mixed-up ones are left out with a warning. Raises
    :class:`CompareError` if none is left."""
    runs = []
    for directory in run_directories(paths):
        if not (directory / "summary.json").is_file():
            warn(f"warning: {directory} has no summary.json (unfinished?); left out")
            continue
        config = {key: tuple(value) if isinstance(value, list) else value  # hashable, for grouping
                  for key, value in read_config(directory).items()}
        summary = json.loads((directory / "summary.json").read_text())
        mismatch = [key for key in ("method", "steps") if summary.get(key) != config[key]]
        if mismatch:  # a run written over another before runs refused that: its summary is the old run's
            warn(f"warning: {directory}: summary.json's {mismatch} differ from config.toml's (two runs mixed?); "
                 f"left out")
            continue
        runs.append(Run(directory, config, summary, read_metrics(directory / "metrics.csv")))
    if not runs:
        raise CompareError("no finished runs to compare")
    return runs
