// Diagonal LSTM scan, CUDA kernels (forward and backward) and their registration.
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

#include "common.cuh"
#include "pixelar/lstm_math.h"

namespace pixelar {
namespace cuda {
namespace {

// w: (4H, H, 2) as acc_t (shared memory) or scalar_t (global); index ((g * H + k) * 2 + t).
template <typename scalar_t, typename acc_t>
struct Weights {
  const acc_t* smem;        // nullptr when the weights stay in global memory
  const scalar_t* global;
  __device__ __forceinline__ acc_t operator[](int64_t i) const {
    return smem != nullptr ? smem[i] : static_cast<acc_t>(global[i]);
  }
};

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kMaxThreads)
diagonal_fwd_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ w,
                    scalar_t* __restrict__ h, scalar_t* __restrict__ c, int H, int R, int S,
                    int W, bool weights_in_smem) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  acc_t* h_s = reinterpret_cast<acc_t*>(smem_raw);  // [2][H][R + 1], index r + 1
  acc_t* c_s = h_s + 2 * H * (R + 1);               // [H][R]
  acc_t* w_s = c_s + H * R;                         // [4H][H][2] when weights_in_smem
  const int RP = R + 1;
  const int n = H * R;
  const int64_t b = blockIdx.x;
  const int64_t RS = static_cast<int64_t>(R) * S;

  for (int i = threadIdx.x; i < 2 * H * RP; i += blockDim.x) h_s[i] = acc_t(0);
  for (int i = threadIdx.x; i < n; i += blockDim.x) c_s[i] = acc_t(0);
  if (weights_in_smem) {
    for (int i = threadIdx.x; i < 8 * H * H; i += blockDim.x) w_s[i] = static_cast<acc_t>(w[i]);
  }
  const Weights<scalar_t, acc_t> wt{weights_in_smem ? w_s : nullptr, w};
  __syncthreads();

  const scalar_t* xb = x + b * 4 * H * RS;
  int cur = 0;
  for (int j = 0; j < S; ++j) {
    const acc_t* hp = h_s + cur * H * RP;
    acc_t* hn = h_s + (cur ^ 1) * H * RP;
    for (int idx = threadIdx.x; idx < n; idx += blockDim.x) {
      const int k = idx / R;
      const int r = idx - k * R;
      const int64_t o = (b * H + k) * RS + static_cast<int64_t>(r) * S + j;
      const int col = j - r;
      if (col < 0 || col >= W) {  // the skew's padding: state zero, never read
        hn[k * RP + r + 1] = acc_t(0);
        c_s[idx] = acc_t(0);
        h[o] = scalar_t(0);
        c[o] = scalar_t(0);
        continue;
      }
      acc_t pre[4];
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
                    scalar_t* __restrict__ gx, int H, int R, int S, int W,
                    bool weights_in_smem) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const int RP = R + 1;
  acc_t* hs_s = reinterpret_cast<acc_t*>(smem_raw);  // [H][R + 1]: saved h of column j - 1
  acc_t* dp_s = hs_s + H * RP;                         // [4H][R + 1]: gate grads, zero row R
  acc_t* dh_s = dp_s + 4 * H * RP;                     // [H][R]: dL/dh from column j + 1
  acc_t* dc_s = dh_s + H * R;                          // [H][R]: dL/dc from column j + 1
  acc_t* w_s = dc_s + H * R;                           // [4H][H][2] when weights_in_smem
  const int n = H * R;
  const int64_t b = blockIdx.x;
  const int64_t RS = static_cast<int64_t>(R) * S;

  for (int i = threadIdx.x; i < 4 * H * RP; i += blockDim.x) dp_s[i] = acc_t(0);
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    dh_s[i] = acc_t(0);
    dc_s[i] = acc_t(0);
  }
  if (weights_in_smem) {
    for (int i = threadIdx.x; i < 8 * H * H; i += blockDim.x) w_s[i] = static_cast<acc_t>(w[i]);
  }
  const Weights<scalar_t, acc_t> wt{weights_in_smem ? w_s : nullptr, w};
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
      const int k = idx / R;
      const int r = idx - k * R;
      const int64_t o = (b * H + k) * RS + static_cast<int64_t>(r) * S + j;
      const int col = j - r;
      if (col < 0 || col >= W) {
#pragma unroll
        for (int q = 0; q < 4; ++q) {
          dp_s[(q * H + k) * RP + r] = acc_t(0);
          gxb[(static_cast<int64_t>(q) * H + k) * RS + r * S + j] = scalar_t(0);
        }
        dc_s[idx] = acc_t(0);
        continue;
      }
      acc_t pre[4];
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        pre[q] = static_cast<acc_t>(xb[(static_cast<int64_t>(q) * H + k) * RS + r * S + j]);
      }
      for (int kk = 0; kk < H; ++kk) {
        const acc_t above = hs_s[kk * RP + r];
        const acc_t same = hs_s[kk * RP + r + 1];
#pragma unroll
        for (int q = 0; q < 4; ++q) {
          const int64_t wi = ((static_cast<int64_t>(q) * H + k) * H + kk) * 2;
          pre[q] += wt[wi] * above + wt[wi + 1] * same;
        }
      }
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

