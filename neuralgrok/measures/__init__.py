"""Progress measures for grokking (moved from neuralgrok/measures.py; split by family in the next commit)."""
from .fourier import *  # noqa: F401,F403
from .fourier import _average_ranks, _spearman  # noqa: F401
