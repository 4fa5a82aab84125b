// CPU kernels of pixelar::row_lstm_scan and its backward (semantics: the docstring of
// pixelar/ops/row_lstm_scan.py).
//
// The rows are sequential, but every batch element's scan is independent of the others: the
// batch is cut into one contiguous slice per thread and each slice runs the whole scan on
// its own (one parallel region per call, no synchronization between rows; one thread when
// B = 1). Within a slice of Bs elements, every (batch, column) position of a row is
// independent, so the state-to-state 1 x 3 convolution of a row is one matrix product
// (row_product: a register-blocked float GEMM, small_gemm; torch's at::mm_out for double;
// single-threaded inside the region):
//   pre (4H, Bs*W) = Wflat (4H, 3H) @ hcol (3H, Bs*W),
//   Wflat[g][k*H + u] = w_ss[g, u, k],   hcol[k*H + u][b*W + w] = h[b, u, r-1, w+k-1]
// (zero where w+k-1 falls outside the row). Everything else (adding x_gates, the gates,
// the cell update, and writing next row's hcol) is one fused pass per row and hidden unit,
// vectorized along the row's Bs*W positions.
//
// Layout: each row of a slice is gathered, by plain loops in its thread, into small
// (C, Bs, W) buffers, so a row's data for one channel is one contiguous run of Bs*W values,
// and the row's results are scattered back to (B, C, R, W). In the (B, C, R, W) layout each
// (b, channel) row is a separate 4 KB-apart chunk of ~128 bytes: fused passes reading it
// directly touch some 16 such streams at once, each a cache and TLB miss. (An earlier
// version gathered rows with torch's copy_, ~10 dispatcher calls per row, a quarter of a
// Row LSTM training step, and split each row's pass over hidden units, a parallel region
// per row and product: on a busy machine the threads mostly spin-waited at those joins.)
//
// Backward of a slice, per row in reverse: Q = Wflat^T @ dpre(r+1) (the gradient reaching
// h(r)), hcol(r) from the saved h (B, H, R, W) directly, pre(r) = Wflat @ hcol(r)
// recomputed, the fused cell backward, and the slice's grad_Wflat += dpre(r) @ hcol(r)^T. The slices' grad_Wflat are summed in slice
// order (so grad_w's rounding depends on the thread count).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <initializer_list>
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
// the row above; x: gate k at x + k * xg; pre: gate k at pre + k * pg; q: Q's three rows
// for u at q + k * qg (nullptr for the last row); dcar: the carried dc (in: from row r + 1,
// out: to row r - 1). Writes the pre-activation gradients to gx (gate k at gx + k * gg).
// tmp: B*W scratch.
template <typename T>
PIXELAR_SIMD_CLONES void backward_row(const T* gh, const T* gc, const T* x, int64_t xg,
                                      const T* pre, int64_t pg, const T* c, const T* c_prev,
                                      const T* q, int64_t qg, T* dcar, T* gx, int64_t gg,
                                      T* tmp, int64_t B, int64_t W) {
  shifted_sum<T>(gh, q, qg, tmp, B, W);
  lstm_backward_loop<T>(x, x + xg, x + 2 * xg, x + 3 * xg, pre, pre + pg, pre + 2 * pg,
                        pre + 3 * pg, c_prev, c, tmp, gc, dcar, gx, gx + gg, gx + 2 * gg,
                        gx + 3 * gg, B * W);
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

// The batch slices: n = min(B, threads) slices, slice i = [i * B / n, (i + 1) * B / n).
int64_t num_slices(int64_t B) {
  return std::max<int64_t>(1, std::min<int64_t>(B, at::get_num_threads()));
}

// c (M, N) = a (M, K) @ b (K, N), float, row-major with leading dimensions lda, ldb, ldc:
// blocks of MR rows x NV 8-float vectors of c held in registers while k runs (a's entries
// broadcast, b's row k loaded once for the MR rows). Each entry is sum_k a[m][k] b[k][n]
// in k order, one fused multiply-add each.
template <int MR, int NV>
PIXELAR_HOST_DEVICE_INLINE void gemm_block(const float* a, int64_t lda, const float* b,
                                           int64_t ldb, float* c, int64_t ldc, int64_t K) {
  using simd::v8sf;
  v8sf acc[MR][NV] = {};
  for (int64_t k = 0; k < K; ++k) {
    v8sf bk[NV];
    for (int j = 0; j < NV; ++j) bk[j] = simd::load<v8sf>(b + k * ldb + 8 * j);
    for (int i = 0; i < MR; ++i) {
      const float aik = a[i * lda + k];
      for (int j = 0; j < NV; ++j) acc[i][j] += aik * bk[j];
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NV; ++j) simd::store(c + i * ldc + 8 * j, acc[i][j]);
}

// The state-to-state products of one row (forward: pre = Wflat @ hcol, (4H, 3H) @ (3H,
// Bs*W); backward: Q = Wflat^T @ dpre(r + 1)), some 750 per training step of a 7-layer Row
// LSTM, each small (64 x 48 x 224 at H = 16, B = 16, two slices): register-blocked here
// instead of a BLAS call per row: the 7-layer Row LSTM's training step (B = 16, 28 x 28, 2
// threads) took 62.9 / 61.3 ms against 65.9 / 64.9 ms with at::mm_out (min of 24 steps, one
// process alternating the two, twice). Float only (double keeps at::mm_out).
PIXELAR_SIMD_CLONES void small_gemm(const float* a, int64_t lda, const float* b, int64_t ldb,
                                    float* c, int64_t ldc, int64_t M, int64_t N, int64_t K) {
  int64_t n = 0;
  for (; n + 24 <= N; n += 24) {
    int64_t m = 0;
    for (; m + 4 <= M; m += 4)
      gemm_block<4, 3>(a + m * lda, lda, b + n, ldb, c + m * ldc + n, ldc, K);
    for (; m < M; ++m) gemm_block<1, 3>(a + m * lda, lda, b + n, ldb, c + m * ldc + n, ldc, K);
  }
  for (; n + 8 <= N; n += 8) {
    int64_t m = 0;
    for (; m + 4 <= M; m += 4)
      gemm_block<4, 1>(a + m * lda, lda, b + n, ldb, c + m * ldc + n, ldc, K);
    for (; m < M; ++m) gemm_block<1, 1>(a + m * lda, lda, b + n, ldb, c + m * ldc + n, ldc, K);
  }
  for (; n < N; ++n) {
    for (int64_t m = 0; m < M; ++m) {
      float acc = 0;
      for (int64_t k = 0; k < K; ++k) acc += a[m * lda + k] * b[k * ldb + n];
      c[m * ldc + n] = acc;
    }
  }
}

// out = a @ b for the row products: small_gemm for float, at::mm_out otherwise. a, b, out:
// 2-D with unit stride along their rows.
inline void row_product(at::Tensor& out, const at::Tensor& a, const at::Tensor& b) {
  if (out.scalar_type() == at::kFloat) {
    small_gemm(a.data_ptr<float>(), a.stride(0), b.data_ptr<float>(), b.stride(0),
               out.data_ptr<float>(), out.stride(0), out.size(0), out.size(1), a.size(1));
  } else {
    at::mm_out(out, a, b);
  }
}

// c (M, N) += a (M, K) @ b (N, K)^T, float, row-major with leading dimensions lda, ldb,
// ldc: blocks of MR rows of a x NR rows of b, each entry a dot product of two contiguous
// rows, MR x NR vectors of sums in registers while k runs (each a and b vector loaded once
// for the block), lane sums at the end.
template <int MR, int NR>
PIXELAR_HOST_DEVICE_INLINE void gemm_nt_block(const float* a, int64_t lda, const float* b,
                                              int64_t ldb, float* c, int64_t ldc, int64_t K) {
  using simd::v8sf;
  v8sf acc[MR][NR] = {};
  int64_t k = 0;
  for (; k + 8 <= K; k += 8) {
    v8sf av[MR], bv[NR];
    for (int i = 0; i < MR; ++i) av[i] = simd::load<v8sf>(a + i * lda + k);
    for (int j = 0; j < NR; ++j) bv[j] = simd::load<v8sf>(b + j * ldb + k);
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NR; ++j) acc[i][j] += av[i] * bv[j];
  }
  for (int i = 0; i < MR; ++i) {
    for (int j = 0; j < NR; ++j) {
      float sum = simd::reduce_add(acc[i][j]);
      for (int64_t t = k; t < K; ++t) sum += a[i * lda + t] * b[j * ldb + t];
      c[i * ldc + j] += sum;
    }
  }
}

// The weight gradient's products (grad_Wflat += dpre(r) @ hcol(r)^T, (4H, Bs*W) @ (Bs*W,
// 3H), one per row), accumulated row by row as the backward walks, so that dpre and hcol
// of a row are read while in cache. M = 4H and N = 3H: whole blocks of 4 x 3.
PIXELAR_SIMD_CLONES void small_gemm_nt_acc(const float* a, int64_t lda, const float* b,
                                           int64_t ldb, float* c, int64_t ldc, int64_t M,
                                           int64_t N, int64_t K) {
  TORCH_INTERNAL_ASSERT(M % 4 == 0 && N % 3 == 0, "small_gemm_nt_acc: M = 4H, N = 3H");
  for (int64_t m = 0; m < M; m += 4)
    for (int64_t n = 0; n < N; n += 3)
      gemm_nt_block<4, 3>(a + m * lda, lda, b + n * ldb, ldb, c + m * ldc + n, ldc, K);
}

// out += a @ b^T: small_gemm_nt_acc for float, addmm_ otherwise. a, b, out: 2-D with unit
// stride along their rows.
inline void row_product_nt_acc(at::Tensor& out, const at::Tensor& a, const at::Tensor& b) {
  if (out.scalar_type() == at::kFloat) {
    small_gemm_nt_acc(a.data_ptr<float>(), a.stride(0), b.data_ptr<float>(), b.stride(0),
                      out.data_ptr<float>(), out.stride(0), out.size(0), out.size(1),
                      a.size(1));
  } else {
    out.addmm_(a, b.t());
  }
}

// f(i) for every slice i, in parallel (one slice per thread).
template <typename F>
void for_each_slice(int64_t n, const F& f) {
  if (n == 1) {  // no region: the products may use torch's threads
    f(0);
    return;
  }
  at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
    const at::AutoDispatchBelowADInplaceOrView below_autograd;  // thread-local: per thread
    for (int64_t i = begin; i < end; ++i) f(i);
  });
}

