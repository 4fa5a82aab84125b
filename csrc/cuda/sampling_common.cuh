// Helpers of the CUDA sampling kernels (sampling_nade.cu, sampling_pixel_networks.cu):
// input checks with the CPU kernels' messages, launch sizes, dynamic shared memory, the
// block-wide sums, and arithmetic rounded as the references round it.
//
// Self-contained on purpose (common.cuh serves the training kernels). The draws and the
// per-element math come from csrc/include/pixelar/sampling_math.h and lstm_math.h, the
// code the CPU kernels run.
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

namespace pixelar {
namespace cuda {
namespace sampling_kernels {

constexpr int kMaxSampleThreads = 512;  // launch bound of the sampling kernels
constexpr size_t kDefaultSmemBytes = 48 * 1024;

// "(2, 3)", "(4,)": shapes written as the CPU kernels' messages write them.
inline std::string shape_str(const at::Tensor& t) {
  std::string s = "(";
  for (int64_t d = 0; d < t.dim(); ++d) {
    if (d) s += ", ";
    s += std::to_string(t.size(d));
  }
  return s + (t.dim() == 1 ? ",)" : ")");
}

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

// Allow `kernel` `bytes` of dynamic shared memory, or fail saying why and what to do.
template <typename Kernel>
void reserve_sample_smem(Kernel kernel, size_t bytes, const char* op, const char* what) {
  int dev = 0;
  C10_CUDA_CHECK(cudaGetDevice(&dev));
  int limit = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  TORCH_CHECK(bytes <= static_cast<size_t>(limit), op, ": the CUDA kernel keeps ", what,
              " in shared memory: ", bytes, " bytes per block at this size, the device allows ",
              limit, "; use a smaller model, float32, or sample on the CPU (backend 'cpp') or "
              "with pixelar.ops.backend('reference')");
  if (bytes > kDefaultSmemBytes) {
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        static_cast<int>(bytes)));
  }
}

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
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
