// What the two LSTM scans' CUDA files (diagonal_lstm_scan.cu, row_lstm_scan.cu) share. On
// the device: the accessor of the recurrent weights w_ss, copied to shared memory when they
// fit. On the host: the launchers (input checks, the shared-memory plan, the launch of a
// one-block-per-image kernel), which each scan instantiates with its kernels and sizes.
//
// Shapes: x_gates (B, 4H, R, N) and h, c (B, H, R, N), where N = S skewed columns (diagonal
// scan) or W columns (row scan); w_ss (4H, H, taps), taps = 2 (diagonal) or 3 (row).
#pragma once

#include "common.cuh"

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

// Sizes of a scan: x_gates (B, 4H, R, N).
struct ScanSizes {
  int64_t B, H, R, N;
};

inline ScanSizes scan_sizes(const at::Tensor& x_gates) {
  return {x_gates.size(0), x_gates.size(1) / 4, x_gates.size(2), x_gates.size(3)};
}

// Dynamic shared memory of a scan kernel: its `state` bytes, plus the recurrent weights
// (`weights` bytes) when both fit in 96 KB and in the device's opt-in limit.
struct SmemPlan {
  size_t bytes;
  bool weights_in_smem;
};

inline SmemPlan plan_scan_smem(size_t state, size_t weights) {
  const bool in_smem = state + weights <= std::min<size_t>(max_smem_optin(), 96 * 1024);
  return {state + (in_smem ? weights : 0), in_smem};
}

// Launch `kernel` on the current stream, one block of `threads` per image (`images` blocks)
// with `bytes` of dynamic shared memory (reserved first, reserve_smem), and check the launch.
template <typename Kernel, typename... Args>
void launch_per_image(Kernel kernel, const char* op, int64_t images, int threads, size_t bytes,
                      Args... args) {
  reserve_smem(kernel, bytes, op);
  kernel<<<images, threads, bytes, at::cuda::getCurrentCUDAStream()>>>(args...);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// Names of a scan for messages: its ops (e.g. "pixelar::row_lstm_scan (CUDA)"), its
// launchers for the dtype dispatch (e.g. "row_lstm_scan_cuda"), and the layout of x_gates and
// w_ss (e.g. "x_gates (B, 4H, R, W) and w_ss (4H, H, 3)").
struct ScanNames {
  const char* forward_op;
  const char* backward_op;
  const char* forward;
  const char* backward;
  const char* layout;
};

// Shared memory of the scan kernels besides the weights, in acc_t values. Both work on the
// L positions of one step (L = R rows of a skewed column, or W columns of a row) and stage
// the previous step's h with P zero entries of padding (one row in front, or a column at
// each end). Forward: h double-buffered [2][H][L + P], c [H][L]. Backward: the saved h
// [H][L + P], the gate gradients [4H][L + P], dL/dh and dL/dc [H][L] each.
inline int64_t forward_state(int64_t H, int64_t L, int64_t P) { return 2 * H * (L + P) + H * L; }
inline int64_t backward_state(int64_t H, int64_t L, int64_t P) {
  return 5 * H * (L + P) + 2 * H * L;
}

// The launchers of a scan's forward and backward, one block per image. `Scan` supplies
//   kNames                      ScanNames
//   kTaps                       taps of w_ss (4H, H, kTaps)
//   check_sizes(op, n)          the forward's checks beyond the shapes of x_gates and w_ss
//   positions(n), kPad          L and P of forward_state; a block has H * L work items
//   forward<scalar_t, acc_t>(), backward<scalar_t, acc_t>()   the kernels, taking
//       (x, w, h, c, H, R, N, weights_in_smem) and (gh, gc, x, w, h, c, gx, H, R, N,
//       weights_in_smem), all maps contiguous
//   grad_w(grad_x, h)           the weight gradient (4H, H, kTaps) from grad x_gates and h
template <typename Scan>
std::tuple<at::Tensor, at::Tensor> scan_forward_cuda(const at::Tensor& x_gates_in,
                                                     const at::Tensor& w_ss_in) {
  const char* op = Scan::kNames.forward_op;
  check_cuda_inputs(op, {&x_gates_in, &w_ss_in}, {"x_gates", "w_ss"});
  TORCH_CHECK(x_gates_in.dim() == 4 && w_ss_in.dim() == 3, op, ": expected ",
              Scan::kNames.layout);
  const at::cuda::CUDAGuard guard(x_gates_in.device());
  const at::Tensor x_gates = x_gates_in.contiguous();
  const at::Tensor w_ss = w_ss_in.contiguous();
  const ScanSizes n = scan_sizes(x_gates);
  const int64_t G = x_gates.size(1), H = n.H;
  TORCH_CHECK(G == 4 * H && H > 0 && w_ss.size(0) == G && w_ss.size(1) == H &&
                  w_ss.size(2) == Scan::kTaps,
              op, ": expected w_ss of shape (", G, ", ", H, ", ", Scan::kTaps, "), got ",
              w_ss.sizes());
  Scan::check_sizes(op, n);
  at::Tensor h = at::empty({n.B, H, n.R, n.N}, x_gates.options());
  at::Tensor c = at::empty({n.B, H, n.R, n.N}, x_gates.options());
  if (h.numel() == 0) return {h, c};
  const int64_t L = Scan::positions(n);
  const int threads = block_threads(H * L);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x_gates.scalar_type(), Scan::kNames.forward, [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const SmemPlan smem = plan_scan_smem(sizeof(acc_t) * forward_state(H, L, Scan::kPad),
                                         sizeof(acc_t) * 4 * Scan::kTaps * H * H);
    launch_per_image(Scan::template forward<scalar_t, acc_t>(), op, n.B, threads, smem.bytes,
                     x_gates.data_ptr<scalar_t>(), w_ss.data_ptr<scalar_t>(),
                     h.data_ptr<scalar_t>(), c.data_ptr<scalar_t>(), H, n.R, n.N,
                     smem.weights_in_smem);
  });
  return {h, c};
}

