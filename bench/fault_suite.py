"""The fault suite: faults a run can meet, each followed by the recovery a user would make, and checks
that nothing finished was lost and nothing wrong was reported as a result (issue 14).

    python bench/fault_suite.py                 # about 10-15 minutes on the project's 2-core machine
    python bench/fault_suite.py --kills 4       # a quicker pass

Every run is a small ``neuralgrok run`` (a+b mod 11, minibatches, a checkpoint every 7 steps) of one of
the four methods, compared with an uninterrupted run of the same config made first (metrics.csv
without its wall-time column, summary.json without the machine's fields). The faults:

- kills: SIGKILL at ``--kills`` random moments (start-up, training, a checkpoint write, the final
  writes), a third of them killed a second time while resuming; then ``--resume`` (or the same
  command, if the kill came before config.toml existed);
- damaged checkpoints: a flipped byte in the header or in the tensors, truncation, an empty file,
  bytes appended, a checkpoint of the format before checksums; the resume must refuse in one line
  naming the file, and the choice it offers (the previous checkpoint, or starting over) must lead
  to the right result;
- a full disk: a file-size limit (RLIMIT_FSIZE) under the first checkpoint's size, and, where this
  process may mount one, a small tmpfs that fills during the run; the run must fail in one line
  leaving only complete files, and resume to the right result once there is room;
- two writers: a second ``run`` (with ``--overwrite``) and a ``--resume`` started on a run
  directory in use must be refused while the first run finishes right.

After each fault every file in the run directory is checked: config.toml parses, checkpoints verify
their checksums, metrics.csv parses, summary.json is strict JSON and, where present, is the right
result. The last line counts what was tried and what held.
"""
import argparse
import contextlib
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from neuralgrok.storage.checkpoints import checkpoint_problem, previous_path, read_checkpoint
from neuralgrok.experiments.config import TrainConfig
from neuralgrok.experiments.records import CHECKPOINT, read_metrics

METHODS = ("baseline", "grokfast-ema", "grokfast-ma", "neuralgrok")
FLAGS = ["--task", "a+b", "--p", "11", "--width", "32", "--depth", "1", "--steps", "300", "--batch-size", "16",
         "--lr", "3e-3", "--weight-decay", "0.1", "--eval-every", "10", "--checkpoint-every", "7", "--threads", "1",
         "--meta-every", "2", "--amplifier-hidden", "16", "--ma-window", "10", "--quiet"]
MACHINE_FIELDS = ("wall_time_s", "peak_rss_mib", "build")
FAULTS = ("kills", "damaged", "disk", "writers")


def command(method, out, *extra):
    return [sys.executable, "-m", "neuralgrok", "run", *FLAGS, "--method", method, "--out", str(out), *extra]


def resume_command(out):
    return [sys.executable, "-m", "neuralgrok", "run", "--resume", str(out), "--quiet"]


def run(args, limit_bytes=None, timeout=600):
    """A command's CompletedProcess; ``limit_bytes``: a file-size limit for it (RLIMIT_FSIZE)."""
    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout,
                          preexec_fn=limit if limit_bytes is not None else None)


def result_of(run_dir):
    """What a finished run reports: its metrics without wall time, its summary without machine fields."""
    rows = [{k: v for k, v in row.items() if k != "wall_time_s"} for row in read_metrics(run_dir / "metrics.csv")]
    summary = {k: v for k, v in json.loads((run_dir / "summary.json").read_text()).items() if k not in MACHINE_FIELDS}
    return json.dumps({"rows": rows, "summary": summary}, sort_keys=True)


