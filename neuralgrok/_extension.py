"""Loads the C++ operator library ``neuralgrok._C`` after checking it matches the running torch.

The build writes ``_build_info.json`` beside the module; it is read before the shared library is
loaded, so a torch upgrade gives a clear ImportError rather than an undefined-symbol error.

Every op has a CPU kernel (the fast path) and a device-generic implementation in ATen ops that
CUDA and every other backend dispatch to (see csrc/README.md). :func:`generic_kernels` runs the
generic one on CPU tensors too, which is how the tests check it on a machine without a GPU; the
environment variable ``NEURALGROK_GENERIC_KERNELS=1`` does so for a whole process.
"""
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
def generic_kernels(enabled=True):
    """Within the block, CPU tensors run each op's device-generic implementation (the one CUDA and
    other backends use) instead of its CPU kernel: same dispatcher path, checks and autograd.

    Process-wide, not thread-local: a testing and debugging aid.
    """
    previous = _C._set_generic_on_cpu(bool(enabled))
    try:
        yield
    finally:
        _C._set_generic_on_cpu(previous)


def generic_kernels_enabled():
    """Whether CPU tensors currently run the device-generic implementations (see :func:`generic_kernels`)."""
    return _C._generic_on_cpu()


if os.environ.get(GENERIC_KERNELS_ENV, "0") not in ("", "0"):
    _C._set_generic_on_cpu(True)


def _register_fake_kernels():
    """Python fake kernels, for the one op whose output sizes depend on values (torch 2.x only).

    Every other op has a C++ Meta kernel, which FakeTensor uses on every torch version.
    ``_relu_mlp_pieces`` returns a table whose length is only known after compiling the MLP, so its
    fake kernel gives the outputs a dynamic (unbacked) size: torch.compile can trace through it.
    """
    register = getattr(torch.library, "register_fake", None) or getattr(torch.library, "impl_abstract", None)
    get_ctx = getattr(torch.library, "get_ctx", None)
    if register is None or get_ctx is None:  # torch < 2.1: no fake tensors to serve
        return

    def relu_mlp_pieces_fake(weights, biases, lo, hi):
        # The C++ checks of the Meta kernels are not reachable from here; the real kernel checks.
        ctx = get_ctx()
        new_size = getattr(ctx, "new_dynamic_size", None) or ctx.create_unbacked_symint
        breakpoints = new_size()  # K - 1 breakpoints, K slopes and intercepts
        return tuple(weights[0].new_empty((n,), dtype=torch.float64) for n in (breakpoints, breakpoints + 1,
                                                                               breakpoints + 1))

    register("neuralgrok::_relu_mlp_pieces", relu_mlp_pieces_fake)


_register_fake_kernels()
