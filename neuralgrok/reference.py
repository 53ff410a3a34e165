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


def amplify(grads, weights, biases, rescale=1.0, activation=torch.relu):
    """Reference for ``torch.ops.neuralgrok.amplify`` (always dense).

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


def virtual_step(params, updates, lrs):
    """Reference for ``torch.ops.neuralgrok.virtual_step``: ``params[i] - lrs[i] * updates[i]``."""
    return [p - lr * u for p, u, lr in zip(params, updates, lrs)]