// Row r of batch elements [b0, b0 + Bs) of t (B, C, R, W), any strides, into buf
// (C, Bs*W) (contiguous): runs of W values.
template <typename T>
void gather_row(T* __restrict buf, const at::Tensor& t, int64_t b0, int64_t Bs, int64_t r) {
  const int64_t C = t.size(1), W = t.size(3), BW = Bs * W;
  const int64_t sb = t.stride(0), sc = t.stride(1), sw = t.stride(3);
  const T* base = t.const_data_ptr<T>() + b0 * sb + r * t.stride(2);
  for (int64_t b = 0; b < Bs; ++b) {
    for (int64_t c = 0; c < C; ++c) {
      const T* __restrict src = base + b * sb + c * sc;
      T* __restrict run = buf + c * BW + b * W;
      for (int64_t w = 0; w < W; ++w) run[w] = src[w * sw];
    }
  }
}

// buf (C, Bs*W), channel c at buf + c * ld, into row r of batch elements [b0, b0 + Bs)
// of t (B, C, R, W), any strides.
template <typename T>
void scatter_row(at::Tensor& t, const T* __restrict buf, int64_t ld, int64_t b0, int64_t Bs,
                 int64_t r) {
  const int64_t C = t.size(1), W = t.size(3);
  const int64_t sb = t.stride(0), sc = t.stride(1), sw = t.stride(3);
  T* base = t.data_ptr<T>() + b0 * sb + r * t.stride(2);
  for (int64_t b = 0; b < Bs; ++b) {
    for (int64_t c = 0; c < C; ++c) {
      T* __restrict dst = base + b * sb + c * sc;
      const T* __restrict run = buf + c * ld + b * W;
      for (int64_t w = 0; w < W; ++w) dst[w * sw] = run[w];
    }
  }
}

