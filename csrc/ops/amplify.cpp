// NeuralGrok's neural amplifier (arXiv 2504.17243) applied to a list of gradient tensors:
//
//   s_i = MLP(g_i)  (a ReLU MLP on one scalar, see relu_mlp.h),  p = softmax(s) over one tensor,
//   g'  = c * (p * g) / ||p * g||_2  =  c * u / ||u||_2   with  u_i = exp(s_i - max s) * g_i
//
// (the softmax denominator cancels). An all-zero tensor gives zeros, with zero gradients; an
// empty tensor gives an empty output. A non-finite grad is rejected, naming its list index,
// before anything is computed. Scores and norms are accumulated in float64.
//
// piecewise=True (the fast path) compiles the MLP into a table of pieces over [min g, max g] of
// all the grads, in float64, then finds each entry's piece from a uniform grid over the breakpoints;
// its backward needs two sums per piece instead of a dense backward over every entry. The exps are
// std::exp entry by entry; with NEURALGROK_AMPLIFY_KERNEL=avx2, on a CPU with AVX2 and FMA, they are
// taken 4 at a time in float64 instead (kernels/amplify_avx2.cpp, within 1 ulp of std::exp; opt-in,
// see kernels/select.h). An entry on a
// breakpoint takes the piece on its right. When the table would be too large (piece_budget) the
// op runs the dense path, which is what piecewise=False always does: the MLP on every entry in
// batched matmuls.
//
// The device-generic implementation (CUDA and every other backend) always runs the dense path, in
// ATen ops: the MLP in large chunks, the softmax weighting and normalisation elementwise in the
// grads' dtype with float64 reductions, and the backward written out as below (no autograd
// inside). piecewise is a CPU optimisation: both paths agree to rounding. Rejecting non-finite
// grads and layers costs it one host synchronisation per call.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/csrc/autograd/autograd_not_implemented_fallback.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <tuple>
#include <utility>
#include <vector>

#include "kernels/amplify_avx2.h"
#include "kernels/select.h"
#include "ops/common.h"
#include "ops/generic.h"
#include "ops/relu_mlp.h"

