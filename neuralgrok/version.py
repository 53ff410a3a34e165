"""The package version and what its C++ core was built against, for ``neuralgrok --version`` and
every run's ``summary.json``."""
from typing import Any, Dict
import torch

from . import __version__
from ._extension import BUILD_INFO


def build_info() -> Dict[str, Any]:
    """``{"neuralgrok_version", "torch_version" (running), "extension": the build's _build_info.json}``."""
    return {"neuralgrok_version": __version__, "torch_version": torch.__version__, "extension": dict(BUILD_INFO)}


def version_text() -> str:
    """One line: the package version, the running torch and what ``neuralgrok._C`` was built against."""
    info = BUILD_INFO
    return (f"neuralgrok {__version__} (torch {torch.__version__}; built against torch {info['torch_version']}, "
            f"C++11 ABI {int(info['cxx11_abi'])}, {info['build_type']} build, {info['compiler']})")
