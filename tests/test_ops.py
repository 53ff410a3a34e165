"""neuralgrok.ops: the one typed Python surface of the C++ ops, and the only module of the package that calls them."""
import ast
import inspect
from pathlib import Path

import torch

from neuralgrok import ops
from neuralgrok.optim import reference

PACKAGE = Path(ops.__file__).resolve().parent
SCHEMA_OPS = ("age", "_age_backward", "grokfast_ema_", "grokfast_ma_", "amplify", "_amplify_backward",
              "_relu_mlp_pieces", "virtual_step", "_virtual_step_backward")


def test_every_op_has_a_typed_documented_function():
    for op in SCHEMA_OPS:
        name = op.lstrip("_")
        function = getattr(ops, name)
        assert name in ops.__all__ and function.__doc__, op
        signature = inspect.signature(function)
        assert signature.return_annotation is not inspect.Signature.empty, op
        assert all(p.annotation is not inspect.Parameter.empty for p in signature.parameters.values()), op


def test_no_other_module_calls_torch_ops_neuralgrok():
    callers = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Attribute) and node.attr == "neuralgrok" and isinstance(node.value, ast.Attribute)
                    and node.value.attr == "ops"):
                callers.append(path.relative_to(PACKAGE).as_posix())
    assert sorted(set(callers)) == ["ops.py"]


def test_the_functions_give_what_the_ops_give():
    torch.manual_seed(0)
    tensors = [torch.randn(3, 4), torch.randn(5)]
    assert torch.equal(ops.age(tensors), torch.ops.neuralgrok.age(tensors, False, False, 0.0))
    assert torch.equal(ops.age(tensors, per_tensor=True, eps=1e-8), torch.ops.neuralgrok.age(tensors, True, False, 1e-8))
    updates = [torch.randn(3, 4), torch.randn(5)]
    for got, want in zip(ops.virtual_step(tensors, updates, [0.1, 0.2]), reference.virtual_step(tensors, updates,
                                                                                               [0.1, 0.2])):
        torch.testing.assert_close(got, want)
    weights = [torch.randn(4, 1), torch.randn(1, 4)]
    biases = [torch.randn(4), torch.randn(1)]
    breakpoints, slopes, intercepts = ops.relu_mlp_pieces(weights, biases, -1.0, 1.0)
    assert breakpoints.dtype == torch.float64 and len(slopes) == len(intercepts) == len(breakpoints) + 1
    amplified = ops.amplify(tensors, weights, biases, 1.0)
    for got, want in zip(amplified, reference.amplify(tensors, weights, biases, 1.0)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
