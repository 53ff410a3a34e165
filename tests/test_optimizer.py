"""neuralgrok.NeuralGrok: equivalence with the step-by-step reference, optimizer semantics,
checkpoints, and the non-finite policy."""
import copy

import pytest
import torch
from torch import nn

import neuralgrok
from neuralgrok import NeuralAmplifier, NeuralGrok
from neuralgrok.optim.reference import NeuralGrokReference, _functional_call
from helpers import backward_and_step, cpu_grad_scaler


def make_problem(seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(48, 6, generator=g, dtype=dtype)
    y = torch.randint(0, 3, (48,), generator=g)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3)).to(dtype)
    amplifier = NeuralAmplifier(hidden_sizes=(8, 8)).to(dtype)
    inner, outer = (x[:40], y[:40]), (x[40:], y[40:])
    return model, amplifier, inner, outer


def loss_of(model, batch):
    return nn.functional.cross_entropy(model(batch[0]), batch[1])


def build(model, amplifier, outer, **kwargs):
    base = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.98), weight_decay=0.1)
    return NeuralGrok(base, amplifier, outer_closure=lambda: loss_of(model, outer), meta_lr=1e-2, **kwargs)


def closure_for(opt, model, batch, calls=None):
    def closure():
        if calls is not None:
            calls.append(1)
        opt.zero_grad()
        loss = loss_of(model, batch)
        loss.backward()
        return loss
    return closure


@pytest.mark.parametrize("meta", ["paper", "fast"])
def test_matches_step_by_step_reference(meta):
    model, amplifier, inner, outer = make_problem()
    ref_model, ref_amp = copy.deepcopy(model), copy.deepcopy(amplifier)
    opt = build(model, amplifier, outer, meta=meta, meta_every=2)
    ref = NeuralGrokReference(
        ref_model, torch.optim.AdamW(ref_model.parameters(), lr=1e-2, betas=(0.9, 0.98), weight_decay=0.1),
        ref_amp, torch.optim.Adam(ref_amp.parameters(), lr=1e-2, betas=(0.9, 0.98), weight_decay=1e-3),
        meta_every=2, meta=meta, clip_grad_norm=1.0)
    for _ in range(7):
        opt.step(closure_for(opt, model, inner))
        ref.step(lambda: loss_of(ref_model, inner),
                 lambda params: nn.functional.cross_entropy(_functional_call(ref_model, params, outer[0]), outer[1]))
    assert opt.meta_steps == 3
    for a, b in zip(list(model.parameters()) + list(amplifier.parameters()),
                    list(ref_model.parameters()) + list(ref_amp.parameters())):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)
    # The amplifier really was trained (the test would pass vacuously otherwise).
    assert not torch.equal(amplifier.mlp[0].weight, make_problem()[1].mlp[0].weight)


@pytest.mark.parametrize("meta,expected_calls", [("paper", [1, 2, 1, 2]), ("fast", [1, 1, 1, 1])])
def test_closure_is_called_by_step_only(meta, expected_calls):
    model, amplifier, inner, outer = make_problem()
    opt = build(model, amplifier, outer, meta=meta, meta_every=2)
    per_step = []
    for _ in range(4):
        calls = []
        loss = opt.step(closure_for(opt, model, inner, calls))
        per_step.append(len(calls))
        assert torch.is_tensor(loss)
    assert per_step == expected_calls


def test_gradients_after_step_are_the_ones_the_base_used():
    model, amplifier, inner, outer = make_problem()
    opt = build(model, amplifier, outer, meta="paper", meta_every=1)
    opt.step(closure_for(opt, model, inner))
    # Amplified and clipped: the global norm is at most clip_grad_norm.
    norm = torch.norm(torch.stack([p.grad.norm() for p in model.parameters()]))
    assert norm <= 1.0 + 1e-9


def test_paper_mode_meta_step_needs_closure():
    model, amplifier, inner, outer = make_problem()
    opt = build(model, amplifier, outer, meta="paper", meta_every=1)
    loss_of(model, inner).backward()
    with pytest.raises(ValueError, match="needs a closure"):
        opt.step()


