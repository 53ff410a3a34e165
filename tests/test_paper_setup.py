"""The runner at NeuralGrok's official setup (../shared/papers.md, "Training"): a float64 comparison of
``neuralgrok run`` with a loop written here from that description, and the runner options the setup
needs (b >= 1, the int-truncated 49/1/50 split, per-epoch evaluation, the official warm-up, the
early stop, the control methods, amplifier snapshots, the AGE of the stepped gradients)."""
import math
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from neuralgrok import NeuralAmplifier
from neuralgrok.experiments.data import build_data
from neuralgrok.experiments.models import Transformer
from neuralgrok.optim.normalize import Normalize
from neuralgrok.experiments.tasks import inner_outer_test_split, number_of_examples
from neuralgrok.storage.checkpoints import load_weights
from neuralgrok.experiments.config import TrainConfig
from neuralgrok.experiments.loop import train
from neuralgrok.experiments.records import SNAPSHOTS

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from official_loop import OfficialLoop  # noqa: E402

# The official Table 1 setup for a+b mod 97 (papers.md), at a dozen steps, with the model's width 32
# instead of 128 so that the test's dense amplifier (every gradient entry through the (128, 128) MLP)
# stays a few seconds.
WIDTH = 32
OFFICIAL = dict(task="a+b", p=97, nonzero_b=True, layout="neuralgrok", train_fraction=0.5, seed=0,
                model="transformer", block="official", width=WIDTH, depth=2, heads=4, optimizer="adam",
                lr=1e-3, betas=(0.9, 0.98), weight_decay=1e-3, warmup_steps=10, warmup_from_zero=True,
                batch_size=512, method="neuralgrok", amplifier_hidden=(128, 128), amplifier_rescale=1.0,
                meta_every=4, meta_mode="paper", meta_lr=1e-4, meta_weight_decay=1e-3, virtual_lr=0.0,
                outer_fraction=0.01, clip_grad_norm=1.0, eval_every=0, checkpoint_every=0, threads=1)
TINY = dict(task="a+b", p=11, train_fraction=0.5, width=32, depth=1, steps=60, lr=3e-3, weight_decay=0.0,
            eval_every=10, threads=1)


def test_official_split_sizes():
    # a in [0, p), b in [1, p): 9,312 pairs, split 4,562 / 93 / 4,657 by int() truncation.
    assert number_of_examples("a+b", 97, nonzero_b=True) == 9312
    assert number_of_examples("a+b", 97) == 9409
    inner, outer, test = inner_outer_test_split("a+b", 97, 0, 0.49, 0.01, nonzero_b=True)
    assert (len(inner), len(outer), len(test)) == (4562, 93, 4657)
    assert int(inner.inputs[:, 1].min()) == 1
    data = build_data(TrainConfig(**dict(OFFICIAL, method="baseline")), with_outer=False)
    assert (len(data.train), len(data.test)) == (4656, 4656)


def _official_loop(steps):
    """NeuralGrok's training loop in the official code's structure (bench/official_loop.py, the
    comparison point of bench/paper_step.py), at the width of OFFICIAL."""
    torch.manual_seed(0)  # the runner draws the model, then the amplifier, from the seeded global RNG
    model = Transformer(97 + 2, 97, 4, width=WIDTH, depth=2, heads=4, block="official")
    mlp = NeuralAmplifier((128, 128)).mlp  # Linear(1, 128), ReLU, Linear(128, 128), ReLU, Linear(128, 1)
    inner, outer, _ = inner_outer_test_split("a+b", 97, 0, 0.49, 0.01, nonzero_b=True)
    loop = OfficialLoop(model, mlp, inner, outer)
    for _ in range(steps):
        loop.step()
    return model, mlp, loop.outer_losses


