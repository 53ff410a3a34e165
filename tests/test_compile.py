"""torch 2.x integration: torch.library.opcheck with all its checks on every op, every op inside a
torch.compile(fullgraph=True) function (gradients included), and training steps under NeuralGrok and
Grokfast with a compiled forward. Skipped on torch versions without opcheck / torch.compile."""

import pytest
import torch
from torch import nn

import neuralgrok  # noqa: F401  (loads torch.ops.neuralgrok)
from neuralgrok import Grokfast, NeuralAmplifier, NeuralGrok
from helpers import classification_problem

ops = torch.ops.neuralgrok
F32, F64 = torch.float32, torch.float64

needs_opcheck = pytest.mark.skipif(not hasattr(torch.library, "opcheck"), reason="torch.library.opcheck needs torch 2.4+")
needs_compile = pytest.mark.skipif(not hasattr(torch, "compile"), reason="torch.compile needs torch 2.0+")


def randn(*shape, dtype=F64, seed=0, requires_grad=False):
    shape = shape[0] if len(shape) == 1 and isinstance(shape[0], tuple) else shape
    t = torch.randn(tuple(shape), generator=torch.Generator().manual_seed(seed), dtype=dtype)
    return t.requires_grad_(requires_grad)


def mlp(hidden_sizes, dtype=F64, seed=0, requires_grad=False):
    torch.manual_seed(seed)
    amplifier = NeuralAmplifier(hidden_sizes).to(dtype)
    layers = [m for m in amplifier.mlp if isinstance(m, nn.Linear)]
    weights = [m.weight.detach().clone().requires_grad_(requires_grad) for m in layers]
    biases = [m.bias.detach().clone().requires_grad_(requires_grad) for m in layers]
    return weights, biases


def age_tensors(dtype=F64, requires_grad=True):
    tensors = [randn(7, 5, dtype=dtype, seed=1), randn(3, dtype=dtype, seed=2), randn(dtype=dtype, seed=3),
               randn(4, 6, dtype=dtype, seed=4).t()]  # a 0-d and a non-contiguous tensor
    tensors[1][0] = 0.0  # an exact zero
    return [t.requires_grad_(requires_grad) for t in tensors]


def filter_case(contiguous=True):
    grads = [randn(3, 4, seed=5), randn(5, seed=6, dtype=F32), randn(4, 3, seed=7).t() if not contiguous else randn(2, 2)]
    return grads


def opcheck_cases():
    """(id, op, args): every op, with the argument variants that take different paths."""
    cases = []
    for per_tensor in (False, True):
        for normalized in (False, True):
            for eps in (0.0, 1e-8):
                variant = f"{'per_tensor' if per_tensor else 'total'}-{'normalized' if normalized else 'plain'}-eps{eps}"
                cases.append((f"age-{variant}", ops.age.default, (age_tensors(), per_tensor, normalized, eps)))
            grad = randn(4 if per_tensor else (), seed=8)
            cases.append((f"_age_backward-{per_tensor}-{normalized}", ops._age_backward.default,
                          (grad, age_tensors(requires_grad=False), per_tensor, normalized, 0.0)))
    cases.append(("age-float32", ops.age.default, (age_tensors(F32), True, True, 0.0)))
    for contiguous in (True, False):
        grads = filter_case(contiguous)
        ema = [torch.randn(g.shape, dtype=g.dtype) for g in grads]
        cases.append((f"grokfast_ema_-contiguous{contiguous}", ops.grokfast_ema_.default,
                      (grads, ema, [True, False, True], 0.9, 2.0)))
        for count in (0, 2, 3, 7):  # not full; fills the window (wraps); evicts; evicts and wraps
            grads = filter_case(contiguous)
            windows = [torch.randn(4, *g.shape, dtype=g.dtype) for g in grads]
            sums = [w.sum(0) for w in windows]
            cases.append((f"grokfast_ma_-contiguous{contiguous}-count{count}", ops.grokfast_ma_.default,
                          (grads, windows, sums, [count] * 3, 5.0)))
    for piecewise in (True, False):
        for dtype in (F32, F64):
            weights, biases = mlp((8, 8), dtype, requires_grad=True)
            grads = [randn(3, 4, dtype=dtype, seed=9, requires_grad=True), randn(5, dtype=dtype, seed=10, requires_grad=True),
                     torch.zeros(2, dtype=dtype, requires_grad=True)]
            cases.append((f"amplify-piecewise{piecewise}-{dtype}", ops.amplify.default,
                          (grads, weights, biases, 1.5, piecewise)))
            cotangents = [randn(3, 4, dtype=dtype, seed=11), randn(5, dtype=dtype, seed=12), randn(2, dtype=dtype, seed=13)]
            cases.append((f"_amplify_backward-piecewise{piecewise}-{dtype}", ops._amplify_backward.default,
                          (cotangents, [g.detach() for g in grads], [w.detach() for w in weights],
                           [b.detach() for b in biases], 1.5, piecewise)))
    for hidden_sizes in ((8, 8), (32,), ()):
        weights, biases = mlp(hidden_sizes, requires_grad=True)
        cases.append((f"_relu_mlp_pieces-{hidden_sizes}", ops._relu_mlp_pieces.default, (weights, biases, -2.0, 3.0)))
    params = [randn(4, 3, seed=14, requires_grad=True), randn(5, seed=15, requires_grad=True)]
    updates = [randn(4, 3, seed=16, requires_grad=True), randn(5, seed=17, requires_grad=True)]
    cases.append(("virtual_step", ops.virtual_step.default, (params, updates, [0.1, 0.003])))
    cases.append(("_virtual_step_backward", ops._virtual_step_backward.default,
                  ([randn(4, 3, seed=18), randn(5, seed=19)], [0.1, 0.003])))
    return cases


