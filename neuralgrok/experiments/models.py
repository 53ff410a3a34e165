"""The models of the grokking papers, each classifying a token sequence by its answer.

:class:`Transformer` is the decoder-only causal transformer of Power et al., Grokfast and NeuralGrok:
token + learned position embeddings, ``depth`` pre-LayerNorm blocks (causal multi-head
self-attention, then a GELU MLP four times as wide; ``block="official"`` is the variant of NeuralGrok's
official code, see :class:`Block`), a final LayerNorm and an untied linear head
without bias, read out at the last position (the ``=`` token). Loss and accuracy are on the answer
only, because the model produces logits for the last position only.

:class:`NandaTransformer` is the transformer of Nanda et al. and Gu et al. (no LayerNorm, ReLU MLP,
every matrix drawn from N(0, 1/width)); :class:`EmbeddingMLP` is Gu et al.'s MLP on the concatenated
token embeddings. All three take ``init_scale`` (multiplies every trained weight matrix at init) and
``embedding`` (the token-embedding init, see :func:`init_token_embedding`).

Example::

    from neuralgrok.experiments.models import Transformer, evaluate
    model = Transformer(vocab_size=49, num_classes=47, sequence_length=4, width=128, depth=2, heads=4)
    loss, accuracy = evaluate(model, data.test_inputs, data.test_labels)
"""
import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from . import polygons
from .tasks import TokenLayout


BLOCKS = ("prenorm", "official")


class Block(nn.Module):
    """A residual block of causal self-attention and a GELU MLP, in one of two forms (``variant``):

    - ``"prenorm"``, the standard pre-LayerNorm block: ``x = x + attn(LN1(x)); x = x + mlp(LN2(x))``;
    - ``"official"``, the block of NeuralGrok's official code: ``x = LN1(x); x = x + attn(x);
      x = x + mlp(LN2(x))``, where the residual stream is overwritten by LN1's output.

    Both have the same parameters (names and shapes), so a state dict loads into either.
    """

    def __init__(self, width, heads, variant="prenorm"):
        super().__init__()
        if variant not in BLOCKS:
            raise ValueError(f"block variant {variant!r}; choose one of {list(BLOCKS)}")
        self.variant = variant
        self.attention_norm = nn.LayerNorm(width)
        self.attention = nn.MultiheadAttention(width, heads, batch_first=True)
        self.mlp_norm = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x, causal_mask, last_only=False):
        """``(N, T, width)`` -> ``(N, T, width)``, or ``(N, 1, width)`` for the last position only
        with ``last_only`` (which attends to every position, so it needs no mask)."""
        normed = self.attention_norm(x)
        if self.variant == "official":
            x = normed
        if last_only:
            x, queries, causal_mask = x[:, -1:], normed[:, -1:], None
        else:
            queries = normed
        attended, _ = self.attention(queries, normed, normed, attn_mask=causal_mask, need_weights=False)
        x = x + attended
        return x + self.mlp(self.mlp_norm(x))


def add_embeddings(module: nn.Module, vocab_size: int, sequence_length: int, width: int, heads: int) -> None:
    """Give a transformer ``module`` its token embedding ``(vocab_size, width)`` and its learned position
    embedding ``(sequence_length, width)``, in that order (the order of their draws from the global RNG),
    after checking that ``heads`` divides ``width``."""
    if width % heads:
        raise ValueError(f"width={width} must be divisible by heads={heads}")
    module.token_embedding = nn.Embedding(vocab_size, width)
    module.position_embedding = nn.Embedding(sequence_length, width)


def add_causal_mask(module: nn.Module, sequence_length: int) -> None:
    """Register ``module.causal_mask``, ``(T, T)`` bool, True above the diagonal: position i may not attend
    to a later position j > i (not saved in state dicts)."""
    mask = torch.triu(torch.ones(sequence_length, sequence_length, dtype=torch.bool), diagonal=1)
    module.register_buffer("causal_mask", mask, persistent=False)


