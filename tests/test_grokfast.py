"""Grokfast: the C++ filter ops against the pure-PyTorch references, the filter objects, and the
optimizer wrapper against a hand-written reference loop."""
import copy
import io

import pytest
import torch
from torch import nn

import neuralgrok
from neuralgrok import Grokfast, GrokfastEMA, GrokfastMA
from neuralgrok.optim import reference
from helpers import backward_and_step, cpu_grad_scaler

ema_op = torch.ops.neuralgrok.grokfast_ema_
ma_op = torch.ops.neuralgrok.grokfast_ma_

SHAPES = [(3, 4), (), (0,), (2, 0, 3), (5, 1, 2), (7,)]
TOLERANCE = {torch.float32: dict(rtol=1e-5, atol=1e-6), torch.float64: dict(rtol=1e-12, atol=1e-12)}


def random_grads(shapes, dtype, generator, non_contiguous=False):
    """One gradient per shape; non_contiguous gives transposed views (for tensors with >= 2 dims)."""
    grads = []
    for shape in shapes:
        if non_contiguous and len(shape) >= 2:
            g = torch.randn(shape[::-1], dtype=dtype, generator=generator).transpose(0, -1)
            assert g.shape == torch.Size(shape) and (g.numel() == 0 or not g.is_contiguous())
        else:
            g = torch.randn(shape, dtype=dtype, generator=generator)
        grads.append(g)
    return grads


def assert_lists_close(actual, expected, dtype):
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert a.shape == e.shape
        torch.testing.assert_close(a, e, **TOLERANCE[dtype], equal_nan=True)


class MAOpState:
    """The buffers the MA op expects, driven by hand as a caller would."""

    def __init__(self, grads, window):
        # NaN-filled: the op must never read a row it has not written.
        self.windows = [torch.full((window, *g.shape), float("nan"), dtype=g.dtype) for g in grads]
        self.sums = [g.new_zeros(g.shape) for g in grads]
        self.counts = [0] * len(grads)

    def apply_(self, grads, lamb):
        ma_op(grads, self.windows, self.sums, self.counts, lamb)
        self.counts = [c + 1 for c in self.counts]


# -- ops against the references ------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("non_contiguous", [False, True])
def test_ema_op_matches_reference(dtype, non_contiguous):
    gen = torch.Generator().manual_seed(0)
    ref = reference.GrokfastEMA(alpha=0.9, lamb=2.0)
    ema = None
    for step in range(6):
        grads = random_grads(SHAPES, dtype, gen, non_contiguous)
        expected = [g.clone() for g in grads]
        ref.apply_(expected)
        if ema is None:
            ema = [torch.empty_like(g, memory_format=torch.contiguous_format) for g in grads]
        ema_op(grads, ema, [step > 0] * len(grads), 0.9, 2.0)
        assert_lists_close(grads, expected, dtype)
        assert_lists_close(ema, ref.ema, dtype)


def test_ema_first_call_seeds_with_the_gradient():
    g = torch.tensor([1.0, -2.0, 0.5])
    ema = [torch.full_like(g, 123.0)]  # garbage: must be ignored when not initialized
    grads = [g.clone()]
    ema_op(grads, ema, [False], 0.98, 2.0)
    assert torch.equal(ema[0], g)
    assert torch.equal(grads[0], g + 2.0 * g)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("non_contiguous", [False, True])
def test_ma_op_matches_reference_before_and_after_the_window_fills(dtype, non_contiguous):
    window, lamb = 4, 5.0
    gen = torch.Generator().manual_seed(1)
    ref = reference.GrokfastMA(window=window, lamb=lamb)
    state = None
    for step in range(3 * window + 7):  # fills, then wraps the ring three times and a bit
        grads = random_grads(SHAPES, dtype, gen, non_contiguous)
        before = [g.clone() for g in grads]
        expected = [g.clone() for g in grads]
        ref.apply_(expected)
        state = state or MAOpState(grads, window)
        state.apply_(grads, lamb)
        if step < window - 1:
            for g, b in zip(grads, before):
                assert torch.equal(g, b)  # not filled yet: untouched
        else:
            assert not torch.allclose(grads[0], before[0])
        assert_lists_close(grads, expected, dtype)


