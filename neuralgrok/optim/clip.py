"""Global gradient-norm clipping and nothing else: the plainest control of NeuralGrok (arXiv 2504.17243),
which clips its amplified gradients to a global norm of 1.0. Training with the clip alone tells how much
of a difference comes from the clip rather than from the amplifier (``examples/wrap_adamw.py`` runs the
same ablation by hand).
"""
import math
from typing import Dict, List, Optional

import torch

from .base import GradientTransformOptimizer


class ClipGradNorm(GradientTransformOptimizer):
    """Train on ``g' = g * min(1, clip_grad_norm / ||g||_2)``, ``||g||_2`` the norm of all parameters'
    gradients together (``torch.nn.utils.clip_grad_norm_``); gradients within the norm pass unchanged.

    Args:
        base_optimizer: any ``torch.optim.Optimizer``.
        clip_grad_norm: the global norm (a finite number > 0), or ``None``: no clipping (the base
            optimizer alone, behind the non-finite gradient check).
        nonfinite, param_names: see :class:`~neuralgrok.optim.base.GradientTransformOptimizer`.

    Example (``neuralgrok run --method clip --clip-grad-norm 1.0 ...``)::

        opt = ClipGradNorm(torch.optim.AdamW(model.parameters(), lr=1e-3), clip_grad_norm=1.0)
    """

    def __init__(self, base_optimizer: torch.optim.Optimizer, clip_grad_norm: Optional[float] = 1.0, *,
                 nonfinite: str = "raise", param_names: Optional[Dict[torch.Tensor, str]] = None):
        super().__init__(base_optimizer, nonfinite=nonfinite, param_names=param_names)
        if clip_grad_norm is not None and (isinstance(clip_grad_norm, bool) or
                                           not isinstance(clip_grad_norm, (int, float)) or
                                           not (math.isfinite(clip_grad_norm) and clip_grad_norm > 0)):
            raise ValueError(f"clip_grad_norm must be a finite number > 0 or None, got {clip_grad_norm!r}")
        self.clip_grad_norm = clip_grad_norm

    @torch.no_grad()
    def transform_(self, params: List[torch.Tensor]) -> None:
        """Clip the gradients of ``params`` (all finite) to the global norm ``clip_grad_norm``, in place."""
        if self.clip_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, self.clip_grad_norm)
