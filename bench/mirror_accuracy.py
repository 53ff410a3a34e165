"""Accuracy on a two-operand run's test pairs, split by whether the mirrored pair (b, a) was trained.

    .venv/bin/python bench/mirror_accuracy.py RUN_DIR [--checkpoint model.pt]

On a commutative task (a+b, x^2+xy+y^2: f(a, b) = f(b, a)) a model that has memorised its training pairs and
learned the symmetry, but not the operation, gets exactly the test pairs (a, b) whose mirror (b, a) is a
training pair right, and the others at chance. With a random half of the pairs trained, that is about half the
test set: the README quotes this check for Gu et al.'s p = 97 x^2+xy+y^2 base run, whose test accuracy sits at
0.50 from step 12,000 to the 30,000-step cap. It reads the weights a run leaves in its directory: a finished
run's final ``model.pt``, else its last ``checkpoint.pt`` (committed results/ hold neither: run the config again,
or use a sweep worktree's runs/).
"""
import sys
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import run_weights_arguments  # noqa: E402

from neuralgrok.experiments.data import build_data  # noqa: E402
from neuralgrok.experiments.loop import trained_model  # noqa: E402
from neuralgrok.experiments.records import run_config  # noqa: E402

PARTS = ("mirror trained", "mirror not trained", "diagonal")


def by_mirror(run_dir: Path, checkpoint: Optional[str] = None) -> Tuple[int, Dict[str, Dict[str, float]]]:
    """``(step, parts)``: the weights' step and, for each of :data:`PARTS` (the test pairs (a, b), a != b, whose
    mirror (b, a) is a training pair; those whose mirror is a test pair; a == b), ``{"pairs", "accuracy"}``
    (accuracy NaN for an empty part). ``checkpoint``: the weights file in ``run_dir``; by default ``model.pt``
    where the run has one, else ``checkpoint.pt``."""
    config = run_config(run_dir)
    data = build_data(config, with_outer=False, progress=False)
    operands = None if data.layout is None else data.layout.decode(data.test.inputs)
    if operands is None or operands.shape[1] != 2:
        raise ValueError(f"{run_dir} is not a two-operand task (task = {config.task!r})")
    step, model = trained_model(run_dir, checkpoint)
    with torch.no_grad():
        right = (model(data.test.inputs).argmax(-1) == data.test.labels).double()
    a, b = operands.unbind(1)
    trained = set(map(tuple, data.layout.decode(data.train.inputs).tolist()))
    mirror_trained = torch.tensor([(y, x) in trained for x, y in zip(a.tolist(), b.tolist())], dtype=torch.bool)
    masks = {"mirror trained": mirror_trained & (a != b), "mirror not trained": ~mirror_trained & (a != b),
             "diagonal": a == b}
    return step, {name: {"pairs": int(mask.sum()),
                         "accuracy": right[mask].mean().item() if mask.any() else float("nan")}
                  for name, mask in masks.items()}


def main() -> None:
    parser, args = run_weights_arguments(__doc__)
    try:
        step, parts = by_mirror(args.run_dir, args.checkpoint)
    except ValueError as error:
        parser.error(str(error))
    pairs = sum(part["pairs"] for part in parts.values())
    total = sum(part["pairs"] * part["accuracy"] for part in parts.values() if part["pairs"]) / pairs
    print(f"{args.run_dir} at step {step}: test accuracy {total:.4f} over {pairs} pairs")
    print("test pairs (a, b)  | pairs | accuracy")
    for name, part in parts.items():
        print(f"{name:18s} | {part['pairs']:5d} | {part['accuracy']:8.4f}")


if __name__ == "__main__":
    main()
