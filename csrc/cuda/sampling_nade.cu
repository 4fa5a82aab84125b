// Registration of nade_sample's and rnade_sample's CUDA kernels (kernels and launchers:
// sampling_nade.cuh, shared with the CPU emulation tests).
#include <torch/library.h>

#include "cuda_device.cuh"
#include "sampling_nade.cuh"

TORCH_LIBRARY_IMPL(pixelar, CUDA, m) {
  using pixelar::cuda::CudaDevice;
  m.impl("nade_sample", &pixelar::cuda::nade_sample<CudaDevice>);
  m.impl("rnade_sample", &pixelar::cuda::rnade_sample<CudaDevice>);
}
