// The AGE op's float32 sums in one pass over memory, for CPUs with AVX2 and FMA (see age_avx2.h).
//
// Each entry's log is a polynomial evaluated in 8-float vectors (GCC/Clang vector extensions, which
// this file's -mavx2 -mfma turn into AVX2 and FMA instructions): l = m 2^e with m in [sqrt(1/2),
// sqrt(2)), log l = e log 2 + log m, and log m a degree-10 polynomial in f = m - 1 (the coefficients
// of Cephes' logf; relative error under 1e-7 on normal and subnormal inputs, as a float32 log). The
// products |x| log|x| of a block of 64 entries are summed in float32 and each block's sums added in
// float64, in a fixed order: the result depends only on the input (not on the thread count).
// Infinite and NaN entries give a finite log, and the non-finite weight they come with makes the
// sum non-finite; l = 0 gives a finite log, which is multiplied by 0 (0 log 0 = 0).
#include "kernels/age_avx2.h"

#include <cstring>

namespace neuralgrok {
namespace avx2 {
namespace {

typedef float f32x8 __attribute__((vector_size(32)));
typedef int32_t i32x8 __attribute__((vector_size(32)));
typedef uint32_t u32x8 __attribute__((vector_size(32)));
typedef float f32x4 __attribute__((vector_size(16)));
typedef double f64x4 __attribute__((vector_size(32)));

constexpr float kMinNormal = 1.17549435e-38f;  // FLT_MIN
constexpr int kBlock = 64;                     // entries summed in float32 before the float64 sums

inline f32x8 abs8(f32x8 v) { return (f32x8)((u32x8)v & 0x7fffffffu); }

// log l, 8 lanes; see the file's comment.
inline f32x8 log8(f32x8 l) {
  const i32x8 subnormal = l < kMinNormal;  // -1 where true
  const f32x8 normal = subnormal ? l * 8388608.0f : l;  // 2^23
  u32x8 bits = (u32x8)normal;
  const i32x8 e = (i32x8)(bits >> 23) - 126 - (subnormal & 23);  // l = m 2^e, m in [1/2, 1)
  bits = (bits & 0x007fffffu) | 0x3f000000u;
  const f32x8 m = (f32x8)bits;
  const i32x8 low = m < 0.70710678f;  // m to [sqrt(1/2), sqrt(2)), e one less
  const f32x8 f = low ? m + m - 1.0f : m - 1.0f;
  const f32x8 fe = __builtin_convertvector(e + low, f32x8);
  const f32x8 z = f * f;
  f32x8 p = f * 7.0376836292e-2f - 1.1514610310e-1f;
  p = p * f + 1.1676998740e-1f;
  p = p * f - 1.2420140846e-1f;
  p = p * f + 1.4249322787e-1f;
  p = p * f - 1.6668057665e-1f;
  p = p * f + 2.0000714765e-1f;
  p = p * f - 2.4999993993e-1f;
  p = p * f + 3.3333331174e-1f;
  const f32x8 y = p * f * z - 2.12194440e-4f * fe - 0.5f * z;  // log 2 = 0.693359375 - 2.12194440e-4
  return f + y + 0.693359375f * fe;
}

inline f32x8 load8(const float* x) {
  f32x8 v;
  std::memcpy(&v, x, sizeof v);
  return v;
}

// acc += the 8 lanes of v, in float64.
inline void add_in_double(f64x4& low, f64x4& high, f32x8 v) {
  f32x4 a, b;
  std::memcpy(&a, &v, sizeof a);
  std::memcpy(&b, reinterpret_cast<const char*>(&v) + sizeof a, sizeof b);
  low += __builtin_convertvector(a, f64x4);
  high += __builtin_convertvector(b, f64x4);
}

inline double lanes_sum(f64x4 low, f64x4 high) {
  const f64x4 s = low + high;
  return (s[0] + s[1]) + (s[2] + s[3]);
}

// One block of kBlock entries of x (the last one padded with zeros, which add 0).
template <bool normalized>
inline void block(const float* x, float eps_or_scale, f64x4* acc) {
  f32x8 l1_0 = {}, l1_1 = {}, s0 = {}, s1 = {};
  for (int j = 0; j < kBlock; j += 16) {
    f32x8 a0 = abs8(load8(x + j)), a1 = abs8(load8(x + j + 8));
    if (normalized) {
      a0 = a0 / eps_or_scale;
      a1 = a1 / eps_or_scale;
      l1_0 += a0;
      l1_1 += a1;
      s0 += a0 * log8(a0);
      s1 += a1 * log8(a1);
    } else {
      s0 += a0 * log8(a0 + eps_or_scale);
      s1 += a1 * log8(a1 + eps_or_scale);
    }
  }
  add_in_double(acc[0], acc[1], s0 + s1);
  if (normalized) add_in_double(acc[2], acc[3], l1_0 + l1_1);
}

template <bool normalized>
void sums(const float* x, int64_t n, float eps_or_scale, double* l1, double* sum) {
  f64x4 acc[4] = {};  // sum (low, high lanes), l1 (low, high lanes)
  int64_t i = 0;
  for (; i + kBlock <= n; i += kBlock) block<normalized>(x + i, eps_or_scale, acc);
  if (i < n) {
    float tail[kBlock] = {};
    std::memcpy(tail, x + i, sizeof(float) * static_cast<size_t>(n - i));
    block<normalized>(tail, eps_or_scale, acc);
  }
  *sum = lanes_sum(acc[0], acc[1]);
  *l1 = normalized ? lanes_sum(acc[2], acc[3]) : 0.0;
}

}  // namespace

double sum_abs_log_abs(const float* x, int64_t n, float eps) {
  double l1, sum;
  sums<false>(x, n, eps, &l1, &sum);
  return sum;
}

void normalized_sums(const float* x, int64_t n, float scale, double* l1, double* sum) {
  sums<true>(x, n, scale, l1, sum);
}

}  // namespace avx2
}  // namespace neuralgrok
