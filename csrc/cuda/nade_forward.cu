// NADE outputs by the incremental hidden update: CUDA kernels (forward and backward), their
// launchers and their registration, compiled by nvcc and (all but the registration) by the
// CPU emulation tests.
//
// Semantics: pixelar/ops/nade_forward.py. x: (B, D); W: (Hd, D); c: (Hd,); V: (D, O, Hd);
// b: (D, O); out: (B, D, O).
//
// Design: hidden units never interact in the recurrence a_{d+1} = a_d + W[:, d] x_d, so a
// lane owns one hidden unit for kNadeRows batch rows and keeps a[kNadeRows] in registers
// for all D steps. Per step a lane reads V[d, :, k] and W[k, d] once (coalesced, as W^T)
// and reuses them for its rows. A block covers up to 512 hidden units (launch_plan.h,
// nade_grid): the sums over a warp's 32 units are warp shuffles, the sums over the block's
// warps go through shared memory (added in warp order by one thread per row, the buffer
// double-buffered so one barrier per output suffices), so the partial-sum buffer has one
// (B, D, O) slice per block of hidden units: one for Hd <= 512 (it was one per warp: 16
// times the output at Hd = 500). Blocks of hidden units are on gridDim.y, batch groups on
// gridDim.x (any batch; gridDim.y would stop at 65,535 groups).
// nade_forward_checkpointed also writes a_d at every 32nd d (pixelar/nade_checkpoints.h),
// the op's contract on every device; the CPU backward starts from them, this one does not:
// The backward runs the steps in reverse with G = dL/da in registers, recovering a_d from
// a_D by subtraction in double (no drift); grad x is reduced like the forward's outputs;
// sums over the batch (grad W, V, c) are atomicAdds, one per lane and step, so their last
// bits can vary between runs.
#if !defined(PIXELAR_CUDA_EMULATION)  // the CUDA build: the registration below
#include <torch/library.h>

#include "cuda_device.cuh"
#endif

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>

#include <optional>
#include <tuple>

#include "device_code.cuh"
#include "launch_plan.h"
#include "pixelar/checks.h"
#include "pixelar/lstm_math.h"
#include "pixelar/nade_checkpoints.h"

