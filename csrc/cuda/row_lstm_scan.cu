// Row LSTM scan: CUDA kernels (forward and backward), their launchers and their
// registration, compiled by nvcc and (all but the registration) by the CPU emulation tests.
//
// Semantics: pixelar/ops/row_lstm_scan.py. x_gates: (B, 4H, R, W); w_ss: (4H, H, 3), taps
// over columns c - 1, c, c + 1 of the previous row.
//
// Design: one block per image loops over the R rows. The previous row's h (H x W, with a
// zero column on each side) is double-buffered and c kept in the block's state, in shared
// memory or, when it does not fit (the backward at the paper's H = 128), in a global
// scratch buffer (launch_plan.h, plan_scan); the recurrent weights are copied to shared
// memory when they fit (small H) and otherwise read through L1/L2 (the paper's H = 128 is
// 768 KB in fp32). One thread per (hidden unit, column) item computes four gates x three
// taps x H products and the cell (lstm_math.h), then __syncthreads before the next row. A
// warp covers 32 columns of one hidden unit, so its weight loads are broadcasts and its h
// and x_gates loads are contiguous.
// The backward runs the rows in reverse, recomputing the gates from the saved h (staged
// row by row), and writes grad x_gates; the weight gradient is one contraction of grad
// x_gates with the shifted h (ATen, cuBLAS).
#if !defined(PIXELAR_CUDA_EMULATION)  // the CUDA build: the registration below
#include <torch/library.h>

#include "cuda_device.cuh"
#endif

#include "lstm_scan.cuh"
#include "pixelar/lstm_math.h"

namespace pixelar {
namespace cuda {
namespace row_scan {

// pre[0..3]: gate pre-activations [i, f, o, g] of hidden unit k at column col of row r,
// x_gates (xb: this image's (4H, R, W)) plus the 1 x 3 state-to-state convolution of row
// r - 1, whose h is hp: (H, W + 2), index kk * WP + col + 1, with a zero column at each end.
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ void gate_pre_activations(const scalar_t* __restrict__ xb,
                                                     const Weights<scalar_t, acc_t>& wt,
                                                     const acc_t* __restrict__ hp, int k,
                                                     int col, int r, int H, int WP, int W,
                                                     int64_t RW, acc_t (&pre)[4]) {
#pragma unroll
  for (int q = 0; q < 4; ++q) {
    pre[q] = static_cast<acc_t>(
        xb[(static_cast<int64_t>(q) * H + k) * RW + static_cast<int64_t>(r) * W + col]);
  }
  for (int kk = 0; kk < H; ++kk) {
    const acc_t left = hp[kk * WP + col];  // columns col - 1, col, col + 1
    const acc_t mid = hp[kk * WP + col + 1];
    const acc_t right = hp[kk * WP + col + 2];
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      const int64_t wi = ((static_cast<int64_t>(q) * H + k) * H + kk) * 3;
      pre[q] += wt[wi] * left + wt[wi + 1] * mid + wt[wi + 2] * right;
    }
  }
}

// Block state (acc_t): h [2][H][W + 2], c [H][W].
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kMaxThreads)
forward_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ w,
               scalar_t* __restrict__ h, scalar_t* __restrict__ c, acc_t* scratch, int H,
               int R, int W, bool state_in_smem, bool weights_in_smem) {
  PIXELAR_DYNAMIC_SMEM(smem_raw);
  const int WP = W + 2;
  const int n = H * W;
  const int64_t state_elems = 2 * static_cast<int64_t>(H) * WP + n;
  acc_t* h_s = scan_state(smem_raw, scratch, state_elems, state_in_smem);
  acc_t* c_s = h_s + 2 * H * WP;
  acc_t* w_s = scan_weights_smem<acc_t>(smem_raw, state_elems, state_in_smem);
  const int64_t b = blockIdx.x;
  const int64_t RW = static_cast<int64_t>(R) * W;

  for (int i = threadIdx.x; i < 2 * H * WP; i += blockDim.x) h_s[i] = acc_t(0);
  for (int i = threadIdx.x; i < n; i += blockDim.x) c_s[i] = acc_t(0);
  const Weights<scalar_t, acc_t> wt = stage_weights(w, w_s, 12 * H * H, weights_in_smem);
  __syncthreads();

  const scalar_t* xb = x + b * 4 * H * RW;
  int cur = 0;
  for (int r = 0; r < R; ++r) {
    const acc_t* hp = h_s + cur * H * WP;
    acc_t* hn = h_s + (cur ^ 1) * H * WP;
    for (int idx = threadIdx.x; idx < n; idx += blockDim.x) {
      const int k = idx / W;
      const int col = idx - k * W;
      acc_t pre[4];
      gate_pre_activations(xb, wt, hp, k, col, r, H, WP, W, RW, pre);
      acc_t c_new, h_new;
      math::lstm_cell_forward(pre[0], pre[1], pre[2], pre[3], c_s[idx], &c_new, &h_new);
      hn[k * WP + col + 1] = h_new;
      c_s[idx] = c_new;
      const int64_t o = (b * H + k) * RW + static_cast<int64_t>(r) * W + col;
      h[o] = static_cast<scalar_t>(h_new);
      c[o] = static_cast<scalar_t>(c_new);
    }
    __syncthreads();
    cur ^= 1;
  }
}

