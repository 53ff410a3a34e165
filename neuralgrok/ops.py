"""The typed Python surface of every C++ operator of ``neuralgrok._C``: the one module of the package
that calls ``torch.ops.neuralgrok.*`` (the schemas are in csrc/neuralgrok.cpp, the kernels one op per
file in csrc/ops/, the pure-PyTorch references in :mod:`neuralgrok.optim.reference`).

Every op takes lists of tensors (one call for all of a model's parameters) and runs on any device:
the CPU has a hand-written kernel, every other device (CUDA, MPS, ...) a device-generic kernel in
ATen ops; all tensors of one call must be on one device. Floats are float32 or float64 (``age`` and
the Grokfast filters also take float16 and bfloat16); reductions accumulate in float64. Each op is
looked up on ``torch.ops.neuralgrok`` when it is called, so ``torch.compile`` traces through these
functions and a test may patch the op.

The fake (meta) kernels that FakeTensor and ``torch.compile`` use are C++ Meta kernels, except for
``_relu_mlp_pieces``, whose output size depends on values: its fake kernel is registered here
(:func:`_register_fake_kernels`).

Example::

    from neuralgrok import ops
    value = ops.age([p.grad for p in model.parameters()])   # a 0-d float tensor
"""
from typing import List, Sequence, Tuple

import torch

from . import _extension  # noqa: F401  (loads neuralgrok._C, which registers torch.ops.neuralgrok.*)

__all__ = ["age", "age_backward", "amplify", "amplify_backward", "grokfast_ema_", "grokfast_ma_",
           "relu_mlp_pieces", "virtual_step", "virtual_step_backward"]


def _op(name: str):
    return getattr(torch.ops.neuralgrok, name)


# -- AGE (csrc/ops/age.cpp) -----------------------------------------------------------------------------


def age(tensors: Sequence[torch.Tensor], per_tensor: bool = False, normalized: bool = False,
        eps: float = 0.0) -> torch.Tensor:
    """Absolute Gradient Entropy ``H = -sum_i |x_i| log(|x_i| + eps)`` over every entry of ``tensors``
    (any shapes, one device), ``0 log 0 = 0``; ``normalized``: the Shannon entropy of ``|x| / ||x||_1``.

    Returns a 0-d tensor (``per_tensor``: shape ``(len(tensors),)``) of the inputs' dtype, on their
    device; differentiable (the backward is :func:`age_backward`). Public form: :func:`neuralgrok.age`.
    """
    return _op("age")(list(tensors), per_tensor, normalized, float(eps))


def age_backward(grad: torch.Tensor, tensors: Sequence[torch.Tensor], per_tensor: bool, normalized: bool,
                 eps: float) -> List[torch.Tensor]:
    """The gradient of :func:`age` w.r.t. each of ``tensors`` for the output cotangent ``grad`` (the
    shape of :func:`age`'s output); one tensor shaped like each input."""
    return list(_op("_age_backward")(grad, list(tensors), per_tensor, normalized, float(eps)))


# -- Grokfast filters (csrc/ops/grokfast_ema.cpp, grokfast_ma.cpp) ------------------------------------


def grokfast_ema_(grads: Sequence[torch.Tensor], ema: Sequence[torch.Tensor], initialized: Sequence[bool],
                  alpha: float, lamb: float) -> None:
    """Grokfast's EMA filter, in place: ``ema[i] = alpha * ema[i] + (1 - alpha) * grads[i]`` (``ema[i] =
    grads[i]`` where not ``initialized[i]``), then ``grads[i] += lamb * ema[i]``. ``ema[i]`` is shaped,
    typed and placed like ``grads[i]`` (contiguous); alpha in [0, 1]."""
    _op("grokfast_ema_")(list(grads), list(ema), [bool(i) for i in initialized], float(alpha), float(lamb))


def grokfast_ma_(grads: Sequence[torch.Tensor], windows: Sequence[torch.Tensor], sums: Sequence[torch.Tensor],
                 counts: Sequence[int], lamb: float) -> None:
    """Grokfast's MA filter, in place: push ``grads[i]`` into the ring buffer ``windows[i]`` (shape
    ``(window, *grads[i].shape)``) and its running sum ``sums[i]`` (shaped like ``grads[i]``); once
    ``window`` gradients are stored, ``grads[i] += lamb * mean(window)``. ``counts[i]``: gradients
    pushed before this call (the caller keeps it)."""
    _op("grokfast_ma_")(list(grads), list(windows), list(sums), [int(c) for c in counts], float(lamb))


# -- NeuralGrok's amplifier (csrc/ops/amplify.cpp, relu_mlp.cpp) ---------------------------------------


