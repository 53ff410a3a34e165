"""Grokfast (Lee et al., arXiv 2405.20233): amplify the slow part of the gradients to grok sooner.

Each step the gradient ``g`` of every parameter is replaced by ``g + lamb * slow(g)``, where
``slow`` is a low-pass filter over that parameter's past gradients:

* EMA: ``ema = alpha * ema + (1 - alpha) * g`` (started at the first gradient);
* MA: the mean of the last ``window`` gradients (the gradient is left alone until ``window`` are stored).

The filters run as multi-tensor C++ ops (:func:`neuralgrok.ops.grokfast_ema_` / :func:`~neuralgrok.ops.grokfast_ma_`),
one call for all parameters. :class:`GrokfastEMA` and :class:`GrokfastMA` filter lists of tensors
by position; :class:`Grokfast` wraps an optimizer and keeps the filter state per parameter.

Example (a filter on a list of gradients, the same tensors in the same order every step)::

    ema = GrokfastEMA(alpha=0.98, lamb=2.0)          # or GrokfastMA(window=100, lamb=5.0)
    loss.backward()
    ema.apply_([p.grad for p in model.parameters()])
"""
from typing import Any, Dict, List, Sequence
import math
import numbers

import torch

from .. import ops
from .base import GradientTransformOptimizer


class _GrokfastFilter:
    """What both filters share: per-tensor state dicts, positional ``apply_`` and checkpoints.

    ``filter_(grads, states)`` is the one implementation; ``states[i]`` is the dict holding the
    state of ``grads[i]`` (empty before its first gradient). :class:`Grokfast` passes its
    optimizer's ``self.state[p]`` dicts, ``apply_`` the filter's own list.
    """

    mode = None

    def __init__(self, **hyperparameters):
        self.tensor_states = []
        self._configure(**hyperparameters)

    def apply_(self, grads: Sequence[torch.Tensor]) -> None:
        """Filter ``grads`` (a list of tensors, the same positions every call) in place."""
        grads = list(grads)
        name = type(self).__name__
        if not grads:
            raise ValueError(f"{name}.apply_: got no tensors")
        for i, g in enumerate(grads):
            if not isinstance(g, torch.Tensor):
                raise TypeError(f"{name}.apply_: item {i} is a {type(g).__name__}, not a tensor")
        if self.tensor_states and len(grads) != len(self.tensor_states):
            raise ValueError(f"{name}.apply_: got {len(grads)} tensors, but earlier calls had "
                             f"{len(self.tensor_states)}; a filter follows one fixed list of tensors")
        states = self.tensor_states or [{} for _ in grads]
        self.filter_(grads, states)
        self.tensor_states = states

    def filter_(self, grads: List[torch.Tensor], states: List[Dict[str, Any]]) -> None:
        """Filter ``grads`` in place, ``states[i]`` holding the state of ``grads[i]`` (updated in place)."""
        raise NotImplementedError

    def hyperparameters(self) -> Dict[str, float]:
        """``{name: value}``: the filter's own (``alpha`` or ``window``), then ``lamb``."""
        return {**self._own_hyperparameters(), "lamb": self.lamb}

    def _own_hyperparameters(self):
        raise NotImplementedError

    def state_dict(self) -> Dict[str, Any]:
        """A snapshot (tensors cloned) of the hyperparameters and the per-position state."""
        return {"hyperparameters": self.hyperparameters(),
                "tensor_states": [_clone_state(s) for s in self.tensor_states]}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Restore hyperparameters and state from :meth:`state_dict`; filtering continues exactly."""
        missing = {"hyperparameters", "tensor_states"} - set(state_dict)
        if missing:
            raise ValueError(f"{type(self).__name__}.load_state_dict: missing keys {sorted(missing)}")
        self._configure(**state_dict["hyperparameters"])
        self.tensor_states = [_clone_state(s) for s in state_dict["tensor_states"]]

    def _configure(self, lamb, **own):
        """Check and set the hyperparameters: the filter's own first (:meth:`_configure_own`), then ``lamb``."""
        self._configure_own(**own)
        self.lamb = _check_real("lamb", lamb, type(self).__name__)

    def _configure_own(self, **own):
        raise NotImplementedError

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters().items())
        return f"{type(self).__name__}({args})"


