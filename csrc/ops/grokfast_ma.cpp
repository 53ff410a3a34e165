// Grokfast MA filter (Lee et al., arXiv 2405.20233), in place over a list of gradients: each tensor
// keeps its last w gradients; once w are stored, g = g + lamb * mean(last w gradients), before
// that g is unchanged.
//
// State per position i (the caller's buffers, contiguous, grads[i]'s dtype):
//   windows[i]  shape (w, *grads[i].shape): a ring buffer, gradient number n lives in row n % w;
//               rows are read only after they are written, so it may start uninitialized
//   sums[i]     shape grads[i].shape: the running sum of the rows written so far (zeros at first)
//   counts[i]   gradients pushed before this call (the caller increments it after the call)
// Each step costs O(numel): the running sum drops the evicted row and adds the new one. Floating
// drift of that sum is bounded by re-summing the window exactly (float64 accumulation, streaming
// the rows over blocks of entries) whenever the ring index wraps, i.e. every w pushes: amortised
// O(numel) too. An evicted non-finite entry cannot be subtracted back out, so that entry alone is
// re-summed at once: NaN/Inf gradients propagate into the filter output exactly while they are in
// the window, then drop out, as with a plain mean over the last w. Callers that must not see them
// skip such steps first (the Grokfast optimizer's `nonfinite`).
// grads may be non-contiguous; every argument is validated before anything is written.
//
// The device-generic implementation keeps the same state the same way in ATen ops: it copies the
// evicted row, updates the running sum and re-sums the window in float64 when the ring wraps. An
// evicted non-finite entry is re-summed too, which needs to know whether there is one: one host
// synchronisation per call that evicts (for the whole list). The op is not differentiable; see
// grokfast_ema.cpp for its Autograd and ADInplaceOrView registrations.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "ops/common.h"
#include "ops/generic.h"

namespace neuralgrok {
namespace {

constexpr int64_t kGrainSize = 32768;
constexpr int64_t kResumBlock = 1024;  // entries re-summed together, streaming each row of the window
constexpr const char* kOp = "neuralgrok::grokfast_ma_";

// Exact sum over the w rows of entries [begin, end), in float64, written to sum.
template <typename scalar_t>
void resum_exactly(const scalar_t* rows, scalar_t* sum, int64_t w, int64_t n, int64_t begin, int64_t end) {
  double block[kResumBlock];
  for (int64_t first = begin; first < end; first += kResumBlock) {
    const int64_t len = std::min(kResumBlock, end - first);
    std::fill(block, block + len, 0.0);
    for (int64_t r = 0; r < w; ++r) {
      const scalar_t* row = rows + r * n + first;
      for (int64_t j = 0; j < len; ++j) block[j] += static_cast<double>(row[j]);
    }
    for (int64_t j = 0; j < len; ++j) sum[first + j] = static_cast<scalar_t>(block[j]);
  }
}

template <typename scalar_t>
void ma_tensor(const at::Tensor& grad, const at::Tensor& window, const at::Tensor& sum, int64_t count, double lamb) {
  const int64_t w = window.size(0);
  const int64_t n = grad.numel();
  const bool evicts = count >= w;            // the slot holds the oldest gradient of a full window
  const bool wraps = (count + 1) % w == 0;   // this push fills the last row: re-sum exactly
  const bool filled = count + 1 >= w;        // w gradients stored after this push
  const auto gain = static_cast<scalar_t>(lamb);
  const auto width = static_cast<scalar_t>(w);
  const scalar_t* rows = window.data_ptr<scalar_t>();
  scalar_t* slot = window.data_ptr<scalar_t>() + (count % w) * n;
  scalar_t* s = sum.data_ptr<scalar_t>();
  update_contiguous(grad, [&](const at::Tensor& contiguous_grad) {
    scalar_t* g = contiguous_grad.data_ptr<scalar_t>();
    at::parallel_for(0, n, kGrainSize, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const scalar_t oldest = evicts ? slot[i] : scalar_t(0);
        slot[i] = g[i];
        if (wraps) continue;  // re-summed below
        if (std::isfinite(oldest)) {
          s[i] = s[i] - oldest + g[i];
        } else {
          resum_exactly(rows, s, w, n, i, i + 1);
        }
      }
      if (wraps) resum_exactly(rows, s, w, n, begin, end);
      if (filled) {
        for (int64_t i = begin; i < end; ++i) g[i] += gain * (s[i] / width);
      }
    });
  });
}

