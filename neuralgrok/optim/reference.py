"""Pure-PyTorch reference implementations of every C++ op, written for clarity, not speed.

The tests check the C++ ops against these (values and gradients). Each one mirrors one
op's semantics exactly, including its conventions for zeros and empty tensors. Stateful ops
have a reference class holding the state the way the paper describes it.
"""
from typing import Callable, Dict, List, Sequence
from collections import deque

import torch


def age(tensors: Sequence[torch.Tensor], per_tensor: bool = False, normalized: bool = False,
        eps: float = 0.0) -> torch.Tensor:
    """Reference for :func:`neuralgrok.ops.age`: see :func:`neuralgrok.age` (0 log 0 = 0)."""
    tensors = list(tensors)
    if normalized:
        flat = [t.abs().reshape(-1) for t in tensors]
        if per_tensor:
            return torch.stack([_shannon(f) for f in flat])
        return _shannon(torch.cat(flat))
    values = torch.stack([-_x_log_x_plus(t.abs(), eps).sum() for t in tensors])
    return values if per_tensor else values.sum()


def _x_log_x_plus(a, eps):
    """a * log(a + eps) entrywise, 0 where a + eps = 0 (0 log 0 = 0; the gradient there is 0)."""
    shifted = a + eps
    safe = torch.where(shifted > 0, shifted, torch.ones_like(shifted))
    return torch.where(shifted > 0, a * torch.log(safe), torch.zeros_like(a))


def _shannon(a):
    """Entropy of a / a.sum() with 0 log 0 = 0; 0 for an all-zero vector."""
    total = a.sum()
    if total == 0:
        return total * 0
    q = a / total
    q_log_q = torch.where(q > 0, q * torch.log(torch.where(q > 0, q, torch.ones_like(q))), torch.zeros_like(q))
    return -q_log_q.sum()


def _functional_call(module, params, *args):
    """torch.func.functional_call where it exists (torch 2.x), else torch.nn.utils.stateless's."""
    func = getattr(torch, "func", None)
    call = getattr(func, "functional_call", None) or torch.nn.utils.stateless.functional_call
    return call(module, params, args)


class NeuralGrokReference:
    """The whole NeuralGrok step written out in plain PyTorch, for the equivalence test of
    :class:`neuralgrok.NeuralGrok`. Per-tensor dense amplification with a materialised softmax,
    and the virtual step as a functional call on a dict of virtual parameters (no storage swap).

    ``step(inner_loss, outer_loss_of)``: ``inner_loss()`` is the loss of ``model`` on the inner
    batch; ``outer_loss_of(params)`` the loss on the outer split of ``model`` with ``params``
    (``{name: tensor}``), e.g. via :func:`_functional_call`. Every parameter must get a gradient.
    """

    def __init__(self, model, base_optimizer, amplifier, meta_optimizer, *, meta_every, meta, clip_grad_norm):
        self.model, self.base_optimizer = model, base_optimizer
        self.amplifier, self.meta_optimizer = amplifier, meta_optimizer
        self.meta_every, self.meta, self.clip_grad_norm = meta_every, meta, clip_grad_norm
        self.steps = 0

    def _amplify(self, grads):
        linears = [m for m in self.amplifier.mlp if isinstance(m, torch.nn.Linear)]
        return amplify(grads, [m.weight for m in linears], [m.bias for m in linears], self.amplifier.rescale)

    def step(self, inner_loss: Callable[[], torch.Tensor],
             outer_loss_of: Callable[[Dict[str, torch.Tensor]], torch.Tensor]) -> None:
        names, params = zip(*self.model.named_parameters())
        grads = torch.autograd.grad(inner_loss(), params)
        with torch.no_grad():
            for p, g in zip(params, self._amplify(grads)):
                p.grad = g.clone()
            if self.clip_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(params, self.clip_grad_norm)
        lrs = {p: group["lr"] for group in self.base_optimizer.param_groups for p in group["params"]}
        self.base_optimizer.step()
        self.steps += 1
        if self.steps % self.meta_every:
            return
        if self.meta == "paper":
            grads = torch.autograd.grad(inner_loss(), params)
        virtual = {n: p.detach() - lrs[p] * g for n, p, g in zip(names, params, self._amplify(grads))}
        self.meta_optimizer.zero_grad()
        outer_loss_of(virtual).backward()
        self.meta_optimizer.step()


