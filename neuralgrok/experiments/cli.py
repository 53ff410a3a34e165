"""Command line: ``neuralgrok`` (or ``python -m neuralgrok``).

    neuralgrok --version
    neuralgrok demo --out runs/demo [--steps N] [--quiet]
    neuralgrok run --task 'a*b' --p 97 --method grokfast-ema --steps 5000 --out runs/ab97
    neuralgrok run --config configs/demo.toml --method neuralgrok --out runs/demo-ng
    neuralgrok run --task polygons --model resnet18 --optimizer adam --weight-decay 1e-4 --batch-size 200 --out runs/poly
    neuralgrok run --resume runs/ab97
    neuralgrok sweep configs/sweep-demo.toml [...] [--jobs N] [--dry-run]   (see neuralgrok.experiments.sweeps)
    neuralgrok compare runs/sweep-demo [runs/other ...] [--out DIR]      (see neuralgrok.experiments.compare)
    neuralgrok analyze runs/ab97 [--grok-accuracy 0.95] [--smooth 1]    (see neuralgrok.measures.analyze)
    neuralgrok analyze results/sweep-x                                  (every run: neuralgrok.measures.correlation_table)
    neuralgrok results export|table|diff ...                            (see neuralgrok.experiments.results)

``run`` has one flag per :class:`neuralgrok.experiments.config.TrainConfig` field, generated from the dataclass,
so names, types and defaults are defined once. ``--config FILE.toml`` sets fields from a flat TOML
file (``key = value`` per field, as a run's own ``config.toml``); flags given on the command line
override it, the dataclass defaults fill in the rest. With ``--out``, a checkpoint is written every
``--checkpoint-every`` steps; ``--resume DIR`` continues that run from its ``config.toml`` and
``checkpoint.pt`` (from scratch if there is none yet) with the same metrics as an uninterrupted
run, and says so and exits 0 for a finished run (``summary.json`` present). Relative paths in a
config file (``amplifier_path``, ``weights_path``) are relative to the file's directory, those given
as flags to the working directory. ``--out`` must not hold another run (``--overwrite`` deletes its
files first), nor be in use by another process.

Exit status: 0 a finished run; 2 nothing was run: bad arguments, a config that fails
:func:`neuralgrok.experiments.config.validate_config` (unknown or ill-typed keys, out-of-range or non-finite
values, missing files, an unavailable device), a refused or busy output directory, a damaged
checkpoint (the message says what to do), each said in one line before anything is written;
3 the run diverged (its loss or gradient became NaN or infinite: summary.json says where); 1 any
other failure (a full disk, say; the run's last checkpoint stays intact for ``--resume``).
"""
import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

from ..allocator import keep_freed_memory
from ..storage.checkpoints import CheckpointError
from ..storage.files import DirectoryInUseError, read_toml
from ..version import version_text
from .config import (ConfigError, TrainConfig, add_config_arguments, given_config_flags, resolve_paths,
                     validate_config)
from .loop import resume, train
from .records import DIVERGED, EXIT_DIVERGED, CompareError, RunDirectoryError, run_directories, summary_table

# What a run refuses before writing anything: exit status 2 with the message.
REFUSALS = (ConfigError, RunDirectoryError, DirectoryInUseError, CheckpointError)


def refuse(parser: argparse.ArgumentParser, message: str) -> None:
    """Exit with status 2 and ``message`` as one line (``PROG: error: ...``): a run refused for what the
    arguments name (a value, a file, a directory), where argparse's usage text would bury it."""
    print(f"{parser.prog}: error: {message}", file=sys.stderr)
    sys.exit(2)


def config_file_values(path: str, parser: argparse.ArgumentParser) -> Dict[str, Any]:
    """A TOML config file's fields, typed, its relative paths joined to its directory; unreadable
    files and bad keys exit with status 2."""
    try:
        return TrainConfig.typed_values(resolve_paths(read_toml(path), Path(path).parent))
    except (OSError, ValueError) as error:  # tomllib.TOMLDecodeError is a ValueError
        parser.error(f"--config {path}: {error}")


def config_from_arguments(arguments: argparse.Namespace, parser: argparse.ArgumentParser) -> TrainConfig:
    """The dataclass defaults, then ``--config``'s file, then the flags given."""
    values = config_file_values(arguments.config, parser) if getattr(arguments, "config", None) else {}
    values.update(given_config_flags(arguments))
    try:
        config = TrainConfig(**values)
        validate_config(config)  # the device and the files too
    except ValueError as error:
        refuse(parser, str(error))
    return config