namespace neuralgrok {
namespace {

constexpr int64_t kGrainSize = 16384;
constexpr double kInf = std::numeric_limits<double>::infinity();

// The piece-count rule. Compiling costs about one float64 MLP evaluation per piece and the
// backward keeps two float64 sums per piece per thread, so the table is used while it has at most
// max(256, N / 4) pieces for N entries in all (never more than 65536); otherwise the dense path.
constexpr int64_t kMinPieceBudget = 256;
constexpr int64_t kMaxPieces = 65536;

int64_t piece_budget(int64_t total_entries) {
  return std::min(kMaxPieces, std::max(kMinPieceBudget, total_entries / 4));
}

// values=false (the Meta kernels) skips the finiteness of the layers.
void check_amplify_args(at::TensorList grads, at::TensorList weights, at::TensorList biases, double rescale,
                        const char* op, bool values = true) {
  check_float_tensor_list(grads, op, "grads");
  check_relu_mlp(weights, biases, grads[0], "grads", op, values);
  TORCH_CHECK(std::isfinite(rescale), op, ": rescale must be finite, got ", rescale);
}

void check_amplify_backward_args(at::TensorList grad_outputs, at::TensorList grads, at::TensorList weights,
                                 at::TensorList biases, double rescale, bool values = true) {
  constexpr const char* op = "neuralgrok::_amplify_backward";
  check_amplify_args(grads, weights, biases, rescale, op, values);
  check_same_shapes(grad_outputs, grads, op, "grad_outputs", "grads");
  check_matches(grad_outputs, grads[0], op, "grad_outputs", "grads");
}

std::vector<at::Tensor> flat_contiguous(at::TensorList tensors) {
  std::vector<at::Tensor> flat;
  flat.reserve(tensors.size());
  for (const auto& t : tensors) flat.push_back(t.contiguous().view({t.numel()}));
  return flat;
}

int64_t total_numel(const std::vector<at::Tensor>& tensors) {
  int64_t total = 0;
  for (const auto& t : tensors) total += t.numel();
  return total;
}

struct Range {
  double lo, hi;
};

// The range the piece table must cover, in the one read-only pass that also rejects non-finite
// grads, so nothing is computed or written for a bad input.
template <typename scalar_t>
Range finite_range(const std::vector<at::Tensor>& flat, const char* op) {
  struct Extent {
    double lo, hi;
    bool finite;
  };
  Range range{kInf, -kInf};
  for (size_t t = 0; t < flat.size(); ++t) {
    const scalar_t* g = flat[t].data_ptr<scalar_t>();
    const Extent extent = at::parallel_reduce(
        0, flat[t].numel(), kGrainSize, Extent{kInf, -kInf, true},
        [&](int64_t begin, int64_t end, Extent acc) {
          for (int64_t i = begin; i < end; ++i) {
            const double v = static_cast<double>(g[i]);
            acc.finite = acc.finite && std::isfinite(v);
            acc.lo = std::min(acc.lo, v);
            acc.hi = std::max(acc.hi, v);
          }
          return acc;
        },
        [](Extent a, Extent b) { return Extent{std::min(a.lo, b.lo), std::max(a.hi, b.hi), a.finite && b.finite}; });
    TORCH_CHECK(extent.finite, op, ": grads[", t, "] contains NaN or Inf");
    range = {std::min(range.lo, extent.lo), std::max(range.hi, extent.hi)};
  }
  return range.lo <= range.hi ? range : Range{0.0, 0.0};  // every tensor empty
}

// Scores read from the dense MLP's output.
template <typename scalar_t>
struct DenseScores {
  const scalar_t* s;
  double operator()(int64_t i) const { return static_cast<double>(s[i]); }
};

// Scores from each entry's piece of the compiled table.
template <typename scalar_t>
struct PiecewiseScores {
  const scalar_t* g;
  const int32_t* piece;
  const double* slopes;
  const double* intercepts;
  double operator()(int64_t i) const {
    const int32_t k = piece[i];
    return slopes[k] * static_cast<double>(g[i]) + intercepts[k];
  }
};

// The piece of an entry, as table.piece_of (the upper bound in the breakpoints) gives it, in O(1): a
// uniform grid of cells over the breakpoints' span knows the piece at each cell's left edge, and a
// step or two either way from it ends where breakpoints[k - 1] <= g < breakpoints[k] (which is exact
// whatever the rounding of the cell index). A binary search per entry mispredicts most of its branches
// and was most of the op's time. Built once per call of the op, for all its tensors.
class PieceFinder {
 public:
  explicit PieceFinder(const PiecewiseMlp& table)
      : breaks_(table.breakpoints.data()), count_(static_cast<int64_t>(table.breakpoints.size())) {
    if (count_ == 0) return;
    lo_ = breaks_[0];
    cells_ = 4 * count_;
    const double span = breaks_[count_ - 1] - lo_;
    per_unit_ = span > 0.0 ? static_cast<double>(cells_) / span : 0.0;
    first_.resize(cells_ + 1);  // the piece at each cell's left edge
    for (int64_t c = 0; c <= cells_; ++c) {
      const double edge = per_unit_ > 0.0 ? lo_ + static_cast<double>(c) / per_unit_ : lo_;
      first_[c] = static_cast<int32_t>(table.piece_of(edge));
    }
  }

  int32_t operator()(double v) const {
    if (count_ == 0) return 0;
    const double position = (v - lo_) * per_unit_;
    const int64_t c = position <= 0.0                           ? 0
                      : position >= static_cast<double>(cells_) ? cells_
                                                                : static_cast<int64_t>(position);
    int64_t j = first_[c];
    while (j < count_ && breaks_[j] <= v) ++j;
    while (j > 0 && breaks_[j - 1] > v) --j;
    return static_cast<int32_t>(j);
  }

 private:
  const double* breaks_;
  int64_t count_;
  double lo_ = 0.0, per_unit_ = 0.0;
  int64_t cells_ = 0;
  std::vector<int32_t> first_;
};

// The piece of every entry (the backward reads it twice: for the scores and for the per-piece sums).
template <typename scalar_t>
at::Tensor pieces_of(const at::Tensor& flat_grad, const PieceFinder& find) {
  const int64_t n = flat_grad.numel();
  at::Tensor piece = at::empty({n}, at::dtype(at::kInt));
  const scalar_t* g = flat_grad.data_ptr<scalar_t>();
  int32_t* k = piece.data_ptr<int32_t>();
  at::parallel_for(0, n, kGrainSize, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) k[i] = find(static_cast<double>(g[i]));
  });
  return piece;
}

