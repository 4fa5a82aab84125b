// Helpers of the CUDA sampling kernels (nade_sample.cu, pixel_network_sample.cu): the
// non-finite flag, the shared-memory hint, arithmetic rounded as the references round it
// (input checks: pixelar/checks.h, shared with the CPU kernels). Launch sizes:
// launch_plan.h. Free of CUDA headers, so that the CPU emulation tests compile them too.
//
// The draws and the per-element math come from csrc/include/pixelar/sampling_math.h and
// lstm_math.h, the code the CPU kernels run.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include <algorithm>
#include <cstdint>
#include <string>

#include "device_code.cuh"
#include "launch_plan.h"
#include "pixelar/checks.h"
#include "pixelar/sampling_math.h"

namespace pixelar {
namespace cuda {
namespace sampling_kernels {

// The hint of a sampler's shared-memory check (checks::check_smem): `what` is kept there,
// and what to do instead.
inline std::string sample_smem_hint(const char* what) {
  return std::string("the kernel keeps ") + what + " in shared memory; use a smaller model, "
         "float32, or sample on the CPU (backend 'cpp') or with "
         "pixelar.ops.backend('reference')";
}

// Correctly rounded +, *, / (never contracted into a fused multiply-add, and exact division
// whatever the division flags): where a kernel must round as the PyTorch reference does.
// The non-finite-logit rule of pixelar/sampling_math.h on the device: *flag = min(*flag, d),
// flag one int64 in device memory holding sampling::kNoBadDimension before the launch
// (d >= 0, so the unsigned minimum is the signed one).
__device__ __forceinline__ void record_nonfinite(int64_t* flag, int64_t d) {
  atomicMin(reinterpret_cast<unsigned long long*>(flag), static_cast<unsigned long long>(d));
}

// The flag a sampling launch reports its smallest non-finite dimension in (on `like`'s
// device); after the launch, checks::check_logits_finite(flag.item<int64_t>()) raises
// ValueError(sampling::nonfinite_message(d)), the CPU kernels' and the references' text.
inline at::Tensor nonfinite_flag(const at::Tensor& like) {
  return at::full({1}, sampling::kNoBadDimension, like.options().dtype(at::kLong));
}

__device__ __forceinline__ float add_rn(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ double add_rn(double a, double b) { return __dadd_rn(a, b); }
__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ float div_rn(float a, float b) { return __fdiv_rn(a, b); }
__device__ __forceinline__ double div_rn(double a, double b) { return __ddiv_rn(a, b); }

template <typename T>
__device__ __forceinline__ T relu(T v) {
  return v > T(0) ? v : T(0);
}

}  // namespace sampling_kernels
}  // namespace cuda
}  // namespace pixelar
