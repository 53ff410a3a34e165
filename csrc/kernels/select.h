// Which SIMD kernels of csrc/kernels/ the CPU kernels run, chosen once per process and op (at the op's
// first call): the AVX2 + FMA kernels where they are built in (NEURALGROK_AVX2_KERNELS: x86-64 with GCC
// or Clang), the CPU runs both and the op's environment variable does not say `baseline`; otherwise the
// baseline loops, which every other CPU runs. The variables are for testing the baseline loops on an
// AVX2 machine (tests/test_age.py, tests/test_amplify_kernels.py):
//
//   NEURALGROK_AGE_KERNEL=baseline      neuralgrok::age, float32: the buffered ATen-log path
//   NEURALGROK_AMPLIFY_KERNEL=baseline  neuralgrok::amplify and its backward: std::exp entry by entry
//
// `avx2` or unset is the default; another value is an error. neuralgrok._extension.simd_kernels() says
// which kernels run.
#pragma once

namespace neuralgrok {

bool age_avx2_kernels();
bool amplify_avx2_kernels();

}  // namespace neuralgrok