// Scores from each entry's piece, found as the score is taken (the forward reads each score once, so
// it keeps no piece per entry); the same values as PiecewiseScores over pieces_of.
template <typename scalar_t>
struct FoundPieceScores {
  const scalar_t* g;
  const PieceFinder* find;
  const double* slopes;
  const double* intercepts;
  double operator()(int64_t i) const {
    const double v = static_cast<double>(g[i]);
    const int32_t k = (*find)(v);
    return slopes[k] * v + intercepts[k];
  }
};

template <typename scalar_t>
PiecewiseScores<scalar_t> piecewise_scores(const at::Tensor& flat_grad, const at::Tensor& piece,
                                           const PiecewiseMlp& table) {
  return {flat_grad.data_ptr<scalar_t>(), piece.data_ptr<int32_t>(), table.slopes.data(), table.intercepts.data()};
}

// What normalizes one tensor: max_i s_i and ||u||_2 for u_i = exp(s_i - max s) * g_i.
struct Normalizer {
  double s_max;
  double norm;
};

// Fills e_i = exp(s_i - max s) for one tensor's entries and returns its Normalizer, with each score
// and each exp taken once (they are read again by the callers from e).
template <typename scalar_t, typename Scores>
Normalizer exps_and_norm(const scalar_t* g, int64_t n, const Scores& score, double* e) {
  const double s_max = at::parallel_reduce(
      0, n, kGrainSize, -kInf,
      [&](int64_t begin, int64_t end, double m) {
        for (int64_t i = begin; i < end; ++i) {
          e[i] = score(i);
          m = std::max(m, e[i]);
        }
        return m;
      },
      [](double a, double b) { return std::max(a, b); });
  using SumAndMax = std::pair<double, double>;  // sum of u_i^2, max |u_i|
  const SumAndMax squares = at::parallel_reduce(
      0, n, kGrainSize, SumAndMax{0.0, 0.0},
      [&](int64_t begin, int64_t end, SumAndMax acc) {
#if defined(NEURALGROK_AVX2_KERNELS)
        if (amplify_avx2_kernels()) {
          SumAndMax part;
          avx2::exps_and_squares(g + begin, e + begin, end - begin, s_max, &part.first, &part.second);
          return SumAndMax{acc.first + part.first, std::max(acc.second, part.second)};
        }
#endif
        for (int64_t i = begin; i < end; ++i) {
          e[i] = std::exp(e[i] - s_max);
          const double v = e[i] * static_cast<double>(g[i]);
          acc.first += v * v;
          acc.second = std::max(acc.second, std::abs(v));
        }
        return acc;
      },
      [](SumAndMax a, SumAndMax b) { return SumAndMax{a.first + b.first, std::max(a.second, b.second)}; });
  if (squares.first > 1e-250 && squares.first < 1e250) return {s_max, std::sqrt(squares.first)};
  // Squares of float64 entries beyond about 1e+-150 leave double's range: scale by max |u| first.
  const double u_max = squares.second;
  if (u_max == 0.0) return {s_max, 0.0};
  const double scaled = at::parallel_reduce(
      0, n, kGrainSize, 0.0,
      [&](int64_t begin, int64_t end, double acc) {
        for (int64_t i = begin; i < end; ++i) {
          const double v = e[i] * static_cast<double>(g[i]) / u_max;
          acc += v * v;
        }
        return acc;
      },
      std::plus<double>());
  return {s_max, u_max * std::sqrt(scaled)};
}

// Room for one tensor's e_i, left uninitialised (exps_and_norm writes every entry first).
std::unique_ptr<double[]> exp_buffer(int64_t n) { return std::unique_ptr<double[]>(new double[n]); }

template <typename scalar_t, typename Scores>
void write_amplified(const scalar_t* g, int64_t n, const Scores& score, double rescale, scalar_t* out) {
  const auto e = exp_buffer(n);
  const Normalizer nz = exps_and_norm(g, n, score, e.get());
  at::parallel_for(0, n, kGrainSize, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const double v = nz.norm > 0.0 ? e[i] * static_cast<double>(g[i]) / nz.norm : 0.0;
      out[i] = static_cast<scalar_t>(rescale * v);
    }
  });
}

