"""Checking a device before training on it: one clear error instead of a deep CUDA one. The one
device check of the package: :func:`check_device` and the runner's config validation
(:func:`neuralgrok.experiments.config.validate_config`) both ask :func:`unavailable_because`.

Every neuralgrok op runs on any device torch supports (a CPU kernel, and a device-generic one in
ATen ops for the rest), so a device is usable exactly when this torch can reach it.
"""
import os
from typing import Optional

import torch


def check_device(name: str) -> torch.device:
    """The ``torch.device`` for ``name`` (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``, ...).

    Raises ValueError, with one message that says what is missing and what to do, when ``name`` is
    not a device, when this torch was built without the device's backend, or when none (or not
    that index) is present (:func:`unavailable_because`). ``"meta"`` is refused too: it holds no
    values to train on.
    """
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"device {name!r} is not a torch device; use e.g. 'cpu', 'cuda' or 'cuda:0'") from None
    if device.type == "meta":
        raise ValueError("device 'meta' holds no values, so nothing can be trained on it; use 'cpu' or a GPU")
    reason = unavailable_because(device)
    if reason is not None:
        raise ValueError(f"device {name!r}: {reason}")
    return device


def unavailable_because(device: torch.device) -> Optional[str]:
    """Why this process cannot use ``device`` (a clause such as "this torch (2.13.0) supports CUDA but
    finds no GPU; use device 'cpu'"), or None if it can: the one device check, which
    :func:`check_device` and the runner's config validation share. The CPU is always usable."""
    if device.type == "cpu":
        return None
    if device.type == "cuda":
        return _cuda_unavailable_because(device)
    # torch.xpu, torch.backends.mps, a plugin's torch.<name>: the first with is_available() tells.
    modules = [getattr(torch, device.type, None), getattr(torch.backends, device.type, None)]
    backend = next((m for m in modules if callable(getattr(m, "is_available", None))), None)
    if backend is None or not backend.is_available():
        return f"this torch ({torch.__version__}) has no usable {device.type} device; use 'cpu'"
    count = getattr(backend, "device_count", None)
    if device.index is not None and count is not None and device.index >= count():
        return f"there are {count()} {device.type} devices (0..{count() - 1})"
    return None


def _cuda_unavailable_because(device: torch.device) -> Optional[str]:
    if torch.version.cuda is None and getattr(torch.version, "hip", None) is None:
        return (f"this torch ({torch.__version__}) was built without CUDA, so it cannot use a GPU; install a CUDA "
                "build of torch, or use device 'cpu'")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        hint = f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else ""
        return f"this torch ({torch.__version__}) supports CUDA but finds no GPU{hint}; use device 'cpu'"
    if device.index is not None and device.index >= count:
        return (f"only {count} CUDA device{'s' if count > 1 else ''} (cuda:0..cuda:{count - 1}) "
                f"{'are' if count > 1 else 'is'} visible")
    return None