@pytest.mark.parametrize("window", [1, 3, 7])
def test_ma_running_sum_is_exact_after_each_wrap_and_tracks_a_long_run(window):
    """float32 gradients of very different scales make the running sum drift; the re-sum at each
    wrap of the ring index must reset it to the exact window sum."""
    gen = torch.Generator().manual_seed(2)
    ref = reference.GrokfastMA(window=window, lamb=1.0)
    state = None
    for _ in range(20 * window + 5):
        scale = 10.0 ** torch.randint(-4, 5, (64,), generator=gen).float()
        grads = [torch.randn(64, generator=gen) * scale]
        expected = [grads[0].clone()]
        ref.apply_(expected)
        state = state or MAOpState(grads, window)
        state.apply_(grads, 1.0)
        torch.testing.assert_close(grads[0], expected[0], rtol=1e-5, atol=1e-5 * float(scale.max()))
        if state.counts[0] % window == 0:
            exact = state.windows[0].double().sum(dim=0).float()
            assert torch.equal(state.sums[0], exact)


def test_ops_take_a_list_of_mixed_dtypes():
    gen = torch.Generator().manual_seed(3)
    grads = [torch.randn(3, generator=gen), torch.randn(2, 2, generator=gen, dtype=torch.float64)]
    expected = [g.clone() for g in grads]
    ema = [g.clone() for g in grads]
    ema_op(grads, ema, [True, True], 0.5, 2.0)
    for g, e in zip(expected, ema):
        assert e.dtype == g.dtype
    ref = [g + 2.0 * (0.5 * g + 0.5 * g) for g in expected]
    for g, r in zip(grads, ref):
        torch.testing.assert_close(g, r)


@pytest.mark.parametrize("mode", ["ema", "ma"])
def test_zero_gradients_stay_zero_and_finite(mode):
    grads = [torch.zeros(4, 3), torch.zeros(()), torch.zeros(0)]
    filt = GrokfastEMA() if mode == "ema" else GrokfastMA(window=3)
    for _ in range(7):
        step_grads = [g.clone() for g in grads]
        filt.apply_(step_grads)
        for g in step_grads:
            assert torch.isfinite(g).all() and torch.equal(g, torch.zeros_like(g))


def test_ema_nonfinite_gradient_stays_in_the_filter_state():
    """Documented behaviour: NaN enters the EMA of that entry for good; other entries are unaffected."""
    filt = GrokfastEMA(alpha=0.5, lamb=1.0)
    filt.apply_([torch.ones(3)])
    filt.apply_([torch.tensor([float("nan"), 1.0, float("inf")])])
    for _ in range(5):
        g = torch.ones(3)
        filt.apply_([g])
    assert torch.isnan(g[0]) and torch.isinf(g[2]) and g[1] == 2.0
    assert torch.isnan(filt.tensor_states[0]["ema"][0])


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_ma_nonfinite_gradient_propagates_while_in_the_window_then_drops_out(bad):
    window = 4
    filt, ref = GrokfastMA(window=window, lamb=1.0), reference.GrokfastMA(window=window, lamb=1.0)
    gen = torch.Generator().manual_seed(4)
    bad_step = 5
    for step in range(bad_step + 2 * window + 1):
        g = torch.randn(3, generator=gen)
        if step == bad_step:
            g[1] = bad
        expected = g.clone()
        ref.apply_([expected])
        filt.apply_([g])
        in_window = bad_step <= step < bad_step + window
        assert bool(torch.isfinite(g[1])) != in_window
        assert torch.isfinite(g[[0, 2]]).all()
        torch.testing.assert_close(g, expected, equal_nan=True)


# -- bad inputs: clear errors, nothing changed ---------------------------------------------------

def ema_case(**overrides):
    grads = [torch.randn(3), torch.randn(2, 2)]
    args = dict(grads=grads, ema=[torch.randn(3), torch.randn(2, 2)], initialized=[True, True], alpha=0.9, lamb=2.0)
    args.update({k: v(args) if callable(v) else v for k, v in overrides.items()})
    return args


def ma_case(**overrides):
    grads = [torch.randn(3), torch.randn(2, 2)]
    args = dict(grads=grads, windows=[torch.randn(4, 3), torch.randn(4, 2, 2)], sums=[torch.randn(3), torch.randn(2, 2)],
                counts=[5, 5], lamb=2.0)
    args.update({k: v(args) if callable(v) else v for k, v in overrides.items()})
    return args