// Contiguous blocks of [0, n), at most one per thread. The backward's per-piece sums are kept per
// block and added in block order, so they do not depend on scheduling.
int64_t num_blocks(int64_t n) {
  return std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), (n + kGrainSize - 1) / kGrainSize));
}

// The backward of one tensor's normalization, for output cotangent y. Calls
// sink(block, i, delta_i, direct_i) for every entry, where delta_i is the cotangent on s_i and
// direct_i is dL/dg_i through u_i = e_i g_i at fixed s (e_i = exp(s_i - max s)). With
// v = u / ||u|| and w_i = c (y_i - v_i (v . y)):  delta_i = w_i v_i,  direct_i = w_i e_i / ||u||.
// The max shift needs no term: the output does not depend on it. An all-zero tensor gets zeros.
template <typename scalar_t, typename Scores, typename Sink>
void for_each_cotangent(const scalar_t* g, const scalar_t* y, int64_t n, const Scores& score, double rescale,
                        const Sink& sink) {
  const auto exps = exp_buffer(n);
  const Normalizer nz = exps_and_norm(g, n, score, exps.get());
  const auto e = [&](int64_t i) { return exps[i]; };
  const double v_dot_y = nz.norm == 0.0 ? 0.0
                                        : at::parallel_reduce(
                                              0, n, kGrainSize, 0.0,
                                              [&](int64_t begin, int64_t end, double acc) {
                                                for (int64_t i = begin; i < end; ++i) {
                                                  acc += e(i) * static_cast<double>(g[i]) / nz.norm *
                                                         static_cast<double>(y[i]);
                                                }
                                                return acc;
                                              },
                                              std::plus<double>());
  const int64_t blocks = num_blocks(n);
  at::parallel_for(0, blocks, 1, [&](int64_t first, int64_t last) {
    for (int64_t b = first; b < last; ++b) {
      for (int64_t i = n * b / blocks; i < n * (b + 1) / blocks; ++i) {
        if (nz.norm == 0.0) {
          sink(b, i, 0.0, 0.0);
          continue;
        }
        const double ei = e(i);
        const double v = ei * static_cast<double>(g[i]) / nz.norm;
        const double w = rescale * (static_cast<double>(y[i]) - v * v_dot_y);
        sink(b, i, w * v, w * ei / nz.norm);
      }
    }
  });
}

std::optional<PiecewiseMlp> piece_table(const std::vector<at::Tensor>& flat, at::TensorList weights,
                                        at::TensorList biases, Range range, bool piecewise) {
  if (!piecewise) return std::nullopt;
  return compile_relu_mlp(weights, biases, range.lo, range.hi, piece_budget(total_numel(flat)));
}

template <typename scalar_t>
std::vector<at::Tensor> amplify_kernel(at::TensorList grads, at::TensorList weights, at::TensorList biases,
                                       double rescale, bool piecewise, const char* op) {
  const auto flat = flat_contiguous(grads);
  const Range range = finite_range<scalar_t>(flat, op);
  std::vector<at::Tensor> outputs;
  outputs.reserve(grads.size());
  for (const auto& g : grads) outputs.push_back(at::empty(g.sizes(), g.options()));
  const auto table = piece_table(flat, weights, biases, range, piecewise);
  if (table) {
    const PieceFinder find(*table);
    for (size_t t = 0; t < flat.size(); ++t) {
      const scalar_t* g = flat[t].data_ptr<scalar_t>();
      write_amplified(g, flat[t].numel(),
                      FoundPieceScores<scalar_t>{g, &find, table->slopes.data(), table->intercepts.data()}, rescale,
                      outputs[t].data_ptr<scalar_t>());
    }
    return outputs;
  }
  const at::Tensor scores = relu_mlp_forward(at::cat(flat), weights, biases);
  int64_t offset = 0;
  for (size_t t = 0; t < flat.size(); ++t) {
    const int64_t n = flat[t].numel();
    write_amplified(flat[t].data_ptr<scalar_t>(), n, DenseScores<scalar_t>{scores.data_ptr<scalar_t>() + offset},
                    rescale, outputs[t].data_ptr<scalar_t>());
    offset += n;
  }
  return outputs;
}

