"""NeuralGrok's neural amplifier (arXiv 2504.17243), computed by the C++ op :func:`neuralgrok.ops.amplify`."""
import copy
import math
import numbers
from typing import Any, Dict, List, Sequence, Tuple

import torch
from torch import nn

from .. import ops

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "silu": nn.SiLU}
METHODS = ("auto", "piecewise", "dense")


class NeuralAmplifier(nn.Module):
    """The neural amplifier G_phi of NeuralGrok: reweights the entries of a gradient tensor.

    An MLP on one scalar, ``Linear(1, H1), act, [Linear(Hk, Hk+1), act]*, Linear(H_last, 1)``,
    scores every entry g_i of a tensor; the scores are softmax-normalised over that tensor and the
    reweighted gradient is rescaled to norm ``rescale``::

        s_i = MLP(g_i),   p = softmax(s),   g' = rescale * (p * g) / ||p * g||_2

    An all-zero tensor maps to zeros (with zero gradients), an empty tensor to an empty one.
    ``self.mlp`` is an ``nn.Sequential`` with its Linear layers at indices 0, 2, 4, ..., so state
    dicts have keys ``mlp.0.weight``, ``mlp.0.bias``, ``mlp.2.weight``, ... (those of the older
    prototypes on the official repository's ``main`` branch); :meth:`load_state_dict` also takes the
    official ``neuralgrad`` branch's keys (``network.0.weight``, ...), so its checkpoints load as they are.

    For ReLU the C++ op ``neuralgrok::amplify`` does the work and its C++ backward gives the
    gradients w.r.t. the MLP's parameters and the input gradients. Its default, exact fast path
    uses that a ReLU MLP on a scalar is piecewise linear: it compiles the MLP into breakpoints with
    one slope and intercept per piece over the range of the gradients seen, then scores each entry
    on its piece, found from a uniform grid over the breakpoints (and the backward needs two sums
    per piece). It agrees with the dense
    computation to float rounding; at an entry exactly on a breakpoint the gradient is the
    one-sided one from the right. It falls back to the dense path when the table would have more
    than ``max(256, N / 4)`` pieces for N entries in all (or 65536). Other activations run a
    dense pure-PyTorch path.

    Args:
        hidden_sizes: widths of the hidden layers: ``(128, 128)`` (default) for NeuralGrok's two-operand
            tasks, ``(1152,)`` for a*c+b*d-e mod 7, as in the official code.
        rescale: the coefficient c, a finite number > 0 (1.0 in the reference code).
        activation: one of ``"relu"`` (the paper's), ``"gelu"``, ``"tanh"``, ``"sigmoid"``, ``"silu"``.

    Example::

        amplifier = NeuralAmplifier(hidden_sizes=(128, 128))
        loss.backward()
        params = [p for p in model.parameters() if p.grad is not None]
        with torch.no_grad():
            for p, g in zip(params, amplifier.amplify([p.grad for p in params])):
                p.grad.copy_(g)
    """

    def __init__(self, hidden_sizes=(128, 128), rescale=1.0, activation="relu"):
        super().__init__()
        self.hidden_sizes = _checked_hidden_sizes(hidden_sizes)
        self.rescale = _checked_rescale(rescale)
        if not isinstance(activation, str):
            raise TypeError(f"activation must be a string, one of {sorted(ACTIVATIONS)}; got {type(activation).__name__}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation={activation!r}; choose one of {sorted(ACTIVATIONS)}")
        self.activation = activation
        widths = (1, *self.hidden_sizes, 1)
        layers = []
        for index, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:])):
            if index > 0:
                layers.append(ACTIVATIONS[activation]())
            layers.append(nn.Linear(n_in, n_out))
        self.mlp = nn.Sequential(*layers)

    def forward(self, grad: torch.Tensor) -> torch.Tensor:
        """G applied to one tensor of any shape; returns a tensor of the same shape."""
        if not isinstance(grad, torch.Tensor):
            raise TypeError(f"NeuralAmplifier takes a tensor, got {type(grad).__name__}; use amplify() for a list")
        return self.amplify([grad])[0]

    def amplify(self, grads: Sequence[torch.Tensor], *, method: str = "auto") -> List[torch.Tensor]:
        """G applied to each tensor of ``grads`` (softmax over each tensor's own entries), in one op call.

        Args:
            grads: a list of tensors, of the MLP's dtype.
            method: ``"piecewise"`` (the exact fast path, ReLU only), ``"dense"`` (the MLP on every
                entry), or ``"auto"``: piecewise for ReLU, dense otherwise.

        Returns:
            A list of tensors shaped like ``grads``, differentiable w.r.t. the MLP's parameters and
            the grads.
        """
        if isinstance(grads, torch.Tensor):
            raise TypeError("amplify() takes a list of tensors; call the module itself on a single tensor")
        grads = list(grads)
        for index, grad in enumerate(grads):
            if not isinstance(grad, torch.Tensor):
                raise TypeError(f"amplify(): grads[{index}] is a {type(grad).__name__}, not a tensor")
        if method not in METHODS:
            raise ValueError(f"method={method!r}; choose one of {METHODS}")
        if method == "piecewise" and self.activation != "relu":
            raise ValueError(f"method='piecewise' needs activation='relu' (this amplifier uses {self.activation!r})")
        if not grads:
            return []
        if self.activation != "relu":
            return [self._amplify_in_pytorch(grad) for grad in grads]
        layers = [module for module in self.mlp if isinstance(module, nn.Linear)]
        return ops.amplify(grads, [layer.weight for layer in layers], [layer.bias for layer in layers], self.rescale,
                           method != "dense")

    def _amplify_in_pytorch(self, grad):
        """The dense path for activations the C++ op does not implement; autograd differentiates it."""
        g = grad.reshape(-1)
        if g.numel() == 0:
            return grad * 0
        scores = self.mlp(g.reshape(-1, 1)).reshape(-1)
        weighted = torch.exp(scores - scores.max()) * g  # p * g up to the softmax denominator, which cancels
        norm = torch.linalg.vector_norm(weighted)
        if norm == 0:  # an all-zero gradient: zeros, with zero gradients (as the C++ op)
            return (weighted * 0).view_as(grad)
        return (self.rescale / norm * weighted).view_as(grad)

    @torch.no_grad()
    def response(self, values: Any) -> Dict[str, torch.Tensor]:
        """What the amplifier does to one gradient entry of value ``g``, for each of ``values`` (a 1-d
        tensor of signed gradient values, e.g. ``±logspace(-8, -1)``): ``{"score": s(g), "weight":
        exp(s(g) - s(0))}``. ``weight`` is how much more an entry of value g counts in its tensor's softmax
        than a zero entry does; the amplified entry is ``c * p * g / ||p * g||`` with ``p`` proportional
        to it, so its effective scale ``g' / g`` within a tensor is proportional to ``weight`` too.
        A uniform weight (an amplifier near its initialisation) reduces G to ``c * g / ||g||``."""
        values = torch.as_tensor(values, dtype=self.mlp[0].weight.dtype, device=self.mlp[0].weight.device)
        scores = self.mlp(torch.cat([values.reshape(-1), values.new_zeros(1)]).reshape(-1, 1)).reshape(-1)
        return {"score": scores[:-1].view_as(values), "weight": torch.exp(scores[:-1] - scores[-1]).view_as(values)}

    def spread(self, low: float = 1e-9, high: float = 0.1, points: int = 300) -> float:
        """How far the amplifier is from plain normalisation: ``max w / min w`` of :meth:`response`'s weight
        over gradient values ``±|g|`` with ``|g|`` log-spaced from ``low`` to ``high`` (``points`` of each
        sign), computed in float64. 1 means every entry in that range counts alike, so that the amplified
        tensor is ``c * g / ||g||``. The defaults cover the entries of NeuralGrok's Table 1 runs (at
        initialisation the batch gradient's median |g| is about 3e-4, its largest about 0.1)."""
        if not (0 < low < high and math.isfinite(high)) or points < 2:
            raise ValueError(f"spread needs 0 < low < high finite and points >= 2; got low={low}, high={high}, "
                             f"points={points}")
        magnitudes = torch.logspace(math.log10(low), math.log10(high), points, dtype=torch.float64)
        with torch.no_grad():
            amplifier = copy.deepcopy(self).to(dtype=torch.float64, device="cpu")
            weights = amplifier.response(torch.cat([magnitudes, -magnitudes]))["weight"]
        return float(weights.max() / weights.min())

    def load_state_dict(self, state_dict: Dict[str, Any], strict: bool = True, **kwargs: Any) -> Any:
        """``nn.Module.load_state_dict``, also for the official ``neuralgrad`` code's keys ``network.N.*``."""
        return super().load_state_dict(canonical_keys(state_dict), strict=strict, **kwargs)

    @staticmethod
    def hidden_sizes_of(state_dict: Dict[str, Any]) -> Tuple[int, ...]:
        """The ``hidden_sizes`` of the amplifier whose :meth:`state_dict` this is (also with the official
        code's keys); ValueError naming what is wrong if it is no amplifier's state dict."""
        state = canonical_keys(state_dict)
        indices = sorted(int(key.split(".")[1]) for key in state
                         if key.startswith("mlp.") and key.endswith(".weight") and key.split(".")[1].isdigit())
        weights = [state[f"mlp.{i}.weight"] for i in indices]
        shapes = [tuple(w.shape) if isinstance(w, torch.Tensor) else None for w in weights]
        chain = len(shapes) >= 2 and all(s is not None and len(s) == 2 for s in shapes) and shapes[0][1] == 1 \
            and shapes[-1][0] == 1 and all(a[0] == b[1] for a, b in zip(shapes, shapes[1:]))
        if not chain or set(state) != {f"mlp.{i}.{kind}" for i in indices for kind in ("weight", "bias")}:
            raise ValueError(f"not a NeuralAmplifier state dict (keys {sorted(state)[:6]}, weight shapes {shapes})")
        return tuple(shape[0] for shape in shapes[:-1])

    def extra_repr(self) -> str:
        return f"hidden_sizes={self.hidden_sizes}, rescale={self.rescale}, activation={self.activation!r}"