# Every bad entry sits at position 1, so a kernel that wrote before checking would change position 0.
BAD_EMA = [
    (dict(ema=lambda a: a["ema"][:1]), "grads has 2 tensors but ema has 1"),
    (dict(ema=lambda a: [a["ema"][0], torch.randn(4)]), r"grads\[1\] has shape \[2, 2\] but ema\[1\] has shape \[4\]"),
    (dict(ema=lambda a: [a["ema"][0], torch.randn(2, 2, dtype=torch.float64)]), r"ema\[1\] has dtype Double"),
    (dict(ema=lambda a: [a["ema"][0], torch.randn(2, 2).t()]), r"ema\[1\] must be contiguous"),
    (dict(ema=lambda a: [a["ema"][0], a["grads"][1]]), r"ema\[1\] shares memory with grads\[1\]"),
    (dict(grads=lambda a: [a["grads"][0], torch.randn(2, 1).expand(2, 2)]), r"grads\[1\] has internally overlapping"),
    (dict(grads=lambda a: [a["grads"][0], torch.ones(2, 2, dtype=torch.int64)]), r"grads\[1\] has dtype Long"),
    (dict(initialized=[True]), "grads has 2 tensors but initialized has 1 flags"),
    (dict(alpha=1.5), r"alpha must be in \[0, 1\], got 1.5"),
    (dict(alpha=-0.1), r"alpha must be in \[0, 1\]"),
    (dict(lamb=float("nan")), "lamb must be finite"),
]

BAD_MA = [
    (dict(windows=lambda a: [a["windows"][0], torch.randn(4, 2, 3)]), r"windows\[1\] has shape \[4, 2, 3\]; expected \(w, \*grads\[1\].shape\)"),
    (dict(windows=lambda a: [a["windows"][0], torch.randn(0, 2, 2)]), r"windows\[1\] has shape \[0, 2, 2\]; expected \(w, \*grads\[1\].shape\) with w >= 1"),
    (dict(windows=lambda a: [a["windows"][0], torch.randn(2, 2)]), r"windows\[1\] has shape \[2, 2\]"),
    (dict(sums=lambda a: [a["sums"][0], torch.randn(4)]), r"grads\[1\] has shape \[2, 2\] but sums\[1\] has shape \[4\]"),
    (dict(sums=lambda a: [a["sums"][0], a["windows"][1][0]]), r"windows\[1\] and sums\[1\] share memory"),
    (dict(windows=lambda a: [a["windows"][0], torch.randn(4, 2, 2, dtype=torch.float64)]), r"windows\[1\] has dtype Double"),
    (dict(windows=lambda a: [a["windows"][0], torch.randn(2, 2, 4).permute(2, 0, 1)]), r"windows\[1\] must be contiguous"),
    (dict(grads=lambda a: [a["grads"][0], torch.randn(2, 1).expand(2, 2)]), r"grads\[1\] has internally overlapping"),
    (dict(counts=[5, -1]), r"counts\[1\] must be >= 0, got -1"),
    (dict(counts=[5]), "grads has 2 tensors but counts has 1 entries"),
    (dict(sums=lambda a: a["sums"][:1]), "grads has 2 tensors but sums has 1"),
    (dict(lamb=float("inf")), "lamb must be finite"),
]


def snapshot(args):
    return [t.clone() for v in args.values() if isinstance(v, list) for t in v if isinstance(t, torch.Tensor)]


def assert_unchanged(args, before):
    after = [t for v in args.values() if isinstance(v, list) for t in v if isinstance(t, torch.Tensor)]
    assert len(after) == len(before)
    for a, b in zip(after, before):
        assert torch.equal(a.to_dense() if a.is_sparse else a, b.to_dense() if b.is_sparse else b)


@pytest.mark.parametrize("overrides, message", BAD_EMA)
def test_ema_op_rejects_bad_inputs_and_changes_nothing(overrides, message):
    args = ema_case(**overrides)
    before = snapshot(args)
    with pytest.raises(RuntimeError, match="neuralgrok::grokfast_ema_: " + message):
        ema_op(**args)
    assert_unchanged(args, before)


