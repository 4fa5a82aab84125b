// Row LSTM scan, CUDA kernels (forward and backward) and their registration.
//
// Semantics: pixelar/ops/row_lstm_scan.py. x_gates: (B, 4H, R, W); w_ss: (4H, H, 3), taps
// over columns c - 1, c, c + 1 of the previous row.
//
// Design: one block per image loops over the R rows. The previous row's h (H x W, with a
// zero column on each side) is double-buffered in shared memory and c is in shared memory;
// the recurrent weights are copied to shared memory when they fit (small H) and otherwise
// read through L1/L2 (the paper's H = 128 is 768 KB in fp32). One thread per (hidden
// unit, column) item computes four gates x three taps x H products and the cell
// (lstm_math.h), then __syncthreads before the next row. A warp covers 32 columns of one
// hidden unit, so its weight loads are broadcasts and its h loads are contiguous.
// The backward runs the rows in reverse, recomputing the gates from the saved h (staged
// row by row in shared memory), and writes grad x_gates; the weight gradient is one
// contraction of grad x_gates with the shifted h (ATen, cuBLAS).
#include <torch/library.h>

#include "common.cuh"
#include "pixelar/lstm_math.h"

namespace pixelar {
namespace cuda {
namespace {

template <typename scalar_t, typename acc_t>
struct Weights {
  const acc_t* smem;  // nullptr when the weights stay in global memory
  const scalar_t* global;
  __device__ __forceinline__ acc_t operator[](int64_t i) const {
    return smem != nullptr ? smem[i] : static_cast<acc_t>(global[i]);
  }
};

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kMaxThreads)
row_fwd_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ w,
               scalar_t* __restrict__ h, scalar_t* __restrict__ c, int H, int R, int W,
               bool weights_in_smem) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const int WP = W + 2;
  acc_t* h_s = reinterpret_cast<acc_t*>(smem_raw);  // [2][H][W + 2], index col + 1
  acc_t* c_s = h_s + 2 * H * WP;                    // [H][W]
  acc_t* w_s = c_s + H * W;                         // [4H][H][3] when weights_in_smem
  const int n = H * W;
  const int64_t b = blockIdx.x;
  const int64_t RW = static_cast<int64_t>(R) * W;

  for (int i = threadIdx.x; i < 2 * H * WP; i += blockDim.x) h_s[i] = acc_t(0);
  for (int i = threadIdx.x; i < n; i += blockDim.x) c_s[i] = acc_t(0);
  if (weights_in_smem) {
    for (int i = threadIdx.x; i < 12 * H * H; i += blockDim.x) w_s[i] = static_cast<acc_t>(w[i]);
  }
  const Weights<scalar_t, acc_t> wt{weights_in_smem ? w_s : nullptr, w};
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
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        pre[q] = static_cast<acc_t>(xb[(static_cast<int64_t>(q) * H + k) * RW + r * W + col]);
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

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kMaxThreads)
row_bwd_kernel(const scalar_t* __restrict__ gh, const scalar_t* __restrict__ gc,
               const scalar_t* __restrict__ x, const scalar_t* __restrict__ w,
               const scalar_t* __restrict__ h, const scalar_t* __restrict__ c,
               scalar_t* __restrict__ gx, int H, int R, int W, bool weights_in_smem) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const int WP = W + 2;
  acc_t* hs_s = reinterpret_cast<acc_t*>(smem_raw);  // [H][W + 2]: saved h of row r - 1
  acc_t* dp_s = hs_s + H * WP;                         // [4H][W + 2]: gate grads, zero ends
  acc_t* dh_s = dp_s + 4 * H * WP;                     // [H][W]: dL/dh from row r + 1
  acc_t* dc_s = dh_s + H * W;                          // [H][W]: dL/dc from row r + 1
  acc_t* w_s = dc_s + H * W;                           // [4H][H][3] when weights_in_smem
  const int n = H * W;
  const int64_t b = blockIdx.x;
  const int64_t RW = static_cast<int64_t>(R) * W;

  for (int i = threadIdx.x; i < 4 * H * WP; i += blockDim.x) dp_s[i] = acc_t(0);
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    dh_s[i] = acc_t(0);
    dc_s[i] = acc_t(0);
  }
  if (weights_in_smem) {
    for (int i = threadIdx.x; i < 12 * H * H; i += blockDim.x) w_s[i] = static_cast<acc_t>(w[i]);
  }
  const Weights<scalar_t, acc_t> wt{weights_in_smem ? w_s : nullptr, w};
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
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        pre[q] = static_cast<acc_t>(xb[(static_cast<int64_t>(q) * H + k) * RW + r * W + col]);
      }
      for (int kk = 0; kk < H; ++kk) {
        const acc_t left = hs_s[kk * WP + col];
        const acc_t mid = hs_s[kk * WP + col + 1];
        const acc_t right = hs_s[kk * WP + col + 2];
#pragma unroll
        for (int q = 0; q < 4; ++q) {
          const int64_t wi = ((static_cast<int64_t>(q) * H + k) * H + kk) * 3;
          pre[q] += wt[wi] * left + wt[wi + 1] * mid + wt[wi + 2] * right;
        }
      }
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
        gxb[(static_cast<int64_t>(q) * H + k) * RW + r * W + col] = static_cast<scalar_t>(d[q]);
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

