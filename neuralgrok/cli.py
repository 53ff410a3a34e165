"""Command line: ``neuralgrok`` (or ``python -m neuralgrok``).

    neuralgrok --version
    neuralgrok demo --out runs/demo [--steps N] [--quiet]
    neuralgrok run --task a*b --p 97 --method grokfast-ema --steps 5000 --out runs/ab97
    neuralgrok sweep configs/sweep-demo.toml [--jobs N] [--dry-run]     (see neuralgrok.sweep)
    neuralgrok compare runs/sweep-demo [runs/other ...] [--out DIR]      (see neuralgrok.compare)

``run`` has one flag per :class:`neuralgrok.train.TrainConfig` field, generated from the dataclass,
so names, types and defaults are defined once. Bad arguments exit with status 2.
"""
import argparse
import dataclasses
import sys
import typing

import torch

from . import BUILD_INFO, __version__
from .tasks import OPERATIONS
from .train import METHODS, TrainConfig, summary_table, train


def version_text():
    info = BUILD_INFO
    return (f"neuralgrok {__version__} (torch {torch.__version__}; built against torch {info['torch_version']}, "
            f"C++11 ABI {int(info['cxx11_abi'])}, {info['build_type']} build, {info['compiler']})")


CHOICES = {"task": lambda: sorted(OPERATIONS), "method": lambda: sorted(METHODS)}


def add_config_arguments(parser, defaults=TrainConfig()):
    """One ``--field-name`` flag per TrainConfig field, typed and defaulted from the dataclass."""
    for config_field in dataclasses.fields(TrainConfig):
        default = getattr(defaults, config_field.name)
        options = {"dest": config_field.name, "default": default,
                   "help": config_field.metadata.get("help", "") + " (default: %(default)s)"}
        if isinstance(default, bool):
            options["action"] = argparse.BooleanOptionalAction
        elif isinstance(default, tuple):
            variadic = typing.get_args(config_field.type)[-1:] == (Ellipsis,)  # Tuple[int, ...]
            options.update(nargs="+" if variadic else len(default), type=type(default[0]),
                           metavar=config_field.name.upper() if variadic else
                           tuple(f"{config_field.name.upper()}{i + 1}" for i in range(len(default))))
            options["help"] = config_field.metadata.get("help", "") + f" (default: {' '.join(map(str, default))})"
        else:
            options["type"] = type(default)
        if config_field.name in CHOICES:
            options["choices"] = CHOICES[config_field.name]()
        parser.add_argument("--" + config_field.name.replace("_", "-"), **options)


def config_from_arguments(arguments, parser):
    values = {f.name: getattr(arguments, f.name) for f in dataclasses.fields(TrainConfig)}
    try:
        return TrainConfig(**values)
    except ValueError as error:
        parser.error(str(error))  # exits with status 2


def build_parser():
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

    run = commands.add_parser("run", help="one training run",
                              description="Train one model; with --out write config.toml, metrics.csv "
                                          "and summary.json there.")
    run.add_argument("--out", default=None, help="output directory (default: write nothing)")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    add_config_arguments(run)

    sweep = commands.add_parser("sweep", help="one run per point of a grid, as separate processes",
                                description="Run (or with --dry-run print) one 'neuralgrok run' command per "
                                            "point of the sweep file's grid, skipping finished runs.")
    sweep.add_argument("sweep_file", help="TOML with out = DIR, [base] fields and [grid] lists")
    sweep.add_argument("--jobs", type=int, default=1, help="runs at a time (default: 1)")
    sweep.add_argument("--dry-run", action="store_true", help="print the unfinished runs' commands, one per line")

    compare = commands.add_parser("compare", help="table and plot comparing runs grouped over seeds",
                                  description="Group runs by everything but the seed; write comparison.csv, "
                                              "comparison.md and comparison_accuracy.png.")
    compare.add_argument("runs", nargs="+", help="run directories, or sweep directories holding them")
    compare.add_argument("--out", default=None, help="output directory (default: the sweep directory, "
                                                     "when a single one is given)")
    for command, command_parser in commands.choices.items():
        command_parser.set_defaults(command_parser=command_parser)
    return parser


def main(argv=None):
    parser = build_parser()
    arguments = parser.parse_args(argv)
    if arguments.version:
        print(version_text())
        return 0
    if arguments.command == "demo":
        if arguments.steps is not None and arguments.steps < 0:
            arguments.command_parser.error(f"--steps={arguments.steps} must not be negative")
        from .demo import run_demo  # imports matplotlib, which only the demo needs

        _, table = run_demo(arguments.out, steps=arguments.steps, progress=not arguments.quiet)
        print(table, end="")
        print(f"plots and runs written under {arguments.out}")
        return 0
    if arguments.command == "run":
        config = config_from_arguments(arguments, arguments.command_parser)
        result = train(config, out_dir=arguments.out, progress=not arguments.quiet)
        print(summary_table([result.summary]), end="")
        return 0
    if arguments.command == "sweep":
        from . import sweep  # it imports this module

        return sweep.main(arguments, arguments.command_parser)
    if arguments.command == "compare":
        from . import compare  # imports matplotlib

        return compare.main(arguments, arguments.command_parser)
    parser.print_help(sys.stderr)
    return 2
