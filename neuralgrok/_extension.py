"""Loads the C++ operator library ``neuralgrok._C`` after checking it matches the running torch.

The build writes ``_build_info.json`` beside the module; it is read before the shared library is
loaded, so a torch upgrade gives a clear ImportError rather than an undefined-symbol error.
"""
import json
from pathlib import Path

import torch

REINSTALL_HINT = (
    "reinstall with `pip install --no-build-isolation --force-reinstall --no-deps .` "
    "from the neuralgrok source tree (or `make install` there)"
)


def _read_build_info():
    path = Path(__file__).with_name("_build_info.json")
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ImportError(f"neuralgrok's C++ extension has not been built ({path.name} is missing); {REINSTALL_HINT}") from None


def _check_torch(info):
    abi = bool(torch._C._GLIBCXX_USE_CXX11_ABI)
    if info["torch_version"] != torch.__version__ or info["cxx11_abi"] != abi:
        raise ImportError(
            f"neuralgrok was built for torch {info['torch_version']} (C++11 ABI {int(info['cxx11_abi'])}), "
            f"you have {torch.__version__} (C++11 ABI {int(abi)}); {REINSTALL_HINT}"
        )


BUILD_INFO = _read_build_info()
_check_torch(BUILD_INFO)

from . import _C  # noqa: E402,F401  (registers torch.ops.neuralgrok.*)
