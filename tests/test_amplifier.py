"""NeuralAmplifier and the ops behind it: neuralgrok::amplify (dense and piecewise paths),
_amplify_backward, _relu_mlp_pieces and virtual_step, against the pure-PyTorch references."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from neuralgrok import NeuralAmplifier
from neuralgrok.optim import reference
from neuralgrok._extension import generic_kernels_enabled

F64 = torch.float64
ops = torch.ops.neuralgrok


# -- helpers ---------------------------------------------------------------------------------------
def make_amplifier(hidden_sizes, dtype=F64, seed=0, **kwargs):
    torch.manual_seed(seed)
    return NeuralAmplifier(hidden_sizes, **kwargs).to(dtype)


def mlp_layers(amplifier):
    linears = [m for m in amplifier.mlp if isinstance(m, nn.Linear)]
    return [layer.weight for layer in linears], [layer.bias for layer in linears]


def random_grads(shapes, scale=1.0, dtype=F64, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=generator, dtype=dtype) * scale for shape in shapes]


def values_and_grads(transform, grads, amplifier, seed=2):
    """transform(grads) and the gradients of <outputs, random cotangents> w.r.t. grads and every
    amplifier parameter (zeros where unused)."""
    grads = [g.detach().clone().requires_grad_() for g in grads]
    outputs = transform(grads)
    generator = torch.Generator().manual_seed(seed)
    cotangents = [torch.randn(o.shape, generator=generator, dtype=F64).to(o.dtype) for o in outputs]
    inputs = grads + list(amplifier.parameters())
    derivatives = torch.autograd.grad(outputs, inputs, cotangents, allow_unused=True)
    derivatives = [torch.zeros_like(x) if d is None else d for x, d in zip(inputs, derivatives)]
    return [o.detach() for o in outputs], [d.detach() for d in derivatives]


def by_method(amplifier, method):
    return lambda grads: amplifier.amplify(grads, method=method)


def by_reference(amplifier, dtype=None, activation=torch.relu):
    """The reference, optionally computed in another dtype and cast back."""
    def transform(grads):
        weights, biases = mlp_layers(amplifier)
        cast = (lambda t: t.to(dtype)) if dtype else (lambda t: t)
        outputs = reference.amplify([cast(g) for g in grads], [cast(w) for w in weights],
                                    [cast(b) for b in biases], amplifier.rescale, activation)
        return [o.to(g.dtype) for o, g in zip(outputs, grads)]
    return transform


def assert_lists_close(actual, expected, rtol, atol=0.0):
    """Elementwise closeness, with atol at least rtol * the largest magnitude in the expected list
    (entries that are zero analytically come out as rounding noise)."""
    assert len(actual) == len(expected)
    scale = max((e.abs().max().item() for e in expected if e.numel()), default=0.0)
    for a, e in zip(actual, expected):
        assert a.shape == e.shape and a.dtype == e.dtype
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, e, rtol=rtol, atol=max(rtol * scale, atol) + 1e-300)


def piece_count(amplifier, grads):
    weights, biases = mlp_layers(amplifier)
    entries = torch.cat([g.detach().reshape(-1).double() for g in grads])
    breakpoints, _, _ = ops._relu_mlp_pieces([w.detach() for w in weights], [b.detach() for b in biases],
                                             entries.min().item(), entries.max().item())
    return len(breakpoints) + 1


def assert_piecewise_path_runs(amplifier, grads):
    """The documented rule: the table is used while it has at most max(256, N / 4) pieces."""
    total = sum(g.numel() for g in grads)
    assert piece_count(amplifier, grads) <= max(256, total // 4)


MIXED_SHAPES = [(7, 5), (13,), (), (3, 1, 4)]


# -- dense and piecewise op vs the reference ------------------------------------------------------
@pytest.mark.parametrize("method", ["dense", "piecewise"])
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_op_matches_reference_values_and_grads(method, dtype):
    amplifier = make_amplifier((16, 16), dtype)
    grads = random_grads(MIXED_SHAPES, dtype=dtype) + [torch.zeros(4, dtype=dtype), torch.zeros(0, 3, dtype=dtype)]
    actual = values_and_grads(by_method(amplifier, method), grads, amplifier)
    expected = values_and_grads(by_reference(amplifier), grads, amplifier)
    rtol = 1e-4 if dtype == torch.float32 else 1e-10
    assert_lists_close(actual[0], expected[0], rtol)
    assert_lists_close(actual[1], expected[1], rtol)
    assert all(d.abs().max() > 0 for d in actual[1][len(grads):])  # every parameter gets a gradient


@pytest.mark.parametrize("piecewise", [False, True])
def test_float64_gradcheck(piecewise):
    amplifier = make_amplifier((4, 3))
    weights, biases = mlp_layers(amplifier)
    grads = random_grads([(3, 4), (5,)])
    inputs = [t.detach().clone().requires_grad_() for t in grads + weights + biases]
    layers = len(weights)

    def run(*tensors):
        return tuple(ops.amplify(list(tensors[:2]), list(tensors[2:2 + layers]), list(tensors[2 + layers:]),
                                 1.7, piecewise))

    assert torch.autograd.gradcheck(run, inputs, eps=1e-6, atol=1e-6, rtol=1e-4)


def test_backward_op_is_reachable_and_matches_autograd():
    amplifier = make_amplifier((8, 8))
    weights, biases = mlp_layers(amplifier)
    grads = random_grads([(6, 2), (9,)])
    cotangents = random_grads([(6, 2), (9,)], seed=5)
    inputs = [g.clone().requires_grad_() for g in grads] + weights + biases
    outputs = ops.amplify(inputs[:2], weights, biases, 1.0, True)
    expected = torch.autograd.grad(outputs, inputs, cotangents)
    direct = ops._amplify_backward(cotangents, grads, [w.detach() for w in weights], [b.detach() for b in biases],
                                   1.0, True)
    # the op returns grads w.r.t. grads, then weights, then biases: the same order as `inputs`
    assert_lists_close(list(direct), list(expected), 1e-12)


# -- piecewise vs dense -----------------------------------------------------------------------------
@pytest.mark.parametrize("hidden_sizes, scale, count", [
    ((32,), 1.0, 60), ((8, 8), 3.0, 60), ((16, 16, 16), 1.0, 60), ((), 1.0, 20),
    ((512, 512), 1e-2, 400), ((512, 512), 1.0, 3000),
])
def test_piecewise_matches_dense(hidden_sizes, scale, count):
    amplifier = make_amplifier(hidden_sizes)
    grads = random_grads([(count,), (count // 3, 3), (1,)], scale=scale)
    assert_piecewise_path_runs(amplifier, grads)
    fast = values_and_grads(by_method(amplifier, "piecewise"), grads, amplifier)
    dense = values_and_grads(by_method(amplifier, "dense"), grads, amplifier)
    assert_lists_close(fast[0], dense[0], 1e-10)
    assert_lists_close(fast[1], dense[1], 1e-9)


def test_too_many_pieces_falls_back_to_dense():
    amplifier = make_amplifier((512,))
    grads = [torch.linspace(-100, 100, 10, dtype=F64)]
    assert piece_count(amplifier, grads) > 256  # over max(256, N / 4): the op runs the dense path
    fast = values_and_grads(by_method(amplifier, "piecewise"), grads, amplifier)
    expected = values_and_grads(by_reference(amplifier), grads, amplifier)
    assert_lists_close(fast[0], expected[0], 1e-10)
    assert_lists_close(fast[1], expected[1], 1e-9)


# Properties of the CPU kernel's piece table, which the device-generic (dense) path does not use:
# skipped when the whole suite runs on the generic path (NEURALGROK_GENERIC_KERNELS=1).
cpu_piecewise_only = pytest.mark.skipif(generic_kernels_enabled(), reason="the piece table is the CPU kernel's")


@cpu_piecewise_only
def test_piecewise_float32_is_as_accurate_as_a_float64_reference():
    # The table is compiled and evaluated in float64, so float32 inputs lose only the final casts,
    # even where s is large (1e6-scale entries) and float32 scores would distort the softmax.
    amplifier = make_amplifier((16, 16), torch.float32)
    for scale in (1e-30, 1e-3, 1.0, 1e6):
        grads = random_grads([(40,), (8, 4)], scale=scale, dtype=torch.float32)
        fast = values_and_grads(by_method(amplifier, "piecewise"), grads, amplifier)
        exact = values_and_grads(by_reference(amplifier, dtype=F64), grads, amplifier)
        assert_lists_close(fast[0], exact[0], 1e-5)
        assert_lists_close(fast[1], exact[1], 1e-4)


def test_piece_table_matches_the_mlp():
    amplifier = make_amplifier((64, 32))
    weights, biases = [[t.detach() for t in ts] for ts in mlp_layers(amplifier)]
    breakpoints, slopes, intercepts = ops._relu_mlp_pieces(weights, biases, -3.0, 3.0)
    assert len(breakpoints) >= 30 and bool((torch.diff(breakpoints) > 0).all())
    edges = torch.cat([torch.tensor([-3.0], dtype=F64), breakpoints, torch.tensor([3.0], dtype=F64)])
    mids = (edges[:-1] + edges[1:]) / 2
    mlp = lambda x: amplifier.mlp(x.reshape(-1, 1)).reshape(-1).detach()  # noqa: E731
    torch.testing.assert_close(slopes * mids + intercepts, mlp(mids), rtol=1e-12, atol=1e-12)
    # continuous at every breakpoint: both neighbouring pieces give the MLP's value there
    for side in (slice(None, -1), slice(1, None)):
        torch.testing.assert_close(slopes[side] * breakpoints + intercepts[side], mlp(breakpoints),
                                   rtol=1e-10, atol=1e-10)


@cpu_piecewise_only
def test_entries_on_breakpoints_take_the_piece_on_their_right():
    amplifier = make_amplifier((16, 16), seed=3)
    weights, biases = [[t.detach() for t in ts] for ts in mlp_layers(amplifier)]
    breakpoints, _, _ = ops._relu_mlp_pieces(weights, biases, -2.0, 2.0)
    right_widths = torch.diff(torch.cat([breakpoints, torch.tensor([2.0], dtype=F64)]))
    on = breakpoints[(right_widths > 1e-6) & (breakpoints < 2.0)]
    assert len(on) >= 10
    grads = [torch.cat([on, torch.linspace(-2, 2, 17, dtype=F64)])]
    shift = torch.zeros_like(grads[0])
    shift[:len(on)] = 1e-10
    fast = values_and_grads(by_method(amplifier, "piecewise"), grads, amplifier)
    at_points = values_and_grads(by_reference(amplifier), grads, amplifier)
    from_right = values_and_grads(by_reference(amplifier), [grads[0] + shift], amplifier)
    from_left = values_and_grads(by_reference(amplifier), [grads[0] - shift], amplifier)
    assert_lists_close(fast[0], at_points[0], 1e-12)  # the value is continuous
    assert_lists_close(fast[1], from_right[1], 1e-6)
    # the convention matters: the one-sided gradients from the left differ
    assert not all(torch.allclose(a, b, rtol=1e-4) for a, b in zip(fast[1], from_left[1]))


@pytest.mark.parametrize("case", ["all_equal", "huge", "tiny", "with_zeros", "one_element", "mixed_scales"])
def test_piecewise_matches_reference_on_adversarial_inputs(case):
    amplifier = make_amplifier((8, 8), rescale=2.0)
    grads = {
        "all_equal": [torch.full((9,), 0.3, dtype=F64), torch.full((2, 2), -1.5, dtype=F64)],
        "huge": random_grads([(30,), (4, 5)], scale=1e6),
        "tiny": random_grads([(30,), (4, 5)], scale=1e-30),
        "with_zeros": [torch.tensor([0.0, 1.0, 0.0, -2.0, 0.0], dtype=F64), torch.zeros(3, dtype=F64)],
        "one_element": [torch.tensor([0.7], dtype=F64), torch.tensor(-3.0, dtype=F64)],
        "mixed_scales": [torch.tensor([1e6, 1e-30, -1e-3, 0.5], dtype=F64), torch.tensor([-1e6], dtype=F64)],
    }[case]
    fast = values_and_grads(by_method(amplifier, "piecewise"), grads, amplifier)
    expected = values_and_grads(by_reference(amplifier), grads, amplifier)
    assert_lists_close(fast[0], expected[0], 1e-10)
    # With 1e6 entries the softmax is one-hot: every derivative is ~0 (1e-22) in exact arithmetic, so
    # compare on the scale of d g'/d g ~ rescale / ||g|| instead.
    assert_lists_close(fast[1], expected[1], 1e-8, atol=1e-16 if case in ("huge", "mixed_scales") else 0.0)
    dense = values_and_grads(by_method(amplifier, "dense"), grads, amplifier)
    assert_lists_close(dense[0], expected[0], 1e-10)


@pytest.mark.parametrize("method", ["dense", "piecewise"])
def test_zero_and_empty_tensors(method):
    amplifier = make_amplifier((8,))
    grads = [torch.zeros(5, 2, dtype=F64), torch.zeros(0, dtype=F64), torch.zeros(0, 4, dtype=F64)]
    outputs, derivatives = values_and_grads(by_method(amplifier, method), grads, amplifier)
    assert [o.shape for o in outputs] == [g.shape for g in grads]
    assert all(bool((d == 0).all()) for d in outputs + derivatives)  # zeros: no NaN, no stray gradient
    one, _ = values_and_grads(by_method(amplifier, method), [torch.tensor([0.0, 3.0], dtype=F64)], amplifier)
    assert one[0].tolist() == [0.0, 1.0]


def test_output_norm_is_rescale_and_softmax_is_per_tensor():
    amplifier = make_amplifier((16,), rescale=3.0)
    grads = random_grads(MIXED_SHAPES)
    together = amplifier.amplify(grads)
    for grad, output in zip(grads, together):
        torch.testing.assert_close(output, amplifier(grad), rtol=1e-12, atol=1e-15)
        assert math.isclose(output.norm().item(), 3.0, rel_tol=1e-12)
        assert bool((torch.sign(output) == torch.sign(grad)).all())


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), log10_scale=st.floats(-30, 6),
       sizes=st.lists(st.integers(0, 40), min_size=1, max_size=4),
       hidden_sizes=st.sampled_from([(4,), (8, 8), (16, 16, 16)]))
def test_piecewise_equals_dense_property(seed, log10_scale, sizes, hidden_sizes):
    amplifier = make_amplifier(hidden_sizes, seed=seed % 1000)
    grads = random_grads([(n,) for n in sizes], scale=10.0 ** log10_scale, seed=seed)
    fast = values_and_grads(by_method(amplifier, "piecewise"), grads, amplifier)
    dense = values_and_grads(by_method(amplifier, "dense"), grads, amplifier)
    assert_lists_close(fast[0], dense[0], 1e-9)
    assert_lists_close(fast[1], dense[1], 1e-7)


# -- the module ------------------------------------------------------------------------------------
def test_state_dict_keys_match_the_reference_layout():
    amplifier = NeuralAmplifier((32, 32))
    assert list(amplifier.state_dict()) == ["mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias",
                                            "mlp.4.weight", "mlp.4.bias"]
    torch.manual_seed(4)
    theirs = nn.Sequential(nn.Linear(1, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 1))
    amplifier.load_state_dict({f"mlp.{k}": v for k, v in theirs.state_dict().items()})
    grad = torch.randn(50)
    p = torch.softmax(theirs(grad.reshape(-1, 1)).reshape(-1), dim=0)
    expected = p * grad / (p * grad).norm()
    torch.testing.assert_close(amplifier(grad).detach(), expected.detach(), rtol=1e-5, atol=1e-7)


def test_forward_and_amplify_agree_and_keep_shapes():
    amplifier = make_amplifier((16,), torch.float32)
    grads = random_grads(MIXED_SHAPES, dtype=torch.float32) + [torch.randn(6, 4).t(), torch.randn(5, 8)[:, ::3]]
    for method in ("auto", "piecewise", "dense"):
        outputs = amplifier.amplify(grads, method=method)
        for grad, output in zip(grads, outputs):
            assert output.shape == grad.shape
            torch.testing.assert_close(output, amplifier(grad), rtol=1e-5, atol=1e-7)
    assert amplifier.amplify([]) == []


@pytest.mark.parametrize("activation", ["tanh", "gelu"])
def test_non_relu_activation_uses_a_dense_pytorch_path(activation):
    amplifier = make_amplifier((8, 8), activation=activation)
    function = {"tanh": torch.tanh, "gelu": torch.nn.functional.gelu}[activation]
    grads = random_grads(MIXED_SHAPES) + [torch.zeros(3, dtype=F64), torch.zeros(0, dtype=F64)]
    actual = values_and_grads(by_method(amplifier, "auto"), grads, amplifier)
    expected = values_and_grads(by_reference(amplifier, activation=function), grads, amplifier)
    assert_lists_close(actual[0], expected[0], 1e-10)
    assert_lists_close(actual[1], expected[1], 1e-9)
    with pytest.raises(ValueError, match="needs activation='relu'"):
        amplifier.amplify(grads, method="piecewise")


# -- virtual_step and the meta-gradient -------------------------------------------------------------
def test_virtual_step_matches_reference_with_per_tensor_lrs():
    params = random_grads([(4, 3), (5,)], seed=7)
    updates = random_grads([(4, 3), (5,)], seed=8)
    lrs = [0.1, 0.003]
    inputs = [t.clone().requires_grad_() for t in params + updates]
    stepped = ops.virtual_step(inputs[:2], inputs[2:], lrs)
    expected = reference.virtual_step(params, updates, lrs)
    assert_lists_close(list(stepped), expected, 1e-15)
    cotangents = random_grads([(4, 3), (5,)], seed=9)
    derivatives = torch.autograd.grad(stepped, inputs, cotangents)
    assert_lists_close(list(derivatives), cotangents + [-lr * c for lr, c in zip(lrs, cotangents)], 1e-15)
    assert torch.autograd.gradcheck(lambda *t: tuple(ops.virtual_step(list(t[:2]), list(t[2:]), lrs)), inputs)


@pytest.mark.parametrize("method", ["dense", "piecewise"])
def test_meta_gradient_through_virtual_step(method):
    amplifier = make_amplifier((16, 16))
    params = random_grads([(6, 4), (4,)], seed=10)
    grads = random_grads([(6, 4), (4,)], scale=1e-2, seed=11)
    outer = random_grads([(6, 4), (4,)], seed=12)  # dL_outer / dtheta'
    lrs = [1e-3, 1e-2]

    def meta_gradient(step, transform):
        amplifier.zero_grad()
        torch.autograd.backward(step(params, transform(grads), lrs), outer)
        return [p.grad.clone() for p in amplifier.parameters()]

    actual = meta_gradient(lambda *a: list(ops.virtual_step(*a)), by_method(amplifier, method))
    expected = meta_gradient(reference.virtual_step, by_reference(amplifier))
    assert_lists_close(actual, expected, 1e-9)


# -- bad inputs ------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["dense", "piecewise"])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_grads_name_their_index(method, bad):
    amplifier = make_amplifier((8,))
    grads = random_grads([(3,), (4,), (2, 2), (5,)])
    grads[3][2] = bad
    with pytest.raises(RuntimeError, match=r"grads\[3\] contains NaN or Inf"):
        amplifier.amplify(grads, method=method)


def test_op_validates_its_arguments():
    amplifier = make_amplifier((4,))
    w, b = [[t.detach() for t in ts] for ts in mlp_layers(amplifier)]
    g = [torch.randn(3, dtype=F64)]
    cases = [
        (lambda: ops.amplify([], w, b, 1.0), r"at least one tensor in grads"),
        (lambda: ops.amplify(g, w, b[:1], 1.0), r"weights has 2 tensors but biases has 1"),
        (lambda: ops.amplify(g, [torch.randn(4, 2, dtype=F64), w[1]], b, 1.0), r"weights\[0\] has shape \[4, 2\]"),
        (lambda: ops.amplify(g, [w[0], torch.randn(2, 4, dtype=F64)], [b[0], torch.randn(2, dtype=F64)], 1.0),
         r"expected one output feature"),
        (lambda: ops.amplify(g, [w[0], torch.randn(1, 5, dtype=F64)], b, 1.0), r"weights\[1\] has shape \[1, 5\]"),
        (lambda: ops.amplify(g, w, [b[0], torch.randn(2, dtype=F64)], 1.0), r"biases\[1\] has shape \[2\]"),
        (lambda: ops.amplify([g[0].float()], w, b, 1.0), r"weights\[0\] has dtype Double but grads have Float"),
        (lambda: ops.amplify([g[0], g[0].float()], w, b, 1.0), r"grads\[1\] has dtype Float"),
        (lambda: ops.amplify([g[0].long()], w, b, 1.0), r"expected float32 or float64"),
        (lambda: ops.amplify(g, [w[0] * math.nan, w[1]], b, 1.0), r"weights\[0\] contains NaN or Inf"),
        (lambda: ops.amplify(g, w, b, math.inf), r"rescale must be finite"),
        (lambda: ops._amplify_backward([torch.randn(4, dtype=F64)], g, w, b, 1.0, True),
         r"grad_outputs\[0\] has shape \[4\] but grads\[0\] has shape \[3\]"),
        (lambda: ops.virtual_step(g, g, [0.1, 0.2]), r"lrs has 2 values"),
        (lambda: ops.virtual_step(g, [torch.randn(4, dtype=F64)], [0.1]), r"updates\[0\] has shape \[4\]"),
        (lambda: ops.virtual_step(g, [g[0].float()], [0.1]), r"updates\[0\] has dtype Float"),
        (lambda: ops.virtual_step(g, g, [math.nan]), r"lrs\[0\] is nan"),
    ]
    for call, message in cases:
        with pytest.raises(RuntimeError, match=message):
            call()


@pytest.mark.parametrize("kwargs, error, message", [
    ({"hidden_sizes": 32}, TypeError, "sequence of positive ints"),
    ({"hidden_sizes": (16, 2.5)}, TypeError, "must hold ints"),
    ({"hidden_sizes": (16, 0)}, ValueError, ">= 1"),
    ({"rescale": 0.0}, ValueError, "finite and > 0"),
    ({"rescale": math.nan}, ValueError, "finite and > 0"),
    ({"rescale": "1"}, TypeError, "real number"),
    ({"activation": "swish"}, ValueError, "choose one of"),
    ({"activation": nn.ReLU}, TypeError, "must be a string"),
])
def test_constructor_validates(kwargs, error, message):
    with pytest.raises(error, match=message):
        NeuralAmplifier(**kwargs)


def test_module_call_errors_are_clear():
    amplifier = NeuralAmplifier()
    with pytest.raises(TypeError, match="list of tensors"):
        amplifier.amplify(torch.randn(3))
    with pytest.raises(TypeError, match=r"grads\[1\] is a list"):
        amplifier.amplify([torch.randn(3), [1.0]])
    with pytest.raises(ValueError, match="method='fast'"):
        amplifier.amplify([torch.randn(3)], method="fast")
    with pytest.raises(TypeError, match="takes a tensor"):
        amplifier([torch.randn(3)])


# -- the exps: AVX2 kernel (where the CPU has it) and the baseline loop -------------------------------
AMPLIFY_IN_SUBPROCESS = """
import sys, torch, neuralgrok._extension as ext
path = sys.argv[1]
saved = torch.load(path)
results = []
for grads, weights, biases, cotangents in saved["cases"]:
    for piecewise in (True, False):
        out = torch.ops.neuralgrok.amplify(grads, weights, biases, 1.5, piecewise)
        back = torch.ops.neuralgrok._amplify_backward(cotangents, grads, weights, biases, 1.5, piecewise)
        results.append((list(out), list(back)))