@pytest.mark.parametrize("overrides, message", BAD_MA)
def test_ma_op_rejects_bad_inputs_and_changes_nothing(overrides, message):
    args = ma_case(**overrides)
    before = snapshot(args)
    with pytest.raises(RuntimeError, match="neuralgrok::grokfast_ma_: " + message):
        ma_op(**args)
    assert_unchanged(args, before)


def test_sparse_gradients_are_refused_and_change_nothing():
    # A sparse tensor reaches the device-generic kernel (registered for every backend), which refuses it.
    args = ema_case(grads=lambda a: [a["grads"][0], torch.eye(2).to_sparse()])
    before = snapshot(args)
    with pytest.raises(RuntimeError, match=r"neuralgrok::grokfast_ema_: grads\[1\] has layout Sparse; only dense"):
        ema_op(**args)
    assert_unchanged(args, before)


def test_well_formed_cases_are_accepted():
    """The bad-input cases above differ from these by one entry each."""
    ema_op(**ema_case())
    ma_op(**ma_case())


@pytest.mark.skipif(not hasattr(torch.library, "opcheck"), reason="torch.library.opcheck needs torch >= 2.4")
def test_opcheck():
    # Every opcheck check (schema and aliasing, autograd registration, FakeTensor, AOT dispatch with
    # dynamic shapes); tests/test_compile.py runs them on more argument variants.
    for op, args in ((ema_op.default, ema_case()), (ma_op.default, ma_case())):
        results = torch.library.opcheck(op, (), args)
        assert results and all(result == "SUCCESS" for result in results.values()), results


# -- filter objects ------------------------------------------------------------------------------

@pytest.mark.parametrize("make, message", [
    (lambda: GrokfastEMA(alpha=1.01), r"alpha must be in \[0, 1\]"),
    (lambda: GrokfastEMA(alpha=-0.5), r"alpha must be in \[0, 1\]"),
    (lambda: GrokfastEMA(alpha=float("nan")), "alpha must be a finite real number"),
    (lambda: GrokfastEMA(alpha="0.9"), "alpha must be a finite real number"),
    (lambda: GrokfastEMA(lamb=float("inf")), "lamb must be a finite real number"),
    (lambda: GrokfastEMA(lamb=True), "lamb must be a finite real number"),
    (lambda: GrokfastMA(window=0), "window must be an int >= 1"),
    (lambda: GrokfastMA(window=2.5), "window must be an int >= 1"),
    (lambda: GrokfastMA(window=True), "window must be an int >= 1"),
    (lambda: GrokfastMA(lamb=None), "lamb must be a finite real number"),
    (lambda: Grokfast(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1), mode="sma"), "mode='sma'"),
    (lambda: Grokfast(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1), alpha=2.0), r"alpha must be in \[0, 1\]"),
])
def test_bad_hyperparameters_are_value_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_defaults_follow_the_paper_code():
    assert GrokfastEMA().hyperparameters() == {"alpha": 0.98, "lamb": 2.0}
    assert GrokfastMA().hyperparameters() == {"window": 100, "lamb": 5.0}
    sgd = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    assert Grokfast(sgd).filter.hyperparameters() == {"alpha": 0.98, "lamb": 2.0}
    assert Grokfast(sgd, mode="ma").filter.hyperparameters() == {"window": 100, "lamb": 5.0}
    assert Grokfast(sgd, mode="ma", lamb=0.5).filter.lamb == 0.5


