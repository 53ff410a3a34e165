"""The shape every neuralgrok method shares: a real ``torch.optim.Optimizer`` that transforms the
gradients of a *base* optimizer's parameters, then lets the base optimizer step.

Subclasses implement :meth:`GradientTransformOptimizer.transform_` (and may override ``step`` for
extra work, as NeuralGrok does for its meta step). ``param_groups`` is the base optimizer's own
list, so LR schedulers and ``add_param_group`` act on the base directly.
"""
import math
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch

from .. import ops

NONFINITE_POLICIES = ("raise", "skip")


def all_finite(tensors: Sequence[torch.Tensor]) -> bool:
    """Whether every entry of every tensor is finite (no NaN, no Inf), with one host synchronisation.

    The fast test is the sum of each tensor's sum: a NaN or Inf entry makes its tensor's sum, and so the
    total, NaN or Inf (IEEE arithmetic never turns them back into finite numbers), so a finite total
    means every entry is finite. A sum is one vectorised pass; on CPU it costs about a twentieth of the
    largest |entry| (``torch._foreach_norm`` with ord inf, several ms a call on the NeuralGrok paper's
    model, three times a step). A non-finite total (a non-finite entry, or finite entries whose sum
    overflows) is settled by :func:`_all_finite_exactly`, so the answer is always the exact one."""
    tensors = [t.detach() for t in tensors if t.numel() > 0]
    if not tensors:
        return True
    try:  # float16/bfloat16 sums in float32, which holds their finite sums far more often
        sums = [t.sum(dtype=torch.float32) if t.dtype in (torch.float16, torch.bfloat16) else t.sum()
                for t in tensors]
        total = torch.stack(sums).sum() if len({(s.dtype, s.device) for s in sums}) == 1 else None
    except (RuntimeError, TypeError):  # a dtype or device the sums do not serve
        total = None
    if total is not None and bool(torch.isfinite(total)):
        return True
    return _all_finite_exactly(tensors)


def _all_finite_exactly(tensors: Sequence[torch.Tensor]) -> bool:
    """:func:`all_finite` for non-empty tensors without the shortcut: the largest |entry| of each tensor
    (NaN where it holds a NaN) by one fused ``torch._foreach_norm`` with ord inf where torch has it, else
    tensor by tensor, then one check of those maxima (one host synchronisation)."""
    try:
        largest = torch._foreach_norm(tensors, math.inf)
    except (AttributeError, RuntimeError, TypeError):  # a torch without it, or a dtype it refuses
        largest = [t.abs().amax() for t in tensors]
    try:  # float64 holds every float dtype's finite values (a float32 copy of a float64 1e300 would be Inf)
        return bool(torch.isfinite(torch.stack([m.to(torch.float64) for m in largest])).all())
    except (RuntimeError, TypeError):  # several devices, or one without float64
        return all(bool(torch.isfinite(m)) for m in largest)


def first_nonfinite_grad(params: Sequence[torch.Tensor]) -> Optional[torch.Tensor]:
    """The first of ``params`` whose ``.grad`` holds a NaN or Inf, or None if all are finite: one
    :func:`all_finite` check (one host synchronisation); the tensors are searched only when it fails."""
    if all_finite([p.grad for p in params]):
        return None
    return next(p for p in params if not bool(torch.isfinite(p.grad).all()))


class NonFiniteGradientError(RuntimeError):
    """A NaN or Inf gradient (raw, transformed, or a meta-gradient) under ``nonfinite="raise"``;
    nothing was updated (see :class:`GradientTransformOptimizer`)."""


