// float32 kernels of the AGE op compiled for AVX2 + FMA (age_avx2.cpp, built with -mavx2 -mfma on x86-64
// with GCC or Clang; CMake then defines NEURALGROK_AVX2_KERNELS). Callers must check that the CPU runs
// AVX2 and FMA first (neuralgrok::age's CPU kernel does). Plain types only in this interface: the
// AVX2 translation unit includes no torch or standard-library header whose inline functions could be
// merged with the baseline build's.
#pragma once

#include <cstdint>

namespace neuralgrok {
namespace avx2 {

// sum_i |x_i| log(|x_i| + eps) over x[0, n), in float64 partial sums (0 log 0 = 0).
double sum_abs_log_abs(const float* x, int64_t n, float eps);

// With y_i = |x_i| / scale: *l1 = sum_i y_i and *sum = sum_i y_i log y_i over x[0, n) (0 log 0 = 0).
void normalized_sums(const float* x, int64_t n, float scale, double* l1, double* sum);

}  // namespace avx2
}  // namespace neuralgrok
