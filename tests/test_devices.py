"""Every op on every device: the device-generic implementations (ATen ops, registered for
CompositeExplicitAutograd, so CUDA and every other backend dispatch to them) against the CPU
kernels, values and gradients; their registration; and neuralgrok.devices.check_device.

Each comparison runs on every *target* this machine has: ``generic-cpu`` (CPU tensors forced onto
the generic implementation with ``neuralgrok._extension.generic_kernels()``: the same code a GPU
runs) always, and ``cuda`` where a GPU is present. The reference is always the CPU kernel on CPU.
"""
import contextlib
import math

import pytest
import torch
from torch import nn

import neuralgrok
from neuralgrok import Grokfast, NeuralAmplifier, NeuralGrok, measures
from neuralgrok.optim import reference
from neuralgrok._extension import generic_kernels, generic_kernels_enabled
from neuralgrok.devices import check_device
from helpers import classification_problem

ops = torch.ops.neuralgrok
F32, F64 = torch.float32, torch.float64
TOL = {F32: dict(rtol=2e-5, atol=1e-6), F64: dict(rtol=1e-11, atol=1e-13)}
GRAD_TOL = {F32: dict(rtol=1e-4, atol=1e-5), F64: dict(rtol=1e-9, atol=1e-12)}

HAS_CUDA = torch.cuda.is_available()
cuda_only = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")


class Target:
    """Where the op under test runs: a device, and whether CPU kernels are forced onto the generic path."""

    def __init__(self, name, device, generic):
        self.name, self.device, self.generic = name, torch.device(device), generic

    def context(self):
        return generic_kernels() if self.generic else contextlib.nullcontext()

    def put(self, value):
        """Tensors (in lists and tuples) copied to the target device, always a new tensor (so that the
        CPU reference and the target never share state); grads required where they were."""
        if isinstance(value, torch.Tensor):
            moved = value.detach().to(self.device, copy=True)
            return moved.requires_grad_() if value.requires_grad else moved
        if isinstance(value, (list, tuple)):
            return type(value)(self.put(v) for v in value)
        return value

    def __repr__(self):
        return self.name


TARGETS = [pytest.param(Target("generic-cpu", "cpu", True), id="generic-cpu"),
           pytest.param(Target("cuda", "cuda", False), id="cuda", marks=[cuda_only, pytest.mark.cuda])]


@pytest.fixture(autouse=True)
def cpu_kernels_for_the_reference():
    """The references are the CPU kernels, even in a run with NEURALGROK_GENERIC_KERNELS=1."""
    with generic_kernels(False):
        yield


def on_cpu(value):
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, (list, tuple)):
        return [on_cpu(v) for v in value]
    return value


def assert_all_close(actual, expected, tol, equal_nan=False):
    """Elementwise closeness; atol is at least rtol * the tensor's largest finite magnitude (a sum
    over many entries, such as a weight gradient, carries rounding of that order in its small entries)."""
    actual, expected = on_cpu(actual), on_cpu(expected)
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert a.shape == e.shape and a.dtype == e.dtype
        finite = e[torch.isfinite(e)]
        scale = finite.abs().max().item() if finite.numel() else 0.0
        atol = max(tol["atol"], tol["rtol"] * scale)
        torch.testing.assert_close(a, e, equal_nan=equal_nan, rtol=tol["rtol"], atol=atol)


def outputs_and_grads(fn, inputs, cotangent_seed=7):
    """fn(inputs) (a tensor or a list of tensors) and the gradients of <outputs, random cotangents>
    with respect to every input that requires grad (zeros where unused)."""
    outputs = fn(inputs)
    outputs = [outputs] if isinstance(outputs, torch.Tensor) else list(outputs)
    leaves = [t for t in _flat(inputs) if t.requires_grad]
    generator = torch.Generator().manual_seed(cotangent_seed)
    cotangents = [torch.randn(o.shape, generator=generator, dtype=F64).to(o.dtype).to(o.device) for o in outputs]
    grads = torch.autograd.grad(outputs, leaves, cotangents, allow_unused=True)
    return outputs, [torch.zeros_like(x) if g is None else g for x, g in zip(leaves, grads)]


