// Registration of the diagonal LSTM scan's CUDA kernels (kernels and launchers:
// diagonal_lstm_scan.cuh, shared with the CPU emulation tests).
#include <torch/library.h>

#include "cuda_device.cuh"
#include "diagonal_lstm_scan.cuh"

TORCH_LIBRARY_IMPL(pixelar, CUDA, m) {
  using pixelar::cuda::CudaDevice;
  using pixelar::cuda::DiagonalScan;
  m.impl("diagonal_lstm_scan", &pixelar::cuda::scan_forward<DiagonalScan, CudaDevice>);
  m.impl("diagonal_lstm_scan_backward",
         &pixelar::cuda::scan_backward<DiagonalScan, CudaDevice>);
}
