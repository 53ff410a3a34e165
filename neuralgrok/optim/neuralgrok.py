"""NeuralGrok (arXiv 2504.17243) as a wrapper around any ``torch.optim`` optimizer."""
from typing import Any, Callable, Dict, List, Optional
import math

import torch

from .. import ops
from .amplifier import NeuralAmplifier, canonical_keys
from .base import GradientTransformOptimizer, all_finite, param_group_problems

META_MODES = ("paper", "fast")
VIRTUAL_LRS = ("initial", "current")  # which lr of a parameter group the virtual step uses


class NeuralGrok(GradientTransformOptimizer):
    """Train on amplified gradients ``g' = G_phi(g)`` and meta-learn the amplifier ``G_phi``.

    Every step: the closure's gradients ``g`` are replaced by ``G_phi(g)`` (per parameter tensor:
    ``c * softmax(MLP(g)) * g / ||softmax(MLP(g)) * g||``), optionally clipped to a global norm, and
    the base optimizer steps. Every ``meta_every`` steps the amplifier takes a first-order bilevel
    step: a virtual SGD step ``theta' = theta - lr * G_phi(g)``, the loss of ``theta'`` on a held-out
    outer split (``outer_closure()``), and ``phi`` updated with the VJP of ``G_phi`` at ``g`` with
    cotangent ``-lr * dL_outer/dtheta'``. No copy of the model is made: the parameters' storage is
    swapped to ``theta'`` for the outer forward/backward and swapped back.

    The defaults are the official code's (``neuralgrad`` branch, the paper's Table 1 setup): T = 4,
    an amplifier of hidden sizes (128, 128), c = 1 (the amplifier's ``rescale``), a global clip of
    1.0, the amplifier trained by Adam (lr 1e-4, betas (0.9, 0.98), L2 weight decay 1e-3), and the
    virtual step at the base lr without any warm-up factor. Where this class differs from that
    code it says so below (the "fast" meta mode, the swap of parameter storage instead of a deep
    copy of the model, and the meta step of a non-finite gradient).

    Meta modes:
        ``"paper"``: like the paper's code, recompute ``g`` on the same inner batch at the freshly
        updated weights (the closure is called a second time), so ``step`` needs a closure.
        ``"fast"``: reuse this step's ``g`` (taken at the weights before the update): one forward
        and backward fewer per meta step, a slightly staler meta-gradient.

    Args:
        base_optimizer: any ``torch.optim.Optimizer`` on the model's parameters.
        amplifier: a :class:`NeuralAmplifier`; by default ``NeuralAmplifier()``.
        outer_closure: ``() -> loss`` on the outer split (forward only, no ``backward``); needed
            unless ``train_amplifier=False``. Under DDP, call the wrapped ``model.module`` in it.
        meta_every: T, the number of steps between amplifier updates (4, the official code's for the
            two-operand tasks; it uses 1 for a*c+b*d-e mod 7).
        meta: ``"paper"`` or ``"fast"``, see above.
        meta_optimizer: optimizer for the amplifier's parameters; by default
            ``Adam(amplifier.parameters(), lr=meta_lr, betas=(0.9, 0.98), weight_decay=meta_weight_decay)``
            as in the official code.
        meta_lr: learning rate of the default meta optimizer.
        meta_weight_decay: L2 weight decay of the default meta optimizer (1e-3, the official code's).
        virtual_lr: the lr of the virtual step: ``"initial"`` (default) each parameter group's
            ``initial_lr`` where an LR scheduler set one, else its ``lr``: the base lr without the
            warm-up factor, as the official code; ``"current"`` each group's current (scheduled)
            lr; or a number.
        clip_grad_norm: global norm the amplified gradients are clipped to (1.0 in the paper's
            code); ``None`` disables clipping.
        train_amplifier: ``False`` freezes the amplifier (transfer of a trained amplifier).
        nonfinite, param_names: see :class:`~neuralgrok.optim.base.GradientTransformOptimizer`. A
            non-finite outer loss or meta-gradient follows the same policy, so the amplifier never
            receives NaN either.

    Mixed precision: ``scaler.scale(loss).backward(); scaler.step(opt); scaler.update()``. The
    scaler unscales the gradients (``scaler.unscale_(opt)``, explicit or inside ``scaler.step``)
    *before* ``step`` transforms them, which matters: the amplifier's scores depend on the
    gradients' magnitude. ``GradScaler.step`` takes no closure, so use ``meta="fast"`` with it.

    Dtypes: the amplifier computes in its own dtype (float32 or float64: the C++ op has no half
    precision). The default amplifier is float64 for a float64 model, else float32; gradients of
    another dtype (a float16 or bfloat16 model's) are converted to the amplifier's for the transform
    and the meta step, and the results back.

    Example::

        opt = NeuralGrok(torch.optim.AdamW(model.parameters(), lr=1e-3),
                         outer_closure=lambda: loss_fn(model(x_outer), y_outer))
        def closure():
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            return loss
        opt.step(closure)
    """

    def __init__(self, base_optimizer, amplifier=None, *, outer_closure=None, meta_every=4, meta="paper",
                 meta_optimizer=None, meta_lr=1e-4, meta_weight_decay=1e-3, virtual_lr="initial",
                 clip_grad_norm=1.0, train_amplifier=True, nonfinite="raise", param_names=None):
        super().__init__(base_optimizer, nonfinite=nonfinite, param_names=param_names)
        if amplifier is None:  # the default follows a float64 model; float16/bfloat16 ones use float32 (below)
            dtypes = {p.dtype for group in self.param_groups for p in group["params"]}
            amplifier = NeuralAmplifier().to(torch.float64) if dtypes == {torch.float64} else NeuralAmplifier()
        if not isinstance(amplifier, NeuralAmplifier):
            raise TypeError(f"amplifier must be a neuralgrok.NeuralAmplifier, got {type(amplifier).__name__}")
        if meta not in META_MODES:
            raise ValueError(f"meta={meta!r}; choose one of {META_MODES}")
        if not isinstance(meta_every, int) or meta_every < 1:
            raise ValueError(f"meta_every must be a positive int, got {meta_every!r}")
        if clip_grad_norm is not None and not clip_grad_norm > 0:
            raise ValueError(f"clip_grad_norm must be > 0 or None, got {clip_grad_norm!r}")
        if virtual_lr not in VIRTUAL_LRS and (isinstance(virtual_lr, (str, bool)) or
                                              not isinstance(virtual_lr, (int, float)) or not 0 < virtual_lr < math.inf):
            raise ValueError(f"virtual_lr must be a finite number > 0 or one of {VIRTUAL_LRS}, got {virtual_lr!r}")
        if not (isinstance(meta_weight_decay, (int, float)) and 0 <= meta_weight_decay < math.inf):
            raise ValueError(f"meta_weight_decay must be a finite number >= 0, got {meta_weight_decay!r}")
        if train_amplifier and outer_closure is None:
            raise ValueError("training the amplifier needs outer_closure (the loss on the outer split); "
                             "pass train_amplifier=False to use a frozen amplifier")
        self.amplifier = amplifier
        self.outer_closure = outer_closure
        self.meta_every = meta_every
        self.meta = meta
        self.virtual_lr = virtual_lr
        self.clip_grad_norm = clip_grad_norm
        self.train_amplifier = train_amplifier
        amplifier.requires_grad_(train_amplifier)
        if train_amplifier and meta_optimizer is None:
            meta_optimizer = torch.optim.Adam(amplifier.parameters(), lr=meta_lr, betas=(0.9, 0.98),
                                              weight_decay=meta_weight_decay)
        self.meta_optimizer = meta_optimizer
        self.steps = 0
        self.meta_steps = 0

    def meta_step_due(self) -> bool:
        """Whether the next call to :meth:`step` ends with an amplifier update."""
        return self.train_amplifier and (self.steps + 1) % self.meta_every == 0

    def _amplifier_dtype(self):
        return self.amplifier.mlp[0].weight.dtype

    def _in_amplifier_dtype(self, tensors):
        dtype = self._amplifier_dtype()
        return [t if t.dtype == dtype else t.to(dtype) for t in tensors]

    def transform_(self, params: List[torch.Tensor]) -> None:
        with torch.no_grad():
            amplified = self.amplifier.amplify(self._in_amplifier_dtype([p.grad for p in params]))
            for p, g in zip(params, amplified):
                p.grad.copy_(g)
            if self.clip_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(params, self.clip_grad_norm)

    def step(self, closure: Optional[Callable[[], torch.Tensor]] = None) -> Optional[torch.Tensor]:
        """One training step on amplified gradients, plus a meta step every ``meta_every`` steps.

        ``closure`` (zero grads, forward, backward, return loss) is called here, once, or twice on
        a ``"paper"`` meta step. Without a closure the gradients already in ``.grad`` are used.
        """
        meta_due = self.meta_step_due()
        if meta_due and self.meta == "paper" and closure is None:
            raise ValueError("meta='paper' recomputes the gradient at the updated weights every meta_every "
                             "steps, so step() needs a closure; or use meta='fast'")
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        params = self.params_with_grad()
        if not params or not self.gradients_are_finite(params):
            return loss
        inner_grads = [p.grad.clone() for p in params] if meta_due and self.meta == "fast" else None
        if not self.transform_and_record_(params):
            return loss
        self.base_optimizer.step()
        self.steps += 1
        if meta_due:
            if self.meta == "paper":
                inner_grads = self._gradients_at_current_weights(params, closure)
            if inner_grads is not None:
                self._meta_step(params, inner_grads)
        return loss

    def _gradients_at_current_weights(self, params, closure):
        # The closure writes fresh .grad tensors; the ones the base optimizer used are put back.
        used = [p.grad for p in params]
        for p in params:
            p.grad = None
        try:
            with torch.enable_grad():
                closure()
            fresh = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        finally:
            for p, g in zip(params, used):
                p.grad = g
        if not self._finite_or_policy(fresh, "the recomputed inner gradient"):
            return None
        return fresh

    def _finite_or_policy(self, tensors, what):
        if all_finite(tensors):
            return True
        return self.nonfinite_found(what, "the amplifier was not updated")

    def _virtual_lrs(self, params):
        if self.virtual_lr not in VIRTUAL_LRS:
            return [float(self.virtual_lr)] * len(params)
        key = "initial_lr" if self.virtual_lr == "initial" else "lr"
        lr_of = {p: group.get(key, group["lr"]) for group in self.param_groups for p in group["params"]}
        return [float(lr_of[p]) for p in params]

    def snapshot_state(self) -> Optional[Dict[str, Any]]:
        """The amplifier's state with the step counts; None for a frozen amplifier after step 0."""
        if not self.train_amplifier and self.steps > 0:
            return None
        return {"amplifier": {name: t.detach().clone() for name, t in self.amplifier.state_dict().items()},
                "steps": self.steps, "meta_steps": self.meta_steps}

    def _meta_step(self, params, inner_grads):
        with torch.enable_grad():
            amplified = self.amplifier.amplify(self._in_amplifier_dtype(inner_grads))
            virtual = ops.virtual_step(self._in_amplifier_dtype([p.detach() for p in params]),
                                                        amplified, self._virtual_lrs(params))
        current = [p.data for p in params]
        try:
            for p, v in zip(params, virtual):
                p.data = v.detach().to(p.dtype)
            with torch.enable_grad():
                outer_loss = self.outer_closure()
                cotangents = torch.autograd.grad(outer_loss, params, allow_unused=True)
        finally:
            for p, data in zip(params, current):
                p.data = data
        cotangents = [c if c is not None else torch.zeros_like(p) for c, p in zip(cotangents, params)]
        cotangents = self._in_amplifier_dtype(cotangents)
        if not self._finite_or_policy([outer_loss.detach(), *cotangents], "the outer loss or its gradient"):
            return
        self.meta_optimizer.zero_grad()
        torch.autograd.backward(virtual, cotangents)
        meta_grads = [q.grad for q in self.amplifier.parameters() if q.grad is not None]
        _all_reduce_mean(meta_grads)
        if not self._finite_or_policy(meta_grads, "the amplifier's meta-gradient"):
            return
        self.meta_optimizer.step()
        self.meta_steps += 1

    def extra_state_dict(self) -> Dict[str, Any]:
        state = super().extra_state_dict()
        state.update(steps=self.steps, meta_steps=self.meta_steps, amplifier=self.amplifier.state_dict(),
                     meta_optimizer=self.meta_optimizer.state_dict() if self.meta_optimizer is not None else None)
        return state

    def extra_state_problems(self, state: Any) -> List[str]:
        problems = super().extra_state_problems(state)
        if problems:
            return problems
        for key in ("steps", "meta_steps"):
            if isinstance(state[key], bool) or not isinstance(state[key], int) or state[key] < 0:
                problems.append(f"'extra'['{key}'] is {state[key]!r}, not a count")
        mine = self.amplifier.state_dict()
        saved = state["amplifier"]
        if not isinstance(saved, dict):
            return problems + [f"'extra'['amplifier'] is a {type(saved).__name__}, not a state dict"]
        saved = canonical_keys(saved)
        shapes = {k: tuple(v.shape) if isinstance(v, torch.Tensor) else None for k, v in saved.items()}
        if shapes != {k: tuple(v.shape) for k, v in mine.items()}:
            problems.append(f"its amplifier has the shapes {shapes} where this one (hidden_sizes="
                            f"{self.amplifier.hidden_sizes}) has {({k: tuple(v.shape) for k, v in mine.items()})}")
        if (state["meta_optimizer"] is None) != (self.meta_optimizer is None):
            problems.append("it was saved by a NeuralGrok that " + ("trains" if state["meta_optimizer"] is not None
                                                                    else "does not train") +
                            " its amplifier, this one " + ("does" if self.meta_optimizer is not None else "does not"))
        elif self.meta_optimizer is not None:
            meta = state["meta_optimizer"]
            if not isinstance(meta, dict) or "param_groups" not in meta or "state" not in meta:
                problems.append("'extra'['meta_optimizer'] is not an optimizer state dict")
            else:
                problems += param_group_problems("the meta optimizer's", meta["param_groups"],
                                            self.meta_optimizer.param_groups)
        return problems

    def load_extra_state_dict(self, state: Dict[str, Any]) -> None:
        super().load_extra_state_dict(state)
        self.steps = state["steps"]
        self.meta_steps = state["meta_steps"]
        self.amplifier.load_state_dict(state["amplifier"])
        if self.meta_optimizer is not None and state["meta_optimizer"] is not None:
            self.meta_optimizer.load_state_dict(state["meta_optimizer"])


def _all_reduce_mean(tensors):
    """Average the amplifier's gradients over ranks so every rank keeps an identical amplifier."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    world = dist.get_world_size()
    for t in tensors:
        dist.all_reduce(t)
        t.div_(world)
