"""Token ids of the residues, shared by the embedding measures (MED, Fourier).

A *token range* names the p embedding rows of the residues 0..p-1 in natural order: either an int
offset (rows offset..offset+p-1) or an explicit sequence of p ids.
"""
from __future__ import annotations

from typing import Sequence, Union

import torch

TokenRange = Union[int, Sequence[int], torch.Tensor]


def token_rows(matrix: torch.Tensor, token_range: TokenRange, p: int) -> torch.Tensor:
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
