// The scalar ReLU MLP behind the amplifier (see relu_mlp.h), and the op _relu_mlp_pieces that
// exposes its compiled piece table (for tests, benchmarks and inspection).
#include "ops/relu_mlp.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <cmath>
#include <limits>
#include <tuple>
#include <vector>

#include "ops/common.h"
#include "ops/generic.h"

namespace neuralgrok {

namespace {

at::Tensor as_float64(const at::Tensor& t) { return t.to(at::kDouble).contiguous(); }

}  // namespace

void check_relu_mlp(at::TensorList weights, at::TensorList biases, const at::Tensor& like, const char* what_like,
                    const char* op, bool values) {
  TORCH_CHECK(!weights.empty(), op, ": expected at least one Linear layer in weights");
  TORCH_CHECK(weights.size() == biases.size(), op, ": weights has ", weights.size(), " tensors but biases has ",
              biases.size(), "; give one weight and one bias per Linear layer");
  check_matches(weights, like, op, "weights", what_like);
  check_matches(biases, like, op, "biases", what_like);
  for (size_t l = 0; l < weights.size(); ++l) {
    const auto& w = weights[l];
    const auto& b = biases[l];
    // Sizes as SymInts: the Meta kernels see FakeTensors that may have symbolic shapes.
    TORCH_CHECK(w.dim() == 2, op, ": weights[", l, "] has shape ", w.sym_sizes(), "; expected a 2-d Linear weight");
    TORCH_CHECK(b.dim() == 1 && b.sym_size(0) == w.sym_size(0), op, ": biases[", l, "] has shape ", b.sym_sizes(),
                " but weights[", l, "] has ", w.sym_size(0), " output features");
    const c10::SymInt expected_in = l == 0 ? c10::SymInt(1) : weights[l - 1].sym_size(0);
    TORCH_CHECK(w.sym_size(1) == expected_in, op, ": weights[", l, "] has shape ", w.sym_sizes(), "; expected ",
                expected_in, " input features",
                l == 0 ? " (the MLP maps one scalar)" : " (the previous layer's outputs)");
    TORCH_CHECK(w.sym_size(0) >= 1, op, ": weights[", l, "] has no output features");
  }
  TORCH_CHECK(weights.back().sym_size(0) == 1, op, ": the last layer weights[", weights.size() - 1, "] has shape ",
              weights.back().sym_sizes(), "; expected one output feature (the score)");
  if (!values) return;
  std::vector<at::Tensor> layers;  // weights[0], biases[0], weights[1], ...: the order errors are reported in
  for (size_t l = 0; l < weights.size(); ++l) {
    layers.push_back(weights[l]);
    layers.push_back(biases[l]);
  }
  const int64_t bad = first_nonfinite(layers);
  TORCH_CHECK(bad < 0, op, ": ", bad % 2 == 0 ? "weights[" : "biases[", bad / 2, "] contains NaN or Inf");
}

int64_t generic_rows_per_chunk(at::TensorList weights) {
  int64_t widest = 1;
  for (const auto& w : weights) widest = std::max(widest, w.size(0));
  return std::max(kRowsPerChunk, (int64_t{1} << 22) / widest);
}

at::Tensor relu_mlp_forward(const at::Tensor& x, at::TensorList weights, at::TensorList biases,
                            int64_t rows_per_chunk) {
  const int64_t n = x.numel();
  at::Tensor scores = at::empty({n}, x.options());
  for (int64_t row = 0; row < n; row += rows_per_chunk) {
    const int64_t rows = std::min(rows_per_chunk, n - row);
    at::Tensor h = x.narrow(0, row, rows).view({rows, 1});
    for (size_t l = 0; l < weights.size(); ++l) {
      h = at::addmm(biases[l], h, weights[l].t());
      if (l + 1 < weights.size()) h.relu_();
    }
    scores.narrow(0, row, rows).copy_(h.view({rows}));
  }
  return scores;
}

ReluMlpGrads relu_mlp_backward(const at::Tensor& x, const at::Tensor& grad_scores, at::TensorList weights,
                               at::TensorList biases, int64_t rows_per_chunk) {
  const int64_t n = x.numel();
  const size_t num_layers = weights.size();
  ReluMlpGrads grads;
  grads.input = at::empty({n}, x.options());
  for (size_t l = 0; l < num_layers; ++l) {
    grads.weights.push_back(at::zeros_like(weights[l]));
    grads.biases.push_back(at::zeros_like(biases[l]));
  }
  for (int64_t row = 0; row < n; row += rows_per_chunk) {
    const int64_t rows = std::min(rows_per_chunk, n - row);
    // layer_inputs[l] is what Linear layer l reads: the entries, then each hidden activation.
    std::vector<at::Tensor> layer_inputs{x.narrow(0, row, rows).view({rows, 1})};
    for (size_t l = 0; l + 1 < num_layers; ++l) {
      layer_inputs.push_back(at::addmm(biases[l], layer_inputs.back(), weights[l].t()).relu_());
    }
    at::Tensor grad_pre = grad_scores.narrow(0, row, rows).view({rows, 1});
    for (size_t l = num_layers; l-- > 0;) {
      grads.weights[l].addmm_(grad_pre.t(), layer_inputs[l]);
      grads.biases[l].add_(grad_pre.sum(0));
      at::Tensor grad_in = grad_pre.mm(weights[l]);
      if (l > 0) {
        grad_pre = grad_in.mul_(layer_inputs[l].gt(0));
      } else {
        grads.input.narrow(0, row, rows).copy_(grad_in.view({rows}));
      }
    }
  }
  return grads;
}

namespace {

// Splits every piece at the zero crossings, strictly inside it, of the units z = A g + B (row k of
// A and B is piece k). Fills `parent` with each new piece's old piece; false past max_pieces.
bool split_at_zero_crossings(const at::Tensor& A, const at::Tensor& B, std::vector<double>& starts, double end,
                             int64_t max_pieces, std::vector<int64_t>& parent) {
  const int64_t num_pieces = static_cast<int64_t>(starts.size());
  const int64_t units = A.size(1);
  const double* a = A.data_ptr<double>();
  const double* b = B.data_ptr<double>();
  std::vector<double> new_starts;
  std::vector<double> crossings;
  parent.clear();
  for (int64_t k = 0; k < num_pieces; ++k) {
    const double lo = starts[k];
    const double hi = k + 1 < num_pieces ? starts[k + 1] : end;
    crossings.clear();
    for (int64_t j = 0; j < units; ++j) {
      const double slope = a[k * units + j];
      if (slope == 0.0) continue;
      const double t = -b[k * units + j] / slope;
      if (t > lo && t < hi) crossings.push_back(t);
    }
    std::sort(crossings.begin(), crossings.end());
    crossings.erase(std::unique(crossings.begin(), crossings.end()), crossings.end());
    new_starts.push_back(lo);
    parent.push_back(k);
    for (double t : crossings) {
      new_starts.push_back(t);
      parent.push_back(k);
    }
    if (static_cast<int64_t>(new_starts.size()) > max_pieces) return false;
  }
  starts.swap(new_starts);
  return true;
}

at::Tensor midpoints(const std::vector<double>& starts, double end) {
  const int64_t num_pieces = static_cast<int64_t>(starts.size());
  at::Tensor mids = at::empty({num_pieces, 1}, at::dtype(at::kDouble));
  double* m = mids.data_ptr<double>();
  for (int64_t k = 0; k < num_pieces; ++k) {
    const double hi = k + 1 < num_pieces ? starts[k + 1] : end;
    m[k] = starts[k] / 2 + hi / 2;  // halves first: no overflow at the ends of double's range
  }
  return mids;
}

}  // namespace

std::optional<PiecewiseMlp> compile_relu_mlp(at::TensorList weights, at::TensorList biases, double lo, double hi,
                                             int64_t max_pieces) {
  // The table covers [lo, end) with end a little past hi, so that an entry at hi that sits on a
  // breakpoint still takes the piece on its right, like every other entry on a breakpoint.
  const double scale = std::max({std::abs(lo), std::abs(hi), std::numeric_limits<double>::min()});
  const double end = hi + std::ldexp(scale, -40);
  std::vector<double> starts{lo};
  std::vector<int64_t> parent;
  PiecewiseMlp mlp;
  // Row k of A, B: the current layer's pre-activations on piece k, z = A g + B.
  at::Tensor A = as_float64(weights[0]).view({1, -1});
  at::Tensor B = as_float64(biases[0]).view({1, -1});
  for (size_t l = 0; l + 1 < weights.size(); ++l) {
    if (!split_at_zero_crossings(A, B, starts, end, max_pieces, parent)) return std::nullopt;
    const at::Tensor index = at::tensor(parent, at::dtype(at::kLong));
    A = A.index_select(0, index);
    B = B.index_select(0, index);
    for (auto* layers : {&mlp.alphas, &mlp.betas, &mlp.masks}) {
      for (auto& t : *layers) t = t.index_select(0, index);
    }
    // Inside a piece no unit changes sign, so its midpoint tells which units are active.
    const at::Tensor mask = (A * midpoints(starts, end) + B).gt(0).to(at::kDouble);
    at::Tensor alpha = A * mask;
    at::Tensor beta = B * mask;
    const at::Tensor next_weight = as_float64(weights[l + 1]);
    A = alpha.mm(next_weight.t());
    B = at::addmm(as_float64(biases[l + 1]), beta, next_weight.t());
    mlp.alphas.push_back(std::move(alpha));
    mlp.betas.push_back(std::move(beta));
    mlp.masks.push_back(mask);
  }
  A = A.contiguous();
  B = B.contiguous();
  mlp.breakpoints.assign(starts.begin() + 1, starts.end());
  mlp.slopes.assign(A.data_ptr<double>(), A.data_ptr<double>() + A.numel());
  mlp.intercepts.assign(B.data_ptr<double>(), B.data_ptr<double>() + B.numel());
  return mlp;
}

std::pair<std::vector<at::Tensor>, std::vector<at::Tensor>> piecewise_parameter_grads(
    const PiecewiseMlp& mlp, at::TensorList weights, at::TensorList biases, const at::Tensor& delta_sums,
    const at::Tensor& delta_g_sums) {
  const int64_t num_pieces = mlp.num_pieces();
  const size_t num_layers = weights.size();
  const at::Tensor s0 = delta_sums.view({num_pieces, 1});
  const at::Tensor s1 = delta_g_sums.view({num_pieces, 1});
  std::vector<at::Tensor> weight_grads(num_layers), bias_grads(num_layers);
  // Row k of R: d s / d z_l on piece k (the cotangent per unit of delta), from the top down.
  at::Tensor R = at::ones({num_pieces, 1}, at::dtype(at::kDouble));
  for (size_t l = num_layers; l-- > 0;) {
    // Row k: sum over piece k of delta_i times layer l's input, alpha * S1 + beta * S0.
    const at::Tensor input_sums = l == 0 ? s1 : mlp.alphas[l - 1] * s1 + mlp.betas[l - 1] * s0;
    weight_grads[l] = R.t().mm(input_sums).to(weights[l].scalar_type());
    bias_grads[l] = R.t().mm(s0).view({-1}).to(biases[l].scalar_type());
    if (l > 0) R = R.mm(as_float64(weights[l])).mul_(mlp.masks[l - 1]);
  }
  return {weight_grads, bias_grads};
}

namespace {

constexpr const char* kPiecesOp = "neuralgrok::_relu_mlp_pieces";

void check_pieces_args(at::TensorList weights, at::TensorList biases, double lo, double hi, bool values = true) {
  check_float_tensor_list(weights, kPiecesOp, "weights");
  check_relu_mlp(weights, biases, weights[0], "weights", kPiecesOp, values);
  TORCH_CHECK(std::isfinite(lo) && std::isfinite(hi) && lo <= hi, kPiecesOp, ": need finite lo <= hi, got [", lo,
              ", ", hi, "]");
}

// The table on the host, float64 (compiling is a sequential, data-dependent host algorithm).
std::tuple<at::Tensor, at::Tensor, at::Tensor> pieces_on_host(at::TensorList weights, at::TensorList biases,
                                                              double lo, double hi) {
  at::AutoDispatchBelowADInplaceOrView guard;  // the table is data, never part of a graph
  const auto mlp = compile_relu_mlp(weights, biases, lo, hi, std::numeric_limits<int64_t>::max());
  const auto as_tensor = [](const std::vector<double>& v) { return at::tensor(v, at::dtype(at::kDouble)); };
  return {as_tensor(mlp->breakpoints), as_tensor(mlp->slopes), as_tensor(mlp->intercepts)};
}

// Device-generic: the layers are copied to the host, compiled there, and the table is returned on
// the layers' device. Its size depends on the values, so the op has no C++ Meta kernel: its fake
// kernel (neuralgrok/ops.py) gives the outputs a dynamic size.
std::tuple<at::Tensor, at::Tensor, at::Tensor> relu_mlp_pieces_generic(at::TensorList weights, at::TensorList biases,
                                                                       double lo, double hi) {
  check_float_tensor_list(weights, kPiecesOp, "weights");
  TORCH_CHECK(!weights[0].is_meta(), kPiecesOp, ": the table's size depends on the layers' values, so it cannot be ",
              "computed on the meta device");
  check_pieces_args(weights, biases, lo, hi);
  const auto host = [](at::TensorList ts) {
    std::vector<at::Tensor> out;
    for (const auto& t : ts) out.push_back(t.cpu());
    return out;
  };
  auto table = pieces_on_host(host(weights), host(biases), lo, hi);
  const auto device = weights[0].device();
  return {std::get<0>(table).to(device), std::get<1>(table).to(device), std::get<2>(table).to(device)};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> relu_mlp_pieces_cpu(at::TensorList weights, at::TensorList biases,
                                                                   double lo, double hi) {
  if (generic_on_cpu()) return relu_mlp_pieces_generic(weights, biases, lo, hi);
  check_pieces_args(weights, biases, lo, hi);
  return pieces_on_host(weights, biases, lo, hi);
}

// Not differentiable: the table never requires grad, whatever the layers do.
std::tuple<at::Tensor, at::Tensor, at::Tensor> relu_mlp_pieces_autograd(at::TensorList weights, at::TensorList biases,
                                                                        double lo, double hi) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("neuralgrok::_relu_mlp_pieces", "")
                       .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor>(at::TensorList, at::TensorList, double,
                                                                             double)>();
  at::AutoDispatchBelowADInplaceOrView guard;
  return op.call(weights, biases, lo, hi);
}

}  // namespace

TORCH_LIBRARY_IMPL(neuralgrok, CPU, m) {
  m.impl("_relu_mlp_pieces", TORCH_FN(relu_mlp_pieces_cpu));
}

TORCH_LIBRARY_IMPL(neuralgrok, CompositeExplicitAutograd, m) {
  m.impl("_relu_mlp_pieces", TORCH_FN(relu_mlp_pieces_generic));
}

TORCH_LIBRARY_IMPL(neuralgrok, Autograd, m) {
  m.impl("_relu_mlp_pieces", TORCH_FN(relu_mlp_pieces_autograd));
}

}  // namespace neuralgrok