def _flat(value):
    if isinstance(value, torch.Tensor):
        return [value]
    return [t for v in value for t in _flat(v)] if isinstance(value, (list, tuple)) else []


def compare_to_cpu_kernel(target, fn, inputs, dtype, equal_nan=False):
    """fn on the target against fn with the CPU kernels, outputs and gradients; returns the target's."""
    assert not generic_kernels_enabled()
    expected = outputs_and_grads(fn, inputs)
    with target.context():
        actual = outputs_and_grads(fn, target.put(inputs))
    assert all(t.device.type == target.device.type for t in actual[0])
    assert_all_close(actual[0], expected[0], TOL[dtype], equal_nan)
    assert_all_close(actual[1], expected[1], GRAD_TOL[dtype], equal_nan)
    return actual


def random_tensors(shapes, dtype, seed, scale=1.0, requires_grad=True):
    generator = torch.Generator().manual_seed(seed)
    tensors = [torch.randn(s, generator=generator, dtype=F64).mul(scale).to(dtype) for s in shapes]
    return [t.requires_grad_(requires_grad) for t in tensors]


# -- the switch and the registrations --------------------------------------------------------------------

def test_generic_kernels_switch_is_scoped():
    assert not generic_kernels_enabled()
    with generic_kernels():
        assert generic_kernels_enabled()
        with generic_kernels(False):
            assert not generic_kernels_enabled()
        assert generic_kernels_enabled()
    assert not generic_kernels_enabled()
    with pytest.raises(ZeroDivisionError):
        with generic_kernels():
            raise ZeroDivisionError("inside the block")
    assert not generic_kernels_enabled()


OPS = ["age", "_age_backward", "grokfast_ema_", "grokfast_ma_", "amplify", "_amplify_backward", "_relu_mlp_pieces",
       "virtual_step", "_virtual_step_backward"]
SINGLE_IMPLEMENTATION = {"virtual_step", "_virtual_step_backward"}  # ATen calls already: no separate CPU kernel


def kernel_sources(op):
    """{dispatch key: where its kernel was registered} from the op's computed dispatch table."""
    table = {}
    for line in torch._C._dispatch_dump_table(f"neuralgrok::{op}").splitlines():
        key, _, rest = line.partition(": ")
        table[key.strip()] = rest.strip()
    return table


@pytest.mark.parametrize("op", OPS)
def test_every_backend_dispatches_to_the_generic_implementation(op):
    table = kernel_sources(op)
    generic = table["CUDA"]
    assert "csrc/ops/" in generic and "[default backend kernel]" in generic  # CompositeExplicitAutograd
    for backend in ("XPU", "MPS", "HIP", "PrivateUse1"):
        if backend in table:
            assert table[backend] == generic
    if op in SINGLE_IMPLEMENTATION:
        assert table["CPU"] == generic
    else:
        assert "csrc/ops/" in table["CPU"] and table["CPU"] != generic  # the CPU kernel overrides it
    assert "[kernel]" in table["Meta"] or op == "_relu_mlp_pieces"  # its fake kernel is in Python
    assert "csrc/ops/" in table["AutogradCPU"] and table["AutogradCUDA"] == table["AutogradCPU"]


def test_the_generic_path_is_the_one_that_runs():
    # Generic and CPU kernels round differently: a float32 sum over many entries tells them apart,
    # which shows the switch really reroutes the CPU kernels.
    x = [torch.rand(100_000, generator=torch.Generator().manual_seed(0))]
    fast = ops.age(x, False, False, 0.0)
    with generic_kernels():
        generic = ops.age(x, False, False, 0.0)
    exact = reference.age([x[0].double()])
    torch.testing.assert_close(fast.double(), exact, rtol=1e-6, atol=0)
    torch.testing.assert_close(generic.double(), exact, rtol=1e-6, atol=0)


# -- age --------------------------------------------------------------------------------------------

AGE_VARIANTS = [(pt, nz) for pt in (False, True) for nz in (False, True)]