def canonical_keys(state_dict: Dict[str, Any]) -> Dict[str, Any]:
    """``state_dict`` with the official ``neuralgrad`` code's ``network.N.*`` keys renamed ``mlp.N.*``."""
    return {("mlp." + key[len("network."):] if key.startswith("network.") else key): value
            for key, value in state_dict.items()}


def _checked_hidden_sizes(hidden_sizes):
    if isinstance(hidden_sizes, (str, bytes)) or not hasattr(hidden_sizes, "__iter__"):
        raise TypeError(f"hidden_sizes must be a sequence of positive ints such as (32,) or (512, 512); "
                        f"got {hidden_sizes!r}")
    sizes = tuple(hidden_sizes)
    for size in sizes:
        if isinstance(size, bool) or not isinstance(size, numbers.Integral):
            raise TypeError(f"hidden_sizes must hold ints; got {size!r} in {sizes!r}")
        if size < 1:
            raise ValueError(f"hidden_sizes must be >= 1; got {size} in {sizes!r}")
    return tuple(int(size) for size in sizes)


def _checked_rescale(rescale):
    if isinstance(rescale, bool) or not isinstance(rescale, numbers.Real):
        raise TypeError(f"rescale must be a real number; got {type(rescale).__name__}")
    if not (math.isfinite(rescale) and rescale > 0):
        raise ValueError(f"rescale must be finite and > 0; got {rescale}")
    return float(rescale)
