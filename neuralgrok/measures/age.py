"""AGE, NeuralGrok's Absolute Gradient Entropy (arXiv 2504.17243), computed by the C++ op
:func:`neuralgrok.ops.age`."""
from typing import Dict, Iterable, Union
import torch
from torch import nn

from .. import ops

_SOURCES = ("grad", "weight")


def age(model_or_tensors: Union[nn.Module, Iterable[torch.Tensor]], *, of: str = "grad", per_tensor: bool = False,
        normalized: bool = False, eps: float = 0.0) -> Union[torch.Tensor, Dict[str, torch.Tensor]]:
    """Absolute Gradient Entropy (AGE) of NeuralGrok (arXiv 2504.17243).

    ``H = -sum_i |x_i| * log(|x_i| + eps)`` over every entry of every tensor, with ``0 log 0 = 0``,
    computed in one fused C++ pass per tensor with float64 accumulation. With the default
    ``eps = 0`` this is the paper's definition exactly, the un-normalised form its figures plot;
    the official ``neuralgrad`` code has no epsilon either (and logs NaN where an entry is exactly
    zero, which every real model's gradient has; here such an entry adds 0). ``eps > 0`` is the
    smoothed form some older prototypes logged (``1e-8`` is about 5% off at ``|x| ~ 1e-8``).
    ``normalized=True`` gives the Shannon entropy of ``|x| / ||x||_1`` instead (0 log 0 = 0), which
    does not grow with the number or the scale of the entries.

    Args:
        model_or_tensors: an ``nn.Module`` (its parameters are used) or an iterable of tensors.
        of: for a module, ``"grad"`` (parameters' ``.grad``; parameters without one are skipped)
            or ``"weight"`` (the parameters themselves, detached). Ignored for tensors.
        per_tensor: one value per tensor instead of one over everything. For a module this
            returns ``{parameter name: value}``.
        normalized: see above.
        eps: a constant added inside the log of the un-normalised form; 0 (the default) is exact.

    Returns:
        A 0-d tensor (or a 1-d tensor / dict with ``per_tensor=True``). For tensors the result is
        differentiable (the backward is a C++ op). Non-finite entries give a non-finite result.

    Example::

        loss.backward()
        print(neuralgrok.age(model))               # AGE of the gradients
        print(neuralgrok.age(model, of="weight"))  # of the weights
    """
    if isinstance(model_or_tensors, nn.Module):
        names, tensors = _module_tensors(model_or_tensors, of)
    else:
        if isinstance(model_or_tensors, torch.Tensor):
            raise TypeError("age() takes an nn.Module or an iterable of tensors; wrap a single tensor in a list")
        tensors = list(model_or_tensors)
        names = None
        for i, t in enumerate(tensors):
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"age(): item {i} is a {type(t).__name__}, not a tensor")
        if not tensors:
            raise ValueError("age(): got no tensors")
    values = ops.age(tensors, per_tensor, normalized, float(eps))
    if per_tensor and names is not None:
        return dict(zip(names, values.unbind()))
    return values


def _module_tensors(module, of):
    if of not in _SOURCES:
        raise ValueError(f"age(): of={of!r}; choose one of {_SOURCES}")
    named = list(module.named_parameters())
    if of == "grad":
        pairs = [(n, p.grad) for n, p in named if p.grad is not None]
        if not pairs:
            raise ValueError("age(of='grad'): no parameter of the module has a .grad; call backward() first")
    else:
        pairs = [(n, p.detach()) for n, p in named]
        if not pairs:
            raise ValueError("age(of='weight'): the module has no parameters")
    return [n for n, _ in pairs], [t for _, t in pairs]
