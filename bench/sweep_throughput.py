"""Sweep throughput on this machine: runs per hour of two runs side by side (one thread each, as
``neuralgrok sweep --jobs 2`` runs them) against one run alone.

Each run is ``neuralgrok run --config CONFIG --steps STEPS --threads 1`` in a process of its own
(evaluation, logging and start-up included, as in a sweep). Alone and paired take turns, ``--rounds``
times; the ratio is 2 x (median time alone) / (median time of a pair), 2.0 being perfect scaling.
CPU time per wall second of each run (user + system, from the kernel's accounting of the child)
shows whether a run keeps to its one thread: a value near 1.0, not above.

    .venv/bin/python bench/sweep_throughput.py [--steps 300] [--rounds 2] [--config configs/neuralgrok/add.toml]
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def launch(config: Path, steps: int, method: str, out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "neuralgrok", "run", "--config", str(config), "--method", method,
                             "--steps", str(steps), "--threads", "1", "--checkpoint-every", "0", "--quiet",
                             "--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def timed(config: Path, steps: int, method: str, parallel: int, workdir: Path):
    """Wall seconds of ``parallel`` runs started together, and each run's CPU seconds per wall second."""
    start = time.perf_counter()
    runs = [launch(config, steps, method, workdir / f"run-{time.monotonic_ns()}-{i}") for i in range(parallel)]
    loads = []
    for run in runs:
        _, status, usage = os.wait4(run.pid, 0)
        run.returncode = os.waitstatus_to_exitcode(status)
        if run.returncode != 0:
            raise SystemExit(f"a run failed (exit {run.returncode}): {run.stderr.read()}")
        loads.append((usage.ru_utime + usage.ru_stime) / (time.perf_counter() - start))
    return time.perf_counter() - start, loads


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "neuralgrok" / "add.toml")
    parser.add_argument("--method", default="neuralgrok")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    alone, paired, loads_alone, loads_paired = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            seconds, loads = timed(args.config, args.steps, args.method, 1, Path(tmp))
            alone.append(seconds)
            loads_alone += loads
            seconds, loads = timed(args.config, args.steps, args.method, 2, Path(tmp))
            paired.append(seconds)
            loads_paired += loads
    one, two = statistics.median(alone), statistics.median(paired)
    print(f"{args.method} runs of {args.steps} steps, {args.config.name}, {os.cpu_count()} CPUs, "
          f"median of {args.rounds} rounds ({time.strftime('%Y-%m-%d')})")
    print("| | wall s | runs per hour | CPU s per wall s, each run |")
    print("|---|---|---|---|")
    print(f"| one run alone | {one:.1f} | {3600 / one:.1f} | {', '.join(f'{x:.2f}' for x in loads_alone)} |")
    print(f"| two side by side | {two:.1f} | {7200 / two:.1f} | {', '.join(f'{x:.2f}' for x in loads_paired)} |")
    print(f"throughput of two side by side: {2 * one / two:.2f}x one alone (target >= 1.8x)")


if __name__ == "__main__":
    main()