namespace pixelar {
namespace cuda {
namespace nade {

constexpr int kRows = kNadeRows;

// Adds s[i] (lane 0 of each warp holds its warp's sum for row i) over the block's warps:
// red is a double buffer of 2 x warps x kRows values, `phase` alternates between calls;
// returns true in threads tid < kRows, with *out = the block's sum for row tid.
template <typename acc_t>
__device__ __forceinline__ bool block_rows_sum(const acc_t (&s)[kRows], acc_t* red, int phase,
                                               acc_t* out) {
  const int warps = blockDim.x >> 5, warp = threadIdx.x >> 5;
  acc_t* buf = red + (phase & 1) * warps * kRows;
  if ((threadIdx.x & 31) == 0) {
#pragma unroll
    for (int i = 0; i < kRows; ++i) buf[warp * kRows + i] = s[i];
  }
  // One barrier: this buffer is written again two calls later, after the next call's
  // barrier, which every thread reaches only after its reads below.
  __syncthreads();
  if (static_cast<int>(threadIdx.x) >= kRows) return false;
  acc_t t = buf[threadIdx.x];
  for (int w = 1; w < warps; ++w) t += buf[w * kRows + threadIdx.x];
  *out = t;
  return true;
}

// part: (gridDim.y, B, D, O): the outputs' sums over this block's hidden units. ckpt: null,
// or the checkpoints (ceil(D / kEvery), B, Hd) to write.
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kNadeMaxThreads)
forward_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ wt,
               const scalar_t* __restrict__ c, const scalar_t* __restrict__ V,
               acc_t* __restrict__ part, acc_t* __restrict__ ckpt, int B, int D, int Hd,
               int O) {
  PIXELAR_DYNAMIC_SMEM(smem_raw);
  acc_t* red = reinterpret_cast<acc_t*>(smem_raw);  // [2][warps][kRows]
  const int k = blockIdx.y * blockDim.x + threadIdx.x;
  const bool k_ok = k < Hd;
  const int64_t b0 = static_cast<int64_t>(blockIdx.x) * kRows;
  acc_t* pb = part + static_cast<int64_t>(blockIdx.y) * B * D * O;
  acc_t a[kRows];
  const acc_t ck = k_ok ? static_cast<acc_t>(c[k]) : acc_t(0);
#pragma unroll
  for (int i = 0; i < kRows; ++i) a[i] = ck;
  int phase = 0;
  for (int d = 0; d < D; ++d) {
    if (ckpt != nullptr && k_ok && d % nade_checkpoints::kEvery == 0) {
      acc_t* cd = ckpt + (static_cast<int64_t>(d / nade_checkpoints::kEvery) * B + b0) * Hd + k;
#pragma unroll
      for (int i = 0; i < kRows; ++i) {
        if (b0 + i < B) cd[i * Hd] = a[i];
      }
    }
    acc_t hv[kRows];
#pragma unroll
    for (int i = 0; i < kRows; ++i) hv[i] = k_ok ? math::sigmoid(a[i]) : acc_t(0);
    for (int o = 0; o < O; ++o) {
      const acc_t v =
          k_ok ? static_cast<acc_t>(V[(static_cast<int64_t>(d) * O + o) * Hd + k]) : acc_t(0);
      acc_t s[kRows];
#pragma unroll
      for (int i = 0; i < kRows; ++i) s[i] = warp_sum(v * hv[i]);
      acc_t t;
      if (block_rows_sum(s, red, phase++, &t) && b0 + threadIdx.x < B) {
        pb[((b0 + threadIdx.x) * D + d) * O + o] = t;
      }
    }
    const acc_t wd = k_ok ? static_cast<acc_t>(wt[static_cast<int64_t>(d) * Hd + k]) : acc_t(0);
#pragma unroll
    for (int i = 0; i < kRows; ++i) {
      if (b0 + i < B) a[i] += static_cast<acc_t>(x[(b0 + i) * D + d]) * wd;
    }
  }
}

// gx_part: (gridDim.y, B, D), or null: no grad x (its sums are skipped, in every block
// alike: the barriers stay uniform); gwt (D, Hd), gc (Hd,), gv (D, O, Hd): zeroed, atomicAdd.
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kNadeMaxThreads)
backward_kernel(const scalar_t* __restrict__ go, const scalar_t* __restrict__ x,
                const scalar_t* __restrict__ wt, const scalar_t* __restrict__ c,
                const scalar_t* __restrict__ V, acc_t* __restrict__ gx_part,
                acc_t* __restrict__ gwt, acc_t* __restrict__ gc, acc_t* __restrict__ gv, int B,
                int D, int Hd, int O) {
  PIXELAR_DYNAMIC_SMEM(smem_raw);
  acc_t* red = reinterpret_cast<acc_t*>(smem_raw);  // [2][warps][kRows]
  const int k = blockIdx.y * blockDim.x + threadIdx.x;
  const bool k_ok = k < Hd;
  const int64_t b0 = static_cast<int64_t>(blockIdx.x) * kRows;
  acc_t* gxb = gx_part ? gx_part + static_cast<int64_t>(blockIdx.y) * B * D : nullptr;
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
      if (b0 + i < B) a[i] += static_cast<double>(x[(b0 + i) * D + d]) * wd;
    }
  }
  int phase = 0;
  for (int d = D - 1; d >= 0; --d) {
    const double wd = k_ok ? static_cast<double>(wt[static_cast<int64_t>(d) * Hd + k]) : 0.0;
    acc_t xd[kRows];
#pragma unroll
    for (int i = 0; i < kRows; ++i) {
      xd[i] = b0 + i < B ? static_cast<acc_t>(x[(b0 + i) * D + d]) : acc_t(0);
    }
    // x_d and W[:, d] enter every a_{d'} with d' > d: their gradients use G = dL/da_{d+1}.
    acc_t gw = acc_t(0);
#pragma unroll
    for (int i = 0; i < kRows; ++i) gw += xd[i] * G[i];
    if (gxb != nullptr) {
      acc_t s[kRows];
#pragma unroll
      for (int i = 0; i < kRows; ++i) s[i] = warp_sum(static_cast<acc_t>(wd) * G[i]);
      acc_t t;
      if (block_rows_sum(s, red, phase++, &t) && b0 + threadIdx.x < B) {
        gxb[(b0 + threadIdx.x) * D + d] = t;
      }
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
        const acc_t g =
            b0 + i < B ? static_cast<acc_t>(go[((b0 + i) * D + d) * O + o]) : acc_t(0);
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

}  // namespace nade

template <typename Dev>
void check_nade(const char* op, const at::Tensor& x, const at::Tensor& W, const at::Tensor& c,
                const at::Tensor& V, const at::Tensor& b) {
  checks::check_inputs_alike(op, Dev::kDeviceType, {&x, &W, &c, &V, &b},
                             {"x", "W", "c", "V", "b"});
  TORCH_CHECK(x.dim() == 2 && W.dim() == 2 && c.dim() == 1 && V.dim() == 3 && b.dim() == 2,
              op, ": expected x (B, D), W (Hd, D), c (Hd,), V (D, O, Hd), b (D, O)");
  const int64_t D = x.size(1), Hd = W.size(0), O = V.size(1);
  TORCH_CHECK(W.size(1) == D && c.size(0) == Hd && V.size(0) == D && V.size(2) == Hd &&
                  b.size(0) == D && b.size(1) == O,
              op, ": shapes disagree: x ", x.sizes(), ", W ", W.sizes(), ", c ", c.sizes(),
              ", V ", V.sizes(), ", b ", b.sizes());
  // the kernels take B, D, Hd, O as ints; offsets are 64-bit
  checks::check_index32(op, {x.size(0), D, Hd, O}, "a dimension of x, W or V");
}

// The launch of the NADE kernels at (B, Hd): the grid (launch_plan.h), checked against
// the grid limits.
template <typename Dev>
NadeGrid nade_launch_grid(const char* op, int64_t B, int64_t Hd) {
  const NadeGrid g = nade_grid(B, Hd, Dev::max_threads());
  TORCH_CHECK(grid_fits(g.x, g.y), op, ": B = ", B, ", Hd = ", Hd,
              " needs a grid of ", g.x, " x ", g.y, " blocks, beyond the CUDA limits");
  return g;
}

// The forward; with_ckpt: also the checkpoints, else an undefined second tensor.
template <typename Dev>
std::tuple<at::Tensor, at::Tensor> nade_forward_impl(const char* op, const at::Tensor& x_in,
                                                     const at::Tensor& W_in,
                                                     const at::Tensor& c_in,
                                                     const at::Tensor& V_in,
                                                     const at::Tensor& b_in, bool with_ckpt) {
  check_nade<Dev>(op, x_in, W_in, c_in, V_in, b_in);
  const typename Dev::Guard guard(x_in.device());
  const at::Tensor x = x_in.contiguous(), wt = W_in.t().contiguous(), c = c_in.contiguous(),
                   V = V_in.contiguous();
  const int64_t B = x.size(0), D = x.size(1), Hd = wt.size(1), O = V.size(1);
  const auto acc_type = at::toOpMathType(x.scalar_type());
  at::Tensor ckpt = with_ckpt ? at::empty({nade_checkpoints::count(D), B, Hd},
                                          x.options().dtype(acc_type))
                              : at::Tensor();
  // No work: no outputs, and no checkpoints or empty ones (O = 0 with checkpoints runs).
  if (B == 0 || D == 0 || Hd == 0 || (O == 0 && !with_ckpt)) {
    const bool bias_only = Hd == 0 && B * D * O > 0;  // no hidden units: out = b
    at::Tensor out = bias_only ? b_in.unsqueeze(0).expand({B, D, O}).contiguous()
                               : at::empty({B, D, O}, x.options());
    return {out, ckpt};
  }
  const NadeGrid g = nade_launch_grid<Dev>(op, B, Hd);
  at::Tensor part = at::empty({g.y, B, D, O}, x.options().dtype(acc_type));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(),
                                  "nade_forward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const size_t smem = 2 * (g.threads / 32) * kNadeRows * sizeof(acc_t);
    Dev::launch(nade::forward_kernel<scalar_t, acc_t>, g.x, g.y, g.threads, smem,
                x.data_ptr<scalar_t>(), wt.data_ptr<scalar_t>(), c.data_ptr<scalar_t>(),
                V.data_ptr<scalar_t>(), part.data_ptr<acc_t>(),
                with_ckpt ? ckpt.data_ptr<acc_t>() : nullptr, static_cast<int>(B),
                static_cast<int>(D), static_cast<int>(Hd), static_cast<int>(O));
  });
  at::Tensor sum = g.y == 1 ? part[0] : part.sum(0);
  return {(sum + b_in.to(acc_type)).to(x.scalar_type()), ckpt};
}