// Block state (acc_t): the saved h of row r - 1 [H][W + 2], the gate gradients
// [4H][W + 2] (zero ends), dL/dh and dL/dc from row r + 1 [H][W] each.
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kMaxThreads)
backward_kernel(const scalar_t* __restrict__ gh, const scalar_t* __restrict__ gc,
                const scalar_t* __restrict__ x, const scalar_t* __restrict__ w,
                const scalar_t* __restrict__ h, const scalar_t* __restrict__ c,
                scalar_t* __restrict__ gx, acc_t* scratch, int H, int R, int W,
                bool state_in_smem, bool weights_in_smem) {
  PIXELAR_DYNAMIC_SMEM(smem_raw);
  const int WP = W + 2;
  const int n = H * W;
  const int64_t state_elems = 5 * static_cast<int64_t>(H) * WP + 2 * n;
  acc_t* hs_s = scan_state(smem_raw, scratch, state_elems, state_in_smem);
  acc_t* dp_s = hs_s + H * WP;
  acc_t* dh_s = dp_s + 4 * H * WP;
  acc_t* dc_s = dh_s + n;
  acc_t* w_s = scan_weights_smem<acc_t>(smem_raw, state_elems, state_in_smem);
  const int64_t b = blockIdx.x;
  const int64_t RW = static_cast<int64_t>(R) * W;

  for (int i = threadIdx.x; i < 4 * H * WP; i += blockDim.x) dp_s[i] = acc_t(0);
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    dh_s[i] = acc_t(0);
    dc_s[i] = acc_t(0);
  }
  const Weights<scalar_t, acc_t> wt = stage_weights(w, w_s, 12 * H * H, weights_in_smem);
  auto stage = [&](int rp) {  // h of row rp into hs_s, zero when rp < 0 and at both ends
    for (int i = threadIdx.x; i < H * WP; i += blockDim.x) {
      const int k = i / WP;
      const int cc = i - k * WP;  // cc = col + 1
      hs_s[i] = (rp >= 0 && cc >= 1 && cc <= W)
                    ? static_cast<acc_t>(h[(b * H + k) * RW + static_cast<int64_t>(rp) * W + cc - 1])
                    : acc_t(0);
    }
  };
  stage(R - 2);
  __syncthreads();

  const scalar_t* xb = x + b * 4 * H * RW;
  scalar_t* gxb = gx + b * 4 * H * RW;
  for (int r = R - 1; r >= 0; --r) {
    // Phase A: gate gradients of row r.
    for (int idx = threadIdx.x; idx < n; idx += blockDim.x) {
      const int k = idx / W;
      const int col = idx - k * W;
      const int64_t o = (b * H + k) * RW + static_cast<int64_t>(r) * W + col;
      acc_t pre[4];
      gate_pre_activations(xb, wt, hs_s, k, col, r, H, WP, W, RW, pre);
      const acc_t c_prev = r > 0 ? static_cast<acc_t>(c[o - W]) : acc_t(0);
      const acc_t dh = static_cast<acc_t>(gh[o]) + dh_s[idx];
      const acc_t dc = static_cast<acc_t>(gc[o]) + dc_s[idx];
      acc_t d[4], dc_prev;
      math::lstm_cell_backward(pre[0], pre[1], pre[2], pre[3], c_prev,
                               static_cast<acc_t>(c[o]), dh, dc, &d[0], &d[1], &d[2], &d[3],
                               &dc_prev);
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        dp_s[(q * H + k) * WP + col + 1] = d[q];
        gxb[(static_cast<int64_t>(q) * H + k) * RW + static_cast<int64_t>(r) * W + col] =
            static_cast<scalar_t>(d[q]);
      }
      dc_s[idx] = dc_prev;
    }
    __syncthreads();
    // Phase B: h[r - 1, col] fed tap t at column col + 1 - t:
    //   dL/dh[r - 1, col] = sum_t W_t^T dpre[col + 1 - t]; stage h of row r - 2.
    for (int idx = threadIdx.x; idx < n; idx += blockDim.x) {
      const int k = idx / W;
      const int col = idx - k * W;
      acc_t acc = acc_t(0);
      for (int g = 0; g < 4 * H; ++g) {
        const int64_t wi = (static_cast<int64_t>(g) * H + k) * 3;
        const acc_t* dp = dp_s + g * WP + col;  // dp[1 + m] = dpre[col + m]
        acc += wt[wi] * dp[2] + wt[wi + 1] * dp[1] + wt[wi + 2] * dp[0];
      }
      dh_s[idx] = acc;
    }
    stage(r - 2);
    __syncthreads();
  }
}

}  // namespace row_scan

