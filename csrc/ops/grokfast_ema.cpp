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
// The device-generic implementation does the same arithmetic with ATen's multi-tensor (_foreach)
// ops. The op is not differentiable: its Autograd kernel refuses tensors that require grad (in grad
// mode), and its ADInplaceOrView kernel bumps the version counters of what it writes.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <cmath>
#include <vector>

#include "ops/common.h"
#include "ops/generic.h"

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

// memory=false skips the checks that read memory layout (overlap, aliasing, contiguity): the Meta
// kernel's FakeTensors may have symbolic strides; the real kernels check everything.
void check_ema_args(at::TensorList grads, at::TensorList ema, const c10::List<bool>& initialized, double alpha,
                    double lamb, bool memory = true) {
  check_float_tensors_on_one_device(grads, kOp, "grads");
  if (memory) check_writable_in_place(grads, kOp, "grads");
  check_state_list(grads, ema, kOp, "grads", "ema", memory);
  check_same_shapes(grads, ema, kOp, "grads", "ema");
  TORCH_CHECK(initialized.size() == grads.size(), kOp, ": grads has ", grads.size(), " tensors but initialized has ",
              initialized.size(), " flags");
  TORCH_CHECK(alpha >= 0.0 && alpha <= 1.0, kOp, ": alpha must be in [0, 1], got ", alpha);
  TORCH_CHECK(std::isfinite(lamb), kOp, ": lamb must be finite, got ", lamb);
}

// Device-generic: ema = alpha * ema + (1 - alpha) * g (ema = g where not initialized), g += lamb * ema.
void grokfast_ema_generic(at::TensorList grads, at::TensorList ema, c10::List<bool> initialized, double alpha,
                          double lamb) {
  check_ema_args(grads, ema, initialized, alpha, lamb);
  std::vector<at::Tensor> seen_ema, seen_grads;
  for (size_t i = 0; i < grads.size(); ++i) {
    if (initialized[i]) {
      seen_ema.push_back(ema[i]);
      seen_grads.push_back(grads[i]);
    } else {
      ema[i].copy_(grads[i]);
    }
  }
  if (!seen_ema.empty()) {
    at::_foreach_mul_(seen_ema, alpha);
    at::_foreach_add_(seen_ema, seen_grads, 1.0 - alpha);
  }
  at::_foreach_add_(grads, ema, lamb);
}

void grokfast_ema_meta(at::TensorList grads, at::TensorList ema, c10::List<bool> initialized, double alpha,
                       double lamb) {
  check_ema_args(grads, ema, initialized, alpha, lamb, /*memory=*/false);
}

void grokfast_ema_cpu(at::TensorList grads, at::TensorList ema, c10::List<bool> initialized, double alpha,
                      double lamb) {
  if (generic_on_cpu()) return grokfast_ema_generic(grads, ema, initialized, alpha, lamb);
  check_ema_args(grads, ema, initialized, alpha, lamb);
  for (size_t i = 0; i < grads.size(); ++i) {
    AT_DISPATCH_FLOATING_TYPES(grads[i].scalar_type(), kOp, [&] {
      ema_tensor<scalar_t>(grads[i], ema[i], initialized[i], alpha, lamb);
    });
  }
}

using Signature = void(at::TensorList, at::TensorList, c10::List<bool>, double, double);

c10::TypedOperatorHandle<Signature> grokfast_ema_handle() {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("neuralgrok::grokfast_ema_", "")
                       .typed<Signature>();
  return op;
}

// Autograd: not differentiable, so nothing it writes may require grad; then the kernels below
// (ADInplaceOrView included: torch's autogradNotImplementedFallback skips it for ops that return
// nothing).
void grokfast_ema_autograd(c10::DispatchKeySet keys, at::TensorList grads, at::TensorList ema,
                                                     c10::List<bool> initialized, double alpha, double lamb) {
  check_no_grad_required(grads, kOp, "grads");
  check_no_grad_required(ema, kOp, "ema");
  at::AutoDispatchBelowAutograd guard;
  grokfast_ema_handle().redispatch(keys & c10::after_autograd_keyset, grads, ema, initialized, alpha, lamb);
}

// ADInplaceOrView: the op below, then the version counters of everything it wrote are bumped.
void grokfast_ema_inplace_or_view(c10::DispatchKeySet keys, at::TensorList grads, at::TensorList ema,
                                                            c10::List<bool> initialized, double alpha, double lamb) {
  {
    at::AutoDispatchBelowADInplaceOrView guard;
    grokfast_ema_handle().redispatch(keys & c10::after_ADInplaceOrView_keyset, grads, ema, initialized, alpha, lamb);
  }
  bump_versions(grads);
  bump_versions(ema);
}

}  // namespace

TORCH_LIBRARY_IMPL(neuralgrok, CPU, m) {
  m.impl("grokfast_ema_", TORCH_FN(grokfast_ema_cpu));
}

TORCH_LIBRARY_IMPL(neuralgrok, CompositeExplicitAutograd, m) {
  m.impl("grokfast_ema_", TORCH_FN(grokfast_ema_generic));
}

TORCH_LIBRARY_IMPL(neuralgrok, Meta, m) {
  m.impl("grokfast_ema_", TORCH_FN(grokfast_ema_meta));
}

TORCH_LIBRARY_IMPL(neuralgrok, Autograd, m) {
  m.impl("grokfast_ema_", TORCH_FN(grokfast_ema_autograd));
}

TORCH_LIBRARY_IMPL(neuralgrok, ADInplaceOrView, m) {
  m.impl("grokfast_ema_", TORCH_FN(grokfast_ema_inplace_or_view));
}

}  // namespace neuralgrok