def test_fast_mode_works_without_closure():
    model, amplifier, inner, outer = make_problem()
    opt = build(model, amplifier, outer, meta="fast", meta_every=1)
    before = copy.deepcopy(amplifier.state_dict())
    loss_of(model, inner).backward()
    opt.step()
    assert opt.meta_steps == 1
    assert not torch.equal(before["mlp.0.weight"], amplifier.mlp[0].weight)


def test_shares_param_groups_with_base_and_schedulers_work():
    model, amplifier, inner, outer = make_problem()
    opt = build(model, amplifier, outer)
    assert opt.param_groups is opt.base_optimizer.param_groups
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    opt.step(closure_for(opt, model, inner))
    scheduler.step()
    assert opt.base_optimizer.param_groups[0]["lr"] == pytest.approx(5e-3)


def test_virtual_lr_follows_the_group_lr_unless_given():
    model, amplifier, inner, outer = make_problem()
    opt = build(model, amplifier, outer)
    params = opt.params_with_grad() or list(model.parameters())
    assert opt._virtual_lrs(params) == [1e-2] * len(params)
    opt.virtual_lr = 0.5
    assert opt._virtual_lrs(params) == [0.5] * len(params)


def test_state_dict_round_trip_continues_bit_identically():
    def run(steps, checkpoint_at=None):
        model, amplifier, inner, outer = make_problem(dtype=torch.float32)
        opt = build(model, amplifier, outer, meta="paper", meta_every=2)
        for step in range(steps):
            if step == checkpoint_at:
                saved = copy.deepcopy({"model": model.state_dict(), "opt": opt.state_dict()})
                model, amplifier, inner, outer = make_problem(seed=1, dtype=torch.float32)  # different init
                opt = build(model, amplifier, outer, meta="paper", meta_every=2)
                model.load_state_dict(saved["model"])
                opt.load_state_dict(saved["opt"])
                inner, outer = make_problem(dtype=torch.float32)[2:]
                opt.outer_closure = lambda: loss_of(model, outer)
            opt.step(closure_for(opt, model, inner))
        return [p.detach().clone() for p in list(model.parameters()) + list(amplifier.parameters())]

    uninterrupted, resumed = run(7), run(7, checkpoint_at=3)
    assert all(torch.equal(a, b) for a, b in zip(uninterrupted, resumed))


def test_frozen_amplifier_is_not_trained():
    model, amplifier, inner, outer = make_problem()
    before = copy.deepcopy(amplifier.state_dict())
    opt = NeuralGrok(torch.optim.AdamW(model.parameters(), lr=1e-2), amplifier, train_amplifier=False,
                     meta_every=1)
    for _ in range(3):
        opt.step(closure_for(opt, model, inner))
    assert opt.meta_steps == 0
    assert all(torch.equal(before[k], v) for k, v in amplifier.state_dict().items())


def test_parameters_without_grad_are_skipped():
    model, amplifier, inner, outer = make_problem()
    frozen = model[0].bias
    frozen.requires_grad_(False)
    before = frozen.detach().clone()
    opt = build(model, amplifier, outer, meta="paper", meta_every=1)
    for _ in range(2):
        opt.step(closure_for(opt, model, inner))
    assert torch.equal(frozen, before)
    assert opt.meta_steps == 2


def snapshot(model, opt):
    return copy.deepcopy((model.state_dict(), opt.state_dict()))


