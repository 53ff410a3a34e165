// Input validation shared by the multi-tensor ops: every check names the op and the offending
// list position, so a Python caller can map it back to a parameter.
#pragma once

#include <ATen/ATen.h>
#include <ATen/MemoryOverlap.h>
#include <ATen/core/grad_mode.h>

#include <vector>

namespace neuralgrok {

// One list entry: defined, dense (strided: sparse and other layouts reach the device-generic
// kernels, which are registered for every backend), float32 or float64.
inline void check_float_tensor(const at::Tensor& t, size_t i, const char* op, const char* what) {
  TORCH_CHECK(t.defined(), op, ": ", what, "[", i, "] is undefined");
  TORCH_CHECK(t.layout() == at::kStrided, op, ": ", what, "[", i, "] has layout ", t.layout(),
              "; only dense (strided) tensors are supported");
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, op, ": ", what, "[", i,
              "] has dtype ", t.scalar_type(), "; expected float32 or float64");
}

// A non-empty list of float tensors on one device; dtypes may differ between positions (ops that
// treat each position on its own, such as the Grokfast filters over a model's parameters).
inline void check_float_tensors_on_one_device(at::TensorList tensors, const char* op, const char* what) {
  TORCH_CHECK(!tensors.empty(), op, ": expected at least one tensor in ", what);
  const auto& first = tensors[0];
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& t = tensors[i];
    check_float_tensor(t, i, op, what);
    TORCH_CHECK(t.device() == first.device(), op, ": ", what, "[", i, "] is on ", t.device(), " but ", what,
                "[0] is on ", first.device(), "; all must be on one device");
  }
}

// As above, and all of one dtype (ops that combine the tensors of the list).
inline void check_float_tensor_list(at::TensorList tensors, const char* op, const char* what) {
  check_float_tensors_on_one_device(tensors, op, what);
  for (size_t i = 0; i < tensors.size(); ++i) {
    TORCH_CHECK(tensors[i].scalar_type() == tensors[0].scalar_type(), op, ": ", what, "[", i, "] has dtype ",
                tensors[i].scalar_type(), " but ", what, "[0] has ", tensors[0].scalar_type(), "; all must match");
  }
}

// Tensors an op writes in place: overlapping memory (an expanded tensor) would make one entry's
// update clobber another's.
inline void check_writable_in_place(at::TensorList tensors, const char* op, const char* what) {
  for (size_t i = 0; i < tensors.size(); ++i) {
    TORCH_CHECK(at::has_internal_overlap(tensors[i]) != at::MemOverlap::Yes, op, ": ", what, "[", i,
                "] has internally overlapping memory (an expanded tensor?); it cannot be updated in place");
  }
}

// For the Autograd kernels of the in-place ops, which are not differentiable: with grad mode on,
// nothing they write may require grad (they filter .grad tensors, which do not). Under no_grad they
// may write such tensors, as ATen's in-place ops may.
inline void check_no_grad_required(at::TensorList tensors, const char* op, const char* what) {
  if (!at::GradMode::is_enabled()) return;
  for (size_t i = 0; i < tensors.size(); ++i) {
    TORCH_CHECK(!tensors[i].requires_grad(), op, ": ", what, "[", i, "] requires grad, but the op writes it in place ",
                "and is not differentiable; call it under torch.no_grad() or on tensors that do not require grad");
  }
}

// For the ADInplaceOrView kernels of the in-place ops: bumps the version counter of every tensor
// the op wrote, so that autograd refuses to use a tensor saved for backward that was overwritten
// (what ATen's in-place ops do; torch's ADInplaceOrView fallback only bumps returned tensors, and
// these ops return nothing).
inline void bump_versions(at::TensorList tensors) {
  for (const auto& t : tensors) t.unsafeGetTensorImpl()->bump_version();
}

