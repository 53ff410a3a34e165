"""Accuracy on a hold-out run's held block, per first operand, from the run's checkpoint.

    .venv/bin/python bench/holdout_by_operand.py RUN_DIR [--checkpoint model.pt]

For Gu et al.'s strip (``split = "strip"``, ``operand_offset = 60``) the first operands 0..k are never the first
token of a training input, but with k >= 60 the tokens 60..k are also the second operand's tokens 0..k-60, which
are trained. This prints, for each first operand of the held block, its accuracy, and the norm of its token
embedding, so a reader sees which held pairs a run gets right and why (the README's hold-out section quotes it
for the strip at k = 67). It reads the weights a run leaves in its directory: a finished run's final ``model.pt``,
else its last ``checkpoint.pt`` (runs written before model.pt existed, as the p = 97 sweep's; committed results/
hold neither: run the config again, or use a sweep worktree's runs/).
"""
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import run_weights_arguments  # noqa: E402

from neuralgrok.experiments.data import build_data  # noqa: E402
from neuralgrok.experiments.loop import trained_model  # noqa: E402
from neuralgrok.experiments.records import run_config  # noqa: E402


def by_first_operand(run_dir: Path, checkpoint: Optional[str] = None) -> Tuple[int, List[Dict[str, Any]]]:
    """``(step, rows)``: the weights' step and, for each first-operand token of the held block (ascending),
    ``{"token", "pairs", "accuracy", "trained" (the token occurs in some training input), "embedding_norm"}``.
    ``checkpoint``: the weights file in ``run_dir``; by default ``model.pt`` where the run has one, else
    ``checkpoint.pt``."""
    config = run_config(run_dir)
    if config.split not in ("strip", "rectangle"):
        raise ValueError(f"{run_dir} is not a hold-out run (split = {config.split!r})")
    step, model = trained_model(run_dir, checkpoint)
    data = build_data(config, with_outer=False, progress=False)
    held = data.test_parts["held"]
    with torch.no_grad():
        right = (model(held.inputs).argmax(-1) == held.labels).double()
    first = held.inputs[:, 0]
    trained = set(data.train.inputs.flatten().tolist())
    embedding = model.state_dict().get("token_embedding.weight")
    rows = [{"token": token, "pairs": int((first == token).sum()), "accuracy": right[first == token].mean().item(),
             "trained": token in trained,
             "embedding_norm": embedding[token].norm().item() if embedding is not None else float("nan")}
            for token in first.unique().tolist()]
    return step, rows


def main() -> None:
    parser, args = run_weights_arguments(__doc__)
    try:
        step, rows = by_first_operand(args.run_dir, args.checkpoint)
    except ValueError as error:
        parser.error(str(error))
    total = sum(row["pairs"] * row["accuracy"] for row in rows) / sum(row["pairs"] for row in rows)
    print(f"{args.run_dir} at step {step}: held-block accuracy {total:.4f}")
    print("first operand token | pairs | accuracy | token in a training input | embedding norm")
    for row in rows:
        print(f"{row['token']:19d} | {row['pairs']:5d} | {row['accuracy']:8.3f} | "
              f"{'yes' if row['trained'] else 'no':25s} | {row['embedding_norm']:.3f}")


if __name__ == "__main__":
    main()