class GrokfastEMA:
    """Reference for :func:`neuralgrok.ops.grokfast_ema_` (and :class:`neuralgrok.GrokfastEMA`).

    Per gradient position: the EMA starts at the first gradient, then
    ``ema = alpha * ema + (1 - alpha) * g``; every call returns ``g + lamb * ema`` in place.
    """

    def __init__(self, alpha=0.98, lamb=2.0):
        self.alpha = alpha
        self.lamb = lamb
        self.ema = None

    def apply_(self, grads: List[torch.Tensor]) -> None:
        if self.ema is None:
            self.ema = [g.clone() for g in grads]
        else:
            self.ema = [self.alpha * e + (1 - self.alpha) * g for e, g in zip(self.ema, grads)]
        for g, e in zip(grads, self.ema):
            g.copy_(g + self.lamb * e)


class GrokfastMA:
    """Reference for :func:`neuralgrok.ops.grokfast_ma_` (and :class:`neuralgrok.GrokfastMA`).

    Per gradient position, a deque of the last ``window`` gradients; once it is full, every call
    returns ``g + lamb * mean(deque)`` in place (the mean taken afresh each time, in float64).
    """

    def __init__(self, window=100, lamb=5.0):
        self.window = window
        self.lamb = lamb
        self.history = None

    def apply_(self, grads: List[torch.Tensor]) -> None:
        if self.history is None:
            self.history = [deque(maxlen=self.window) for _ in grads]
        for g, recent in zip(grads, self.history):
            recent.append(g.clone())
            if len(recent) == self.window:
                mean = torch.stack(list(recent)).double().mean(dim=0).to(g.dtype)
                g.copy_(g + self.lamb * mean)


def amplify(grads: Sequence[torch.Tensor], weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor],
            rescale: float = 1.0, activation: Callable[[torch.Tensor], torch.Tensor] = torch.relu) -> List[torch.Tensor]:
    """Reference for :func:`neuralgrok.ops.amplify` (always dense).

    Per tensor g: s = MLP(g) entrywise, p = softmax(s), g' = rescale * (p * g) / ||p * g||_2.
    The MLP is the Linear layers ``(weights[l], biases[l])`` with ``activation`` between them
    (the op's is ReLU). An all-zero or empty tensor gives zeros, with zero gradients.
    """
    return [_amplify_tensor(g, weights, biases, rescale, activation) for g in grads]


def _scalar_mlp(column, weights, biases, activation):
    h = column
    for layer, (weight, bias) in enumerate(zip(weights, biases)):
        h = torch.nn.functional.linear(h, weight, bias)
        if layer < len(weights) - 1:
            h = activation(h)
    return h


def _amplify_tensor(grad, weights, biases, rescale, activation):
    g = grad.reshape(-1)
    scores = _scalar_mlp(g.reshape(-1, 1), weights, biases, activation).reshape(-1)
    p = torch.softmax(scores, dim=0)
    u = p * g
    norm = torch.linalg.vector_norm(u)
    if norm == 0:
        return (u * 0).reshape(grad.shape)
    return (rescale * u / norm).reshape(grad.shape)


def virtual_step(params: Sequence[torch.Tensor], updates: Sequence[torch.Tensor],
                 lrs: Sequence[float]) -> List[torch.Tensor]:
    """Reference for :func:`neuralgrok.ops.virtual_step`: ``params[i] - lrs[i] * updates[i]``."""
    return [p - lr * u for p, u, lr in zip(params, updates, lrs)]
