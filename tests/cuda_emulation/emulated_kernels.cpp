// The test extension of tests/test_cuda_emulation.py: pixelar's CUDA kernels and their
// launchers (csrc/cuda/<op>.cu, the code the CUDA build compiles, but for the registration,
// which PIXELAR_CUDA_EMULATION leaves out) instantiated for the host
// emulation of csrc/emulation/cuda_host_emulation.h, on CPU tensors; and the launch
// arithmetic of csrc/cuda/launch_plan.h, for sizes no emulation could run.
#include <torch/extension.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>

#include <climits>
#include <optional>
#include <string>
#include <vector>

#include "cuda_host_emulation.h"  // before the kernels: __global__, __syncthreads, ...

#include "conv_residual_block.cu"
#include "diagonal_lstm_scan.cu"
#include "nade_forward.cu"
#include "nade_sample.cu"
#include "pixel_network_sample.cu"
#include "row_lstm_scan.cu"

namespace {

using namespace pixelar::cuda;

// Limits the launchers see: threads per block (less than 1024 makes every loop stride) and
// the opt-in shared memory (small values move weights and state to global memory).
int g_max_threads = kMaxThreads;
size_t g_smem_limit = 227 * 1024;

struct EmuDevice {
  static constexpr c10::DeviceType kDeviceType = c10::DeviceType::CPU;
  struct Guard {
    explicit Guard(const at::Device&) {}
  };
  static int max_threads() { return g_max_threads; }
  static size_t max_smem_optin() { return g_smem_limit; }
  template <typename Kernel, typename... Args>
  static void launch(Kernel kernel, int64_t gx, int64_t gy, int threads, size_t smem_bytes,
                     Args... args) {
    TORCH_CHECK(gx >= 1 && gx <= INT_MAX && gy >= 1 && gy <= INT_MAX, "grid ", gx, " x ", gy);
    pixelar::emu::launch(kernel, dim3(static_cast<unsigned>(gx), static_cast<unsigned>(gy)),
                         dim3(static_cast<unsigned>(threads)), smem_bytes, g_smem_limit,
                         args...);
  }
  static at::Tensor device_table(const at::Tensor& host, const at::Device&) { return host; }
};

void set_limits(int64_t max_threads, int64_t smem_limit) {
  TORCH_CHECK(max_threads >= 32 && max_threads <= kMaxThreads && max_threads % 32 == 0,
              "max_threads must be a multiple of 32 in [32, 1024]");
  g_max_threads = static_cast<int>(max_threads);
  g_smem_limit = static_cast<size_t>(smem_limit);
}

int64_t launches() { return pixelar::emu::launches().load(); }

// The scan's state bytes per block at (H, L) for an element size: forward or backward.
template <typename Scan>
std::tuple<int64_t, int64_t> scan_bytes(bool backward, int64_t H, int64_t L, int64_t elem) {
  const int64_t state =
      backward ? backward_state(H, L, Scan::kPad) : forward_state(H, L, Scan::kPad);
  return {state * elem, 4 * Scan::kTaps * H * H * elem};
}

// launch_plan.h's plan of a scan launch: (smem bytes, state in smem, weights in smem,
// scratch bytes per image).
std::tuple<int64_t, bool, bool, int64_t> plan_scan_launch(const std::string& scan,
                                                          bool backward, int64_t H, int64_t L,
                                                          int64_t elem, int64_t smem_limit) {
  TORCH_CHECK(scan == "diagonal" || scan == "row", "scan must be 'diagonal' or 'row'");
  const auto [state, weights] = scan == "row" ? scan_bytes<RowScan>(backward, H, L, elem)
                                              : scan_bytes<DiagonalScan>(backward, H, L, elem);
  const ScanPlan p = plan_scan(state, weights, static_cast<size_t>(smem_limit));
  return {static_cast<int64_t>(p.smem_bytes), p.state_in_smem, p.weights_in_smem,
          static_cast<int64_t>(p.scratch_bytes)};
}

// launch_plan.h's NADE grid: (gridDim.x, gridDim.y, threads, within the CUDA limits).
std::tuple<int64_t, int64_t, int64_t, bool> nade_grid_of(int64_t B, int64_t Hd) {
  const NadeGrid g = nade_grid(B, Hd);
  return {g.x, g.y, g.threads, grid_fits(g.x, g.y)};
}

int64_t nade_partials(int64_t B, int64_t D, int64_t O, int64_t Hd) {
  return nade_forward_partials(B, D, O, Hd);
}

// The diagonal kernels' offsets of item idx of column j, image b: (x_gates gate q, h / c).
std::tuple<int64_t, int64_t> diagonal_offsets(int64_t b, int64_t j, int64_t q, int64_t idx,
                                              int64_t S, int64_t n) {
  return {diagonal_scan::x_offset(b, static_cast<int>(j), static_cast<int>(q),
                                  static_cast<int>(idx), static_cast<int>(S),
                                  static_cast<int>(n)),
          diagonal_scan::state_offset(b, static_cast<int>(j), static_cast<int>(idx),
                                      static_cast<int>(S), static_cast<int>(n))};
}

void pixel_step(const at::Tensor& x, std::vector<at::Tensor> state, const at::Tensor& u,
                const std::optional<at::Tensor>& cond, std::vector<at::Tensor> weights,
                const std::string& layer, int64_t levels, int64_t start, int64_t stop) {
  pixel_network_sample_step<EmuDevice>(x, state, u, cond, weights, layer, levels, start, stop);
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("set_limits", &set_limits);
  m.def("launches", &launches);
  m.def("plan_scan", &plan_scan_launch);
  m.def("nade_grid", &nade_grid_of);
  m.def("nade_partials", &nade_partials);
  m.def("diagonal_offsets", &diagonal_offsets);
  m.def("conv_residual_block", &conv_residual_block<EmuDevice>);
  m.def("conv_residual_block_backward", &conv_residual_block_backward<EmuDevice>);
  m.def("diagonal_lstm_scan", &scan_forward<DiagonalScan, EmuDevice>);
  m.def("diagonal_lstm_scan_backward", &scan_backward<DiagonalScan, EmuDevice>);
  m.def("diagonal_lstm_scan_image", &scan_image_forward<EmuDevice>);
  m.def("diagonal_lstm_scan_image_backward", &scan_image_backward<EmuDevice>);
  m.def("row_lstm_scan", &scan_forward<RowScan, EmuDevice>);
  m.def("row_lstm_scan_backward", &scan_backward<RowScan, EmuDevice>);
  m.def("nade_forward", &nade_forward<EmuDevice>);
  m.def("nade_forward_checkpointed", &nade_forward_checkpointed<EmuDevice>);
  m.def("nade_forward_backward", &nade_forward_backward<EmuDevice>, py::arg("grad_out"),
        py::arg("x"), py::arg("W"), py::arg("c"), py::arg("V"), py::arg("b"),
        py::arg("checkpoints") = py::none(), py::arg("grad_x") = true);
  m.def("nade_sample", &nade_sample<EmuDevice>);
  m.def("rnade_sample", &rnade_sample<EmuDevice>);
  m.def("pixel_network_sample_step", &pixel_step);
}