// An op's own per-tensor state, paired with `tensors` position by position: same list length, and
// each state[i] has the dtype and device of tensors[i], is contiguous (the kernels index it
// directly) and shares no memory with tensors[i]. Shapes are checked by the op.
// memory=false leaves out contiguity and aliasing (the Meta kernels' FakeTensors may have symbolic
// strides; the real kernels check them).
inline void check_state_list(at::TensorList tensors, at::TensorList state, const char* op, const char* what,
                             const char* what_state, bool memory = true) {
  TORCH_CHECK(state.size() == tensors.size(), op, ": ", what, " has ", tensors.size(), " tensors but ",
              what_state, " has ", state.size());
  for (size_t i = 0; i < state.size(); ++i) {
    const auto& s = state[i];
    TORCH_CHECK(s.defined(), op, ": ", what_state, "[", i, "] is undefined");
    TORCH_CHECK(s.scalar_type() == tensors[i].scalar_type(), op, ": ", what_state, "[", i, "] has dtype ",
                s.scalar_type(), " but ", what, "[", i, "] has ", tensors[i].scalar_type());
    TORCH_CHECK(s.device() == tensors[i].device(), op, ": ", what_state, "[", i, "] is on ", s.device(), " but ",
                what, "[", i, "] is on ", tensors[i].device());
    if (!memory) continue;
    TORCH_CHECK(s.is_contiguous(), op, ": ", what_state, "[", i, "] must be contiguous");
    TORCH_CHECK(!s.is_alias_of(tensors[i]), op, ": ", what_state, "[", i, "] shares memory with ", what, "[", i,
                "]");
  }
}

// Every tensor of `tensors` has the dtype and device of `like` (the first tensor of another list
// already checked with check_float_tensor_list).
inline void check_matches(at::TensorList tensors, const at::Tensor& like, const char* op, const char* what,
                          const char* what_like) {
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& t = tensors[i];
    TORCH_CHECK(t.defined(), op, ": ", what, "[", i, "] is undefined");
    TORCH_CHECK(t.scalar_type() == like.scalar_type(), op, ": ", what, "[", i, "] has dtype ", t.scalar_type(),
                " but ", what_like, " have ", like.scalar_type(), "; all must match");
    TORCH_CHECK(t.device() == like.device(), op, ": ", what, "[", i, "] is on ", t.device(), " but ", what_like,
                " are on ", like.device(), "; all must be on one device");
  }
}

// Pairs two lists element by element: same length, same shapes. Shapes are compared as SymInts,
// so the Meta kernels can run these checks on FakeTensors with symbolic shapes (torch.compile with
// dynamic shapes); on real tensors that is a plain integer comparison.
inline void check_same_shapes(at::TensorList a, at::TensorList b, const char* op, const char* what_a,
                              const char* what_b) {
  TORCH_CHECK(a.size() == b.size(), op, ": ", what_a, " has ", a.size(), " tensors but ", what_b, " has ",
              b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    TORCH_CHECK(a[i].sym_sizes() == b[i].sym_sizes(), op, ": ", what_a, "[", i, "] has shape ", a[i].sym_sizes(),
                " but ", what_b, "[", i, "] has shape ", b[i].sym_sizes());
  }
}

// The index of the first tensor of `tensors` with a NaN or Inf entry, or -1. One host transfer for
// the whole list (the device-generic kernels call it on GPU tensors: one synchronisation, not one
// per tensor).
inline int64_t first_nonfinite(at::TensorList tensors) {
  if (tensors.empty()) return -1;
  std::vector<at::Tensor> finite;
  finite.reserve(tensors.size());
  for (const auto& t : tensors) finite.push_back(at::isfinite(t).all());
  const at::Tensor flags = at::stack(finite).cpu();
  const bool* f = flags.data_ptr<bool>();
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (!f[i]) return static_cast<int64_t>(i);
  }
  return -1;
}

// A new tensor of t's shape, dtype and device, contiguous: what every kernel returns, and so what
// the Meta kernels must return (symbolic shapes pass through empty_like unchanged).
inline at::Tensor empty_contiguous_like(const at::Tensor& t) {
  return at::empty_like(t, t.options(), at::MemoryFormat::Contiguous);
}

// Runs kernel(c) on a contiguous tensor c holding t's values, for kernels that index raw memory
// and update it in place: a non-contiguous t goes through a contiguous copy that is written back.
template <typename Kernel>
void update_contiguous(const at::Tensor& t, Kernel&& kernel) {
  if (t.is_contiguous()) {
    kernel(t);
  } else {
    const at::Tensor c = t.contiguous();
    kernel(c);
    t.copy_(c);
  }
}

}  // namespace neuralgrok
