"""The decoder-only causal transformer of Power et al., Grokfast and NeuralGrok.

Token + learned position embeddings, ``depth`` pre-LayerNorm blocks (causal multi-head
self-attention, then a GELU MLP four times as wide), a final LayerNorm and an untied linear head
without bias, read out at the last position (the ``=`` token). Loss and accuracy are on the answer
only, because the model produces logits for the last position only.

Example::

    from neuralgrok.models import Transformer, evaluate
    model = Transformer(vocab_size=49, num_classes=47, sequence_length=4, width=128, depth=2, heads=4)
    loss, accuracy = evaluate(model, data.test_inputs, data.test_labels)
"""
import torch
import torch.nn.functional as F
from torch import nn


class Block(nn.Module):
    """Pre-LayerNorm residual block: ``x + attention(ln(x))``, then ``x + mlp(ln(x))``."""

    def __init__(self, width, heads):
        super().__init__()
        self.attention_norm = nn.LayerNorm(width)
        self.attention = nn.MultiheadAttention(width, heads, batch_first=True)
        self.mlp_norm = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x, causal_mask, last_only=False):
        """``(N, T, width)`` -> ``(N, T, width)``, or ``(N, 1, width)`` for the last position only
        with ``last_only`` (which attends to every position, so it needs no mask)."""
        normed = self.attention_norm(x)
        if last_only:
            x, queries, causal_mask = x[:, -1:], normed[:, -1:], None
        else:
            queries = normed
        attended, _ = self.attention(queries, normed, normed, attn_mask=causal_mask, need_weights=False)
        x = x + attended
        return x + self.mlp(self.mlp_norm(x))


class Transformer(nn.Module):
    """Causal transformer classifying a token sequence by its last position.

    ``forward(inputs)`` maps long tokens ``(N, T)`` to logits ``(N, num_classes)``;
    :meth:`hidden_states` gives every position's final (normalised) state ``(N, T, width)``.
    """

    def __init__(self, vocab_size, num_classes, sequence_length, width=128, depth=2, heads=4):
        super().__init__()
        if width % heads:
            raise ValueError(f"width={width} must be divisible by heads={heads}")
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.position_embedding = nn.Embedding(sequence_length, width)
        self.blocks = nn.ModuleList(Block(width, heads) for _ in range(depth))
        self.final_norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, num_classes, bias=False)
        # True above the diagonal = position i may not attend to a later position j > i.
        mask = torch.triu(torch.ones(sequence_length, sequence_length, dtype=torch.bool), diagonal=1)
        self.register_buffer("causal_mask", mask, persistent=False)

    def _run_blocks(self, inputs, last_only):
        length = inputs.shape[1]
        positions = torch.arange(length, device=inputs.device)
        x = self.token_embedding(inputs) + self.position_embedding(positions)
        mask = self.causal_mask[:length, :length]
        for index, block in enumerate(self.blocks):
            x = block(x, mask, last_only=last_only and index == len(self.blocks) - 1)
        return self.final_norm(x)

    def hidden_states(self, inputs):
        return self._run_blocks(inputs, last_only=False)

    def forward(self, inputs):
        # Only the last position is read out, so the last block computes only that position
        # (the same logits as hidden_states()[:, -1] through the head, at a fraction of the cost).
        return self.head(self._run_blocks(inputs, last_only=True)[:, -1])


def answer_loss(model, inputs, labels):
    """Cross-entropy of the answer token, and the logits it came from."""
    logits = model(inputs)
    return F.cross_entropy(logits, labels), logits


def accuracy(logits, labels):
    return (logits.argmax(dim=-1) == labels).float().mean().item()


@torch.no_grad()
def evaluate(model, inputs, labels):
    """Loss and accuracy over a whole split in one vectorised pass: ``(loss, accuracy)`` as floats."""
    was_training = model.training
    model.eval()
    try:
        loss, logits = answer_loss(model, inputs, labels)
    finally:
        model.train(was_training)
    return loss.item(), accuracy(logits, labels)
