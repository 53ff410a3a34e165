// AGE, Absolute Gradient Entropy (NeuralGrok, arXiv 2504.17243), over a list of tensors.
//
//   normalized=False (the paper's plots, the default):  H = -sum_i |x_i| * log(|x_i| + eps)
//   normalized=True:  Shannon entropy of q = |x| / ||x||_1,  H = log S - (1/S) sum_i |x_i| log |x_i|
//                     with S = ||x||_1 and 0 log 0 = 0 (no eps needed); H = 0 for an all-zero input.
// per_tensor=True returns one value per tensor; otherwise one value over all entries of all
// tensors (for normalized=True the L1 norm is then taken over everything, not per tensor).
// Each tensor is reduced in one fused pass with float64 accumulation. Non-finite entries give a
// non-finite result; the op never raises on values.
#include <ATen/Dispatch.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/Parallel.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <cmath>
#include <utility>
#include <vector>

#include "ops/common.h"

namespace neuralgrok {
namespace {

constexpr int64_t kGrainSize = 32768;

// Per-tensor sums: first = sum |x| (normalized only), second = sum |x| log(|x| + eps) or, for
// normalized, sum |x| log |x|.
using Sums = std::pair<double, double>;

template <typename scalar_t>
Sums reduce_tensor(const at::Tensor& t, bool normalized, double eps) {
  const at::Tensor c = t.contiguous();
  const scalar_t* x = c.data_ptr<scalar_t>();
  return at::parallel_reduce(
      0, c.numel(), kGrainSize, Sums{0.0, 0.0},
      [&](int64_t begin, int64_t end, Sums acc) {
        for (int64_t i = begin; i < end; ++i) {
          const double a = std::abs(static_cast<double>(x[i]));
          if (normalized) {
            acc.first += a;
            if (a != 0.0) acc.second += a * std::log(a);
          } else {
            acc.second += a * std::log(a + eps);
          }
        }
        return acc;
      },
      [](Sums a, Sums b) { return Sums{a.first + b.first, a.second + b.second}; });
}

std::vector<Sums> reduce_all(at::TensorList tensors, bool normalized, double eps) {
  std::vector<Sums> sums;
  sums.reserve(tensors.size());
  AT_DISPATCH_FLOATING_TYPES(tensors[0].scalar_type(), "neuralgrok::age", [&] {
    for (const auto& t : tensors) sums.push_back(reduce_tensor<scalar_t>(t, normalized, eps));
  });
  return sums;
}

double entropy_of(const Sums& s, bool normalized) {
  if (!normalized) return -s.second;
  return s.first > 0.0 ? std::log(s.first) - s.second / s.first : 0.0;
}

void check_age_args(at::TensorList tensors, double eps, const char* op) {
  check_float_tensor_list(tensors, op, "tensors");
  check_cpu(tensors, op, "tensors");
  TORCH_CHECK(eps >= 0.0 && std::isfinite(eps), op, ": eps must be finite and >= 0, got ", eps);
}

at::Tensor age_cpu(at::TensorList tensors, bool per_tensor, bool normalized, double eps) {
  check_age_args(tensors, eps, "neuralgrok::age");
  const auto sums = reduce_all(tensors, normalized, eps);
  const auto options = tensors[0].options();
  if (per_tensor) {
    std::vector<double> values;
    values.reserve(sums.size());
    for (const auto& s : sums) values.push_back(entropy_of(s, normalized));
    return at::tensor(values, options.dtype(at::kDouble)).to(options.dtype());
  }
  Sums total{0.0, 0.0};
  for (const auto& s : sums) total = {total.first + s.first, total.second + s.second};
  return at::scalar_tensor(entropy_of(total, normalized), options);
}

// d/dx of the entropy, scaled by the incoming gradient `weight` of the value x contributes to.
template <typename scalar_t>
void age_backward_tensor(const at::Tensor& t, at::Tensor& out, double weight, bool normalized, double eps,
                         const Sums& sums) {
  const at::Tensor c = t.contiguous();
  const scalar_t* x = c.data_ptr<scalar_t>();
  scalar_t* dx = out.data_ptr<scalar_t>();
  const double l1 = sums.first;
  const double mean_log = l1 > 0.0 ? sums.second / l1 : 0.0;
  at::parallel_for(0, c.numel(), kGrainSize, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const double v = static_cast<double>(x[i]);
      const double a = std::abs(v);
      const double sign = (v > 0.0) - (v < 0.0);
      double d;
      if (normalized) {
        // dH/d|x_i| = (sum_j q_j log|x_j| - log|x_i|) / S; zero entries take the 0 subgradient.
        d = (a == 0.0 || l1 == 0.0) ? 0.0 : (mean_log - std::log(a)) / l1;
      } else {
        d = -(std::log(a + eps) + a / (a + eps));
      }
      dx[i] = static_cast<scalar_t>(weight * sign * d);
    }
  });
}