template <typename Scan>
std::tuple<at::Tensor, at::Tensor> scan_backward_cuda(
    const at::Tensor& grad_h_in, const at::Tensor& grad_c_in, const at::Tensor& x_gates_in,
    const at::Tensor& w_ss_in, const at::Tensor& h_in, const at::Tensor& c_in) {
  const char* op = Scan::kNames.backward_op;
  check_cuda_inputs(op, {&x_gates_in, &w_ss_in, &grad_h_in, &grad_c_in, &h_in, &c_in},
                    {"x_gates", "w_ss", "grad_h", "grad_c", "h", "c"});
  const at::cuda::CUDAGuard guard(x_gates_in.device());
  const at::Tensor x_gates = x_gates_in.contiguous(), w_ss = w_ss_in.contiguous();
  const at::Tensor grad_h = grad_h_in.contiguous(), grad_c = grad_c_in.contiguous();
  const at::Tensor h = h_in.contiguous(), c = c_in.contiguous();
  const ScanSizes n = scan_sizes(x_gates);
  TORCH_CHECK(h.sizes() == at::IntArrayRef({n.B, n.H, n.R, n.N}) &&
                  grad_h.sizes() == h.sizes() && grad_c.sizes() == h.sizes() &&
                  c.sizes() == h.sizes(),
              op, ": h, c, grad_h, grad_c must be (", n.B, ", ", n.H, ", ", n.R, ", ", n.N, ")");
  at::Tensor grad_x = at::empty_like(x_gates);
  if (grad_x.numel() == 0) return {grad_x, at::zeros_like(w_ss)};
  const int64_t L = Scan::positions(n);
  const int threads = block_threads(n.H * L);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x_gates.scalar_type(), Scan::kNames.backward, [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const SmemPlan smem = plan_scan_smem(sizeof(acc_t) * backward_state(n.H, L, Scan::kPad),
                                         sizeof(acc_t) * 4 * Scan::kTaps * n.H * n.H);
    launch_per_image(Scan::template backward<scalar_t, acc_t>(), op, n.B, threads, smem.bytes,
                     grad_h.data_ptr<scalar_t>(), grad_c.data_ptr<scalar_t>(),
                     x_gates.data_ptr<scalar_t>(), w_ss.data_ptr<scalar_t>(),
                     h.data_ptr<scalar_t>(), c.data_ptr<scalar_t>(),
                     grad_x.data_ptr<scalar_t>(), n.H, n.R, n.N, smem.weights_in_smem);
  });
  return {grad_x, Scan::grad_w(grad_x, h)};
}

}  // namespace cuda
}  // namespace pixelar