OPCHECK_CASES = opcheck_cases()


@needs_opcheck
def test_opcheck_covers_every_op():
    schemas = torch._C._dispatch_get_all_op_names() if hasattr(torch._C, "_dispatch_get_all_op_names") else None
    ours = {name.split("::")[1] for name in schemas if name.startswith("neuralgrok::")} if schemas else None
    checked = {op._schema.name.split("::")[1] for _, op, _ in OPCHECK_CASES}
    assert checked == {"age", "_age_backward", "grokfast_ema_", "grokfast_ma_", "amplify", "_amplify_backward",
                       "_relu_mlp_pieces", "virtual_step", "_virtual_step_backward"}
    if ours is not None:
        assert ours == checked


@needs_opcheck
@pytest.mark.parametrize("op,args", [pytest.param(op, args, id=name) for name, op, args in OPCHECK_CASES])
def test_opcheck(op, args):
    # All of opcheck's checks (its defaults): schema and aliasing, autograd registration, FakeTensor
    # (the Meta kernels), and AOT dispatch with dynamic shapes.
    results = torch.library.opcheck(op, args)
    assert set(results) >= {"test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic"}
    assert all(result == "SUCCESS" for result in results.values()), results


# -- torch.compile, fullgraph ------------------------------------------------------------------------

def compiled(fn):
    return torch.compile(fn, fullgraph=True)


def assert_same(compiled_result, eager_result, rtol=1e-10, atol=1e-12):
    compiled_result = compiled_result if isinstance(compiled_result, (list, tuple)) else [compiled_result]
    eager_result = eager_result if isinstance(eager_result, (list, tuple)) else [eager_result]
    assert len(compiled_result) == len(eager_result)
    for c, e in zip(compiled_result, eager_result):
        torch.testing.assert_close(c, e, rtol=rtol, atol=atol)


def values_and_grads(fn, inputs):
    """fn(*inputs) (a scalar) and its gradients w.r.t. the inputs."""
    inputs = [t.detach().clone().requires_grad_() for t in inputs]
    value = fn(*inputs)
    return [value.detach(), *torch.autograd.grad(value, inputs)]


@needs_compile
def test_compiled_age_and_its_gradient():
    def fn(a, b, c):
        return (ops.age([a, b, c], False, False, 0.0) + ops.age([a, b, c], True, True, 0.0).square().sum()
                + ops.age([a, c], False, True, 1e-8))

    inputs = [t.detach() for t in age_tensors()[:2]] + [randn(2, 3, seed=20)]
    assert_same(values_and_grads(compiled(fn), inputs), values_and_grads(fn, inputs))


@needs_compile
@pytest.mark.parametrize("piecewise", [True, False])
def test_compiled_amplify_and_its_gradient(piecewise):
    weights, biases = mlp((8, 8))
    layers = len(weights)

    def fn(g1, g2, *layer_tensors):
        out = ops.amplify([g1, g2], list(layer_tensors[:layers]), list(layer_tensors[layers:]), 1.5, piecewise)
        return (out[0] * torch.arange(12, dtype=F64).reshape(3, 4)).sum() + out[1].square().sum()

    inputs = [randn(3, 4, seed=21), randn(5, seed=22)] + weights + biases
    assert_same(values_and_grads(compiled(fn), inputs), values_and_grads(fn, inputs))


@needs_compile
def test_compiled_virtual_step_and_its_gradient():
    def fn(p1, p2, u1, u2):
        stepped = ops.virtual_step([p1, p2], [u1, u2], [0.1, 0.003])
        return stepped[0].square().sum() + stepped[1].sin().sum()

    inputs = [randn(4, 3, seed=23), randn(5, seed=24), randn(4, 3, seed=25), randn(5, seed=26)]
    assert_same(values_and_grads(compiled(fn), inputs), values_and_grads(fn, inputs))


