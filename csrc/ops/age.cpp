// AGE, Absolute Gradient Entropy (NeuralGrok, arXiv 2504.17243), over a list of tensors.
//
//   normalized=False (the paper's plots, the default):  H = -sum_i |x_i| * log(|x_i| + eps)
//                     eps = 0 is the paper's exact definition, with 0 log 0 = 0 (an exact zero adds 0,
//                     and its backward takes the 0 subgradient)
//   normalized=True:  Shannon entropy of q = |x| / ||x||_1,  H = log S - (1/S) sum_i |x_i| log |x_i|
//                     with S = ||x||_1 and 0 log 0 = 0 (no eps needed); H = 0 for an all-zero input.
// per_tensor=True returns one value per tensor; otherwise one value over all entries of all
// tensors (for normalized=True the L1 norm is then taken over everything, not per tensor).
// The forward reads each entry in one pass (the normalised form adds a max pass first, to stay
// exact for tiny inputs), streaming all tensors through a cache-sized buffer so that the logs are
// taken by ATen's SIMD log, with float64 accumulation; see kChunk. Non-finite entries give a
// non-finite result; the op never raises on values.
#include <ATen/Dispatch.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/Parallel.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>
#include <vector>

#include "ops/common.h"

namespace neuralgrok {
namespace {

constexpr int64_t kGrainSize = 32768;

// The entries of all tensors are streamed, in list order, through a scratch buffer of kChunk
// entries (a few tensors per chunk, or a slice of a large one): one loop the compiler vectorises
// fills it, one ATen call takes all its logs (ATen's log is SIMD, dispatched at run time, where
// std::log is scalar; one call per chunk rather than per tensor amortises its overhead over the
// many small tensors of a model), and a multi-accumulator loop sums each tensor's part in float64.
// Logs are taken in the input's dtype. Each chunk's per-tensor partial sums are added up in stream
// order, so the result is deterministic and independent of the number of threads.
constexpr int64_t kChunk = 8192;

// One tensor's reduction. Un-normalised: `sum` = sum |x| log(|x| + eps).
// Normalised: the entries are divided by `scale` = max |x| first (one more, cheap pass), so the
// sums stay accurate however small the entries are (subnormal float64 included):
// `l1` = sum y and `sum` = sum y log y with y = |x| / scale.
struct Reduction {
  double scale = 0.0;
  double l1 = 0.0;
  double sum = 0.0;
};

// The part of one tensor's entries that falls into one chunk.
struct Segment {
  size_t tensor;
  int64_t begin;
  int64_t length;
};

// max |x|, ignoring NaN entries (they make the sums NaN later). Independent maxima in a lane array
// the compiler keeps in memory (not unrolled into scalars) let the loop vectorise.
template <typename scalar_t>
double max_abs(const scalar_t* x, int64_t n) {
  return at::parallel_reduce(
      0, n, kGrainSize, 0.0,
      [&](int64_t begin, int64_t end, double acc) {
        constexpr int kLanes = 32;
        scalar_t m[kLanes] = {};
        int64_t i = begin;
        for (; i + kLanes <= end; i += kLanes) {
#pragma GCC unroll 1
          for (int k = 0; k < kLanes; ++k) m[k] = std::max(m[k], std::abs(x[i + k]));
        }
        for (; i < end; ++i) acc = std::max(acc, static_cast<double>(std::abs(x[i])));
        for (int k = 0; k < kLanes; ++k) acc = std::max(acc, static_cast<double>(m[k]));
        return acc;
      },
      [](double a, double b) { return std::max(a, b); });
}

// A segment's entries into the scratch buffers: un-normalised, the log arguments l = |x| + eps;
// normalised, y = |x| / scale; in both, l = 0 (a zero entry, with eps = 0) is replaced by 1 (0 log 0 = 0).
template <typename scalar_t>
void fill(const scalar_t* x, int64_t n, bool normalized, scalar_t scale, scalar_t eps, scalar_t* y, scalar_t* l) {
  if (normalized) {
    for (int64_t i = 0; i < n; ++i) {
      y[i] = std::abs(x[i]) / scale;
      l[i] = y[i] == scalar_t(0) ? scalar_t(1) : y[i];
    }
  } else {
    for (int64_t i = 0; i < n; ++i) {
      const scalar_t a = std::abs(x[i]) + eps;
      l[i] = a == scalar_t(0) ? scalar_t(1) : a;
    }
  }
}

// (sum |w|, sum |w| log_l) in float64, with independent partial sums (added in a fixed order) so that
// the loop vectorises without reassociation flags. The products are rounded to scalar_t, as the
// logs were; `with_l1` = false skips the first sum.
template <bool with_l1, typename scalar_t>
std::pair<double, double> weighted_sum(const scalar_t* w, const scalar_t* log_l, int64_t n) {
  constexpr int kLanes = 8;
  double l1[kLanes] = {};
  double sum[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int k = 0; k < kLanes; ++k) {
      const scalar_t a = std::abs(w[i + k]);
      if (with_l1) l1[k] += static_cast<double>(a);
      sum[k] += static_cast<double>(a * log_l[i + k]);
    }
  }
  for (; i < n; ++i) {
    const scalar_t a = std::abs(w[i]);
    if (with_l1) l1[0] += static_cast<double>(a);
    sum[0] += static_cast<double>(a * log_l[i]);
  }
  for (int k = 1; k < kLanes; ++k) {
    l1[0] += l1[k];
    sum[0] += sum[k];
  }
  return {l1[0], sum[0]};
}

template <typename scalar_t>
std::vector<Reduction> reduce_tensors(at::TensorList tensors, bool normalized, double eps) {
  std::vector<Reduction> parts(tensors.size());
  std::vector<at::Tensor> contiguous;
  contiguous.reserve(tensors.size());
  for (const auto& t : tensors) contiguous.push_back(t.contiguous());

  // Cut the stream into chunks; tensors with nothing to sum (no entries, or normalised with a zero
  // or non-finite max) are left out of it.
  std::vector<Segment> segments;
  std::vector<size_t> chunk_starts{0};  // chunk c holds segments [chunk_starts[c], chunk_starts[c + 1])
  int64_t filled = 0;
  for (size_t i = 0; i < contiguous.size(); ++i) {
    const int64_t n = contiguous[i].numel();
    if (normalized) {
      Reduction& r = parts[i];
      const scalar_t* x = contiguous[i].data_ptr<scalar_t>();
      r.scale = max_abs(x, n);
      // max_abs skips NaN entries, which the sums would catch, unless all the others are zero.
      if (r.scale == 0.0 && std::any_of(x, x + n, [](scalar_t v) { return std::isnan(v); })) {
        r.scale = std::numeric_limits<double>::quiet_NaN();
      }
      if (r.scale == 0.0 || !std::isfinite(r.scale)) {
        r.l1 = r.sum = r.scale == 0.0 ? 0.0 : std::numeric_limits<double>::quiet_NaN();
        continue;
      }
    }
    for (int64_t begin = 0; begin < n;) {
      const int64_t length = std::min(n - begin, kChunk - filled);
      segments.push_back({i, begin, length});
      begin += length;
      filled += length;
      if (filled == kChunk) {
        chunk_starts.push_back(segments.size());
        filled = 0;
      }
    }
  }
  if (filled > 0) chunk_starts.push_back(segments.size());

  std::vector<std::pair<double, double>> sums(segments.size());  // (l1, sum) of each segment
  const int64_t chunks = static_cast<int64_t>(chunk_starts.size()) - 1;
  at::parallel_for(0, chunks, kGrainSize / kChunk, [&](int64_t first, int64_t last) {
    const at::Tensor scratch = at::empty({2, kChunk}, contiguous[0].options());
    scalar_t* y = scratch.data_ptr<scalar_t>();
    scalar_t* l = y + kChunk;
    const at::Tensor logs = scratch[1];
    for (int64_t c = first; c < last; ++c) {
      int64_t offset = 0;
      for (size_t s = chunk_starts[c]; s < chunk_starts[c + 1]; ++s) {
        const Segment& seg = segments[s];
        fill(contiguous[seg.tensor].data_ptr<scalar_t>() + seg.begin, seg.length, normalized,
             static_cast<scalar_t>(parts[seg.tensor].scale), static_cast<scalar_t>(eps), y + offset, l + offset);
        offset += seg.length;
      }
      (offset == kChunk ? logs : logs.narrow(0, 0, offset)).log_();
      offset = 0;
      for (size_t s = chunk_starts[c]; s < chunk_starts[c + 1]; ++s) {
        const Segment& seg = segments[s];
        sums[s] = normalized ? weighted_sum<true>(y + offset, l + offset, seg.length)
                             : weighted_sum<false>(contiguous[seg.tensor].data_ptr<scalar_t>() + seg.begin,
                                                   l + offset, seg.length);
        offset += seg.length;
      }
    }
  });
  for (size_t s = 0; s < segments.size(); ++s) {
    parts[segments[s].tensor].l1 += sums[s].first;
    parts[segments[s].tensor].sum += sums[s].second;
  }
  return parts;
}

std::vector<Reduction> reduce_all(at::TensorList tensors, bool normalized, double eps) {
  std::vector<Reduction> parts;
  AT_DISPATCH_FLOATING_TYPES(tensors[0].scalar_type(), "neuralgrok::age",
                             [&] { parts = reduce_tensors<scalar_t>(tensors, normalized, eps); });
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
        d = a + eps == 0.0 ? 0.0 : -(std::log(a + eps) + a / (a + eps));
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
