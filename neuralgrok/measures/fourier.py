"""Progress measures for grokking, cheap enough to log every few steps.

Every function takes tensors or modules, never a specific model class: pass the embedding matrix
and the token ids of the number tokens explicitly. All of them run under ``torch.no_grad()`` and
return Python floats (or small dicts / dataclasses of them) ready for a metrics table.

Sources:

- MED, the Main Embedding Diff, and its hidden-layer variant: Gu et al., "Beyond Progress
  Measures" (arXiv 2504.03162).
- Weight norm (the L2 norm, and its square, the sum of squares), the classic grokking measure
  (Power et al.; Nanda et al.).
- AGE, NeuralGrok's Absolute Gradient Entropy (arXiv 2504.17243), here also per layer.
- Fourier measures for modular addition (key frequencies, Gini coefficients, restricted and
  excluded loss): Nanda et al., "Progress measures for grokking via mechanistic
  interpretability" (arXiv 2301.05217).
- :func:`analyze`: how well each logged measure tracks the test loss and how far its largest
  drop precedes grokking.

Token-id conventions. A *token range* names the p embedding rows of the residues 0..p-1 in
natural order: either an int offset (rows offset..offset+p-1) or an explicit sequence of p ids.
Logit tables over all pairs are ``(p, p, p)`` indexed ``[a, b, c]`` (c the candidate answer), or
``(p * p, p)`` with row ``a * p + b``.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from .age import age as _age_op

TokenRange = Union[int, Sequence[int], torch.Tensor]

MED_GAPS = ("reference", "all", "cyclic")
MED_COMBINE = ("mean", "sum", "scaled_sum")


# ---------------------------------------------------------------------------------------------
# Token ids and model inputs


def _token_rows(matrix: torch.Tensor, token_range: TokenRange, p: int) -> torch.Tensor:
    """The p rows of ``matrix`` for the residues 0..p-1, as float64 (p, n)."""
    if isinstance(token_range, int):
        if token_range < 0 or token_range + p > matrix.shape[0]:
            raise ValueError(f"token range {token_range}..{token_range + p - 1} is outside the "
                             f"matrix's {matrix.shape[0]} rows")
        rows = matrix[token_range:token_range + p]
    else:
        ids = torch.as_tensor(token_range, dtype=torch.long, device=matrix.device)
        if ids.shape != (p,):
            raise ValueError(f"a token range needs p = {p} ids, got shape {tuple(ids.shape)}")
        rows = matrix[ids]
    return rows.detach().reshape(p, -1).double()


def diagonal_inputs(p: int, equals_id: int, second_offset: int = 0) -> torch.Tensor:
    """Token sequences ``[i, i + second_offset, equals_id]`` for i = 0..p-1, shape (p, 3)."""
    i = torch.arange(p)
    return torch.stack([i, i + second_offset, torch.full_like(i, equals_id)], dim=1)


def all_pair_inputs(p: int, equals_id: int, second_offset: int = 0) -> torch.Tensor:
    """Token sequences ``[a, b + second_offset, equals_id]`` for all pairs, row ``a * p + b``, (p*p, 3)."""
    a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    a, b = a.reshape(-1), b.reshape(-1)
    return torch.stack([a, b + second_offset, torch.full_like(a, equals_id)], dim=1)


# ---------------------------------------------------------------------------------------------
# MED


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
    return _med_of_rows([_token_rows(embedding, r, p) for r in ranges], p, gaps, combine)


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


# ---------------------------------------------------------------------------------------------
# Per-layer grouping, weight norm, AGE


def group_by_module(per_parameter: Mapping[str, Union[float, torch.Tensor]],
                    depth: Optional[int] = None) -> Dict[str, float]:
    """Sum per-parameter values into per-module values.

    A parameter belongs to the module that owns it (its name without the last component:
    ``"layers.0.mlp.0.weight"`` -> ``"layers.0.mlp.0"``); with ``depth`` the module name is cut
    to its first ``depth`` components (``depth=2`` -> ``"layers.0"``). Parameters of the root
    module go to ``""``. Insertion order follows the first parameter of each module.
    """
    values = list(per_parameter.values())
    if values and isinstance(values[0], torch.Tensor):
        values = torch.stack([v.detach().reshape(()) for v in values]).tolist()
    sums: Dict[str, float] = defaultdict(float)
    for name, value in zip(per_parameter, values):
        owner = name.split(".")[:-1]
        sums[".".join(owner if depth is None else owner[:depth])] += value
    return dict(sums)


def _squared_norms(module: nn.Module) -> Tuple[List[str], torch.Tensor]:
    named = [(n, p.detach()) for n, p in module.named_parameters()]
    if not named:
        raise ValueError("the module has no parameters")
    names = [n for n, _ in named]
    tensors = [p for _, p in named]
    foreach_norm = getattr(torch, "_foreach_norm", None)
    if foreach_norm is not None and all(t.dtype == tensors[0].dtype for t in tensors):
        # One fused kernel launch for every tensor; squaring a float32 norm keeps ~1e-7 relative error.
        norms = torch.stack(foreach_norm(tensors)).double()
    else:
        norms = torch.stack([torch.linalg.vector_norm(t.double()) for t in tensors])
    return names, norms.square()


@torch.no_grad()
def weight_norm(module: nn.Module) -> float:
    """The L2 norm of all of a module's parameters together, sqrt(sum_w ||w||_2^2): the runner's
    ``weight_norm`` column in metrics.csv. Its square is :func:`squared_weight_norm`."""
    return math.sqrt(squared_weight_norm(module))


@torch.no_grad()
def squared_weight_norm(module: nn.Module) -> float:
    """Total sum of squares of a module's parameters, sum_w ||w||_2^2 (Power et al.; Nanda et al.):
    what weight decay shrinks; the square of :func:`weight_norm`."""
    return _squared_norms(module)[1].sum().item()


@torch.no_grad()
def squared_weight_norm_per_parameter(module: nn.Module) -> Dict[str, float]:
    """``{parameter name: ||w||_2^2}``; the values sum to :func:`squared_weight_norm`."""
    names, squares = _squared_norms(module)
    return dict(zip(names, squares.tolist()))


@torch.no_grad()
def squared_weight_norm_per_module(module: nn.Module, depth: Optional[int] = None) -> Dict[str, float]:
    """Sum of squares per owning module (see :func:`group_by_module` for names and ``depth``)."""
    return group_by_module(squared_weight_norm_per_parameter(module), depth)


def _age_of(model: nn.Module, of: str, per_layer: bool, depth: Optional[int]):
    if per_layer:
        return group_by_module(_age_op(model, of=of, per_tensor=True), depth)
    return _age_op(model, of=of).item()


@torch.no_grad()
def gradient_age(model: nn.Module, *, per_layer: bool = False,
                 depth: Optional[int] = None) -> Union[float, Dict[str, float]]:
    """AGE of the gradients, H = -sum_i |g_i| log |g_i| with 0 log 0 = 0 (NeuralGrok, arXiv 2504.17243).

    A thin wrapper over :func:`neuralgrok.age` (the fused C++ op). Parameters without a
    ``.grad`` are skipped. ``per_layer=True`` returns ``{module name: H}``, grouped as in
    :func:`group_by_module`; the un-normalised AGE is a sum over entries, so the per-layer values
    add up to the global one (the normalised entropy would not, hence it is not offered here).
    """
    return _age_of(model, "grad", per_layer, depth)


@torch.no_grad()
def weight_age(model: nn.Module, *, per_layer: bool = False,
               depth: Optional[int] = None) -> Union[float, Dict[str, float]]:
    """AGE of the weights themselves, -sum_i |w_i| log |w_i| (AWE); see :func:`gradient_age`."""
    return _age_of(model, "weight", per_layer, depth)


# ---------------------------------------------------------------------------------------------
# Gini coefficient


def gini(values: Union[torch.Tensor, Sequence[float]]) -> float:
    """Gini coefficient of non-negative values (flattened), in float64.

    ``G = sum_i sum_j |x_i - x_j| / (2 n sum_i x_i)``, computed from the ascending sort x_(1..n)
    as ``G = 2 sum_i i x_(i) / (n sum x) - (n + 1) / n``. 0 for equal values, (n - 1) / n for a
    one-hot vector; 0 for an all-zero vector (perfect equality).
    """
    x = torch.as_tensor(values).detach().reshape(-1).double()
    if x.numel() == 0:
        raise ValueError("gini() of no values")
    if (x < 0).any():
        raise ValueError("gini() takes non-negative values")
    total = x.sum()
    if total == 0:
        return 0.0
    n = x.numel()
    ranks = torch.arange(1, n + 1, dtype=torch.float64, device=x.device)
    return (2 * (ranks * x.sort().values).sum() / (n * total) - (n + 1) / n).item()


# ---------------------------------------------------------------------------------------------
# Fourier measures for modular addition (Nanda et al.)


def fourier_basis(p: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Orthonormal Fourier basis on Z_p, shape (p, p), one basis function per row.

    Row 0 is the constant; rows 2k - 1 and 2k are cos(2 pi k x / p) and sin(2 pi k x / p) for
    k = 1..(p-1)/2. Every row has unit L2 norm. p must be odd (the moduli of interest are prime;
    an even p would need an extra cos(pi x) row).
    """
    if p < 3 or p % 2 == 0:
        raise ValueError(f"fourier_basis() needs an odd p >= 3, got {p}")
    x = torch.arange(p, dtype=torch.float64)
    k = torch.arange(1, (p - 1) // 2 + 1, dtype=torch.float64)
    angles = 2 * math.pi * k[:, None] * x[None, :] / p
    waves = torch.stack([torch.cos(angles), torch.sin(angles)], dim=1).reshape(p - 1, p)
    basis = torch.cat([torch.ones(1, p, dtype=torch.float64), waves])
    return (basis / torch.linalg.vector_norm(basis, dim=1, keepdim=True)).to(dtype)


@torch.no_grad()
def fourier_norms(matrix: torch.Tensor, p: int, token_range: TokenRange = 0) -> torch.Tensor:
    """Norm of a residue-indexed matrix per Fourier frequency (Nanda et al., arXiv 2301.05217).

    ``matrix`` has one row per residue (after picking the rows of ``token_range``): the token
    embedding W_E (vocab, d), or a neuron-logit map W_L given as (p, d_mlp) (pass ``W_L.T`` if it
    is stored (d_mlp, p)). With F = B M (B = :func:`fourier_basis`, M the p rows)::

        norms[0] = ||F_const||,   norms[k] = sqrt(||F_cos k||^2 + ||F_sin k||^2),  k = 1..(p-1)/2

    Returns a float64 vector of length (p + 1) / 2 indexed by frequency (0 = constant). As B is
    orthonormal, the squared norms sum to the squared Frobenius norm of M.
    """
    rows = _token_rows(matrix, token_range, p)
    energy = (fourier_basis(p).to(rows.device) @ rows).pow(2).sum(dim=1)
    per_frequency = torch.cat([energy[:1], energy[1::2] + energy[2::2]])
    return per_frequency.sqrt()


def key_frequencies(norms: torch.Tensor, *, min_share: float = 0.05, top_k: Optional[int] = None) -> List[int]:
    """Key frequencies detected from per-frequency norms (from :func:`fourier_norms`), ascending.

    Rule: the *share* of frequency k >= 1 is its fraction of the non-constant energy,
    ``norms[k]^2 / sum_{j>=1} norms[j]^2`` (energies add up because the basis is orthonormal).
    Key frequencies are those with share > ``min_share``; with ``top_k``, the ``top_k`` largest
    instead. An unstructured matrix spreads its energy evenly, 1 / ((p-1)/2) per frequency
    (about 0.02 for p = 97), so the default 0.05 finds nothing at init; Nanda et al.'s trained
    models concentrate most of the energy in 3 to 7 frequencies.
    """
    energy = norms.detach().double()[1:].pow(2)
    if top_k is not None:
        chosen = energy.topk(min(top_k, energy.numel())).indices
    else:
        total = energy.sum()
        chosen = (energy > min_share * total).nonzero().reshape(-1) if total > 0 else energy.new_zeros(0).long()
    return sorted(int(k) + 1 for k in chosen.tolist())


@torch.no_grad()
def fourier_gini(matrix: torch.Tensor, p: int, token_range: TokenRange = 0) -> float:
    """Gini coefficient of the per-frequency norms k = 1..(p-1)/2 of a residue-indexed matrix.

    Nanda et al. track it for W_E and the neuron-logit map W_L: it rises as the model
    concentrates on a few key frequencies. The constant component is left out (it carries no
    frequency). See :func:`fourier_norms` and :func:`gini`.
    """
    return gini(fourier_norms(matrix, p, token_range)[1:])


def _logit_table(logits: torch.Tensor) -> torch.Tensor:
    """(p, p, p) float64 from a (p, p, p) or (p * p, p) table."""
    p = logits.shape[-1]
    if logits.shape not in ((p, p, p), (p * p, p)):
        raise ValueError(f"a logit table is (p, p, p) or (p * p, p); got {tuple(logits.shape)}")
    return logits.detach().double().reshape(p, p, p)


def _a_plus_b_minus_c(p: int, device) -> torch.Tensor:
    r = torch.arange(p, device=device)
    return (r[:, None, None] + r[None, :, None] - r[None, None, :]) % p


def key_frequency_logits(logits: torch.Tensor, keys: Iterable[int]) -> torch.Tensor:
    """Orthogonal projection of a logit table onto the key-frequency directions of a + b - c.

    For logits L[a, b, c] (a, b the operands, c the candidate answer; (p * p, p) tables have row
    a * p + b), the directions are the functions on Z_p^3::

        1,   cos(w_k (a + b - c)),   sin(w_k (a + b - c))    for each key k,  w_k = 2 pi k / p

    the terms of Nanda et al.'s logits sum_k alpha_k cos(w_k (a + b - c)) (sin for a phase; the
    constant for completeness: it does not change a softmax). They are orthogonal in R^{p^3}, so
    the projection is the sum of one-direction projections. Each is a function f(t) of
    t = (a + b - c) mod p alone, and each t is hit by p^2 triples, so
    ``<L, f(t)> = p^2 <h, f>`` with ``h(t)`` the mean of L over the triples with that t: the
    projection is ``g(t(a, b, c))``, g the projection of h onto {constant, cos/sin of w_k t} in
    :func:`fourier_basis`. (Projecting each row L[a, b, :] separately onto cos/sin(w_k(a+b-c))
    would not do: as functions of c they span the same plane for every (a, b), so that would
    keep any frequency-k pattern over the answers, whatever the inputs.)

    Returns the projected table, float64 (p, p, p).
    """
    table = _logit_table(logits)
    p = table.shape[-1]
    t = _a_plus_b_minus_c(p, table.device).reshape(-1)
    h = torch.zeros(p, dtype=torch.float64, device=table.device).index_add_(0, t, table.reshape(-1)) / p ** 2
    rows = [0]
    for k in sorted(set(int(k) for k in keys)):
        if not 1 <= k <= (p - 1) // 2:
            raise ValueError(f"key frequency {k} is outside 1..{(p - 1) // 2}")
        rows += [2 * k - 1, 2 * k]
    basis = fourier_basis(p).to(table.device)[rows]
    g = basis.T @ (basis @ h)
    return g[t].reshape(p, p, p)


def _addition_loss(table: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean cross-entropy of the rows (a, b) of a (p, p, p) table with labels (a + b) mod p."""
    p = table.shape[-1]
    return torch.nn.functional.cross_entropy(table[a, b], (a + b) % p).item()


@torch.no_grad()
def restricted_loss(logits: torch.Tensor, keys: Iterable[int]) -> float:
    """Nanda et al.'s restricted loss for modular addition: only the key frequencies kept.

    Cross-entropy, averaged over all p^2 pairs with labels (a + b) mod p, of
    :func:`key_frequency_logits` (the logits projected onto 1 and cos/sin(w_k (a + b - c)) for
    the key k). It falls before the test loss does, as the generalising circuit forms.
    """
    table = key_frequency_logits(logits, keys)
    p = table.shape[-1]
    a, b = torch.meshgrid(torch.arange(p, device=table.device), torch.arange(p, device=table.device), indexing="ij")
    return _addition_loss(table, a.reshape(-1), b.reshape(-1))


@torch.no_grad()
def excluded_loss(logits: torch.Tensor, keys: Iterable[int], train_pairs: torch.Tensor) -> float:
    """Nanda et al.'s excluded loss: the key-frequency directions removed, on the train pairs.

    Cross-entropy, averaged over ``train_pairs`` (an (n, 2) tensor of operands (a, b)) with
    labels (a + b) mod p, of ``L - key_frequency_logits(L, keys)``. It rises while the
    memorising solution is replaced by the Fourier circuit (train loss stays low).
    """
    table = _logit_table(logits)
    residual = table - key_frequency_logits(table, keys)
    pairs = torch.as_tensor(train_pairs, dtype=torch.long, device=table.device)
    if pairs.dim() != 2 or pairs.shape[1] != 2:
        raise ValueError(f"train_pairs must be (n, 2) operand pairs, got {tuple(pairs.shape)}")
    return _addition_loss(residual, pairs[:, 0], pairs[:, 1])


def _answer_logits(out: torch.Tensor, p: int) -> torch.Tensor:
    """(n, C) or (n, T, C) model output -> (n, p) float64 logits of the residue classes."""
    if out.dim() == 3:
        out = out[:, -1]
    if out.dim() != 2 or out.shape[-1] < p:
        raise ValueError(f"expected (n, C) or (n, T, C) logits with C >= p = {p}, got {tuple(out.shape)}")
    return out[:, :p].detach().double()


@torch.no_grad()
def logit_table(model: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor, p: int) -> torch.Tensor:
    """The (p, p, p) float64 logit table of a model over all pairs, by one forward pass.

    ``inputs``: all p^2 inputs in pair order a * p + b, e.g. :func:`all_pair_inputs` or
    ``neuralgrok.tasks.all_examples("a+b", p)[0]``. ``model(inputs)`` returns (p^2, C) logits, or
    (p^2, T, C) of which the last position is read; the first p classes are the residues (extra
    classes such as ``=`` are dropped). Put the model in eval mode first if it has dropout.
    The forward pass over all p^2 pairs costs several training steps; where the train and test
    splits are evaluated anyway, :func:`assemble_logit_table` reuses those logits for free.
    """
    logits = _answer_logits(model(inputs), p)
    if logits.shape[0] != p * p:
        raise ValueError(f"model(inputs) gave {logits.shape[0]} rows; expected p^2 = {p * p}")
    return logits.reshape(p, p, p)


@torch.no_grad()
def assemble_logit_table(pairs: torch.Tensor, logits: torch.Tensor, p: int) -> torch.Tensor:
    """The (p, p, p) float64 logit table from logits already computed for every pair, in any order.

    ``pairs``: (p^2, 2) operands (a, b) as residues 0..p-1 (subtract any token offset), e.g. the
    first two columns of the train and test inputs concatenated; ``logits``: the matching rows
    of model output, read as in :func:`logit_table`. Every pair must occur exactly once.
    """
    pairs = torch.as_tensor(pairs, dtype=torch.long)
    rows = _answer_logits(logits, p)
    if pairs.shape != (p * p, 2) or rows.shape[0] != p * p:
        raise ValueError(f"need all p^2 = {p * p} pairs and their logits; got pairs {tuple(pairs.shape)}, "
                         f"logits {tuple(logits.shape)}")
    index = (pairs[:, 0] * p + pairs[:, 1]).to(rows.device)
    if pairs.min() < 0 or pairs.max() >= p or torch.bincount(index, minlength=p * p).ne(1).any():
        raise ValueError("pairs must hold every (a, b) in 0..p-1 exactly once")
    return rows.new_empty(p * p, p).index_copy_(0, index, rows).reshape(p, p, p)


# ---------------------------------------------------------------------------------------------
# Analysis of a metrics table


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties sharing their mean rank (what Spearman's rho needs)."""
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    # Each run of equal values gets the mean of the positions it spans.
    run_starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
    run_ends = np.r_[run_starts[1:], len(x)]
    mean_rank = (run_starts + run_ends + 1) / 2.0
    ranks = np.empty(len(x))
    ranks[order] = np.repeat(mean_rank, run_ends - run_starts)
    return ranks


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    try:
        from scipy import stats
    except ImportError:
        return _pearson(_average_ranks(x), _average_ranks(y))
    return float(stats.spearmanr(x, y)[0])


def _largest_drop(steps: np.ndarray, values: np.ndarray, smooth: int) -> Tuple[float, float]:
    """(step, size) of the largest decrease between consecutive (smoothed) values."""
    if smooth > 1:
        # A centred running median (shrinking at the ends) drops isolated outliers yet keeps a
        # genuine step where it is; a moving average would smear the step and keep the outlier.
        import pandas as pd

        values = pd.Series(values).rolling(smooth, center=True, min_periods=1).median().to_numpy()
    if len(values) < 2:
        return float("nan"), float("nan")
    decreases = values[:-1] - values[1:]
    i = int(np.argmax(decreases))
    return float(steps[i + 1]), float(decreases[i])


# Columns of a run's metrics.csv (neuralgrok.train.METRIC_COLUMNS, and the hold-out test parts of
# neuralgrok.train.part_columns) that are not progress measures.
NOT_MEASURES = ("step", "train_loss", "train_accuracy", "test_loss", "test_accuracy", "wall_time_s",
                "test_held_loss", "test_held_accuracy", "test_rest_loss", "test_rest_accuracy")


def analyze(metrics, *, measures: Optional[Sequence[str]] = None, grok_accuracy: float = 0.95,
            smooth: int = 1, memorised_accuracy: float = 0.99):
    """How each logged measure relates to the test loss and to the grokking step.

    Args:
        metrics: a pandas DataFrame or a CSV path with columns ``step``, ``test_loss``,
            ``test_accuracy`` and one column per measure (a run's ``metrics.csv``).
        measures: the measure columns; default every numeric column but the runner's
            bookkeeping ones (:data:`NOT_MEASURES`).
        grok_accuracy: the grokking step is the first logged step with
            ``test_accuracy >= grok_accuracy``.
        smooth: window of a centred running median applied to each measure before looking
            for its largest drop (1 = raw values); it ignores isolated outliers shorter than
            half the window.
        memorised_accuracy: the memorisation step is the first logged step with
            ``train_accuracy >= memorised_accuracy`` (when the table has that column).

    Returns:
        A DataFrame with one row per measure:

        - ``pearson``, ``spearman``: correlation with ``test_loss`` over the rows where both
          are finite; ``pearson_log``: Pearson with log(test_loss) (rows with test_loss > 0).
          Spearman's rho is invariant under the monotone log, so it has no log column.
        - ``drop_step``, ``drop_size``: the largest decrease between consecutive logged (smoothed)
          values is ``drop_size``, reached at ``drop_step`` (the later of the two steps).
        - ``grok_step`` and ``lag = grok_step - drop_step``: positive when the measure's drop
          comes before grokking. NaN when the run never groks.
        - ``memorisation_step``, ``n_window`` and ``spearman_window``: Spearman's rho with
          ``test_loss`` over the rows from the memorisation step to the grokking step (both
          included), the window where the test loss still has to fall; NaN when the run never
          memorises or never groks (or does both at once).

    Correlations use scipy.stats when installed and numpy otherwise (same values).
    """
    import pandas as pd

    table = pd.read_csv(metrics) if isinstance(metrics, (str, Path)) else metrics
    missing = {"step", "test_loss", "test_accuracy"} - set(table.columns)
    if missing:
        raise ValueError(f"analyze(): the metrics table lacks the columns {sorted(missing)}")
    table = table.sort_values("step").reset_index(drop=True)
    if measures is None:
        numeric = table.select_dtypes("number").columns
        measures = [c for c in numeric if c not in NOT_MEASURES]
    steps = table["step"].to_numpy(dtype=float)
    test_loss = table["test_loss"].to_numpy(dtype=float)
    grokked = np.flatnonzero(table["test_accuracy"].to_numpy(dtype=float) >= grok_accuracy)
    grok_step = float(steps[grokked[0]]) if len(grokked) else float("nan")
    memorised = (np.flatnonzero(table["train_accuracy"].to_numpy(dtype=float) >= memorised_accuracy)
                 if "train_accuracy" in table.columns else np.array([], dtype=int))
    memorisation_step = float(steps[memorised[0]]) if len(memorised) else float("nan")
    window = (steps >= memorisation_step) & (steps <= grok_step)  # all False when either is NaN

    rows = []
    for name in measures:
        values = table[name].to_numpy(dtype=float)
        both = np.isfinite(values) & np.isfinite(test_loss)
        in_window = both & window
        logged = both & (test_loss > 0)
        drop_step, drop_size = _largest_drop(steps[np.isfinite(values)], values[np.isfinite(values)], smooth)
        rows.append({
            "measure": name,
            "n": int(both.sum()),
            "pearson": _pearson(values[both], test_loss[both]),
            "spearman": _spearman(values[both], test_loss[both]),
            "pearson_log": _pearson(values[logged], np.log(test_loss[logged])),
            "drop_step": drop_step,
            "drop_size": drop_size,
            "grok_step": grok_step,
            "lag": grok_step - drop_step,
            "memorisation_step": memorisation_step,
            "n_window": int(in_window.sum()),
            "spearman_window": _spearman(values[in_window], test_loss[in_window]),
        })
    return pd.DataFrame(rows, columns=["measure", "n", "pearson", "spearman", "pearson_log", "drop_step",
                                       "drop_size", "grok_step", "lag", "memorisation_step", "n_window",
                                       "spearman_window"])


def write_analysis(analysis, path) -> Path:
    """Write :func:`analyze`'s table as CSV (parent directories created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    analysis.to_csv(path, index=False)
    return path
