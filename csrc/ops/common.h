// Input validation shared by the multi-tensor ops: every check names the op and the offending
// list position, so a Python caller can map it back to a parameter.
#pragma once

#include <ATen/ATen.h>

namespace neuralgrok {

// All tensors defined, floating point (float32/float64), of one dtype and on one device.
inline void check_float_tensor_list(at::TensorList tensors, const char* op, const char* what) {
  TORCH_CHECK(!tensors.empty(), op, ": expected at least one tensor in ", what);
  const auto& first = tensors[0];
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& t = tensors[i];
    TORCH_CHECK(t.defined(), op, ": ", what, "[", i, "] is undefined");
    TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, op, ": ", what, "[", i,
                "] has dtype ", t.scalar_type(), "; expected float32 or float64");
    TORCH_CHECK(t.scalar_type() == first.scalar_type(), op, ": ", what, "[", i, "] has dtype ",
                t.scalar_type(), " but ", what, "[0] has ", first.scalar_type(), "; all must match");
    TORCH_CHECK(t.device() == first.device(), op, ": ", what, "[", i, "] is on ", t.device(), " but ", what,
                "[0] is on ", first.device(), "; all must be on one device");
  }
}

inline void check_cpu(at::TensorList tensors, const char* op, const char* what) {
  for (size_t i = 0; i < tensors.size(); ++i) {
    TORCH_CHECK(tensors[i].device().is_cpu(), op, ": ", what, "[", i, "] is on ", tensors[i].device(),
                "; this build has only CPU kernels");
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

}  // namespace neuralgrok
