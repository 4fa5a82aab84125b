// Diagonal LSTM scan, CUDA kernels (forward and backward) and their registration; the
// launchers they plug into are in lstm_scan.cuh.
//
// Semantics: pixelar/ops/diagonal_lstm_scan.py. x_gates: (B, 4H, R, S), S = R + W - 1;
// w_ss: (4H, H, 2), tap 0 = row above, tap 1 = same row, both in the previous column.
//
// Design: one block per image loops over the S columns. The previous column's h (H x R) and
// c live in shared memory (h double-buffered, with a zero row -1 in front of row 0), and so
// do the recurrent weights when they fit; one thread per (hidden unit, row) item computes
// its four gate pre-activations and the cell (lstm_math.h), then __syncthreads before the
// next column. The backward runs the columns in reverse, recomputing the gates from the
// saved h (staged column by column in shared memory), and writes grad x_gates; the
// weight gradient is one contraction of grad x_gates with the shifted h (ATen, cuBLAS).
#include <torch/library.h>

#include "lstm_scan.cuh"
#include "pixelar/lstm_math.h"

namespace pixelar {
namespace cuda {
namespace {

// Item idx of a block's H x R (hidden unit k, row r) items at skewed column j: k, r, the
// offset o of (b, k, r, j) in the (B, H, R, S) maps h, c, and whether (r, j) lies in the
// image (image column j - r in [0, W)).
struct Item {
  int k, r;
  int64_t o;
  bool inside;
};

__device__ __forceinline__ Item item_at(int idx, int64_t b, int j, int H, int R, int S, int W,
                                        int64_t RS) {
  const int k = idx / R;
  const int r = idx - k * R;
  const int col = j - r;
  return {k, r, (b * H + k) * RS + static_cast<int64_t>(r) * S + j, col >= 0 && col < W};
}

// pre[0..3]: gate pre-activations [i, f, o, g] of hidden unit k at row r of skewed column j,
// x_gates (xb: this image's (4H, R, S)) plus the 2 x 1 state-to-state convolution of column
// j - 1, whose h is hp: (H, R + 1), index kk * RP + r + 1, with a zero row -1 in front.
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ void gate_pre_activations(const scalar_t* __restrict__ xb,
                                                     const Weights<scalar_t, acc_t>& wt,
                                                     const acc_t* __restrict__ hp, int k, int r,
                                                     int j, int H, int RP, int S, int64_t RS,
                                                     acc_t (&pre)[4]) {
#pragma unroll
  for (int q = 0; q < 4; ++q) {
    pre[q] = static_cast<acc_t>(xb[(static_cast<int64_t>(q) * H + k) * RS + r * S + j]);
  }
  for (int kk = 0; kk < H; ++kk) {
    const acc_t above = hp[kk * RP + r];  // row r - 1 (zero for r = 0)
    const acc_t same = hp[kk * RP + r + 1];
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      const int64_t wi = ((static_cast<int64_t>(q) * H + k) * H + kk) * 2;
      pre[q] += wt[wi] * above + wt[wi + 1] * same;
    }
  }
}

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kMaxThreads)
diagonal_fwd_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ w,
                    scalar_t* __restrict__ h, scalar_t* __restrict__ c, int H, int R, int S,
                    bool weights_in_smem) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  acc_t* h_s = reinterpret_cast<acc_t*>(smem_raw);  // [2][H][R + 1], index r + 1
  acc_t* c_s = h_s + 2 * H * (R + 1);               // [H][R]
  acc_t* w_s = c_s + H * R;                         // [4H][H][2] when weights_in_smem
  const int RP = R + 1;
  const int W = S - R + 1;
  const int n = H * R;
  const int64_t b = blockIdx.x;
  const int64_t RS = static_cast<int64_t>(R) * S;

  for (int i = threadIdx.x; i < 2 * H * RP; i += blockDim.x) h_s[i] = acc_t(0);
  for (int i = threadIdx.x; i < n; i += blockDim.x) c_s[i] = acc_t(0);
  const Weights<scalar_t, acc_t> wt = stage_weights(w, w_s, 8 * H * H, weights_in_smem);
  __syncthreads();

  const scalar_t* xb = x + b * 4 * H * RS;
  int cur = 0;
  for (int j = 0; j < S; ++j) {
    const acc_t* hp = h_s + cur * H * RP;
    acc_t* hn = h_s + (cur ^ 1) * H * RP;
    for (int idx = threadIdx.x; idx < n; idx += blockDim.x) {
      const auto [k, r, o, inside] = item_at(idx, b, j, H, R, S, W, RS);
      if (!inside) {  // the skew's padding: state zero, never read
        hn[k * RP + r + 1] = acc_t(0);
        c_s[idx] = acc_t(0);
        h[o] = scalar_t(0);
        c[o] = scalar_t(0);
        continue;
      }
      acc_t pre[4];
      gate_pre_activations(xb, wt, hp, k, r, j, H, RP, S, RS, pre);
      acc_t c_new, h_new;
      math::lstm_cell_forward(pre[0], pre[1], pre[2], pre[3], c_s[idx], &c_new, &h_new);
      hn[k * RP + r + 1] = h_new;
      c_s[idx] = c_new;
      h[o] = static_cast<scalar_t>(h_new);
      c[o] = static_cast<scalar_t>(c_new);
    }
    __syncthreads();
    cur ^= 1;
  }
}

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kMaxThreads)
diagonal_bwd_kernel(const scalar_t* __restrict__ gh, const scalar_t* __restrict__ gc,
                    const scalar_t* __restrict__ x, const scalar_t* __restrict__ w,
                    const scalar_t* __restrict__ h, const scalar_t* __restrict__ c,
                    scalar_t* __restrict__ gx, int H, int R, int S, bool weights_in_smem) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const int RP = R + 1;
  acc_t* hs_s = reinterpret_cast<acc_t*>(smem_raw);  // [H][R + 1]: saved h of column j - 1
  acc_t* dp_s = hs_s + H * RP;                         // [4H][R + 1]: gate grads, zero row R
  acc_t* dh_s = dp_s + 4 * H * RP;                     // [H][R]: dL/dh from column j + 1
  acc_t* dc_s = dh_s + H * R;                          // [H][R]: dL/dc from column j + 1
  acc_t* w_s = dc_s + H * R;                           // [4H][H][2] when weights_in_smem
  const int W = S - R + 1;
  const int n = H * R;
  const int64_t b = blockIdx.x;
  const int64_t RS = static_cast<int64_t>(R) * S;

  for (int i = threadIdx.x; i < 4 * H * RP; i += blockDim.x) dp_s[i] = acc_t(0);
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    dh_s[i] = acc_t(0);
    dc_s[i] = acc_t(0);
  }
  const Weights<scalar_t, acc_t> wt = stage_weights(w, w_s, 8 * H * H, weights_in_smem);
  // Stage h of column S - 2 (the state the last column saw).
  auto stage = [&](int jp) {
    for (int i = threadIdx.x; i < H * RP; i += blockDim.x) {
      const int k = i / RP;
      const int rr = i - k * RP;  // rr = r + 1
      hs_s[i] = (jp >= 0 && rr >= 1)
                    ? static_cast<acc_t>(h[(b * H + k) * RS + static_cast<int64_t>(rr - 1) * S + jp])
                    : acc_t(0);
    }
  };
  stage(S - 2);
  __syncthreads();

  const scalar_t* xb = x + b * 4 * H * RS;
  scalar_t* gxb = gx + b * 4 * H * RS;
  for (int j = S - 1; j >= 0; --j) {
    // Phase A: gate gradients of column j.
    for (int idx = threadIdx.x; idx < n; idx += blockDim.x) {
      const auto [k, r, o, inside] = item_at(idx, b, j, H, R, S, W, RS);
      if (!inside) {
#pragma unroll
        for (int q = 0; q < 4; ++q) {
          dp_s[(q * H + k) * RP + r] = acc_t(0);
          gxb[(static_cast<int64_t>(q) * H + k) * RS + r * S + j] = scalar_t(0);
        }
        dc_s[idx] = acc_t(0);
        continue;
      }
      acc_t pre[4];
      gate_pre_activations(xb, wt, hs_s, k, r, j, H, RP, S, RS, pre);
      const acc_t c_prev = j > 0 ? static_cast<acc_t>(c[o - 1]) : acc_t(0);
      const acc_t dh = static_cast<acc_t>(gh[o]) + dh_s[idx];
      const acc_t dc = static_cast<acc_t>(gc[o]) + dc_s[idx];
      acc_t d[4], dc_prev;
      math::lstm_cell_backward(pre[0], pre[1], pre[2], pre[3], c_prev,
                               static_cast<acc_t>(c[o]), dh, dc, &d[0], &d[1], &d[2], &d[3],
                               &dc_prev);
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        dp_s[(q * H + k) * RP + r] = d[q];
        gxb[(static_cast<int64_t>(q) * H + k) * RS + r * S + j] = static_cast<scalar_t>(d[q]);
      }
      dc_s[idx] = dc_prev;
    }
    __syncthreads();
    // Phase B: dL/dh of column j - 1 = W1^T dpre[r] + W0^T dpre[r + 1]; stage h of j - 2.
    for (int idx = threadIdx.x; idx < n; idx += blockDim.x) {
      const int k = idx / R;
      const int r = idx - k * R;
      acc_t acc = acc_t(0);
      for (int g = 0; g < 4 * H; ++g) {
        const int64_t wi = (static_cast<int64_t>(g) * H + k) * 2;
        acc += wt[wi + 1] * dp_s[g * RP + r] + wt[wi] * dp_s[g * RP + r + 1];
      }
      dh_s[idx] = acc;
    }
    stage(j - 2);
    __syncthreads();
  }
}