template <typename Dev>
at::Tensor nade_forward(const at::Tensor& x, const at::Tensor& W, const at::Tensor& c,
                        const at::Tensor& V, const at::Tensor& b) {
  return std::get<0>(
      nade_forward_impl<Dev>("pixelar::nade_forward (CUDA)", x, W, c, V, b, false));
}

template <typename Dev>
std::tuple<at::Tensor, at::Tensor> nade_forward_checkpointed(const at::Tensor& x,
                                                             const at::Tensor& W,
                                                             const at::Tensor& c,
                                                             const at::Tensor& V,
                                                             const at::Tensor& b) {
  return nade_forward_impl<Dev>("pixelar::nade_forward_checkpointed (CUDA)", x, W, c, V, b,
                                true);
}

template <typename Dev>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> nade_forward_backward(
    const at::Tensor& grad_out_in, const at::Tensor& x_in, const at::Tensor& W_in,
    const at::Tensor& c_in, const at::Tensor& V_in, const at::Tensor& b_in,
    const std::optional<at::Tensor>& checkpoints, bool grad_x) {
  const char* op = "pixelar::nade_forward_backward (CUDA)";
  check_nade<Dev>(op, x_in, W_in, c_in, V_in, b_in);
  checks::check_inputs_alike(op, Dev::kDeviceType, {&x_in, &grad_out_in}, {"x", "grad_out"});
  // Checked, not read: this backward recovers a_d from a_D (see the top of the file).
  if (checkpoints.has_value()) nade_checkpoints::check(op, *checkpoints, x_in, W_in.size(0));
  const typename Dev::Guard guard(x_in.device());
  const at::Tensor go = grad_out_in.contiguous(), x = x_in.contiguous(),
                   wt = W_in.t().contiguous(), c = c_in.contiguous(), V = V_in.contiguous();
  const int64_t B = x.size(0), D = x.size(1), Hd = wt.size(1), O = V.size(1);
  TORCH_CHECK(go.sizes() == at::IntArrayRef({B, D, O}), op, ": grad_out must be (", B, ", ",
              D, ", ", O, "), got ", go.sizes());
  const auto acc_type = at::toOpMathType(x.scalar_type());
  const auto acc_opts = x.options().dtype(acc_type);
  const bool run = B > 0 && D > 0 && Hd > 0;
  const NadeGrid g = run ? nade_launch_grid<Dev>(op, B, Hd) : NadeGrid{1, 1, 32};
  at::Tensor gx_part = grad_x ? at::zeros({g.y, B, D}, acc_opts) : at::Tensor();
  at::Tensor gwt = at::zeros({D, Hd}, acc_opts);
  at::Tensor gc = at::zeros({Hd}, acc_opts);
  at::Tensor gv = at::zeros({D, O, Hd}, acc_opts);
  if (run) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(),
                                    "nade_forward_backward_cuda", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      const size_t smem = 2 * (g.threads / 32) * kNadeRows * sizeof(acc_t);
      Dev::launch(nade::backward_kernel<scalar_t, acc_t>, g.x, g.y, g.threads, smem,
                  go.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), wt.data_ptr<scalar_t>(),
                  c.data_ptr<scalar_t>(), V.data_ptr<scalar_t>(),
                  grad_x ? gx_part.data_ptr<acc_t>() : nullptr,
                  gwt.data_ptr<acc_t>(), gc.data_ptr<acc_t>(), gv.data_ptr<acc_t>(),
                  static_cast<int>(B), static_cast<int>(D), static_cast<int>(Hd),
                  static_cast<int>(O));
    });
  }
  const auto dt = x.scalar_type();
  // Without grad_x: an empty (0,) tensor in its place.
  at::Tensor gx = !grad_x ? at::empty({0}, x.options())
                          : (g.y == 1 ? gx_part[0] : gx_part.sum(0)).to(dt);
  // grad W in W's layout, as the CPU kernel and the fake give it: for a W stored transposed
  // (W.t() contiguous, as the NADE models keep it) the accumulated grad of W^T viewed
  // transposed (no transpose copy here, and none by autograd to match W's strides).
  at::Tensor gw = W_in.t().is_contiguous() && !W_in.is_contiguous()
                      ? gwt.to(dt).t()
                      : gwt.t().contiguous().to(dt);
  return {gx, gw, gc.to(dt), gv.to(dt), go.sum(0).to(dt)};
}

}  // namespace cuda
}  // namespace pixelar

// The CUDA build registers the launchers for CudaDevice; the emulation tests
// (tests/cuda_emulation/) include this file with PIXELAR_CUDA_EMULATION defined and
// instantiate them for their host device policy instead.
#if !defined(PIXELAR_CUDA_EMULATION)
TORCH_LIBRARY_IMPL(pixelar, CUDA, m) {
  using pixelar::cuda::CudaDevice;
  m.impl("nade_forward", &pixelar::cuda::nade_forward<CudaDevice>);
  m.impl("nade_forward_checkpointed", &pixelar::cuda::nade_forward_checkpointed<CudaDevice>);
  m.impl("nade_forward_backward", &pixelar::cuda::nade_forward_backward<CudaDevice>);
}
#endif
