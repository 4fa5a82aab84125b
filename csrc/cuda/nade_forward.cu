// NADE outputs by the incremental hidden update, CUDA kernels (forward and backward) and
// their registration.
//
// Semantics: pixelar/ops/nade_forward.py. x: (B, D); W: (Hd, D); c: (Hd,); V: (D, O, Hd);
// b: (D, O); out: (B, D, O).
//
// Design: hidden units never interact in the recurrence a_{d+1} = a_d + W[:, d] x_d, so a
// warp owns 32 hidden units for kRows batch rows: each lane keeps a[kRows] in registers for
// all D steps and the warps never synchronise. Per step a lane reads V[d, :, k] and
// W[k, d] once (coalesced, as W^T) and reuses them for its kRows rows; the sums over the 32
// hidden units are warp shuffles, and the sums over the hidden-unit warps go through a
// small partial buffer (D * B * O values per warp column) added up by ATen.
// The backward runs the steps in reverse with G = dL/da in registers, recovering a_d from a_D
// by subtraction in double (no drift); sums over the batch (grad W, V, c) are atomicAdds,
// one per lane and step, so their last bits can vary between runs.
#include <torch/library.h>

#include "common.cuh"
#include "pixelar/lstm_math.h"

namespace pixelar {
namespace cuda {
namespace {

constexpr int kRows = 8;           // batch rows per lane
constexpr int kWarpsPerBlock = 4;  // 128 hidden units per block

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
nade_fwd_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ wt,
                const scalar_t* __restrict__ c, const scalar_t* __restrict__ V,
                acc_t* __restrict__ part, int B, int D, int Hd, int O) {
  const int warp = blockIdx.x * kWarpsPerBlock + threadIdx.x / 32;  // hidden-unit warp column
  if (warp * 32 >= Hd) return;  // whole warp past the last hidden unit
  const int k = warp * 32 + (threadIdx.x & 31);
  const bool k_ok = k < Hd;
  const int b0 = blockIdx.y * kRows;
  acc_t a[kRows];
  const acc_t ck = k_ok ? static_cast<acc_t>(c[k]) : acc_t(0);
#pragma unroll
  for (int i = 0; i < kRows; ++i) a[i] = ck;
  for (int d = 0; d < D; ++d) {
    acc_t hv[kRows];
#pragma unroll
    for (int i = 0; i < kRows; ++i) hv[i] = k_ok ? math::sigmoid(a[i]) : acc_t(0);
    for (int o = 0; o < O; ++o) {
      const acc_t v = k_ok ? static_cast<acc_t>(V[(static_cast<int64_t>(d) * O + o) * Hd + k]) : acc_t(0);
#pragma unroll
      for (int i = 0; i < kRows; ++i) {
        const acc_t s = warp_sum(v * hv[i]);
        if ((threadIdx.x & 31) == 0 && b0 + i < B) {
          part[((static_cast<int64_t>(warp) * B + b0 + i) * D + d) * O + o] = s;
        }
      }
    }
    const acc_t wd = k_ok ? static_cast<acc_t>(wt[static_cast<int64_t>(d) * Hd + k]) : acc_t(0);
#pragma unroll
    for (int i = 0; i < kRows; ++i) {
      if (b0 + i < B) a[i] += static_cast<acc_t>(x[static_cast<int64_t>(b0 + i) * D + d]) * wd;
    }
  }
}

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
nade_bwd_kernel(const scalar_t* __restrict__ go, const scalar_t* __restrict__ x,
                const scalar_t* __restrict__ wt, const scalar_t* __restrict__ c,
                const scalar_t* __restrict__ V, acc_t* __restrict__ gx_part,
                acc_t* __restrict__ gwt, acc_t* __restrict__ gc, acc_t* __restrict__ gv,
                int B, int D, int Hd, int O) {
  const int warp = blockIdx.x * kWarpsPerBlock + threadIdx.x / 32;
  if (warp * 32 >= Hd) return;  // whole warp past the last hidden unit
  const int lane = threadIdx.x & 31;
  const int k = warp * 32 + lane;
  const bool k_ok = k < Hd;
  const int b0 = blockIdx.y * kRows;
  double a[kRows];  // a_D, then a_d by subtraction: double keeps it equal to the forward's
  acc_t G[kRows];   // dL/da_{d+1}
  const double ck = k_ok ? static_cast<double>(c[k]) : 0.0;
#pragma unroll
  for (int i = 0; i < kRows; ++i) {
    a[i] = ck;
    G[i] = acc_t(0);
  }
  for (int d = 0; d < D; ++d) {
    const double wd = k_ok ? static_cast<double>(wt[static_cast<int64_t>(d) * Hd + k]) : 0.0;
#pragma unroll
    for (int i = 0; i < kRows; ++i) {
      if (b0 + i < B) a[i] += static_cast<double>(x[static_cast<int64_t>(b0 + i) * D + d]) * wd;
    }
  }
  for (int d = D - 1; d >= 0; --d) {
    const double wd = k_ok ? static_cast<double>(wt[static_cast<int64_t>(d) * Hd + k]) : 0.0;
    acc_t xd[kRows];
#pragma unroll
    for (int i = 0; i < kRows; ++i) {
      xd[i] = b0 + i < B ? static_cast<acc_t>(x[static_cast<int64_t>(b0 + i) * D + d]) : acc_t(0);
    }
    // x_d and W[:, d] enter every a_{d'} with d' > d: their gradients use G = dL/da_{d+1}.
    acc_t gw = acc_t(0);
#pragma unroll
    for (int i = 0; i < kRows; ++i) {
      gw += xd[i] * G[i];
      const acc_t s = warp_sum(static_cast<acc_t>(wd) * G[i]);
      if (lane == 0 && b0 + i < B) gx_part[(static_cast<int64_t>(warp) * B + b0 + i) * D + d] = s;
    }
    if (k_ok) atomicAdd(gwt + static_cast<int64_t>(d) * Hd + k, gw);
    acc_t hv[kRows], gh[kRows];
#pragma unroll
    for (int i = 0; i < kRows; ++i) {
      a[i] -= static_cast<double>(xd[i]) * wd;
      hv[i] = math::sigmoid(static_cast<acc_t>(a[i]));
      gh[i] = acc_t(0);
    }
    for (int o = 0; o < O; ++o) {
      const int64_t vi = (static_cast<int64_t>(d) * O + o) * Hd + k;
      const acc_t v = k_ok ? static_cast<acc_t>(V[vi]) : acc_t(0);
      acc_t gvo = acc_t(0);
#pragma unroll
      for (int i = 0; i < kRows; ++i) {
        const acc_t g = b0 + i < B
                            ? static_cast<acc_t>(go[(static_cast<int64_t>(b0 + i) * D + d) * O + o])
                            : acc_t(0);
        gvo += g * hv[i];
        gh[i] += g * v;
      }
      if (k_ok) atomicAdd(gv + vi, gvo);
    }
#pragma unroll
    for (int i = 0; i < kRows; ++i) G[i] += gh[i] * hv[i] * (acc_t(1) - hv[i]);
  }
  acc_t gck = acc_t(0);
#pragma unroll
  for (int i = 0; i < kRows; ++i) gck += G[i];
  if (k_ok) atomicAdd(gc + k, gck);
}

void check_nade(const char* op, const at::Tensor& x, const at::Tensor& W, const at::Tensor& c,
                const at::Tensor& V, const at::Tensor& b) {
  check_cuda_inputs(op, {&x, &W, &c, &V, &b}, {"x", "W", "c", "V", "b"});
  TORCH_CHECK(x.dim() == 2 && W.dim() == 2 && c.dim() == 1 && V.dim() == 3 && b.dim() == 2,
              op, ": expected x (B, D), W (Hd, D), c (Hd,), V (D, O, Hd), b (D, O)");
  const int64_t D = x.size(1), Hd = W.size(0), O = V.size(1);
  TORCH_CHECK(W.size(1) == D && c.size(0) == Hd && V.size(0) == D && V.size(2) == Hd &&
                  b.size(0) == D && b.size(1) == O,
              op, ": shapes disagree: x ", x.sizes(), ", W ", W.sizes(), ", c ", c.sizes(),
              ", V ", V.sizes(), ", b ", b.sizes());
}

dim3 nade_grid(int64_t B, int64_t Hd) {
  return dim3(static_cast<unsigned>((Hd + 32 * kWarpsPerBlock - 1) / (32 * kWarpsPerBlock)),
              static_cast<unsigned>((B + kRows - 1) / kRows));
}

at::Tensor nade_forward_cuda(const at::Tensor& x_in, const at::Tensor& W_in,
                             const at::Tensor& c_in, const at::Tensor& V_in,
                             const at::Tensor& b_in) {
  const char* op = "pixelar::nade_forward (CUDA)";
  check_nade(op, x_in, W_in, c_in, V_in, b_in);
  const at::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous(), wt = W_in.t().contiguous(), c = c_in.contiguous(),
                   V = V_in.contiguous();
  const int64_t B = x.size(0), D = x.size(1), Hd = wt.size(1), O = V.size(1);
  if (B == 0 || D == 0 || O == 0) return at::empty({B, D, O}, x.options());
  if (Hd == 0) return b_in.unsqueeze(0).expand({B, D, O}).contiguous();
  const auto acc_type = at::toOpMathType(x.scalar_type());
  const int64_t warps = (Hd + 31) / 32;
  at::Tensor part = at::empty({warps, B, D, O}, x.options().dtype(acc_type));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "nade_forward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    nade_fwd_kernel<scalar_t, acc_t><<<nade_grid(B, Hd), kWarpsPerBlock * 32, 0,
                                       at::cuda::getCurrentCUDAStream()>>>(
        x.data_ptr<scalar_t>(), wt.data_ptr<scalar_t>(), c.data_ptr<scalar_t>(),
        V.data_ptr<scalar_t>(), part.data_ptr<acc_t>(), B, D, Hd, O);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return (part.sum(0) + b_in.to(acc_type)).to(x.scalar_type());
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> nade_forward_backward_cuda(
    const at::Tensor& grad_out_in, const at::Tensor& x_in, const at::Tensor& W_in,
    const at::Tensor& c_in, const at::Tensor& V_in, const at::Tensor& b_in) {
  const char* op = "pixelar::nade_forward_backward (CUDA)";
  check_nade(op, x_in, W_in, c_in, V_in, b_in);
  check_cuda_inputs(op, {&x_in, &grad_out_in}, {"x", "grad_out"});
  const at::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor go = grad_out_in.contiguous(), x = x_in.contiguous(),
                   wt = W_in.t().contiguous(), c = c_in.contiguous(), V = V_in.contiguous();
  const int64_t B = x.size(0), D = x.size(1), Hd = wt.size(1), O = V.size(1);
  TORCH_CHECK(go.sizes() == at::IntArrayRef({B, D, O}), op, ": grad_out must be (", B, ", ",
              D, ", ", O, "), got ", go.sizes());
  const auto acc_type = at::toOpMathType(x.scalar_type());
  const auto acc_opts = x.options().dtype(acc_type);
  const int64_t warps = (Hd + 31) / 32;
  at::Tensor gx_part = at::zeros({std::max<int64_t>(warps, 1), B, D}, acc_opts);
  at::Tensor gwt = at::zeros({D, Hd}, acc_opts);
  at::Tensor gc = at::zeros({Hd}, acc_opts);
  at::Tensor gv = at::zeros({D, O, Hd}, acc_opts);
  if (B > 0 && D > 0 && Hd > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "nade_forward_backward_cuda", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      nade_bwd_kernel<scalar_t, acc_t><<<nade_grid(B, Hd), kWarpsPerBlock * 32, 0,
                                         at::cuda::getCurrentCUDAStream()>>>(
          go.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), wt.data_ptr<scalar_t>(),
          c.data_ptr<scalar_t>(), V.data_ptr<scalar_t>(), gx_part.data_ptr<acc_t>(),
          gwt.data_ptr<acc_t>(), gc.data_ptr<acc_t>(), gv.data_ptr<acc_t>(), B, D, Hd, O);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  const auto dt = x.scalar_type();
  return {gx_part.sum(0).to(dt), gwt.t().contiguous().to(dt), gc.to(dt), gv.to(dt),
          go.sum(0).to(dt)};
}

}  // namespace
}  // namespace cuda
}  // namespace pixelar

TORCH_LIBRARY_IMPL(pixelar, CUDA, m) {
  m.impl("nade_forward", &pixelar::cuda::nade_forward_cuda);
  m.impl("nade_forward_backward", &pixelar::cuda::nade_forward_backward_cuda);
}
