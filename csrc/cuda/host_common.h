// Host-side helpers of the CUDA launchers (csrc/cuda/*.cuh), free of CUDA so that the CPU
// emulation tests compile them too: input checks, the shared-memory check, the 32-bit
// index checks. The launchers are templates over a device policy `Dev`:
//   Dev::kDeviceType            where the tensors must live (kCUDA; the emulation: kCPU)
//   Dev::max_threads()          threads per block the launchers may use (kMaxThreads)
//   Dev::max_smem_optin()       the device's opt-in dynamic shared memory per block
//   Dev::Guard(device)          the device guard
//   Dev::launch(kernel, gx, gy, threads, smem_bytes, args...)   launch and check
//   Dev::device_table(host)     an int64 CPU tensor copied to the device (pointer tables)
// CudaDevice is in cuda_device.cuh; the emulation's in tests/cuda_emulation/.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>

#include <cstdint>
#include <initializer_list>

#include "launch_plan.h"

namespace pixelar {
namespace cuda {

// TORCH_CHECK that every tensor is a floating tensor on the device of Dev and of the device
// and dtype of the first one.
template <typename Dev>
void check_device_inputs(const char* op, std::initializer_list<const at::Tensor*> ts,
                         std::initializer_list<const char*> names) {
  const at::Tensor& first = **ts.begin();
  auto name = names.begin();
  for (const at::Tensor* t : ts) {
    TORCH_CHECK(t->defined(), op, ": ", *name, " is an undefined tensor");
    TORCH_CHECK(t->device().type() == Dev::kDeviceType, op, ": ", *name, " must be a ",
                c10::DeviceTypeName(Dev::kDeviceType), " tensor, got ", t->device());
    TORCH_CHECK(t->scalar_type() == first.scalar_type(), op, ": ", *name,
                " must have dtype ", first.scalar_type(), ", got ", t->scalar_type());
    TORCH_CHECK(t->device() == first.device(), op, ": ", *name, " must be on ",
                first.device(), ", got ", t->device());
    TORCH_CHECK(at::isFloatingType(t->scalar_type()), op, ": ", *name,
                " must be floating point, got ", t->scalar_type());
    ++name;
  }
}

// `bytes` of dynamic shared memory within the device's `limit`, or an error saying why and,
// in `hint`, what to do instead.
inline void check_smem(size_t bytes, size_t limit, const char* op,
                       const char* hint = "use a smaller hidden size, a 32-bit dtype, or the "
                                          "'triton' backend") {
  TORCH_CHECK(bytes <= limit, op, ": the CUDA kernel needs ", bytes,
              " bytes of shared memory per block at this size, the device allows ", limit,
              "; ", hint);
}

// The kernels index within one image (or one weight) with 32-bit ints: each such extent
// must fit.
inline void check_index32(const char* op, std::initializer_list<int64_t> extents,
                          const char* what) {
  for (int64_t e : extents) {
    TORCH_CHECK(fits_int32(e), op, ": ", what, " has ", e, " elements, more than this "
                "kernel's 32-bit indexing allows (2^31 - 1)");
  }
}

}  // namespace cuda
}  // namespace pixelar
