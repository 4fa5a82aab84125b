// Helpers of the CUDA sampling kernels (sampling_nade.cu, sampling_pixel_networks.cu):
// input checks with the CPU kernels' messages, launch sizes, dynamic shared memory, the
// block-wide sums, and arithmetic rounded as the references round it.
//
// Shared memory and warp sums come from common.cuh (the training kernels' helpers). The
// draws and the per-element math come from csrc/include/pixelar/sampling_math.h and
// lstm_math.h, the code the CPU kernels run.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <string>

#include "common.cuh"
#include "pixelar/shape_str.h"

namespace pixelar {
namespace cuda {
namespace sampling_kernels {

constexpr int kMaxSampleThreads = 512;  // launch bound of the sampling kernels

// t is a CUDA tensor on `device`, of dtype `dtype` and shape `shape`.
inline void check_tensor(const char* op, const at::Tensor& t, const char* name,
                         at::ScalarType dtype, at::IntArrayRef shape, const at::Device& device) {
  TORCH_CHECK(t.defined(), op, ": ", name, " is an undefined tensor");
  TORCH_CHECK(t.is_cuda(), op, ": ", name, " must be a CUDA tensor for this kernel, got a "
              "tensor on ", t.device());
  TORCH_CHECK(t.device() == device, op, ": ", name, " must be on ", device,
              " (the device of the other inputs), got ", t.device());
  TORCH_CHECK(t.scalar_type() == dtype, op, ": ", name, " must be ", dtype, ", got ",
              t.scalar_type());
  TORCH_CHECK(t.sizes() == shape, op, ": ", name, " must have shape ", shape, ", got ",
              shape_str(t));
}

// Threads for a block whose loops run over up to n items: a multiple of 32 in
// [32, kMaxSampleThreads] (the loops stride by blockDim.x, so any n works).
inline int sample_threads(int64_t n) {
  const int64_t warps = std::max<int64_t>(
      1, std::min<int64_t>((n + 31) / 32, kMaxSampleThreads / 32));
  return static_cast<int>(warps * 32);
}

// Allow `kernel` `bytes` of dynamic shared memory (common.cuh's reserve_smem), or fail
// saying that `what` is kept there and what to do.
template <typename Kernel>
void reserve_sample_smem(Kernel kernel, size_t bytes, const char* op, const char* what) {
  const std::string hint = std::string("the kernel keeps ") + what + " in shared memory; use a "
                           "smaller model, float32, or sample on the CPU (backend 'cpp') or "
                           "with pixelar.ops.backend('reference')";
  reserve_smem(kernel, bytes, op, hint.c_str());
}

// Correctly rounded +, *, / (never contracted into a fused multiply-add, and exact division
// under --use_fast_math): where a kernel must round as the PyTorch reference does.
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
