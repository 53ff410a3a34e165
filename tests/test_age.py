"""torch.ops.neuralgrok.age and neuralgrok.age against the pure-PyTorch reference."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import neuralgrok
from neuralgrok.optim import reference

VARIANTS = [(pt, nz) for pt in (False, True) for nz in (False, True)]


def age_op(tensors, per_tensor=False, normalized=False, eps=0.0):
    return torch.ops.neuralgrok.age(tensors, per_tensor, normalized, eps)


def sample_tensors(dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = [(7, 5), (3,), (2, 3, 4), ()]
    return [torch.randn(s, generator=g, dtype=dtype) * 1e-2 for s in shapes]


@pytest.mark.parametrize("per_tensor,normalized", VARIANTS)
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_values_match_reference(per_tensor, normalized, dtype, tol):
    tensors = sample_tensors(dtype)
    got = age_op(tensors, per_tensor, normalized)
    want = reference.age(tensors, per_tensor, normalized)
    assert got.dtype == dtype
    assert got.shape == ((len(tensors),) if per_tensor else ())
    torch.testing.assert_close(got, want, rtol=tol, atol=tol)


def test_known_values():
    # One entry of 0.5: -0.5 log 0.5 (with eps: -0.5 log(0.5 + eps)); the normalised entropy of a
    # uniform vector is log(n).
    x = torch.tensor([0.5], dtype=torch.float64)
    assert age_op([x]).item() == pytest.approx(-0.5 * math.log(0.5), rel=1e-15)
    assert age_op([x], eps=1e-8).item() == pytest.approx(-0.5 * math.log(0.5 + 1e-8), rel=1e-14)
    uniform = torch.full((10,), -3.0, dtype=torch.float64)
    assert age_op([uniform], normalized=True).item() == pytest.approx(math.log(10), rel=1e-14)
    one_hot = torch.zeros(10, dtype=torch.float64)
    one_hot[3] = 2.0
    assert age_op([one_hot], normalized=True).item() == 0.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_exact_zeros_add_nothing_by_default(dtype):
    # The paper's AGE has no epsilon and 0 log 0 = 0: exact zeros (every real model's gradient has
    # some) add nothing and get the 0 subgradient, instead of NaN; eps > 0 stays available.
    x = torch.tensor([0.0, 0.25, -0.0, -2.0, 0.0], dtype=dtype, requires_grad=True)
    value = age_op([x])
    want = -(0.25 * math.log(0.25) + 2.0 * math.log(2.0))
    assert value.item() == pytest.approx(want, rel=1e-6)
    (grad,) = torch.autograd.grad(value, [x])
    assert torch.isfinite(grad).all() and grad[[0, 2, 4]].eq(0).all()
    torch.testing.assert_close(grad[[1, 3]], torch.tensor([-(math.log(0.25) + 1), math.log(2.0) + 1], dtype=dtype))
    assert torch.isfinite(age_op([torch.zeros(3, dtype=dtype)])).all()
    torch.testing.assert_close(age_op([x.detach()], eps=1e-8), reference.age([x.detach()], eps=1e-8))


def test_global_normalized_is_entropy_of_the_concatenation():
    a, b = torch.rand(6, dtype=torch.float64), torch.rand(4, 2, dtype=torch.float64)
    torch.testing.assert_close(age_op([a, b], normalized=True), age_op([torch.cat([a, b.reshape(-1)])], normalized=True))


@pytest.mark.parametrize("per_tensor,normalized", VARIANTS)
def test_gradcheck_float64(per_tensor, normalized):
    g = torch.Generator().manual_seed(1)
    # Entries away from 0, where |x| is not differentiable.
    tensors = [(torch.rand(s, generator=g, dtype=torch.float64) + 0.1) * torch.tensor([1.0, -1.0]).repeat(3)[: s[-1]]
               for s in [(2, 3), (3,)]]
    tensors = [t.requires_grad_() for t in tensors]
    assert torch.autograd.gradcheck(lambda *ts: age_op(list(ts), per_tensor, normalized), tuple(tensors))


@pytest.mark.parametrize("per_tensor,normalized", VARIANTS)
def test_gradients_match_reference_float32(per_tensor, normalized):
    # The truth is the reference in float64: a float32 reference has rounding noise of order
    # eps / |x| (e.g. on a one-element tensor, whose normalised entropy is identically 0).
    tensors = [t.requires_grad_() for t in sample_tensors(torch.float32, seed=3)]
    exact = [t.detach().double().requires_grad_() for t in tensors]
    weights = torch.randn(len(tensors), generator=torch.Generator().manual_seed(4)) if per_tensor else torch.tensor(1.7)
    got = torch.autograd.grad((age_op(tensors, per_tensor, normalized) * weights).sum(), tensors)
    want = torch.autograd.grad((reference.age(exact, per_tensor, normalized) * weights.double()).sum(), exact)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b.float(), rtol=1e-4, atol=1e-5)


def test_zero_gradient_at_zero_entries_and_zero_tensors():
    x = torch.zeros(5, dtype=torch.float64, requires_grad=True)
    for normalized in (False, True):
        value = age_op([x], normalized=normalized)
        assert value.item() == 0.0
        (grad,) = torch.autograd.grad(value, x)
        assert torch.equal(grad, torch.zeros_like(grad))


def test_non_contiguous_inputs():
    base = torch.randn(8, 6, dtype=torch.float64)
    strided = base.t()[::2]
    assert not strided.is_contiguous()
    torch.testing.assert_close(age_op([strided]), reference.age([strided.contiguous()]))


def test_empty_tensors_contribute_nothing():
    x = torch.randn(4, dtype=torch.float64)
    empty = torch.empty(0, 3, dtype=torch.float64)
    torch.testing.assert_close(age_op([x, empty]), age_op([x]))
    assert age_op([empty], per_tensor=True).tolist() == [0.0]


def test_nonfinite_entries_give_nonfinite_result():
    assert torch.isnan(age_op([torch.tensor([1.0, float("nan")])]))
    assert not torch.isfinite(age_op([torch.tensor([1.0, float("inf")])]))


@pytest.mark.parametrize(
    "tensors,match",
    [
        # With no tensor to pick a device from, the dispatcher runs the device-generic kernel, which
        # refuses (torch versions that find no kernel say "empty list").
        ([], "at least one tensor|empty list"),
        ([torch.ones(2, dtype=torch.int64)], "dtype"),
        ([torch.ones(2), torch.ones(2, dtype=torch.float64)], "all must match"),
        ([torch.ones(2, dtype=torch.float16)], "float32 or float64"),
    ],
)
def test_bad_inputs_raise_clear_errors(tensors, match):
    with pytest.raises(RuntimeError, match=match):
        age_op(tensors)


def test_negative_eps_rejected():
    with pytest.raises(RuntimeError, match="eps"):
        age_op([torch.ones(2)], eps=-1.0)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=1, max_size=40), st.booleans())
def test_property_matches_reference(values, normalized):
    x = torch.tensor(values, dtype=torch.float64)
    torch.testing.assert_close(age_op([x], normalized=normalized), reference.age([x], normalized=normalized),
                               rtol=1e-10, atol=1e-10)


class TestPythonWrapper:
    def model_with_grads(self):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
        model(torch.randn(5, 4)).pow(2).sum().backward()
        return model

    def test_module_grads_and_weights(self):
        model = self.model_with_grads()
        grads = [p.grad for p in model.parameters()]
        torch.testing.assert_close(neuralgrok.age(model), reference.age(grads))
        torch.testing.assert_close(neuralgrok.age(model, of="weight"), reference.age([p.detach() for p in model.parameters()]))

    def test_per_tensor_module_returns_names(self):
        per = neuralgrok.age(self.model_with_grads(), per_tensor=True)
        assert list(per) == ["0.weight", "0.bias", "2.weight", "2.bias"]

    def test_parameters_without_grad_are_skipped(self):
        model = self.model_with_grads()
        model[2].bias.grad = None
        assert "2.bias" not in neuralgrok.age(model, per_tensor=True)

    def test_clear_errors(self):
        with pytest.raises(ValueError, match="backward"):
            neuralgrok.age(torch.nn.Linear(2, 2))
        with pytest.raises(ValueError, match="choose one of"):
            neuralgrok.age(torch.nn.Linear(2, 2), of="bias")
        with pytest.raises(TypeError, match="wrap a single tensor"):
            neuralgrok.age(torch.ones(3))
        with pytest.raises(TypeError, match="not a tensor"):
            neuralgrok.age([torch.ones(3), 2.0])
        with pytest.raises(ValueError, match="no tensors"):
            neuralgrok.age([])


def test_meta_tensors_give_shapes_only():
    tensors = [torch.empty(3, 4, device="meta"), torch.empty(2, device="meta")]
    assert torch.ops.neuralgrok.age(tensors, True, False, 1e-8).shape == (2,)
    assert torch.ops.neuralgrok.age(tensors, False, False, 1e-8).shape == ()


@pytest.mark.skipif(not hasattr(torch.library, "opcheck"), reason="torch.library.opcheck needs torch 2.4+")
@pytest.mark.parametrize("per_tensor,normalized", VARIANTS)
def test_opcheck(per_tensor, normalized):
    tensors = [t.requires_grad_() for t in sample_tensors(torch.float64)]
    torch.library.opcheck(torch.ops.neuralgrok.age.default, (tensors, per_tensor, normalized, 1e-8))


@pytest.mark.parametrize("values", [[5e-324], [5e-324, 5e-324, 1e-320], [1e-310, 3e-300, 0.0, 2e-308]])
def test_normalized_is_exact_for_subnormal_inputs(values):
    # The normalised entropy is scale-invariant: tiny (even subnormal) inputs must give the same
    # value as the same vector scaled into the normal range.
    tiny = torch.tensor(values, dtype=torch.float64)
    scaled = tiny * 2.0 ** 1000
    torch.testing.assert_close(age_op([tiny], normalized=True), age_op([scaled], normalized=True), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(age_op([tiny[:1], tiny[1:]], normalized=True), age_op([scaled], normalized=True),
                               rtol=1e-12, atol=1e-12)


def test_normalized_gradient_is_scale_covariant_for_tiny_inputs():
    # H(c x) = H(x), so dH/dx at c x is (dH/dx at x) / c.
    x = torch.tensor([0.3, -1.2, 2.0, 0.7], dtype=torch.float64)
    c = 2.0 ** -1000  # tiny, but 1/c must stay representable for the gradient
    xs = x.clone().requires_grad_()
    (grad_x,) = torch.autograd.grad(age_op([xs], normalized=True), [xs])
    ts = (x * c).requires_grad_()
    (grad_tiny,) = torch.autograd.grad(age_op([ts], normalized=True), [ts])
    torch.testing.assert_close(grad_tiny * c, grad_x, rtol=1e-10, atol=0)


def large_and_small_tensors(dtype):
    # Sizes around and across the op's internal chunk boundaries (tensors split between chunks,
    # several per chunk, empty ones, zeros), as a model's gradients are.
    g = torch.Generator().manual_seed(5)
    sizes = [20000, 3, 8189, 0, 1, 8192, 16385, 128, 7]
    tensors = [torch.randn(n, generator=g, dtype=dtype) * 1e-3 for n in sizes]
    tensors[1].zero_()
    return tensors


@pytest.mark.parametrize("per_tensor,normalized", VARIANTS)
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_values_match_reference_across_chunks(per_tensor, normalized, dtype, tol):
    tensors = large_and_small_tensors(dtype)
    torch.testing.assert_close(age_op(tensors, per_tensor, normalized), reference.age(tensors, per_tensor, normalized),
                               rtol=tol, atol=tol)


@pytest.mark.parametrize("per_tensor,normalized", VARIANTS)
def test_result_does_not_depend_on_thread_count(per_tensor, normalized):
    tensors = large_and_small_tensors(torch.float32) * 8
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = age_op(tensors, per_tensor, normalized)
        torch.set_num_threads(4)
        four = age_op(tensors, per_tensor, normalized)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, four)


@pytest.mark.parametrize("per_tensor", [False, True])
def test_normalized_nan_among_zeros_is_nan(per_tensor):
    x = torch.tensor([0.0, float("nan"), 0.0])
    assert torch.isnan(age_op([x], per_tensor, normalized=True)).all()


# -- the float32 kernels: AVX2 (where the CPU has it) and the baseline path ---------------------------
def run_in_subprocess(env, code, tmp_path):
    """Runs ``code`` in a fresh interpreter with the extra environment ``env`` (the kernel switches are
    read once per process); ``code`` reads its inputs from and writes its outputs to ``io.pt``."""
    import os
    import subprocess
    import sys
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path / "io.pt")], env={**os.environ, **env},
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return torch.load(tmp_path / "io.pt")


AGE_IN_SUBPROCESS = """
import sys, torch, neuralgrok._extension as ext
path = sys.argv[1]
tensors = torch.load(path)["tensors"]
values = [torch.ops.neuralgrok.age(tensors, pt, nz, 0.0) for pt in (False, True) for nz in (False, True)]
torch.save({"kernels": ext.simd_kernels(), "values": values}, path)
"""


def test_baseline_float32_path_matches_reference_and_avx2_path(tmp_path):
    # NEURALGROK_AGE_KERNEL=baseline turns the AVX2 kernels off (kernels/select.h): the float32 sums then
    # take the buffered ATen-log path, which every CPU without AVX2 runs. Both are float32 logs summed in
    # float64: each within 1e-6 (relative) of the float64 reference, and within 2e-6 of each other.
    from neuralgrok._extension import simd_kernels
    tensors = large_and_small_tensors(torch.float32)
    torch.save({"tensors": tensors}, tmp_path / "io.pt")
    out = run_in_subprocess({"NEURALGROK_AGE_KERNEL": "baseline"}, AGE_IN_SUBPROCESS, tmp_path)
    assert out["kernels"]["age"] == "baseline"
    assert simd_kernels()["age"] in ("avx2", "baseline")  # avx2 wherever the build and the CPU allow it
    here = [age_op(tensors, pt, nz) for pt, nz in VARIANTS]
    for (pt, nz), baseline, current in zip(VARIANTS, out["values"], here):
        exact = reference.age([t.double() for t in tensors], pt, nz)
        torch.testing.assert_close(baseline.double(), exact, rtol=1e-6, atol=1e-9)
        torch.testing.assert_close(current.double(), exact, rtol=1e-6, atol=1e-9)
        torch.testing.assert_close(baseline, current, rtol=2e-6, atol=2e-9)


def test_kernel_switch_rejects_unknown_values(tmp_path):
    torch.save({"tensors": [torch.ones(3)]}, tmp_path / "io.pt")
    with pytest.raises(AssertionError, match="NEURALGROK_AGE_KERNEL=fast: expected avx2"):
        run_in_subprocess({"NEURALGROK_AGE_KERNEL": "fast"}, AGE_IN_SUBPROCESS, tmp_path)
