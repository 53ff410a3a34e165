"""Pure-PyTorch reference implementations of every C++ op, written for clarity, not speed.

The tests check the C++ ops against these (values and gradients). Each one mirrors one
op's semantics exactly, including its conventions for zeros and empty tensors. Stateful ops
have a reference class holding the state the way the paper describes it.
"""
from collections import deque

import torch


def age(tensors, per_tensor=False, normalized=False, eps=1e-8):
    """Reference for ``torch.ops.neuralgrok.age``: see :func:`neuralgrok.age`."""
    tensors = list(tensors)
    if normalized:
        flat = [t.abs().reshape(-1) for t in tensors]
        if per_tensor:
            return torch.stack([_shannon(f) for f in flat])
        return _shannon(torch.cat(flat))
    values = torch.stack([-(t.abs() * torch.log(t.abs() + eps)).sum() for t in tensors])
    return values if per_tensor else values.sum()


def _shannon(a):
    """Entropy of a / a.sum() with 0 log 0 = 0; 0 for an all-zero vector."""
    total = a.sum()
    if total == 0:
        return total * 0
    q = a / total
    q_log_q = torch.where(q > 0, q * torch.log(torch.where(q > 0, q, torch.ones_like(q))), torch.zeros_like(q))
    return -q_log_q.sum()


class GrokfastEMA:
    """Reference for ``torch.ops.neuralgrok.grokfast_ema_`` (and :class:`neuralgrok.GrokfastEMA`).

    Per gradient position: the EMA starts at the first gradient, then
    ``ema = alpha * ema + (1 - alpha) * g``; every call returns ``g + lamb * ema`` in place.
    """

    def __init__(self, alpha=0.98, lamb=2.0):
        self.alpha = alpha
        self.lamb = lamb
        self.ema = None

    def apply_(self, grads):
        if self.ema is None:
            self.ema = [g.clone() for g in grads]
        else:
            self.ema = [self.alpha * e + (1 - self.alpha) * g for e, g in zip(self.ema, grads)]
        for g, e in zip(grads, self.ema):
            g.copy_(g + self.lamb * e)


class GrokfastMA:
    """Reference for ``torch.ops.neuralgrok.grokfast_ma_`` (and :class:`neuralgrok.GrokfastMA`).

    Per gradient position, a deque of the last ``window`` gradients; once it is full, every call
    returns ``g + lamb * mean(deque)`` in place (the mean taken afresh each time, in float64).
    """

    def __init__(self, window=100, lamb=5.0):
        self.window = window
        self.lamb = lamb
        self.history = None

    def apply_(self, grads):
        if self.history is None:
            self.history = [deque(maxlen=self.window) for _ in grads]
        for g, recent in zip(grads, self.history):
            recent.append(g.clone())
            if len(recent) == self.window:
                mean = torch.stack(list(recent)).double().mean(dim=0).to(g.dtype)
                g.copy_(g + self.lamb * mean)
