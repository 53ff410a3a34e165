// AGE, Absolute Gradient Entropy (NeuralGrok, arXiv 2504.17243), over a list of tensors.
//
//   normalized=False (the paper's plots, the default):  H = -sum_i |x_i| * log(|x_i| + eps)
//                     eps = 0 is the paper's exact definition, with 0 log 0 = 0 (an exact zero adds 0,
//                     and its backward takes the 0 subgradient)
//   normalized=True:  Shannon entropy of q = |x| / ||x||_1,  H = log S - (1/S) sum_i |x_i| log |x_i|
//                     with S = ||x||_1 and 0 log 0 = 0 (no eps needed); H = 0 for an all-zero input.
// per_tensor=True returns one value per tensor; otherwise one value over all entries of all
// tensors (for normalized=True the L1 norm is then taken over everything, not per tensor).
// The forward reads each entry once (the normalised form adds a max pass first, to stay exact for
// tiny inputs), with float64 accumulation. float32 on a CPU with AVX2 and FMA, the common case, takes
// its logs in the same pass (kernels/age_avx2.cpp; NEURALGROK_AGE_KERNEL=baseline turns it off, see
// kernels/select.h); otherwise the entries stream through a
// cache-sized buffer whose logs ATen's SIMD log takes (see kChunk). Non-finite entries give a
// non-finite result; the op never raises on values.
//
// The device-generic implementation (age_generic, for CUDA and every other backend) computes the
// same sums in ATen ops: logs in the input's dtype, sums in float64, the backward in float64.
#include <ATen/Dispatch.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/Parallel.h>
#include <torch/autograd.h>
#include <torch/csrc/autograd/autograd_not_implemented_fallback.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <utility>
#include <vector>

#include "kernels/age_avx2.h"
#include "kernels/select.h"
#include "ops/common.h"
#include "ops/generic.h"

