// A scalar-to-scalar ReLU MLP given as its Linear layers, the amplifier's score function:
//   z_0 = W_0 g + b_0,  h_l = relu(z_l),  z_{l+1} = W_{l+1} h_l + b_{l+1},  s(g) = z_{L-1}
// with weights[l] of shape (H_{l+1}, H_l), H_0 = H_L = 1. Two ways to evaluate it: dense (every
// entry through the layers, batched matmuls) and compiled (s is piecewise linear in g, so over a
// range it is a table of breakpoints with one slope and intercept per piece).
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <vector>

namespace neuralgrok {

// Layer shapes chain 1 -> H_1 -> ... -> 1, the dtype and device of `like` (named `what_like` in
// messages), and (values=true) finite values, read in one host transfer. The Meta kernels pass
// values=false: FakeTensors have no values.
void check_relu_mlp(at::TensorList weights, at::TensorList biases, const at::Tensor& like, const char* what_like,
                    const char* op, bool values = true);

// Rows per dense chunk: bounds each layer's activations (rows x H). The CPU kernels keep them
// cache-sized; the device-generic path uses chunks of about 2^22 activations, so that a GPU gets
// few, large matmuls.
constexpr int64_t kRowsPerChunk = 2048;
int64_t generic_rows_per_chunk(at::TensorList weights);

// Dense evaluation of s on every entry of the 1-d tensor x, in x's dtype.
at::Tensor relu_mlp_forward(const at::Tensor& x, at::TensorList weights, at::TensorList biases,
                            int64_t rows_per_chunk = kRowsPerChunk);

struct ReluMlpGrads {
  at::Tensor input;  // ds/dg scaled by the cotangent, per entry
  std::vector<at::Tensor> weights, biases;
};

// Dense backward: the cotangent grad_scores on s(x) taken to x and to the layers' parameters.
// ReLU's derivative at 0 is 0, as in autograd.
ReluMlpGrads relu_mlp_backward(const at::Tensor& x, const at::Tensor& grad_scores, at::TensorList weights,
                               at::TensorList biases, int64_t rows_per_chunk = kRowsPerChunk);

// The MLP compiled over a range, in float64. Piece k is [breakpoints[k-1], breakpoints[k]) (open
// ended at both outer ends), on which s(g) = slopes[k] * g + intercepts[k]. An entry exactly on a
// breakpoint belongs to the piece on its right: its value is continuous there, and its gradient
// is the one-sided derivative from the right.
struct PiecewiseMlp {
  std::vector<double> breakpoints;
  std::vector<double> slopes, intercepts;
  // Per hidden layer l, (K, H_l): on piece k, h_l(g) = alphas[l][k] * g + betas[l][k], and
  // masks[l][k] holds which units are active (1.0) there.
  std::vector<at::Tensor> alphas, betas, masks;

  int64_t num_pieces() const { return static_cast<int64_t>(slopes.size()); }
  int64_t piece_of(double g) const {
    return std::upper_bound(breakpoints.begin(), breakpoints.end(), g) - breakpoints.begin();
  }
};

// Compiles the MLP over [lo, hi] by propagating affine pieces layer by layer and splitting them
// at every hidden unit's zero crossing. Returns nothing once the count would pass max_pieces.
std::optional<PiecewiseMlp> compile_relu_mlp(at::TensorList weights, at::TensorList biases, double lo, double hi,
                                             int64_t max_pieces);

// Gradients of sum_i delta_i * s(g_i) with respect to weights and biases (in their dtype), given
// only per-piece sums S0_k = sum delta_i and S1_k = sum delta_i * g_i (float64, length K): inside
// a piece every activation is affine in g, so the sums suffice. Costs O(K * sum H_l H_{l+1}).
std::pair<std::vector<at::Tensor>, std::vector<at::Tensor>> piecewise_parameter_grads(
    const PiecewiseMlp& mlp, at::TensorList weights, at::TensorList biases, const at::Tensor& delta_sums,
    const at::Tensor& delta_g_sums);

}  // namespace neuralgrok