// hcol (3H, Bs*W) of row r >= 1 of batch elements [b0, b0 + Bs), from h (B, H, R, W),
// any strides: hcol[k*H + u][b*W + w] = h[b0 + b, u, r - 1, w + k - 1] (zero outside the
// row).
template <typename T>
void fill_hcol_row(T* __restrict hcol, const at::Tensor& h, int64_t b0, int64_t Bs,
                   int64_t r) {
  const int64_t H = h.size(1), W = h.size(3), BW = Bs * W;
  const int64_t sb = h.stride(0), sc = h.stride(1), sw = h.stride(3);
  const int64_t hg = H * BW;
  const T* base = h.const_data_ptr<T>() + b0 * sb + (r - 1) * h.stride(2);
  for (int64_t b = 0; b < Bs; ++b) {
    for (int64_t u = 0; u < H; ++u) {
      const T* __restrict src = base + b * sb + u * sc;
      T* __restrict h0 = hcol + u * BW + b * W;
      T* __restrict h1 = h0 + hg;
      T* __restrict h2 = h0 + 2 * hg;
      for (int64_t w = 0; w < W; ++w) h1[w] = src[w * sw];
      h0[0] = T(0);
      for (int64_t w = 0; w + 1 < W; ++w) h0[w + 1] = src[w * sw];
      for (int64_t w = 1; w < W; ++w) h2[w - 1] = src[w * sw];
      h2[W - 1] = T(0);
    }
  }
}