@pytest.mark.parametrize("make", [lambda: GrokfastEMA(alpha=0.8, lamb=1.5), lambda: GrokfastMA(window=3, lamb=2.5)])
def test_filter_matches_reference_and_state_dict_round_trip_continues_bit_identically(make):
    gen = torch.Generator().manual_seed(5)
    steps = [random_grads([(4, 3), (), (5,)], torch.float32, gen) for _ in range(9)]
    uninterrupted, resumed = make(), None
    ref = reference.GrokfastEMA(0.8, 1.5) if isinstance(uninterrupted, GrokfastEMA) else reference.GrokfastMA(3, 2.5)
    for k, grads in enumerate(steps):
        if k == 4:
            saved = uninterrupted.state_dict()
            buffer = io.BytesIO()
            torch.save(saved, buffer)
            buffer.seek(0)
            resumed = type(uninterrupted)(lamb=9.0)  # hyperparameters come from the checkpoint
            resumed.load_state_dict(torch.load(buffer))
        expected = [g.clone() for g in grads]
        ref.apply_(expected)
        if resumed is not None:
            resumed_grads = [g.clone() for g in grads]
            resumed.apply_(resumed_grads)
        uninterrupted.apply_(grads)
        assert_lists_close(grads, expected, torch.float32)
        if resumed is not None:
            for a, b in zip(resumed_grads, grads):
                assert torch.equal(a, b)
    assert resumed.hyperparameters() == uninterrupted.hyperparameters()
    # state_dict() is a snapshot: later steps did not change it.
    assert not all(torch.equal(a, b) for a, b in zip(
        [t for s in saved["tensor_states"] for t in s.values() if isinstance(t, torch.Tensor)],
        [t for s in uninterrupted.tensor_states for t in s.values() if isinstance(t, torch.Tensor)]))


def test_filter_apply_rejects_a_changed_list_and_a_failed_call_keeps_the_state():
    filt = GrokfastMA(window=2)
    filt.apply_([torch.ones(3), torch.ones(2)])
    state = filt.state_dict()
    with pytest.raises(ValueError, match="got 1 tensors, but earlier calls had 2"):
        filt.apply_([torch.ones(3)])
    with pytest.raises(RuntimeError, match=r"grads\[1\] has shape \[4\] but sums\[1\] has shape \[2\]"):
        filt.apply_([torch.ones(3), torch.ones(4)])
    with pytest.raises(ValueError, match="got no tensors"):
        GrokfastEMA().apply_([])
    with pytest.raises(TypeError, match="item 0 is a list"):
        GrokfastEMA().apply_([[1.0]])
    for old, new in zip(state["tensor_states"], filt.tensor_states):
        assert old["count"] == new["count"] == 1
        assert torch.equal(old["window"], new["window"]) and torch.equal(old["sum"], new["sum"])


def test_a_failed_first_call_stores_no_half_initialized_state():
    filt = GrokfastEMA()
    with pytest.raises(RuntimeError, match="has dtype Long"):
        filt.apply_([torch.ones(2), torch.ones(2, dtype=torch.int64)])
    assert filt.tensor_states == []


# -- the optimizer wrapper -----------------------------------------------------------------------

def make_model(seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).to(dtype)


def batch(step, dtype=torch.float64):
    gen = torch.Generator().manual_seed(100 + step)
    return torch.randn(16, 4, generator=gen, dtype=dtype), torch.randint(0, 3, (16,), generator=gen)


def loss_of(model, step):
    x, y = batch(step, next(model.parameters()).dtype)
    return nn.functional.cross_entropy(model(x), y)


def grokfast_adamw(model, mode, **kwargs):
    base = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.01)
    return Grokfast(base, mode, **kwargs)


def train(model, opt, steps, start=0):
    for step in range(start, start + steps):
        opt.zero_grad()
        loss_of(model, step).backward()
        opt.step()


@pytest.mark.parametrize("mode", ["ema", "ma"])
def test_wrapper_equals_reference_filter_plus_adamw(mode):
    steps = 12
    model, ref_model = make_model(), make_model()
    opt = grokfast_adamw(model, mode, alpha=0.9, window=4)
    ref_opt = torch.optim.AdamW(ref_model.parameters(), lr=1e-2, weight_decay=0.01)
    ref_filter = reference.GrokfastEMA(0.9, 2.0) if mode == "ema" else reference.GrokfastMA(4, 5.0)
    train(model, opt, steps)
    for step in range(steps):
        ref_opt.zero_grad()
        loss_of(ref_model, step).backward()
        ref_filter.apply_([p.grad for p in ref_model.parameters()])
        ref_opt.step()
    unfiltered = make_model()
    train(unfiltered, torch.optim.AdamW(unfiltered.parameters(), lr=1e-2, weight_decay=0.01), steps)
    for p, r, u in zip(model.parameters(), ref_model.parameters(), unfiltered.parameters()):
        torch.testing.assert_close(p, r, rtol=1e-10, atol=1e-12)
        assert not torch.allclose(p, u)  # the filter changed the trajectory


