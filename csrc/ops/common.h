// Input validation shared by the multi-tensor ops: every check names the op and the offending
// list position, so a Python caller can map it back to a parameter.
#pragma once

#include <ATen/ATen.h>
#include <ATen/MemoryOverlap.h>

namespace neuralgrok {

// One list entry: defined, float32 or float64. (Sparse and other layouts never get here: the
// dispatcher finds no kernel for them.)
inline void check_float_tensor(const at::Tensor& t, size_t i, const char* op, const char* what) {
  TORCH_CHECK(t.defined(), op, ": ", what, "[", i, "] is undefined");
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

// An op's own per-tensor state, paired with `tensors` position by position: same list length, and
// each state[i] has the dtype and device of tensors[i], is contiguous (the kernels index it
// directly) and shares no memory with tensors[i]. Shapes are checked by the op.
inline void check_state_list(at::TensorList tensors, at::TensorList state, const char* op, const char* what,
                             const char* what_state) {
  TORCH_CHECK(state.size() == tensors.size(), op, ": ", what, " has ", tensors.size(), " tensors but ",
              what_state, " has ", state.size());
  for (size_t i = 0; i < state.size(); ++i) {
    const auto& s = state[i];
    TORCH_CHECK(s.defined(), op, ": ", what_state, "[", i, "] is undefined");
    TORCH_CHECK(s.scalar_type() == tensors[i].scalar_type(), op, ": ", what_state, "[", i, "] has dtype ",
                s.scalar_type(), " but ", what, "[", i, "] has ", tensors[i].scalar_type());
    TORCH_CHECK(s.device() == tensors[i].device(), op, ": ", what_state, "[", i, "] is on ", s.device(), " but ",
                what, "[", i, "] is on ", tensors[i].device());
    TORCH_CHECK(s.is_contiguous(), op, ": ", what_state, "[", i, "] must be contiguous");
    TORCH_CHECK(!s.is_alias_of(tensors[i]), op, ": ", what_state, "[", i, "] shares memory with ", what, "[", i,
                "]");
  }
}

inline void check_cpu(at::TensorList tensors, const char* op, const char* what) {
  for (size_t i = 0; i < tensors.size(); ++i) {
    TORCH_CHECK(tensors[i].device().is_cpu(), op, ": ", what, "[", i, "] is on ", tensors[i].device(),
                "; this build has only CPU kernels");
  }
}

// Pairs two lists element by element: same length, same shapes.
inline void check_same_shapes(at::TensorList a, at::TensorList b, const char* op, const char* what_a,
                              const char* what_b) {
  TORCH_CHECK(a.size() == b.size(), op, ": ", what_a, " has ", a.size(), " tensors but ", what_b, " has ",
              b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    TORCH_CHECK(a[i].sizes() == b[i].sizes(), op, ": ", what_a, "[", i, "] has shape ", a[i].sizes(), " but ",
                what_b, "[", i, "] has shape ", b[i].sizes());
  }
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
