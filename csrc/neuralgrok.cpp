// The neuralgrok operator library: every schema is declared here, in one place.
// Kernels live one op per file in csrc/ops/, each registering its CPU (and, where the op is
// differentiable, Autograd) implementation at the bottom of its file. A CUDA kernel would add
// a TORCH_LIBRARY_IMPL(neuralgrok, CUDA, m) block beside the CPU one; no schema names a device.
#include <torch/library.h>
#include <pybind11/pybind11.h>

TORCH_LIBRARY(neuralgrok, m) {
  // Absolute Gradient Entropy (NeuralGrok, arXiv 2504.17243): -sum |x| log(|x| + eps) over all
  // entries; normalized=True gives the Shannon entropy of |x| / ||x||_1 instead.
  m.def("age(Tensor[] tensors, bool per_tensor=False, bool normalized=False, float eps=1e-08) -> Tensor");
  m.def("_age_backward(Tensor grad, Tensor[] tensors, bool per_tensor, bool normalized, float eps) -> Tensor[]");
  // Grokfast EMA filter (arXiv 2405.20233), in place: ema = alpha*ema + (1-alpha)*g (ema = g where
  // not initialized), then g += lamb*ema.
  m.def("grokfast_ema_(Tensor(a!)[] grads, Tensor(b!)[] ema, bool[] initialized, float alpha, float lamb) -> ()");
  // Grokfast MA filter, in place: push g into the ring buffer windows[i] (w, *g.shape) and its running
  // sum; once w gradients are stored, g += lamb * mean(window). counts[i] = gradients pushed before.
  m.def("grokfast_ma_(Tensor(a!)[] grads, Tensor(b!)[] windows, Tensor(c!)[] sums, int[] counts, float lamb) -> ()");
}

// neuralgrok._C holds no Python bindings: importing it runs the registrations above, after which
// the ops are reached as torch.ops.neuralgrok.<op>.
PYBIND11_MODULE(_C, module) {
  module.doc() = "neuralgrok's C++ operators; use them through torch.ops.neuralgrok or the neuralgrok package";
}