def age_inputs(dtype, seed=0):
    tensors = random_tensors([(7, 5), (3,), (2, 3, 4), (), (20_000,), (0, 3), (9,)], dtype, seed, scale=1e-2)
    with torch.no_grad():
        tensors[1].zero_()       # an all-zero tensor
        tensors[6][::2] = 0.0    # exact zeros among other entries
    transposed = torch.randn(6, 8, generator=torch.Generator().manual_seed(seed + 1), dtype=F64).to(dtype).t()
    return tensors + [transposed.requires_grad_()]  # non-contiguous


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("per_tensor,normalized", AGE_VARIANTS)
@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("eps", [0.0, 1e-8])
def test_age_matches_the_cpu_kernel(target, per_tensor, normalized, dtype, eps):
    compare_to_cpu_kernel(target, lambda ts: ops.age(ts, per_tensor, normalized, eps), age_inputs(dtype), dtype)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("per_tensor,normalized", AGE_VARIANTS)
def test_age_special_values_match_the_cpu_kernel(target, per_tensor, normalized):
    cases = [
        [torch.tensor([0.0, float("nan"), 0.0])],                         # NaN among zeros
        [torch.tensor([1.0, float("nan")]), torch.tensor([2.0])],         # NaN among values
        [torch.tensor([1.0, float("inf")]), torch.tensor([0.5])],
        [torch.zeros(3, dtype=F64), torch.zeros(0, dtype=F64)],           # nothing but zeros and empties
        [torch.tensor([5e-324, 1e-320, 0.0], dtype=F64)],                 # subnormal
        [torch.tensor([1e-310, 3e-300, 2e-308], dtype=F64), torch.tensor([7.0], dtype=F64)],
    ]
    for tensors in cases:
        expected = ops.age(tensors, per_tensor, normalized, 0.0)
        with target.context():
            actual = ops.age(target.put(tensors), per_tensor, normalized, 0.0)
        torch.testing.assert_close(on_cpu(actual), expected, equal_nan=True, rtol=1e-12, atol=0)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("normalized", [False, True])
def test_age_backward_op_matches_the_cpu_kernel(target, normalized):
    # The backward op called directly, zero entries included (0 subgradient) and a weight per tensor.
    tensors = [torch.tensor([0.0, 0.25, -2.0, 0.0], dtype=F64), torch.tensor([[-1e-3, 0.0], [3.0, 4e-7]], dtype=F64)]
    grad = torch.tensor([1.5, -0.25], dtype=F64)
    expected = ops._age_backward(grad, tensors, True, normalized, 0.0)
    with target.context():
        actual = ops._age_backward(target.put(grad), target.put(tensors), True, normalized, 0.0)
    assert_all_close(actual, expected, TOL[F64])
    assert all(a[t == 0].eq(0).all() for a, t in zip(on_cpu(actual), tensors))


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("per_tensor,normalized", AGE_VARIANTS)
def test_age_generic_gradcheck_float64(target, per_tensor, normalized):
    generator = torch.Generator().manual_seed(1)
    signs = torch.tensor([1.0, -1.0, -1.0, 1.0, 1.0, -1.0], dtype=F64)
    tensors = [target.put((torch.rand(s, generator=generator, dtype=F64) + 0.1) * signs[:s[-1]]).requires_grad_()
               for s in [(2, 3), (3,)]]
    with target.context():
        assert torch.autograd.gradcheck(lambda *ts: ops.age(list(ts), per_tensor, normalized, 0.0), tuple(tensors))


# -- the Grokfast filters ---------------------------------------------------------------------------

FILTER_SHAPES = [(3, 4), (), (0,), (5, 1, 2), (7,)]


