// Helpers shared by the CUDA kernels in csrc/cuda/: input checks, launch sizes, dynamic
// shared memory, warp reductions. Per-element math lives in csrc/include/pixelar/lstm_math.h.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

namespace pixelar {
namespace cuda {

constexpr int kMaxThreads = 1024;
constexpr size_t kDefaultSmem = 48 * 1024;

// TORCH_CHECK that every tensor is a floating CUDA tensor on the device and of the dtype
// of the first one.
inline void check_cuda_inputs(const char* op, std::initializer_list<const at::Tensor*> ts,
                              std::initializer_list<const char*> names) {
  const at::Tensor& first = **ts.begin();
  auto name = names.begin();
  for (const at::Tensor* t : ts) {
    TORCH_CHECK(t->is_cuda(), op, ": ", *name, " must be a CUDA tensor, got ", t->device());
    TORCH_CHECK(t->scalar_type() == first.scalar_type(), op, ": ", *name,
                " must have dtype ", first.scalar_type(), ", got ", t->scalar_type());
    TORCH_CHECK(t->device() == first.device(), op, ": ", *name, " must be on ",
                first.device(), ", got ", t->device());
    TORCH_CHECK(at::isFloatingType(t->scalar_type()), op, ": ", *name,
                " must be floating point, got ", t->scalar_type());
    ++name;
  }
}

// Threads for a block that loops over n items: a multiple of 32, at most 1024.
inline int block_threads(int64_t n) {
  const int64_t warps = std::max<int64_t>(1, std::min<int64_t>((n + 31) / 32, kMaxThreads / 32));
  return static_cast<int>(warps * 32);
}

// Largest dynamic shared memory a block may opt in to on the current device.
inline size_t max_smem_optin() {
  int dev = 0;
  C10_CUDA_CHECK(cudaGetDevice(&dev));
  int bytes = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  return static_cast<size_t>(bytes);
}

// Allow `kernel` `bytes` of dynamic shared memory, or fail with a message that says why and,
// in `hint`, what to do instead.
template <typename Kernel>
void reserve_smem(Kernel kernel, size_t bytes, const char* op,
                  const char* hint = "use a smaller hidden size, a 32-bit dtype, or the 'triton' "
                                     "backend") {
  const size_t limit = max_smem_optin();
  TORCH_CHECK(bytes <= limit, op, ": the CUDA kernel needs ", bytes,
              " bytes of shared memory per block at this size, the device allows ", limit,
              "; ", hint);
  if (bytes > kDefaultSmem) {
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

}  // namespace cuda
}  // namespace pixelar
