"""The methods, each a real ``torch.optim.Optimizer`` that transforms the gradients of a base optimizer
and lets it step (:class:`GradientTransformOptimizer`), with pure-PyTorch references beside the fast
paths (:mod:`neuralgrok.optim.reference`).

- :class:`NeuralGrok` (``neuralgrok.py``) and its :class:`NeuralAmplifier` (``amplifier.py``), arXiv 2504.17243;
- :class:`Grokfast` with its filters :class:`GrokfastEMA` and :class:`GrokfastMA` (``grokfast.py``), arXiv 2405.20233;
- the controls: :class:`Normalize` (per-tensor normalisation, ``normalize.py``) and :class:`ClipGradNorm`
  (the global clip alone, ``clip.py``).
"""
from .amplifier import NeuralAmplifier
from .base import GradientTransformOptimizer, NonFiniteGradientError
from .clip import ClipGradNorm
from .grokfast import Grokfast, GrokfastEMA, GrokfastMA
from .neuralgrok import NeuralGrok
from .normalize import Normalize

__all__ = ["ClipGradNorm", "GradientTransformOptimizer", "Grokfast", "GrokfastEMA", "GrokfastMA", "NeuralAmplifier",
           "NeuralGrok", "NonFiniteGradientError", "Normalize"]