def filter_grads(step, non_contiguous=False):
    """One step's gradients: mixed dtypes (the filters treat each position on its own)."""
    generator = torch.Generator().manual_seed(100 + step)
    grads = []
    for i, shape in enumerate(FILTER_SHAPES):
        dtype = F64 if i % 2 else F32
        if non_contiguous and len(shape) >= 2:
            g = torch.randn(shape[::-1], generator=generator, dtype=dtype).transpose(0, -1)
        else:
            g = torch.randn(shape, generator=generator, dtype=dtype)
        grads.append(g)
    return grads


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("non_contiguous", [False, True])
def test_grokfast_ema_matches_the_cpu_kernel(target, non_contiguous):
    ema_cpu = ema_dev = None
    for step in range(6):
        grads_cpu = filter_grads(step, non_contiguous)
        grads_dev = target.put(grads_cpu)
        if step == 0:
            ema_cpu = [torch.full(g.shape, float("nan"), dtype=g.dtype) for g in grads_cpu]  # garbage: ignored
            ema_dev = target.put(ema_cpu)
        initialized = [step > 0] * len(grads_cpu)  # the first call seeds the EMA and ignores its NaN buffers
        ops.grokfast_ema_(grads_cpu, ema_cpu, initialized, 0.9, 2.0)
        with target.context():
            ops.grokfast_ema_(grads_dev, ema_dev, initialized, 0.9, 2.0)
        for a, e in zip(grads_dev + ema_dev, grads_cpu + ema_cpu):
            torch.testing.assert_close(on_cpu(a), e, **TOL[e.dtype])


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("window", [1, 3])
def test_grokfast_ma_matches_the_cpu_kernel(target, window):
    # Fills the window, wraps the ring several times, and carries a NaN and an Inf through it.
    grads0 = filter_grads(0)
    state_cpu = dict(windows=[g.new_empty((window, *g.shape)) for g in grads0], sums=[torch.zeros_like(g) for g in grads0])
    state_dev = {k: target.put(v) for k, v in state_cpu.items()}
    for step in range(4 * window + 3):
        grads_cpu = filter_grads(step, non_contiguous=step % 2 == 1)
        if step == 2:
            grads_cpu[0][1, 2] = float("nan")
        if step == window + 2:
            grads_cpu[4][3] = float("inf")
        grads_dev = target.put(grads_cpu)
        counts = [step] * len(grads_cpu)
        ops.grokfast_ma_(grads_cpu, state_cpu["windows"], state_cpu["sums"], counts, 5.0)
        with target.context():
            ops.grokfast_ma_(grads_dev, state_dev["windows"], state_dev["sums"], counts, 5.0)
        rows = min(step + 1, window)  # rows of the ring written so far
        for a, e in zip(grads_dev + state_dev["sums"], grads_cpu + state_cpu["sums"]):
            torch.testing.assert_close(on_cpu(a), e, equal_nan=True, **TOL[e.dtype])
        for a, e in zip(state_dev["windows"], state_cpu["windows"]):
            torch.testing.assert_close(on_cpu(a)[:rows], e[:rows], equal_nan=True, rtol=0, atol=0)
    # The NaN and Inf have left the window: everything is finite again, on both.
    assert all(torch.isfinite(on_cpu(s)).all() for s in state_dev["sums"])


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("op", ["grokfast_ema_", "grokfast_ma_"])
def test_filters_bump_version_counters_and_refuse_grad_requiring_leaves(target, op):
    def call(grads):
        state = [torch.zeros_like(g) for g in grads]
        if op == "grokfast_ema_":
            ops.grokfast_ema_(grads, state, [True] * len(grads), 0.9, 2.0)
            return state
        windows = [g.new_zeros((2, *g.shape)) for g in grads]
        ops.grokfast_ma_(grads, windows, state, [3] * len(grads), 2.0)
        return windows + state

    with target.context():
        grads = target.put([torch.randn(3), torch.randn(2, 2)])
        versions = [g._version for g in grads]
        written = call(grads)
        assert all(g._version > v for g, v in zip(grads, versions))  # autograd sees the writes
        assert all(s._version > 0 for s in written)
        for requires_grad in (target.put(torch.randn(3)).requires_grad_(), target.put(torch.randn(3, requires_grad=True) * 2)):
            with pytest.raises(RuntimeError, match=r"grads\[0\] requires grad, but the op writes it in place and is not "
                                                   "differentiable"):
                call([requires_grad])
        with torch.no_grad():  # allowed there, as for ATen's in-place ops
            call([target.put(torch.randn(3)).requires_grad_()])


# -- amplify, _relu_mlp_pieces ------------------------------------------------------------------------

