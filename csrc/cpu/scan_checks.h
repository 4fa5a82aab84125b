// Input checks of the LSTM scans, shared by the CPU kernels (diagonal_lstm_scan.cpp,
// row_lstm_scan.cpp) and the CUDA launchers (csrc/cuda/lstm_scan.cuh): x_gates (B, 4H, R, N)
// and w_ss (4H, H, taps) of the forward and backward, and the state tensors grad_h,
// grad_c, h, c (B, H, R, N) of the backward, which runs the forward's checks first (a
// backward called directly with mismatched shapes must not read past a tensor). N = S
// skewed columns (diagonal scan) or W columns (row scan); taps = 2 (diagonal) or 3 (row).
// Needs only ATen (the CUDA launchers include it too).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

#include "pixelar/shape_str.h"

namespace pixelar {
namespace scan_checks {

// Where the kernel runs: the device type its tensors must have, and whether it takes
// float16 / bfloat16 besides float32 / float64.
struct Target {
  at::DeviceType device;
  bool reduced_floats;
};

// A floating tensor of rank `ndim` on the target's device. `layout` names the dimensions
// for the message, e.g. "(B, 4H, R, S)".
inline void check_input(const char* op, const char* name, const at::Tensor& t, int64_t ndim,
                        const char* layout, Target target) {
  TORCH_CHECK(t.defined(), op, ": ", name, " is an undefined tensor");
  TORCH_CHECK(t.dim() == ndim, op, ": ", name, " must be a ", ndim, "-D tensor ", layout,
              ", got shape ", shape_str(t));
  TORCH_CHECK(t.device().type() == target.device, op, ": ", name, " must be a ",
              c10::DeviceTypeName(target.device), " tensor for this kernel, got a tensor on ",
              t.device());
  const at::ScalarType s = t.scalar_type();
  if (target.reduced_floats) {
    TORCH_CHECK(s == at::kFloat || s == at::kDouble || s == at::kHalf || s == at::kBFloat16,
                op, ": ", name, " must be float16, bfloat16, float32 or float64, got ", s);
  } else {
    TORCH_CHECK(s == at::kFloat || s == at::kDouble, op, ": ", name,
                " must be float32 or float64, got ", s);
  }
}

// t has the dtype and device of ref.
inline void check_like(const char* op, const char* name, const at::Tensor& t,
                       const char* ref_name, const at::Tensor& ref) {
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), op, ": ", name, " must have the dtype of ",
              ref_name, " (", ref.scalar_type(), "), got ", t.scalar_type());
  TORCH_CHECK(t.device() == ref.device(), op, ": ", name, " must be on the device of ",
              ref_name, " (", ref.device(), "), got ", t.device());
}

inline void check_shape(const char* op, const char* name, const at::Tensor& t,
                        at::IntArrayRef expected, const char* layout) {
  TORCH_CHECK(t.sizes() == expected, op, ": ", name, " must have shape ", layout, " = ",
              expected, ", got ", shape_str(t));
}

// x_gates and w_ss of one dtype, x_gates with 4H channels and w_ss of shape (4H, H, taps).
// `x_layout` and `w_layout` name them for the messages, e.g. "(B, 4H, R, S)" and
// "(4H, H, 2)". Returns H.
inline int64_t check_scan_inputs(const char* op, const at::Tensor& x_gates,
                                 const at::Tensor& w_ss, int64_t taps, const char* x_layout,
                                 const char* w_layout, Target target) {
  check_input(op, "x_gates", x_gates, 4, x_layout, target);
  check_input(op, "w_ss", w_ss, 3, w_layout, target);
  check_like(op, "w_ss", w_ss, "x_gates", x_gates);
  const int64_t G = x_gates.size(1);
  TORCH_CHECK(G % 4 == 0, op, ": x_gates must have 4H channels (gates i, f, o, g), got ", G,
              " channels");
  check_shape(op, "w_ss", w_ss, {G, G / 4, taps}, w_layout);
  return G / 4;
}

// The backward's grad_h, grad_c, h, c: each of x_gates' dtype and device and of shape
// `shape` = (B, H, R, N), named `layout` in the messages, e.g. "(B, H, R, S)".
inline void check_scan_states(const char* op, const at::Tensor& x_gates,
                              at::IntArrayRef shape, const char* layout,
                              const at::Tensor& grad_h, const at::Tensor& grad_c,
                              const at::Tensor& h, const at::Tensor& c, Target target) {
  const char* names[] = {"grad_h", "grad_c", "h", "c"};
  const at::Tensor* states[] = {&grad_h, &grad_c, &h, &c};
  for (int i = 0; i < 4; ++i) {
    check_input(op, names[i], *states[i], 4, layout, target);
    check_like(op, names[i], *states[i], "x_gates", x_gates);
    check_shape(op, names[i], *states[i], shape, layout);
  }
}

}  // namespace scan_checks

namespace cpu {

constexpr scan_checks::Target kCpuScan{at::kCPU, false};

inline int64_t check_scan_inputs(const char* op, const at::Tensor& x_gates,
                                 const at::Tensor& w_ss, int64_t taps, const char* x_layout,
                                 const char* w_layout) {
  return scan_checks::check_scan_inputs(op, x_gates, w_ss, taps, x_layout, w_layout,
                                        kCpuScan);
}

inline void check_scan_states(const char* op, const at::Tensor& x_gates,
                              at::IntArrayRef shape, const char* layout,
                              const at::Tensor& grad_h, const at::Tensor& grad_c,
                              const at::Tensor& h, const at::Tensor& c) {
  scan_checks::check_scan_states(op, x_gates, shape, layout, grad_h, grad_c, h, c, kCpuScan);
}

}  // namespace cpu
}  // namespace pixelar
