"""neuralgrok: study and accelerate grokking, with a LibTorch core.

Importing the package loads the C++ operators (``torch.ops.neuralgrok.*``).
"""
from ._extension import BUILD_INFO
from .grokfast import Grokfast, GrokfastEMA, GrokfastMA
from .metrics import age

__version__ = "0.1.0"

__all__ = ["BUILD_INFO", "Grokfast", "GrokfastEMA", "GrokfastMA", "age", "__version__"]