// The backward's last two steps, shared by the CPU kernel and the generic implementation: add the MLP's
// gradient w.r.t. its input (the concatenated entries of the non-empty `flat` tensors, in order) into
// grad_inputs, then append the weight and bias gradients (the schema's order: grads, weights, biases).
void add_mlp_input_grads(std::vector<at::Tensor>& grad_inputs, const std::vector<at::Tensor>& flat,
                         const at::Tensor& mlp_input_grad) {
  int64_t offset = 0;
  for (size_t t = 0; t < flat.size(); ++t) {
    const int64_t n = flat[t].numel();
    if (n == 0) continue;
    grad_inputs[t].view({n}).add_(mlp_input_grad.narrow(0, offset, n));
    offset += n;
  }
}

std::vector<at::Tensor> with_parameter_grads(std::vector<at::Tensor> grad_inputs,
                                             const std::vector<at::Tensor>& weight_grads,
                                             const std::vector<at::Tensor>& bias_grads) {
  grad_inputs.insert(grad_inputs.end(), weight_grads.begin(), weight_grads.end());
  grad_inputs.insert(grad_inputs.end(), bias_grads.begin(), bias_grads.end());
  return grad_inputs;
}

// Returns the grads w.r.t. grads, then weights, then biases.
template <typename scalar_t>
std::vector<at::Tensor> amplify_backward_kernel(at::TensorList grad_outputs, at::TensorList grads,
                                                at::TensorList weights, at::TensorList biases, double rescale,
                                                bool piecewise, const char* op) {
  const auto flat = flat_contiguous(grads);
  const auto flat_cotangents = flat_contiguous(grad_outputs);
  const Range range = finite_range<scalar_t>(flat, op);
  std::vector<at::Tensor> grad_inputs;
  grad_inputs.reserve(grads.size());
  for (const auto& g : grads) grad_inputs.push_back(at::empty(g.sizes(), g.options()));
  std::vector<at::Tensor> weight_grads, bias_grads;
  const auto table = piece_table(flat, weights, biases, range, piecewise);
  if (table) {
    const int64_t num_pieces = table->num_pieces();
    // Per block and piece: S0 = sum delta_i and S1 = sum delta_i g_i.
    at::Tensor block_sums = at::zeros({at::get_num_threads(), num_pieces, 2}, at::dtype(at::kDouble));
    double* sums = block_sums.data_ptr<double>();
    const double* slopes = table->slopes.data();
    const PieceFinder find(*table);
    for (size_t t = 0; t < flat.size(); ++t) {
      const at::Tensor piece = pieces_of<scalar_t>(flat[t], find);
      const int32_t* k = piece.data_ptr<int32_t>();
      const scalar_t* g = flat[t].data_ptr<scalar_t>();
      scalar_t* dg = grad_inputs[t].data_ptr<scalar_t>();
      for_each_cotangent(g, flat_cotangents[t].data_ptr<scalar_t>(), flat[t].numel(),
                         piecewise_scores<scalar_t>(flat[t], piece, *table), rescale,
                         [&](int64_t block, int64_t i, double delta, double direct) {
                           dg[i] = static_cast<scalar_t>(direct + delta * slopes[k[i]]);
                           double* piece_sums = sums + (block * num_pieces + k[i]) * 2;
                           piece_sums[0] += delta;
                           piece_sums[1] += delta * static_cast<double>(g[i]);
                         });
    }
    const at::Tensor piece_sums = block_sums.sum(0);
    std::tie(weight_grads, bias_grads) = piecewise_parameter_grads(
        *table, weights, biases, piece_sums.select(1, 0).contiguous(), piece_sums.select(1, 1).contiguous());
  } else {
    const at::Tensor x = at::cat(flat);
    const at::Tensor scores = relu_mlp_forward(x, weights, biases);
    at::Tensor score_cotangents = at::empty_like(x);
    scalar_t* delta_all = score_cotangents.data_ptr<scalar_t>();
    int64_t offset = 0;
    for (size_t t = 0; t < flat.size(); ++t) {
      scalar_t* dg = grad_inputs[t].data_ptr<scalar_t>();
      scalar_t* delta_t = delta_all + offset;
      for_each_cotangent(flat[t].data_ptr<scalar_t>(), flat_cotangents[t].data_ptr<scalar_t>(), flat[t].numel(),
                         DenseScores<scalar_t>{scores.data_ptr<scalar_t>() + offset}, rescale,
                         [&](int64_t, int64_t i, double delta, double direct) {
                           dg[i] = static_cast<scalar_t>(direct);
                           delta_t[i] = static_cast<scalar_t>(delta);
                         });
      offset += flat[t].numel();
    }
    auto mlp_grads = relu_mlp_backward(x, score_cotangents, weights, biases);
    add_mlp_input_grads(grad_inputs, flat, mlp_grads.input);
    weight_grads = std::move(mlp_grads.weights);
    bias_grads = std::move(mlp_grads.biases);
  }
  return with_parameter_grads(std::move(grad_inputs), weight_grads, bias_grads);
}

