"""Per-tensor gradient normalisation, ``g' = c * g / ||g||``: the control of NeuralGrok (arXiv 2504.17243).

The paper's Fig. 2 and 3 train on per-tensor normalised gradients without any amplifier; NeuralGrok
itself is this normalisation after a learned per-entry reweighting (plus a global clip). Comparing the
two tells what the learned amplifier adds.
"""
import math
from typing import List, Optional

import torch

from .base import GradientTransformOptimizer


class Normalize(GradientTransformOptimizer):
    """Train on ``g' = rescale * g / ||g||_2`` per parameter tensor, optionally clipped globally.

    An all-zero gradient stays zero. With ``clip_grad_norm``, the normalised gradients of all
    tensors are then clipped to that global norm (as NeuralGrok clips its amplified gradients); K
    tensors of norm ``rescale`` have a global norm ``rescale * sqrt(K)``.

    Args:
        base_optimizer: any ``torch.optim.Optimizer``.
        rescale: c, the norm of every normalised tensor (a finite number > 0).
        clip_grad_norm: global norm to clip to, or ``None`` (the paper's Fig. 2: no clip).
        nonfinite, param_names: see :class:`~neuralgrok.optim.base.GradientTransformOptimizer`.

    Example::

        opt = Normalize(torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-3), rescale=0.5)
    """

    def __init__(self, base_optimizer, rescale: float = 1.0, clip_grad_norm: Optional[float] = None, *,
                 nonfinite: str = "raise", param_names=None):
        super().__init__(base_optimizer, nonfinite=nonfinite, param_names=param_names)
        if isinstance(rescale, bool) or not isinstance(rescale, (int, float)) or not (
                math.isfinite(rescale) and rescale > 0):
            raise ValueError(f"rescale must be a finite number > 0, got {rescale!r}")
        if clip_grad_norm is not None and not (math.isfinite(clip_grad_norm) and clip_grad_norm > 0):
            raise ValueError(f"clip_grad_norm must be a finite number > 0 or None, got {clip_grad_norm!r}")
        self.rescale = float(rescale)
        self.clip_grad_norm = clip_grad_norm

    @torch.no_grad()
    def transform_(self, params: List[torch.Tensor]) -> None:
        for p in params:
            norm = torch.linalg.vector_norm(p.grad)
            # c / ||g|| as a tensor (no host sync), 0 for an all-zero tensor (whose gradient stays zero).
            p.grad.mul_(torch.where(norm > 0, self.rescale / norm.clamp_min(torch.finfo(norm.dtype).tiny),
                                    torch.zeros_like(norm)))
        if self.clip_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, self.clip_grad_norm)
