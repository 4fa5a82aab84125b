// What the two LSTM scans (diagonal_lstm_scan.cu, row_lstm_scan.cu) share. On the device:
// the accessor of the recurrent weights w_ss, copied to shared memory when they fit, and
// the block's state, in shared memory or, when it does not fit, in a global scratch
// buffer. On the host: the launchers (input checks shared with the CPU kernels, the
// shared-memory plan of launch_plan.h, the launch of a one-block-per-image kernel), which
// each scan instantiates with its kernels and sizes, and which the CUDA build and the CPU
// emulation tests both compile (the device policy Dev: cuda_device.cuh).
//
// Shapes: x_gates (B, 4H, R, N) and h, c (B, H, R, N), where N = S skewed columns (diagonal
// scan) or W columns (row scan); w_ss (4H, H, taps), taps = 2 (diagonal) or 3 (row).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>

#include <tuple>

#include "device_code.cuh"
#include "launch_plan.h"
#include "pixelar/checks.h"

namespace pixelar {
namespace cuda {

// w_ss: (4H, H, taps) as acc_t (shared memory) or scalar_t (global), flat index
// ((g * H + k) * taps + t).
template <typename scalar_t, typename acc_t>
struct Weights {
  const acc_t* smem;        // nullptr when the weights stay in global memory
  const scalar_t* global;
  __device__ __forceinline__ acc_t operator[](int64_t i) const {
    return smem != nullptr ? smem[i] : static_cast<acc_t>(global[i]);
  }
};

// The accessor of the n weights w. With weights_in_smem, the block first copies them to w_s
// (n acc_t values); the caller synchronises the block before reading them.
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ Weights<scalar_t, acc_t> stage_weights(const scalar_t* w, acc_t* w_s,
                                                                  int n, bool weights_in_smem) {
  if (weights_in_smem) {
    for (int i = threadIdx.x; i < n; i += blockDim.x) w_s[i] = static_cast<acc_t>(w[i]);
  }
  return {weights_in_smem ? w_s : nullptr, w};
}

// Where a scan block keeps its state (`state_elems` acc_t values) and its copy of the
// weights: the state at the start of shared memory, or in this block's slice of the global
// scratch buffer; the weights in shared memory after the state (or at its start).
template <typename acc_t>
__device__ __forceinline__ acc_t* scan_state(unsigned char* smem, acc_t* scratch,
                                             int64_t state_elems, bool state_in_smem) {
  return state_in_smem ? reinterpret_cast<acc_t*>(smem)
                       : scratch + static_cast<int64_t>(blockIdx.x) * state_elems;
}

template <typename acc_t>
__device__ __forceinline__ acc_t* scan_weights_smem(unsigned char* smem, int64_t state_elems,
                                                    bool state_in_smem) {
  return reinterpret_cast<acc_t*>(smem) + (state_in_smem ? state_elems : 0);
}

// Sizes of a scan: x_gates (B, 4H, R, N).
struct ScanSizes {
  int64_t B, H, R, N;
};

inline ScanSizes scan_sizes(const at::Tensor& x_gates) {
  return {x_gates.size(0), x_gates.size(1) / 4, x_gates.size(2), x_gates.size(3)};
}

// Names of a scan for messages: its ops (e.g. "pixelar::row_lstm_scan (CUDA)"), its
// launchers for the dtype dispatch (e.g. "row_lstm_scan_cuda"), and the layouts of x_gates,
// w_ss and the states (e.g. "(B, 4H, R, W)", "(4H, H, 3)", "(B, H, R, W)").
struct ScanNames {
  const char* forward_op;
  const char* backward_op;
  const char* forward;
  const char* backward;
  const char* x_layout;
  const char* w_layout;
  const char* state_layout;
};

template <typename Dev>
constexpr checks::Target scan_target() {
  return {Dev::kDeviceType, true};
}

// The checks of the forward, which the backward runs too: x_gates and w_ss (shared with the
// CPU kernels), the scan's own (Scan::check_sizes), and the 32-bit index arithmetic.
template <typename Scan, typename Dev>
ScanSizes check_scan_forward_args(const char* op, const at::Tensor& x_gates,
                                  const at::Tensor& w_ss) {
  checks::check_scan_inputs(op, x_gates, w_ss, Scan::kTaps, Scan::kNames.x_layout,
                            Scan::kNames.w_layout, scan_target<Dev>());
  const ScanSizes n = scan_sizes(x_gates);
  Scan::check_sizes(op, n);
  // ints in the kernels: offsets in one image's maps (4H * R * N) and in w_ss
  checks::check_index32(op, {4 * n.H * n.R * n.N, w_ss.numel()}, "one image of x_gates, or w_ss,");
  checks::check_index32(op, {n.H, n.R, n.N}, "a dimension of x_gates");
  return n;
}

// The launchers of a scan's forward and backward, one block per image. `Scan` supplies
//   kNames                      ScanNames
//   kTaps                       taps of w_ss (4H, H, kTaps)
//   check_sizes(op, n)          the forward's checks beyond the shapes of x_gates and w_ss
//   positions(n), kPad          L and P of forward_state; a block has H * L work items
//   forward<Dev, scalar_t, acc_t>(x, w, n, plan, threads) -> {h, c}
//   backward<Dev, scalar_t, acc_t>(gh, gc, x, w, h, c, n, plan, threads) -> grad x_gates
//       (all maps contiguous; plan: launch_plan.h's ScanPlan; the scratch is theirs to
//       allocate, plan.scratch_bytes per image)
//   grad_w(grad_x, h)           the weight gradient (4H, H, kTaps) from grad x_gates and h
template <typename Scan, typename Dev>
std::tuple<at::Tensor, at::Tensor> scan_forward(const at::Tensor& x_gates_in,
                                                const at::Tensor& w_ss_in) {
  const char* op = Scan::kNames.forward_op;
  const ScanSizes n = check_scan_forward_args<Scan, Dev>(op, x_gates_in, w_ss_in);
  const typename Dev::Guard guard(x_gates_in.device());
  const at::Tensor x_gates = x_gates_in.contiguous();
  const at::Tensor w_ss = w_ss_in.contiguous();
  const int64_t H = n.H;
  if (n.B * H * n.R * n.N == 0) {
    at::Tensor h = at::zeros({n.B, H, n.R, n.N}, x_gates.options());
    return {h, at::zeros_like(h)};
  }
  const int64_t L = Scan::positions(n);
  const int threads = block_threads(H * L, Dev::max_threads());
  at::Tensor h, c;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x_gates.scalar_type(),
                                  Scan::kNames.forward, [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const ScanPlan plan = plan_scan(sizeof(acc_t) * forward_state(H, L, Scan::kPad),
                                    sizeof(acc_t) * 4 * Scan::kTaps * H * H,
                                    Dev::max_smem_optin());
    std::tie(h, c) = Scan::template forward<Dev, scalar_t, acc_t>(x_gates, w_ss, n, plan,
                                                                  threads);
  });
  return {h, c};
}

template <typename Scan, typename Dev>
std::tuple<at::Tensor, at::Tensor> scan_backward(
    const at::Tensor& grad_h_in, const at::Tensor& grad_c_in, const at::Tensor& x_gates_in,
    const at::Tensor& w_ss_in, const at::Tensor& h_in, const at::Tensor& c_in) {
  const char* op = Scan::kNames.backward_op;
  const ScanSizes n = check_scan_forward_args<Scan, Dev>(op, x_gates_in, w_ss_in);
  checks::check_scan_states(op, x_gates_in, {n.B, n.H, n.R, n.N}, Scan::kNames.state_layout,
                            grad_h_in, grad_c_in, h_in, c_in, scan_target<Dev>());
  const typename Dev::Guard guard(x_gates_in.device());
  const at::Tensor x_gates = x_gates_in.contiguous(), w_ss = w_ss_in.contiguous();
  const at::Tensor grad_h = grad_h_in.contiguous(), grad_c = grad_c_in.contiguous();
  const at::Tensor h = h_in.contiguous(), c = c_in.contiguous();
  if (x_gates.numel() == 0 || n.H == 0) {
    return {at::zeros_like(x_gates), at::zeros_like(w_ss)};
  }
  const int64_t L = Scan::positions(n);
  const int threads = block_threads(n.H * L, Dev::max_threads());
  at::Tensor grad_x;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x_gates.scalar_type(),
                                  Scan::kNames.backward, [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const ScanPlan plan = plan_scan(sizeof(acc_t) * backward_state(n.H, L, Scan::kPad),
                                    sizeof(acc_t) * 4 * Scan::kTaps * n.H * n.H,
                                    Dev::max_smem_optin());
    grad_x = Scan::template backward<Dev, scalar_t, acc_t>(grad_h, grad_c, x_gates, w_ss, h,
                                                           c, n, plan, threads);
  });
  return {grad_x, Scan::grad_w(grad_x, h)};
}

// The global scratch of a scan launch: plan.scratch_bytes per image (acc_t), or an empty
// tensor when the state is in shared memory.
template <typename acc_t>
at::Tensor scan_scratch(const ScanPlan& plan, int64_t B, const at::TensorOptions& like) {
  const int64_t elems = static_cast<int64_t>(plan.scratch_bytes / sizeof(acc_t));
  return at::empty({plan.state_in_smem ? 0 : B * elems},
                   like.dtype(c10::CppTypeToScalarType<acc_t>::value));
}

}  // namespace cuda
}  // namespace pixelar
