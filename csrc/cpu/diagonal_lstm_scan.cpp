// CPU kernels of pixelar::diagonal_lstm_scan and its backward (semantics: the docstring of
// pixelar/ops/diagonal_lstm_scan.py).
//
// One batch element per task (at::parallel_for over the batch). Per skewed column j, the
// rows inside the image are r0..r1 (the same for every batch element). The column's state
// is kept unit-major, one contiguous run of rows per unit:
//   hb[u * Rp + r + 1] = h[u, r, j - 1],   hb[u * Rp + 0] = 0 (the row above row 0),
// so the state-to-state products of a whole column are one small matrix product
//   pre (4H, rows) += wcat (4H, 2H) @ [hb rows r - 1; hb rows r] (2H, rows),
// vectorized along the rows with the sums in registers (rows_gemm, lstm_loops.h), and the
// cell update runs on vectors of rows too. Rows outside the image are never computed; the
// outputs are zero there.
// The backward walks the columns in reverse, recomputes the pre-activations from x_gates
// and the saved h, gets the gradient reaching h(r, j) from column j + 1 as a second product
//   dh (H, rows) += wT2 (H, 8H) @ [dpre rows r + 1 (column j + 1); dpre rows r],
// and, after the walk, grad_w_ss from products of the rows of grad_x with the rows of h
// shifted by one column (same row) and by one row and one column (row above), per batch
// element (summed at the end, in a fixed order, so results do not depend on the thread
// count).
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
#include "pixelar/checks.h"