std::tuple<at::Tensor, at::Tensor> diagonal_lstm_scan_cuda(const at::Tensor& x_gates_in,
                                                           const at::Tensor& w_ss_in) {
  const char* op = "pixelar::diagonal_lstm_scan (CUDA)";
  check_cuda_inputs(op, {&x_gates_in, &w_ss_in}, {"x_gates", "w_ss"});
  TORCH_CHECK(x_gates_in.dim() == 4 && w_ss_in.dim() == 3, op,
              ": expected x_gates (B, 4H, R, S) and w_ss (4H, H, 2)");
  const at::cuda::CUDAGuard guard(x_gates_in.device());
  const at::Tensor x_gates = x_gates_in.contiguous();
  const at::Tensor w_ss = w_ss_in.contiguous();
  const int64_t B = x_gates.size(0), G = x_gates.size(1), R = x_gates.size(2),
                S = x_gates.size(3);
  const int64_t H = G / 4;
  TORCH_CHECK(G == 4 * H && H > 0 && w_ss.size(0) == G && w_ss.size(1) == H &&
                  w_ss.size(2) == 2,
              op, ": expected w_ss of shape (", G, ", ", H, ", 2), got ", w_ss.sizes());
  TORCH_CHECK(S >= R, op, ": x_gates must have S = R + W - 1 >= R columns, got S=", S, ", R=", R);
  const int64_t W = S - R + 1;
  at::Tensor h = at::empty({B, H, R, S}, x_gates.options());
  at::Tensor c = at::empty({B, H, R, S}, x_gates.options());
  if (h.numel() == 0) return {h, c};
  const int threads = block_threads(H * R);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x_gates.scalar_type(), "diagonal_lstm_scan_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const size_t state = sizeof(acc_t) * (2 * H * (R + 1) + H * R);
    const size_t weights = sizeof(acc_t) * 8 * H * H;
    const bool in_smem = state + weights <= std::min<size_t>(max_smem_optin(), 96 * 1024);
    const size_t bytes = state + (in_smem ? weights : 0);
    auto kernel = diagonal_fwd_kernel<scalar_t, acc_t>;
    reserve_smem(kernel, bytes, op);
    kernel<<<B, threads, bytes, at::cuda::getCurrentCUDAStream()>>>(
        x_gates.data_ptr<scalar_t>(), w_ss.data_ptr<scalar_t>(), h.data_ptr<scalar_t>(),
        c.data_ptr<scalar_t>(), H, R, S, W, in_smem);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {h, c};
}

std::tuple<at::Tensor, at::Tensor> diagonal_lstm_scan_backward_cuda(
    const at::Tensor& grad_h_in, const at::Tensor& grad_c_in, const at::Tensor& x_gates_in,
    const at::Tensor& w_ss_in, const at::Tensor& h_in, const at::Tensor& c_in) {
  const char* op = "pixelar::diagonal_lstm_scan_backward (CUDA)";
  check_cuda_inputs(op, {&x_gates_in, &w_ss_in, &grad_h_in, &grad_c_in, &h_in, &c_in},
                    {"x_gates", "w_ss", "grad_h", "grad_c", "h", "c"});
  const at::cuda::CUDAGuard guard(x_gates_in.device());
  const at::Tensor x_gates = x_gates_in.contiguous(), w_ss = w_ss_in.contiguous();
  const at::Tensor grad_h = grad_h_in.contiguous(), grad_c = grad_c_in.contiguous();
  const at::Tensor h = h_in.contiguous(), c = c_in.contiguous();
  const int64_t B = x_gates.size(0), G = x_gates.size(1), R = x_gates.size(2),
                S = x_gates.size(3);
  const int64_t H = G / 4;
  const int64_t W = S - R + 1;
  TORCH_CHECK(h.sizes() == at::IntArrayRef({B, H, R, S}) && grad_h.sizes() == h.sizes() &&
                  grad_c.sizes() == h.sizes() && c.sizes() == h.sizes(),
              op, ": h, c, grad_h, grad_c must be (", B, ", ", H, ", ", R, ", ", S, ")");
  at::Tensor grad_x = at::empty_like(x_gates);
  if (grad_x.numel() == 0) return {grad_x, at::zeros_like(w_ss)};
  const int threads = block_threads(H * R);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x_gates.scalar_type(), "diagonal_lstm_scan_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const size_t state = sizeof(acc_t) * (5 * H * (R + 1) + 2 * H * R);
    const size_t weights = sizeof(acc_t) * 8 * H * H;
    const bool in_smem = state + weights <= std::min<size_t>(max_smem_optin(), 96 * 1024);
    const size_t bytes = state + (in_smem ? weights : 0);
    auto kernel = diagonal_bwd_kernel<scalar_t, acc_t>;
    reserve_smem(kernel, bytes, op);
    kernel<<<B, threads, bytes, at::cuda::getCurrentCUDAStream()>>>(
        grad_h.data_ptr<scalar_t>(), grad_c.data_ptr<scalar_t>(), x_gates.data_ptr<scalar_t>(),
        w_ss.data_ptr<scalar_t>(), h.data_ptr<scalar_t>(), c.data_ptr<scalar_t>(),
        grad_x.data_ptr<scalar_t>(), H, R, S, W, in_smem);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  // Tap 1 saw h[r, j - 1], tap 0 saw h[r - 1, j - 1] (zero-padded).
  const at::Tensor h_same = at::constant_pad_nd(h, {1, 0}).narrow(3, 0, S);
  const at::Tensor h_above = at::constant_pad_nd(h_same, {0, 0, 1, 0}).narrow(2, 0, R);
  const at::Tensor grad_w = at::stack({at::einsum("bgrs,bkrs->gk", {grad_x, h_above}),
                                       at::einsum("bgrs,bkrs->gk", {grad_x, h_same})},
                                      -1);
  return {grad_x, grad_w};
}

}  // namespace
}  // namespace cuda
}  // namespace pixelar

TORCH_LIBRARY_IMPL(pixelar, CUDA, m) {
  m.impl("diagonal_lstm_scan", &pixelar::cuda::diagonal_lstm_scan_cuda);
  m.impl("diagonal_lstm_scan_backward", &pixelar::cuda::diagonal_lstm_scan_backward_cuda);
}
