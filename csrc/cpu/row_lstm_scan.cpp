// CPU kernels of pixelar::row_lstm_scan and its backward (semantics: the docstring of
// pixelar/ops/row_lstm_scan.py).
//
// The rows are sequential; within a row every (batch, column) position is independent, so
// the state-to-state 1 x 3 convolution of a row is one matrix product over the whole batch,
// done by torch's BLAS (at::mm_out):
//   pre (4H, B*W) = Wflat (4H, 3H) @ hcol (3H, B*W),
//   Wflat[g][k*H + u] = w_ss[g, u, k],   hcol[k*H + u][b*W + w] = h[b, u, r-1, w+k-1]
// (zero where w+k-1 falls outside the row). Everything else (adding x_gates, the gates,
// the cell update, and writing next row's hcol) is one fused pass per row, parallel over
// hidden units with at::parallel_for and vectorized along the row's B*W positions.
//
// Layout: each row r is gathered into (C, B, W) buffers, so a row's data for one channel
// is one contiguous run of B*W values, and results are scattered back to (B, C, R, W). In
// the (B, C, R, W) layout each (b, channel) row is a separate 4 KB-apart chunk of 128
// bytes: the fused passes touched some 16 such streams at once, each a cache and TLB miss
// that no prefetcher follows across pages, and cost as much as the matrix products. One
// gathering copy per row (torch's parallel copy) is much cheaper.
//
// Backward per row, in reverse: Q = Wflat^T @ dpre(r+1) (the gradient reaching h(r)),
// recompute pre(r) from the saved h(r-1), the fused cell backward, and
// grad_Wflat += dpre(r) @ hcol^T.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>
#include <vector>

#include "kernel_common.h"
#include "lstm_loops.h"
#include "pixelar/checks.h"

