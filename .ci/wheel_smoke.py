"""Run by .ci/wheel_smoke.sh in a clean venv holding only torch, the wheel and its dependencies, from a directory
outside the source tree: the package must come from the installed wheel and work with nothing else."""
import subprocess
import sys
from pathlib import Path

import torch

import neuralgrok
from neuralgrok.optim import reference
from neuralgrok.version import version_text

source_tree = Path(sys.argv[1]).resolve()
package = Path(neuralgrok.__file__).resolve().parent
assert source_tree not in package.parents, f"neuralgrok was imported from the source tree: {package}"
assert Path(sys.prefix).resolve() in package.parents, f"neuralgrok is not the venv's: {package}"
for name in ("_build_info.json", "ops.py", "experiments/resnet.py", "experiments/cli.py", "optim/neuralgrok.py"):
    assert (package / name).is_file(), f"the wheel lacks neuralgrok/{name}"
assert list(package.glob("_C*.so")), "the wheel lacks the extension module"
assert neuralgrok.BUILD_INFO["torch_version"] == torch.__version__, (neuralgrok.BUILD_INFO, torch.__version__)

# an op: AGE of a small tensor list, against the pure-PyTorch reference
tensors = [torch.tensor([0.5, -0.25, 0.0, 2.0]), torch.tensor([[1e-3, -3.0], [0.125, 4.0]])]
value = neuralgrok.age(tensors)
expected = reference.age(tensors)
assert torch.allclose(torch.as_tensor(value, dtype=torch.float64), torch.as_tensor(expected, dtype=torch.float64)), \
    (value, expected)

# the wrappers: a Grokfast step and a NeuralGrok step (with its meta step) on a tiny model
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
x, y = torch.randn(16, 4), torch.randint(3, (16,))
x_outer, y_outer = torch.randn(8, 4), torch.randint(3, (8,))


def loss_fn(inputs, labels):
    return torch.nn.functional.cross_entropy(model(inputs), labels)


for name, opt in [
    ("Grokfast", neuralgrok.Grokfast(torch.optim.AdamW(model.parameters(), lr=1e-2), mode="ema")),
    ("NeuralGrok", neuralgrok.NeuralGrok(torch.optim.AdamW(model.parameters(), lr=1e-2), meta_every=1,
                                         outer_closure=lambda: loss_fn(x_outer, y_outer))),
]:
    before = [p.detach().clone() for p in model.parameters()]

    def closure():
        opt.zero_grad()
        loss = loss_fn(x, y)
        loss.backward()
        return loss

    for _ in range(2):
        opt.step(closure)
    assert all(torch.isfinite(p).all() for p in model.parameters()), name
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters())), f"{name} changed nothing"

# modules that need no optional dependency import (results without matplotlib, polygons without Pillow)
import neuralgrok.experiments.polygons  # noqa: E402,F401
import neuralgrok.experiments.results  # noqa: E402,F401

# the command line, as installed
out = subprocess.run([str(Path(sys.executable).with_name("neuralgrok")), "--version"], check=True,
                     capture_output=True, text=True).stdout.strip()
assert out == version_text(), (out, version_text())
print(f"wheel smoke test passed: {out}")
