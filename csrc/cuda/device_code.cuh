// What every CUDA kernel body in csrc/cuda/<op>.cu needs, compiled either by nvcc or, for the
// tests, by the host compiler under the CUDA emulation (csrc/emulation/
// cuda_host_emulation.h, included first by tests/cuda_emulation/emulated_kernels.cpp).
#pragma once

#if defined(PIXELAR_CUDA_EMULATION)
// the emulation header is already included: it defines __global__, __syncthreads, ...
#else
#include <cuda_runtime.h>
#endif

// The block's dynamic shared memory as `unsigned char* name`.
#if defined(PIXELAR_CUDA_EMULATION)
#define PIXELAR_DYNAMIC_SMEM(name) unsigned char* name = ::pixelar::emu::dynamic_smem()
#else
#define PIXELAR_DYNAMIC_SMEM(name) extern __shared__ __align__(16) unsigned char name[]
#endif

namespace pixelar {
namespace cuda {

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

}  // namespace cuda
}  // namespace pixelar
