// CPU kernels of pixelar::conv_residual_block and its backward: PixelCNN's residual block
// (ReLU, 1x1 F -> h, ReLU, the five causal taps of a masked 3x3, ReLU, 1x1 h -> F, plus the
// input; semantics: the docstring of pixelar/ops/conv_residual_block.py).
//
// Maps are channels-last (one pixel's features contiguous). Threads take whole images.
// Forward, per image, row by row: the row's 1x1 reduce (of a ReLU'd copy of the row) into
// r2, then the 3x3 from r2's rows r - 1 and r, then the 1x1 expand added to x: every stage
// of the block runs on a row that is still in cache, and no map is read or written more
// than once. Backward, per image, rows bottom-up: the gradient at the 3x3's output (g_y2)
// of rows r and r + 1 is what row r's input gradient needs, so two rows of it are kept;
// the weight gradients are accumulated row by row (per thread, summed at the end).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "kernel_common.h"
#include "pixelar/checks.h"
#include "pixelar/simd.h"

namespace pixelar {
namespace cpu {
namespace {

constexpr const char* kOp = "pixelar::conv_residual_block";
constexpr const char* kOpBwd = "pixelar::conv_residual_block_backward";
constexpr int kTaps = 5;  // (row, column) offsets of w_conv's taps, raster order
constexpr int kTapDy[kTaps] = {-1, -1, -1, 0, 0};
constexpr int kTapDx[kTaps] = {-1, 0, 1, -1, 0};

struct Dims {
  int64_t B, F, h, R, W;
};

Dims check_inputs(const char* op, const at::Tensor& x, const at::Tensor& w_reduce,
                  const at::Tensor& w_conv, const at::Tensor& w_expand) {
  checks::check_input(op, "x", x, 4, "(B, F, R, W)", checks::kCpu);
  checks::check_input(op, "w_reduce", w_reduce, 2, "(F, h)", checks::kCpu);
  checks::check_like(op, "w_reduce", w_reduce, "x", x);
  const Dims d{x.size(0), x.size(1), w_reduce.size(1), x.size(2), x.size(3)};
  TORCH_CHECK(d.h >= 1, op, ": need at least one hidden feature (w_reduce (F, h), h >= 1)");
  checks::check_shape(op, "w_reduce", w_reduce, {d.F, d.h}, "(F, h)");
  checks::check_tensor(op, "w_conv", w_conv, x.scalar_type(), {kTaps, d.h, d.h}, at::kCPU);
  checks::check_tensor(op, "w_expand", w_expand, x.scalar_type(), {d.h, d.F}, at::kCPU);
  return d;
}

void check_bias(const char* name, const at::Tensor& b, const at::Tensor& x, int64_t n) {
  checks::check_tensor(kOp, name, b, x.scalar_type(), {n}, at::kCPU);
}

at::Tensor channels_last(const at::Tensor& t) {
  return t.contiguous(at::MemoryFormat::ChannelsLast);
}

at::Tensor empty_channels_last(const at::Tensor& like, int64_t C, const Dims& d) {
  return at::empty({d.B, C, d.R, d.W},
                   like.options().memory_format(at::MemoryFormat::ChannelsLast));
}

// ---- the products of one image row ------------------------------------------------------
// Every 1x1 and 3x3 product of the block (forward and backward) is a "stage": for each
// pixel c of a row and output j < G, a sum started by first(c, j), plus, over its taps t
// and k < K, src(t, c)[k] * w(t)[k * ldw + j], finished and stored by last(c, j, sum).
// src is the K inputs of pixel c for tap t, or a row of zeros where the tap falls outside
// the image. `stage_row` runs a stage over W pixels: blocks of 4 pixels by 2 vectors of
// outputs (8 independent sums, the weights loaded once for the 4 pixels), then narrower
// blocks, then scalars for G % lanes. (Inputs that need a ReLU are given as a ReLU'd copy
// of their row: a scalar max before every broadcast cost more than the copy.)

template <typename T, int NP, int NV, class S>
PIXELAR_HOST_DEVICE_INLINE void stage_block(const S& s, int64_t c0, int64_t j0) {
  using V = typename simd::Vec<T>::type;
  constexpr int L = simd::Vec<T>::lanes;
  V acc[NP][NV];
  for (int p = 0; p < NP; ++p)
    for (int v = 0; v < NV; ++v) acc[p][v] = s.first_v(c0 + p, j0 + v * L);
  for (int t = 0; t < S::kTapCount; ++t) {
    const T* x[NP];
    for (int p = 0; p < NP; ++p) x[p] = s.src(t, c0 + p);
    const T* w = s.w(t) + j0;
    for (int64_t k = 0; k < s.K; ++k) {
      V wv[NV];
      for (int v = 0; v < NV; ++v) wv[v] = simd::load<V>(w + k * s.ldw + v * L);
      for (int p = 0; p < NP; ++p) {
        const V xb = simd::broadcast<V>(x[p][k]);
        for (int v = 0; v < NV; ++v) acc[p][v] += xb * wv[v];
      }
    }
  }
  for (int p = 0; p < NP; ++p)
    for (int v = 0; v < NV; ++v) s.last_v(c0 + p, j0 + v * L, acc[p][v]);
}

template <typename T, class S>
PIXELAR_HOST_DEVICE_INLINE void stage_scalar(const S& s, int64_t c, int64_t j) {
  T a = s.first(c, j);
  for (int t = 0; t < S::kTapCount; ++t) {
    const T* x = s.src(t, c);
    const T* w = s.w(t) + j;
    for (int64_t k = 0; k < s.K; ++k) a += x[k] * w[k * s.ldw];
  }
  s.last(c, j, a);
}

template <typename T, class S>
PIXELAR_HOST_DEVICE_INLINE void stage_row(const S& s, int64_t W, int64_t G) {
  constexpr int L = simd::Vec<T>::lanes;
  int64_t j0 = 0;
  for (; j0 + 2 * L <= G; j0 += 2 * L) {
    int64_t c = 0;
    for (; c + 4 <= W; c += 4) stage_block<T, 4, 2>(s, c, j0);
    for (; c < W; ++c) stage_block<T, 1, 2>(s, c, j0);
  }
  for (; j0 + L <= G; j0 += L) {
    int64_t c = 0;
    for (; c + 4 <= W; c += 4) stage_block<T, 4, 1>(s, c, j0);
    for (; c < W; ++c) stage_block<T, 1, 1>(s, c, j0);
  }
  for (; j0 < G; ++j0)
    for (int64_t c = 0; c < W; ++c) stage_scalar<T>(s, c, j0);
}

// Vector helpers of the stages: V loads, selects.
template <typename T>
using VecOf = typename simd::Vec<T>::type;

template <typename T>
PIXELAR_HOST_DEVICE_INLINE VecOf<T> vload(const T* p) {
  return simd::load<VecOf<T>>(p);
}

// a where m > 0, else 0 (ReLU's derivative applied through the saved output m).
template <typename T>
PIXELAR_HOST_DEVICE_INLINE VecOf<T> where_positive(VecOf<T> m, VecOf<T> a) {
  return m > VecOf<T>{} ? a : VecOf<T>{};
}

// acc[k * G + j0 + j] += sum_{p < P} a[p * lda + k] * g[p * ldg + j0 + j] for k < K,
// j < NV lanes: 4 k by NV vectors of sums in registers across the pixels.
template <typename T, int NV>
PIXELAR_HOST_DEVICE_INLINE void outer_block(T* __restrict__ acc, const T* __restrict__ a,
                                            int64_t lda, const T* __restrict__ g, int64_t ldg,
                                            int64_t P, int64_t K, int64_t G, int64_t j0) {
  using V = VecOf<T>;
  constexpr int L = simd::Vec<T>::lanes;
  int64_t k = 0;
  for (; k + 4 <= K; k += 4) {
    V s[4][NV] = {};
    for (int64_t p = 0; p < P; ++p) {
      const T* ap = a + p * lda + k;
      V gv[NV];
      for (int v = 0; v < NV; ++v) gv[v] = vload(g + p * ldg + j0 + v * L);
      for (int i = 0; i < 4; ++i) {
        const V ab = simd::broadcast<V>(ap[i]);
        for (int v = 0; v < NV; ++v) s[i][v] += ab * gv[v];
      }
    }
    for (int i = 0; i < 4; ++i)
      for (int v = 0; v < NV; ++v) {
        T* out = acc + (k + i) * G + j0 + v * L;
        simd::store(out, vload(out) + s[i][v]);
      }
  }
  for (; k < K; ++k) {
    V s[NV] = {};
    for (int64_t p = 0; p < P; ++p) {
      const V ab = simd::broadcast<V>(a[p * lda + k]);
      for (int v = 0; v < NV; ++v) s[v] += ab * vload(g + p * ldg + j0 + v * L);
    }
    for (int v = 0; v < NV; ++v) {
      T* out = acc + k * G + j0 + v * L;
      simd::store(out, vload(out) + s[v]);
    }
  }
}

// acc[k * G + j] += sum_{p < P} a[p * lda + k] * g[p * ldg + j] for k < K, j < G: a weight
// gradient's share of one row of P pixels.
template <typename T>
PIXELAR_HOST_DEVICE_INLINE void outer_acc(T* __restrict__ acc, const T* __restrict__ a,
                                          int64_t lda, const T* __restrict__ g, int64_t ldg,
                                          int64_t P, int64_t K, int64_t G) {
  constexpr int L = simd::Vec<T>::lanes;
  int64_t j = 0;
  for (; j + 2 * L <= G; j += 2 * L) outer_block<T, 2>(acc, a, lda, g, ldg, P, K, G, j);
  for (; j + L <= G; j += L) outer_block<T, 1>(acc, a, lda, g, ldg, P, K, G, j);
  for (; j < G; ++j)
    for (int64_t k = 0; k < K; ++k) {
      T sum = 0;
      for (int64_t p = 0; p < P; ++p) sum += a[p * lda + k] * g[p * ldg + j];
      acc[k * G + j] += sum;
    }
}

// out[i] = relu(x[i]), i < n; a NaN stays NaN (as torch.relu).
template <typename T>
PIXELAR_HOST_DEVICE_INLINE void relu_copy(T* __restrict__ out, const T* __restrict__ x,
                                          int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = x[i] < T(0) ? T(0) : x[i];
}

// out[j] += sum over the P pixels of v[p * ld + j], j < n (a bias gradient's row share).
template <typename T>
PIXELAR_HOST_DEVICE_INLINE void add_rows(T* __restrict__ out, const T* __restrict__ v,
                                         int64_t ld, int64_t P, int64_t n) {
  for (int64_t p = 0; p < P; ++p)
    for (int64_t j = 0; j < n; ++j) out[j] += v[p * ld + j];
}

template <typename T>
struct Params {
  const T *wr, *br, *wc, *bc, *we, *be;
};

// ---- forward stages (row r of one image; maps (R, W, C) channels-last)

// The ends of the stages that add a bias and keep relu(sum): the sum starts at bias[j],
// relu(sum) is stored to out[c * ld + j] (a NaN stays NaN, as torch.relu).
template <typename T>
struct BiasReluEnds {
  const T* bias;
  T* out;
  int64_t ld;
  PIXELAR_HOST_DEVICE_INLINE T first(int64_t, int64_t j) const { return bias[j]; }
  PIXELAR_HOST_DEVICE_INLINE VecOf<T> first_v(int64_t, int64_t j) const {
    return vload(bias + j);
  }
  PIXELAR_HOST_DEVICE_INLINE void last(int64_t c, int64_t j, T a) const {
    out[c * ld + j] = a < T(0) ? T(0) : a;
  }
  PIXELAR_HOST_DEVICE_INLINE void last_v(int64_t c, int64_t j, VecOf<T> a) const {
    simd::store(out + c * ld + j, a < VecOf<T>{} ? VecOf<T>{} : a);
  }
};

template <typename T>
struct ReduceStage : BiasReluEnds<T> {  // r2 = relu(r1 @ w_reduce + b_reduce), r1 = relu(x)
  static constexpr int kTapCount = 1;
  const T *r1, *wr;  // r1: the row, ReLU'd
  int64_t K, ldw;    // F, h
  PIXELAR_HOST_DEVICE_INLINE const T* src(int, int64_t c) const { return r1 + c * K; }
  PIXELAR_HOST_DEVICE_INLINE const T* w(int) const { return wr; }
};

template <typename T>
struct ConvStage : BiasReluEnds<T> {  // r3 = relu(sum_t r2[p + o_t] @ w_conv[t] + b_conv)
  static constexpr int kTapCount = kTaps;
  const T *r2, *zeros, *wc;  // r2: the image's map
  int64_t r, W, K, ldw;      // K = ldw = h
  PIXELAR_HOST_DEVICE_INLINE const T* src(int t, int64_t c) const {
    const int64_t rr = r + kTapDy[t], cc = c + kTapDx[t];
    return rr >= 0 && cc >= 0 && cc < W ? r2 + (rr * W + cc) * K : zeros;
  }
  PIXELAR_HOST_DEVICE_INLINE const T* w(int t) const { return wc + t * K * K; }
};

template <typename T>
struct ExpandStage {  // out = x + r3 @ w_expand + b_expand
  static constexpr int kTapCount = 1;
  const T *r3, *x, *we, *be;
  T* out;
  int64_t K, ldw;  // h, F
  PIXELAR_HOST_DEVICE_INLINE const T* src(int, int64_t c) const { return r3 + c * K; }
  PIXELAR_HOST_DEVICE_INLINE const T* w(int) const { return we; }
  PIXELAR_HOST_DEVICE_INLINE T first(int64_t c, int64_t j) const { return x[c * ldw + j] + be[j]; }
  PIXELAR_HOST_DEVICE_INLINE VecOf<T> first_v(int64_t c, int64_t j) const {
    return vload(x + c * ldw + j) + vload(be + j);
  }
  PIXELAR_HOST_DEVICE_INLINE void last(int64_t c, int64_t j, T a) const { out[c * ldw + j] = a; }
  PIXELAR_HOST_DEVICE_INLINE void last_v(int64_t c, int64_t j, VecOf<T> a) const {
    simd::store(out + c * ldw + j, a);
  }
};

// One image of the forward. x, out: (R, W, F); r2, r3: (R, W, h); zeros: h zeros;
// r1: W F scratch.
template <typename T>
PIXELAR_SIMD_CLONES void forward_image(const Params<T>& p, const Dims& d, const T* x, T* out,
                                       T* r2, T* r3, const T* zeros, T* r1) {
  const int64_t F = d.F, h = d.h, W = d.W;
  for (int64_t r = 0; r < d.R; ++r) {
    const T* xr = x + r * W * F;
    relu_copy(r1, xr, W * F);
    stage_row<T>(ReduceStage<T>{{p.br, r2 + r * W * h, h}, r1, p.wr, F, h}, W, h);
    stage_row<T>(ConvStage<T>{{p.bc, r3 + r * W * h, h}, r2, zeros, p.wc, r, W, h, h}, W, h);
    stage_row<T>(ExpandStage<T>{r3 + r * W * h, xr, p.we, p.be, out + r * W * F, h, F}, W, F);
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> conv_residual_block_cpu(
    const at::Tensor& x_in, const at::Tensor& w_reduce_in, const at::Tensor& b_reduce_in,
    const at::Tensor& w_conv_in, const at::Tensor& b_conv_in, const at::Tensor& w_expand_in,
    const at::Tensor& b_expand_in) {
  const Dims d = check_inputs(kOp, x_in, w_reduce_in, w_conv_in, w_expand_in);
  check_bias("b_reduce", b_reduce_in, x_in, d.h);
  check_bias("b_conv", b_conv_in, x_in, d.h);
  check_bias("b_expand", b_expand_in, x_in, d.F);
  const at::Tensor x = channels_last(x_in);
  const at::Tensor wr = w_reduce_in.contiguous(), br = b_reduce_in.contiguous(),
                   wc = w_conv_in.contiguous(), bc = b_conv_in.contiguous(),
                   we = w_expand_in.contiguous(), be = b_expand_in.contiguous();
  at::Tensor out = empty_channels_last(x, d.F, d), r2 = empty_channels_last(x, d.h, d),
             r3 = empty_channels_last(x, d.h, d);
  if (out.numel() == 0) return {out, r2, r3};
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "conv_residual_block_cpu", [&] {
    const Params<scalar_t> p{wr.data_ptr<scalar_t>(), br.data_ptr<scalar_t>(),
                             wc.data_ptr<scalar_t>(), bc.data_ptr<scalar_t>(),
                             we.data_ptr<scalar_t>(), be.data_ptr<scalar_t>()};
    const int64_t mapF = d.R * d.W * d.F, maph = d.R * d.W * d.h;
    const scalar_t* xp = x.data_ptr<scalar_t>();
    scalar_t *outp = out.data_ptr<scalar_t>(), *r2p = r2.data_ptr<scalar_t>(),
             *r3p = r3.data_ptr<scalar_t>();
    const std::vector<scalar_t> zeros(d.h, scalar_t(0));
    at::parallel_for(0, d.B, 1, [&](int64_t b0, int64_t b1) {
      std::vector<scalar_t> r1(d.W * d.F);
      for (int64_t b = b0; b < b1; ++b)
        forward_image(p, d, xp + b * mapF, outp + b * mapF, r2p + b * maph, r3p + b * maph,
                      zeros.data(), r1.data());
    });
  });
  return {out, r2, r3};
}

// ---- backward stages (row r of one image, rows visited bottom-up)

// The ends of the stages that gate by a ReLU's output: the sum starts at 0, and
// (m[c * ld + j] > 0 ? sum : 0) is stored to out[c * ld + j].
template <typename T>
struct GatedEnds {
  const T* m;  // the ReLU output whose derivative gates the sum
  T* out;
  int64_t ld;
  PIXELAR_HOST_DEVICE_INLINE T first(int64_t, int64_t) const { return T(0); }
  PIXELAR_HOST_DEVICE_INLINE VecOf<T> first_v(int64_t, int64_t) const { return VecOf<T>{}; }
  PIXELAR_HOST_DEVICE_INLINE void last(int64_t c, int64_t j, T a) const {
    out[c * ld + j] = m[c * ld + j] > T(0) ? a : T(0);
  }
  PIXELAR_HOST_DEVICE_INLINE void last_v(int64_t c, int64_t j, VecOf<T> a) const {
    simd::store(out + c * ld + j, where_positive<T>(vload(m + c * ld + j), a));
  }
};

template <typename T>
struct GradY2Stage : GatedEnds<T> {  // g_y2 = (g @ w_expand^T) * (r3 > 0)
  static constexpr int kTapCount = 1;
  const T *g, *weT;
  int64_t K, ldw;  // F, h
  PIXELAR_HOST_DEVICE_INLINE const T* src(int, int64_t c) const { return g + c * K; }
  PIXELAR_HOST_DEVICE_INLINE const T* w(int) const { return weT; }
};

template <typename T>
struct GradY1Stage : GatedEnds<T> {  // g_y1 = (sum_t g_y2[q - o_t] @ w_conv[t]^T) * (r2 > 0)
  static constexpr int kTapCount = kTaps;
  const T *gy2, *gy2_below, *zeros, *wcT;  // gy2 rows r and r + 1
  int64_t r, R, W, K, ldw;                 // K = ldw = h
  PIXELAR_HOST_DEVICE_INLINE const T* src(int t, int64_t c) const {
    const int64_t rr = r - kTapDy[t], cc = c - kTapDx[t];  // the pixel that reads (r, c)
    if (rr >= R || cc < 0 || cc >= W) return zeros;
    return (rr == r ? gy2 : gy2_below) + cc * K;
  }
  PIXELAR_HOST_DEVICE_INLINE const T* w(int t) const { return wcT + t * K * K; }
};

template <typename T>
struct GradXStage {  // grad_x = g + (g_y1 @ w_reduce^T) * (x > 0)
  static constexpr int kTapCount = 1;
  const T *gy1, *wrT, *g, *x;
  T* gx;
  int64_t K, ldw;  // h, F
  PIXELAR_HOST_DEVICE_INLINE const T* src(int, int64_t c) const { return gy1 + c * K; }
  PIXELAR_HOST_DEVICE_INLINE const T* w(int) const { return wrT; }
  PIXELAR_HOST_DEVICE_INLINE T first(int64_t, int64_t) const { return T(0); }
  PIXELAR_HOST_DEVICE_INLINE VecOf<T> first_v(int64_t, int64_t) const { return VecOf<T>{}; }
  PIXELAR_HOST_DEVICE_INLINE void last(int64_t c, int64_t j, T a) const {
    const int64_t i = c * ldw + j;
    gx[i] = g[i] + (x[i] > T(0) ? a : T(0));
  }
  PIXELAR_HOST_DEVICE_INLINE void last_v(int64_t c, int64_t j, VecOf<T> a) const {
    const int64_t i = c * ldw + j;
    simd::store(gx + i, vload(g + i) + where_positive<T>(vload(x + i), a));
  }
};

// The backward's weights, transposed for products with the gradients (input-major
// again): wrT (h, F), wcT (5, h, h) each tap transposed, weT (F, h).
template <typename T>
struct BackwardParams {
  const T *wrT, *wcT, *weT;
};

// A thread's weight-gradient sums: gwr (F, h), gbr (h), gwc (5, h, h), gbc (h),
// gwe (h, F), gbe (F), one buffer in that order.
template <typename T>
struct GradSums {
  T *gwr, *gbr, *gwc, *gbc, *gwe, *gbe;
  static int64_t size(const Dims& d) { return 2 * d.F * d.h + kTaps * d.h * d.h + 2 * d.h + d.F; }
  GradSums(T* base, const Dims& d)
      : gwr(base), gbr(gwr + d.F * d.h), gwc(gbr + d.h), gbc(gwc + kTaps * d.h * d.h),
        gwe(gbc + d.h), gbe(gwe + d.h * d.F) {}
};

// One image of the backward. g, x, gx: (R, W, F); r2, r3: (R, W, h); scratch: 3 W h + h +
// W F (two rows of g_y2, one of g_y1, h zeros, a row of relu(x)).
template <typename T>
PIXELAR_SIMD_CLONES void backward_image(const BackwardParams<T>& p, const Dims& d, const T* g,
                                        const T* x, const T* r2, const T* r3, T* gx,
                                        GradSums<T> s, T* scratch) {
  const int64_t F = d.F, h = d.h, W = d.W;
  T* gy2_rows[2] = {scratch, scratch + W * h};  // g_y2 of rows r (r % 2) and r + 1
  T* gy1 = scratch + 2 * W * h;
  T* zeros = scratch + 3 * W * h;
  T* r1 = zeros + h;
  std::fill(zeros, zeros + h, T(0));
  for (int64_t r = d.R - 1; r >= 0; --r) {
    const T* gr = g + r * W * F;
    const T* xr = x + r * W * F;
    const T* r2r = r2 + r * W * h;
    const T* r3r = r3 + r * W * h;
    T* gy2 = gy2_rows[r % 2];
    const T* gy2_below = gy2_rows[(r + 1) % 2];  // row r + 1 (read only when r + 1 < R)
    stage_row<T>(GradY2Stage<T>{{r3r, gy2, h}, gr, p.weT, F, h}, W, h);
    add_rows(s.gbe, gr, F, W, F);
    outer_acc<T>(s.gwe, r3r, h, gr, F, W, h, F);
    stage_row<T>(GradY1Stage<T>{{r2r, gy1, h}, gy2, gy2_below, zeros, p.wcT, r, d.R, W, h, h},
                 W, h);
    add_rows(s.gbc, gy2, h, W, h);
    for (int t = 0; t < kTaps; ++t) {  // grad_w_conv[t] += r2[p + o_t]^T g_y2[p]
      const int64_t rr = r + kTapDy[t];
      const int64_t c0 = std::max<int64_t>(0, -kTapDx[t]);
      const int64_t c1 = std::min<int64_t>(W, W - kTapDx[t]);
      if (rr < 0 || c1 <= c0) continue;
      outer_acc<T>(s.gwc + t * h * h, r2 + (rr * W + c0 + kTapDx[t]) * h, h,
                          gy2 + c0 * h, h, c1 - c0, h, h);
    }
    add_rows(s.gbr, gy1, h, W, h);
    relu_copy(r1, xr, W * F);
    outer_acc<T>(s.gwr, r1, F, gy1, h, W, F, h);
    stage_row<T>(GradXStage<T>{gy1, p.wrT, gr, xr, gx + r * W * F, h, F}, W, F);
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
conv_residual_block_backward_cpu(const at::Tensor& grad_in, const at::Tensor& x_in,
                                 const at::Tensor& w_reduce_in, const at::Tensor& w_conv_in,
                                 const at::Tensor& w_expand_in, const at::Tensor& r2_in,
                                 const at::Tensor& r3_in) {
  const Dims d = check_inputs(kOpBwd, x_in, w_reduce_in, w_conv_in, w_expand_in);
  for (const auto& [name, t, C] : {std::make_tuple("grad_out", &grad_in, d.F),
                                   std::make_tuple("r2", &r2_in, d.h),
                                   std::make_tuple("r3", &r3_in, d.h)})
    checks::check_tensor(kOpBwd, name, *t, x_in.scalar_type(), {d.B, C, d.R, d.W}, at::kCPU);
  const at::Tensor g = channels_last(grad_in), x = channels_last(x_in),
                   r2 = channels_last(r2_in), r3 = channels_last(r3_in);
  const at::Tensor wrT = w_reduce_in.t().contiguous(), weT = w_expand_in.t().contiguous(),
                   wcT = w_conv_in.transpose(1, 2).contiguous();
  at::Tensor gx = empty_channels_last(x, d.F, d);
  const int64_t threads = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), d.B));
  const int64_t n_sums = GradSums<float>::size(d);
  at::Tensor sums = at::zeros({threads, n_sums}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "conv_residual_block_backward_cpu", [&] {
    const BackwardParams<scalar_t> p{wrT.data_ptr<scalar_t>(), wcT.data_ptr<scalar_t>(),
                                     weT.data_ptr<scalar_t>()};
    const int64_t mapF = d.R * d.W * d.F, maph = d.R * d.W * d.h;
    const scalar_t *gp = g.data_ptr<scalar_t>(), *xp = x.data_ptr<scalar_t>(),
                   *r2p = r2.data_ptr<scalar_t>(), *r3p = r3.data_ptr<scalar_t>();
    scalar_t* gxp = gx.data_ptr<scalar_t>();
    scalar_t* sump = sums.data_ptr<scalar_t>();
    // one task per thread, images split evenly: each task owns its row of `sums`
    at::parallel_for(0, threads, 1, [&](int64_t t0, int64_t t1) {
      std::vector<scalar_t> scratch(3 * d.W * d.h + d.h + d.W * d.F);
      for (int64_t t = t0; t < t1; ++t) {
        const GradSums<scalar_t> s(sump + t * n_sums, d);
        for (int64_t b = t * d.B / threads; b < (t + 1) * d.B / threads; ++b)
          backward_image(p, d, gp + b * mapF, xp + b * mapF, r2p + b * maph, r3p + b * maph,
                         gxp + b * mapF, s, scratch.data());
      }
    });
  });
  const at::Tensor total = sums.sum(0);
  const int64_t F = d.F, h = d.h;
  int64_t o = 0;
  const auto take = [&](at::IntArrayRef shape, int64_t n) {
    at::Tensor piece = total.narrow(0, o, n).view(shape).clone();
    o += n;
    return piece;
  };
  at::Tensor gwr = take({F, h}, F * h), gbr = take({h}, h);
  at::Tensor gwc = take({kTaps, h, h}, kTaps * h * h), gbc = take({h}, h);
  at::Tensor gwe = take({h, F}, h * F), gbe = take({F}, F);
  return {gx, gwr, gbr, gwc, gbc, gwe, gbe};
}

}  // namespace

TORCH_LIBRARY_IMPL(pixelar, CPU, m) {
  m.impl("conv_residual_block", &conv_residual_block_cpu);
  m.impl("conv_residual_block_backward", &conv_residual_block_backward_cpu);
}

}  // namespace cpu
}  // namespace pixelar
