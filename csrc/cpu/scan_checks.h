// Input checks shared by the CPU LSTM scans (diagonal_lstm_scan.cpp, row_lstm_scan.cpp):
// x_gates (B, 4H, R, N) and w_ss (4H, H, taps) of the forward and backward, and the state
// tensors grad_h, grad_c, h, c (B, H, R, N) of the backward. N = S skewed columns (diagonal
// scan) or W columns (row scan); taps = 2 (diagonal) or 3 (row). Include after
// kernel_common.h.
#pragma once

#include <cstdint>

#include "kernel_common.h"

namespace pixelar {
namespace cpu {

// x_gates and w_ss: float32 / float64 CPU tensors of one dtype, x_gates with 4H channels and
// w_ss of shape (4H, H, taps). `x_layout` and `w_layout` name them for the messages, e.g.
// "(B, 4H, R, S)" and "(4H, H, 2)". Returns H.
inline int64_t check_scan_inputs(const char* op, const at::Tensor& x_gates,
                                 const at::Tensor& w_ss, int64_t taps, const char* x_layout,
                                 const char* w_layout) {
  check_input(op, "x_gates", x_gates, 4, x_layout);
  check_input(op, "w_ss", w_ss, 3, w_layout);
  check_same_dtype(op, "w_ss", w_ss, "x_gates", x_gates);
  const int64_t G = x_gates.size(1);
  TORCH_CHECK(G % 4 == 0, op, ": x_gates must have 4H channels (gates i, f, o, g), got ", G,
              " channels");
  check_shape(op, "w_ss", w_ss, {G, G / 4, taps}, w_layout);
  return G / 4;
}

// The backward's grad_h, grad_c, h, c: each a CPU tensor of x_gates' dtype and of shape
// `shape` = (B, H, R, N), named `layout` in the messages, e.g. "(B, H, R, S)".
inline void check_scan_states(const char* op, const at::Tensor& x_gates,
                              at::IntArrayRef shape, const char* layout,
                              const at::Tensor& grad_h, const at::Tensor& grad_c,
                              const at::Tensor& h, const at::Tensor& c) {
  const char* names[] = {"grad_h", "grad_c", "h", "c"};
  const at::Tensor* states[] = {&grad_h, &grad_c, &h, &c};
  for (int i = 0; i < 4; ++i) {
    check_input(op, names[i], *states[i], 4, layout);
    check_same_dtype(op, names[i], *states[i], "x_gates", x_gates);
    check_shape(op, names[i], *states[i], shape, layout);
  }
}

}  // namespace cpu
}  // namespace pixelar