torch.save({"kernels": ext.simd_kernels(), "results": results}, path)
"""


def exp_kernel_cases():
    cases = []
    for dtype in (torch.float32, F64):
        amplifier = make_amplifier((16, 16), dtype, seed=3)
        weights, biases = (list(t.detach() for t in ts) for ts in mlp_layers(amplifier))
        # Sizes that exercise the 4-wide loop, its remainder and parallel_reduce's chunks; a wide range
        # of scores (entries of up to 30) so that some exps are far below 1.
        grads = random_grads([(3,), (5, 7), (20001,), (0,), (4097,)], scale=3.0, dtype=dtype, seed=4)
        grads[2][:50] *= 10
        cotangents = random_grads([tuple(g.shape) for g in grads], dtype=dtype, seed=5)
        cases.append((grads, weights, biases, cotangents))
    return cases


def test_baseline_exp_loop_matches_avx2_kernel_and_reference(tmp_path):
    # The default keeps std::exp entry by entry (kernels/select.h); NEURALGROK_AMPLIFY_KERNEL=avx2 takes the
    # exps 4 at a time, within 1 ulp of std::exp, and sums the squares in 4 lanes. The two agree to a few
    # float64 ulps (float64: rtol 1e-13; float32 outputs: rtol 1e-6, a float32 rounding flipped now and
    # then) and both match the reference. AGE's kernel is AVX2 by default where the CPU has it, so it says
    # which amplify kernel the subprocess can get.
    import os
    import subprocess
    import sys
    from neuralgrok._extension import simd_kernels
    cases = exp_kernel_cases()
    torch.save({"cases": cases}, tmp_path / "io.pt")
    result = subprocess.run([sys.executable, "-c", AMPLIFY_IN_SUBPROCESS, str(tmp_path / "io.pt")],
                            env={**os.environ, "NEURALGROK_AMPLIFY_KERNEL": "avx2"}, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    out = torch.load(tmp_path / "io.pt")
    assert simd_kernels()["amplify"] == "baseline"  # the default, on every CPU
    assert out["kernels"]["amplify"] == simd_kernels()["age"]  # avx2 where the build and the CPU have it
    results = iter(out["results"])
    for grads, weights, biases, cotangents in cases:
        rtol = 1e-6 if grads[0].dtype == torch.float32 else 1e-13
        for piecewise in (True, False):
            avx2_out, avx2_back = next(results)  # the subprocess's: AVX2 where available
            here_out = list(ops.amplify(grads, weights, biases, 1.5, piecewise))
            here_back = list(ops._amplify_backward(cotangents, grads, weights, biases, 1.5, piecewise))
            assert_lists_close(here_out, avx2_out, rtol)
            assert_lists_close(here_back, avx2_back, 10 * rtol)
            exact = reference.amplify([g.double() for g in grads], [w.double() for w in weights],
                                      [b.double() for b in biases], 1.5)
            assert_lists_close([o.double() for o in here_out], [e.detach() for e in exact], 1e-5)


def test_spread_is_one_for_a_flat_amplifier_and_exact_for_a_known_response():
    flat = NeuralAmplifier((4,))
    with torch.no_grad():
        flat.mlp[-1].weight.zero_()  # s(g) = the last bias: every entry weighs alike
    assert flat.spread() == 1.0
    # One hidden unit, s(g) = 10 relu(g): w(g) = exp(10 max(g, 0)) is 1 on the negative side and largest at
    # g = high, so the spread over ±[1e-9, 0.1] is e (and e^0.5 over ±[1e-9, 0.05]).
    ramp = NeuralAmplifier((1,))
    with torch.no_grad():
        ramp.mlp[0].weight.fill_(1.0), ramp.mlp[0].bias.zero_(), ramp.mlp[2].weight.fill_(10.0)
    assert ramp.spread() == pytest.approx(math.e, rel=1e-12)
    assert ramp.spread(high=0.05) == pytest.approx(math.exp(0.5), rel=1e-12)
    assert ramp.mlp[0].weight.dtype == torch.float32  # the float64 copy leaves the amplifier as it was
    for kwargs in (dict(low=0.0), dict(low=0.2), dict(high=float("inf")), dict(points=1)):
        with pytest.raises(ValueError, match="spread needs 0 < low < high"):
            ramp.spread(**kwargs)
