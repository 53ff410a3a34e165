"""NeuralGrok's training loop with the structure of the official code (Blackzxy/NeuralOptGrok, branch
``neuralgrad``), written here from ../shared/papers.md ("Training"), not copied: the amplifier is a
dense MLP applied in Python to every entry of every gradient tensor (a materialised softmax per
tensor), and every T steps the model is deep-copied and the virtual step taken functionally on the
copy. It is the comparison point of ``bench/paper_step.py``, and ``tests/test_paper_setup.py`` checks
in float64 that it follows the same trajectory as ``neuralgrok.NeuralGrok`` driven by the runner.

    loop = OfficialLoop(model, NeuralAmplifier((128, 128)).mlp, inner, outer)
    for _ in range(steps):
        loop.step()
"""
import copy
from typing import List, Optional

import torch
from torch import nn

from neuralgrok.experiments.tasks import Split


def _functional_call(module: nn.Module, parameters, *args):
    """torch.func.functional_call where it exists (torch 2.x), else torch.nn.utils.stateless's."""
    call = getattr(getattr(torch, "func", None), "functional_call", None) or \
        torch.nn.utils.stateless.functional_call
    return call(module, parameters, args)


class OfficialLoop:
    """One NeuralGrok training run in the official loop's structure (papers.md):

    - batches of ``batch_size`` from ``inner``, reshuffled every epoch (the last partial batch kept),
      by a generator seeded with ``seed``;
    - g' = c (p g) / ||p g|| per tensor with p = softmax(MLP(g)) over the tensor's entries, c = 1;
      the amplified gradients clipped to global norm ``clip``; Adam with L2 ``weight_decay``; a
      ``warmup_steps`` linear warm-up whose first update runs at lr 0;
    - every ``meta_every`` steps, after the update: the gradient recomputed on the same batch (a
      constant), a deep copy of the model, the virtual step theta - lr g' on the copy (functional),
      the outer loss on ``outer``, and one Adam step (L2 ``meta_weight_decay``) of the MLP.

    ``model`` and ``mlp`` are trained in place; ``outer_losses`` records the meta steps' losses.
    """

    def __init__(self, model: nn.Module, mlp: nn.Module, inner: Split, outer: Split, *, lr: float = 1e-3,
                 betas=(0.9, 0.98), weight_decay: float = 1e-3, warmup_steps: int = 10, batch_size: int = 512,
                 meta_every: int = 4, meta_lr: float = 1e-4, meta_weight_decay: float = 1e-3,
                 clip: Optional[float] = 1.0, seed: int = 0):
        self.model, self.mlp, self.inner, self.outer = model, mlp, inner, outer
        self.params = list(model.parameters())
        self.lr, self.batch_size, self.meta_every, self.clip = lr, batch_size, meta_every, clip
        self.optimizer = torch.optim.Adam(self.params, lr=lr, betas=betas, eps=1e-8, weight_decay=weight_decay)
        # The k-th update runs at min((k - 1) / warmup_steps, 1) of the lr.
        self.warmup = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda done: min(done / warmup_steps, 1.0) if warmup_steps else 1.0)
        self.meta_optimizer = torch.optim.Adam(mlp.parameters(), lr=meta_lr, betas=betas,
                                               weight_decay=meta_weight_decay)
        self.generator = torch.Generator().manual_seed(seed)
        self.order: Optional[torch.Tensor] = None
        self.position = len(inner)
        self.steps_done = 0
        self.outer_losses: List[float] = []

    def amplified(self, grad: torch.Tensor) -> torch.Tensor:
        """c (p g) / ||p g|| for one gradient tensor, the MLP applied to each entry (shape kept)."""
        g = grad.reshape(-1)
        weighted = torch.softmax(self.mlp(g.reshape(-1, 1)).reshape(-1), dim=0) * g
        return (weighted / torch.linalg.vector_norm(weighted)).view_as(grad)

    def loss(self, inputs: torch.Tensor, labels: torch.Tensor, model: Optional[nn.Module] = None,
             parameters=None) -> torch.Tensor:
        """Cross-entropy of the answer logits, with ``parameters`` (a dict) in place of the model's own."""
        model = self.model if model is None else model
        logits = model(inputs) if parameters is None else _functional_call(model, parameters, inputs)
        return nn.functional.cross_entropy(logits, labels)

    def next_batch(self):
        if self.position >= len(self.inner):
            self.order, self.position = torch.randperm(len(self.inner), generator=self.generator), 0
        index = self.order[self.position:self.position + self.batch_size]
        self.position += self.batch_size
        return self.inner.inputs[index], self.inner.labels[index]

    def step(self) -> None:
        """One training iteration (and, every ``meta_every``-th, the amplifier's meta step)."""
        inputs, labels = self.next_batch()
        grads = torch.autograd.grad(self.loss(inputs, labels), self.params)
        with torch.no_grad():
            for p, g in zip(self.params, grads):
                p.grad = self.amplified(g)
        if self.clip is not None:
            nn.utils.clip_grad_norm_(self.params, self.clip)
        self.optimizer.step()
        self.warmup.step()
        self.steps_done += 1
        if self.steps_done % self.meta_every == 0:
            fresh = torch.autograd.grad(self.loss(inputs, labels), self.params)
            copied = copy.deepcopy(self.model)
            virtual = {name: p.detach() - self.lr * self.amplified(g)
                       for (name, p), g in zip(self.model.named_parameters(), fresh)}
            outer_loss = self.loss(self.outer.inputs, self.outer.labels, copied, virtual)
            self.meta_optimizer.zero_grad()
            outer_loss.backward()
            self.meta_optimizer.step()
            self.outer_losses.append(outer_loss.item())