// memory=false: the Meta kernel's subset, see check_ema_args in grokfast_ema.cpp.
void check_ma_args(at::TensorList grads, at::TensorList windows, at::TensorList sums, at::IntArrayRef counts,
                   double lamb, bool memory = true) {
  check_float_tensors_on_one_device(grads, kOp, "grads");
  if (memory) check_writable_in_place(grads, kOp, "grads");
  check_state_list(grads, windows, kOp, "grads", "windows", memory);
  check_state_list(grads, sums, kOp, "grads", "sums", memory);
  check_same_shapes(grads, sums, kOp, "grads", "sums");
  TORCH_CHECK(counts.size() == grads.size(), kOp, ": grads has ", grads.size(), " tensors but counts has ",
              counts.size(), " entries");
  for (size_t i = 0; i < grads.size(); ++i) {
    const auto& window = windows[i];
    TORCH_CHECK(window.dim() == grads[i].dim() + 1 && window.sym_size(0) >= 1 &&
                    window.sym_sizes().slice(1) == grads[i].sym_sizes(),
                kOp, ": windows[", i, "] has shape ", window.sym_sizes(), "; expected (w, *grads[", i,
                "].shape) with w >= 1, grads[", i, "] has shape ", grads[i].sym_sizes());
    TORCH_CHECK(counts[i] >= 0, kOp, ": counts[", i, "] must be >= 0, got ", counts[i]);
    if (memory) {
      TORCH_CHECK(!windows[i].is_alias_of(sums[i]), kOp, ": windows[", i, "] and sums[", i, "] share memory");
    }
  }
  TORCH_CHECK(std::isfinite(lamb), kOp, ": lamb must be finite, got ", lamb);
}

// The exact sum of a window's rows, accumulated in float64.
at::Tensor window_sum(const at::Tensor& window) {
  static const int64_t kRows[] = {0};
  return window.sum(at::IntArrayRef(kRows, 1), /*keepdim=*/false, at::kDouble);
}

// Device-generic: the CPU kernel's algorithm in ATen ops, tensor by tensor.
void grokfast_ma_generic(at::TensorList grads, at::TensorList windows, at::TensorList sums, at::IntArrayRef counts,
                         double lamb) {
  check_ma_args(grads, windows, sums, counts, lamb);
  // Positions whose evicted row may hold non-finite entries, with that row and its mask.
  std::vector<size_t> evicting;
  std::vector<at::Tensor> nonfinite, any_nonfinite;
  for (size_t i = 0; i < grads.size(); ++i) {
    const int64_t w = windows[i].size(0);
    const int64_t count = counts[i];
    const bool evicts = count >= w;
    const bool wraps = (count + 1) % w == 0;
    const at::Tensor slot = windows[i].select(0, count % w);
    const at::Tensor oldest = evicts && !wraps ? slot.clone() : at::Tensor();
    slot.copy_(grads[i]);
    if (wraps) {
      sums[i].copy_(window_sum(windows[i]));  // exact re-sum, as the CPU kernel
    } else if (evicts) {
      sums[i].sub_(oldest).add_(grads[i]);
      evicting.push_back(i);
      nonfinite.push_back(at::isfinite(oldest).logical_not_());
      any_nonfinite.push_back(nonfinite.back().any());
    } else {
      sums[i].add_(grads[i]);
    }
  }
  if (!evicting.empty()) {
    const at::Tensor flags = at::stack(any_nonfinite).cpu();  // the one synchronisation
    const bool* any = flags.data_ptr<bool>();
    for (size_t k = 0; k < evicting.size(); ++k) {
      if (!any[k]) continue;
      const size_t i = evicting[k];
      const at::Tensor exact = window_sum(windows[i]).to(sums[i].scalar_type());
      sums[i].copy_(at::where(nonfinite[k], exact, sums[i]));
    }
  }
  for (size_t i = 0; i < grads.size(); ++i) {
    const int64_t w = windows[i].size(0);
    if (counts[i] + 1 >= w) grads[i].add_(sums[i] / static_cast<double>(w), lamb);
  }
}

