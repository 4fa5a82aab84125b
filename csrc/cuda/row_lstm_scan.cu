// Registration of the Row LSTM scan's CUDA kernels (kernels and launchers: row_lstm_scan.cuh,
// shared with the CPU emulation tests).
#include <torch/library.h>

#include "cuda_device.cuh"
#include "row_lstm_scan.cuh"

TORCH_LIBRARY_IMPL(pixelar, CUDA, m) {
  using pixelar::cuda::CudaDevice;
  using pixelar::cuda::RowScan;
  m.impl("row_lstm_scan", &pixelar::cuda::scan_forward<RowScan, CudaDevice>);
  m.impl("row_lstm_scan_backward", &pixelar::cuda::scan_backward<RowScan, CudaDevice>);
}