class Transformer(nn.Module):
    """Causal transformer classifying a token sequence by its last position.

    ``forward(inputs)`` maps long tokens ``(N, T)`` to logits ``(N, num_classes)``;
    :meth:`hidden_states` gives every position's final (normalised) state ``(N, T, width)``.
    """

    def __init__(self, vocab_size, num_classes, sequence_length, width=128, depth=2, heads=4,
                 init_scale=1.0, embedding=None, embedding_seed=0, block="prenorm"):
        super().__init__()
        add_embeddings(self, vocab_size, sequence_length, width, heads)
        self.blocks = nn.ModuleList(Block(width, heads, block) for _ in range(depth))
        self.final_norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, num_classes, bias=False)
        add_causal_mask(self, sequence_length)
        # embedding=None keeps PyTorch's N(0, 1) token embedding (and draws nothing more).
        if embedding is not None:
            init_token_embedding(self.token_embedding, embedding, embedding_seed)
        scale_weights(self, init_scale)

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


EMBEDDINGS = ("gaussian", "onehot_fixed", "toeplitz")


def toeplitz_embedding(vocab_size: int, width: int, seed: int = 0) -> torch.Tensor:
    """Gu et al.'s Toeplitz init as a ``(vocab_size, width)`` embedding weight: T = toeplitz(r, r) for
    r ~ U[0, 1)^width drawn from ``seed``, W_E = T[:, :vocab] / sqrt(width); T is symmetric, so the
    embedding rows are T[:vocab] / sqrt(width)."""
    r = torch.rand(width, generator=torch.Generator().manual_seed(seed))
    index = torch.arange(width)
    toeplitz = r[(index[:, None] - index[None, :]).abs()]
    return toeplitz[:vocab_size] / math.sqrt(width)


@torch.no_grad()
def init_token_embedding(embedding: nn.Embedding, kind: str, seed: int = 0) -> None:
    """Re-initialise an ``nn.Embedding`` in place: ``"gaussian"`` N(0, 1/width); ``"onehot_fixed"``
    row t = e_t and frozen (width >= vocabulary); ``"toeplitz"`` :func:`toeplitz_embedding` (``seed``)."""
    vocab_size, width = embedding.weight.shape
    if kind not in EMBEDDINGS:
        raise ValueError(f"unknown embedding {kind!r}; choose one of {list(EMBEDDINGS)}")
    if kind != "gaussian" and width < vocab_size:
        raise ValueError(f"embedding {kind!r} needs width >= vocabulary, got {width} < {vocab_size}")
    if kind == "gaussian":
        embedding.weight.normal_(0.0, 1.0 / math.sqrt(width))
    elif kind == "toeplitz":
        embedding.weight.copy_(toeplitz_embedding(vocab_size, width, seed))
    else:
        embedding.weight.copy_(torch.eye(vocab_size, width))
        embedding.weight.requires_grad_(False)


@torch.no_grad()
def scale_weights(module: nn.Module, scale: float) -> None:
    """Multiply every trained weight matrix (2-D or more) of ``module`` by ``scale``; frozen ones
    (the fixed one-hot embedding) and vectors (biases, LayerNorm gains) are left alone."""
    for parameter in module.parameters():
        if parameter.dim() >= 2 and parameter.requires_grad:
            parameter.mul_(scale)


