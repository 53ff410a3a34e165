// float64 exps of the amplify op compiled for AVX2 + FMA (amplify_avx2.cpp, built with -mavx2 -mfma on
// x86-64 with GCC or Clang; CMake then defines NEURALGROK_AVX2_KERNELS). Callers must check that the CPU
// runs AVX2 and FMA first (neuralgrok::amplify's CPU kernel does, see ops/amplify.cpp). Plain types only
// in this interface, as in age_avx2.h.
#pragma once

#include <cstdint>

namespace neuralgrok {
namespace avx2 {

// In place over e[0, n): e_i = exp(e_i - shift), and with u_i = e_i g_i: *sum_squares = sum_i u_i^2 and
// *max_abs = max_i |u_i| (float64, 4 lanes then the lanes added in a fixed order). The exp is within
// 1 ulp of float64's (the same values as std::exp but for a last-bit difference now and then); an
// argument below -708 or not finite takes std::exp.
void exps_and_squares(const float* g, double* e, int64_t n, double shift, double* sum_squares, double* max_abs);
void exps_and_squares(const double* g, double* e, int64_t n, double shift, double* sum_squares, double* max_abs);

}  // namespace avx2
}  // namespace neuralgrok
