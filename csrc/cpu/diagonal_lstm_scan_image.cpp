// CPU kernels of pixelar::diagonal_lstm_scan_image and its backward (semantics: the
// docstring of pixelar/ops/diagonal_lstm_scan_image.py): the Diagonal LSTM recurrence read
// and written on the image layout, no skewed map; `reverse` scans right to left.
//
// Layout: channels-last. The outputs h, c (B, H, R, W), the activated gates (B, 4H, R, W)
// and grad_x_gates are allocated in torch.channels_last memory order, so one pixel's H (or
// 4H) values are one contiguous run; x_gates is read in place whatever its strides (fastest
// channels-last, as the layer's 1x1 convolution, done as a matrix product, writes it).
//
// One batch element per task (at::parallel_for over the batch). Diagonal j holds the
// pixels r + s = j, s = the scan column (image column s, or W - 1 - s when reverse); every
// pixel of a diagonal reads only the previous diagonal: h of the pixel above (r - 1, same
// column) and h, c of the previous pixel of its row in scan order. Per group of up to four
// pixels of a diagonal, the state-to-state product is a matrix-vector product over the 2H
// inputs, vectorized along the gates (the pixels share each weight load: gemv), then the
// cell runs on vectors of units. The forward also writes the activated gates.
//
// Backward: the diagonals in reverse. The gradient reaching h(r, c) comes from the pixel
// below (its row above) and the next pixel of the row, whose gate gradients (grad_x) are
// already written: dh = grad_h + Wb @ [gx(r + 1, c); gx(r, next)]. The cell's gradient
// comes from the saved gates and c (nothing is recomputed but tanh(c)); c's gradient is
// carried along each row. grad_w_ss, after the walk, is two batched matrix products of
// grad_x with the shifted h (torch's BLAS), summed over the batch in a fixed order.
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

// The copies here are runs of H or 4H values: GCC would turn their loops into calls of
// memmove, which cost more than the copies (13% of the backward's time).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-tree-loop-distribute-patterns")
#endif

