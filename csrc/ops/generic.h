// Where each op's two implementations are registered (see csrc/README.md):
//
//   CPU                        the fast path: hand-written kernels (one pass, float64 accumulation,
//                              at::parallel_for);
//   CompositeExplicitAutograd  the device-generic implementation, in ATen tensor ops, so CUDA and
//                              every other backend dispatch to it; a backend's own kernel (CPU
//                              here) overrides it for that backend;
//   Meta                       shapes only: serves FakeTensor (torch.compile, opcheck) and the meta
//                              device;
//   Autograd                   the C++ autograd::Function of a differentiable op (device independent:
//                              it redispatches below autograd to whichever of the above applies).
//
// The generic implementations are tested on CPU: while generic_on_cpu() is true every CPU kernel
// forwards to its op's generic implementation, so the same dispatcher, autograd and checks run as on
// a GPU. Python sets it with neuralgrok._extension.generic_kernels() (a context manager) or, for a
// whole process, the environment variable NEURALGROK_GENERIC_KERNELS=1.
#pragma once

namespace neuralgrok {

// Whether the CPU kernels forward to the device-generic implementations (process-wide; for tests).
bool generic_on_cpu();

}  // namespace neuralgrok
