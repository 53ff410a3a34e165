"""neuralgrok: study and accelerate grokking, with a LibTorch core.

Importing the package loads the C++ operators (``torch.ops.neuralgrok.*``).
"""
__version__ = "0.1.0"  # first, so that submodules can read it while the package loads

from . import measures
from ._extension import BUILD_INFO
from .optim.amplifier import NeuralAmplifier
from .optim.grokfast import Grokfast, GrokfastEMA, GrokfastMA
from .measures.age import age
from .optim.neuralgrok import NeuralGrok

__all__ = ["BUILD_INFO", "Grokfast", "GrokfastEMA", "GrokfastMA", "NeuralAmplifier", "NeuralGrok", "age",
           "measures", "__version__"]