def amplify(grads: Sequence[torch.Tensor], weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor],
            rescale: float, piecewise: bool = True) -> List[torch.Tensor]:
    """NeuralGrok's amplifier on each tensor g of ``grads``: scores ``s = MLP(g)`` entrywise (a ReLU MLP
    on one scalar given by its Linear layers: ``weights[l]`` of shape ``(out, in)``, the first ``(H1, 1)``
    and the last ``(1, H_last)``, ``biases[l]`` of shape ``(out,)``), then ``g' = rescale * softmax(s) * g /
    ||softmax(s) * g||_2`` (zeros for an all-zero or empty g). float32 or float64, one dtype and device
    for all. ``piecewise``: the CPU kernel may use its exact piecewise-linear fast path.

    Returns tensors shaped like ``grads``, differentiable w.r.t. grads, weights and biases (the
    backward is :func:`amplify_backward`). Public form: :meth:`neuralgrok.NeuralAmplifier.amplify`.
    """
    return list(_op("amplify")(list(grads), list(weights), list(biases), float(rescale), bool(piecewise)))


def amplify_backward(grad_outputs: Sequence[torch.Tensor], grads: Sequence[torch.Tensor],
                     weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor], rescale: float,
                     piecewise: bool) -> List[torch.Tensor]:
    """The gradients of :func:`amplify` for the cotangents ``grad_outputs`` (shaped like ``grads``):
    one per grad, then one per weight, then one per bias."""
    return list(_op("_amplify_backward")(list(grad_outputs), list(grads), list(weights), list(biases),
                                         float(rescale), bool(piecewise)))


def relu_mlp_pieces(weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor], lo: float,
                    hi: float) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The amplifier's ReLU MLP (as in :func:`amplify`) compiled over ``[lo, hi]`` into pieces, float64
    on the layers' device: ``(breakpoints (K-1,), slopes (K,), intercepts (K,))``; on piece k, from
    ``breakpoints[k-1]`` (inclusive) to ``breakpoints[k]``, ``s(g) = slopes[k] * g + intercepts[k]``.
    K depends on the values (the fake kernel gives it a dynamic size)."""
    breakpoints, slopes, intercepts = _op("_relu_mlp_pieces")(list(weights), list(biases), float(lo), float(hi))
    return breakpoints, slopes, intercepts


# -- the virtual step of NeuralGrok's meta-gradient (csrc/ops/virtual_step.cpp) --------------------------


def virtual_step(params: Sequence[torch.Tensor], updates: Sequence[torch.Tensor],
                 lrs: Sequence[float]) -> List[torch.Tensor]:
    """``params[i] - lrs[i] * updates[i]`` for each i (one shape, dtype and device per pair), as new
    tensors, differentiable w.r.t. ``updates`` (the backward is :func:`virtual_step_backward`)."""
    return list(_op("virtual_step")(list(params), list(updates), [float(lr) for lr in lrs]))


def virtual_step_backward(grad_outputs: Sequence[torch.Tensor], lrs: Sequence[float]) -> List[torch.Tensor]:
    """The gradients of :func:`virtual_step` w.r.t. ``updates``: ``-lrs[i] * grad_outputs[i]``."""
    return list(_op("_virtual_step_backward")(list(grad_outputs), [float(lr) for lr in lrs]))


# -- fake kernels ---------------------------------------------------------------------------------------


def _register_fake_kernels() -> None:
    """Python fake kernels, for the one op whose output sizes depend on values (torch 2.x only).

    Every other op has a C++ Meta kernel, which FakeTensor uses on every torch version.
    ``_relu_mlp_pieces`` returns a table whose length is only known after compiling the MLP, so its
    fake kernel gives the outputs a dynamic (unbacked) size: torch.compile can trace through it.
    """
    register = getattr(torch.library, "register_fake", None) or getattr(torch.library, "impl_abstract", None)
    get_ctx = getattr(torch.library, "get_ctx", None)
    if register is None or get_ctx is None:  # torch < 2.1: no fake tensors to serve
        return

    def relu_mlp_pieces_fake(weights, biases, lo, hi):
        # The C++ checks of the Meta kernels are not reachable from here; the real kernel checks.
        ctx = get_ctx()
        new_size = getattr(ctx, "new_dynamic_size", None) or ctx.create_unbacked_symint
        breakpoints = new_size()  # K - 1 breakpoints, K slopes and intercepts
        return tuple(weights[0].new_empty((n,), dtype=torch.float64) for n in (breakpoints, breakpoints + 1,
                                                                               breakpoints + 1))

    register("neuralgrok::_relu_mlp_pieces", relu_mlp_pieces_fake)


_register_fake_kernels()
