// The virtual SGD step NeuralGrok's outer (meta) step differentiates through:
//
//   theta'_i = params_i - lrs_i * updates_i      (one learning rate per tensor: param groups differ)
//
// over lists of tensors, with C++ autograd to params (identity) and updates (-lr_i). The
// amplifier's meta-gradient is then torch.autograd.backward(virtual_step(params,
// amplify(grads), lrs), dL_outer/dtheta').
//
// Both kernels are already device-generic ATen calls with nothing faster to do on a CPU, so each is
// one implementation, registered for CompositeExplicitAutograd (every backend, CPU included) and
// for Meta (ATen's own meta kernels then give the outputs' shapes and strides).
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/csrc/autograd/autograd_not_implemented_fallback.h>
#include <torch/library.h>

#include <cmath>
#include <vector>

#include "ops/common.h"

namespace neuralgrok {
namespace {

void check_lrs(at::TensorList tensors, c10::ArrayRef<double> lrs, const char* op, const char* what) {
  TORCH_CHECK(lrs.size() == tensors.size(), op, ": ", what, " has ", tensors.size(), " tensors but lrs has ",
              lrs.size(), " values; give one learning rate per tensor");
  for (size_t i = 0; i < lrs.size(); ++i) {
    TORCH_CHECK(std::isfinite(lrs[i]), op, ": lrs[", i, "] is ", lrs[i], "; learning rates must be finite");
  }
}

std::vector<at::Tensor> virtual_step_impl(at::TensorList params, at::TensorList updates, c10::ArrayRef<double> lrs) {
  constexpr const char* op = "neuralgrok::virtual_step";
  check_float_tensor_list(params, op, "params");
  check_same_shapes(params, updates, op, "params", "updates");
  check_matches(updates, params[0], op, "updates", "params");
  check_lrs(params, lrs, op, "params");
  at::AutoDispatchBelowADInplaceOrView guard;
  std::vector<at::Tensor> stepped;
  stepped.reserve(params.size());
  // at::sub is one fused, already parallel pass per tensor.
  for (size_t i = 0; i < params.size(); ++i) stepped.push_back(at::sub(params[i], updates[i], lrs[i]));
  return stepped;
}

// d theta'_i / d updates_i = -lrs_i (the grads w.r.t. params are the cotangents themselves).
std::vector<at::Tensor> virtual_step_backward_impl(at::TensorList grad_outputs, c10::ArrayRef<double> lrs) {
  constexpr const char* op = "neuralgrok::_virtual_step_backward";
  check_float_tensor_list(grad_outputs, op, "grad_outputs");
  check_lrs(grad_outputs, lrs, op, "grad_outputs");
  at::AutoDispatchBelowADInplaceOrView guard;
  std::vector<at::Tensor> update_grads;
  update_grads.reserve(grad_outputs.size());
  for (size_t i = 0; i < grad_outputs.size(); ++i) update_grads.push_back(at::mul(grad_outputs[i], -lrs[i]));
  return update_grads;
}

std::vector<at::Tensor> virtual_step_dispatch(at::TensorList params, at::TensorList updates,
                                              c10::ArrayRef<double> lrs) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("neuralgrok::virtual_step", "")
                       .typed<std::vector<at::Tensor>(at::TensorList, at::TensorList, c10::ArrayRef<double>)>();
  return op.call(params, updates, lrs);
}

std::vector<at::Tensor> virtual_step_backward_dispatch(at::TensorList grad_outputs, c10::ArrayRef<double> lrs) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("neuralgrok::_virtual_step_backward", "")
                       .typed<std::vector<at::Tensor>(at::TensorList, c10::ArrayRef<double>)>();
  return op.call(grad_outputs, lrs);
}

class VirtualStepFunction : public torch::autograd::Function<VirtualStepFunction> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, at::TensorList params,
                                                at::TensorList updates, c10::ArrayRef<double> lrs) {
    ctx->saved_data["lrs"] = lrs.vec();
    at::AutoDispatchBelowADInplaceOrView guard;
    return virtual_step_dispatch(params, updates, lrs);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const auto lrs = ctx->saved_data["lrs"].toDoubleVector();
    auto update_grads = virtual_step_backward_dispatch(grad_outputs, lrs);
    torch::autograd::variable_list grads = grad_outputs;  // w.r.t. params: the identity
    grads.insert(grads.end(), update_grads.begin(), update_grads.end());
    grads.emplace_back();  // lrs are not differentiable
    return grads;
  }
};

std::vector<at::Tensor> virtual_step_autograd(at::TensorList params, at::TensorList updates,
                                              c10::ArrayRef<double> lrs) {
  return VirtualStepFunction::apply(params, updates, lrs);
}

}  // namespace

TORCH_LIBRARY_IMPL(neuralgrok, CompositeExplicitAutograd, m) {
  m.impl("virtual_step", TORCH_FN(virtual_step_impl));
  m.impl("_virtual_step_backward", TORCH_FN(virtual_step_backward_impl));
}

TORCH_LIBRARY_IMPL(neuralgrok, Meta, m) {
  m.impl("virtual_step", TORCH_FN(virtual_step_impl));
  m.impl("_virtual_step_backward", TORCH_FN(virtual_step_backward_impl));
}

TORCH_LIBRARY_IMPL(neuralgrok, Autograd, m) {
  m.impl("virtual_step", TORCH_FN(virtual_step_autograd));
  // The backward is not itself differentiable: differentiating through it raises a clear error.
  m.impl("_virtual_step_backward", torch::autograd::autogradNotImplementedFallback());
}

}  // namespace neuralgrok