def assert_same(a, b):
    """Recursively equal: tensors bit for bit, everything else by ==."""
    if torch.is_tensor(a):
        assert torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_same(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    else:
        assert a == b


def test_nonfinite_gradient_raises_naming_the_parameter_and_changes_nothing():
    model, amplifier, inner, outer = make_problem()
    opt = build(model, amplifier, outer, param_names={p: n for n, p in model.named_parameters()})
    opt.step(closure_for(opt, model, inner))
    before = snapshot(model, opt)

    def poisoned():
        loss = closure_for(opt, model, inner)()
        model[2].weight.grad[0, 0] = float("nan")
        return loss

    with pytest.raises(RuntimeError, match=r"gradient of 2\.weight is not finite"):
        opt.step(poisoned)
    assert_same(before, snapshot(model, opt))


def test_nonfinite_gradient_skip_policy_leaves_everything_untouched():
    model, amplifier, inner, outer = make_problem()
    opt = build(model, amplifier, outer, nonfinite="skip")
    opt.step(closure_for(opt, model, inner))
    before = snapshot(model, opt)

    def poisoned():
        loss = closure_for(opt, model, inner)()
        model[0].bias.grad[0] = float("inf")
        return loss

    opt.step(poisoned)
    after = snapshot(model, opt)
    assert after[1]["extra"].pop("skipped_steps") == 1
    before[1]["extra"].pop("skipped_steps")
    assert_same(before, after)
    assert opt.steps == 1


def test_nonfinite_outer_loss_never_reaches_the_amplifier():
    model, amplifier, inner, outer = make_problem()
    opt = build(model, amplifier, outer, meta_every=1)
    opt.outer_closure = lambda: loss_of(model, outer) * float("nan")
    before = copy.deepcopy(amplifier.state_dict())
    with pytest.raises(RuntimeError, match="amplifier was not updated"):
        opt.step(closure_for(opt, model, inner))
    assert all(torch.equal(before[k], v) for k, v in amplifier.state_dict().items())
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"meta": "slow"}, ValueError, "choose one of"),
        ({"meta_every": 0}, ValueError, "positive int"),
        ({"clip_grad_norm": 0.0}, ValueError, "clip_grad_norm"),
        ({"virtual_lr": -1.0}, ValueError, "virtual_lr"),
        ({"outer_closure": None}, ValueError, "outer_closure"),
        ({"amplifier": nn.Linear(1, 1)}, TypeError, "NeuralAmplifier"),
        ({"nonfinite": "ignore"}, ValueError, "choose one of"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    model, amplifier, inner, outer = make_problem()
    args = {"amplifier": amplifier, "outer_closure": lambda: loss_of(model, outer), **kwargs}
    with pytest.raises(error, match=match):
        NeuralGrok(torch.optim.AdamW(model.parameters()), **args)


def test_base_must_be_an_optimizer():
    with pytest.raises(TypeError, match="wraps a torch.optim.Optimizer"):
        NeuralGrok(nn.Linear(2, 2), train_amplifier=False)


def test_exported():
    assert neuralgrok.NeuralGrok is NeuralGrok


@pytest.mark.skipif(cpu_grad_scaler() is None, reason="this torch has no CPU GradScaler")
def test_grad_scaler_unscales_before_the_transform():
    results = []
    for use_scaler in (False, True):
        model, amplifier, inner, outer = make_problem(dtype=torch.float32)
        opt = build(model, amplifier, outer, meta="fast", meta_every=1)
        scaler = cpu_grad_scaler() if use_scaler else None
        for _ in range(3):
            opt.zero_grad()
            backward_and_step(opt, loss_of(model, inner), scaler)
        results.append([p.detach().clone() for p in model.parameters()])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_all_finite_is_exact_for_every_dtype():
    from neuralgrok.optim.base import all_finite

    assert all_finite([torch.ones(3), torch.zeros(0), torch.tensor([1e300], dtype=torch.float64)])
    assert all_finite([])
    for bad in (float("nan"), float("inf"), -float("inf")):
        for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
            tensors = [torch.ones(4, dtype=dtype), torch.tensor([0.5, bad], dtype=dtype)]
            assert not all_finite(tensors)
            assert all_finite(tensors[:1])


def test_all_finite_when_sums_overflow_or_cancel():
    # The fast test sums the entries; a sum that overflows (finite entries) is settled exactly, and an
    # Inf beside a -Inf (whose sum is NaN) or a NaN among huge entries is still caught.
    from neuralgrok.optim.base import all_finite

    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        huge = torch.finfo(dtype).max
        assert all_finite([torch.full((8,), huge, dtype=dtype), torch.tensor([-huge, huge], dtype=dtype)])
        assert not all_finite([torch.tensor([float("inf"), -float("inf")], dtype=dtype)])
        assert not all_finite([torch.full((4,), huge, dtype=dtype), torch.tensor([float("nan")], dtype=dtype)])
    assert all_finite([torch.ones(3), torch.ones(2, dtype=torch.float64)])  # mixed dtypes
    assert not all_finite([torch.ones(3), torch.tensor([float("nan")], dtype=torch.float64)])
