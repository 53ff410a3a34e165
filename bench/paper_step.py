"""Cost of a training step at NeuralGrok's Table 1 settings, per method, against plain Adam and against
the official loop's structure, all measured in this run.

Settings: configs/neuralgrok/add.toml (a+b mod 97, the 2 x 128 official-block transformer, batches of 512,
Adam with L2 1e-3, amplifier (128, 128), T = 4, c = 1, clip 1), one torch thread. Every method is built
by the runner's own builders from that file (``--method``), on its own copy of the same model, and
steps the runner's batches; the official structure is bench/official_loop.py (a dense per-tensor MLP
in Python, a deep copy of the model at every meta step), which tests/test_paper_setup.py checks
against the wrapper in float64. Times: blocks of T steps (one meta step per block), the methods
taking turns within each round so that a drift of the machine hits all alike, median over rounds.
Memory: each method in a fresh process with the runner's malloc settings (``keep_freed_memory``, as
``neuralgrok run`` applies them), the peak RSS over a few blocks of steps and its growth over the RSS
after building data, model and optimizer (what the method and its training add, the C library's heap
and torch's code pages included); and the peak of the tensors allocated during one more block after
those (torch.profiler's memory events: what the method itself holds at its worst moment,
free of the allocator's caching).

    .venv/bin/python bench/paper_step.py [--rounds 15] [--config configs/neuralgrok/add.toml]
"""
import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine  # noqa: E402
from official_loop import OfficialLoop  # noqa: E402

from neuralgrok import NeuralAmplifier  # noqa: E402
from neuralgrok.allocator import keep_freed_memory  # noqa: E402
from neuralgrok.experiments.config import TrainConfig  # noqa: E402
from neuralgrok.experiments.data import build_data  # noqa: E402
from neuralgrok.experiments.loop import TrainingBatches  # noqa: E402
from neuralgrok.experiments.methods import METHODS, build_base_optimizer, uses_outer_split  # noqa: E402
from neuralgrok.experiments.models import answer_loss, build_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# (row name, runner method, meta mode); "official" is the official loop's structure.
ROWS = [("Adam (baseline)", "baseline", None), ("Grokfast EMA", "grokfast-ema", None),
        ("Grokfast MA", "grokfast-ma", None), ("NeuralGrok, paper mode", "neuralgrok", "paper"),
        ("NeuralGrok, fast mode", "neuralgrok", "fast"),
        ("NeuralGrok, amplifier frozen (the transform alone)", "neuralgrok-frozen", None),
        ("normalize", "normalize", None),
        ("normalize-clip", "normalize-clip", None), ("official loop's structure", "official", "paper")]


def setup(config_path: Path, row: int):
    """Data, model and optimizer of ``ROWS[row]``; returns a function doing one block of T steps."""
    name, method, meta = ROWS[row]
    values = dict(TrainConfig.from_toml(config_path).__dict__, method="neuralgrok" if method == "official" else method)
    if meta:
        values["meta_mode"] = meta
    config = TrainConfig(**values)
    torch.manual_seed(config.seed)
    with_outer = uses_outer_split(config)
    data = build_data(config, with_outer, progress=False)
    model = build_model(config, data.layout, data.sequence_length)
    block = config.meta_every
    if method == "official":
        loop = OfficialLoop(model, NeuralAmplifier(config.amplifier_hidden).mlp, data.train, data.outer,
                            lr=config.lr, betas=tuple(config.betas), weight_decay=config.weight_decay,
                            warmup_steps=config.warmup_steps, batch_size=config.batch_size,
                            meta_every=config.meta_every, meta_lr=config.meta_lr,
                            meta_weight_decay=config.meta_weight_decay, clip=config.clip_grad_norm or None,
                            seed=config.seed)

        def steps():
            for _ in range(block):
                loop.step()

        return steps, block
    base = build_base_optimizer(config, list(model.parameters()))
    optimizer = METHODS[config.method].build(base, model, config, data.outer if with_outer else None)
    batches = TrainingBatches(data.train.inputs, data.train.labels, config.batch_size, config.seed)

    def steps():
        for _ in range(block):
            inputs, labels = next(batches)

            def closure():
                optimizer.zero_grad(set_to_none=True)
                loss = answer_loss(model, inputs, labels, config.loss)[0]
                loss.backward()
                return loss

            optimizer.step(closure)

    return steps, block


