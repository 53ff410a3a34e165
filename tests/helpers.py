"""Helpers several test files share (the tests' directory is on sys.path: pytest's rootdir-relative import)."""
from typing import Optional, Tuple

import torch
from torch import nn


def cpu_grad_scaler() -> Optional[object]:
    """torch.amp.GradScaler("cpu") where this torch has one (2.3+); None otherwise."""
    scaler_class = getattr(getattr(torch, "amp", None), "GradScaler", None)
    if scaler_class is None:
        return None
    try:
        return scaler_class("cpu", init_scale=2.0 ** 12)
    except (TypeError, RuntimeError):
        return None


def backward_and_step(opt: torch.optim.Optimizer, loss: torch.Tensor, scaler: Optional[object] = None) -> None:
    """``loss.backward(); opt.step()``, or with a GradScaler ``scaler``: scaled backward, ``scaler.step(opt)``
    (which unscales the gradients first) and ``scaler.update()``."""
    if scaler is None:
        loss.backward()
        opt.step()
    else:
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()


def classification_problem(n: int, features: int, hidden: int, classes: int, dtype: torch.dtype = torch.float64,
                           seed: int = 0) -> Tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """``(model, x, y)``: a ReLU MLP ``features -> hidden -> classes`` of ``dtype`` (initialised after
    ``torch.manual_seed(seed)``) and ``n`` random inputs ``(n, features)`` with labels ``(n,)`` drawn from a
    generator of their own."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, features, generator=generator, dtype=dtype)
    y = torch.randint(0, classes, (n,), generator=generator)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, classes)).to(dtype)
    return model, x, y