def amplifier_and_grads(dtype, hidden_sizes=(16, 16), seed=0, scale=1.0):
    torch.manual_seed(seed)
    amplifier = NeuralAmplifier(hidden_sizes).to(dtype)
    layers = [m for m in amplifier.mlp if isinstance(m, nn.Linear)]
    weights = [m.weight.detach().clone().requires_grad_() for m in layers]
    biases = [m.bias.detach().clone().requires_grad_() for m in layers]
    grads = random_tensors([(7, 5), (13,), (), (3, 1, 4)], dtype, seed + 1, scale=scale)
    grads += [torch.zeros(4, dtype=dtype, requires_grad=True), torch.zeros(0, 3, dtype=dtype, requires_grad=True)]
    transposed = torch.randn(5, 6, generator=torch.Generator().manual_seed(seed + 2), dtype=F64).mul(scale).to(dtype)
    return grads + [transposed.t().requires_grad_()], weights, biases


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("piecewise", [False, True])
@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("hidden_sizes,scale", [((16, 16), 1.0), ((), 1.0), ((32,), 1e-3), ((8, 8), 1e3)])
def test_amplify_matches_the_cpu_kernel(target, piecewise, dtype, hidden_sizes, scale):
    grads, weights, biases = amplifier_and_grads(dtype, hidden_sizes, scale=scale)
    n = len(grads)
    layers = len(weights)
    outputs, derivatives = compare_to_cpu_kernel(
        target, lambda ts: ops.amplify(ts[:n], ts[n:n + layers], ts[n + layers:], 1.7, piecewise),
        grads + weights + biases, dtype)
    assert all(d.abs().max() > 0 for d in derivatives[n:])  # every layer gets a gradient
    norms = [torch.linalg.vector_norm(o.double()).item() for o in outputs]
    assert norms[0] == pytest.approx(1.7, rel=1e-5) and norms[n - 3] == 0.0  # rescaled; all-zero stays zero


@pytest.mark.parametrize("target", TARGETS)
def test_amplify_backward_op_matches_the_cpu_kernel(target):
    grads, weights, biases = amplifier_and_grads(F64, (8, 8))
    grads, weights, biases = [[t.detach() for t in ts] for ts in (grads, weights, biases)]
    cotangents = random_tensors([g.shape for g in grads], F64, 9, requires_grad=False)
    expected = ops._amplify_backward(cotangents, grads, weights, biases, 1.0, True)
    with target.context():
        actual = ops._amplify_backward(*target.put((cotangents, grads, weights, biases)), 1.0, True)
    assert_all_close(actual, expected, GRAD_TOL[F64])


@pytest.mark.parametrize("target", TARGETS)
def test_amplify_generic_gradcheck_float64(target):
    grads, weights, biases = amplifier_and_grads(F64, (4, 3))
    inputs = [target.put(t.detach()).requires_grad_() for t in [grads[0], grads[3]] + weights + biases]

    layers = len(weights)

    def run(*tensors):
        return tuple(ops.amplify(list(tensors[:2]), list(tensors[2:2 + layers]), list(tensors[2 + layers:]), 1.7, True))

    with target.context():
        assert torch.autograd.gradcheck(run, inputs, eps=1e-6, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_amplify_refuses_non_finite_inputs_on_every_path(target, bad):
    grads, weights, biases = amplifier_and_grads(F64, (4,))
    grads, weights, biases = [[t.detach() for t in ts] for ts in (grads, weights, biases)]
    bad_grads = [g.clone() for g in grads]
    bad_grads[3][1] = bad
    bad_bias = [biases[0].clone(), biases[1] * bad]
    with target.context():
        with pytest.raises(RuntimeError, match=r"neuralgrok::amplify: grads\[3\] contains NaN or Inf"):
            ops.amplify(target.put(bad_grads), target.put(weights), target.put(biases), 1.0, True)
        with pytest.raises(RuntimeError, match=r"neuralgrok::amplify: biases\[1\] contains NaN or Inf"):
            ops.amplify(target.put(grads), target.put(weights), target.put(bad_bias), 1.0, True)


@pytest.mark.parametrize("target", TARGETS)
def test_relu_mlp_pieces_matches_the_cpu_kernel(target):
    _, weights, biases = amplifier_and_grads(F64, (64, 32))
    weights, biases = [w.detach() for w in weights], [b.detach() for b in biases]
    expected = ops._relu_mlp_pieces(weights, biases, -3.0, 3.0)
    with target.context():
        actual = ops._relu_mlp_pieces(target.put(weights), target.put(biases), -3.0, 3.0)
    assert all(a.device.type == target.device.type for a in actual)
    assert len(expected[0]) >= 30
    for a, e in zip(actual, expected):
        assert torch.equal(on_cpu(a), e)


@pytest.mark.parametrize("target", TARGETS)
def test_virtual_step_matches_the_reference(target):
    params = random_tensors([(4, 3), (5,)], F64, 7)
    updates = random_tensors([(4, 3), (5,)], F64, 8)
    lrs = [0.1, 0.003]
    with target.context():
        inputs = target.put(params + updates)
        stepped = ops.virtual_step(inputs[:2], inputs[2:], lrs)
        assert torch.autograd.gradcheck(lambda *t: tuple(ops.virtual_step(list(t[:2]), list(t[2:]), lrs)),
                                        tuple(inputs))
    assert_all_close(stepped, reference.virtual_step(params, updates, lrs), TOL[F64])


# -- the optimizers and measures end to end --------------------------------------------------------------

def training_problem(dtype=F64, seed=0):
    return classification_problem(48, 6, 16, 3, dtype, seed)


def train(make_optimizer, device, steps=8, dtype=F64):
    model, x, y = training_problem(dtype)
    model = model.to(device)
    x, y = x.to(device), y.to(device)
    optimizer, extra = make_optimizer(model, x, y)

    def closure():
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x[:40]), y[:40])
        loss.backward()
        return loss

    for _ in range(steps):
        optimizer.step(closure)
    return [p.detach().cpu() for p in list(model.parameters()) + extra]