std::tuple<at::Tensor, at::Tensor> row_lstm_scan_cuda(const at::Tensor& x_gates_in,
                                                      const at::Tensor& w_ss_in) {
  const char* op = "pixelar::row_lstm_scan (CUDA)";
  check_cuda_inputs(op, {&x_gates_in, &w_ss_in}, {"x_gates", "w_ss"});
  TORCH_CHECK(x_gates_in.dim() == 4 && w_ss_in.dim() == 3, op,
              ": expected x_gates (B, 4H, R, W) and w_ss (4H, H, 3)");
  const at::cuda::CUDAGuard guard(x_gates_in.device());
  const at::Tensor x_gates = x_gates_in.contiguous();
  const at::Tensor w_ss = w_ss_in.contiguous();
  const int64_t B = x_gates.size(0), G = x_gates.size(1), R = x_gates.size(2),
                W = x_gates.size(3);
  const int64_t H = G / 4;
  TORCH_CHECK(G == 4 * H && H > 0 && w_ss.size(0) == G && w_ss.size(1) == H &&
                  w_ss.size(2) == 3,
              op, ": expected w_ss of shape (", G, ", ", H, ", 3), got ", w_ss.sizes());
  at::Tensor h = at::empty({B, H, R, W}, x_gates.options());
  at::Tensor c = at::empty({B, H, R, W}, x_gates.options());
  if (h.numel() == 0) return {h, c};
  const int threads = block_threads(H * W);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x_gates.scalar_type(), "row_lstm_scan_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const size_t state = sizeof(acc_t) * (2 * H * (W + 2) + H * W);
    const size_t weights = sizeof(acc_t) * 12 * H * H;
    const bool in_smem = state + weights <= std::min<size_t>(max_smem_optin(), 96 * 1024);
    const size_t bytes = state + (in_smem ? weights : 0);
    auto kernel = row_fwd_kernel<scalar_t, acc_t>;
    reserve_smem(kernel, bytes, op);
    kernel<<<B, threads, bytes, at::cuda::getCurrentCUDAStream()>>>(
        x_gates.data_ptr<scalar_t>(), w_ss.data_ptr<scalar_t>(), h.data_ptr<scalar_t>(),
        c.data_ptr<scalar_t>(), H, R, W, in_smem);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {h, c};
}

std::tuple<at::Tensor, at::Tensor> row_lstm_scan_backward_cuda(
    const at::Tensor& grad_h_in, const at::Tensor& grad_c_in, const at::Tensor& x_gates_in,
    const at::Tensor& w_ss_in, const at::Tensor& h_in, const at::Tensor& c_in) {
  const char* op = "pixelar::row_lstm_scan_backward (CUDA)";
  check_cuda_inputs(op, {&x_gates_in, &w_ss_in, &grad_h_in, &grad_c_in, &h_in, &c_in},
                    {"x_gates", "w_ss", "grad_h", "grad_c", "h", "c"});
  const at::cuda::CUDAGuard guard(x_gates_in.device());
  const at::Tensor x_gates = x_gates_in.contiguous(), w_ss = w_ss_in.contiguous();
  const at::Tensor grad_h = grad_h_in.contiguous(), grad_c = grad_c_in.contiguous();
  const at::Tensor h = h_in.contiguous(), c = c_in.contiguous();
  const int64_t B = x_gates.size(0), G = x_gates.size(1), R = x_gates.size(2),
                W = x_gates.size(3);
  const int64_t H = G / 4;
  TORCH_CHECK(h.sizes() == at::IntArrayRef({B, H, R, W}) && grad_h.sizes() == h.sizes() &&
                  grad_c.sizes() == h.sizes() && c.sizes() == h.sizes(),
              op, ": h, c, grad_h, grad_c must be (", B, ", ", H, ", ", R, ", ", W, ")");
  at::Tensor grad_x = at::empty_like(x_gates);
  if (grad_x.numel() == 0) return {grad_x, at::zeros_like(w_ss)};
  const int threads = block_threads(H * W);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x_gates.scalar_type(), "row_lstm_scan_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const size_t state = sizeof(acc_t) * (5 * H * (W + 2) + 2 * H * W);
    const size_t weights = sizeof(acc_t) * 12 * H * H;
    const bool in_smem = state + weights <= std::min<size_t>(max_smem_optin(), 96 * 1024);
    const size_t bytes = state + (in_smem ? weights : 0);
    auto kernel = row_bwd_kernel<scalar_t, acc_t>;
    reserve_smem(kernel, bytes, op);
    kernel<<<B, threads, bytes, at::cuda::getCurrentCUDAStream()>>>(
        grad_h.data_ptr<scalar_t>(), grad_c.data_ptr<scalar_t>(), x_gates.data_ptr<scalar_t>(),
        w_ss.data_ptr<scalar_t>(), h.data_ptr<scalar_t>(), c.data_ptr<scalar_t>(),
        grad_x.data_ptr<scalar_t>(), H, R, W, in_smem);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  // Tap t at (r, col) saw h[r - 1, col + t - 1] (zero-padded).
  const at::Tensor h_prev = at::constant_pad_nd(h, {1, 1, 1, 0}).narrow(2, 0, R);
  std::vector<at::Tensor> taps;
  for (int64_t t = 0; t < 3; ++t) {
    taps.push_back(at::einsum("bgrc,bkrc->gk", {grad_x, h_prev.narrow(3, t, W)}));
  }
  return {grad_x, at::stack(taps, -1)};
}

}  // namespace
}  // namespace cuda
}  // namespace pixelar

TORCH_LIBRARY_IMPL(pixelar, CUDA, m) {
  m.impl("row_lstm_scan", &pixelar::cuda::row_lstm_scan_cuda);
  m.impl("row_lstm_scan_backward", &pixelar::cuda::row_lstm_scan_backward_cuda);
}
