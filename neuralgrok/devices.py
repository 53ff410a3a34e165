"""Checking a device name before training on it: one clear error instead of a deep CUDA one.

Every neuralgrok op runs on any device torch supports (a CPU kernel, and a device-generic one in
ATen ops for the rest), so a device is usable exactly when this torch can reach it.
"""
import os

import torch


def check_device(name):
    """The ``torch.device`` for ``name`` (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``, ...).

    Raises ValueError, with one message that says what is missing and what to do, when ``name`` is
    not a device, when this torch was built without the device's backend, or when none (or not
    that index) is present. ``"meta"`` is refused too: it holds no values to train on.
    """
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"device {name!r} is not a torch device; use e.g. 'cpu', 'cuda' or 'cuda:0'") from None
    if device.type == "cpu":
        return device
    if device.type == "meta":
        raise ValueError("device 'meta' holds no values, so nothing can be trained on it; use 'cpu' or a GPU")
    if device.type == "cuda":
        _check_cuda(name, device)
        return device
    # torch.xpu, torch.backends.mps, a plugin's torch.<name>: the first with is_available() tells.
    modules = [getattr(torch, device.type, None), getattr(torch.backends, device.type, None)]
    backend = next((m for m in modules if callable(getattr(m, "is_available", None))), None)
    if backend is None or not backend.is_available():
        raise ValueError(f"device {name!r}: this torch ({torch.__version__}) has no usable {device.type} device; "
                         "use 'cpu'")
    count = getattr(backend, "device_count", None)
    if device.index is not None and count is not None and device.index >= count():
        raise ValueError(f"device {name!r}: there are {count()} {device.type} devices (0..{count() - 1})")
    return device


def _check_cuda(name, device):
    if torch.version.cuda is None and getattr(torch.version, "hip", None) is None:
        raise ValueError(f"device {name!r}: this torch ({torch.__version__}) was built without CUDA, so it cannot "
                         "use a GPU; install a CUDA build of torch, or use device 'cpu'")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        hint = f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else ""
        raise ValueError(f"device {name!r}: this torch ({torch.__version__}) supports CUDA but finds no GPU{hint}; "
                         "use device 'cpu'")
    if device.index is not None and device.index >= count:
        raise ValueError(f"device {name!r}: only {count} CUDA device{'s' if count > 1 else ''} "
                         f"(cuda:0..cuda:{count - 1}) {'are' if count > 1 else 'is'} visible")
