// CPU kernels of pixelar::diagonal_lstm_scan and its backward (semantics: the docstring of
// pixelar/ops/diagonal_lstm_scan.py).
//
// One batch element per task (at::parallel_for over the batch). Per skewed column j, the
// rows inside the image are r0..r1; row r's state-to-state input is the 2H vector
// [h(r-1, j-1); h(r, j-1)], which the kernels keep contiguous in a position-major buffer
//   hp[(r + 1) * H + u] = h[u, r, j - 1],   hp[0..H) = 0 (the row above row 0),
// so the 4H x 2H product per row is a loop of broadcast-multiply-adds over contiguous
// gates, fused with the cell update (pixelar/lstm_math.h) in the same pass.
// The backward walks the columns in reverse, recomputes the pre-activations from x_gates
// and the saved h, and accumulates grad_w_ss per batch element (summed at the end, in a
// fixed order, so results do not depend on the thread count).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <tuple>
#include <vector>

#include "kernel_common.h"
#include "lstm_loops.h"
#include "scan_checks.h"

namespace pixelar {
namespace cpu {
namespace {

constexpr const char* kOp = "pixelar::diagonal_lstm_scan";
constexpr const char* kOpBwd = "pixelar::diagonal_lstm_scan_backward";

struct Dims {
  int64_t H, G, R, S, W;  // G = 4H gates, S = R + W - 1 skewed columns
};

// pre[g] = x[g, r, j] + sum_k wcatT[k][g] * hcat[k], k < 2H. x points at x[0, r, j].
template <typename T>
PIXELAR_INLINE void pre_activations(const T* __restrict x, int64_t x_gate_stride,
                            const T* __restrict wcatT, const T* __restrict hcat, int64_t G,
                            int64_t K, T* __restrict pre) {
  for (int64_t g = 0; g < G; ++g) pre[g] = x[g * x_gate_stride];
  for (int64_t k = 0; k < K; ++k) {
    const T hk = hcat[k];
    const T* __restrict wk = wcatT + k * G;
    for (int64_t g = 0; g < G; ++g) pre[g] += wk[g] * hk;
  }
}

// Forward of one batch element. x: (G, R, S); wcatT: (2H, G), wcatT[k][g] = w_ss[g, k, 0]
// for k < H (row above) and w_ss[g, k - H, 1] for k >= H (same row); h, c: (H, R, S).
// Scratch: hp ((R + 1) * H), cp (R * H), pre (G), cnew (H); zeros: H zeros.
template <typename T>
PIXELAR_SIMD_CLONES void forward_one(const T* x, const T* wcatT, T* h, T* c, Dims d, T* hp,
                                     T* cp, T* pre, T* cnew, const T* zeros) {
  const int64_t H = d.H, G = d.G, R = d.R, S = d.S, W = d.W, RS = R * S;
  std::fill(hp, hp + (R + 1) * H, T(0));
  std::fill(cp, cp + R * H, T(0));
  for (int64_t j = 0; j < S; ++j) {
    const int64_t r0 = std::max<int64_t>(0, j - W + 1), r1 = std::min<int64_t>(R - 1, j);
    // Descending rows: row r reads hp rows r and r + 1 (column j - 1) and then overwrites
    // row r + 1 with column j; row r - 1, next, reads only rows r - 1 and r.
    for (int64_t r = r1; r >= r0; --r) {
      pre_activations(x + r * S + j, RS, wcatT, hp + r * H, G, 2 * H, pre);
      T* crow = cp + r * H;  // c(r, j - 1) in, c(r, j) out
      lstm_forward_loop<T>(pre, pre + H, pre + 2 * H, pre + 3 * H, zeros, zeros, zeros, zeros,
                           crow, cnew, hp + (r + 1) * H, H);
      std::copy(cnew, cnew + H, crow);
    }
    // Write column j of the outputs, zero outside the image.
    for (int64_t r = 0; r < R; ++r) {
      const bool inside = r >= r0 && r <= r1;
      const T* hrow = hp + (r + 1) * H;
      const T* crow = cp + r * H;
      T* ho = h + r * S + j;
      T* co = c + r * S + j;
      for (int64_t u = 0; u < H; ++u) {
        ho[u * RS] = inside ? hrow[u] : T(0);
        co[u * RS] = inside ? crow[u] : T(0);
      }
    }
    // Row r0 - 1 left the image at column j - 1: its state is zero from column j on.
    if (r0 > 0) {
      std::fill(hp + r0 * H, hp + (r0 + 1) * H, T(0));
      std::fill(cp + (r0 - 1) * H, cp + r0 * H, T(0));
    }
  }
}

// Backward of one batch element. gh, gc, x, h, c as in forward_one (gh, gc: (H, R, S));
// wcat: (G, 2H), the transpose of wcatT. Writes gx: (G, R, S) and gw: (G, 2H) (same layout
// as wcat). Scratch: hp ((R + 1) * H), dcr (R * H), dp_next and dp_cur ((R + 1) * G),
// pre (G), dh (H), dc (H), cprev (H), ccur (H), zeros (H).
template <typename T>
PIXELAR_SIMD_CLONES void backward_one(const T* gh, const T* gc, const T* x, const T* wcatT,
                                      const T* wcat, const T* h, const T* c, T* gx, T* gw,
                                      Dims d, T* scratch) {
  const int64_t H = d.H, G = d.G, R = d.R, S = d.S, W = d.W, RS = R * S, K = 2 * H;
  T* hp = scratch;
  T* dcr = hp + (R + 1) * H;
  T* dp_next = dcr + R * H;
  T* dp_cur = dp_next + (R + 1) * G;
  T* pre = dp_cur + (R + 1) * G;
  T* dh = pre + G;
  T* dc = dh + H;
  T* cprev = dc + H;
  T* ccur = cprev + H;
  T* zeros = ccur + H;
  std::fill(zeros, zeros + H, T(0));
  std::fill(dcr, dcr + R * H, T(0));
  std::fill(dp_next, dp_next + (R + 1) * G, T(0));
  std::fill(gw, gw + G * K, T(0));
  std::fill(hp, hp + H, T(0));
  for (int64_t j = S - 1; j >= 0; --j) {
    const int64_t r0 = std::max<int64_t>(0, j - W + 1), r1 = std::min<int64_t>(R - 1, j);
    // hp rows 1..R: h at column j - 1 (zero outside the image, as saved).
    for (int64_t r = 0; r < R; ++r) {
      T* hrow = hp + (r + 1) * H;
      if (j == 0) {
        std::fill(hrow, hrow + H, T(0));
      } else {
        const T* hs = h + r * S + (j - 1);
        for (int64_t u = 0; u < H; ++u) hrow[u] = hs[u * RS];
      }
    }
    std::fill(dp_cur, dp_cur + (R + 1) * G, T(0));
    for (int64_t r = r0; r <= r1; ++r) {
      const T* hcat = hp + r * H;
      pre_activations(x + r * S + j, RS, wcatT, hcat, G, K, pre);
      // dh = grad_h + the gradient from column j + 1, whose rows r + 1 (this position is
      // their row above) and r (same row) read h(r, j): w0^T dp(r + 1) + w1^T dp(r).
      const int64_t off = r * S + j;
      for (int64_t u = 0; u < H; ++u) {
        dh[u] = gh[u * RS + off];
        dc[u] = gc[u * RS + off];
        ccur[u] = c[u * RS + off];
        cprev[u] = j > 0 ? c[u * RS + off - 1] : T(0);
      }
      const T* __restrict dpa = dp_next + (r + 1) * G;
      const T* __restrict dps = dp_next + r * G;
      for (int64_t g = 0; g < G; ++g) {
        const T a = dpa[g], s = dps[g];
        const T* __restrict w0 = wcat + g * K;
        const T* __restrict w1 = w0 + H;
        T* __restrict dhr = dh;
        for (int64_t u = 0; u < H; ++u) dhr[u] += w0[u] * a + w1[u] * s;
      }
      T* dpi = dp_cur + r * G;
      lstm_backward_loop<T>(pre, pre + H, pre + 2 * H, pre + 3 * H, zeros, zeros, zeros, zeros,
                            cprev, ccur, dh, dc, dcr + r * H, dpi, dpi + H, dpi + 2 * H,
                            dpi + 3 * H, H);
      // grad_w += dpre (outer) [h(r-1, j-1); h(r, j-1)].
      for (int64_t g = 0; g < G; ++g) {
        const T dg = dpi[g];
        T* __restrict gwg = gw + g * K;
        const T* __restrict hc = hcat;
        for (int64_t k = 0; k < K; ++k) gwg[k] += dg * hc[k];
      }
    }
    // Rows outside the image at column j: no gradient, and no carry to column j - 1.
    for (int64_t r = 0; r < R; ++r) {
      const bool inside = r >= r0 && r <= r1;
      if (!inside) std::fill(dcr + r * H, dcr + (r + 1) * H, T(0));
      const T* dprow = dp_cur + r * G;  // zero when outside
      T* gxo = gx + r * S + j;
      for (int64_t g = 0; g < G; ++g) gxo[g * RS] = dprow[g];
    }
    std::swap(dp_next, dp_cur);
  }
}

Dims check_inputs(const char* op, const at::Tensor& x_gates, const at::Tensor& w_ss) {
  const int64_t H = check_scan_inputs(op, x_gates, w_ss, 2, "(B, 4H, R, S)", "(4H, H, 2)");
  const int64_t G = 4 * H, R = x_gates.size(2), S = x_gates.size(3);
  TORCH_CHECK(S >= R, op, ": x_gates must be a skewed map with S = R + W - 1 >= R columns "
              "(W >= 1), got R = ", R, ", S = ", S);
  return Dims{H, G, R, S, S - R + 1};
}

// (G, H, 2) -> wcatT (2H, G) and wcat (G, 2H), both contiguous.
std::pair<at::Tensor, at::Tensor> concat_weights(const at::Tensor& w_ss) {
  at::Tensor wcat = w_ss.permute({0, 2, 1}).reshape({w_ss.size(0), 2 * w_ss.size(1)})
                        .contiguous();
  return {wcat.t().contiguous(), wcat};
}

std::tuple<at::Tensor, at::Tensor> diagonal_lstm_scan_cpu(const at::Tensor& x_gates_in,
                                                          const at::Tensor& w_ss_in) {
  const at::AutoDispatchBelowADInplaceOrView below_autograd;  // plain ATen calls inside
  const Dims d = check_inputs(kOp, x_gates_in, w_ss_in);
  const at::Tensor x_gates = x_gates_in.contiguous();
  const int64_t B = x_gates.size(0);
  at::Tensor h = at::empty({B, d.H, d.R, d.S}, x_gates.options());
  at::Tensor c = at::empty_like(h);
  if (h.numel() == 0) return {h, c};
  const at::Tensor wcatT = concat_weights(w_ss_in).first;
  AT_DISPATCH_FLOATING_TYPES(x_gates.scalar_type(), "diagonal_lstm_scan_cpu", [&] {
    const scalar_t* xp = x_gates.data_ptr<scalar_t>();
    const scalar_t* wp = wcatT.data_ptr<scalar_t>();
    scalar_t* hp = h.data_ptr<scalar_t>();
    scalar_t* cp = c.data_ptr<scalar_t>();
    const int64_t x_stride = d.G * d.R * d.S, h_stride = d.H * d.R * d.S;
    at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> scratch((d.R + 1) * d.H + d.R * d.H + d.G + 2 * d.H);
      scalar_t* s_hp = scratch.data();
      scalar_t* s_cp = s_hp + (d.R + 1) * d.H;
      scalar_t* s_pre = s_cp + d.R * d.H;
      scalar_t* s_cnew = s_pre + d.G;
      scalar_t* s_zeros = s_cnew + d.H;
      std::fill(s_zeros, s_zeros + d.H, scalar_t(0));
      for (int64_t b = begin; b < end; ++b) {
        forward_one<scalar_t>(xp + b * x_stride, wp, hp + b * h_stride, cp + b * h_stride, d,
                              s_hp, s_cp, s_pre, s_cnew, s_zeros);
      }
    });
  });
  return {h, c};
}

std::tuple<at::Tensor, at::Tensor> diagonal_lstm_scan_backward_cpu(
    const at::Tensor& grad_h_in, const at::Tensor& grad_c_in, const at::Tensor& x_gates_in,
    const at::Tensor& w_ss_in, const at::Tensor& h_in, const at::Tensor& c_in) {
  const at::AutoDispatchBelowADInplaceOrView below_autograd;  // plain ATen calls inside
  const Dims d = check_inputs(kOpBwd, x_gates_in, w_ss_in);
  const int64_t B = x_gates_in.size(0);
  check_scan_states(kOpBwd, x_gates_in, {B, d.H, d.R, d.S}, "(B, H, R, S)", grad_h_in,
                    grad_c_in, h_in, c_in);
  const at::Tensor x_gates = x_gates_in.contiguous(), grad_h = grad_h_in.contiguous(),
                   grad_c = grad_c_in.contiguous(), h = h_in.contiguous(),
                   c = c_in.contiguous();
  at::Tensor grad_x = at::empty(x_gates.sizes(), x_gates.options());
  at::Tensor grad_w = at::zeros(w_ss_in.sizes(), x_gates.options());
  if (grad_x.numel() == 0 || d.H == 0) {
    grad_x.zero_();
    return {like_layout(grad_x, x_gates_in), like_layout(grad_w, w_ss_in)};
  }
  const auto [wcatT, wcat] = concat_weights(w_ss_in);
  const int64_t K = 2 * d.H;
  at::Tensor gw_per_batch = at::empty({B, d.G, K}, x_gates.options());
  AT_DISPATCH_FLOATING_TYPES(x_gates.scalar_type(), "diagonal_lstm_scan_backward_cpu", [&] {
    const scalar_t* ghp = grad_h.data_ptr<scalar_t>();
    const scalar_t* gcp = grad_c.data_ptr<scalar_t>();
    const scalar_t* xp = x_gates.data_ptr<scalar_t>();
    const scalar_t* wtp = wcatT.data_ptr<scalar_t>();
    const scalar_t* wp = wcat.data_ptr<scalar_t>();
    const scalar_t* hp = h.data_ptr<scalar_t>();
    const scalar_t* cp = c.data_ptr<scalar_t>();
    scalar_t* gxp = grad_x.data_ptr<scalar_t>();
    scalar_t* gwp = gw_per_batch.data_ptr<scalar_t>();
    const int64_t x_stride = d.G * d.R * d.S, h_stride = d.H * d.R * d.S;
    at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> scratch((d.R + 1) * d.H + d.R * d.H + 2 * (d.R + 1) * d.G + d.G +
                                    5 * d.H);
      for (int64_t b = begin; b < end; ++b) {
        backward_one<scalar_t>(ghp + b * h_stride, gcp + b * h_stride, xp + b * x_stride, wtp,
                               wp, hp + b * h_stride, cp + b * h_stride, gxp + b * x_stride,
                               gwp + b * d.G * K, d, scratch.data());
      }
    });
  });
  // (B, G, [k, u]) summed over the batch -> (G, H, 2).
  grad_w = gw_per_batch.sum(0).view({d.G, 2, d.H}).permute({0, 2, 1}).contiguous();
  return {like_layout(grad_x, x_gates_in), like_layout(grad_w, w_ss_in)};
}

}  // namespace
}  // namespace cpu
}  // namespace pixelar

TORCH_LIBRARY_IMPL(pixelar, CPU, m) {
  m.impl("diagonal_lstm_scan", &pixelar::cpu::diagonal_lstm_scan_cpu);
  m.impl("diagonal_lstm_scan_backward", &pixelar::cpu::diagonal_lstm_scan_backward_cpu);
}