class GradientTransformOptimizer(torch.optim.Optimizer):
    """Base class: wrap ``base_optimizer`` and transform its gradients before each step.

    Args:
        base_optimizer: any ``torch.optim.Optimizer`` (Adam, AdamW, SGD, ...), already built on
            the model's parameters.
        nonfinite: what a NaN/Inf gradient does. ``"raise"`` (default) raises a
            :class:`NonFiniteGradientError` (a ``RuntimeError``) naming the parameter before anything
            is modified; ``"skip"`` leaves parameters and all state untouched for this step (like
            ``torch.cuda.amp.GradScaler``) and counts it in ``skipped_steps``. The same policy covers
            gradients that are finite but overflow in the transform: they never reach the base
            optimizer or the weights (a method with a running state, Grokfast's filter, has taken
            that step's finite raw gradient into it by then).
        param_names: optional ``{parameter: name}`` used in error messages (for example
            ``{p: n for n, p in model.named_parameters()}``); positions are used otherwise.
    """

    def __init__(self, base_optimizer, *, nonfinite="raise", param_names=None, defaults=None):
        if not isinstance(base_optimizer, torch.optim.Optimizer):
            raise TypeError(
                f"{type(self).__name__} wraps a torch.optim.Optimizer, got {type(base_optimizer).__name__}; "
                f"build the base first, e.g. {type(self).__name__}(torch.optim.AdamW(model.parameters()))"
            )
        if isinstance(base_optimizer, GradientTransformOptimizer):
            raise TypeError(f"{type(self).__name__} cannot wrap another neuralgrok wrapper")
        if nonfinite not in NONFINITE_POLICIES:
            raise ValueError(f"nonfinite={nonfinite!r}; choose one of {NONFINITE_POLICIES}")
        self.base_optimizer = base_optimizer
        self.nonfinite = nonfinite
        self.skipped_steps = 0
        # Set record_age = True before a step to have it keep, in recorded_age, the AGE of the
        # gradients the base optimizer steps on (after the transform); the runner logs it.
        self.record_age = False
        self.recorded_age = None
        self._param_names = dict(param_names or {})
        super().__init__(base_optimizer.param_groups, defaults or {})

    # -- param_groups are the base optimizer's --------------------------------------------------
    @property
    def param_groups(self) -> List[Dict[str, Any]]:
        return self.base_optimizer.param_groups

    @param_groups.setter
    def param_groups(self, groups: List[Dict[str, Any]]) -> None:
        # Optimizer.__init__ and __setstate__ assign here; the groups always stay the base's.
        pass

    def add_param_group(self, param_group: Dict[str, Any]) -> None:
        if not any(group is param_group for group in self.base_optimizer.param_groups):
            self.base_optimizer.add_param_group(param_group)

    # -- stepping ------------------------------------------------------------------------------
    def params_with_grad(self) -> List[torch.Tensor]:
        """The parameters of every group that have a ``.grad``, in ``param_groups`` order."""
        return [p for group in self.param_groups for p in group["params"] if p.grad is not None]

    def parameter_name(self, param: torch.Tensor) -> str:
        """``param``'s name for messages: from ``param_names``, else its position and shape."""
        if param in self._param_names:
            return self._param_names[param]
        for gi, group in enumerate(self.param_groups):
            for pi, p in enumerate(group["params"]):
                if p is param:
                    return f"param_groups[{gi}]['params'][{pi}] (shape {tuple(p.shape)})"
        return f"a parameter of shape {tuple(param.shape)}"

    def gradients_are_finite(self, params: List[torch.Tensor]) -> bool:
        """Applies the ``nonfinite`` policy: False means skip this step; raises for ``"raise"``."""
        bad = first_nonfinite_grad(params)
        return bad is None or self.nonfinite_found(f"the gradient of {self.parameter_name(bad)}")

    def nonfinite_found(self, what: str, consequence: str = "nothing was updated") -> bool:
        """Raise (policy ``"raise"``) or count a skipped step and return False (``"skip"``)."""
        if self.nonfinite == "raise":
            raise NonFiniteGradientError(
                f"{type(self).__name__}: {what} is not finite (NaN or Inf); {consequence}. "
                "Pass nonfinite='skip' to skip such steps instead."
            )
        self.skipped_steps += 1
        return False

    def transform_(self, params: List[torch.Tensor]) -> None:
        """Rewrite ``p.grad`` in place for every ``p`` in ``params`` (all have finite grads)."""
        raise NotImplementedError

    def transform_and_record_(self, params: List[torch.Tensor]) -> bool:
        """:meth:`transform_`, then the ``nonfinite`` policy on the transformed gradients, then keep
        their AGE if ``record_age`` is set. False: skip this step (the base optimizer must not step)."""
        self.transform_(params)
        bad = first_nonfinite_grad(params)
        if bad is not None:
            return self.nonfinite_found(f"the transformed gradient of {self.parameter_name(bad)} (finite before "
                                        f"{type(self).__name__} transformed it)",
                                        "the parameters and the base optimizer were not updated")
        if self.record_age:
            self.recorded_age = float(ops.age([p.grad for p in params]))
        return True

    def snapshot_state(self) -> Optional[Dict[str, Any]]:
        """A small state worth saving now and then during a run (NeuralGrok: its amplifier), or None."""
        return None

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], torch.Tensor]] = None) -> Optional[torch.Tensor]:
        """Run ``closure`` (if given) with grad enabled, transform the gradients, step the base.

        The closure is called once, by this method; the base optimizer steps without it.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        params = self.params_with_grad()
        if params and self.gradients_are_finite(params) and self.transform_and_record_(params):
            self.base_optimizer.step()
        return loss

    def zero_grad(self, set_to_none: Optional[bool] = None) -> None:
        if set_to_none is None:
            self.base_optimizer.zero_grad()  # the installed torch's own default
        else:
            self.base_optimizer.zero_grad(set_to_none=set_to_none)

    # -- checkpoints ---------------------------------------------------------------------------
    def extra_state_dict(self) -> Dict[str, Any]:
        """State that is not per parameter (counters, sub-modules); subclasses extend it."""
        return {"skipped_steps": self.skipped_steps}

    def load_extra_state_dict(self, state: Dict[str, Any]) -> None:
        """Load an :meth:`extra_state_dict` (checked by :meth:`extra_state_problems` already)."""
        self.skipped_steps = state["skipped_steps"]

    def extra_state_problems(self, state: Any) -> List[str]:
        """What keeps ``state`` (an :meth:`extra_state_dict` of a saved wrapper) from loading into this
        one, checked before anything is loaded; subclasses extend it as they extend the state."""
        if not isinstance(state, dict):
            return [f"'extra' is a {type(state).__name__}, not a dict"]
        keys = set(self.extra_state_dict())
        problems = []
        if set(state) != keys:
            problems.append(f"'extra' has keys {sorted(state)} where {type(self).__name__} has {sorted(keys)}; "
                            "was it saved by another wrapper?")
        elif not isinstance(state["skipped_steps"], int):
            problems.append(f"'extra'['skipped_steps'] is {state['skipped_steps']!r}, not an int")
        return problems

    def param_state_problems(self, index: int, param: torch.Tensor, state: Dict[Any, Any],
                             extra: Dict[str, Any]) -> List[str]:
        """What is wrong with the saved per-parameter ``state`` of the ``index``-th parameter (in
        ``param_groups`` order), saved with the extra state ``extra``; checked before anything is
        loaded. Subclasses with such state override it."""
        return [] if not state else [f"parameter {index} has state {sorted(state)}; {type(self).__name__} keeps none"]

    def state_dict(self) -> Dict[str, Any]:
        """Base optimizer state (and the base optimizer's class name), this wrapper's per-parameter
        state, and its extra state."""
        own = super().state_dict()
        return {"base": self.base_optimizer.state_dict(), "base_type": type(self.base_optimizer).__name__,
                "state": own["state"], "param_groups": own["param_groups"], "extra": self.extra_state_dict()}

    def state_dict_problems(self, state_dict: Any) -> List[str]:
        """Everything that keeps ``state_dict`` from loading into this wrapper (empty: it loads)."""
        name = type(self).__name__
        if not isinstance(state_dict, dict):
            return [f"the state is a {type(state_dict).__name__}, not a dict"]
        missing = {"base", "state", "param_groups", "extra"} - set(state_dict)
        if missing:
            return [f"missing keys {sorted(missing)}; was this saved by {name}, or by a bare optimizer?"]
        problems = []
        base_type = state_dict.get("base_type")  # absent from states saved before it was recorded
        if base_type is not None and base_type != type(self.base_optimizer).__name__:
            problems.append(f"'base' is the state of {base_type}, but this wrapper's base optimizer is "
                            f"{type(self.base_optimizer).__name__}")
        base = state_dict["base"]
        if not isinstance(base, dict) or {"state", "param_groups"} - set(base):
            problems.append("'base' is not an optimizer state dict (it needs 'state' and 'param_groups')")
        else:
            problems += param_group_problems("'base'", base["param_groups"], self.base_optimizer.param_groups)
        problems += param_group_problems("the wrapper's", state_dict["param_groups"], self.param_groups)
        problems += self.extra_state_problems(state_dict["extra"])
        own = state_dict["state"]
        if not isinstance(own, dict):
            problems.append(f"'state' is a {type(own).__name__}, not a dict")
        elif not problems:  # the groups match, so saved ids map onto the parameters in order
            params = [p for group in self.param_groups for p in group["params"]]
            for key, param_state in own.items():
                if not isinstance(key, int) or not 0 <= key < len(params):
                    problems.append(f"'state' has an entry for parameter {key!r} of {len(params)}")
                elif not isinstance(param_state, dict):
                    problems.append(f"'state'[{key}] is a {type(param_state).__name__}, not a dict")
                else:
                    problems += self.param_state_problems(key, params[key], param_state, state_dict["extra"])
        return problems

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Load a :meth:`state_dict`: the whole state is checked first, so a state of another wrapper,
        mode or model raises a ``ValueError`` saying what differs and leaves this wrapper and its base
        optimizer as they were."""
        problems = self.state_dict_problems(state_dict)
        if problems:
            raise ValueError(f"{type(self).__name__}.load_state_dict: " + "; ".join(problems) +
                             "; nothing was loaded")
        self.base_optimizer.load_state_dict(state_dict["base"])
        super().load_state_dict({"state": state_dict["state"], "param_groups": state_dict["param_groups"]})
        self.load_extra_state_dict(state_dict["extra"])

    def __repr__(self):
        return f"{type(self).__name__}({self.base_optimizer!r})"


def param_group_problems(what: str, saved_groups: Any, groups: List[Dict[str, Any]]) -> List[str]:
    """Whether saved ``param_groups`` fit ``groups``: as many groups, as many parameters in each."""
    if not isinstance(saved_groups, list) or not all(isinstance(g, dict) and "params" in g for g in saved_groups):
        return [f"{what} param_groups are not a list of groups"]
    saved = [len(group["params"]) for group in saved_groups]
    current = [len(group["params"]) for group in groups]
    if saved != current:
        return [f"{what} param_groups hold {saved} parameters per group where this optimizer has {current} "
                "(another model?)"]
    return []
