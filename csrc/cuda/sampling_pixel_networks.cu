// Registration of pixel_network_sample_step's CUDA kernel (kernel and launcher:
// sampling_pixel_networks.cuh, shared with the CPU emulation tests).
#include <torch/library.h>

#include "cuda_device.cuh"
#include "sampling_pixel_networks.cuh"

TORCH_LIBRARY_IMPL(pixelar, CUDA, m) {
  m.impl("pixel_network_sample_step",
         &pixelar::cuda::pixel_network_sample_step<pixelar::cuda::CudaDevice>);
}
