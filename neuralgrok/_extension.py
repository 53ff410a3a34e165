"""Loads the C++ operator library ``neuralgrok._C`` after checking it matches the running torch.

The build writes ``_build_info.json`` beside the module; it is read before the shared library is
loaded, so a torch upgrade gives a clear ImportError rather than an undefined-symbol error.

Every op has a CPU kernel (the fast path) and a device-generic implementation in ATen ops that
CUDA and every other backend dispatch to (see csrc/README.md); :mod:`neuralgrok.ops` is their typed
Python surface. :func:`generic_kernels` runs the
generic one on CPU tensors too, which is how the tests check it on a machine without a GPU; the
environment variable ``NEURALGROK_GENERIC_KERNELS=1`` does so for a whole process.
"""
from typing import Dict, Iterator
import contextlib
import json
import os
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

from . import _C  # noqa: E402  (registers torch.ops.neuralgrok.*)

GENERIC_KERNELS_ENV = "NEURALGROK_GENERIC_KERNELS"


@contextlib.contextmanager
def generic_kernels(enabled: bool = True) -> Iterator[None]:
    """Within the block, CPU tensors run each op's device-generic implementation (the one CUDA and
    other backends use) instead of its CPU kernel: same dispatcher path, checks and autograd.

    Process-wide, not thread-local: a testing and debugging aid.
    """
    previous = _C._set_generic_on_cpu(bool(enabled))
    try:
        yield
    finally:
        _C._set_generic_on_cpu(previous)


def generic_kernels_enabled() -> bool:
    """Whether CPU tensors currently run the device-generic implementations (see :func:`generic_kernels`)."""
    return _C._generic_on_cpu()


def simd_kernels() -> Dict[str, str]:
    """Which SIMD kernels the CPU kernels of ``age`` and ``amplify`` run: ``"avx2"`` (AVX2 + FMA, where the
    build and the CPU have them) or ``"baseline"``, as ``{"age": ..., "amplify": ...}``. Chosen once per
    process: AGE's AVX2 kernel unless ``NEURALGROK_AGE_KERNEL=baseline``; amplify's only with
    ``NEURALGROK_AMPLIFY_KERNEL=avx2`` (its exps are within 1 ulp of ``std::exp``, not equal, and amplify
    steers training: the default keeps a run the same on every CPU). See csrc/kernels/select.h."""
    return dict(_C._simd_kernels())


if os.environ.get(GENERIC_KERNELS_ENV, "0") not in ("", "0"):
    _C._set_generic_on_cpu(True)