namespace pixelar {
namespace cpu {
namespace {

constexpr const char* kOp = "pixelar::diagonal_lstm_scan_image";
constexpr const char* kOpBwd = "pixelar::diagonal_lstm_scan_image_backward";

struct Dims {
  int64_t H, G, R, W, Hp;   // Hp: H rounded up to whole vectors
  bool reverse;
  int64_t xg, xr, xc;       // strides of x_gates (gate, row, column)
  // Image column of scan column s.
  PIXELAR_HOST_DEVICE_INLINE int64_t column(int64_t s) const { return reverse ? W - 1 - s : s; }
};

// out_p[i] = init_p[i] (+ bias[i]) + sum_{k < K} in_p(k) * w[k * ldw + i] for i < NV * lanes (from
// column i0), for NP pixels p at once, in_p(k) = a_p[k] for k < Kh and b_p[k - Kh] after
// (K = 2 Kh): NP x NV vectors of sums in registers, each weight vector loaded once for the
// NP pixels. With few vectors of sums, even and odd k go to two sets of sums, so that two
// multiply-adds are in flight per sum. out_p may be init_p.
template <typename T, int NP, int NV>
PIXELAR_HOST_DEVICE_INLINE void gemv_block(T* const* out, const T* const* init, const T* bias,
                                           const T* const* a, const T* const* b, int64_t Kh,
                                           const T* __restrict w, int64_t ldw, int64_t i0) {
  using V = typename simd::Vec<T>::type;
  constexpr int L = simd::Vec<T>::lanes;
  constexpr int kChains = NP * NV <= 4 ? 2 : 1;
  V acc[kChains][NP][NV];
  for (int p = 0; p < NP; ++p) {
    for (int v = 0; v < NV; ++v) {
      acc[0][p][v] = simd::load<V>(init[p] + i0 + v * L);
      if (bias != nullptr) acc[0][p][v] += simd::load<V>(bias + i0 + v * L);
      if (kChains > 1) acc[kChains - 1][p][v] = V{};
    }
  }
  for (int half = 0; half < 2; ++half) {
    const T* const* in = half ? b : a;
    const T* wk = w + half * Kh * ldw + i0;
    int64_t k = 0;
    for (; k + kChains <= Kh; k += kChains) {
      for (int ch = 0; ch < kChains; ++ch) {
        V wv[NV];
        for (int v = 0; v < NV; ++v) wv[v] = simd::load<V>(wk + (k + ch) * ldw + v * L);
        for (int p = 0; p < NP; ++p) {
          const V x = simd::broadcast<V>(in[p][k + ch]);
          for (int v = 0; v < NV; ++v) acc[ch][p][v] += x * wv[v];
        }
      }
    }
    for (; k < Kh; ++k) {
      V wv[NV];
      for (int v = 0; v < NV; ++v) wv[v] = simd::load<V>(wk + k * ldw + v * L);
      for (int p = 0; p < NP; ++p) {
        const V x = simd::broadcast<V>(in[p][k]);
        for (int v = 0; v < NV; ++v) acc[0][p][v] += x * wv[v];
      }
    }
  }
  for (int p = 0; p < NP; ++p) {
    for (int v = 0; v < NV; ++v) {
      V sum = acc[0][p][v];
      if (kChains > 1) sum += acc[kChains - 1][p][v];
      simd::store(out[p] + i0 + v * L, sum);
    }
  }
}

// gemv_block over all N columns (a whole number of vectors): at most 8 vectors of sums.
template <typename T, int NP>
PIXELAR_HOST_DEVICE_INLINE void gemv_np(T* const* out, const T* const* init, const T* bias,
                                        const T* const* a, const T* const* b, int64_t Kh,
                                        const T* w, int64_t N) {
  constexpr int L = simd::Vec<T>::lanes;
  int64_t i = 0;
  if (NP <= 2) {
    for (; i + 4 * L <= N; i += 4 * L) gemv_block<T, NP, 4>(out, init, bias, a, b, Kh, w, N, i);
  }
  for (; i + 2 * L <= N; i += 2 * L) gemv_block<T, NP, 2>(out, init, bias, a, b, Kh, w, N, i);
  for (; i < N; i += L) gemv_block<T, NP, 1>(out, init, bias, a, b, Kh, w, N, i);
}

// gemv_np for np = 1 .. 4 pixels.
template <typename T>
PIXELAR_HOST_DEVICE_INLINE void gemv(int np, T* const* out, const T* const* init,
                                     const T* bias, const T* const* a, const T* const* b,
                                     int64_t Kh, const T* w, int64_t N) {
  switch (np) {
    case 1: gemv_np<T, 1>(out, init, bias, a, b, Kh, w, N); break;
    case 2: gemv_np<T, 2>(out, init, bias, a, b, Kh, w, N); break;
    case 3: gemv_np<T, 3>(out, init, bias, a, b, Kh, w, N); break;
    default: gemv_np<T, 4>(out, init, bias, a, b, Kh, w, N); break;
  }
}

// dst[0 .. n) = src[0 .. n): whole vectors, then the rest (runs of H or 4H values, where a
// call of memmove costs more than the copy).
template <typename T>
PIXELAR_HOST_DEVICE_INLINE void copy_n(const T* __restrict src, int64_t n, T* __restrict dst) {
  using V = typename simd::Vec<T>::type;
  constexpr int L = simd::Vec<T>::lanes;
  int64_t t = 0;
  for (; t + L <= n; t += L) simd::store(dst + t, simd::load<V>(src + t));
  for (; t < n; ++t) dst[t] = src[t];
}

// pre (4 blocks of Hp) = x_gates at pixel x (gate stride xg), gate q*H + u -> q*Hp + u.
template <typename T>
PIXELAR_HOST_DEVICE_INLINE void load_gates(const T* x, const Dims& d, T* pre) {
  for (int64_t q = 0; q < 4; ++q) {
    const T* xq = x + q * d.H * d.xg;
    T* pq = pre + q * d.Hp;
    if (d.xg == 1) {
      copy_n(xq, d.H, pq);
    } else {
      for (int64_t u = 0; u < d.H; ++u) pq[u] = xq[u * d.xg];
    }
  }
}

// The cell of n units from the pre-activations (gate q at pre + q * ldp): c, h, and the
// activated gates [sigmoid i, sigmoid f, sigmoid o, tanh g] at act + q * lda (the op's third
// output, which the backward reads instead of recomputing them).
template <typename T>
PIXELAR_HOST_DEVICE_INLINE void cell_forward(const T* __restrict pre, int64_t ldp,
                                             const T* __restrict c_prev, T* __restrict c,
                                             T* __restrict h, T* __restrict act, int64_t lda,
                                             int64_t n) {
  using M = math::CellMath;
  for (int64_t k = 0; k < n; ++k) {
    const T i = math::sigmoid<T, M>(pre[k]);
    const T f = math::sigmoid<T, M>(pre[ldp + k]);
    const T o = math::sigmoid<T, M>(pre[2 * ldp + k]);
    const T g = M::tanh(pre[3 * ldp + k]);
    const T cn = f * c_prev[k] + i * g;
    c[k] = cn;
    h[k] = o * M::tanh(cn);
    act[k] = i;
    act[lda + k] = f;
    act[2 * lda + k] = o;
    act[3 * lda + k] = g;
  }
}

// Backward of cell_forward from the saved gates (act, gate q at act + q * lda) and c: the
// formulas of math::lstm_cell_backward. dh: gradient reaching h; dc_out: of the c output;
// dc_carry: in, the gradient reaching c from the next pixel of the row; out, of c_prev.
// Writes the pre-activation gradients, gate q at dpre + q * ldd.
template <typename T>
PIXELAR_HOST_DEVICE_INLINE void cell_backward(const T* __restrict act, int64_t lda,
                                              const T* __restrict c_prev, const T* __restrict c,
                                              const T* __restrict dh, const T* __restrict dc_out,
                                              T* __restrict dc_carry, T* __restrict dpre,
                                              int64_t ldd, int64_t n) {
  using M = math::CellMath;
  for (int64_t k = 0; k < n; ++k) {
    const T i = act[k], f = act[lda + k], o = act[2 * lda + k], g = act[3 * lda + k];
    const T tc = M::tanh(c[k]);
    const T dc_total = dc_out[k] + dc_carry[k] + dh[k] * o * (T(1) - tc * tc);
    dpre[k] = dc_total * g * i * (T(1) - i);
    dpre[ldd + k] = dc_total * c_prev[k] * f * (T(1) - f);
    dpre[2 * ldd + k] = dh[k] * tc * o * (T(1) - o);
    dpre[3 * ldd + k] = dc_total * i * (T(1) - g * g);
    dc_carry[k] = dc_total * f;
  }
}

constexpr int kGroup = 4;  // pixels of a diagonal processed together

// Per-thread scratch: per pixel of a group, pre, d gates and gates (4Hp each), c_prev, c,
// h, dh (Hp each); and zeros.
template <typename T>
struct Scratch {
  std::vector<T> mem;
  T *pre[kGroup], *cprev[kGroup], *cnew[kGroup], *hnew[kGroup], *dh[kGroup], *dpre[kGroup];
  T *act[kGroup], *zeros;
  explicit Scratch(const Dims& d) : mem(kGroup * 16 * d.Hp + 4 * d.Hp + 2 * d.G + 64, T(0)) {
    T* p = mem.data();
    for (int i = 0; i < kGroup; ++i) {
      pre[i] = p, p += 4 * d.Hp;
      cprev[i] = p, p += d.Hp;
      cnew[i] = p, p += d.Hp;
      hnew[i] = p, p += d.Hp;
      dh[i] = p, p += d.Hp;
      dpre[i] = p, p += 4 * d.Hp;
      act[i] = p, p += 4 * d.Hp;
    }
    zeros = p;  // at least max(4Hp, 2G) zeros, never written
  }
};

// Whether the kernels can read and write the tensors in place: whole vectors of units
// (H = Hp), and for the forward x_gates' gates contiguous (channels-last). Otherwise
// through the scratch.
inline bool in_place(const Dims& d) { return d.H == d.Hp && d.xg == 1; }
inline bool in_place_backward(const Dims& d) { return d.H == d.Hp; }

// Forward of one batch element. x: the element's x_gates (strides in d); bias: (4Hp) added
// to them (gate q of unit u at q * Hp + u, zero padded), or nullptr; wf: (2H, 4Hp),
// row k = input k (h above: k < H; previous h in scan order: k >= H), column q * Hp + u =
// gate q of unit u (zero padding); h, c: (R, W, H) and act: (R, W, 4H) channels-last
// outputs.
template <typename T>
PIXELAR_SIMD_CLONES void forward_one(const T* x, const T* bias, const T* wf, T* h, T* c, T* act,
                                     Dims d, Scratch<T>* sc) {
  const int64_t H = d.H, G = d.G, R = d.R, W = d.W, Hp = d.Hp, S = R + W - 1;
  const int64_t dcol = d.reverse ? 1 : -1;  // the previous pixel in scan order
  const bool direct = in_place(d);
  for (int64_t j = 0; j < S; ++j) {
    const int64_t r0 = std::max<int64_t>(0, j - W + 1), r1 = std::min<int64_t>(R - 1, j);
    for (int64_t r = r0; r <= r1; r += kGroup) {
      const int np = static_cast<int>(std::min<int64_t>(kGroup, r1 - r + 1));
      const T* init[kGroup];
      const T* above[kGroup];
      const T* left[kGroup];
      const T* cprev[kGroup];
      int64_t pix[kGroup];
      for (int p = 0; p < np; ++p) {
        const int64_t rr = r + p, s = j - rr, col = d.column(s);
        pix[p] = rr * W + col;
        const T* xp = x + rr * d.xr + col * d.xc;
        above[p] = rr > 0 ? h + (pix[p] - W) * H : sc->zeros;
        left[p] = s > 0 ? h + (pix[p] + dcol) * H : sc->zeros;
        cprev[p] = s > 0 ? c + (pix[p] + dcol) * H : sc->zeros;
        if (direct) {
          init[p] = xp;
        } else {
          load_gates(xp, d, sc->pre[p]);
          init[p] = sc->pre[p];
          copy_n(cprev[p], H, sc->cprev[p]);
          cprev[p] = sc->cprev[p];
        }
      }
      gemv<T>(np, sc->pre, init, bias, above, left, H, wf, 4 * Hp);
      for (int p = 0; p < np; ++p) {
        if (direct) {
          cell_forward<T>(sc->pre[p], Hp, cprev[p], c + pix[p] * H, h + pix[p] * H,
                          act + pix[p] * G, H, H);
        } else {
          cell_forward<T>(sc->pre[p], Hp, cprev[p], sc->cnew[p], sc->hnew[p], sc->act[p], Hp,
                          Hp);
          copy_n(sc->hnew[p], H, h + pix[p] * H);
          copy_n(sc->cnew[p], H, c + pix[p] * H);
          for (int64_t q = 0; q < 4; ++q) copy_n(sc->act[p] + q * Hp, H, act + pix[p] * G + q * H);
        }
      }
    }
  }
}

// Backward of one batch element. gh, gc, h, c: (R, W, H) and act: (R, W, 4H) channels-last;
// wb: (2G, Hp), row g = gate g of the pixel below (its weights of the h above), row G + g =
// gate g of the next pixel in scan order (its weights of the previous h), column u (zero
// padding). Writes gx: (R, W, G) channels-last. dcar: (R, Hp) zeros, the gradient of each
// row's c carried along the scan.
template <typename T>
PIXELAR_SIMD_CLONES void backward_one(const T* gh, const T* gc, const T* act, const T* wb,
                                      const T* c, T* gx, T* dcar, Dims d, Scratch<T>* sc) {
  const int64_t H = d.H, G = d.G, R = d.R, W = d.W, Hp = d.Hp, S = R + W - 1;
  const int64_t dcol = d.reverse ? 1 : -1;  // previous pixel in scan order; -dcol: next
  const bool direct = in_place_backward(d);
  for (int64_t j = S - 1; j >= 0; --j) {
    const int64_t r0 = std::max<int64_t>(0, j - W + 1), r1 = std::min<int64_t>(R - 1, j);
    for (int64_t r = r0; r <= r1; r += kGroup) {
      const int np = static_cast<int>(std::min<int64_t>(kGroup, r1 - r + 1));
      const T* dh_init[kGroup];
      const T* below[kGroup];
      const T* next[kGroup];
      const T* cprev[kGroup];
      const T* ccur[kGroup];
      const T* gcur[kGroup];
      const T* acur[kGroup];
      int64_t pix[kGroup], row[kGroup];
      for (int p = 0; p < np; ++p) {
        const int64_t rr = r + p, s = j - rr, col = d.column(s);
        row[p] = rr;
        pix[p] = rr * W + col;
        cprev[p] = s > 0 ? c + (pix[p] + dcol) * H : sc->zeros;
        ccur[p] = c + pix[p] * H;
        gcur[p] = gc + pix[p] * H;
        acur[p] = act + pix[p] * G;
        dh_init[p] = gh + pix[p] * H;
        below[p] = rr + 1 < R ? gx + (pix[p] + W) * G : sc->zeros;
        next[p] = s + 1 < W ? gx + (pix[p] - dcol) * G : sc->zeros;
        if (!direct) {
          copy_n(cprev[p], H, sc->cprev[p]);
          copy_n(ccur[p], H, sc->cnew[p]);
          copy_n(gcur[p], H, sc->hnew[p]);  // hnew: grad_c of this pixel
          copy_n(dh_init[p], H, sc->dh[p]);
          for (int64_t q = 0; q < 4; ++q) copy_n(acur[p] + q * H, H, sc->act[p] + q * Hp);
          cprev[p] = sc->cprev[p];
          ccur[p] = sc->cnew[p];
          gcur[p] = sc->hnew[p];
          dh_init[p] = sc->dh[p];
          acur[p] = sc->act[p];
        }
      }
      gemv<T>(np, sc->dh, dh_init, nullptr, below, next, G, wb, Hp);
      for (int p = 0; p < np; ++p) {
        T* dcr = dcar + row[p] * Hp;
        if (direct) {
          cell_backward<T>(acur[p], H, cprev[p], ccur[p], sc->dh[p], gcur[p], dcr,
                           gx + pix[p] * G, H, H);
        } else {
          T* dp = sc->dpre[p];
          cell_backward<T>(acur[p], Hp, cprev[p], ccur[p], sc->dh[p], gcur[p], dcr, dp, Hp, Hp);
          T* out = gx + pix[p] * G;
          for (int64_t q = 0; q < 4; ++q) copy_n(dp + q * Hp, H, out + q * H);
        }
      }
    }
  }
}

Dims check_inputs(const char* op, const at::Tensor& x_gates, const at::Tensor& w_ss,
                  bool reverse) {
  const int64_t H = checks::check_scan_inputs(op, x_gates, w_ss, 2, "(B, 4H, R, W)",
                                              "(4H, H, 2)", checks::kCpu);
  const int64_t L = x_gates.scalar_type() == at::kDouble ? simd::Vec<double>::lanes
                                                          : simd::Vec<float>::lanes;
  return Dims{H,       4 * H,   x_gates.size(2), x_gates.size(3), ceil_div(H, L) * L,
              reverse, x_gates.stride(1), x_gates.stride(2), x_gates.stride(3)};
}

at::Tensor channels_last_empty(at::IntArrayRef shape, const at::TensorOptions& opts) {
  return at::empty(shape, opts.memory_format(at::MemoryFormat::ChannelsLast));
}

// wf (2H, 4Hp): wf[k][q * Hp + u] = w_ss[q * H + u, k mod H, k / H], zero padded.
at::Tensor forward_weights(const at::Tensor& w_ss, const Dims& d) {
  at::Tensor wf = at::zeros({2 * d.H, 4, d.Hp}, w_ss.options());
  // w_ss (4H, H, 2) -> [tap, k, q, u]
  wf.narrow(2, 0, d.H).copy_(
      w_ss.view({4, d.H, d.H, 2}).permute({3, 2, 0, 1}).reshape({2 * d.H, 4, d.H}));
  return wf.view({2 * d.H, 4 * d.Hp});
}

// wb (2G, Hp): wb[tap * G + g][u] = w_ss[g, u, tap], zero padded.
at::Tensor backward_weights(const at::Tensor& w_ss, const Dims& d) {
  at::Tensor wb = at::zeros({2, d.G, d.Hp}, w_ss.options());
  wb.narrow(2, 0, d.H).copy_(w_ss.permute({2, 0, 1}));
  return wb.view({2 * d.G, d.Hp});
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> diagonal_lstm_scan_image_cpu(
    const at::Tensor& x_gates, const at::Tensor& w_ss, bool reverse,
    const c10::optional<at::Tensor>& bias_in) {
  const at::AutoDispatchBelowADInplaceOrView below_autograd;  // plain ATen calls inside
  const Dims d = check_inputs(kOp, x_gates, w_ss, reverse);
  const bool has_bias = bias_in.has_value() && bias_in->defined();
  if (has_bias) {
    checks::check_scan_tensor(kOp, "bias", *bias_in, x_gates, {d.G}, "(4H,)", checks::kCpu);
  }
  const int64_t B = x_gates.size(0);
  at::Tensor h = channels_last_empty({B, d.H, d.R, d.W}, x_gates.options());
  at::Tensor c = channels_last_empty({B, d.H, d.R, d.W}, x_gates.options());
  at::Tensor act = channels_last_empty({B, d.G, d.R, d.W}, x_gates.options());
  if (h.numel() == 0) return {h, c, act};
  const at::Tensor wf = forward_weights(w_ss, d);
  // bias (4H,) -> (4, Hp), zero padded
  at::Tensor bias;
  if (has_bias) {
    bias = at::zeros({4, d.Hp}, x_gates.options());
    bias.narrow(1, 0, d.H).copy_(bias_in->view({4, d.H}));
  }
  AT_DISPATCH_FLOATING_TYPES(x_gates.scalar_type(), "diagonal_lstm_scan_image_cpu", [&] {
    const scalar_t* xp = x_gates.data_ptr<scalar_t>();
    const scalar_t* bp = has_bias ? bias.data_ptr<scalar_t>() : nullptr;
    const scalar_t* wp = wf.data_ptr<scalar_t>();
    scalar_t* hp = h.data_ptr<scalar_t>();
    scalar_t* cp = c.data_ptr<scalar_t>();
    scalar_t* ap = act.data_ptr<scalar_t>();
    const int64_t xb = x_gates.stride(0), hb = d.H * d.R * d.W, ab = d.G * d.R * d.W;
    at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
      Scratch<scalar_t> sc(d);
      for (int64_t b = begin; b < end; ++b) {
        forward_one<scalar_t>(xp + b * xb, bp, wp, hp + b * hb, cp + b * hb, ap + b * ab, d,
                              &sc);
      }
    });
  });
  return {h, c, act};
}

// sum over the batch of a^T @ b: a (B, N, G), b (B, N, H) -> (G, H).
at::Tensor batch_outer(const at::Tensor& a, const at::Tensor& b) {
  return at::bmm(a.transpose(1, 2), b).sum(0);
}

// grad_w_ss (G, H, 2) from grad_x and h, both (B, R, W, C) views of channels-last tensors:
// tap 0 pairs each pixel with the h above it, tap 1 with the previous h in scan order
// (flat shift by one pixel, less the pairs that wrap across a row end).
at::Tensor weight_gradient(const at::Tensor& gx, const at::Tensor& h, const Dims& d) {
  const int64_t B = gx.size(0), R = d.R, W = d.W, G = d.G, H = d.H;
  at::Tensor gw = at::zeros({G, H, 2}, gx.options());
  if (R > 1) {
    gw.select(2, 0).copy_(batch_outer(gx.narrow(1, 1, R - 1).reshape({B, (R - 1) * W, G}),
                                      h.narrow(1, 0, R - 1).reshape({B, (R - 1) * W, H})));
  }
  if (W > 1) {
    const at::Tensor gf = gx.reshape({B, R * W, G}), hf = h.reshape({B, R * W, H});
    // forward: pixel p reads h(p - 1); reverse: h(p + 1).
    const int64_t go = d.reverse ? 0 : 1, ho = d.reverse ? 1 : 0;
    at::Tensor tap1 = batch_outer(gf.narrow(1, go, R * W - 1), hf.narrow(1, ho, R * W - 1));
    if (R > 1) {  // the wrapped pairs: (r, 0) with (r - 1, W - 1), or (r, W - 1) with (r + 1, 0)
      const at::Tensor gw_wrap =
          d.reverse ? batch_outer(gx.narrow(1, 0, R - 1).select(2, W - 1),
                                  h.narrow(1, 1, R - 1).select(2, 0))
                    : batch_outer(gx.narrow(1, 1, R - 1).select(2, 0),
                                  h.narrow(1, 0, R - 1).select(2, W - 1));
      tap1.sub_(gw_wrap);
    }
    gw.select(2, 1).copy_(tap1);
  }
  return gw;
}

std::tuple<at::Tensor, at::Tensor> diagonal_lstm_scan_image_backward_cpu(
    const at::Tensor& grad_h_in, const at::Tensor& grad_c_in, const at::Tensor& x_gates,
    const at::Tensor& w_ss, const at::Tensor& h_in, const at::Tensor& c_in,
    const at::Tensor& gates_in, bool reverse, const c10::optional<at::Tensor>& /*bias*/) {
  // (bias is only in the pre-activations, which the saved gates replace: not read here)
  const at::AutoDispatchBelowADInplaceOrView below_autograd;  // plain ATen calls inside
  const Dims d = check_inputs(kOpBwd, x_gates, w_ss, reverse);
  const int64_t B = x_gates.size(0);
  checks::check_scan_states(kOpBwd, x_gates, {B, d.H, d.R, d.W}, "(B, H, R, W)", grad_h_in,
                            grad_c_in, h_in, c_in, checks::kCpu);
  checks::check_scan_tensor(kOpBwd, "gates", gates_in, x_gates, {B, d.G, d.R, d.W},
                            "(B, 4H, R, W)", checks::kCpu);
  const auto cl = at::MemoryFormat::ChannelsLast;
  const at::Tensor grad_h = grad_h_in.contiguous(cl), grad_c = grad_c_in.contiguous(cl),
                   h = h_in.contiguous(cl), c = c_in.contiguous(cl),
                   gates = gates_in.contiguous(cl);
  at::Tensor grad_x = channels_last_empty(x_gates.sizes(), x_gates.options());
  if (grad_x.numel() == 0) return {grad_x, at::zeros(w_ss.sizes(), w_ss.options())};
  const at::Tensor wb = backward_weights(w_ss, d);
  AT_DISPATCH_FLOATING_TYPES(x_gates.scalar_type(), "diagonal_lstm_scan_image_backward_cpu",
                             [&] {
    const scalar_t* ghp = grad_h.data_ptr<scalar_t>();
    const scalar_t* gcp = grad_c.data_ptr<scalar_t>();
    const scalar_t* ap = gates.data_ptr<scalar_t>();
    const scalar_t* wbp = wb.data_ptr<scalar_t>();
    const scalar_t* cp = c.data_ptr<scalar_t>();
    scalar_t* gxp = grad_x.data_ptr<scalar_t>();
    const int64_t hb = d.H * d.R * d.W, gb = d.G * d.R * d.W;
    at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
      Scratch<scalar_t> sc(d);
      std::vector<scalar_t> dcar(d.R * d.Hp);
      for (int64_t b = begin; b < end; ++b) {
        std::fill(dcar.begin(), dcar.end(), scalar_t(0));
        backward_one<scalar_t>(ghp + b * hb, gcp + b * hb, ap + b * gb, wbp, cp + b * hb,
                               gxp + b * gb, dcar.data(), d, &sc);
      }
    });
  });
  at::Tensor grad_w = weight_gradient(grad_x.permute({0, 2, 3, 1}), h.permute({0, 2, 3, 1}), d);
  return {grad_x, like_layout(grad_w, w_ss)};
}

}  // namespace
}  // namespace cpu
}  // namespace pixelar

TORCH_LIBRARY_IMPL(pixelar, CPU, m) {
  m.impl("diagonal_lstm_scan_image", &pixelar::cpu::diagonal_lstm_scan_image_cpu);
  m.impl("diagonal_lstm_scan_image_backward",
         &pixelar::cpu::diagonal_lstm_scan_image_backward_cpu);
}