namespace neuralgrok {
namespace {

constexpr int64_t kGrainSize = 32768;

// The entries of all tensors are cut, in list order, into chunks of kChunk entries (a few tensors per
// chunk, or a slice of a large one), the unit of work of a thread. The AVX2 kernels sum each chunk's
// segments in one pass; otherwise a chunk streams through a scratch buffer: one loop the compiler vectorises
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
#if defined(NEURALGROK_AVX2_KERNELS)
    if (std::is_same_v<scalar_t, float> && age_avx2_kernels()) {
      for (int64_t c = first; c < last; ++c) {
        for (size_t s = chunk_starts[c]; s < chunk_starts[c + 1]; ++s) {
          const Segment& seg = segments[s];
          const float* x = reinterpret_cast<const float*>(contiguous[seg.tensor].data_ptr<scalar_t>()) + seg.begin;
          if (normalized) {
            avx2::normalized_sums(x, seg.length, static_cast<float>(parts[seg.tensor].scale), &sums[s].first,
                                  &sums[s].second);
          } else {
            sums[s] = {0.0, avx2::sum_abs_log_abs(x, seg.length, static_cast<float>(eps))};
          }
        }
      }
      return;
    }
#endif
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
  TORCH_CHECK(eps >= 0.0 && std::isfinite(eps), op, ": eps must be finite and >= 0, got ", eps);
}

void check_age_backward_args(const at::Tensor& grad, at::TensorList tensors, bool per_tensor, double eps) {
  constexpr const char* op = "neuralgrok::_age_backward";
  check_age_args(tensors, eps, op);
  const int64_t expected = per_tensor ? static_cast<int64_t>(tensors.size()) : 1;
  TORCH_CHECK(grad.defined() && grad.sym_numel() == expected, op, ": grad has ",
              grad.defined() ? grad.sym_numel() : c10::SymInt(0), " elements, expected ", expected);
  TORCH_CHECK(grad.device() == tensors[0].device(), op, ": grad is on ", grad.device(), " but tensors are on ",
              tensors[0].device());
}

// ---- device-generic implementation (ATen ops) ---------------------------------------------------

// a = |x| flattened (non-empty): the normalised reduction of the entries, as float64 0-d tensors on
// a's device: M = max a (NaN if any entry is NaN), S = sum y and T = sum y log y with y = a / M.
struct GenericReduction {
  at::Tensor scale, l1, sum;
};

GenericReduction generic_reduce_normalized(const at::Tensor& a) {
  const at::Tensor scale = a.max();
  const at::Tensor usable = at::logical_and(scale > 0, at::isfinite(scale));
  const at::Tensor y = a / at::where(usable, scale, at::ones_like(scale));
  const at::Tensor log_y = at::log(at::where(y == 0, at::ones_like(y), y));
  return {scale.to(at::kDouble), y.sum(at::kDouble), (y * log_y).sum(at::kDouble)};
}

// H = log S - T / S; 0 for an all-zero input, NaN for a NaN or infinite max (as the CPU kernel).
at::Tensor generic_normalized_entropy(const GenericReduction& r) {
  const at::Tensor entropy = at::log(r.l1) - r.sum / r.l1;
  return at::where(r.scale == 0, at::zeros_like(entropy),
                   at::where(at::isfinite(r.scale), entropy, at::full_like(entropy, std::nan(""))));
}

at::Tensor generic_normalized_entropy_of(const std::vector<at::Tensor>& flat_abs, const at::TensorOptions& like) {
  std::vector<at::Tensor> nonempty;
  for (const auto& a : flat_abs) {
    if (a.numel() > 0) nonempty.push_back(a);
  }
  if (nonempty.empty()) return at::zeros({}, like.dtype(at::kDouble));
  return generic_normalized_entropy(generic_reduce_normalized(at::cat(nonempty)));
}

at::Tensor age_generic(at::TensorList tensors, bool per_tensor, bool normalized, double eps) {
  check_age_args(tensors, eps, "neuralgrok::age");
  const auto options = tensors[0].options();
  std::vector<at::Tensor> flat_abs;
  flat_abs.reserve(tensors.size());
  for (const auto& t : tensors) flat_abs.push_back(t.reshape({-1}).abs());
  at::Tensor values;  // float64
  if (normalized) {
    if (per_tensor) {
      std::vector<at::Tensor> per;
      for (const auto& a : flat_abs) per.push_back(generic_normalized_entropy_of({a}, options));
      values = at::stack(per);
    } else {
      values = generic_normalized_entropy_of(flat_abs, options);
    }
  } else {
    std::vector<at::Tensor> sums;  // sum |x| log(|x| + eps) per tensor, 0 log 0 = 0
    for (const auto& a : flat_abs) {
      const at::Tensor l = eps == 0.0 ? a : a + eps;
      sums.push_back((a * at::log(at::where(l == 0, at::ones_like(l), l))).sum(at::kDouble));
    }
    values = at::stack(sums).neg();
    if (!per_tensor) values = values.sum();
  }
  return values.to(options.dtype());
}

std::vector<at::Tensor> age_backward_generic(const at::Tensor& grad, at::TensorList tensors, bool per_tensor,
                                             bool normalized, double eps) {
  check_age_backward_args(grad, tensors, per_tensor, eps);
  const at::Tensor weights = grad.to(at::kDouble).reshape({-1});
  std::vector<at::Tensor> flat_abs;
  for (const auto& t : tensors) flat_abs.push_back(t.reshape({-1}).abs());
  // The normalised form's reduction of everything each value covers.
  std::vector<GenericReduction> covering;
  if (normalized) {
    std::vector<at::Tensor> nonempty;
    for (const auto& a : flat_abs) {
      if (a.numel() > 0) nonempty.push_back(a);
    }
    if (!per_tensor && !nonempty.empty()) covering.push_back(generic_reduce_normalized(at::cat(nonempty)));
    if (per_tensor) {
      for (const auto& a : flat_abs) {
        covering.push_back(a.numel() > 0 ? generic_reduce_normalized(a) : GenericReduction{});
      }
    }
  }
  std::vector<at::Tensor> grads;
  grads.reserve(tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const at::Tensor x = tensors[i].to(at::kDouble).contiguous();
    if (x.numel() == 0) {
      grads.push_back(empty_contiguous_like(tensors[i]));
      continue;
    }
    const at::Tensor a = x.abs();
    at::Tensor d;  // dH/d|x|, float64; zero entries take the 0 subgradient
    if (normalized) {
      // dH/d|x_i| = -(log(|x_i| / M) - log S + H) / (M S), in the scaled variables (see the CPU kernel).
      const GenericReduction& r = covering[per_tensor ? i : 0];
      const at::Tensor entropy = generic_normalized_entropy(r);
      const at::Tensor scale = at::where(r.scale > 0, r.scale, at::ones_like(r.scale));
      const at::Tensor log_y = at::log(at::where(a == 0, at::ones_like(a), a) / scale);
      d = at::where(a == 0, at::zeros_like(a), -(log_y - at::log(r.l1) + entropy) / scale / r.l1);
    } else {
      const at::Tensor l = a + eps;
      const at::Tensor safe = at::where(l == 0, at::ones_like(l), l);
      d = at::where(l == 0, at::zeros_like(a), -(at::log(safe) + a / safe));
    }
    grads.push_back((weights[per_tensor ? static_cast<int64_t>(i) : 0] * at::sign(x) * d)
                        .to(tensors[i].scalar_type())
                        .view(tensors[i].sizes()));
  }
  return grads;
}

// ---- CPU kernels (the fast path) --------------------------------------------------------------------

at::Tensor age_cpu(at::TensorList tensors, bool per_tensor, bool normalized, double eps) {
  if (generic_on_cpu()) return age_generic(tensors, per_tensor, normalized, eps);
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
  if (generic_on_cpu()) return age_backward_generic(grad, tensors, per_tensor, normalized, eps);
  check_age_backward_args(grad, tensors, per_tensor, eps);
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

// ---- Meta kernels: shapes only; torch.compile (FakeTensor) and meta-device tracing see through the op.

at::Tensor age_meta(at::TensorList tensors, bool per_tensor, bool normalized, double eps) {
  check_age_args(tensors, eps, "neuralgrok::age");
  const auto options = tensors[0].options();
  return per_tensor ? at::empty({static_cast<int64_t>(tensors.size())}, options) : at::empty({}, options);
}

std::vector<at::Tensor> age_backward_meta(const at::Tensor& grad, at::TensorList tensors, bool per_tensor,
                                          bool normalized, double eps) {
  check_age_backward_args(grad, tensors, per_tensor, eps);
  std::vector<at::Tensor> grads;
  for (const auto& t : tensors) grads.push_back(empty_contiguous_like(t));
  return grads;
}

// ---- Autograd --------------------------------------------------------------------------------------

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

TORCH_LIBRARY_IMPL(neuralgrok, CompositeExplicitAutograd, m) {
  m.impl("age", TORCH_FN(age_generic));
  m.impl("_age_backward", TORCH_FN(age_backward_generic));
}

TORCH_LIBRARY_IMPL(neuralgrok, Meta, m) {
  m.impl("age", TORCH_FN(age_meta));
  m.impl("_age_backward", TORCH_FN(age_backward_meta));
}

TORCH_LIBRARY_IMPL(neuralgrok, Autograd, m) {
  m.impl("age", TORCH_FN(age_autograd));
  // The backward is not itself differentiable: differentiating through it raises a clear error.
  m.impl("_age_backward", torch::autograd::autogradNotImplementedFallback());
}

}  // namespace neuralgrok