// The diagonal scan for the launchers of lstm_scan.cuh: N = S skewed columns; a step is a
// skewed column, its positions the R rows, staged with one zero row in front.
struct DiagonalScan {
  static constexpr ScanNames kNames{
      "pixelar::diagonal_lstm_scan (CUDA)", "pixelar::diagonal_lstm_scan_backward (CUDA)",
      "diagonal_lstm_scan_cuda", "diagonal_lstm_scan_backward_cuda",
      "x_gates (B, 4H, R, S) and w_ss (4H, H, 2)"};
  static constexpr int64_t kTaps = 2;

  static void check_sizes(const char* op, const ScanSizes& n) {
    TORCH_CHECK(n.N >= n.R, op, ": x_gates must have S = R + W - 1 >= R columns, got S=", n.N,
                ", R=", n.R);
  }
  static int64_t positions(const ScanSizes& n) { return n.R; }
  static constexpr int64_t kPad = 1;
  template <typename scalar_t, typename acc_t>
  static auto forward() { return diagonal_fwd_kernel<scalar_t, acc_t>; }
  template <typename scalar_t, typename acc_t>
  static auto backward() { return diagonal_bwd_kernel<scalar_t, acc_t>; }

  // grad_x: (B, 4H, R, S), h: (B, H, R, S) -> (4H, H, 2).
  static at::Tensor grad_w(const at::Tensor& grad_x, const at::Tensor& h) {
    const int64_t R = h.size(2), S = h.size(3);
    // Tap 1 saw h[r, j - 1], tap 0 saw h[r - 1, j - 1] (zero-padded).
    const at::Tensor h_same = at::constant_pad_nd(h, {1, 0}).narrow(3, 0, S);
    const at::Tensor h_above = at::constant_pad_nd(h_same, {0, 0, 1, 0}).narrow(2, 0, R);
    return at::stack({at::einsum("bgrs,bkrs->gk", {grad_x, h_above}),
                      at::einsum("bgrs,bkrs->gk", {grad_x, h_same})},
                     -1);
  }
};

}  // namespace
}  // namespace cuda
}  // namespace pixelar

TORCH_LIBRARY_IMPL(pixelar, CUDA, m) {
  using pixelar::cuda::DiagonalScan;
  m.impl("diagonal_lstm_scan", &pixelar::cuda::scan_forward_cuda<DiagonalScan>);
  m.impl("diagonal_lstm_scan_backward", &pixelar::cuda::scan_backward_cuda<DiagonalScan>);
}
