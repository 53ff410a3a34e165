"""MED, the Main Embedding Diff, and its hidden-layer variant: Gu et al., "Beyond Progress
Measures" (arXiv 2504.03162)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple, Union

import torch

from .tokens import TokenRange, token_rows

MED_GAPS = ("reference", "all", "cyclic")
MED_COMBINE = ("mean", "sum", "scaled_sum")


@dataclass(frozen=True)
class MEDResult:
    """A Main Embedding Diff measurement.

    Attributes:
        value: the combined MED (see ``combine``).
        per_range: the mean gap D_r of each token range.
        gap_distances: per range, the float64 vector of the distances it averages.
        cv: per range, the coefficient of variation std / mean of those distances (population
            std); 0 when all consecutive tokens are equally far apart, as on a circle.
    """
    value: float
    per_range: Tuple[float, ...]
    gap_distances: Tuple[torch.Tensor, ...]
    cv: Tuple[float, ...]


def _gap_distances(rows: torch.Tensor, gaps: str) -> torch.Tensor:
    """||x_{t+1} - x_t|| over the gaps selected by ``gaps`` (see :func:`med`)."""
    if gaps == "cyclic":
        steps = torch.roll(rows, -1, dims=0) - rows  # the last row is x_0 - x_{p-1}
    else:
        steps = rows[1:] - rows[:-1]
        if gaps == "reference":
            steps = steps[:-1]
    return torch.linalg.vector_norm(steps, dim=1)


def _med_of_rows(ranges: List[torch.Tensor], p: int, gaps: str, combine: str) -> MEDResult:
    if gaps not in MED_GAPS:
        raise ValueError(f"gaps={gaps!r}; choose one of {MED_GAPS}")
    if combine not in MED_COMBINE:
        raise ValueError(f"combine={combine!r}; choose one of {MED_COMBINE}")
    if p < 3:
        raise ValueError(f"MED needs p >= 3 tokens, got {p}")
    distances = [_gap_distances(rows, gaps) for rows in ranges]
    stacked = torch.stack(distances)  # every range has the same number of gaps
    means = stacked.mean(dim=1)
    stds = (stacked - means[:, None]).pow(2).mean(dim=1).sqrt()
    total = means.sum()
    value = {"mean": total / len(ranges), "sum": total, "scaled_sum": (p - 1) * total}[combine]
    # One host transfer for everything logged.
    numbers = torch.cat([value.reshape(1), means, stds / means]).tolist()
    n = len(ranges)
    return MEDResult(value=numbers[0], per_range=tuple(numbers[1:1 + n]), gap_distances=tuple(distances),
                     cv=tuple(numbers[1 + n:]))


@torch.no_grad()
def med(embedding: torch.Tensor, p: int, *, ranges: Sequence[TokenRange] = (0, 0), gaps: str = "reference",
        combine: str = "mean") -> MEDResult:
    """Main Embedding Diff (MED) of Gu et al., "Beyond Progress Measures" (arXiv 2504.03162).

    For each token range r (the embedding rows e_0..e_{p-1} of the residues in natural order)::

        D_r = mean over gaps t of ||e_{t+1} - e_t||_2

    and the ranges combine into one value. At Gaussian init N(0, 1/d) every gap is about
    sqrt(2); training with weight decay makes the gaps small and uniform.

    Args:
        embedding: the token-embedding matrix, one row per token (vocab, d).
        p: the modulus (number of number tokens per range).
        ranges: one token range per operand position: an int offset or p explicit ids. The
            default ``(0, 0)`` is the shared-vocabulary case (both operands use ids 0..p-1, so
            D_1 = D_2); with the strip hold-out's second-operand shift delta use ``(0, delta)``.
        gaps: which gaps t enter the mean. ``"reference"``: t = 0..p-3, as the reference code
            (its ranges stop one early, dropping the last gap); ``"all"``: t = 0..p-2;
            ``"cyclic"``: t = 0..p-1 with the wrap-around gap e_0 - e_{p-1}.
        combine: ``"mean"``: (D_1 + D_2) / 2 (the reference ``transformer/base.py``, default);
            ``"sum"``: D_1 + D_2 (``transformer/str.py``); ``"scaled_sum"``: (p - 1)(D_1 + D_2)
            (``transformer/rec.py``). With more ranges, the mean / sum runs over all of them.

    Returns:
        :class:`MEDResult`.
    """
    if not ranges:
        raise ValueError("med() needs at least one token range")
    return _med_of_rows([token_rows(embedding, r, p) for r in ranges], p, gaps, combine)


@torch.no_grad()
def hidden_layer_med(hidden: Union[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]],
                     inputs: Optional[torch.Tensor] = None, *, gaps: str = "reference",
                     combine: str = "mean") -> MEDResult:
    """MED on first-hidden-layer activations, for the fixed one-hot embedding variant of Gu et al.

    With a fixed identity embedding the embedding rows are always sqrt(2) apart, so the paper
    measures the activations h_i of the diagonal inputs (i, i, =) instead::

        D = mean over gaps t of ||h_{t+1} - h_t||_2

    Args:
        hidden: the activations of the diagonal inputs i = 0..p-1 in order, shape (p, ...)
            (flattened past the first dimension), or a callable mapping ``inputs`` to them.
        inputs: the inputs for a callable ``hidden``, typically
            ``diagonal_inputs(p, equals_id, second_offset)``.
        gaps, combine: as in :func:`med`, with the diagonal as the single range (so ``"mean"``
            and ``"sum"`` both give D, ``"scaled_sum"`` gives (p - 1) D).
    """
    if callable(hidden):
        if inputs is None:
            raise ValueError("hidden_layer_med(): a callable needs the inputs, e.g. diagonal_inputs(p, equals_id)")
        hidden = hidden(inputs)
    activations = hidden.detach().reshape(hidden.shape[0], -1).double()
    return _med_of_rows([activations], activations.shape[0], gaps, combine)