class GrokfastEMA(_GrokfastFilter):
    """Grokfast EMA filter: ``ema = alpha * ema + (1 - alpha) * g`` then ``g += lamb * ema``.

    The EMA of each tensor starts at its first gradient. Defaults are those of the Grokfast
    paper's code (alpha 0.98, lamb 2.0). A NaN/Inf gradient enters the EMA and stays there;
    :class:`Grokfast` guards against that with its ``nonfinite`` policy. Example: see the module docstring.
    """

    mode = "ema"

    def __init__(self, alpha: float = 0.98, lamb: float = 2.0):
        super().__init__(alpha=alpha, lamb=lamb)

    def _configure_own(self, alpha):
        self.alpha = _check_real("alpha", alpha, type(self).__name__)
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"{type(self).__name__}: alpha must be in [0, 1], got {alpha}")

    def _own_hyperparameters(self):
        return {"alpha": self.alpha}

    def filter_(self, grads, states):
        initialized = ["ema" in s for s in states]
        ema = [s["ema"] if seen else torch.empty_like(g, memory_format=torch.contiguous_format)
               for g, s, seen in zip(grads, states, initialized)]
        ops.grokfast_ema_(grads, ema, initialized, self.alpha, self.lamb)
        # New buffers join the state only once the op has accepted every argument.
        for s, e in zip(states, ema):
            s["ema"] = e


class GrokfastMA(_GrokfastFilter):
    """Grokfast MA filter: once ``window`` gradients are stored, ``g += lamb * mean(last window)``.

    Before that the gradient is left unchanged. Each tensor keeps a ring buffer of shape
    ``(window, *shape)`` and a running sum, so a step costs O(numel) whatever the window (the sum
    is re-summed exactly every ``window`` steps, which bounds its rounding drift). Defaults are
    those of the Grokfast paper's code (window 100, lamb 5.0). A NaN/Inf gradient makes the
    output non-finite while it is in the window. Example: see the module docstring.
    """

    mode = "ma"

    def __init__(self, window: int = 100, lamb: float = 5.0):
        super().__init__(window=window, lamb=lamb)

    def _configure_own(self, window):
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"{type(self).__name__}: window must be an int >= 1, got {window!r}")
        self.window = window

    def _own_hyperparameters(self):
        return {"window": self.window}

    def filter_(self, grads, states):
        seen = ["window" in s for s in states]
        # The op reads a window row only after writing it: no need to zero a (window x numel) buffer.
        windows = [s["window"] if old else g.new_empty((self.window, *g.shape))
                   for g, s, old in zip(grads, states, seen)]
        sums = [s["sum"] if old else g.new_zeros(g.shape) for g, s, old in zip(grads, states, seen)]
        counts = [s["count"] if old else 0 for s, old in zip(states, seen)]
        ops.grokfast_ma_(grads, windows, sums, counts, self.lamb)
        # New buffers and counts are stored only once the op has accepted every argument.
        for s, window, running_sum, count in zip(states, windows, sums, counts):
            s.update(window=window, sum=running_sum, count=count + 1)


MODES = ("ema", "ma")
DEFAULT_LAMB = {"ema": 2.0, "ma": 5.0}