// Per-slice buffers, carved from one workspace allocated by the calling thread (buffers
// allocated and freed by the worker threads came back as fresh pages on every call: some
// 1500 page faults per forward and backward at B = 16, H = 16, 28 x 28). A buffer of
// per_b elements per batch element is, for the slice [b0, b0 + Bs), the range
// [per_b * b0, per_b * (b0 + Bs)) of its part.
class Workspace {
 public:
  Workspace(int64_t B, at::TensorOptions opts, std::initializer_list<int64_t> per_b) {
    int64_t total = 0;
    for (int64_t n : per_b) {
      offsets_.push_back(total * B);
      per_b_.push_back(n);
      total += n;
    }
    flat_ = at::empty({total * B}, opts);
  }
  // Buffer k of the slice [b0, b0 + Bs), viewed as `shape`.
  at::Tensor get(size_t k, int64_t b0, int64_t Bs, at::IntArrayRef shape) const {
    return flat_.narrow(0, offsets_[k] + per_b_[k] * b0, per_b_[k] * Bs).view(shape);
  }

 private:
  at::Tensor flat_;
  std::vector<int64_t> offsets_, per_b_;
};

std::tuple<at::Tensor, at::Tensor> row_lstm_scan_cpu(const at::Tensor& x_gates_in,
                                                     const at::Tensor& w_ss_in) {
  const at::AutoDispatchBelowADInplaceOrView below_autograd;  // plain ATen calls inside
  const Dims d = check_inputs(kOp, x_gates_in, w_ss_in);
  const auto opts = x_gates_in.options();
  at::Tensor h = at::empty({d.B, d.H, d.R, d.W}, opts);
  at::Tensor c = at::empty_like(h);
  if (h.numel() == 0) return {h, c};
  const int64_t B = d.B, W = d.W, G = d.G, H = d.H, R = d.R;
  const at::Tensor wflat = flat_weights(w_ss_in);
  const int64_t n = num_slices(B);
  // Per slice, one row at a time: x(r), pre, hcol, h(r), c(r - 1), c(r).
  const Workspace ws(B, opts, {G * W, G * W, 3 * H * W, H * W, H * W, H * W});
  for_each_slice(n, [&](int64_t i) {
    const int64_t b0 = i * B / n, Bs = (i + 1) * B / n - b0, BW = Bs * W;
    at::Tensor xr = ws.get(0, b0, Bs, {G, BW});
    at::Tensor pre = ws.get(1, b0, Bs, {G, BW}).zero_();  // row 0: no state input
    at::Tensor hcol = ws.get(2, b0, Bs, {3 * H, BW});
    at::Tensor hr = ws.get(3, b0, Bs, {H, BW});
    at::Tensor cprev = ws.get(4, b0, Bs, {H, BW}).zero_();  // row 0: c_prev = 0
    at::Tensor cr = ws.get(5, b0, Bs, {H, BW});
    AT_DISPATCH_FLOATING_TYPES(xr.scalar_type(), "row_lstm_scan_cpu", [&] {
      const scalar_t* xp = xr.data_ptr<scalar_t>();
      const scalar_t* prep = pre.data_ptr<scalar_t>();
      scalar_t* hp = hr.data_ptr<scalar_t>();
      scalar_t* cpp = cprev.data_ptr<scalar_t>();
      scalar_t* cp = cr.data_ptr<scalar_t>();
      scalar_t* hcolp = hcol.data_ptr<scalar_t>();
      for (int64_t r = 0; r < R; ++r) {
        gather_row<scalar_t>(xr.data_ptr<scalar_t>(), x_gates_in, b0, Bs, r);
        if (r > 0) row_product(pre, wflat, hcol);
        for (int64_t u = 0; u < H; ++u) {
          forward_row<scalar_t>(xp + u * BW, H * BW, prep + u * BW, H * BW, cpp + u * BW,
                                hp + u * BW, cp + u * BW, hcolp + u * BW, Bs, W);
        }
        scatter_row<scalar_t>(h, hp, BW, b0, Bs, r);
        scatter_row<scalar_t>(c, cp, BW, b0, Bs, r);
        std::swap(cp, cpp);
      }
    });
  });
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
  const int64_t B = d.B, W = d.W, G = d.G, H = d.H, R = d.R;
  const at::Tensor wflat = flat_weights(w_ss_in);
  const at::Tensor wflat_t = wflat.t().contiguous();
  const int64_t n = num_slices(B);
  // Each slice's grad_Wflat (G, 3H), made by the calling thread.
  std::vector<at::Tensor> gw_parts(n);
  for (int64_t i = 0; i < n; ++i) gw_parts[i] = at::zeros({G, 3 * H}, opts);
  // Per slice, one row at a time: hcol(r), pre(r), the pre-activation gradients of rows r
  // and r + 1, x(r), grad_h(r), grad_c(r), c(r), c(r - 1), Q, the carried dc, and scratch.
  const Workspace ws(B, opts, {3 * H * W, G * W, 2 * G * W, G * W, H * W, H * W, H * W,
                               H * W, 3 * H * W, H * W, W});
  for_each_slice(n, [&](int64_t i) {
    const int64_t b0 = i * B / n, Bs = (i + 1) * B / n - b0, BW = Bs * W;
    at::Tensor hcol = ws.get(0, b0, Bs, {3 * H, BW});
    at::Tensor pre = ws.get(1, b0, Bs, {G, BW});
    at::Tensor dp2 = ws.get(2, b0, Bs, {2, G, BW});  // dpre(r) at r % 2
    at::Tensor xr = ws.get(3, b0, Bs, {G, BW}), ghr = ws.get(4, b0, Bs, {H, BW}),
               gcr = ws.get(5, b0, Bs, {H, BW}), cr = ws.get(6, b0, Bs, {H, BW}),
               cprev = ws.get(7, b0, Bs, {H, BW}), q = ws.get(8, b0, Bs, {3 * H, BW}),
               dcar = ws.get(9, b0, Bs, {H, BW}).zero_(), tmp = ws.get(10, b0, Bs, {BW});
    at::Tensor& gw = gw_parts[i];
    AT_DISPATCH_FLOATING_TYPES(xr.scalar_type(), "row_lstm_scan_backward_cpu", [&] {
      // Everything a row needs is made as the walk reaches it, so that the row's products
      // and cell read it from cache (row_product, row_product_nt_acc: float's
      // register-blocked kernels, single-threaded inside the region): hcol(r) from h(r - 1),
      // pre(r) = Wflat @ hcol(r), and after the cell, grad_Wflat += dpre(r) @ hcol(r)^T.
      // (Rows r >= 1; row 0 has no state input.) Products over all rows at once wrote
      // buffers of R rows (pre, dpre, hcol: 1.6, 1.6 and 1.2 MB per slice at B = 16, H = 16,
      // 28 x 28) that were read back out of cache.
      scalar_t* xp = xr.data_ptr<scalar_t>();
      scalar_t* ghp = ghr.data_ptr<scalar_t>();
      scalar_t* gcp = gcr.data_ptr<scalar_t>();
      scalar_t* cp = cr.data_ptr<scalar_t>();
      scalar_t* cpp = cprev.data_ptr<scalar_t>();
      scalar_t* hcolp = hcol.data_ptr<scalar_t>();
      const scalar_t* prep = pre.data_ptr<scalar_t>();
      const scalar_t* qp = q.data_ptr<scalar_t>();
      scalar_t* dcarp = dcar.data_ptr<scalar_t>();
      scalar_t* tmpp = tmp.data_ptr<scalar_t>();
      gather_row<scalar_t>(cp, c_in, b0, Bs, R - 1);
      for (int64_t r = R - 1; r >= 0; --r) {
        at::Tensor dpr = dp2.select(0, r % 2);
        scalar_t* dpp = dpr.data_ptr<scalar_t>();
        if (r < R - 1) row_product(q, wflat_t, dp2.select(0, (r + 1) % 2));  // reaching h(r)
        if (r > 0) {
          fill_hcol_row<scalar_t>(hcolp, h_in, b0, Bs, r);
          row_product(pre, wflat, hcol);
        } else {
          pre.zero_();
        }
        gather_row<scalar_t>(xp, x_gates_in, b0, Bs, r);
        gather_row<scalar_t>(ghp, grad_h_in, b0, Bs, r);
        gather_row<scalar_t>(gcp, grad_c_in, b0, Bs, r);
        if (r > 0) {
          gather_row<scalar_t>(cpp, c_in, b0, Bs, r - 1);
        } else {
          std::fill(cpp, cpp + H * BW, scalar_t(0));
        }
        for (int64_t u = 0; u < H; ++u) {
          backward_row<scalar_t>(ghp + u * BW, gcp + u * BW, xp + u * BW, H * BW,
                                 prep + u * BW, H * BW, cp + u * BW, cpp + u * BW,
                                 r < R - 1 ? qp + u * BW : nullptr, H * BW, dcarp + u * BW,
                                 dpp + u * BW, H * BW, tmpp, Bs, W);
        }
        scatter_row<scalar_t>(grad_x, dpp, BW, b0, Bs, r);
        if (r > 0) row_product_nt_acc(gw, dpr, hcol);
        std::swap(cp, cpp);  // c(r - 1) is the next row's c
      }
    });
  });
  at::Tensor gwflat = gw_parts[0];
  for (int64_t i = 1; i < n; ++i) gwflat.add_(gw_parts[i]);
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
