// Helpers of the CUDA sampling kernels (sampling_nade.cuh, sampling_pixel_networks.cuh):
// input checks with the CPU kernels' messages, arithmetic rounded as the references round
// it. Launch sizes: launch_plan.h. Free of CUDA headers, so that the CPU emulation tests
// compile them too.
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
#include "host_common.h"
#include "pixelar/sampling_math.h"
#include "pixelar/shape_str.h"

namespace pixelar {
namespace cuda {
namespace sampling_kernels {

// t is a tensor of Dev's device type on `device`, of dtype `dtype` and shape `shape`.
template <typename Dev>
void check_tensor(const char* op, const at::Tensor& t, const char* name, at::ScalarType dtype,
                  at::IntArrayRef shape, const at::Device& device) {
  TORCH_CHECK(t.defined(), op, ": ", name, " is an undefined tensor");
  TORCH_CHECK(t.device().type() == Dev::kDeviceType, op, ": ", name, " must be a ",
              c10::DeviceTypeName(Dev::kDeviceType), " tensor for this kernel, got a "
              "tensor on ", t.device());
  TORCH_CHECK(t.device() == device, op, ": ", name, " must be on ", device,
              " (the device of the other inputs), got ", t.device());
  TORCH_CHECK(t.scalar_type() == dtype, op, ": ", name, " must be ", dtype, ", got ",
              t.scalar_type());
  TORCH_CHECK(t.sizes() == shape, op, ": ", name, " must have shape ", shape, ", got ",
              shape_str(t));
}

// `bytes` of dynamic shared memory within `limit` (host_common.h's check_smem), or an
// error saying that `what` is kept there and what to do.
inline void check_sample_smem(size_t bytes, size_t limit, const char* op, const char* what) {
  const std::string hint = std::string("the kernel keeps ") + what + " in shared memory; use a "
                           "smaller model, float32, or sample on the CPU (backend 'cpp') or "
                           "with pixelar.ops.backend('reference')";
  check_smem(bytes, limit, op, hint.c_str());
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
// device), and the check after the launch: ValueError(sampling::nonfinite_message(d)), the
// CPU kernels' and the references' text.
inline at::Tensor nonfinite_flag(const at::Tensor& like) {
  return at::full({1}, sampling::kNoBadDimension, like.options().dtype(at::kLong));
}
inline void check_nonfinite_flag(const at::Tensor& flag) {
  const int64_t first = flag.item<int64_t>();
  TORCH_CHECK_VALUE(first == sampling::kNoBadDimension, sampling::nonfinite_message(first));
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
