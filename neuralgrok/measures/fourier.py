"""Fourier measures for modular addition (key frequencies, Gini coefficients, restricted and
excluded loss): Nanda et al., "Progress measures for grokking via mechanistic interpretability"
(arXiv 2301.05217).

Logit tables over all pairs are ``(p, p, p)`` indexed ``[a, b, c]`` (c the candidate answer), or
``(p * p, p)`` with row ``a * p + b``.
"""
from __future__ import annotations

import math
from typing import Callable, Iterable, List, Optional, Sequence, Union

import torch

from .tokens import TokenRange, token_rows


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
    rows = token_rows(matrix, token_range, p)
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
    ``neuralgrok.experiments.tasks.all_examples("a+b", p)[0]``. ``model(inputs)`` returns (p^2, C) logits, or
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