class Grokfast(GradientTransformOptimizer):
    """Grokfast around any optimizer: filter every gradient, then let the base optimizer step.

    Args:
        base_optimizer: a ``torch.optim.Optimizer`` built on the model's parameters; its
            ``param_groups`` are shared, so LR schedulers act on it directly.
        mode: ``"ema"`` (:class:`GrokfastEMA`) or ``"ma"`` (:class:`GrokfastMA`).
        alpha: EMA momentum (mode ``"ema"`` only), in [0, 1].
        window: number of gradients averaged (mode ``"ma"`` only), >= 1.
        lamb: amplification; ``None`` takes the mode's default from the paper's code (2.0 for
            ``"ema"``, 5.0 for ``"ma"``).
        nonfinite, param_names: see :class:`neuralgrok.optim.base.GradientTransformOptimizer`. The
            check runs before filtering, so a NaN/Inf gradient never reaches the filter state.

    The filter state lives in ``self.state[p]`` per parameter (``"ema"``; or ``"window"``,
    ``"sum"``, ``"count"``) and is in ``state_dict()``. A parameter whose ``grad`` is ``None`` is
    skipped and its filter does not advance. All parameters with a gradient are filtered by one
    C++ call.

    Example::

        opt = Grokfast(torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.005), mode="ema")
        loss.backward()
        opt.step(); opt.zero_grad()
    """

    def __init__(self, base_optimizer, mode="ema", *, alpha=0.98, window=100, lamb=None, nonfinite="raise",
                 param_names=None):
        super().__init__(base_optimizer, nonfinite=nonfinite, param_names=param_names)
        self.filter = _make_filter(mode, alpha=alpha, window=window, lamb=lamb)

    @property
    def mode(self) -> str:
        """``"ema"`` or ``"ma"``."""
        return self.filter.mode

    def transform_(self, params: List[torch.Tensor]) -> None:
        self.filter.filter_([p.grad for p in params], [self.state[p] for p in params])

    def extra_state_dict(self) -> Dict[str, Any]:
        return {**super().extra_state_dict(), "mode": self.mode, "filter": self.filter.hyperparameters()}

    def load_extra_state_dict(self, state: Dict[str, Any]) -> None:
        super().load_extra_state_dict(state)
        self.filter._configure(**state["filter"])

    def extra_state_problems(self, state: Any) -> List[str]:
        problems = super().extra_state_problems(state)
        if problems:
            return problems
        if state["mode"] != self.mode:
            return [f"the state is for mode={state['mode']!r}, this optimizer has mode={self.mode!r}"]
        try:
            _make_filter(self.mode, **{"alpha": 0.98, "window": 100, "lamb": None, **state["filter"]})
        except (TypeError, ValueError) as error:
            return [f"its filter hyperparameters {state['filter']!r} are invalid: {error}"]
        return []

    def param_state_problems(self, index: int, param: torch.Tensor, state: Dict[Any, Any],
                             extra: Dict[str, Any]) -> List[str]:
        shape = tuple(param.shape)
        if self.mode == "ema":
            expected = {"ema": shape}
        else:
            expected = {"window": (extra["filter"]["window"], *shape), "sum": shape, "count": None}
        if set(state) != set(expected):
            return [f"parameter {index} has filter state {sorted(state)} where mode={self.mode!r} keeps "
                    f"{sorted(expected)}"]
        problems = []
        for key, want in expected.items():
            value = state[key]
            if want is None:
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    problems.append(f"parameter {index}'s {key} is {value!r}, not a count")
            elif not isinstance(value, torch.Tensor) or tuple(value.shape) != want:
                got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
                problems.append(f"parameter {index}'s {key} has shape {got} where {want} is due (another model?)")
        return problems

    def __repr__(self):
        return f"Grokfast({self.base_optimizer!r}, {self.filter!r})"


def _make_filter(mode, *, alpha, window, lamb):
    if mode not in MODES:
        raise ValueError(f"Grokfast: mode={mode!r}; choose one of {MODES}")
    lamb = DEFAULT_LAMB[mode] if lamb is None else lamb
    return GrokfastEMA(alpha=alpha, lamb=lamb) if mode == "ema" else GrokfastMA(window=window, lamb=lamb)


def _check_real(name, value, owner):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{owner}: {name} must be a finite real number, got {value!r}")
    return float(value)


def _clone_state(state):
    return {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in state.items()}