def seconds_per_step(config_path: Path, rounds: int):
    """Median seconds per step of every row, the rows taking turns in each round."""
    runs = [setup(config_path, row) for row in range(len(ROWS))]
    for steps, _ in runs:
        steps()  # warm-up: first allocations, Adam's state, the first meta step
    times = [[] for _ in ROWS]
    for _ in range(rounds):
        for row, (steps, block) in enumerate(runs):
            start = time.perf_counter()
            steps()
            times[row].append((time.perf_counter() - start) / block)
    return [statistics.median(t) for t in times]


def peak_rss(config_path: Path, row: int, blocks: int = 4):
    """(peak RSS, its growth over the RSS after the setup, peak tensor memory of one block) in MiB, of
    this process: ``blocks`` blocks, then one more under torch.profiler."""
    steps, _ = setup(config_path, row)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(blocks):
        steps()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024, (peak - before) / 1024, peak_tensor_bytes(steps) / 2 ** 20


def peak_tensor_bytes(steps) -> int:
    """The most bytes of tensors allocated during one call of ``steps`` that are alive at once (the
    tensors that existed before it, parameters and optimizer state, are not counted)."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        steps()
    with tempfile.TemporaryDirectory() as tmp:
        prof.export_chrome_trace(str(Path(tmp) / "trace.json"))
        events = json.loads((Path(tmp) / "trace.json").read_text())["traceEvents"]
    memory = sorted((e for e in events if e.get("name") == "[memory]"), key=lambda e: e["ts"])
    live = peak = 0
    for event in memory:  # an allocation's Bytes > 0, a free's < 0 (frees of older tensors are left out)
        live += event["args"]["Bytes"]
        peak = max(peak, live)
    return peak


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "neuralgrok" / "add.toml")
    parser.add_argument("--memory-of", type=int, help=argparse.SUPPRESS)  # child process: one row's memory
    args = parser.parse_args()
    torch.set_num_threads(1)
    keep_freed_memory()
    if args.memory_of is not None:
        print(json.dumps(peak_rss(args.config, args.memory_of)))
        return
    memory = []
    for row in range(len(ROWS)):
        out = subprocess.run([sys.executable, __file__, "--config", str(args.config), "--memory-of", str(row)],
                             check=True, capture_output=True, text=True).stdout
        memory.append(json.loads(out.strip().splitlines()[-1]))
    seconds = seconds_per_step(args.config, args.rounds)
    adam, official = seconds[0], seconds[-1]
    print(f"One training step at {args.config.relative_to(ROOT) if args.config.is_relative_to(ROOT) else args.config}"
          f" ({machine()}; 1 thread; median of {args.rounds} rounds; {time.strftime('%Y-%m-%d')})")
    print("| method | ms / step | vs Adam | vs official structure | peak RSS (MiB) | vs Adam | "
          "peak RSS growth (MiB) | vs Adam | peak tensors of a block (MiB) | vs Adam |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for (name, _, _), s, (peak, growth, tensors) in zip(ROWS, seconds, memory):
        print(f"| {name} | {s * 1e3:.1f} | {s / adam:.2f}x | {s / official:.3f}x | {peak:.0f} | "
              f"{peak / memory[0][0]:.2f}x | {growth:.1f} | {growth / memory[0][1]:.2f}x | {tensors:.1f} | "
              f"{tensors / memory[0][2]:.2f}x |")


if __name__ == "__main__":
    main()