def neuralgrok_optimizer(meta):
    def make(model, x, y):
        torch.manual_seed(3)
        amplifier = NeuralAmplifier((8, 8)).to(dtype=next(model.parameters()).dtype, device=x.device)
        base = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
        optimizer = NeuralGrok(base, amplifier, meta=meta, meta_every=2, meta_lr=1e-2,
                               outer_closure=lambda: nn.functional.cross_entropy(model(x[40:]), y[40:]))
        return optimizer, list(amplifier.parameters())
    return make


def grokfast_optimizer(mode):
    def make(model, x, y):
        return Grokfast(torch.optim.AdamW(model.parameters(), lr=1e-2), mode=mode, window=3), []
    return make


OPTIMIZERS = [pytest.param(neuralgrok_optimizer("paper"), id="neuralgrok-paper"),
              pytest.param(neuralgrok_optimizer("fast"), id="neuralgrok-fast"),
              pytest.param(grokfast_optimizer("ema"), id="grokfast-ema"),
              pytest.param(grokfast_optimizer("ma"), id="grokfast-ma")]


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("make_optimizer", OPTIMIZERS)
def test_training_matches_the_cpu_kernels(target, make_optimizer):
    expected = train(make_optimizer, "cpu")
    with target.context():
        actual = train(make_optimizer, target.device)
    start = train(make_optimizer, "cpu", steps=0)
    assert any(not torch.equal(a, s) for a, s in zip(expected, start))  # it trained
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("target", TARGETS)
def test_age_and_measures_match_on_the_target(target):
    def measure(device):
        model, x, y = training_problem()
        model = model.to(device)
        nn.functional.cross_entropy(model(x.to(device)), y.to(device)).backward()
        embedding = model[0].weight.detach().t()  # 6 rows: a "token range" of p = 5 residues plus one
        norms = measures.fourier_norms(embedding[:5], 5)
        table = torch.randn(5, 5, 5, generator=torch.Generator().manual_seed(0), dtype=F64).to(device)
        values = {
            "age": neuralgrok.age(model).item(),
            "age_per_tensor": [v.item() for v in neuralgrok.age(model, per_tensor=True).values()],
            "age_normalized": neuralgrok.age(model, of="weight", normalized=True).item(),
            "gradient_age_per_layer": measures.gradient_age(model, per_layer=True),
            "weight_age": measures.weight_age(model),
            "weight_norm": measures.weight_norm(model),
            "med": measures.med(embedding, 5, ranges=(0, 1)).value,
            "fourier_norms": norms.cpu().tolist(),
            "gini": measures.gini(norms),
            "restricted_loss": measures.restricted_loss(table, [1]),
            "excluded_loss": measures.excluded_loss(table, [1], torch.tensor([[0, 1], [2, 3]])),
        }
        return values

    expected = measure("cpu")
    with target.context():
        actual = measure(target.device)
    assert actual.keys() == expected.keys()
    for key in expected:
        assert actual[key] == pytest.approx(expected[key], rel=1e-9, abs=1e-12), key


