"""Pure-PyTorch reference implementations of every C++ op, written for clarity, not speed.

The tests check the C++ ops against these (values and gradients). Each function mirrors one
op's semantics exactly, including its conventions for zeros and empty tensors.
"""
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
