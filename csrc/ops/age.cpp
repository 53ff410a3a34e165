// AGE, Absolute Gradient Entropy (NeuralGrok, arXiv 2504.17243), over a list of tensors.
//
//   normalized=False (the paper's plots, the default):  H = -sum_i |x_i| * log(|x_i| + eps)
//   normalized=True:  Shannon entropy of q = |x| / ||x||_1,  H = log S - (1/S) sum_i |x_i| log |x_i|
//                     with S = ||x||_1 and 0 log 0 = 0 (no eps needed); H = 0 for an all-zero input.
// per_tensor=True returns one value per tensor; otherwise one value over all entries of all
// tensors (for normalized=True the L1 norm is then taken over everything, not per tensor).
// Each tensor is reduced in one fused pass with float64 accumulation (the normalised form adds a
// max pass first, to stay exact for tiny inputs). Non-finite entries give a non-finite result;
// the op never raises on values.
#include <ATen/Dispatch.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/Parallel.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <utility>
#include <vector>

#include "ops/common.h"

namespace neuralgrok {
namespace {

constexpr int64_t kGrainSize = 32768;

// One tensor's reduction. Un-normalised: `sum` = sum |x| log(|x| + eps), in one pass.
// Normalised: the entries are divided by `scale` = max |x| first (one more, cheap pass), so the
// sums stay accurate however small the entries are (subnormal float64 included):
// `l1` = sum y and `sum` = sum y log y with y = |x| / scale.
struct Reduction {
  double scale = 0.0;
  double l1 = 0.0;
  double sum = 0.0;
};

template <typename scalar_t>
Reduction reduce_tensor(const at::Tensor& t, bool normalized, double eps) {
  const at::Tensor c = t.contiguous();
  const scalar_t* x = c.data_ptr<scalar_t>();
  const int64_t n = c.numel();
  Reduction r;
  if (!normalized) {
    r.sum = at::parallel_reduce(
        0, n, kGrainSize, 0.0,
        [&](int64_t begin, int64_t end, double acc) {
          for (int64_t i = begin; i < end; ++i) {
            const double a = std::abs(static_cast<double>(x[i]));
            acc += a * std::log(a + eps);
          }
          return acc;
        },
        std::plus<double>());
    return r;
  }
  r.scale = at::parallel_reduce(
      0, n, kGrainSize, 0.0,
      [&](int64_t begin, int64_t end, double acc) {
        for (int64_t i = begin; i < end; ++i) {
          const double a = std::abs(static_cast<double>(x[i]));
          if (!(a <= acc)) acc = a;  // NaN wins, so a non-finite input gives a non-finite result
        }
        return acc;
      },
      [](double a, double b) { return !(b <= a) ? b : a; });
  if (r.scale == 0.0 || !std::isfinite(r.scale)) {
    r.l1 = r.sum = r.scale == 0.0 ? 0.0 : std::numeric_limits<double>::quiet_NaN();
    return r;
  }
  using Pair = std::pair<double, double>;
  const Pair sums = at::parallel_reduce(
      0, n, kGrainSize, Pair{0.0, 0.0},
      [&](int64_t begin, int64_t end, Pair acc) {
        for (int64_t i = begin; i < end; ++i) {
          const double y = std::abs(static_cast<double>(x[i])) / r.scale;
          acc.first += y;
          if (y != 0.0) acc.second += y * std::log(y);
        }
        return acc;
      },
      [](Pair a, Pair b) { return Pair{a.first + b.first, a.second + b.second}; });
  r.l1 = sums.first;
  r.sum = sums.second;
  return r;
}

std::vector<Reduction> reduce_all(at::TensorList tensors, bool normalized, double eps) {
  std::vector<Reduction> parts;
  parts.reserve(tensors.size());
  AT_DISPATCH_FLOATING_TYPES(tensors[0].scalar_type(), "neuralgrok::age", [&] {
    for (const auto& t : tensors) parts.push_back(reduce_tensor<scalar_t>(t, normalized, eps));
  });
  return parts;
}

// The normalised reduction of the concatenation of several tensors: rescale each part from its
// own max to the common one, M = max scale (r = scale / M <= 1, so nothing overflows).
Reduction combine_normalized(const std::vector<Reduction>& parts) {
  Reduction total;
  for (const auto& part : parts) {
    if (!std::isfinite(part.l1)) return part;
    total.scale = std::max(total.scale, part.scale);
  }
  if (total.scale == 0.0) return total;
  for (const auto& part : parts) {
    if (part.scale == 0.0) continue;
    const double ratio = part.scale / total.scale;
    total.l1 += ratio * part.l1;
    total.sum += ratio * (part.sum + part.l1 * std::log(ratio));
  }
  return total;
}

// H = log S - (1/S) sum |x| log |x| with S = sum |x|, in the scaled variables (log M cancels).
double normalized_entropy(const Reduction& r) {
  if (r.scale == 0.0) return 0.0;
  return std::log(r.l1) - r.sum / r.l1;
}

void check_age_args(at::TensorList tensors, double eps, const char* op) {
  check_float_tensor_list(tensors, op, "tensors");
  check_cpu(tensors, op, "tensors");
  TORCH_CHECK(eps >= 0.0 && std::isfinite(eps), op, ": eps must be finite and >= 0, got ", eps);
}

at::Tensor age_cpu(at::TensorList tensors, bool per_tensor, bool normalized, double eps) {
  check_age_args(tensors, eps, "neuralgrok::age");
  const auto parts = reduce_all(tensors, normalized, eps);
  const auto options = tensors[0].options();
  if (per_tensor) {
    std::vector<double> values;
    values.reserve(parts.size());
    for (const auto& part : parts) values.push_back(normalized ? normalized_entropy(part) : -part.sum);
    return at::tensor(values, options.dtype(at::kDouble)).to(options.dtype());
  }
  double value;
  if (normalized) {
    value = normalized_entropy(combine_normalized(parts));
  } else {
    value = 0.0;
    for (const auto& part : parts) value -= part.sum;
  }
  return at::scalar_tensor(value, options);
}

// d/dx of the entropy, scaled by the incoming gradient `weight` of the value x contributes to.
// For the normalised form `r` is the reduction of everything the value covers.
template <typename scalar_t>
void age_backward_tensor(const at::Tensor& t, at::Tensor& out, double weight, bool normalized, double eps,
                         const Reduction& r) {
  const at::Tensor c = t.contiguous();
  const scalar_t* x = c.data_ptr<scalar_t>();
  scalar_t* dx = out.data_ptr<scalar_t>();
  // dH/d|x_i| = -(log q_i + H) / S with q_i = |x_i| / S; in the scaled variables
  // log q_i = log(|x_i| / M) - log S' and S = M S'. Zero entries take the 0 subgradient.
  const double entropy = normalized ? normalized_entropy(r) : 0.0;
  const double log_l1 = r.scale > 0.0 ? std::log(r.l1) : 0.0;
  at::parallel_for(0, c.numel(), kGrainSize, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const double v = static_cast<double>(x[i]);
      const double a = std::abs(v);
      const double sign = (v > 0.0) - (v < 0.0);
      double d;
      if (normalized) {
        d = a == 0.0 ? 0.0 : -(std::log(a / r.scale) - log_l1 + entropy) / r.scale / r.l1;
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
  auto parts = normalized ? reduce_all(tensors, true, eps) : std::vector<Reduction>(tensors.size());
  if (normalized && !per_tensor) parts.assign(parts.size(), combine_normalized(parts));
  std::vector<at::Tensor> grads;
  grads.reserve(tensors.size());
  AT_DISPATCH_FLOATING_TYPES(tensors[0].scalar_type(), "neuralgrok::_age_backward", [&] {
    for (size_t i = 0; i < tensors.size(); ++i) {
      at::Tensor out = at::empty(tensors[i].sizes(), tensors[i].options());
      age_backward_tensor<scalar_t>(tensors[i], out, w[per_tensor ? i : 0], normalized, eps, parts[i]);
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