@pytest.mark.skipif(not hasattr(torch, "func"), reason="the loop uses torch.func.functional_call (torch 2.x)")
def test_runner_follows_the_official_loop_in_float64(monkeypatch):
    steps = 12
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        recorded = []
        from neuralgrok.optim import neuralgrok as optimizer_module
        original = optimizer_module.NeuralGrok._meta_step

        def recording_meta_step(self, params, inner_grads):
            closure = self.outer_closure
            self.outer_closure = lambda: _record(closure(), recorded)
            try:
                return original(self, params, inner_grads)
            finally:
                self.outer_closure = closure

        monkeypatch.setattr(optimizer_module.NeuralGrok, "_meta_step", recording_meta_step)
        result = train(TrainConfig(**dict(OFFICIAL, steps=steps)), progress=False)
        model, mlp, outer_losses = _official_loop(steps)
    finally:
        torch.set_default_dtype(before)
    assert result.optimizer.meta_steps == 3 and len(recorded) == 3
    for (name, a), b in zip(result.model.state_dict().items(), model.state_dict().values()):
        assert a.dtype == torch.float64
        if name.endswith("attention.in_proj_bias"):
            # The key bias has no effect on the function (a constant added to every key's logit), so
            # its true gradient is 0 and its float gradient noise (~1e-18). Adam with L2 weight decay
            # amplifies that noise: while |g| << eps, an entry theta moves by about -lr * wd / eps *
            # theta = -100 theta a step, so the two loops' key biases diverge from rounding noise
            # (to ~1e-4 by step 12) without changing any output. The query and value biases match.
            a, b = torch.cat([a[:WIDTH], a[2 * WIDTH:]]), torch.cat([b[:WIDTH], b[2 * WIDTH:]])
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    inputs = build_data(TrainConfig(**OFFICIAL), with_outer=True).test.inputs
    torch.testing.assert_close(result.model(inputs), model(inputs), rtol=1e-10, atol=1e-10)
    for a, b in zip(result.optimizer.amplifier.mlp.parameters(), mlp.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(torch.tensor(recorded), torch.tensor(outer_losses), rtol=1e-12, atol=0)
    # The amplifier moved, and the model took 12 updates, the first at lr 0.
    assert not torch.equal(mlp[0].weight, NeuralAmplifier((128, 128)).mlp[0].weight)


def _record(loss, into):
    into.append(loss.item())
    return loss


def test_per_epoch_evaluation_logs_every_epoch():
    # 61 training pairs of a+b mod 11 in batches of 16: 4 steps an epoch.
    result = train(TrainConfig(**dict(TINY, batch_size=16, eval_every=0, steps=20)), progress=False)
    assert [row["step"] for row in result.history] == [0, 4, 8, 12, 16, 20]


def test_official_warmup_runs_its_first_update_at_lr_zero():
    config = TrainConfig(**dict(TINY, optimizer="adam", steps=1, warmup_from_zero=True))
    torch.manual_seed(config.seed)
    first = train(config, progress=False).model
    untouched = train(TrainConfig(**dict(TINY, optimizer="adam", steps=0)), progress=False).model
    for a, b in zip(first.parameters(), untouched.parameters()):
        assert torch.equal(a, b)
    ahead = train(TrainConfig(**dict(TINY, optimizer="adam", steps=1)), progress=False).model
    assert not all(torch.equal(a, b) for a, b in zip(ahead.parameters(), untouched.parameters()))


def test_early_stop_after_the_accuracy_held(tmp_path):
    config = TrainConfig(**dict(TINY, steps=400, early_stop_accuracy=0.01, early_stop_evals=3))
    result = train(config, tmp_path / "run", progress=False)
    # Test accuracy >= 0.01 at the first three evaluations (steps 0, 10, 20): the run ends at step 20,
    # whose row is the last, with its weights (no update after it).
    assert [row["step"] for row in result.history] == [0, 10, 20]
    assert result.summary["stop_reason"] == "early_stop" and result.summary["steps_done"] == 20
    full = train(TrainConfig(**dict(TINY, steps=20)), progress=False)
    for a, b in zip(result.model.parameters(), full.model.parameters()):
        assert torch.equal(a, b)
    assert full.summary["stop_reason"] == "steps"


def test_normalize_matches_its_definition():
    torch.manual_seed(0)
    params = [nn.Parameter(torch.randn(4, 3, dtype=torch.float64)), nn.Parameter(torch.randn(5, dtype=torch.float64)),
              nn.Parameter(torch.randn(2, dtype=torch.float64))]
    grads = [torch.randn_like(p) for p in params[:2]] + [torch.zeros(2, dtype=torch.float64)]
    for clip in (None, 1.0):
        for p, g in zip(params, grads):
            p.grad = g.clone()
        opt = Normalize(torch.optim.SGD(params, lr=1.0), rescale=0.5, clip_grad_norm=clip)
        before = [p.detach().clone() for p in params]
        opt.step()
        want = [0.5 * g / g.norm() if g.norm() > 0 else g for g in grads]
        # With the clip: two tensors of norm 0.5 have a global norm of 0.71, under 1, so it leaves them.
        for p, b, w in zip(params, before, want):
            torch.testing.assert_close(b - p.detach(), w)
        clipped = Normalize(torch.optim.SGD(params, lr=1.0), rescale=2.0, clip_grad_norm=1.0)
        for p, g in zip(params, grads):
            p.grad = g.clone()
        clipped.transform_(params)
        # Two tensors of norm 2 (global 2.83) clipped to 1 (clip_grad_norm_ divides by norm + 1e-6).
        torch.testing.assert_close(torch.linalg.vector_norm(torch.cat([p.grad.reshape(-1) for p in params])),
                                   torch.tensor(1.0, dtype=torch.float64), rtol=1e-6, atol=0)
    with pytest.raises(ValueError, match="rescale"):
        Normalize(torch.optim.SGD(params, lr=1.0), rescale=0.0)


def _normalized_adam_trajectory(rescale, weight_decay, clip=None, steps=12):
    """The parameters after ``steps`` of ``Normalize(Adam)`` (``rescale``, ``clip``; Adam with L2
    ``weight_decay`` and an eps of 1e-30) on a small float64 least-squares problem of three tensors."""
    torch.manual_seed(0)
    x, y = torch.randn(64, 6, dtype=torch.float64), torch.randn(64, 3, dtype=torch.float64)
    params = [nn.Parameter(torch.randn(6, 5, dtype=torch.float64)), nn.Parameter(torch.randn(5, 3, dtype=torch.float64)),
              nn.Parameter(torch.randn(3, dtype=torch.float64))]
    optimizer = Normalize(torch.optim.Adam(params, lr=1e-2, betas=(0.9, 0.98), eps=1e-30, weight_decay=weight_decay),
                          rescale=rescale, clip_grad_norm=clip)
    for _ in range(steps):
        optimizer.zero_grad()
        ((x @ params[0] @ params[1] + params[2] - y) ** 2).mean().backward()
        optimizer.step()
    return torch.cat([p.detach().reshape(-1) for p in params])


def test_the_clip_after_normalising_is_a_constant_rescale_and_adam_sees_only_l2_over_c():
    # The README's reading of the controls, as exact statements: (1) K tensors normalised to c >= 1/sqrt(K)
    # and clipped to global norm 1 are the K tensors normalised to 1/sqrt(K) (up to clip_grad_norm_'s 1e-6);
    # (2) Adam is invariant to the gradient's scale but for its eps, so with L2 weight decay wd, normalising to
    # c is normalising to 1 with weight decay wd / c: what c changes is the weight decay's share.
    clipped = _normalized_adam_trajectory(1.0, weight_decay=1e-2, clip=1.0)
    torch.testing.assert_close(clipped, _normalized_adam_trajectory(1 / math.sqrt(3), weight_decay=1e-2),
                               rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(_normalized_adam_trajectory(0.2, weight_decay=1e-2),
                               _normalized_adam_trajectory(1.0, weight_decay=5e-2), rtol=1e-12, atol=1e-12)
    # Neither is vacuous: the same c without the clip, or another c with the same weight decay, moves elsewhere.
    assert not torch.allclose(clipped, _normalized_adam_trajectory(1.0, weight_decay=1e-2), rtol=1e-3, atol=1e-3)
    assert not torch.allclose(_normalized_adam_trajectory(0.2, weight_decay=1e-2),
                              _normalized_adam_trajectory(1.0, weight_decay=1e-2), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("method", ["normalize", "normalize-clip", "neuralgrok-frozen"])
def test_control_methods_run_and_log_the_stepped_gradient_age(method):
    result = train(TrainConfig(**dict(TINY, method=method, amplifier_hidden=(8,))), progress=False)
    rows = result.history
    assert all(math.isfinite(row["step_grad_age"]) for row in rows[:-1]) and math.isnan(rows[-1]["step_grad_age"])
    assert all(row["step_grad_age"] != row["grad_age"] for row in rows[:-1])
    baseline = train(TrainConfig(**TINY), progress=False).history
    assert all(row["step_grad_age"] == row["grad_age"] for row in baseline)


def test_frozen_control_shares_neuralgroks_split_and_init_and_keeps_its_amplifier():
    frozen = train(TrainConfig(**dict(TINY, method="neuralgrok-frozen", amplifier_hidden=(8,), steps=8)),
                   progress=False)
    trained = train(TrainConfig(**dict(TINY, method="neuralgrok", amplifier_hidden=(8,), steps=8, meta_every=4)),
                    progress=False)
    torch.manual_seed(0)
    Transformer(13, 11, 4, width=32, depth=1)  # the runner draws the model first, then the amplifier
    initial = NeuralAmplifier((8,))
    for a, b in zip(frozen.optimizer.amplifier.parameters(), initial.parameters()):
        assert torch.equal(a, b)
    assert trained.optimizer.meta_steps == 2 and frozen.optimizer.meta_steps == 0
    assert not all(torch.equal(a, b) for a, b in zip(trained.optimizer.amplifier.parameters(), initial.parameters()))
    # The first update is the same (same split, batch, init and amplifier); the meta step comes after it.
    assert frozen.history[0] == {**trained.history[0], "wall_time_s": frozen.history[0]["wall_time_s"]}


def test_snapshots_of_the_amplifier(tmp_path):
    config = TrainConfig(**dict(TINY, method="neuralgrok", amplifier_hidden=(8,), steps=20, snapshot_every=8,
                                meta_every=2))
    result = train(config, tmp_path / "run", progress=False)
    files = sorted(p.name for p in (tmp_path / "run" / SNAPSHOTS).iterdir())
    assert files == ["step_0000000.pt", "step_0000008.pt", "step_0000016.pt", "step_0000020.pt"]
    last = load_weights(tmp_path / "run" / SNAPSHOTS / files[-1])
    assert last["steps"] == 20 and last["meta_steps"] == 10
    for name, tensor in result.optimizer.amplifier.state_dict().items():
        assert torch.equal(last["amplifier"][name], tensor)
    first = load_weights(tmp_path / "run" / SNAPSHOTS / files[0])
    assert not torch.equal(first["amplifier"]["mlp.0.weight"], last["amplifier"]["mlp.0.weight"])
    frozen = train(TrainConfig(**dict(config.to_dict(), method="neuralgrok-frozen")), tmp_path / "frozen",
                   progress=False)
    assert [p.name for p in (tmp_path / "frozen" / SNAPSHOTS).iterdir()] == ["step_0000000.pt"]
    assert frozen.summary["stop_reason"] == "steps"


def test_official_checkpoint_keys_load():
    amplifier = NeuralAmplifier((4, 4))
    official = {key.replace("mlp.", "network."): value * 2 for key, value in amplifier.state_dict().items()}
    amplifier.load_state_dict(official)
    assert torch.equal(amplifier.mlp[0].weight, official["network.0.weight"])


def test_runs_from_before_the_new_fields_read_as_they_ran():
    values = TrainConfig.defaults()
    assert values["meta_weight_decay"] == 0.0 and values["virtual_lr_warmup"] is True
    assert TrainConfig().meta_weight_decay == 1e-3 and TrainConfig().virtual_lr_warmup is False