def resume_run(arguments: argparse.Namespace, parser: argparse.ArgumentParser) -> Dict[str, Any]:
    """``run --resume DIR``: finish the run in DIR, or say it is finished; returns its summary."""
    run_dir = Path(arguments.resume)
    extra = sorted(given_config_flags(arguments)) + [flag for flag in ("config", "out") if getattr(arguments, flag)]
    if extra:
        parser.error(f"--resume continues {run_dir} as its config.toml says; drop {extra}")
    if not (run_dir / "config.toml").is_file():
        parser.error(f"--resume {run_dir}: no config.toml there")
    if (run_dir / "summary.json").is_file():
        print(f"{run_dir} has finished (summary.json exists); nothing to resume")
        return json.loads((run_dir / "summary.json").read_text())
    try:
        return resume(run_dir, progress=not arguments.quiet).summary
    except (*REFUSALS, ValueError) as error:  # a bad config.toml (TOML errors are ValueErrors) and the refusals
        refuse(parser, str(error))


def run_outcome(summary: dict) -> int:
    """Print a run's table (and a diverged run's where and why); return the exit status."""
    print(summary_table([summary]), end="")
    if summary.get("stop_reason") == DIVERGED:
        print(f"the run diverged at step {summary['diverged_at_step']}: {summary['diverged_because']}",
              file=sys.stderr)
        return EXIT_DIVERGED
    return 0


def _whole_number(value: float) -> str:
    return f"{value:,.0f}"


SWEEP_ANALYSIS = "correlations.csv"  # what ``neuralgrok analyze`` writes in a directory of runs