namespace pixelar {
namespace cpu {
namespace {

constexpr const char* kOp = "pixelar::row_lstm_scan";
constexpr const char* kOpBwd = "pixelar::row_lstm_scan_backward";

// Hidden units per task of the fused passes: about 4096 elements' worth.
inline int64_t unit_grain(int64_t BW) {
  return std::max<int64_t>(1, 4096 / std::max<int64_t>(BW, 1));
}

// The three shifted copies of the row h (B segments of W) at hcol + k * hg, k = 0, 1, 2:
// per segment, hcol0[w + 1] = hcol1[w] = hcol2[w - 1] = h[w], zero where w + k - 1 falls
// outside the segment.
template <typename T>
PIXELAR_HOST_DEVICE_INLINE void fill_hcol(const T* __restrict h, T* hcol, int64_t hg, int64_t B,
                                          int64_t W) {
  T* __restrict h0 = hcol;
  T* __restrict h1 = hcol + hg;
  T* __restrict h2 = hcol + 2 * hg;
  std::copy(h, h + B * W, h1);
  for (int64_t b = 0; b < B; ++b) {
    const int64_t o = b * W;
    h0[o] = T(0);
    for (int64_t w = 0; w + 1 < W; ++w) h0[o + w + 1] = h[o + w];
    for (int64_t w = 1; w < W; ++w) h2[o + w - 1] = h[o + w];
    h2[o + W - 1] = T(0);
  }
}

// dh[w] = gh[w] + q0[w + 1] + q1[w] + q2[w - 1] per segment of W, with q_k at q + k * qg
// (terms outside the segment dropped): the next row's pre at column w' read h[w' + k - 1].
// No q (last row): dh = gh.
template <typename T>
PIXELAR_HOST_DEVICE_INLINE void shifted_sum(const T* __restrict gh, const T* q, int64_t qg,
                                            T* __restrict dh, int64_t B, int64_t W) {
  if (q == nullptr) {
    std::copy(gh, gh + B * W, dh);
    return;
  }
  const T* __restrict q0 = q;
  const T* __restrict q1 = q + qg;
  const T* __restrict q2 = q + 2 * qg;
  for (int64_t k = 0; k < B * W; ++k) dh[k] = gh[k] + q1[k];
  for (int64_t b = 0; b < B; ++b) {
    const int64_t o = b * W;
    for (int64_t w = 0; w + 1 < W; ++w) dh[o + w] += q0[o + w + 1];
    for (int64_t w = 1; w < W; ++w) dh[o + w] += q2[o + w - 1];
  }
}

// Forward of one row for hidden unit u. Gate k of x at x + k * gx, of pre at pre + k * gp;
// c_prev: the row above (row 0: zeros for pre and c_prev). Writes h, c (B*W each) and the
// shifted copies of h into hcol (see fill_hcol; copy k at hcol + k * gp).
template <typename T>
PIXELAR_SIMD_CLONES void forward_row(const T* x, int64_t gx, const T* pre, int64_t gp,
                                     const T* c_prev, T* h, T* c, T* hcol, int64_t B,
                                     int64_t W) {
  lstm_forward_loop<T>(x, x + gx, x + 2 * gx, x + 3 * gx, pre, pre + gp, pre + 2 * gp,
                       pre + 3 * gp, c_prev, c, h, B * W);
  fill_hcol<T>(h, hcol, gp, B, W);
}

// Backward of one row for hidden unit u. gh, gc, c: the row of grad_h, grad_c, c; c_prev
// the row above; x, pre: gate k at + k * g; q: Q's three rows for u at q + k * qg (nullptr
// for the last row); dcar: the carried dc (in: from row r + 1, out: to row r - 1).
// Writes the pre-activation gradients to gx (gate k at gx + k * g). tmp: B*W scratch.
template <typename T>
PIXELAR_SIMD_CLONES void backward_row(const T* gh, const T* gc, const T* x, const T* pre,
                                      int64_t g, const T* c, const T* c_prev, const T* q,
                                      int64_t qg, T* dcar, T* gx, T* tmp, int64_t B,
                                      int64_t W) {
  shifted_sum<T>(gh, q, qg, tmp, B, W);
  lstm_backward_loop<T>(x, x + g, x + 2 * g, x + 3 * g, pre, pre + g, pre + 2 * g,
                        pre + 3 * g, c_prev, c, tmp, gc, dcar, gx, gx + g, gx + 2 * g,
                        gx + 3 * g, B * W);
}

struct Dims {
  int64_t B, H, G, R, W;
};

Dims check_inputs(const char* op, const at::Tensor& x_gates, const at::Tensor& w_ss) {
  const int64_t H = checks::check_scan_inputs(op, x_gates, w_ss, 3, "(B, 4H, R, W)",
                                                   "(4H, H, 3)", checks::kCpu);
  return Dims{x_gates.size(0), H, 4 * H, x_gates.size(2), x_gates.size(3)};
}

// w_ss (G, H, 3) -> Wflat (G, 3H), Wflat[g][k*H + u] = w_ss[g, u, k].
at::Tensor flat_weights(const at::Tensor& w_ss) {
  return w_ss.permute({0, 2, 1}).reshape({w_ss.size(0), 3 * w_ss.size(1)}).contiguous();
}

// t (B, C, R, W) -> (C, R, B, W) contiguous: channel u's row r is the run of B*W values at
// (u * R + r) * B*W. One copy per tensor and call.
at::Tensor to_channel_rows(const at::Tensor& t) { return t.permute({1, 2, 0, 3}).contiguous(); }

// (C, R, B, W) -> (B, C, R, W) contiguous.
at::Tensor from_channel_rows(const at::Tensor& t) { return t.permute({2, 0, 1, 3}).contiguous(); }

std::tuple<at::Tensor, at::Tensor> row_lstm_scan_cpu(const at::Tensor& x_gates_in,
                                                     const at::Tensor& w_ss_in) {
  const at::AutoDispatchBelowADInplaceOrView below_autograd;  // plain ATen calls inside
  const Dims d = check_inputs(kOp, x_gates_in, w_ss_in);
  const auto opts = x_gates_in.options();
  if (d.B * d.H * d.R * d.W == 0) {
    at::Tensor h = at::empty({d.B, d.H, d.R, d.W}, opts);
    return {h, at::empty_like(h)};
  }
  const int64_t B = d.B, W = d.W, BW = B * W, G = d.G, H = d.H, R = d.R, RBW = R * BW;
  const at::Tensor wflat = flat_weights(w_ss_in);
  const at::Tensor xt = to_channel_rows(x_gates_in);  // (G, R, B, W)
  at::Tensor ht = at::empty({H, R, B, W}, opts);
  at::Tensor ct = at::empty({H, R, B, W}, opts);
  at::Tensor czero = at::zeros({H, BW}, opts);  // row 0: c_prev = 0
  at::Tensor hcol = at::empty({3 * H, BW}, opts);
  at::Tensor pre = at::zeros({G, BW}, opts);     // row 0: no state input
  AT_DISPATCH_FLOATING_TYPES(xt.scalar_type(), "row_lstm_scan_cpu", [&] {
    const scalar_t* xp = xt.data_ptr<scalar_t>();
    const scalar_t* prep = pre.data_ptr<scalar_t>();
    const scalar_t* czp = czero.data_ptr<scalar_t>();
    scalar_t* hp = ht.data_ptr<scalar_t>();
    scalar_t* cp = ct.data_ptr<scalar_t>();
    scalar_t* hcolp = hcol.data_ptr<scalar_t>();
    for (int64_t r = 0; r < R; ++r) {
      if (r > 0) at::mm_out(pre, wflat, hcol);
      at::parallel_for(0, H, unit_grain(BW), [&](int64_t begin, int64_t end) {
        for (int64_t u = begin; u < end; ++u) {
          const int64_t o = u * RBW + r * BW;
          forward_row<scalar_t>(xp + o, H * RBW, prep + u * BW, H * BW,
                                r > 0 ? cp + o - BW : czp + u * BW, hp + o, cp + o,
                                hcolp + u * BW, B, W);
        }
      });
    }
  });
  return {from_channel_rows(ht), from_channel_rows(ct)};
}

std::tuple<at::Tensor, at::Tensor> row_lstm_scan_backward_cpu(
    const at::Tensor& grad_h_in, const at::Tensor& grad_c_in, const at::Tensor& x_gates_in,
    const at::Tensor& w_ss_in, const at::Tensor& h_in, const at::Tensor& c_in) {
  const at::AutoDispatchBelowADInplaceOrView below_autograd;  // plain ATen calls inside
  const Dims d = check_inputs(kOpBwd, x_gates_in, w_ss_in);
  checks::check_scan_states(kOpBwd, x_gates_in, {d.B, d.H, d.R, d.W}, "(B, H, R, W)",
                            grad_h_in, grad_c_in, h_in, c_in, checks::kCpu);
  const auto opts = x_gates_in.options();
  if (d.B * d.H * d.R * d.W == 0) {
    at::Tensor grad_x = at::empty_like(x_gates_in);  // the layout the fake kernel promises
    grad_x.zero_();
    return {grad_x, like_layout(at::zeros(w_ss_in.sizes(), opts), w_ss_in)};
  }
  const int64_t B = d.B, W = d.W, BW = B * W, G = d.G, H = d.H, R = d.R, RBW = R * BW;
  const at::Tensor wflat = flat_weights(w_ss_in);
  const at::Tensor wflat_t = wflat.t().contiguous();
  // Everything in the (C, R, B, W) layout: channel u's row r is one run of B*W values.
  const at::Tensor xt = to_channel_rows(x_gates_in), ght = to_channel_rows(grad_h_in),
                   gct = to_channel_rows(grad_c_in), ht = to_channel_rows(h_in),
                   ct = to_channel_rows(c_in);
  // hcol of every row r >= 1 (from h(r - 1)), as (3H, R, B*W); row 0 (no state input) is
  // left out of the products below. Then pre of every row in one product.
  at::Tensor hcol = at::empty({3 * H, R, BW}, opts);
  at::Tensor pre = at::empty({G, R, BW}, opts);
  at::Tensor dp = at::empty({G, R, BW}, opts);  // the pre-activation gradients = grad_x
  at::Tensor q = at::empty({3 * H, BW}, opts);
  at::Tensor dcar = at::zeros({H, BW}, opts);
  at::Tensor czero = at::zeros({H, BW}, opts);
  at::Tensor gwflat;
  AT_DISPATCH_FLOATING_TYPES(xt.scalar_type(), "row_lstm_scan_backward_cpu", [&] {
    const scalar_t* hp = ht.data_ptr<scalar_t>();
    scalar_t* hcolp = hcol.data_ptr<scalar_t>();
    if (R > 1) {
      at::parallel_for(0, H * (R - 1), std::max<int64_t>(1, 4096 / BW),
                       [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
          const int64_t u = i / (R - 1), r = 1 + i % (R - 1);
          fill_hcol<scalar_t>(hp + u * RBW + (r - 1) * BW, hcolp + u * RBW + r * BW, H * RBW,
                              B, W);
        }
      });
      at::Tensor pre_rest = pre.view({G, RBW}).narrow(1, BW, RBW - BW);
      at::mm_out(pre_rest, wflat, hcol.view({3 * H, RBW}).narrow(1, BW, RBW - BW));
    }
    pre.select(1, 0).zero_();  // row 0 has no state input
    const scalar_t* ghp = ght.data_ptr<scalar_t>();
    const scalar_t* gcp = gct.data_ptr<scalar_t>();
    const scalar_t* xp = xt.data_ptr<scalar_t>();
    const scalar_t* prep = pre.data_ptr<scalar_t>();
    const scalar_t* cp = ct.data_ptr<scalar_t>();
    const scalar_t* czp = czero.data_ptr<scalar_t>();
    const scalar_t* qp = q.data_ptr<scalar_t>();
    scalar_t* dcarp = dcar.data_ptr<scalar_t>();
    scalar_t* dpp = dp.data_ptr<scalar_t>();
    for (int64_t r = R - 1; r >= 0; --r) {
      if (r < R - 1) at::mm_out(q, wflat_t, dp.select(1, r + 1));  // the gradient reaching h(r)
      at::parallel_for(0, H, unit_grain(BW), [&](int64_t begin, int64_t end) {
        std::vector<scalar_t> tmp(BW);
        for (int64_t u = begin; u < end; ++u) {
          const int64_t o = u * RBW + r * BW;
          backward_row<scalar_t>(ghp + o, gcp + o, xp + o, prep + o, H * RBW, cp + o,
                                 r > 0 ? cp + o - BW : czp + u * BW,
                                 r < R - 1 ? qp + u * BW : nullptr, H * BW, dcarp + u * BW,
                                 dpp + o, tmp.data(), B, W);
        }
      });
    }
  });
  // grad_Wflat = sum over rows r >= 1 of dp(r) @ hcol(r)^T, one product.
  if (R > 1) {
    gwflat = at::mm(dp.view({G, RBW}).narrow(1, BW, RBW - BW),
                    hcol.view({3 * H, RBW}).narrow(1, BW, RBW - BW).t());
  } else {
    gwflat = at::zeros({G, 3 * H}, opts);
  }
  // Wflat layout (G, [k, u]) -> (G, H, 3).
  at::Tensor grad_w = gwflat.view({G, 3, H}).permute({0, 2, 1}).contiguous();
  at::Tensor grad_x = at::empty_like(x_gates_in);  // the layout the fake kernel promises
  grad_x.copy_(dp.view({G, R, B, W}).permute({2, 0, 1, 3}));
  return {grad_x, like_layout(grad_w, w_ss_in)};
}

}  // namespace
}  // namespace cpu
}  // namespace pixelar

TORCH_LIBRARY_IMPL(pixelar, CPU, m) {
  m.impl("row_lstm_scan", &pixelar::cpu::row_lstm_scan_cpu);
  m.impl("row_lstm_scan_backward", &pixelar::cpu::row_lstm_scan_backward_cpu);
}