// ---- device-generic implementation (ATen ops, the dense path) ----------------------------------------

void check_grads_finite(at::TensorList grads, const char* op) {
  const int64_t bad = first_nonfinite(grads);
  TORCH_CHECK(bad < 0, op, ": grads[", bad, "] contains NaN or Inf");
}

// The grads flattened, and the MLP's scores of all their entries (one dense pass over the concatenation).
struct GenericScores {
  std::vector<at::Tensor> flat;
  at::Tensor scores;  // the concatenation's scores, in the grads' dtype
};

GenericScores generic_scores(at::TensorList grads, at::TensorList weights, at::TensorList biases) {
  GenericScores out;
  for (const auto& g : grads) out.flat.push_back(g.reshape({-1}));
  out.scores = relu_mlp_forward(at::cat(out.flat), weights, biases, generic_rows_per_chunk(weights));
  return out;
}

// One tensor's normalisation from its entries g and scores s (both 1-d, non-empty), as in the CPU
// kernel: e = exp(s - max s), u = e g, and v = u / ||u||. ||u|| is taken as max|u| * ||u / max|u|||,
// which neither overflows nor underflows; `norm` is it in float64 (0 for an all-zero tensor, where
// v is 0).
struct GenericNormalized {
  at::Tensor e, v, norm, nonzero;
};

GenericNormalized generic_normalize(const at::Tensor& g, const at::Tensor& s) {
  const at::Tensor e = at::exp(s - s.max());
  const at::Tensor u = e * g;
  const at::Tensor u_max = u.abs().max();
  const at::Tensor nonzero = u_max > 0;
  const at::Tensor scaled = u / at::where(nonzero, u_max, at::ones_like(u_max));
  const at::Tensor scaled_norm = (scaled * scaled).sum(at::kDouble).sqrt();  // >= 1 where nonzero
  const at::Tensor v = scaled / at::where(nonzero, scaled_norm, at::ones_like(scaled_norm)).to(g.scalar_type());
  return {e, v, u_max.to(at::kDouble) * scaled_norm, nonzero};
}

std::vector<at::Tensor> amplify_generic(at::TensorList grads, at::TensorList weights, at::TensorList biases,
                                        double rescale, bool piecewise) {
  constexpr const char* op = "neuralgrok::amplify";
  check_amplify_args(grads, weights, biases, rescale, op);
  check_grads_finite(grads, op);
  const GenericScores all = generic_scores(grads, weights, biases);
  std::vector<at::Tensor> outputs;
  int64_t offset = 0;
  for (size_t t = 0; t < grads.size(); ++t) {
    const int64_t n = all.flat[t].numel();
    if (n == 0) {
      outputs.push_back(empty_contiguous_like(grads[t]));
      continue;
    }
    const GenericNormalized nz = generic_normalize(all.flat[t], all.scores.narrow(0, offset, n));
    outputs.push_back((nz.v * rescale).view(grads[t].sizes()));
    offset += n;
  }
  return outputs;
}