def files_problems(run_dir, reference):
    """What is wrong with the files in ``run_dir`` (after a fault): each must be complete, and a
    summary.json, if there, must be the reference result."""
    problems = []
    for path in sorted(Path(run_dir).iterdir()) if Path(run_dir).exists() else []:
        try:
            if path.name == "config.toml":
                TrainConfig.from_toml(path)
            elif path.suffix == ".pt" and (path.name.startswith("checkpoint") or path.name == "model.pt"):
                problem = checkpoint_problem(path)
                if problem:
                    problems.append(f"{path.name}: {problem}")
            elif path.name == "metrics.csv":
                read_metrics(path)
            elif path.name == "summary.json":
                json.loads(path.read_text(), parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
                if result_of(run_dir) != reference:
                    problems.append("summary.json and metrics.csv report another result than the uninterrupted run")
            elif path.name == "amplifier.pt":
                torch.load(path, map_location="cpu")
        except Exception as error:  # any file that does not parse is a fault not survived
            problems.append(f"{path.name}: {type(error).__name__}: {error}")
    return problems


class Suite:
    def __init__(self, work, seed):
        self.work, self.random = work, random.Random(seed)
        self.outcomes = []  # (group, name, held, detail)
        self.references, self.durations = {}, {}
        self.mid_run = self.twice = 0  # kills that interrupted a run; runs killed again while resuming

    def record(self, group, name, problems):
        held = not problems
        self.outcomes.append((group, name, held, "; ".join(problems)))
        print(f"  {'held' if held else 'FAILED'}  {group}: {name}" + ("" if held else f": {'; '.join(problems)}"),
              flush=True)

    def reference(self, method):
        if method not in self.references:
            out = self.work / "reference" / method
            start = time.monotonic()
            done = run(command(method, out))
            if done.returncode != 0:
                raise SystemExit(f"the reference run of {method} failed: {done.stderr}")
            self.durations[method] = time.monotonic() - start
            self.references[method] = result_of(out)
        return self.references[method]

    def finish(self, method, out, problems, limit_bytes=None):
        """Resume ``out`` (or start it again if the kill came before config.toml) until it has finished."""
        args = resume_command(out) if (out / "config.toml").exists() else command(method, out, "--overwrite")
        done = run(args, limit_bytes)
        if done.returncode != 0:
            problems.append(f"{' '.join(args[3:5])} exited {done.returncode}: {done.stderr.strip()[-300:]}")
            return
        problems += files_problems(out, self.reference(method))
        if not (out / "summary.json").exists():
            problems.append("no summary.json after the resume")

    # -- faults ------------------------------------------------------------------------------------------------
    def kill_at(self, args, delay):
        """Start ``args``, SIGKILL it after ``delay`` seconds (unless it ended); whether it was killed."""
        process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            process.wait(timeout=delay)
            return False
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
            return True

    def kills(self, count):
        for index in range(count):
            method = METHODS[index % len(METHODS)]
            reference, duration = self.reference(method), self.durations[method]
            out = self.work / "kills" / f"{index:02d}-{method}"
            delay = self.random.uniform(0.02, 0.7) * duration  # a run sped up by a lighter load may finish first
            killed = self.kill_at(command(method, out), delay)
            problems = files_problems(out, reference)
            twice = index % 3 == 2 and (out / "config.toml").exists() and not (out / "summary.json").exists()
            if twice:  # killed again, while resuming
                self.kill_at(resume_command(out), self.random.uniform(0.3, 1.0) * duration)
                problems += files_problems(out, reference)
            if not (out / "summary.json").exists():
                self.finish(method, out, problems)
            else:
                problems += files_problems(out, reference)
            what = f"{method}, SIGKILL at {delay:.2f} s" + (" (it had finished)" if not killed else "") + \
                   (", and again while resuming" if twice else "")
            self.mid_run += killed
            self.twice += twice
            self.record("kills", what, problems)

    def damaged_checkpoints(self):
        method = "grokfast-ema"
        reference = self.reference(method)
        source = self.work / "reference" / method

        def flip(offset_fraction=None, offset=None):
            def damage(path):
                data = bytearray(path.read_bytes())
                data[offset if offset is not None else int(len(data) * offset_fraction)] ^= 0x5A
                path.write_bytes(bytes(data))
            return damage

        damages = {
            "a flipped byte in the header": flip(offset=30),
            "a flipped byte among the tensors": flip(0.5),
            "a flipped byte near the end": flip(0.97),
            "truncated to half": lambda path: path.write_bytes(path.read_bytes()[:path.stat().st_size // 2]),
            "an empty file": lambda path: path.write_bytes(b""),
            "bytes appended": lambda path: path.write_bytes(path.read_bytes() + b"\0" * 64),
            "the format before checksums": lambda path: torch.save(read_checkpoint(path), path),
            "both checkpoints damaged": "both",
        }
        for name, damage in damages.items():
            problems = []
            out = self.work / "damaged" / name.replace(" ", "-")
            out.mkdir(parents=True)
            for file in ("config.toml", CHECKPOINT, previous_path(CHECKPOINT).name):
                shutil.copy(source / file, out / file)
            if damage == "both":
                flip(0.5)(out / CHECKPOINT)
                flip(0.5)(previous_path(out / CHECKPOINT))
            else:
                damage(out / CHECKPOINT)
            refused = run(resume_command(out))
            message = refused.stderr.strip().splitlines()
            if refused.returncode != 2 or "Traceback" in refused.stderr or len(message) != 1:
                problems.append(f"the resume exited {refused.returncode} with {refused.stderr.strip()[-300:]!r}, "
                                f"not one line and status 2")
            elif str(out / CHECKPOINT) not in message[0] or "to go on" not in message[0]:
                problems.append(f"the message does not name the file and the choices: {message[0]!r}")
            if (out / "summary.json").exists():
                problems.append("a damaged checkpoint produced a summary.json")
            # The recovery the message offers: the previous checkpoint if it is intact, else start over.
            if "checkpoint.prev.pt" in refused.stderr:
                (out / CHECKPOINT).rename(self.work / "damaged" / f"{out.name}.moved.pt")
                self.finish(method, out, problems)
            else:
                done = run(command(method, out, "--overwrite"))
                if done.returncode != 0:
                    problems.append(f"starting over exited {done.returncode}: {done.stderr.strip()[-300:]}")
                problems += files_problems(out, reference)
            self.record("damaged checkpoints", name, problems)

    def full_disk(self):
        method = "neuralgrok"
        reference = self.reference(method)
        checkpoint_size = (self.work / "reference" / method / CHECKPOINT).stat().st_size
        # A file-size limit: config.toml fits, the first checkpoint does not.
        out = self.work / "full-disk" / "file-size-limit"
        done = run(command(method, out), limit_bytes=checkpoint_size // 2)
        problems = self.after_disk_error(done, out, reference)
        self.finish(method, out, problems)
        self.record("full disk", "a file-size limit under one checkpoint", problems)
        # A small file system that fills during the run (needs the right to mount one).
        mount = self.work / "full-disk" / "tmpfs"
        mount.mkdir(parents=True)
        size = 3 * checkpoint_size + 64 * 1024  # two checkpoints fit, and the metrics for a while
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
                                 capture_output=True, text=True)
        if mounted.returncode != 0:
            print(f"  (a small tmpfs could not be mounted here: {mounted.stderr.strip()}; that fault is not tried)")
            return
        try:
            out = mount / "run"
            filler = mount / "filler"
            done = subprocess.Popen(command(method, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            while not (out / CHECKPOINT).exists() and done.poll() is None:
                time.sleep(0.05)
            with contextlib.suppress(OSError):  # fill what is left, so the next write fails
                with open(filler, "wb") as f:
                    while True:
                        f.write(b"\0" * 65536)
            _, stderr = done.communicate(timeout=600)
            problems = self.after_disk_error(subprocess.CompletedProcess([], done.returncode, "", stderr), out,
                                             reference)
            filler.unlink()
            moved = self.work / "full-disk" / "moved-off-the-full-disk"
            shutil.copytree(out, moved)  # the user frees space, or moves the run: here, both
            self.finish(method, moved, problems)
        finally:
            subprocess.run(["umount", str(mount)], capture_output=True)
        self.record("full disk", "a small file system filled during the run", problems)

    def after_disk_error(self, done, out, reference):
        problems = []
        lines = done.stderr.strip().splitlines()
        if done.returncode != 1 or "Traceback" in done.stderr or not lines or "--resume" not in lines[-1]:
            problems.append(f"the run exited {done.returncode} with {done.stderr.strip()[-300:]!r}, not one line and 1")
        temporaries = [p.name for p in out.glob(".*.tmp")]
        if temporaries:
            problems.append(f"temporary files left: {temporaries}")
        return problems + files_problems(out, reference)

    def two_writers(self):
        method = "baseline"
        reference = self.reference(method)
        out = self.work / "two-writers" / "run"
        first = subprocess.Popen(command(method, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        while not (out / "config.toml").exists() and first.poll() is None:
            time.sleep(0.02)
        second = run(command("grokfast-ema", out, "--overwrite"))
        third = run(resume_command(out))
        first.communicate(timeout=600)
        for name, done in (("a second run with --overwrite", second), ("a --resume", third)):
            problems = []
            if first.returncode != 0:
                problems.append(f"the first run exited {first.returncode}")
            if done.returncode != 2 or "being written by another process" not in done.stderr:
                # A resume can also come after the first run finished: then it says so and exits 0.
                if not (done is third and done.returncode == 0 and "has finished" in done.stdout):
                    problems.append(f"it exited {done.returncode}: {done.stderr.strip()[-300:]!r}")
            problems += files_problems(out, reference)
            if not (out / "summary.json").exists():
                problems.append("the first run left no summary.json")
            self.record("two writers", name, problems)

    def summary_line(self):
        groups = {}
        for group, _, held, _ in self.outcomes:
            tried, kept = groups.get(group, (0, 0))
            groups[group] = (tried + 1, kept + held)
        tried, held = len(self.outcomes), sum(held for _, _, held, _ in self.outcomes)
        parts = ", ".join(f"{group} {kept}/{count}" + (f" ({self.mid_run} mid-run, {self.twice} also while resuming)"
                                                        if group == "kills" else "")
                          for group, (count, kept) in groups.items())
        verdict = "every fault survived, nothing finished lost, nothing wrong reported" if held == tried else \
            f"{tried - held} NOT survived"
        return f"fault suite: {tried} faults tried, {held} held ({parts}); {verdict}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=20, help="random kill moments (default: 20)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the kill moments (default: 0)")
    parser.add_argument("--work", default=None, help="working directory (default: a temporary one, removed)")
    parser.add_argument("--only", nargs="+", choices=FAULTS, default=FAULTS, help="these faults only (default: all)")
    arguments = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        work = Path(arguments.work) if arguments.work else Path(stack.enter_context(
            tempfile.TemporaryDirectory(prefix="neuralgrok-faults-")))
        suite = Suite(work, arguments.seed)
        print("reference runs (uninterrupted)", flush=True)
        for method in METHODS:
            suite.reference(method)
        faults = {"kills": lambda: suite.kills(arguments.kills), "damaged": suite.damaged_checkpoints,
                  "disk": suite.full_disk, "writers": suite.two_writers}
        for name in arguments.only:
            print(name, flush=True)
            faults[name]()
        print(suite.summary_line())
        return 0 if all(held for _, _, held, _ in suite.outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
