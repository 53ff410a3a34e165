"""Weight norm (the L2 norm, and its square: Power et al.; Nanda et al.) and AGE per layer
(NeuralGrok, arXiv 2504.17243), with the per-module grouping they share."""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Dict, List, Mapping, Optional, Tuple, Union

import torch
from torch import nn

from .age import age as _age_op


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
