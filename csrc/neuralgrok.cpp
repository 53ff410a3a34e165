// The neuralgrok operator library: every schema is declared here, in one place.
// Kernels live one op per file in csrc/ops/, each registering at the bottom of its file a CPU
// kernel (the fast path), a device-generic implementation in ATen ops (CompositeExplicitAutograd:
// CUDA and every other backend), a Meta kernel (shapes, for FakeTensor and torch.compile) and its
// Autograd kernel; see ops/generic.h and csrc/README.md. A CUDA kernel would add a
// TORCH_LIBRARY_IMPL(neuralgrok, CUDA, m) block beside the CPU one; no schema names a device.
#include <torch/library.h>
#include <pybind11/pybind11.h>

#include <atomic>
#include <cstdlib>
#include <string>

#include "kernels/select.h"
#include "ops/generic.h"

namespace neuralgrok {
namespace {
std::atomic<bool> cpu_runs_generic{false};
}  // namespace

bool generic_on_cpu() { return cpu_runs_generic.load(std::memory_order_relaxed); }

namespace {
// See kernels/select.h: whether the AVX2 kernels are built in and the CPU runs them, and the op's
// environment variable (unset: `by_default`) asks for them.
bool avx2_kernels(const char* variable, bool by_default) {
  const char* value = std::getenv(variable);
  const std::string choice = value == nullptr ? "" : value;
  TORCH_CHECK(choice.empty() || choice == "avx2" || choice == "baseline", variable, "=", choice,
              ": expected avx2 or baseline (unset: ", by_default ? "avx2" : "baseline", ")");
  const bool wanted = choice.empty() ? by_default : choice == "avx2";
#if defined(NEURALGROK_AVX2_KERNELS)
  return wanted && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  (void)wanted;
  return false;
#endif
}
}  // namespace

bool age_avx2_kernels() {
  static const bool enabled = avx2_kernels("NEURALGROK_AGE_KERNEL", true);
  return enabled;
}

bool amplify_avx2_kernels() {
  // Opt-in: the AVX2 exps are within 1 ulp of std::exp, not equal to it, and amplify is on the training
  // path, so by default a run's trajectory is the same on every CPU and equal to the committed results'.
  static const bool enabled = avx2_kernels("NEURALGROK_AMPLIFY_KERNEL", false);
  return enabled;
}
}  // namespace neuralgrok

TORCH_LIBRARY(neuralgrok, m) {
  // Absolute Gradient Entropy (NeuralGrok, arXiv 2504.17243): -sum |x| log(|x| + eps) over all
  // entries, 0 log 0 = 0 (eps = 0, the default, is the paper's exact definition); normalized=True
  // gives the Shannon entropy of |x| / ||x||_1 instead.
  m.def("age(Tensor[] tensors, bool per_tensor=False, bool normalized=False, float eps=0.0) -> Tensor");
  m.def("_age_backward(Tensor grad, Tensor[] tensors, bool per_tensor, bool normalized, float eps) -> Tensor[]");
  // Grokfast EMA filter (arXiv 2405.20233), in place: ema = alpha*ema + (1-alpha)*g (ema = g where
  // not initialized), then g += lamb*ema.
  m.def("grokfast_ema_(Tensor(a!)[] grads, Tensor(b!)[] ema, bool[] initialized, float alpha, float lamb) -> ()");
  // Grokfast MA filter, in place: push g into the ring buffer windows[i] (w, *g.shape) and its running
  // sum; once w gradients are stored, g += lamb * mean(window). counts[i] = gradients pushed before.
  m.def("grokfast_ma_(Tensor(a!)[] grads, Tensor(b!)[] windows, Tensor(c!)[] sums, int[] counts, float lamb) -> ()");

  // NeuralGrok's amplifier: per tensor, s = MLP(g) entrywise (ReLU MLP given by its Linear layers),
  // g' = rescale * (softmax(s) * g) / ||softmax(s) * g||_2. piecewise=True lets the CPU kernel use
  // its exact piecewise-linear fast path (dense when it would not pay; the device-generic kernel is
  // always dense, and agrees to rounding). The backward returns the grads w.r.t. grads, then
  // weights, then biases.
  m.def("amplify(Tensor[] grads, Tensor[] weights, Tensor[] biases, float rescale, bool piecewise=True) -> Tensor[]");
  m.def("_amplify_backward(Tensor[] grad_outputs, Tensor[] grads, Tensor[] weights, Tensor[] biases, float rescale, "
        "bool piecewise) -> Tensor[]");
  // The amplifier's ReLU MLP compiled over [lo, hi] in float64: on piece k, from breakpoints[k-1]
  // (inclusive) to breakpoints[k], s(g) = slopes[k] * g + intercepts[k]. The number of pieces
  // depends on the values: the fake kernel (neuralgrok/ops.py) gives it a dynamic size.
  m.def("_relu_mlp_pieces(Tensor[] weights, Tensor[] biases, float lo, float hi) -> "
        "(Tensor breakpoints, Tensor slopes, Tensor intercepts)");
  // NeuralGrok's virtual step for the meta-gradient: params[i] - lrs[i] * updates[i]. The backward
  // returns the grads w.r.t. updates (those w.r.t. params are the cotangents).
  m.def("virtual_step(Tensor[] params, Tensor[] updates, float[] lrs) -> Tensor[]");
  m.def("_virtual_step_backward(Tensor[] grad_outputs, float[] lrs) -> Tensor[]");
}

// neuralgrok._C holds no op bindings: importing it runs the registrations above, after which the ops
// are reached as torch.ops.neuralgrok.<op>. Its functions are the test switch of ops/generic.h and which
// SIMD kernels run (kernels/select.h).
PYBIND11_MODULE(_C, module) {
  module.doc() = "neuralgrok's C++ operators; use them through torch.ops.neuralgrok or the neuralgrok package";
  module.def(
      "_set_generic_on_cpu", [](bool enabled) { return neuralgrok::cpu_runs_generic.exchange(enabled); },
      pybind11::arg("enabled"),
      "Make the CPU kernels forward to the device-generic implementations (True) or not; returns the previous "
      "setting. For tests: use neuralgrok._extension.generic_kernels().");
  module.def("_generic_on_cpu", &neuralgrok::generic_on_cpu,
             "Whether the CPU kernels forward to the device-generic implementations.");
  module.def(
      "_simd_kernels",
      [] {
        pybind11::dict kernels;
        kernels["age"] = neuralgrok::age_avx2_kernels() ? "avx2" : "baseline";
        kernels["amplify"] = neuralgrok::amplify_avx2_kernels() ? "avx2" : "baseline";
        return kernels;
      },
      "Which SIMD kernels the CPU kernels of age and amplify run: avx2 or baseline (kernels/select.h).");
}
