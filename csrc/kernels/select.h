// Which SIMD kernels of csrc/kernels/ the CPU kernels run, chosen once per process and op (at the op's
// first call): the AVX2 + FMA kernels where they are built in (NEURALGROK_AVX2_KERNELS: x86-64 with GCC
// or Clang), the CPU runs both and the op's environment variable asks for them; otherwise the baseline
// loops, which every other CPU runs:
//
//   NEURALGROK_AGE_KERNEL      neuralgrok::age, float32; unset = avx2 (baseline: the buffered ATen-log
//                              path). AGE is only logged, so its last bits never steer a run.
//   NEURALGROK_AMPLIFY_KERNEL  neuralgrok::amplify and its backward; unset = baseline (std::exp entry by
//                              entry), avx2: the exps 4 at a time, within 1 ulp of std::exp. Opt-in because
//                              amplify is on the training path: a last bit changes a run's trajectory, and
//                              the default keeps it the same on every CPU and equal to the committed results.
//
// Another value is an error. neuralgrok._extension.simd_kernels() says which kernels run; tests/test_age.py
// and tests/test_amplifier.py run the other choice in a subprocess and compare.
#pragma once

namespace neuralgrok {

bool age_avx2_kernels();
bool amplify_avx2_kernels();

}  // namespace neuralgrok