void grokfast_ma_meta(at::TensorList grads, at::TensorList windows, at::TensorList sums, at::IntArrayRef counts,
                      double lamb) {
  check_ma_args(grads, windows, sums, counts, lamb, /*memory=*/false);
}

void grokfast_ma_cpu(at::TensorList grads, at::TensorList windows, at::TensorList sums, at::IntArrayRef counts,
                     double lamb) {
  if (generic_on_cpu()) return grokfast_ma_generic(grads, windows, sums, counts, lamb);
  check_ma_args(grads, windows, sums, counts, lamb);
  for (size_t i = 0; i < grads.size(); ++i) {
    AT_DISPATCH_FLOATING_TYPES(grads[i].scalar_type(), kOp, [&] {
      ma_tensor<scalar_t>(grads[i], windows[i], sums[i], counts[i], lamb);
    });
  }
}

using Signature = void(at::TensorList, at::TensorList, at::TensorList, at::IntArrayRef, double);

c10::TypedOperatorHandle<Signature> grokfast_ma_handle() {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("neuralgrok::grokfast_ma_", "")
                       .typed<Signature>();
  return op;
}

// Autograd: not differentiable, so nothing it writes may require grad; then the kernels below
// (ADInplaceOrView included: torch's autogradNotImplementedFallback skips it for ops that return
// nothing).
void grokfast_ma_autograd(c10::DispatchKeySet keys, at::TensorList grads, at::TensorList windows,
                                                    at::TensorList sums, at::IntArrayRef counts, double lamb) {
  check_no_grad_required(grads, kOp, "grads");
  check_no_grad_required(windows, kOp, "windows");
  check_no_grad_required(sums, kOp, "sums");
  at::AutoDispatchBelowAutograd guard;
  grokfast_ma_handle().redispatch(keys & c10::after_autograd_keyset, grads, windows, sums, counts, lamb);
}

// ADInplaceOrView: the op below, then the version counters of everything it wrote are bumped.
void grokfast_ma_inplace_or_view(c10::DispatchKeySet keys, at::TensorList grads, at::TensorList windows,
                                                           at::TensorList sums, at::IntArrayRef counts, double lamb) {
  {
    at::AutoDispatchBelowADInplaceOrView guard;
    grokfast_ma_handle().redispatch(keys & c10::after_ADInplaceOrView_keyset, grads, windows, sums, counts, lamb);
  }
  bump_versions(grads);
  bump_versions(windows);
  bump_versions(sums);
}

}  // namespace

TORCH_LIBRARY_IMPL(neuralgrok, CPU, m) {
  m.impl("grokfast_ma_", TORCH_FN(grokfast_ma_cpu));
}

TORCH_LIBRARY_IMPL(neuralgrok, CompositeExplicitAutograd, m) {
  m.impl("grokfast_ma_", TORCH_FN(grokfast_ma_generic));
}

TORCH_LIBRARY_IMPL(neuralgrok, Meta, m) {
  m.impl("grokfast_ma_", TORCH_FN(grokfast_ma_meta));
}

TORCH_LIBRARY_IMPL(neuralgrok, Autograd, m) {
  m.impl("grokfast_ma_", TORCH_FN(grokfast_ma_autograd));
}

TORCH_LIBRARY_IMPL(neuralgrok, ADInplaceOrView, m) {
  m.impl("grokfast_ma_", TORCH_FN(grokfast_ma_inplace_or_view));
}

}  // namespace neuralgrok
