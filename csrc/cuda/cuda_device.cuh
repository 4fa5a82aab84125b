// The device policy of the CUDA launchers for a real GPU: tensors on CUDA, the device's
// shared-memory limit, kernel<<<...>>> on the current stream. nvcc only; the tests' CPU
// emulation has its own policy (tests/cuda_emulation/emulated_kernels.cpp: EmuDevice).
// The launchers (csrc/cuda/<op>.cu) are templates over such a policy `Dev`:
//   Dev::kDeviceType            where the tensors must live (kCUDA; the emulation: kCPU)
//   Dev::max_threads()          threads per block the launchers may use (kMaxThreads)
//   Dev::max_smem_optin()       the device's opt-in dynamic shared memory per block
//   Dev::Guard(device)          the device guard
//   Dev::launch(kernel, gx, gy, threads, smem_bytes, args...)   launch and check
//   Dev::device_table(host)     an int64 CPU tensor copied to the device (pointer tables)
#pragma once

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_runtime.h>

#include "launch_plan.h"

namespace pixelar {
namespace cuda {

struct CudaDevice {
  static constexpr c10::DeviceType kDeviceType = c10::DeviceType::CUDA;
  using Guard = c10::cuda::CUDAGuard;

  static int max_threads() { return kMaxThreads; }

  // Largest dynamic shared memory a block may opt in to on the current device.
  static size_t max_smem_optin() {
    int dev = 0;
    C10_CUDA_CHECK(cudaGetDevice(&dev));
    int bytes = 0;
    C10_CUDA_CHECK(
        cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    return static_cast<size_t>(bytes);
  }

  // kernel<<<(gx, gy), threads, smem_bytes>>> on the current stream, after opting in to
  // more than 48 KB of shared memory where needed; grid sizes checked by the caller.
  template <typename Kernel, typename... Args>
  static void launch(Kernel kernel, int64_t gx, int64_t gy, int threads, size_t smem_bytes,
                     Args... args) {
    if (smem_bytes > kDefaultSmem) {
      C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          static_cast<int>(smem_bytes)));
    }
    const dim3 grid(static_cast<unsigned>(gx), static_cast<unsigned>(gy));
    kernel<<<grid, threads, smem_bytes, at::cuda::getCurrentCUDAStream()>>>(args...);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }

  // An int64 CPU tensor copied to `dev` on the current stream from pinned memory (the
  // caching host allocator keeps it until the copy has run).
  static at::Tensor device_table(const at::Tensor& host, const at::Device& dev) {
    return host.pin_memory().to(dev, /*non_blocking=*/true);
  }
};

}  // namespace cuda
}  // namespace pixelar
