// Grokfast EMA filter (Lee et al., arXiv 2405.20233), in place over a list of gradients:
//
//   ema = alpha * ema + (1 - alpha) * g      (ema = g where initialized[i] is false: the EMA is
//   g   = g + lamb * ema                      seeded with each tensor's first gradient)
//
// One call filters every parameter; each position may have its own dtype (float32/float64) and
// shape, all on one device. ema[i] is the caller's contiguous buffer of grads[i]'s shape and dtype;
// grads may be non-contiguous. Arithmetic is in the tensors' dtype, as the PyTorch reference.
// Non-finite gradients are not checked: they enter ema and stay there (alpha * NaN = NaN), so
// callers that must survive them skip such steps first (the Grokfast optimizer's `nonfinite`).
// Every argument is validated before anything is written: a failed check changes nothing.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>

#include "ops/common.h"

namespace neuralgrok {
namespace {

constexpr int64_t kGrainSize = 32768;
constexpr const char* kOp = "neuralgrok::grokfast_ema_";

template <typename scalar_t>
void ema_tensor(const at::Tensor& grad, const at::Tensor& ema, bool initialized, double alpha, double lamb) {
  const auto keep = static_cast<scalar_t>(alpha);
  const auto take = static_cast<scalar_t>(1.0 - alpha);
  const auto gain = static_cast<scalar_t>(lamb);
  scalar_t* e = ema.data_ptr<scalar_t>();
  update_contiguous(grad, [&](const at::Tensor& contiguous_grad) {
    scalar_t* g = contiguous_grad.data_ptr<scalar_t>();
    at::parallel_for(0, grad.numel(), kGrainSize, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        e[i] = initialized ? keep * e[i] + take * g[i] : g[i];
        g[i] += gain * e[i];
      }
    });
  });
}

void check_ema_args(at::TensorList grads, at::TensorList ema, const c10::List<bool>& initialized, double alpha,
                    double lamb) {
  check_float_tensors_on_one_device(grads, kOp, "grads");
  check_writable_in_place(grads, kOp, "grads");
  check_state_list(grads, ema, kOp, "grads", "ema");
  check_same_shapes(grads, ema, kOp, "grads", "ema");
  TORCH_CHECK(initialized.size() == grads.size(), kOp, ": grads has ", grads.size(), " tensors but initialized has ",
              initialized.size(), " flags");
  TORCH_CHECK(alpha >= 0.0 && alpha <= 1.0, kOp, ": alpha must be in [0, 1], got ", alpha);
  TORCH_CHECK(std::isfinite(lamb), kOp, ": lamb must be finite, got ", lamb);
}

void grokfast_ema_cpu(at::TensorList grads, at::TensorList ema, c10::List<bool> initialized, double alpha,
                      double lamb) {
  check_ema_args(grads, ema, initialized, alpha, lamb);
  check_cpu(grads, kOp, "grads");
  for (size_t i = 0; i < grads.size(); ++i) {
    AT_DISPATCH_FLOATING_TYPES(grads[i].scalar_type(), kOp, [&] {
      ema_tensor<scalar_t>(grads[i], ema[i], initialized[i], alpha, lamb);
    });
  }
}

}  // namespace

TORCH_LIBRARY_IMPL(neuralgrok, CPU, m) {
  m.impl("grokfast_ema_", TORCH_FN(grokfast_ema_cpu));
}

}  // namespace neuralgrok