// The row scan for the launchers of lstm_scan.cuh: N = W columns; a step is a row, its
// positions the W columns, staged with a zero column at each end.
struct RowScan {
  static constexpr ScanNames kNames{
      "pixelar::row_lstm_scan (CUDA)", "pixelar::row_lstm_scan_backward (CUDA)",
      "row_lstm_scan_cuda", "row_lstm_scan_backward_cuda", "(B, 4H, R, W)", "(4H, H, 3)",
      "(B, H, R, W)"};
  static constexpr int64_t kTaps = 3;
  static constexpr int64_t kPad = 2;

  static void check_sizes(const char*, const ScanSizes&) {}  // any R, W
  static int64_t positions(const ScanSizes& n) { return n.N; }

  template <typename Dev, typename scalar_t, typename acc_t>
  static std::tuple<at::Tensor, at::Tensor> forward(const at::Tensor& x_gates,
                                                    const at::Tensor& w_ss, const ScanSizes& n,
                                                    const ScanPlan& plan, int threads) {
    TORCH_CHECK(grid_fits(n.B, 1), kNames.forward_op, ": batch ", n.B, " too large");
    at::Tensor h = at::empty({n.B, n.H, n.R, n.N}, x_gates.options());
    at::Tensor c = at::empty_like(h);
    at::Tensor scratch = scan_scratch<acc_t>(plan, n.B, x_gates.options());
    Dev::launch(row_scan::forward_kernel<scalar_t, acc_t>, n.B, 1, threads, plan.smem_bytes,
                x_gates.data_ptr<scalar_t>(), w_ss.data_ptr<scalar_t>(),
                h.data_ptr<scalar_t>(), c.data_ptr<scalar_t>(), scratch.data_ptr<acc_t>(),
                static_cast<int>(n.H), static_cast<int>(n.R), static_cast<int>(n.N),
                plan.state_in_smem, plan.weights_in_smem);
    return {h, c};
  }

  template <typename Dev, typename scalar_t, typename acc_t>
  static at::Tensor backward(const at::Tensor& grad_h, const at::Tensor& grad_c,
                             const at::Tensor& x_gates, const at::Tensor& w_ss,
                             const at::Tensor& h, const at::Tensor& c, const ScanSizes& n,
                             const ScanPlan& plan, int threads) {
    TORCH_CHECK(grid_fits(n.B, 1), kNames.backward_op, ": batch ", n.B, " too large");
    at::Tensor grad_x = at::empty_like(x_gates);
    at::Tensor scratch = scan_scratch<acc_t>(plan, n.B, x_gates.options());
    Dev::launch(row_scan::backward_kernel<scalar_t, acc_t>, n.B, 1, threads, plan.smem_bytes,
                grad_h.data_ptr<scalar_t>(), grad_c.data_ptr<scalar_t>(),
                x_gates.data_ptr<scalar_t>(), w_ss.data_ptr<scalar_t>(),
                h.data_ptr<scalar_t>(), c.data_ptr<scalar_t>(), grad_x.data_ptr<scalar_t>(),
                scratch.data_ptr<acc_t>(), static_cast<int>(n.H), static_cast<int>(n.R),
                static_cast<int>(n.N), plan.state_in_smem, plan.weights_in_smem);
    return grad_x;
  }

  // grad_x: (B, 4H, R, W), h: (B, H, R, W) -> (4H, H, 3).
  static at::Tensor grad_w(const at::Tensor& grad_x, const at::Tensor& h) {
    const int64_t R = h.size(2), W = h.size(3);
    // Tap t at (r, col) saw h[r - 1, col + t - 1] (zero-padded).
    const at::Tensor h_prev = at::constant_pad_nd(h, {1, 1, 1, 0}).narrow(2, 0, R);
    std::vector<at::Tensor> taps;
    for (int64_t t = 0; t < 3; ++t) {
      taps.push_back(at::einsum("bgrc,bkrc->gk", {grad_x, h_prev.narrow(3, t, W)}));
    }
    return at::stack(taps, -1);
  }
};

}  // namespace cuda
}  // namespace pixelar

// The CUDA build registers the launchers for CudaDevice; the emulation tests
// (tests/cuda_emulation/) include this file with PIXELAR_CUDA_EMULATION defined and
// instantiate them for their host device policy instead.
#if !defined(PIXELAR_CUDA_EMULATION)
TORCH_LIBRARY_IMPL(pixelar, CUDA, m) {
  using pixelar::cuda::CudaDevice;
  using pixelar::cuda::RowScan;
  m.impl("row_lstm_scan", &pixelar::cuda::scan_forward<RowScan, CudaDevice>);
  m.impl("row_lstm_scan_backward", &pixelar::cuda::scan_backward<RowScan, CudaDevice>);
}
#endif
