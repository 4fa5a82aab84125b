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

// Forward of one row for hidden unit u. Gate k of x at x + k * g (g = H*B*W), of pre at
// pre + k * g; c_prev: the row above (row 0: zeros for pre and c_prev). Writes h, c
// (B*W each) and the shifted copies of h into hcol (see fill_hcol).
template <typename T>
PIXELAR_SIMD_CLONES void forward_row(const T* x, const T* pre, int64_t g, const T* c_prev,
                                     T* h, T* c, T* hcol, int64_t B, int64_t W) {
  lstm_forward_loop<T>(x, x + g, x + 2 * g, x + 3 * g, pre, pre + g, pre + 2 * g,
                       pre + 3 * g, c_prev, c, h, B * W);
  fill_hcol<T>(h, hcol, g, B, W);
}

// Backward of one row for hidden unit u. gh, gc, c: the row of grad_h, grad_c, c; c_prev
// the row above; x, pre as in forward_row; q: Q's three rows for u at q + k * g (nullptr
// for the last row); dcar: the carried dc (in: from row r + 1, out: to row r - 1).
// Writes the pre-activation gradients to gx (gate k at gx + k * g). tmp: B*W scratch.
template <typename T>
PIXELAR_SIMD_CLONES void backward_row(const T* gh, const T* gc, const T* x, const T* pre,
                                      int64_t g, const T* c, const T* c_prev, const T* q,
                                      T* dcar, T* gx, T* tmp, int64_t B, int64_t W) {
  shifted_sum<T>(gh, q, g, tmp, B, W);
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

// Row r of t (B, C, R, W) into buf (C, B*W), and back.
void gather_row(at::Tensor& buf, const at::Tensor& t, int64_t r) {
  buf.view({t.size(1), t.size(0), t.size(3)}).copy_(t.select(2, r).permute({1, 0, 2}));
}
void scatter_row(at::Tensor& t, int64_t r, const at::Tensor& buf) {
  t.select(2, r).copy_(buf.view({t.size(1), t.size(0), t.size(3)}).permute({1, 0, 2}));
}

std::tuple<at::Tensor, at::Tensor> row_lstm_scan_cpu(const at::Tensor& x_gates_in,
                                                     const at::Tensor& w_ss_in) {
  const at::AutoDispatchBelowADInplaceOrView below_autograd;  // plain ATen calls inside
  const Dims d = check_inputs(kOp, x_gates_in, w_ss_in);
  const auto opts = x_gates_in.options();
  at::Tensor h = at::empty({d.B, d.H, d.R, d.W}, opts);
  at::Tensor c = at::empty_like(h);
  if (h.numel() == 0) return {h, c};
  const int64_t B = d.B, W = d.W, BW = B * W, G = d.G, H = d.H, R = d.R;
  const at::Tensor wflat = flat_weights(w_ss_in);
  at::Tensor xrow = at::empty({G, BW}, opts);
  at::Tensor hrow = at::empty({H, BW}, opts);
  at::Tensor crow = at::empty({H, BW}, opts);
  at::Tensor cprev = at::zeros({H, BW}, opts);  // row 0: c_prev = 0
  at::Tensor hcol = at::empty({3 * H, BW}, opts);
  at::Tensor pre = at::zeros({G, BW}, opts);     // row 0: no state input
  for (int64_t r = 0; r < R; ++r) {
    gather_row(xrow, x_gates_in, r);
    if (r > 0) at::mm_out(pre, wflat, hcol);
    AT_DISPATCH_FLOATING_TYPES(xrow.scalar_type(), "row_lstm_scan_cpu", [&] {
      const scalar_t* xp = xrow.data_ptr<scalar_t>();
      const scalar_t* prep = pre.data_ptr<scalar_t>();
      const scalar_t* cpp = cprev.data_ptr<scalar_t>();
      scalar_t* hp = hrow.data_ptr<scalar_t>();
      scalar_t* cp = crow.data_ptr<scalar_t>();
      scalar_t* hcolp = hcol.data_ptr<scalar_t>();
      at::parallel_for(0, H, unit_grain(BW), [&](int64_t begin, int64_t end) {
        for (int64_t u = begin; u < end; ++u) {
          forward_row<scalar_t>(xp + u * BW, prep + u * BW, H * BW, cpp + u * BW,
                                hp + u * BW, cp + u * BW, hcolp + u * BW, B, W);
        }
      });
    });
    scatter_row(h, r, hrow);
    scatter_row(c, r, crow);
    std::swap(crow, cprev);
  }
  return {h, c};
}

std::tuple<at::Tensor, at::Tensor> row_lstm_scan_backward_cpu(
    const at::Tensor& grad_h_in, const at::Tensor& grad_c_in, const at::Tensor& x_gates_in,
    const at::Tensor& w_ss_in, const at::Tensor& h_in, const at::Tensor& c_in) {
  const at::AutoDispatchBelowADInplaceOrView below_autograd;  // plain ATen calls inside
  const Dims d = check_inputs(kOpBwd, x_gates_in, w_ss_in);
  checks::check_scan_states(kOpBwd, x_gates_in, {d.B, d.H, d.R, d.W}, "(B, H, R, W)",
                            grad_h_in, grad_c_in, h_in, c_in, checks::kCpu);
  const auto opts = x_gates_in.options();
  at::Tensor grad_x = at::empty_like(x_gates_in);  // the layout the fake kernel promises
  if (d.B * d.H * d.R * d.W == 0) {
    grad_x.zero_();
    return {grad_x, like_layout(at::zeros(w_ss_in.sizes(), opts), w_ss_in)};
  }
  const int64_t B = d.B, W = d.W, BW = B * W, G = d.G, H = d.H, R = d.R;
  const at::Tensor wflat = flat_weights(w_ss_in);
  const at::Tensor wflat_t = wflat.t().contiguous();
  at::Tensor gwflat = at::zeros({G, 3 * H}, opts);
  at::Tensor xrow = at::empty({G, BW}, opts), ghrow = at::empty({H, BW}, opts),
             gcrow = at::empty({H, BW}, opts), hprev = at::empty({H, BW}, opts),
             crow = at::empty({H, BW}, opts), cprev = at::zeros({H, BW}, opts);
  at::Tensor dp = at::empty({G, BW}, opts), dp_next = at::empty({G, BW}, opts);
  at::Tensor hcol = at::empty({3 * H, BW}, opts);
  at::Tensor pre = at::empty({G, BW}, opts);
  at::Tensor q = at::empty({3 * H, BW}, opts);
  at::Tensor dcar = at::zeros({H, BW}, opts);
  gather_row(crow, c_in, R - 1);
  for (int64_t r = R - 1; r >= 0; --r) {
    if (r < R - 1) at::mm_out(q, wflat_t, dp_next);  // the gradient reaching h(r)
    gather_row(xrow, x_gates_in, r);
    gather_row(ghrow, grad_h_in, r);
    gather_row(gcrow, grad_c_in, r);
    if (r > 0) {
      gather_row(hprev, h_in, r - 1);
      gather_row(cprev, c_in, r - 1);
    } else {
      cprev.zero_();
    }
    AT_DISPATCH_FLOATING_TYPES(xrow.scalar_type(), "row_lstm_scan_backward_cpu", [&] {
      const scalar_t* hpp = hprev.data_ptr<scalar_t>();
      scalar_t* hcolp = hcol.data_ptr<scalar_t>();
      if (r > 0) {
        at::parallel_for(0, H, unit_grain(BW), [&](int64_t begin, int64_t end) {
          for (int64_t u = begin; u < end; ++u) {
            fill_hcol<scalar_t>(hpp + u * BW, hcolp + u * BW, H * BW, B, W);
          }
        });
        at::mm_out(pre, wflat, hcol);
      } else {
        pre.zero_();  // row 0 has no state input
      }
      const scalar_t* ghp = ghrow.data_ptr<scalar_t>();
      const scalar_t* gcp = gcrow.data_ptr<scalar_t>();
      const scalar_t* xp = xrow.data_ptr<scalar_t>();
      const scalar_t* prep = pre.data_ptr<scalar_t>();
      const scalar_t* cp = crow.data_ptr<scalar_t>();
      const scalar_t* cpp = cprev.data_ptr<scalar_t>();
      const scalar_t* qp = q.data_ptr<scalar_t>();
      scalar_t* dcarp = dcar.data_ptr<scalar_t>();
      scalar_t* dpp = dp.data_ptr<scalar_t>();
      at::parallel_for(0, H, unit_grain(BW), [&](int64_t begin, int64_t end) {
        std::vector<scalar_t> tmp(BW);
        for (int64_t u = begin; u < end; ++u) {
          backward_row<scalar_t>(ghp + u * BW, gcp + u * BW, xp + u * BW, prep + u * BW,
                                 H * BW, cp + u * BW, cpp + u * BW,
                                 r < R - 1 ? qp + u * BW : nullptr, dcarp + u * BW,
                                 dpp + u * BW, tmp.data(), B, W);
        }
      });
    });
    if (r > 0) gwflat.addmm_(dp, hcol.t());
    scatter_row(grad_x, r, dp);
    std::swap(dp, dp_next);
    std::swap(crow, cprev);  // c(r - 1) is the next row's c
  }
  // Wflat layout (G, [k, u]) -> (G, H, 3).
  at::Tensor grad_w = gwflat.view({G, 3, H}).permute({0, 2, 1}).contiguous();
  return {grad_x, like_layout(grad_w, w_ss_in)};
}

}  // namespace
}  // namespace cpu
}  // namespace pixelar

TORCH_LIBRARY_IMPL(pixelar, CPU, m) {
  m.impl("row_lstm_scan", &pixelar::cpu::row_lstm_scan_cpu);
  m.impl("row_lstm_scan_backward", &pixelar::cpu::row_lstm_scan_backward_cpu);
}