class NandaAttention(nn.Module):
    """Causal multi-head self-attention without biases."""

    def __init__(self, width, heads):
        super().__init__()
        self.heads = heads
        self.query, self.key, self.value, self.out = (nn.Linear(width, width, bias=False) for _ in range(4))

    def forward(self, x, causal_mask, last_only=False):
        """``(N, T, width)`` -> ``(N, T, width)``, or ``(N, 1, width)`` for the last position's query only
        with ``last_only`` (which attends to every position, so it needs no mask)."""
        n, length, width = x.shape

        def split_heads(t):  # (N, T', width) -> (N, heads, T', width / heads)
            return t.reshape(n, t.shape[1], self.heads, -1).transpose(1, 2)

        q = split_heads(self.query(x[:, -1:] if last_only else x))
        k, v = split_heads(self.key(x)), split_heads(self.value(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
        if not last_only:
            scores = scores.masked_fill(causal_mask, float("-inf"))
        attended = scores.softmax(dim=-1) @ v
        return self.out(attended.transpose(1, 2).reshape(n, q.shape[2], width))


class NandaBlock(nn.Module):
    """Residual block without LayerNorm: ``x + attention(x)``, then ``x + relu_mlp(x)``."""

    def __init__(self, width, heads, mlp_width):
        super().__init__()
        self.attention = NandaAttention(width, heads)
        self.mlp = nn.Sequential(nn.Linear(width, mlp_width), nn.ReLU(), nn.Linear(mlp_width, width))

    def forward(self, x, causal_mask, last_only=False):
        """``(N, T, width)`` -> ``(N, T, width)``, or the last position ``(N, 1, width)`` with ``last_only``."""
        x = (x[:, -1:] if last_only else x) + self.attention(x, causal_mask, last_only)
        return x + self.mlp(x)


class NandaTransformer(nn.Module):
    """The transformer of Nanda et al. and Gu et al.: no LayerNorm, ``heads`` heads of
    ``width / heads``, ReLU MLP ``mlp_width``, no attention biases, learned positions, every matrix
    N(0, 1/width) times ``init_scale`` (biases zero), untied head without bias read out at the last
    (``=``) position. ``forward(inputs)`` maps ``(N, T)`` tokens to ``(N, num_classes)`` logits."""

    def __init__(self, vocab_size, num_classes, sequence_length, width=128, depth=2, heads=4, mlp_width=512,
                 init_scale=1.0, embedding="gaussian", embedding_seed=0, train_last_position_only=False):
        super().__init__()
        self.train_last_position_only = train_last_position_only
        add_embeddings(self, vocab_size, sequence_length, width, heads)
        self.blocks = nn.ModuleList(NandaBlock(width, heads, mlp_width) for _ in range(depth))
        self.head = nn.Linear(width, num_classes, bias=False)
        add_causal_mask(self, sequence_length)
        with torch.no_grad():
            for parameter in self.parameters():
                if parameter.dim() >= 2:
                    parameter.normal_(0.0, 1.0 / math.sqrt(width))
                else:
                    parameter.zero_()
        init_token_embedding(self.token_embedding, embedding, embedding_seed)
        scale_weights(self, init_scale)

    def _run_blocks(self, inputs, last_only):
        length = inputs.shape[1]
        x = self.token_embedding(inputs) + self.position_embedding(torch.arange(length, device=inputs.device))
        for index, block in enumerate(self.blocks):
            x = block(x, self.causal_mask[:length, :length], last_only=last_only and index == len(self.blocks) - 1)
        return x

    def hidden_states(self, inputs):
        """Every position's final residual stream ``(N, T, width)``."""
        return self._run_blocks(inputs, last_only=False)

    def forward(self, inputs):
        # Only the last position is read out. Without autograd (evaluation) the last block computes only that
        # position: the same logits for about 30% less work (bit for bit where the matrix multiply's rows do not
        # depend on how many there are, as in torch 2.13.0's CPU build; Debian's torch 1.13 rounds the last bits
        # differently, as it does for any change of batch size). A training forward keeps every position
        # unless ``train_last_position_only``: the same maths for about a quarter less work, but the weight
        # gradients' sums then skip the zero terms of the unread positions and round differently in the last
        # bits, so such a run does not regenerate one made without it.
        last_only = self.train_last_position_only or not torch.is_grad_enabled()
        return self.head(self._run_blocks(inputs, last_only=last_only)[:, -1])


class EmbeddingMLP(nn.Module):
    """Gu et al.'s MLP: the ``sequence_length`` token embeddings concatenated
    (3 x 128 = 384) -> ``hidden`` -> ``hidden`` -> ``num_classes``, ReLU; PyTorch's default init for the
    Linear layers, ``embedding`` for the tokens, every trained matrix times ``init_scale``."""

    def __init__(self, vocab_size, num_classes, sequence_length=3, width=128, hidden=512,
                 init_scale=1.0, embedding="gaussian", embedding_seed=0):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.mlp = nn.Sequential(nn.Linear(sequence_length * width, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                                 nn.ReLU(), nn.Linear(hidden, num_classes))
        init_token_embedding(self.token_embedding, embedding, embedding_seed)
        scale_weights(self, init_scale)

    def first_hidden(self, inputs):
        """The first hidden layer's activations ``(N, hidden)`` (after its ReLU): what Gu et al.
        measure MED on when the embedding is fixed."""
        return self.mlp[:2](self.token_embedding(inputs).flatten(1))

    def forward(self, inputs):
        return self.mlp(self.token_embedding(inputs).flatten(1))


LOSSES = ("ce", "mse")


def _loss(logits, labels, loss, reduction):
    if loss == "ce":
        return F.cross_entropy(logits, labels, reduction=reduction)
    if loss == "mse":
        error = F.mse_loss(logits, F.one_hot(labels, logits.shape[-1]).to(logits.dtype), reduction=reduction)
        return error if reduction == "mean" else error.mean(dim=-1)
    raise ValueError(f"unknown loss {loss!r}; choose one of {list(LOSSES)}")


def answer_loss(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor,
                loss: str = "ce") -> Tuple[torch.Tensor, torch.Tensor]:
    """Loss of the answer token, and the logits it came from: ``"ce"`` cross-entropy, or ``"mse"`` the
    mean squared error between the logits and the one-hot answer (mean over examples and classes)."""
    logits = model(inputs)
    return _loss(logits, labels, loss, "mean"), logits


def example_losses(logits: torch.Tensor, labels: torch.Tensor, loss: str = "ce") -> torch.Tensor:
    """Each example's answer loss ``(N,)`` (see :func:`answer_loss`), for means over parts of a batch."""
    return _loss(logits, labels, loss, "none")


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The fraction of rows of ``logits`` (N, C) whose argmax is the label (N,)."""
    return (logits.argmax(dim=-1) == labels).float().mean().item()


@torch.no_grad()
def evaluate(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, loss: str = "ce") -> Tuple[float, float]:
    """Loss and accuracy over a whole split in one vectorised pass: ``(loss, accuracy)`` as floats."""
    was_training = model.training
    model.eval()
    try:
        value, logits = answer_loss(model, inputs, labels, loss)
    finally:
        model.train(was_training)
    return value.item(), accuracy(logits, labels)


# -- the models a run can train, each described by a Model record ---------------------------------------


@dataclass(frozen=True)
class Model:
    """One model the runner can train.

    Attributes:
        name: its name in configs (``model = "..."``).
        build: ``(config, layout, sequence_length) -> nn.Module``, drawing its initialisation from the
            global torch RNG; ``layout`` is the task's :class:`~neuralgrok.experiments.tasks.TokenLayout`
            (None for images).
        inputs: ``"tokens"`` or ``"images"``: the tasks it goes with give these
            (:class:`neuralgrok.experiments.data.Task`).
    """

    name: str
    build: Callable[[Any, Optional[TokenLayout], int], nn.Module]
    inputs: str = "tokens"


MODELS: Dict[str, Model] = {}


def register_model(name: str, build: Callable[[Any, Optional[TokenLayout], int], nn.Module], *,
                   inputs: str = "tokens") -> Model:
    """Register a model under ``name`` (see :class:`Model`) and return its record."""
    if name in MODELS:
        raise ValueError(f"model {name!r} is already registered")
    MODELS[name] = Model(name, build, inputs)
    return MODELS[name]


def build_model(config: Any, layout: Optional[TokenLayout], sequence_length: int) -> nn.Module:
    """The config's model for ``layout``'s vocabulary, drawn from the global torch RNG."""
    return MODELS[config.model].build(config, layout, sequence_length)


def _token_model_options(config: Any) -> Tuple[Dict[str, Any], Optional[str]]:
    return dict(init_scale=config.init_scale, embedding_seed=config.seed), (
        None if config.embedding_init == "default" else config.embedding_init)


def _transformer(config, layout, sequence_length):
    common, embedding = _token_model_options(config)
    return Transformer(layout.vocab_size, config.p, sequence_length, width=config.width, depth=config.depth,
                       heads=config.heads, embedding=embedding, block=config.block, **common)


def _nanda(config, layout, sequence_length):
    common, embedding = _token_model_options(config)
    return NandaTransformer(layout.vocab_size, config.p, sequence_length, width=config.width, depth=config.depth,
                            heads=config.heads, mlp_width=config.mlp_width, embedding=embedding or "gaussian",
                            train_last_position_only=config.train_last_position_only, **common)


def _mlp(config, layout, sequence_length):
    common, embedding = _token_model_options(config)
    return EmbeddingMLP(layout.vocab_size, config.p, sequence_length, width=config.width, hidden=config.mlp_width,
                        embedding=embedding or "gaussian", **common)


register_model("transformer", _transformer)
register_model("nanda", _nanda)
register_model("mlp", _mlp)
register_model("resnet18", lambda config, layout, sequence_length: polygons.resnet18(
    weights_path=config.weights_path or None), inputs="images")
