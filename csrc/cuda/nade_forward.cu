// Registration of nade_forward's CUDA kernels (kernels and launchers: nade_forward.cuh,
// shared with the CPU emulation tests).
#include <torch/library.h>

#include "cuda_device.cuh"
#include "nade_forward.cuh"

TORCH_LIBRARY_IMPL(pixelar, CUDA, m) {
  using pixelar::cuda::CudaDevice;
  m.impl("nade_forward", &pixelar::cuda::nade_forward<CudaDevice>);
  m.impl("nade_forward_backward", &pixelar::cuda::nade_forward_backward<CudaDevice>);
}