def analyze_run(arguments: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """``neuralgrok analyze RUN``: :func:`neuralgrok.measures.analyze` of ``RUN/metrics.csv``, written to
    ``RUN/analysis.csv``; for a directory of runs (a sweep's ``out``, a results directory) one table of
    them all, :func:`neuralgrok.measures.correlation_table`, written to ``DIR/correlations.csv`` (runs
    without a metrics.csv yet are left out, unfinished ones kept and named on stderr)."""
    from ..measures import analysis  # imports pandas

    if arguments.smooth < 1:
        parser.error(f"--smooth={arguments.smooth} must be at least 1")
    options = dict(grok_accuracy=arguments.grok_accuracy, smooth=arguments.smooth)
    directory = Path(arguments.run)
    if (directory / "metrics.csv").is_file():
        table = analysis.analyze(directory / "metrics.csv", **options)
        print(table.to_string(index=False))
        print(f"written to {analysis.write_analysis(table, directory / 'analysis.csv')}")
        return 0
    try:
        runs = [run for run in run_directories([directory]) if run != directory and (run / "metrics.csv").is_file()]
    except CompareError:
        runs = []
    if not runs:
        parser.error(f"{directory / 'metrics.csv'} does not exist and {directory} holds no runs with one; analyze "
                     f"takes a directory written by 'neuralgrok run --out', or a directory of them")
    unfinished = [run.name for run in runs if not (run / "summary.json").is_file()]
    if unfinished:
        print(f"note: unfinished (analysed as far as their metrics.csv goes): {', '.join(unfinished)}",
              file=sys.stderr)
    table = analysis.correlation_table({run.name: run / "metrics.csv" for run in runs}, **options)
    shown = table[["run", "measure", *analysis.CORRELATION_COLUMNS]]
    steps = [column for column in shown.columns if column in ("n_window", "lead") or column.endswith("_step")]
    print(shown.to_string(index=False, float_format=lambda value: f"{value:.3f}", na_rep="-",  # NaN: none
                          formatters={column: _whole_number for column in steps}))
    print(f"written to {analysis.write_analysis(table, directory / SWEEP_ANALYSIS)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="neuralgrok", description="Study and accelerate grokking.")
    # Not argparse's "version" action: it re-wraps the text to the terminal width.
    parser.add_argument("--version", action="store_true", help="print version and build information, then exit")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = commands.add_parser("demo",
                               help="baseline vs Grokfast vs NeuralGrok on a small task, with plots (a few minutes)",
                               description="Train baseline, Grokfast and NeuralGrok on the same task and seed; "
                                           "print a table and write plots under --out.")
    demo.add_argument("--out", required=True, help="output directory (one sub-directory per method)")
    demo.add_argument("--steps", type=int, default=None, help="steps per method (default: the demo's own)")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.add_argument("--overwrite", action="store_true",
                      help="delete the runs a previous demo left under --out first (else they are refused)")

    run = commands.add_parser("run", help="one training run",
                              description="Train one model; with --out write config.toml, checkpoint.pt, "
                                          "metrics.csv and summary.json there.")
    run.add_argument("--out", default=None, help="output directory (default: write nothing)")
    run.add_argument("--overwrite", action="store_true",
                     help="if --out holds another run, delete its files first (else the run is refused)")
    run.add_argument("--config", default=None, metavar="FILE.toml",
                     help="read the config fields from this TOML file; flags given override it")
    run.add_argument("--resume", default=None, metavar="DIR",
                     help="continue the run in DIR (written with --out) from its last checkpoint")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    add_config_arguments(run)

    sweep = commands.add_parser("sweep", help="one run per point of a grid, as separate processes",
                                description="Run (or with --dry-run print) one 'neuralgrok run' command per "
                                            "point of the sweep file's grid, skipping finished runs.")
    sweep.add_argument("sweep_files", nargs="+", metavar="sweep_file",
                       help="TOML with out = DIR, [base] fields and [grid] lists; several share one pool of jobs")
    sweep.add_argument("--jobs", type=int, default=1, help="runs at a time (default: 1)")
    sweep.add_argument("--dry-run", action="store_true", help="print the unfinished runs' commands, one per line")

    compare = commands.add_parser("compare", help="table and plot comparing runs grouped over seeds",
                                  description="Group runs by everything but the seed; write comparison.csv, "
                                              "comparison.md and comparison_accuracy.png.")
    compare.add_argument("runs", nargs="+", help="run directories, or sweep directories holding them")
    compare.add_argument("--out", default=None, help="output directory (default: the sweep directory, "
                                                     "when a single one is given)")

    analyze = commands.add_parser("analyze", help="correlate logged measures with the test loss, for a run or "
                                                  "every run of a sweep",
                                  description="Pearson/Spearman correlation of each measure in RUN/metrics.csv "
                                              "with the test loss (raw and log; Spearman also over the window "
                                              "from memorisation to grokking), the lag from the measure's "
                                              "largest drop to grokking and the lead of its change point on the "
                                              "test-accuracy jump; printed and written to RUN/analysis.csv. For a "
                                              "directory of runs (a sweep's out, a results directory): one table "
                                              "of every run's measures, written to DIR/correlations.csv.")
    analyze.add_argument("run", help="a run directory (written by 'neuralgrok run --out'), or a directory of them")
    analyze.add_argument("--grok-accuracy", type=float, default=0.95,
                         help="grokking = first logged step with this test accuracy (default: %(default)s)")
    analyze.add_argument("--smooth", type=int, default=1,
                         help="running-median window applied before looking for the largest drop (default: %(default)s)")
    results = commands.add_parser("results", help="export runs to results/, print the steps table, diff results",
                                  description="The commands of neuralgrok.experiments.results: export, table, "
                                              "diff (see 'neuralgrok results --help').", add_help=False)
    results.add_argument("arguments", nargs=argparse.REMAINDER, help="export|table|diff ...")
    for command_parser in commands.choices.values():
        command_parser.set_defaults(command_parser=command_parser)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """The ``neuralgrok`` command; returns the exit status (see the module docstring)."""
    parser = build_parser()
    try:
        return _main(parser, argv)
    except OSError as error:  # a full disk, a lost mount: one line, not a traceback
        print(f"neuralgrok: error: {error}. Every file written is complete (each is replaced atomically); "
              f"an interrupted run goes on with 'neuralgrok run --resume DIR' once the cause is fixed",
              file=sys.stderr)
        return 1


def _main(parser, argv):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["results"]:  # its own parser (export, table, diff), with its own --help
        from . import results

        return results.main(argv[1:])
    arguments = parser.parse_args(argv)
    if arguments.version:
        print(version_text())
        return 0
    if arguments.command in ("demo", "run"):
        keep_freed_memory()  # this process trains: reuse freed buffers (much cheaper evaluations)
    if arguments.command == "demo":
        if arguments.steps is not None and arguments.steps < 0:
            arguments.command_parser.error(f"--steps={arguments.steps} must not be negative")
        from .demo import run_demo  # imports matplotlib, which only the demo needs

        try:
            results, table = run_demo(arguments.out, steps=arguments.steps, progress=not arguments.quiet,
                                      overwrite=arguments.overwrite)
        except REFUSALS as error:
            refuse(arguments.command_parser, str(error))
        print(table, end="")
        print(f"plots and runs written under {arguments.out}")
        return EXIT_DIVERGED if any(r.summary["stop_reason"] == DIVERGED for r in results) else 0
    if arguments.command == "run":
        if arguments.resume:
            if arguments.overwrite:
                arguments.command_parser.error("--resume continues a run; --overwrite starts one over, drop one")
            summary = resume_run(arguments, arguments.command_parser)
        else:
            config = config_from_arguments(arguments, arguments.command_parser)
            if arguments.out is None:
                print("no --out: nothing is saved (give --out DIR to keep the config, metrics, checkpoints "
                      "and summary)", file=sys.stderr)
            try:
                summary = train(config, out_dir=arguments.out, progress=not arguments.quiet,
                                overwrite=arguments.overwrite).summary
            except REFUSALS as error:
                refuse(arguments.command_parser, str(error))
        return run_outcome(summary)
    if arguments.command == "sweep":
        from . import sweeps

        return sweeps.main(arguments, arguments.command_parser)
    if arguments.command == "compare":
        from . import compare  # imports matplotlib

        return compare.main(arguments, arguments.command_parser)
    if arguments.command == "analyze":
        return analyze_run(arguments, arguments.command_parser)
    parser.print_help(sys.stderr)
    return 2