std::vector<at::Tensor> age_backward_cpu(const at::Tensor& grad, at::TensorList tensors, bool per_tensor,
                                         bool normalized, double eps) {
  check_age_args(tensors, eps, "neuralgrok::_age_backward");
  const int64_t expected = per_tensor ? static_cast<int64_t>(tensors.size()) : 1;
  TORCH_CHECK(grad.numel() == expected, "neuralgrok::_age_backward: grad has ", grad.numel(),
              " elements, expected ", expected);
  const at::Tensor weights = grad.to(at::kDouble).contiguous().view({-1});
  const double* w = weights.data_ptr<double>();
  auto sums = normalized ? reduce_all(tensors, true, eps) : std::vector<Sums>(tensors.size());
  if (normalized && !per_tensor) {
    Sums total{0.0, 0.0};
    for (const auto& s : sums) total = {total.first + s.first, total.second + s.second};
    sums.assign(sums.size(), total);
  }
  std::vector<at::Tensor> grads;
  grads.reserve(tensors.size());
  AT_DISPATCH_FLOATING_TYPES(tensors[0].scalar_type(), "neuralgrok::_age_backward", [&] {
    for (size_t i = 0; i < tensors.size(); ++i) {
      at::Tensor out = at::empty(tensors[i].sizes(), tensors[i].options());
      age_backward_tensor<scalar_t>(tensors[i], out, w[per_tensor ? i : 0], normalized, eps, sums[i]);
      grads.push_back(out);
    }
  });
  return grads;
}

// Shape-only kernel: lets torch.compile (FakeTensor) and meta-device tracing see through the op.
at::Tensor age_meta(at::TensorList tensors, bool per_tensor, bool normalized, double eps) {
  check_float_tensor_list(tensors, "neuralgrok::age", "tensors");
  const auto options = tensors[0].options();
  return per_tensor ? at::empty({static_cast<int64_t>(tensors.size())}, options) : at::empty({}, options);
}

at::Tensor age_dispatch(at::TensorList tensors, bool per_tensor, bool normalized, double eps) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("neuralgrok::age", "")
                       .typed<at::Tensor(at::TensorList, bool, bool, double)>();
  return op.call(tensors, per_tensor, normalized, eps);
}

std::vector<at::Tensor> age_backward_dispatch(const at::Tensor& grad, at::TensorList tensors, bool per_tensor,
                                              bool normalized, double eps) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("neuralgrok::_age_backward", "")
                       .typed<std::vector<at::Tensor>(const at::Tensor&, at::TensorList, bool, bool, double)>();
  return op.call(grad, tensors, per_tensor, normalized, eps);
}

class AgeFunction : public torch::autograd::Function<AgeFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, at::TensorList tensors, bool per_tensor,
                            bool normalized, double eps) {
    ctx->saved_data["per_tensor"] = per_tensor;
    ctx->saved_data["normalized"] = normalized;
    ctx->saved_data["eps"] = eps;
    ctx->save_for_backward(tensors.vec());
    at::AutoDispatchBelowADInplaceOrView guard;
    return age_dispatch(tensors, per_tensor, normalized, eps);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    auto grads = age_backward_dispatch(grad_outputs[0], ctx->get_saved_variables(),
                                       ctx->saved_data["per_tensor"].toBool(),
                                       ctx->saved_data["normalized"].toBool(), ctx->saved_data["eps"].toDouble());
    grads.resize(grads.size() + 3);  // per_tensor, normalized, eps are not differentiable
    return grads;
  }
};

at::Tensor age_autograd(at::TensorList tensors, bool per_tensor, bool normalized, double eps) {
  return AgeFunction::apply(tensors, per_tensor, normalized, eps);
}

}  // namespace

TORCH_LIBRARY_IMPL(neuralgrok, CPU, m) {
  m.impl("age", TORCH_FN(age_cpu));
  m.impl("_age_backward", TORCH_FN(age_backward_cpu));
}

TORCH_LIBRARY_IMPL(neuralgrok, Meta, m) {
  m.impl("age", TORCH_FN(age_meta));
}

TORCH_LIBRARY_IMPL(neuralgrok, Autograd, m) {
  m.impl("age", TORCH_FN(age_autograd));
}

}  // namespace neuralgrok
