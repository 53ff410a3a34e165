"""Cross-checks of the Grokfast filters against maintained third-party implementations on PyPI:
pytorch-optimizer's ``gradfilter_ema`` / ``gradfilter_ma`` and grokfast-pytorch's ``GrokFastAdamW``.

Each runs the same short training (same model, data and base optimizer) with their filter and with
ours (the C++ ops behind :class:`neuralgrok.Grokfast`) and compares the parameter trajectories step
by step. The packages are development extras (``pip install pytorch-optimizer grokfast-pytorch``);
each test skips where its package is absent (they need torch >= 2.1, so never on the 1.13 leg).

The only differences are rounding: their EMA is ``ema.lerp_(g, 1 - alpha)``, ours
``alpha * ema + (1 - alpha) * g``; their MA mean is ``sum(deque) / window`` summed afresh in the
gradients' dtype, ours a running sum re-summed exactly (float64) every ``window`` steps. In float64
the trajectories agree to ~1e-13 relative; in float32 to ~1e-5, where Adam's normalisation of
near-zero entries turns last-bit differences into somewhat larger ones.
"""
import pytest
import torch
from torch import nn

from neuralgrok import Grokfast

STEPS = 40
TOLERANCE = {torch.float64: dict(rtol=1e-10, atol=1e-12), torch.float32: dict(rtol=2e-4, atol=2e-5)}


def make_problem(dtype, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(96, 10, generator=generator, dtype=dtype)
    y = torch.randint(0, 5, (96,), generator=generator)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 5)).to(dtype)
    return model, x, y


def trajectory(dtype, make_optimizer, filter_gradients=None):
    """Parameters after every step of full-batch training: ``make_optimizer(model)`` steps, and
    ``filter_gradients(model, state) -> state`` (if given) runs between backward and step."""
    model, x, y = make_problem(dtype)
    optimizer = make_optimizer(model)
    state, snapshots, losses = None, [], []
    for _ in range(STEPS):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        if filter_gradients is not None:
            state = filter_gradients(model, state)
        optimizer.step()
        losses.append(loss.item())
        snapshots.append([p.detach().clone() for p in model.parameters()])
    return losses, snapshots


def assert_same_trajectory(ours, theirs, dtype):
    (our_losses, our_params), (their_losses, their_params) = ours, theirs
    assert their_losses[-1] < 0.9 * their_losses[0]  # the run trains
    for step, (a, b) in enumerate(zip(our_params, their_params)):
        for p, q in zip(a, b):
            torch.testing.assert_close(p, q, **TOLERANCE[dtype], msg=lambda m: f"step {step}: {m}")
    assert our_losses == pytest.approx(their_losses, rel=TOLERANCE[dtype]["rtol"])


def adamw(model):
    return torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("alpha,lamb", [(0.98, 2.0), (0.8, 5.0)])
def test_ema_matches_pytorch_optimizer(dtype, alpha, lamb):
    pytorch_optimizer = pytest.importorskip("pytorch_optimizer.optimizer.grokfast")
    theirs = trajectory(dtype, adamw,
                        lambda model, grads: pytorch_optimizer.gradfilter_ema(model, grads, alpha=alpha, lamb=lamb))
    ours = trajectory(dtype, lambda model: Grokfast(adamw(model), mode="ema", alpha=alpha, lamb=lamb))
    assert_same_trajectory(ours, theirs, dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("window,lamb", [(5, 5.0), (12, 2.0)])
def test_ma_matches_pytorch_optimizer(dtype, window, lamb):
    # filter_type="mean" with warmup: the gradient is left alone until `window` are stored, as ours.
    pytorch_optimizer = pytest.importorskip("pytorch_optimizer.optimizer.grokfast")
    theirs = trajectory(dtype, adamw, lambda model, grads: pytorch_optimizer.gradfilter_ma(
        model, grads, window_size=window, lamb=lamb, filter_type="mean", warmup=True))
    ours = trajectory(dtype, lambda model: Grokfast(adamw(model), mode="ma", window=window, lamb=lamb))
    assert_same_trajectory(ours, theirs, dtype)
    # The filter did act: without it the trajectory is another one.
    plain = trajectory(dtype, adamw)
    assert not torch.allclose(plain[1][-1][0], ours[1][-1][0], **TOLERANCE[dtype])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_ema_matches_grokfast_pytorch(dtype):
    # GrokFastAdamW(grokfast=True) filters inside its own Adam; the same Adam with its filter off,
    # wrapped in our Grokfast, must follow the same trajectory. (normalize_lr would divide the lr by
    # 1 + lamb only when its filter is on, so it is off in both.)
    grokfast_pytorch = pytest.importorskip("grokfast_pytorch")

    def theirs_adam(model, grokfast):
        return grokfast_pytorch.GrokFastAdamW(model.parameters(), lr=3e-3, grokfast=grokfast, grokfast_alpha=0.9,
                                              grokfast_lamb=3.0, normalize_lr=False)

    theirs = trajectory(dtype, lambda model: theirs_adam(model, grokfast=True))
    ours = trajectory(dtype, lambda model: Grokfast(theirs_adam(model, grokfast=False), mode="ema", alpha=0.9, lamb=3.0))
    assert_same_trajectory(ours, theirs, dtype)
    plain = trajectory(dtype, lambda model: theirs_adam(model, grokfast=False))
    assert not torch.allclose(plain[1][-1][0], ours[1][-1][0], **TOLERANCE[dtype])
