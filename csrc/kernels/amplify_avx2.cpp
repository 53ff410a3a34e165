// The amplify op's float64 exps in 4-double vectors, for CPUs with AVX2 and FMA (see amplify_avx2.h).
//
// exp x = 2^k exp r with k = round(x / log 2) and r = x - k log 2 (log 2 in two parts, so r is exact to
// about 1e-20), |r| <= log(2) / 2; exp r is its Taylor polynomial of degree 13 (truncation under 5e-18
// relative), evaluated by Horner's rule with FMA; 2^k is put into the exponent bits. Within 1 ulp of
// float64's exp for x in [-708, 0] (the op's arguments: s_i - max s <= 0); lanes outside that range
// (far below it an entry's weight underflows) take std::exp, as the baseline loop does.
#include "kernels/amplify_avx2.h"

#include <cmath>
#include <cstring>

namespace neuralgrok {
namespace avx2 {
namespace {

typedef double f64x4 __attribute__((vector_size(32)));
typedef int64_t i64x4 __attribute__((vector_size(32)));
typedef float f32x4 __attribute__((vector_size(16)));

constexpr double kLowest = -708.0;  // exp(-708) ~ 3.3e-308: still a normal float64

inline f64x4 exp4(f64x4 x) {
  const f64x4 k = __builtin_ia32_roundpd256(x * 1.4426950408889634, 0x08);  // nearest, no exception
  f64x4 r = x - k * 6.93147180369123816490e-01;  // log 2, high part (exact product for |k| < 2^11)
  r = r - k * 1.90821492927058770002e-10;        // log 2, low part
  f64x4 p = r * (1.0 / 6227020800.0) + 1.0 / 479001600.0;
  p = p * r + 1.0 / 39916800.0;
  p = p * r + 1.0 / 3628800.0;
  p = p * r + 1.0 / 362880.0;
  p = p * r + 1.0 / 40320.0;
  p = p * r + 1.0 / 5040.0;
  p = p * r + 1.0 / 720.0;
  p = p * r + 1.0 / 120.0;
  p = p * r + 1.0 / 24.0;
  p = p * r + 1.0 / 6.0;
  p = p * r + 0.5;
  p = p * r + 1.0;
  p = p * r + 1.0;
  const i64x4 bits = (__builtin_convertvector(k, i64x4) + 1023) << 52;  // 2^k, k in [-1022, 0]
  f64x4 scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

inline f64x4 load4(const double* x) {
  f64x4 v;
  std::memcpy(&v, x, sizeof v);
  return v;
}

inline f64x4 load4(const float* x) {
  f32x4 v;
  std::memcpy(&v, x, sizeof v);
  return __builtin_convertvector(v, f64x4);
}

inline f64x4 abs4(f64x4 v) {
  i64x4 bits;
  std::memcpy(&bits, &v, sizeof v);
  bits &= 0x7fffffffffffffffLL;
  std::memcpy(&v, &bits, sizeof v);
  return v;
}

template <typename scalar_t>
void exps_and_squares_impl(const scalar_t* g, double* e, int64_t n, double shift, double* sum_squares,
                           double* max_abs) {
  f64x4 squares = {}, largest = {};
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const f64x4 x = load4(e + i) - shift;
    f64x4 ex;
    if (__builtin_expect(x[0] >= kLowest && x[1] >= kLowest && x[2] >= kLowest && x[3] >= kLowest &&
                             x[0] <= 0.0 && x[1] <= 0.0 && x[2] <= 0.0 && x[3] <= 0.0,
                         1)) {
      ex = exp4(x);
    } else {
      for (int j = 0; j < 4; ++j) ex[j] = std::exp(x[j]);
    }
    std::memcpy(e + i, &ex, sizeof ex);
    const f64x4 u = ex * load4(g + i);
    squares += u * u;
    const f64x4 a = abs4(u);
    largest = a > largest ? a : largest;
  }
  double sum = (squares[0] + squares[1]) + (squares[2] + squares[3]);
  double top = std::max(std::max(largest[0], largest[1]), std::max(largest[2], largest[3]));
  for (; i < n; ++i) {
    e[i] = std::exp(e[i] - shift);
    const double u = e[i] * static_cast<double>(g[i]);
    sum += u * u;
    top = std::max(top, std::abs(u));
  }
  *sum_squares = sum;
  *max_abs = top;
}

}  // namespace

void exps_and_squares(const float* g, double* e, int64_t n, double shift, double* sum_squares, double* max_abs) {
  exps_and_squares_impl(g, e, n, shift, sum_squares, max_abs);
}

void exps_and_squares(const double* g, double* e, int64_t n, double shift, double* sum_squares, double* max_abs) {
  exps_and_squares_impl(g, e, n, shift, sum_squares, max_abs);
}

}  // namespace avx2
}  // namespace neuralgrok