@pytest.mark.parametrize("mode", ["ema", "ma"])
def test_wrapper_makes_one_filter_call_per_step_for_all_parameters(mode, monkeypatch):
    model = make_model()
    opt = grokfast_adamw(model, mode, window=2)
    name = f"grokfast_{mode}_"
    real = getattr(torch.ops.neuralgrok, name)
    calls = []
    monkeypatch.setattr(torch.ops.neuralgrok, name, lambda grads, *rest: calls.append(len(grads)) or real(grads, *rest))
    train(model, opt, 3)
    assert calls == [4, 4, 4]


def test_closure_is_called_once_and_its_loss_returned():
    model = make_model()
    opt = grokfast_adamw(model, "ema")
    calls = []

    def closure():
        calls.append(1)
        opt.zero_grad()
        loss = loss_of(model, 0)
        loss.backward()
        return loss

    before = [p.clone() for p in model.parameters()]
    loss = opt.step(closure)
    assert len(calls) == 1
    assert torch.equal(loss, loss_of(make_model(), 0))  # the closure's loss, at the weights before the step
    assert all(not torch.equal(b, p) for b, p in zip(before, model.parameters()))


def test_param_groups_are_the_base_optimizers_and_schedulers_reach_it():
    model = make_model()
    opt = grokfast_adamw(model, "ma")
    assert opt.param_groups is opt.base_optimizer.param_groups
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    train(model, opt, 1)
    scheduler.step()
    assert opt.base_optimizer.param_groups[0]["lr"] == pytest.approx(5e-3)
    assert "Grokfast(AdamW" in repr(opt) and "GrokfastMA(window=100, lamb=5.0)" in repr(opt)


@pytest.mark.parametrize("mode", ["ema", "ma"])
def test_state_dict_round_trip_continues_bit_identically(mode):
    k, more = 7, 6  # with window 4 the MA ring wraps before and after the checkpoint
    model = make_model()
    opt = grokfast_adamw(model, mode, alpha=0.9, window=4)
    train(model, opt, k + more)

    first = make_model()
    first_opt = grokfast_adamw(first, mode, alpha=0.9, window=4)
    train(first, first_opt, k)
    buffer = io.BytesIO()
    torch.save({"model": first.state_dict(), "opt": first_opt.state_dict()}, buffer)
    buffer.seek(0)
    checkpoint = torch.load(buffer)

    resumed = make_model(seed=123)
    resumed_opt = grokfast_adamw(resumed, mode, alpha=0.5, window=9, lamb=0.1)  # restored from the checkpoint
    resumed.load_state_dict(checkpoint["model"])
    resumed_opt.load_state_dict(checkpoint["opt"])
    assert resumed_opt.filter.hyperparameters() == opt.filter.hyperparameters()
    keys = {"ema"} if mode == "ema" else {"window", "sum", "count"}
    assert all(set(resumed_opt.state[p]) == keys for p in resumed.parameters())
    train(resumed, resumed_opt, more, start=k)
    for p, q in zip(model.parameters(), resumed.parameters()):
        assert torch.equal(p, q)


def test_loading_a_checkpoint_of_the_other_mode_is_a_clear_error():
    model = make_model()
    ema_opt = grokfast_adamw(model, "ema")
    train(model, ema_opt, 1)
    with pytest.raises(ValueError, match="state is for mode='ema', this optimizer has mode='ma'; nothing was loaded"):
        grokfast_adamw(make_model(), "ma").load_state_dict(copy.deepcopy(ema_opt.state_dict()))


@pytest.mark.parametrize("mode", ["ema", "ma"])
def test_parameters_without_grad_are_skipped_and_seeded_at_their_first_grad(mode):
    used, unused = nn.Parameter(torch.randn(3, dtype=torch.float64)), nn.Parameter(torch.randn(2, dtype=torch.float64))
    opt = Grokfast(torch.optim.SGD([used, unused], lr=0.1), mode, window=2)
    for _ in range(3):
        opt.zero_grad(set_to_none=True)
        (used ** 2).sum().backward()
        unused_before = unused.detach().clone()
        opt.step()
        assert unused.grad is None and torch.equal(unused, unused_before)
        assert len(opt.state[unused]) == 0
    # Its first gradient seeds its own filter, independent of the other parameter's history.
    opt.zero_grad(set_to_none=True)
    (unused ** 2).sum().backward()
    g = unused.grad.clone()
    opt.step()
    if mode == "ema":
        assert torch.equal(opt.state[unused]["ema"], g)
        assert opt.state[used]["ema"].shape == used.shape
    else:
        assert opt.state[unused]["count"] == 1 and opt.state[used]["count"] == 3
        assert torch.equal(unused.grad, g)  # window not filled yet: unchanged