namespace pixelar {
namespace cpu {
namespace {

constexpr const char* kOp = "pixelar::diagonal_lstm_scan";
constexpr const char* kOpBwd = "pixelar::diagonal_lstm_scan_backward";

struct Dims {
  int64_t H, G, R, S, W;  // G = 4H gates, S = R + W - 1 skewed columns
  int64_t xb, xg, xr, xj;  // strides of x_gates (any layout is read in place; the layers
                           // pass (B, S, 4H, R) memory order, where a column's rows are
                           // contiguous)
  int64_t gg = 0, gr = 0, gj = 0;  // strides of grad_x (backward)
};

// Row stride of the unit-major column buffers: rows 0..R at 1..R+1 plus room for a whole
// vector of spare lanes at either end, in whole vectors.
template <typename T>
int64_t row_stride(int64_t R) {
  constexpr int64_t L = simd::Vec<T>::lanes;
  return ceil_div(R + 2 + 2 * L, L) * L;
}

template <typename T>
PIXELAR_HOST_DEVICE_INLINE int64_t whole_vectors(int64_t n) {
  constexpr int64_t L = simd::Vec<T>::lanes;
  return ceil_div(n, L) * L;
}

// Rows r0..r1 of skewed column j inside the image.
PIXELAR_HOST_DEVICE_INLINE void column_rows(const Dims& d, int64_t j, int64_t* r0, int64_t* r1) {
  *r0 = std::max<int64_t>(0, j - d.W + 1);
  *r1 = std::min<int64_t>(d.R - 1, j);
}

// std::copy(first, last, dst) inline: the runs here are a column's rows (tens of values),
// where a call of memmove per run costs more than the copy.
template <typename T>
PIXELAR_HOST_DEVICE_INLINE
void copy_run(const T* __restrict first, const T* last, T* __restrict dst) {
  const int64_t n = last - first;
  for (int64_t t = 0; t < n; ++t) dst[t] = first[t];
}

// dst[t] = src[t * stride], t < n.
template <typename T>
PIXELAR_HOST_DEVICE_INLINE void gather(T* __restrict dst, const T* __restrict src, int64_t stride,
                                       int64_t n) {
  for (int64_t t = 0; t < n; ++t) dst[t] = src[t * stride];
}

// dst[t * stride] = src[t], t < n.
template <typename T>
PIXELAR_HOST_DEVICE_INLINE void scatter(T* __restrict dst, int64_t stride, const T* __restrict src,
                                        int64_t n) {
  for (int64_t t = 0; t < n; ++t) dst[t * stride] = src[t];
}

// pre[g * Rp + r + 1] = x[g, r, j] + (wcat @ [h(r - 1, j - 1); h(r, j - 1)])[g] for rows
// r0 <= r < r0 + n (and scratch beyond, up to whole vectors). x points at x[0, 0, j] (strides
// d.xg, d.xr); hb as above. brow: 2H pointers of scratch.
template <typename T>
PIXELAR_HOST_DEVICE_INLINE
void column_pre_activations(const T* x, const T* wcat, const T* hb, T* pre,
                            const Dims& d, int64_t Rp, int64_t r0, int64_t n,
                            const T** brow) {
  const int64_t H = d.H, G = d.G, lo = r0 + 1;
  if (d.xr == 1) {
    for (int64_t g = 0; g < G; ++g)
      copy_run(x + g * d.xg + r0, x + g * d.xg + r0 + n, pre + g * Rp + lo);
  } else {
    for (int64_t g = 0; g < G; ++g) gather(pre + g * Rp + lo, x + g * d.xg + r0 * d.xr, d.xr, n);
  }
  for (int64_t u = 0; u < H; ++u) {
    brow[u] = hb + u * Rp + lo - 1;  // the row above
    brow[H + u] = hb + u * Rp + lo;  // the same row
  }
  rows_gemm<T>(pre + lo, Rp, wcat, 2 * H, G, brow, 2 * H, n);
}

template <typename T>
int64_t forward_scratch(const Dims& d) {
  return (2 * d.H + d.G + 3) * row_stride<T>(d.R);
}

// Forward of one batch element. x: (G, R, S); wcat: (G, 2H), wcat[g][k] = w_ss[g, k, 0]
// for k < H (row above) and w_ss[g, k - H, 1] for k >= H (same row); h, c: (H, R, S).
// buf: forward_scratch(d) values; brow: 2H pointers.
template <typename T>
PIXELAR_SIMD_CLONES void forward_one(const T* x, const T* wcat, T* h, T* c, Dims d, T* buf,
                                     const T** brow) {
  const int64_t H = d.H, R = d.R, S = d.S, RS = R * S, Rp = row_stride<T>(R);
  T* hb = buf;             // h(r, j - 1) at row r + 1, zero above row 0
  T* cb = hb + H * Rp;     // c(r, j - 1) at row r + 1
  T* pre = cb + H * Rp;
  T* cnew = pre + d.G * Rp;
  T* hnew = cnew + Rp;
  T* zeros = hnew + Rp;
  std::fill(buf, buf + forward_scratch<T>(d), T(0));
  std::fill(h, h + H * RS, T(0));
  std::fill(c, c + H * RS, T(0));
  for (int64_t j = 0; j < S; ++j) {
    int64_t r0, r1;
    column_rows(d, j, &r0, &r1);
    const int64_t n = r1 - r0 + 1, lo = r0 + 1, nv = whole_vectors<T>(n);
    // Every row's pre-activations from column j - 1 first; then the cells overwrite hb.
    // (A row entering the image finds its state from column j - 1 still zero; a row that
    // left is never read again: row r0 reads row r0 - 1, which was inside at j - 1.)
    column_pre_activations(x + j * d.xj, wcat, hb, pre, d, Rp, r0, n, brow);
    for (int64_t u = 0; u < H; ++u) {
      T* hu = hb + u * Rp + lo;
      T* cu = cb + u * Rp + lo;
      lstm_forward_loop<T>(pre + u * Rp + lo, pre + (H + u) * Rp + lo,
                           pre + (2 * H + u) * Rp + lo, pre + (3 * H + u) * Rp + lo, zeros,
                           zeros, zeros, zeros, cu, cnew, hnew, nv);
      copy_run(cnew, cnew + n, cu);
      copy_run(hnew, hnew + n, hu);
      scatter(h + u * RS + r0 * S + j, S, hnew, n);
      scatter(c + u * RS + r0 * S + j, S, cnew, n);
    }
  }
}

template <typename T>
int64_t backward_scratch(const Dims& d) {
  return (6 * d.H + 3 * d.G + 6) * row_stride<T>(d.R);
}

// Backward of one batch element. gh, gc, x, h, c as in forward_one (gh, gc: (H, R, S));
// wcat as in forward_one; wT2: (H, 2G), wT2[u][g] = wcat[g][u], wT2[u][G + g] =
// wcat[g][H + u]. Writes grad_x inside the image into gx_out (the strides of x, d.x*; zero
// elsewhere is the caller's) and into gx: (G, R, S) contiguous scratch (zero outside the
// image), and gw: (G, 2H) (the layout of wcat). buf: backward_scratch(d) values; brow: 2G
// pointers.
template <typename T>
PIXELAR_SIMD_CLONES void backward_one(const T* gh, const T* gc, const T* x, const T* wcat,
                                      const T* wT2, const T* h, const T* c, T* gx_out,
                                      T* gx, T* gw, Dims d, T* buf, const T** brow) {
  const int64_t H = d.H, G = d.G, R = d.R, S = d.S, RS = R * S, K = 2 * H;
  const int64_t Rp = row_stride<T>(R);
  T* hb = buf;                // h(r, j - 1) at row r + 1, zero above row 0
  T* dcr = hb + H * Rp;       // gradient reaching c(r, j) from column j + 1
  T* dh = dcr + H * Rp;       // gradient reaching h(r, j)
  T* cpv = dh + H * Rp;       // c(r, j - 1)
  T* ccur = cpv + H * Rp;     // c(r, j)
  T* gcb = ccur + H * Rp;     // grad_c(r, j)
  T* pre = gcb + H * Rp;
  T* dp_next = pre + G * Rp;  // d pre at column j + 1, zero outside the image
  T* dp_cur = dp_next + G * Rp;
  T* carry = dp_cur + G * Rp;  // one run each: carry and the four gates' d pre
  T* di = carry + Rp;
  T* df = di + Rp;
  T* d_o = df + Rp;
  T* dg = d_o + Rp;
  T* zeros = dg + Rp;
  std::fill(buf, buf + backward_scratch<T>(d), T(0));
  std::fill(gx, gx + G * RS, T(0));
  for (int64_t j = S - 1; j >= 0; --j) {
    int64_t r0, r1;
    column_rows(d, j, &r0, &r1);
    const int64_t n = r1 - r0 + 1, lo = r0 + 1, nv = whole_vectors<T>(n);
    // h at column j - 1, rows r0 - 1 .. r1, and c (zero outside the image, as saved; zero
    // left of column 0); c, grad_c and grad_h at column j.
    const int64_t ra = std::max<int64_t>(0, r0 - 1);
    for (int64_t u = 0; u < H; ++u) {
      T* hu = hb + u * Rp;
      T* cu = cpv + u * Rp + lo;
      if (j == 0) {
        std::fill(hu + ra + 1, hu + r1 + 2, T(0));
        std::fill(cu, cu + n, T(0));
      } else {
        gather(hu + ra + 1, h + u * RS + ra * S + j - 1, S, r1 - ra + 1);
        gather(cu, c + u * RS + r0 * S + j - 1, S, n);
      }
      const int64_t off = u * RS + r0 * S + j;
      gather(ccur + u * Rp + lo, c + off, S, n);
      gather(gcb + u * Rp + lo, gc + off, S, n);
      gather(dh + u * Rp + lo, gh + off, S, n);
    }
    column_pre_activations(x + j * d.xj, wcat, hb, pre, d, Rp, r0, n, brow);
    // dh(r) += w0^T dp(r + 1, j + 1) + w1^T dp(r, j + 1): column j + 1's rows r + 1 (this
    // position is their row above) and r (same row) read h(r, j).
    for (int64_t g = 0; g < G; ++g) {
      brow[g] = dp_next + g * Rp + lo + 1;
      brow[G + g] = dp_next + g * Rp + lo;
    }
    rows_gemm<T>(dh + lo, Rp, wT2, 2 * G, H, brow, 2 * G, n);
    std::fill(dp_cur, dp_cur + G * Rp, T(0));
    for (int64_t u = 0; u < H; ++u) {
      const int64_t o = u * Rp + lo;
      copy_run(dcr + o, dcr + o + n, carry);
      lstm_backward_loop<T>(pre + o, pre + H * Rp + o, pre + 2 * H * Rp + o,
                            pre + 3 * H * Rp + o, zeros, zeros, zeros, zeros, cpv + o,
                            ccur + o, dh + o, gcb + o, carry, di, df, d_o, dg, nv);
      copy_run(carry, carry + n, dcr + o);
      copy_run(di, di + n, dp_cur + o);
      copy_run(df, df + n, dp_cur + H * Rp + o);
      copy_run(d_o, d_o + n, dp_cur + 2 * H * Rp + o);
      copy_run(dg, dg + n, dp_cur + 3 * H * Rp + o);
    }
    for (int64_t g = 0; g < G; ++g) {
      const T* dpg = dp_cur + g * Rp + lo;
      scatter(gx + g * RS + r0 * S + j, S, dpg, n);
      T* out = gx_out + g * d.gg + r0 * d.gr + j * d.gj;
      if (d.gr == 1) {
        copy_run(dpg, dpg + n, out);
      } else {
        scatter(out, d.gr, dpg, n);
      }
    }
    std::swap(dp_next, dp_cur);
  }
  // grad_w[g][u] = sum over positions of grad_x[g] times h[u] one row and one column back
  // (u < H), or one column back (same row). With flat positions p = r * S + j these are
  // shifts by S + 1 and 1; h is zero outside the image (column S - 1 of every row but the
  // last included) and grad_x is zero there too, so the flat shift needs no masking.
  std::fill(gw, gw + G * K, T(0));
  if (RS > S + 1) row_dots<T>(gw, K, gx + S + 1, RS, G, h, RS, H, RS - S - 1);
  if (RS > 1) row_dots<T>(gw + H, K, gx + 1, RS, G, h, RS, H, RS - 1);
}

Dims check_inputs(const char* op, const at::Tensor& x_gates, const at::Tensor& w_ss) {
  const int64_t H = checks::check_scan_inputs(op, x_gates, w_ss, 2, "(B, 4H, R, S)",
                                                   "(4H, H, 2)", checks::kCpu);
  const int64_t G = 4 * H, R = x_gates.size(2), S = x_gates.size(3);
  TORCH_CHECK(S >= R, op, ": x_gates must be a skewed map with S = R + W - 1 >= R columns "
              "(W >= 1), got R = ", R, ", S = ", S);
  return Dims{H, G, R, S, S - R + 1, x_gates.stride(0), x_gates.stride(1), x_gates.stride(2),
              x_gates.stride(3)};
}

// (G, H, 2) -> wcat (G, 2H): wcat[g][k] = w_ss[g, k, 0] (k < H), w_ss[g, k - H, 1] (k >= H).
at::Tensor concat_weights(const at::Tensor& w_ss) {
  return w_ss.permute({0, 2, 1}).reshape({w_ss.size(0), 2 * w_ss.size(1)}).contiguous();
}

std::tuple<at::Tensor, at::Tensor> diagonal_lstm_scan_cpu(const at::Tensor& x_gates_in,
                                                          const at::Tensor& w_ss_in) {
  const at::AutoDispatchBelowADInplaceOrView below_autograd;  // plain ATen calls inside
  const Dims d = check_inputs(kOp, x_gates_in, w_ss_in);  // x_gates read in place
  const at::Tensor& x_gates = x_gates_in;
  const int64_t B = x_gates.size(0);
  at::Tensor h = at::empty({B, d.H, d.R, d.S}, x_gates.options());
  at::Tensor c = at::empty_like(h);
  if (h.numel() == 0) return {h, c};
  const at::Tensor wcat = concat_weights(w_ss_in);
  AT_DISPATCH_FLOATING_TYPES(x_gates.scalar_type(), "diagonal_lstm_scan_cpu", [&] {
    const scalar_t* xp = x_gates.data_ptr<scalar_t>();
    const scalar_t* wp = wcat.data_ptr<scalar_t>();
    scalar_t* hp = h.data_ptr<scalar_t>();
    scalar_t* cp = c.data_ptr<scalar_t>();
    const int64_t x_stride = d.xb, h_stride = d.H * d.R * d.S;
    at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> scratch(forward_scratch<scalar_t>(d));
      std::vector<const scalar_t*> brow(2 * d.H);
      for (int64_t b = begin; b < end; ++b) {
        forward_one<scalar_t>(xp + b * x_stride, wp, hp + b * h_stride, cp + b * h_stride, d,
                              scratch.data(), brow.data());
      }
    });
  });
  return {h, c};
}

std::tuple<at::Tensor, at::Tensor> diagonal_lstm_scan_backward_cpu(
    const at::Tensor& grad_h_in, const at::Tensor& grad_c_in, const at::Tensor& x_gates_in,
    const at::Tensor& w_ss_in, const at::Tensor& h_in, const at::Tensor& c_in) {
  const at::AutoDispatchBelowADInplaceOrView below_autograd;  // plain ATen calls inside
  Dims d = check_inputs(kOpBwd, x_gates_in, w_ss_in);
  const int64_t B = x_gates_in.size(0);
  checks::check_scan_states(kOpBwd, x_gates_in, {B, d.H, d.R, d.S}, "(B, H, R, S)",
                            grad_h_in, grad_c_in, h_in, c_in, checks::kCpu);
  const at::Tensor& x_gates = x_gates_in;  // read in place (strides in d)
  const at::Tensor grad_h = grad_h_in.contiguous(),
                   grad_c = grad_c_in.contiguous(), h = h_in.contiguous(),
                   c = c_in.contiguous();
  // grad_x in the layout of x_gates (what the fake kernel's empty_like promises), zero
  // outside the image.
  at::Tensor grad_x = at::zeros_like(x_gates);
  d.gg = grad_x.stride(1);
  d.gr = grad_x.stride(2);
  d.gj = grad_x.stride(3);
  at::Tensor grad_w = at::zeros(w_ss_in.sizes(), x_gates.options());
  if (grad_x.numel() == 0 || d.H == 0) return {grad_x, like_layout(grad_w, w_ss_in)};
  const at::Tensor wcat = concat_weights(w_ss_in);
  // wT2 (H, 2G): [w0^T | w1^T], the transposes of the row-above and same-row kernels.
  const at::Tensor wT2 = at::cat({wcat.narrow(1, 0, d.H).t(), wcat.narrow(1, d.H, d.H).t()}, 1)
                             .contiguous();
  const int64_t K = 2 * d.H;
  at::Tensor gw_per_batch = at::empty({B, d.G, K}, x_gates.options());
  AT_DISPATCH_FLOATING_TYPES(x_gates.scalar_type(), "diagonal_lstm_scan_backward_cpu", [&] {
    const scalar_t* ghp = grad_h.data_ptr<scalar_t>();
    const scalar_t* gcp = grad_c.data_ptr<scalar_t>();
    const scalar_t* xp = x_gates.data_ptr<scalar_t>();
    const scalar_t* wp = wcat.data_ptr<scalar_t>();
    const scalar_t* wt2p = wT2.data_ptr<scalar_t>();
    const scalar_t* hp = h.data_ptr<scalar_t>();
    const scalar_t* cp = c.data_ptr<scalar_t>();
    scalar_t* gxp = grad_x.data_ptr<scalar_t>();
    scalar_t* gwp = gw_per_batch.data_ptr<scalar_t>();
    const int64_t x_stride = d.xb, gx_stride = grad_x.stride(0), h_stride = d.H * d.R * d.S;
    at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> scratch(backward_scratch<scalar_t>(d));
      std::vector<scalar_t> gx_scratch(d.G * d.R * d.S);
      std::vector<const scalar_t*> brow(2 * d.G);
      for (int64_t b = begin; b < end; ++b) {
        backward_one<scalar_t>(ghp + b * h_stride, gcp + b * h_stride, xp + b * x_stride, wp,
                               wt2p, hp + b * h_stride, cp + b * h_stride, gxp + b * gx_stride,
                               gx_scratch.data(), gwp + b * d.G * K, d, scratch.data(),
                               brow.data());
      }
    });
  });
  // (B, G, [k, u]) summed over the batch -> (G, H, 2).
  grad_w = gw_per_batch.sum(0).view({d.G, 2, d.H}).permute({0, 2, 1}).contiguous();
  return {grad_x, like_layout(grad_w, w_ss_in)};
}

}  // namespace
}  // namespace cpu
}  // namespace pixelar

TORCH_LIBRARY_IMPL(pixelar, CPU, m) {
  m.impl("diagonal_lstm_scan", &pixelar::cpu::diagonal_lstm_scan_cpu);
  m.impl("diagonal_lstm_scan_backward", &pixelar::cpu::diagonal_lstm_scan_backward_cpu);
}