// The backward of generic_normalize for output cotangent y, as for_each_cotangent: with
// w = c (y - v (v . y)), the cotangent on the scores is delta = w v and the direct part of dL/dg is
// w e / ||u||; both are 0 for an all-zero tensor.
std::vector<at::Tensor> amplify_backward_generic(at::TensorList grad_outputs, at::TensorList grads,
                                                 at::TensorList weights, at::TensorList biases, double rescale,
                                                 bool piecewise) {
  constexpr const char* op = "neuralgrok::_amplify_backward";
  check_amplify_backward_args(grad_outputs, grads, weights, biases, rescale);
  check_grads_finite(grads, op);
  const GenericScores all = generic_scores(grads, weights, biases);
  std::vector<at::Tensor> grad_inputs, score_cotangents;
  int64_t offset = 0;
  for (size_t t = 0; t < grads.size(); ++t) {
    const int64_t n = all.flat[t].numel();
    if (n == 0) {
      grad_inputs.push_back(empty_contiguous_like(grads[t]));
      continue;
    }
    const at::Tensor g = all.flat[t];
    const at::Tensor y = grad_outputs[t].reshape({-1});
    const GenericNormalized nz = generic_normalize(g, all.scores.narrow(0, offset, n));
    const at::Tensor v_dot_y = (nz.v * y).sum(at::kDouble).to(g.scalar_type());
    const at::Tensor w = (y - nz.v * v_dot_y) * rescale;
    const at::Tensor safe_norm = at::where(nz.nonzero, nz.norm, at::ones_like(nz.norm)).to(g.scalar_type());
    score_cotangents.push_back(w * nz.v);  // v = 0 for an all-zero tensor
    grad_inputs.push_back(at::where(nz.nonzero, w * nz.e / safe_norm, at::zeros_like(g)).view(grads[t].sizes()));
    offset += n;
  }
  std::vector<at::Tensor> flat_nonempty;
  for (const auto& f : all.flat) {
    if (f.numel() > 0) flat_nonempty.push_back(f);
  }
  std::vector<at::Tensor> weight_grads, bias_grads;
  if (flat_nonempty.empty()) {
    for (const auto& w : weights) weight_grads.push_back(at::zeros_like(w));
    for (const auto& b : biases) bias_grads.push_back(at::zeros_like(b));
  } else {
    auto mlp_grads = relu_mlp_backward(at::cat(flat_nonempty), at::cat(score_cotangents), weights, biases,
                                       generic_rows_per_chunk(weights));
    add_mlp_input_grads(grad_inputs, all.flat, mlp_grads.input);
    weight_grads = std::move(mlp_grads.weights);
    bias_grads = std::move(mlp_grads.biases);
  }
  return with_parameter_grads(std::move(grad_inputs), weight_grads, bias_grads);
}

// ---- Meta kernels ----------------------------------------------------------------------------------

std::vector<at::Tensor> amplify_meta(at::TensorList grads, at::TensorList weights, at::TensorList biases,
                                     double rescale, bool piecewise) {
  check_amplify_args(grads, weights, biases, rescale, "neuralgrok::amplify", /*values=*/false);
  std::vector<at::Tensor> outputs;
  for (const auto& g : grads) outputs.push_back(empty_contiguous_like(g));
  return outputs;
}

std::vector<at::Tensor> amplify_backward_meta(at::TensorList grad_outputs, at::TensorList grads,
                                              at::TensorList weights, at::TensorList biases, double rescale,
                                              bool piecewise) {
  check_amplify_backward_args(grad_outputs, grads, weights, biases, rescale, /*values=*/false);
  std::vector<at::Tensor> outputs;
  for (at::TensorList list : {grads, weights, biases}) {
    for (const auto& t : list) outputs.push_back(empty_contiguous_like(t));
  }
  return outputs;
}

// ---- CPU kernels (the fast path) --------------------------------------------------------------------

std::vector<at::Tensor> amplify_cpu(at::TensorList grads, at::TensorList weights, at::TensorList biases,
                                    double rescale, bool piecewise) {
  if (generic_on_cpu()) return amplify_generic(grads, weights, biases, rescale, piecewise);
  constexpr const char* op = "neuralgrok::amplify";
  check_amplify_args(grads, weights, biases, rescale, op);
  at::AutoDispatchBelowADInplaceOrView guard;  // internal ATen calls never build a graph
  std::vector<at::Tensor> outputs;
  AT_DISPATCH_FLOATING_TYPES(grads[0].scalar_type(), op, [&] {
    outputs = amplify_kernel<scalar_t>(grads, weights, biases, rescale, piecewise, op);
  });
  return outputs;
}