def everything(model, opt):
    """Parameters, grads, base optimizer state and filter state, cloned."""
    state = opt.state_dict()
    tensors = [t for p in model.parameters() for t in (p, p.grad)]
    for per_param in (state["base"]["state"], state["state"]):
        for entry in per_param.values():
            tensors += [v for v in entry.values() if isinstance(v, torch.Tensor)]
    counts = [entry.get("count") for entry in state["state"].values()]
    return [t.detach().clone() for t in tensors], counts


def assert_same(a, b):
    (tensors_a, counts_a), (tensors_b, counts_b) = a, b
    assert counts_a == counts_b and len(tensors_a) == len(tensors_b)
    for x, y in zip(tensors_a, tensors_b):
        torch.testing.assert_close(x, y, rtol=0, atol=0, equal_nan=True)  # bit-equal, NaN included


@pytest.mark.parametrize("mode", ["ema", "ma"])
def test_nonfinite_raise_names_the_parameter_and_changes_nothing(mode):
    model = make_model()
    names = {p: n for n, p in model.named_parameters()}
    opt = grokfast_adamw(model, mode, window=2, param_names=names)
    train(model, opt, 3)
    opt.zero_grad()
    loss_of(model, 3).backward()
    model[2].weight.grad[0, 1] = float("nan")
    before = everything(model, opt)
    with pytest.raises(RuntimeError, match=r"gradient of 2\.weight is not finite \(NaN or Inf\)"):
        opt.step()
    assert_same(everything(model, opt), before)


@pytest.mark.parametrize("mode", ["ema", "ma"])
def test_nonfinite_skip_leaves_params_base_state_and_filter_state_untouched(mode):
    model = make_model()
    opt = grokfast_adamw(model, mode, window=2, nonfinite="skip")
    train(model, opt, 3)
    opt.zero_grad()
    loss_of(model, 3).backward()
    model[0].bias.grad[2] = float("inf")
    before = everything(model, opt)
    opt.step()
    assert opt.skipped_steps == 1
    assert_same(everything(model, opt), before)
    train(model, opt, 1, start=4)  # a finite step afterwards goes through
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert opt.skipped_steps == 1


@pytest.mark.skipif(cpu_grad_scaler() is None, reason="this torch has no CPU GradScaler")
@pytest.mark.parametrize("mode", ["ema", "ma"])
def test_grad_scaler_unscales_before_the_filter(mode):
    # scaler.step(opt) unscales the base optimizer's gradients (the wrapper shares its param_groups)
    # before Grokfast filters them, so the filter state holds true gradients and training with a
    # scaler (a power of two: exact) follows the run without one.
    results = []
    for use_scaler in (False, True):
        model = make_model(dtype=torch.float32)
        opt = grokfast_adamw(model, mode, alpha=0.9, window=3)
        scaler = cpu_grad_scaler() if use_scaler else None
        for step in range(6):
            opt.zero_grad()
            backward_and_step(opt, loss_of(model, step), scaler)
        results.append(([p.detach().clone() for p in model.parameters()],
                        [s for s in (opt.state[p] for p in model.parameters())]))
    (plain, plain_state), (scaled, scaled_state) = results
    for a, b in zip(plain, scaled):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    key = "ema" if mode == "ema" else "sum"
    for a, b in zip(plain_state, scaled_state):
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-7)  # unscaled gradients were filtered
    assert not torch.equal(plain[0], make_model(dtype=torch.float32)[0].weight)


def test_exports():
    assert neuralgrok.Grokfast is Grokfast and {"Grokfast", "GrokfastEMA", "GrokfastMA"} <= set(neuralgrok.__all__)