@needs_compile
def test_compiled_backward_ops():
    tensors = [randn(3, 4, seed=27), randn(5, seed=28)]
    weights, biases = mlp((8,))
    cotangents = [randn(3, 4, seed=29), randn(5, seed=30)]

    def fn(t1, t2, y1, y2):
        age_grads = ops._age_backward(torch.tensor([1.0, -2.0], dtype=F64), [t1, t2], True, True, 0.0)
        amp_grads = ops._amplify_backward([y1, y2], [t1, t2], weights, biases, 1.0, True)
        step_grads = ops._virtual_step_backward([y1, y2], [0.5, 0.25])
        return list(age_grads) + list(amp_grads) + list(step_grads)

    assert_same(compiled(fn)(*tensors, *cotangents), fn(*tensors, *cotangents))


@needs_compile
@pytest.mark.parametrize("count", [0, 2, 5])
def test_compiled_filters_mutate_their_arguments(count):
    # The in-place ops are functionalized inside the graph; the writes must reach the caller's tensors.
    def fn(g1, g2, e1, e2, w1, w2, s1, s2):
        ops.grokfast_ema_([g1, g2], [e1, e2], [True, False], 0.9, 2.0)
        ops.grokfast_ma_([g1, g2], [w1, w2], [s1, s2], [count, count], 5.0)
        return g1.sum() + g2.sum()

    def make():
        grads = [randn(3, 4, seed=31), randn(4, 2, seed=32).t()]
        ema = [randn(3, 4, seed=33), randn(2, 4, seed=34)]
        windows = [randn(3, 3, 4, seed=35), randn(3, 2, 4, seed=36)]
        return grads + ema + windows + [w.sum(0) for w in windows]

    eager_args, compiled_args = make(), make()
    eager_value = fn(*eager_args)
    compiled_value = compiled(fn)(*compiled_args)
    assert_same(compiled_value, eager_value)
    assert_same(compiled_args, eager_args)
    assert not torch.equal(compiled_args[0], make()[0])  # the gradients were filtered


@needs_compile
@pytest.mark.skipif(not (hasattr(torch.library, "register_fake") or hasattr(torch.library, "impl_abstract")),
                    reason="its fake kernel (a dynamic size) needs torch.library.register_fake / impl_abstract")
def test_compiled_relu_mlp_pieces_has_a_dynamic_size():
    weights, biases = mlp((16, 16))

    def fn(*layers):
        breakpoints, slopes, intercepts = ops._relu_mlp_pieces(list(layers[:3]), list(layers[3:]), -2.0, 2.0)
        return breakpoints.sum() + slopes.square().sum() + intercepts.sum(), slopes.shape[0]

    eager = fn(*weights, *biases)
    result = compiled(fn)(*weights, *biases)
    assert result[1] == eager[1] > 10
    assert_same(result[0], eager[0])


# -- training with a compiled forward ------------------------------------------------------------------

def make_training(seed=0):
    return classification_problem(64, 8, 32, 4, F64, seed)


def neuralgrok_for(model, forward, x, y):
    torch.manual_seed(1)
    amplifier = NeuralAmplifier((8, 8)).to(F64)
    return NeuralGrok(torch.optim.AdamW(model.parameters(), lr=1e-2), amplifier, meta="paper", meta_every=2,
                      meta_lr=1e-2, outer_closure=lambda: nn.functional.cross_entropy(forward(x[48:]), y[48:]))


def grokfast_for(mode):
    return lambda model, forward, x, y: Grokfast(torch.optim.AdamW(model.parameters(), lr=1e-2), mode=mode, window=3)


@needs_compile
@pytest.mark.parametrize("make_optimizer", [neuralgrok_for, grokfast_for("ema"), grokfast_for("ma")],
                         ids=["neuralgrok", "grokfast-ema", "grokfast-ma"])
def test_training_with_a_compiled_forward_matches_eager(make_optimizer):
    results = []
    for compile_forward in (False, True):
        model, x, y = make_training()
        forward = torch.compile(model) if compile_forward else model
        optimizer = make_optimizer(model, forward, x, y)

        def closure():
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(forward(x[:48]), y[:48])
            loss.backward()
            return loss

        losses = [optimizer.step(closure).item() for _ in range(6)]
        params = [p.detach().clone() for p in model.parameters()]
        extra = [p.detach().clone() for p in getattr(optimizer, "amplifier", nn.Module()).parameters()]
        results.append((losses, params + extra))
    (eager_losses, eager_params), (compiled_losses, compiled_params) = results
    assert eager_losses[-1] < eager_losses[0]  # it trains
    assert compiled_losses == pytest.approx(eager_losses, rel=1e-9)
    assert_same(compiled_params, eager_params, rtol=1e-9, atol=1e-11)
    if make_optimizer is neuralgrok_for:
        assert len(eager_params) > len(list(make_training()[0].parameters()))  # the amplifier was compared too