std::vector<at::Tensor> amplify_backward_cpu(at::TensorList grad_outputs, at::TensorList grads,
                                             at::TensorList weights, at::TensorList biases, double rescale,
                                             bool piecewise) {
  if (generic_on_cpu()) return amplify_backward_generic(grad_outputs, grads, weights, biases, rescale, piecewise);
  constexpr const char* op = "neuralgrok::_amplify_backward";
  check_amplify_backward_args(grad_outputs, grads, weights, biases, rescale);
  at::AutoDispatchBelowADInplaceOrView guard;
  std::vector<at::Tensor> result;
  AT_DISPATCH_FLOATING_TYPES(grads[0].scalar_type(), op, [&] {
    result = amplify_backward_kernel<scalar_t>(grad_outputs, grads, weights, biases, rescale, piecewise, op);
  });
  return result;
}

std::vector<at::Tensor> amplify_dispatch(at::TensorList grads, at::TensorList weights, at::TensorList biases,
                                         double rescale, bool piecewise) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("neuralgrok::amplify", "")
                       .typed<std::vector<at::Tensor>(at::TensorList, at::TensorList, at::TensorList, double, bool)>();
  return op.call(grads, weights, biases, rescale, piecewise);
}

std::vector<at::Tensor> amplify_backward_dispatch(at::TensorList grad_outputs, at::TensorList grads,
                                                  at::TensorList weights, at::TensorList biases, double rescale,
                                                  bool piecewise) {
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("neuralgrok::_amplify_backward", "")
          .typed<std::vector<at::Tensor>(at::TensorList, at::TensorList, at::TensorList, at::TensorList, double,
                                         bool)>();
  return op.call(grad_outputs, grads, weights, biases, rescale, piecewise);
}

class AmplifyFunction : public torch::autograd::Function<AmplifyFunction> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, at::TensorList grads,
                                                at::TensorList weights, at::TensorList biases, double rescale,
                                                bool piecewise) {
    ctx->saved_data["num_grads"] = static_cast<int64_t>(grads.size());
    ctx->saved_data["rescale"] = rescale;
    ctx->saved_data["piecewise"] = piecewise;
    std::vector<at::Tensor> saved = grads.vec();
    saved.insert(saved.end(), weights.begin(), weights.end());
    saved.insert(saved.end(), biases.begin(), biases.end());
    ctx->save_for_backward(saved);
    at::AutoDispatchBelowADInplaceOrView guard;
    return amplify_dispatch(grads, weights, biases, rescale, piecewise);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const auto num_grads = static_cast<size_t>(ctx->saved_data["num_grads"].toInt());
    const size_t num_layers = (saved.size() - num_grads) / 2;
    const at::TensorList all(saved);
    auto result = amplify_backward_dispatch(grad_outputs, all.slice(0, num_grads), all.slice(num_grads, num_layers),
                                            all.slice(num_grads + num_layers), ctx->saved_data["rescale"].toDouble(),
                                            ctx->saved_data["piecewise"].toBool());
    result.resize(result.size() + 2);  // rescale and piecewise are not differentiable
    return result;
  }
};

std::vector<at::Tensor> amplify_autograd(at::TensorList grads, at::TensorList weights, at::TensorList biases,
                                         double rescale, bool piecewise) {
  return AmplifyFunction::apply(grads, weights, biases, rescale, piecewise);
}

}  // namespace

TORCH_LIBRARY_IMPL(neuralgrok, CPU, m) {
  m.impl("amplify", TORCH_FN(amplify_cpu));
  m.impl("_amplify_backward", TORCH_FN(amplify_backward_cpu));
}

TORCH_LIBRARY_IMPL(neuralgrok, CompositeExplicitAutograd, m) {
  m.impl("amplify", TORCH_FN(amplify_generic));
  m.impl("_amplify_backward", TORCH_FN(amplify_backward_generic));
}

TORCH_LIBRARY_IMPL(neuralgrok, Meta, m) {
  m.impl("amplify", TORCH_FN(amplify_meta));
  m.impl("_amplify_backward", TORCH_FN(amplify_backward_meta));
}

TORCH_LIBRARY_IMPL(neuralgrok, Autograd, m) {
  m.impl("amplify", TORCH_FN(amplify_autograd));
  // The backward is not itself differentiable: differentiating through it raises a clear error.
  m.impl("_amplify_backward", torch::autograd::autogradNotImplementedFallback());
}

}  // namespace neuralgrok