# -- the meta device -------------------------------------------------------------------------------------

def test_meta_tensors_give_shapes_of_every_op():
    meta = lambda *shape: torch.empty(*shape, device="meta", dtype=F64)  # noqa: E731
    grads, weights, biases = [meta(3, 4), meta(5)], [meta(4, 1), meta(1, 4)], [meta(4), meta(1)]
    assert [t.shape for t in ops.amplify(grads, weights, biases, 1.0, True)] == [(3, 4), (5,)]
    backward = ops._amplify_backward(grads, grads, weights, biases, 1.0, True)
    assert [t.shape for t in backward] == [(3, 4), (5,), (4, 1), (1, 4), (4,), (1,)]
    assert [t.shape for t in ops._age_backward(meta(2), grads, True, False, 0.0)] == [(3, 4), (5,)]
    assert [t.shape for t in ops.virtual_step(grads, grads, [0.1, 0.2])] == [(3, 4), (5,)]
    assert [t.shape for t in ops._virtual_step_backward(grads, [0.1, 0.2])] == [(3, 4), (5,)]
    ops.grokfast_ema_(grads, [meta(3, 4), meta(5)], [True, False], 0.9, 2.0)
    ops.grokfast_ma_(grads, [meta(2, 3, 4), meta(2, 5)], [meta(3, 4), meta(5)], [0, 0], 2.0)
    with pytest.raises(RuntimeError, match=r"grads\[1\] has shape \[5\] but ema\[1\] has shape \[6\]"):
        ops.grokfast_ema_(grads, [meta(3, 4), meta(6)], [True, True], 0.9, 2.0)
    with pytest.raises((RuntimeError, NotImplementedError)):  # the table's size depends on values
        ops._relu_mlp_pieces(weights, biases, -1.0, 1.0)


# -- check_device -----------------------------------------------------------------------------------------

def test_check_device_accepts_the_cpu():
    assert check_device("cpu") == torch.device("cpu")
    assert check_device("cpu:0") == torch.device("cpu", 0)


@pytest.mark.skipif(HAS_CUDA, reason="this machine has a GPU")
@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:3"])
def test_check_device_gives_one_clear_error_without_a_gpu(name):
    with pytest.raises(ValueError) as error:
        check_device(name)
    message = str(error.value)
    assert message.startswith(f"device {name!r}: this torch ({torch.__version__}) ")
    assert ("was built without CUDA" in message) if torch.version.cuda is None else ("finds no GPU" in message)
    assert "'cpu'" in message


def test_check_device_explains_a_missing_cuda_build(monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", None)
    monkeypatch.setattr(torch.version, "hip", None, raising=False)
    with pytest.raises(ValueError, match="was built without CUDA, so it cannot use a GPU; install a CUDA build"):
        check_device("cuda")


def test_check_device_explains_a_cuda_build_without_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(ValueError, match=r"supports CUDA but finds no GPU \(CUDA_VISIBLE_DEVICES=''\)"):
        check_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert check_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ValueError, match=r"only 2 CUDA devices \(cuda:0..cuda:1\) are visible"):
        check_device("cuda:2")


@pytest.mark.parametrize("name,message", [
    ("gpu", "is not a torch device"),
    ("cuda:x", "is not a torch device"),
    ("meta", "holds no values"),
])
def test_check_device_refuses_what_cannot_train(name, message):
    with pytest.raises(ValueError, match=message):
        check_device(name)


@pytest.mark.skipif(getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available(),
                    reason="this machine has an MPS device")
def test_check_device_refuses_a_backend_this_machine_lacks():
    with pytest.raises(ValueError, match=r"device 'mps': this torch .* has no usable mps device; use 'cpu'"):
        check_device("mps")


@cuda_only
@pytest.mark.cuda
def test_check_device_accepts_a_present_gpu():
    assert check_device("cuda") == torch.device("cuda")
    assert check_device(f"cuda:{torch.cuda.device_count() - 1}").index == torch.cuda.device_count() - 1
