"""neuralgrok: study and accelerate grokking, with a LibTorch core.

Importing the package loads the C++ operators (their typed surface: :mod:`neuralgrok.ops`). The layout
follows one run's data one way (docs/architecture.md):

- :mod:`neuralgrok.ops`: every C++ op, typed; :mod:`neuralgrok.optim.reference`: their pure-PyTorch references.
- :mod:`neuralgrok.optim`: the methods as ``torch.optim`` optimizers wrapping a base optimizer
  (NeuralGrok and its amplifier, Grokfast, the controls).
- :mod:`neuralgrok.measures`: progress measures (AGE, MED, weight norm, Fourier) and their analysis.
- :mod:`neuralgrok.experiments`: tasks, models, the run config, the method/task/model registries, the
  training loop, run records, sweeps, results, plots and the ``neuralgrok`` command.
- :mod:`neuralgrok.storage`: crash-safe files and checksummed checkpoints.
"""
__version__ = "0.1.0"  # first, so that submodules can read it while the package loads

from . import measures, ops
from ._extension import BUILD_INFO
from .devices import check_device
from .measures import age, gradient_age, med, weight_age, weight_norm
from .optim import (ClipGradNorm, GradientTransformOptimizer, Grokfast, GrokfastEMA, GrokfastMA, NeuralAmplifier,
                    NeuralGrok, NonFiniteGradientError, Normalize)

__all__ = [
    # the methods: torch.optim optimizers wrapping a base optimizer (neuralgrok.optim)
    "NeuralGrok", "NeuralAmplifier", "Grokfast", "GrokfastEMA", "GrokfastMA", "Normalize", "ClipGradNorm",
    "GradientTransformOptimizer", "NonFiniteGradientError",
    # measures (neuralgrok.measures; the module holds them all)
    "age", "med", "weight_norm", "gradient_age", "weight_age", "measures",
    # the C++ ops, typed (neuralgrok.ops), and what the extension was built against
    "ops", "BUILD_INFO", "check_device", "__version__",
]
