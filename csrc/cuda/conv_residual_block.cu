// PixelCNN's residual block (ReLU, 1x1 F -> h, ReLU, the five causal taps of a masked 3x3
// h -> h, ReLU, 1x1 h -> F, plus the input): CUDA kernels (forward and backward), their
// launchers and their registration, compiled by nvcc and (all but the registration) by the
// CPU emulation tests.
//
// Semantics: pixelar/ops/conv_residual_block.py. x: (B, F, R, W); w_reduce: (F, h);
// w_conv: (5, h, h) [tap, c_in, c_out] at (row, column) offsets (-1, -1), (-1, 0), (-1, +1),
// (0, -1), (0, 0); w_expand: (h, F). Returns out (B, F, R, W) and the ReLU outputs r2, r3
// (B, h, R, W), all channels-last.
//
// Design: every map is read and written channels-last, i.e. as a (P, C) matrix over the
// P = B * R * W pixels, so one pixel's channels are one run. The per-pixel stages run one
// thread per (pixel, output channel), the channel fastest (the weight reads of a warp are
// coalesced, the map reads broadcast): forward reduce_kernel (r2), conv_kernel (r3: the five
// taps, zero outside the image), expand_kernel (out = x + ...): three launches. Backward:
// grad_y2_kernel (g_y2 = g @ w_expand^T where r3 > 0), grad_y1_kernel (g_r2 by the
// transposed taps, then where r2 > 0), grad_x_kernel; then each weight and its bias by
// weight_grad_partials (a block sums a chunk of pixels for a range of the outputs
// (tap,) c_in, c_out and the bias, into its own row of a partial-sum buffer) and
// weight_grad_sum (adds the rows in chunk order): deterministic, no atomics. Nine launches.
// Accumulation in at::opmath_type (float32 and float64 only). Offsets are 64-bit.
#if !defined(PIXELAR_CUDA_EMULATION)  // the CUDA build: the registration below
#include <torch/library.h>

#include "cuda_device.cuh"
#endif

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>

#include <algorithm>
#include <cstdint>
#include <tuple>

#include "device_code.cuh"
#include "launch_plan.h"
#include "pixelar/checks.h"

namespace pixelar {
namespace cuda {
namespace conv_residual {

constexpr int kTaps = 5;
constexpr int kThreads = 256;                     // per block, at most
constexpr int64_t kMaxBlocks = int64_t(1) << 20;  // flat launches stride beyond this
constexpr int64_t kChunkPixels = 32;              // weight gradients: least pixels per block
constexpr int64_t kMaxChunks = 1024;              // ... and most blocks along the pixels
constexpr int64_t kPartialBudget = int64_t(1) << 24;  // values of the partial-sum buffer
constexpr int64_t kMaxOutputBlocks = 65535;           // gridDim.y of weight_grad_partials

// Row and column offset of tap t: (-1, -1), (-1, 0), (-1, +1), (0, -1), (0, 0).
__device__ __forceinline__ int tap_row(int t) { return t < 3 ? -1 : 0; }
__device__ __forceinline__ int tap_col(int t) { return t < 3 ? t - 1 : t - 4; }

template <typename T>
__device__ __forceinline__ T relu(T v) {
  return v < T(0) ? T(0) : v;  // NaN stays NaN, as torch.relu
}

// Row and column of pixel p of a (B, R, W) grid.
__device__ __forceinline__ void pixel_position(int64_t p, int R, int W, int* row, int* col) {
  const int64_t rw = p / W;
  *col = static_cast<int>(p - rw * W);
  *row = static_cast<int>(rw % R);
}

__device__ __forceinline__ int64_t flat_index() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ int64_t flat_stride() {
  return static_cast<int64_t>(gridDim.x) * blockDim.x;
}

// ---- forward

// r2 (P, h) = relu(relu(x) (P, F) @ w_reduce (F, h) + b_reduce)
template <typename scalar_t, typename acc_t>
__global__ void reduce_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ w,
                              const scalar_t* __restrict__ b, scalar_t* __restrict__ r2,
                              int64_t P, int F, int h) {
  const int64_t n = P * h;
  for (int64_t i = flat_index(); i < n; i += flat_stride()) {
    const int64_t p = i / h;
    const int c = static_cast<int>(i - p * h);
    const scalar_t* xp = x + p * F;
    acc_t s = static_cast<acc_t>(b[c]);
    for (int f = 0; f < F; ++f) {
      s += relu(static_cast<acc_t>(xp[f])) * static_cast<acc_t>(w[static_cast<int64_t>(f) * h + c]);
    }
    r2[i] = static_cast<scalar_t>(relu(s));
  }
}

// r3 (P, h) = relu(sum_t r2[p + o_t] @ w_conv[t] + b_conv), r2 zero outside the image
template <typename scalar_t, typename acc_t>
__global__ void conv_kernel(const scalar_t* __restrict__ r2, const scalar_t* __restrict__ w,
                            const scalar_t* __restrict__ b, scalar_t* __restrict__ r3,
                            int64_t P, int h, int R, int W) {
  const int64_t n = P * h;
  for (int64_t i = flat_index(); i < n; i += flat_stride()) {
    const int64_t p = i / h;
    const int c = static_cast<int>(i - p * h);
    int row, col;
    pixel_position(p, R, W, &row, &col);
    acc_t s = static_cast<acc_t>(b[c]);
    for (int t = 0; t < kTaps; ++t) {
      const int rr = row + tap_row(t), cc = col + tap_col(t);
      if (rr < 0 || cc < 0 || cc >= W) continue;  // rr <= row < R
      const scalar_t* src = r2 + (p + static_cast<int64_t>(tap_row(t)) * W + tap_col(t)) * h;
      const scalar_t* wt = w + static_cast<int64_t>(t) * h * h + c;
      for (int k = 0; k < h; ++k) {
        s += static_cast<acc_t>(src[k]) * static_cast<acc_t>(wt[static_cast<int64_t>(k) * h]);
      }
    }
    r3[i] = static_cast<scalar_t>(relu(s));
  }
}

// out (P, F) = x + r3 (P, h) @ w_expand (h, F) + b_expand
template <typename scalar_t, typename acc_t>
__global__ void expand_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ r3,
                              const scalar_t* __restrict__ w, const scalar_t* __restrict__ b,
                              scalar_t* __restrict__ out, int64_t P, int F, int h) {
  const int64_t n = P * F;
  for (int64_t i = flat_index(); i < n; i += flat_stride()) {
    const int64_t p = i / F;
    const int f = static_cast<int>(i - p * F);
    const scalar_t* rp = r3 + p * h;
    acc_t s = static_cast<acc_t>(b[f]);
    for (int k = 0; k < h; ++k) {
      s += static_cast<acc_t>(rp[k]) * static_cast<acc_t>(w[static_cast<int64_t>(k) * F + f]);
    }
    out[i] = static_cast<scalar_t>(static_cast<acc_t>(x[i]) + s);
  }
}

// ---- backward: the maps

// g_y2 (P, h) = (g (P, F) @ w_expand^T) where r3 > 0
template <typename scalar_t, typename acc_t>
__global__ void grad_y2_kernel(const scalar_t* __restrict__ g, const scalar_t* __restrict__ w,
                               const scalar_t* __restrict__ r3, scalar_t* __restrict__ gy2,
                               int64_t P, int F, int h) {
  const int64_t n = P * h;
  for (int64_t i = flat_index(); i < n; i += flat_stride()) {
    acc_t s = acc_t(0);
    if (r3[i] > scalar_t(0)) {
      const int64_t p = i / h;
      const int c = static_cast<int>(i - p * h);
      const scalar_t* gp = g + p * F;
      const scalar_t* wc = w + static_cast<int64_t>(c) * F;
      for (int f = 0; f < F; ++f) s += static_cast<acc_t>(gp[f]) * static_cast<acc_t>(wc[f]);
    }
    gy2[i] = static_cast<scalar_t>(s);
  }
}

// g_y1 (P, h) = (sum_t g_y2[q - o_t] @ w_conv[t]^T, terms outside the image dropped)
// where r2 > 0
template <typename scalar_t, typename acc_t>
__global__ void grad_y1_kernel(const scalar_t* __restrict__ gy2, const scalar_t* __restrict__ w,
                               const scalar_t* __restrict__ r2, scalar_t* __restrict__ gy1,
                               int64_t P, int h, int R, int W) {
  const int64_t n = P * h;
  for (int64_t i = flat_index(); i < n; i += flat_stride()) {
    acc_t s = acc_t(0);
    if (r2[i] > scalar_t(0)) {
      const int64_t q = i / h;
      const int k = static_cast<int>(i - q * h);
      int row, col;
      pixel_position(q, R, W, &row, &col);
      for (int t = 0; t < kTaps; ++t) {
        const int rr = row - tap_row(t), cc = col - tap_col(t);
        if (rr >= R || cc < 0 || cc >= W) continue;  // rr >= row >= 0
        const scalar_t* src =
            gy2 + (q - static_cast<int64_t>(tap_row(t)) * W - tap_col(t)) * h;
        const scalar_t* wk = w + (static_cast<int64_t>(t) * h + k) * h;
        for (int c = 0; c < h; ++c) s += static_cast<acc_t>(src[c]) * static_cast<acc_t>(wk[c]);
      }
    }
    gy1[i] = static_cast<scalar_t>(s);
  }
}

// grad_x (P, F) = g + (g_y1 (P, h) @ w_reduce^T) where x > 0
template <typename scalar_t, typename acc_t>
__global__ void grad_x_kernel(const scalar_t* __restrict__ g, const scalar_t* __restrict__ x,
                              const scalar_t* __restrict__ gy1, const scalar_t* __restrict__ w,
                              scalar_t* __restrict__ gx, int64_t P, int F, int h) {
  const int64_t n = P * F;
  for (int64_t i = flat_index(); i < n; i += flat_stride()) {
    acc_t s = static_cast<acc_t>(g[i]);
    if (x[i] > scalar_t(0)) {
      const int64_t p = i / F;
      const int f = static_cast<int>(i - p * F);
      const scalar_t* gp = gy1 + p * h;
      const scalar_t* wf = w + static_cast<int64_t>(f) * h;
      acc_t d = acc_t(0);
      for (int c = 0; c < h; ++c) d += static_cast<acc_t>(gp[c]) * static_cast<acc_t>(wf[c]);
      s += d;
    }
    gx[i] = static_cast<scalar_t>(s);
  }
}

// ---- backward: the weights, sum over pixels of A[p]^T B[p], and the bias, sum of B[p]

// Block (chunk, y) writes part[chunk, o] for outputs o = y * blockDim.x + threadIdx.x, ...
// (striding by gridDim.y * blockDim.x): the sums over pixels [chunk * chunk_len, ...) of
//   o < taps * K * C, o = (t, k, c):  A[p + o_t, k] * B[p, c]   (kConv: taps = 5, A zero
//                                     outside the image; else taps = 1, o_t = 0, and
//                                     relu(A) when kReluA)
//   o = taps * K * C + c:             B[p, c]                    (the bias)
// A: (P, K), B: (P, C), part: (chunks, taps * K * C + C).
template <typename scalar_t, typename acc_t, bool kConv, bool kReluA>
__global__ void weight_grad_partials(const scalar_t* __restrict__ a,
                                     const scalar_t* __restrict__ bm, acc_t* __restrict__ part,
                                     int64_t P, int K, int C, int R, int W, int64_t chunk_len) {
  const int64_t n_w = (kConv ? kTaps : 1) * static_cast<int64_t>(K) * C;
  const int64_t n_out = n_w + C;
  const int64_t p0 = static_cast<int64_t>(blockIdx.x) * chunk_len;
  const int64_t p1 = p0 + chunk_len < P ? p0 + chunk_len : P;
  acc_t* row_out = part + static_cast<int64_t>(blockIdx.x) * n_out;
  const int64_t stride = static_cast<int64_t>(gridDim.y) * blockDim.x;
  for (int64_t o = static_cast<int64_t>(blockIdx.y) * blockDim.x + threadIdx.x; o < n_out;
       o += stride) {
    acc_t s = acc_t(0);
    if (o >= n_w) {
      const int c = static_cast<int>(o - n_w);
      for (int64_t p = p0; p < p1; ++p) s += static_cast<acc_t>(bm[p * C + c]);
    } else {
      const int64_t tk = o / C;
      const int c = static_cast<int>(o - tk * C);
      const int t = static_cast<int>(tk / K);
      const int k = static_cast<int>(tk - static_cast<int64_t>(t) * K);
      if (kConv) {
        const int dr = tap_row(t), dc = tap_col(t);
        const int64_t shift = static_cast<int64_t>(dr) * W + dc;
        int row, col;
        pixel_position(p0, R, W, &row, &col);
        for (int64_t p = p0; p < p1; ++p) {
          const int rr = row + dr, cc = col + dc;
          if (rr >= 0 && cc >= 0 && cc < W) {
            s += static_cast<acc_t>(a[(p + shift) * K + k]) * static_cast<acc_t>(bm[p * C + c]);
          }
          if (++col == W) {  // the next pixel's position
            col = 0;
            if (++row == R) row = 0;
          }
        }
      } else {
        for (int64_t p = p0; p < p1; ++p) {
          acc_t av = static_cast<acc_t>(a[p * K + k]);
          if (kReluA) av = relu(av);
          s += av * static_cast<acc_t>(bm[p * C + c]);
        }
      }
    }
    row_out[o] = s;
  }
}

// gw[o] (o < n_w) or gb[o - n_w] = sum over the chunks of part[chunk, o], in chunk order.
template <typename scalar_t, typename acc_t>
__global__ void weight_grad_sum(const acc_t* __restrict__ part, int64_t chunks, int64_t n_w,
                                int64_t n_out, scalar_t* __restrict__ gw,
                                scalar_t* __restrict__ gb) {
  for (int64_t o = flat_index(); o < n_out; o += flat_stride()) {
    acc_t s = acc_t(0);
    for (int64_t ch = 0; ch < chunks; ++ch) s += part[ch * n_out + o];
    if (o < n_w) {
      gw[o] = static_cast<scalar_t>(s);
    } else {
      gb[o - n_w] = static_cast<scalar_t>(s);
    }
  }
}

// ---- launch geometry

struct Flat {
  int64_t blocks;
  int threads;
};

// n items, one per thread, blocks of up to kThreads (and max_threads), striding past
// kMaxBlocks blocks.
inline Flat flat_launch(int64_t n, int max_threads) {
  const int threads = block_threads(n, std::min(max_threads, kThreads));
  return {std::max<int64_t>(1, std::min<int64_t>((n + threads - 1) / threads, kMaxBlocks)),
          threads};
}

// The weight-gradient reduction of n_out outputs over P > 0 pixels: chunks (gridDim.x) of
// chunk_len pixels, at least kChunkPixels each, at most kMaxChunks of them and at most
// kPartialBudget partial sums in all (one row of n_out per chunk).
struct Reduction {
  int64_t chunks, chunk_len, out_blocks;
  int threads;
};

inline Reduction reduction_plan(int64_t P, int64_t n_out, int max_threads) {
  Reduction r{};
  r.threads = block_threads(n_out, std::min(max_threads, kThreads));
  const int64_t by_budget = std::max<int64_t>(1, kPartialBudget / std::max<int64_t>(1, n_out));
  const int64_t want = (P + kChunkPixels - 1) / kChunkPixels;
  r.chunks = std::max<int64_t>(1, std::min({want, kMaxChunks, by_budget}));
  r.chunk_len = (P + r.chunks - 1) / r.chunks;
  r.chunks = (P + r.chunk_len - 1) / r.chunk_len;  // none empty
  r.out_blocks = std::max<int64_t>(
      1, std::min<int64_t>((n_out + r.threads - 1) / r.threads, kMaxOutputBlocks));
  return r;
}

template <typename Dev, typename Kernel, typename... Args>
void launch_flat(Kernel kernel, int64_t n, Args... args) {
  if (n == 0) return;
  const Flat g = flat_launch(n, Dev::max_threads());
  Dev::launch(kernel, g.blocks, 1, g.threads, 0, args...);
}

// gw (taps * K * C values) and gb (C) of A (P, K) and B (P, C); see weight_grad_partials.
template <typename Dev, typename scalar_t, bool kConv, bool kReluA>
void weight_grad(const scalar_t* a, const scalar_t* bm, int64_t P, int64_t K, int64_t C,
                 int64_t R, int64_t W, at::Tensor& gw, at::Tensor& gb) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t n_w = (kConv ? kTaps : 1) * K * C, n_out = n_w + C;
  const Reduction r = reduction_plan(P, n_out, Dev::max_threads());
  at::Tensor part =
      at::empty({r.chunks, n_out}, gw.options().dtype(c10::CppTypeToScalarType<acc_t>::value));
  Dev::launch(weight_grad_partials<scalar_t, acc_t, kConv, kReluA>, r.chunks, r.out_blocks,
              r.threads, 0, a, bm, part.data_ptr<acc_t>(), P, static_cast<int>(K),
              static_cast<int>(C), static_cast<int>(R), static_cast<int>(W), r.chunk_len);
  launch_flat<Dev>(weight_grad_sum<scalar_t, acc_t>, n_out,
                   static_cast<const acc_t*>(part.data_ptr<acc_t>()), r.chunks, n_w, n_out,
                   gw.data_ptr<scalar_t>(), gb.data_ptr<scalar_t>());
}

// ---- checks

constexpr const char* kOp = "pixelar::conv_residual_block (CUDA)";
constexpr const char* kOpBwd = "pixelar::conv_residual_block_backward (CUDA)";

struct Sizes {
  int64_t B, F, h, R, W;
};

template <typename Dev>
constexpr checks::Target target() {
  return {Dev::kDeviceType, false};
}

// x (B, F, R, W) and the weights, w_reduce (F, h), w_conv (5, h, h), w_expand (h, F): of
// one dtype and device, h >= 1; the ints of the kernels.
template <typename Dev>
Sizes check_block(const char* op, const at::Tensor& x, const at::Tensor& w_reduce,
                  const at::Tensor& w_conv, const at::Tensor& w_expand) {
  checks::check_input(op, "x", x, 4, "(B, F, R, W)", target<Dev>());
  checks::check_input(op, "w_reduce", w_reduce, 2, "(F, h)", target<Dev>());
  checks::check_input(op, "w_conv", w_conv, 3, "(5, h, h)", target<Dev>());
  checks::check_input(op, "w_expand", w_expand, 2, "(h, F)", target<Dev>());
  checks::check_like(op, "w_reduce", w_reduce, "x", x);
  checks::check_like(op, "w_conv", w_conv, "x", x);
  checks::check_like(op, "w_expand", w_expand, "x", x);
  const Sizes n{x.size(0), x.size(1), w_reduce.size(1), x.size(2), x.size(3)};
  TORCH_CHECK_VALUE(n.h >= 1, op, ": need at least one hidden feature (w_reduce (F, h), h >= 1)");
  checks::check_shape(op, "w_reduce", w_reduce, {n.F, n.h}, "(F, h)");
  checks::check_shape(op, "w_conv", w_conv, {kTaps, n.h, n.h}, "(5, h, h)");
  checks::check_shape(op, "w_expand", w_expand, {n.h, n.F}, "(h, F)");
  checks::check_index32(op, {n.F, n.h, n.R, n.W}, "a dimension of x or of the weights");
  return n;
}

// A tensor of x's dtype and device and of shape `shape` (named `layout` in the messages).
template <typename Dev>
void check_tensor_like_x(const char* op, const char* name, const at::Tensor& t,
                         const at::Tensor& x, at::IntArrayRef shape, const char* layout) {
  checks::check_input(op, name, t, static_cast<int64_t>(shape.size()), layout, target<Dev>());
  checks::check_like(op, name, t, "x", x);
  checks::check_shape(op, name, t, shape, layout);
}

inline at::Tensor channels_last(const at::Tensor& t) {
  return t.contiguous(at::MemoryFormat::ChannelsLast);
}

inline at::Tensor empty_map(const at::Tensor& x, int64_t C) {
  return at::empty({x.size(0), C, x.size(2), x.size(3)},
                   x.options().memory_format(at::MemoryFormat::ChannelsLast));
}

}  // namespace conv_residual

template <typename Dev>
std::tuple<at::Tensor, at::Tensor, at::Tensor> conv_residual_block(
    const at::Tensor& x_in, const at::Tensor& w_reduce_in, const at::Tensor& b_reduce_in,
    const at::Tensor& w_conv_in, const at::Tensor& b_conv_in, const at::Tensor& w_expand_in,
    const at::Tensor& b_expand_in) {
  namespace cr = conv_residual;
  const char* op = cr::kOp;
  const cr::Sizes n = cr::check_block<Dev>(op, x_in, w_reduce_in, w_conv_in, w_expand_in);
  cr::check_tensor_like_x<Dev>(op, "b_reduce", b_reduce_in, x_in, {n.h}, "(h,)");
  cr::check_tensor_like_x<Dev>(op, "b_conv", b_conv_in, x_in, {n.h}, "(h,)");
  cr::check_tensor_like_x<Dev>(op, "b_expand", b_expand_in, x_in, {n.F}, "(F,)");
  const typename Dev::Guard guard(x_in.device());
  at::Tensor out = cr::empty_map(x_in, n.F), r2 = cr::empty_map(x_in, n.h),
             r3 = cr::empty_map(x_in, n.h);
  const int64_t P = n.B * n.R * n.W;
  if (P == 0) return {out, r2, r3};
  const at::Tensor x = cr::channels_last(x_in), w_reduce = w_reduce_in.contiguous(),
                   b_reduce = b_reduce_in.contiguous(), w_conv = w_conv_in.contiguous(),
                   b_conv = b_conv_in.contiguous(), w_expand = w_expand_in.contiguous(),
                   b_expand = b_expand_in.contiguous();
  const int F = static_cast<int>(n.F), h = static_cast<int>(n.h), R = static_cast<int>(n.R),
            W = static_cast<int>(n.W);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "conv_residual_block_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* r2c = r2.data_ptr<scalar_t>();
    const scalar_t* r3c = r3.data_ptr<scalar_t>();
    cr::launch_flat<Dev>(cr::reduce_kernel<scalar_t, acc_t>, P * h, xp,
                         static_cast<const scalar_t*>(w_reduce.data_ptr<scalar_t>()),
                         static_cast<const scalar_t*>(b_reduce.data_ptr<scalar_t>()),
                         r2.data_ptr<scalar_t>(), P, F, h);
    cr::launch_flat<Dev>(cr::conv_kernel<scalar_t, acc_t>, P * h, r2c,
                         static_cast<const scalar_t*>(w_conv.data_ptr<scalar_t>()),
                         static_cast<const scalar_t*>(b_conv.data_ptr<scalar_t>()),
                         r3.data_ptr<scalar_t>(), P, h, R, W);
    cr::launch_flat<Dev>(cr::expand_kernel<scalar_t, acc_t>, P * F, xp, r3c,
                         static_cast<const scalar_t*>(w_expand.data_ptr<scalar_t>()),
                         static_cast<const scalar_t*>(b_expand.data_ptr<scalar_t>()),
                         out.data_ptr<scalar_t>(), P, F, h);
  });
  return {out, r2, r3};
}

template <typename Dev>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
conv_residual_block_backward(const at::Tensor& grad_out_in, const at::Tensor& x_in,
                             const at::Tensor& w_reduce_in, const at::Tensor& w_conv_in,
                             const at::Tensor& w_expand_in, const at::Tensor& r2_in,
                             const at::Tensor& r3_in) {
  namespace cr = conv_residual;
  const char* op = cr::kOpBwd;
  const cr::Sizes n = cr::check_block<Dev>(op, x_in, w_reduce_in, w_conv_in, w_expand_in);
  cr::check_tensor_like_x<Dev>(op, "grad_out", grad_out_in, x_in, {n.B, n.F, n.R, n.W},
                               "(B, F, R, W)");
  cr::check_tensor_like_x<Dev>(op, "r2", r2_in, x_in, {n.B, n.h, n.R, n.W}, "(B, h, R, W)");
  cr::check_tensor_like_x<Dev>(op, "r3", r3_in, x_in, {n.B, n.h, n.R, n.W}, "(B, h, R, W)");
  const typename Dev::Guard guard(x_in.device());
  at::Tensor grad_x = cr::empty_map(x_in, n.F);
  const auto opts = x_in.options();
  at::Tensor gw_reduce = at::empty({n.F, n.h}, opts), gb_reduce = at::empty({n.h}, opts),
             gw_conv = at::empty({cr::kTaps, n.h, n.h}, opts), gb_conv = at::empty({n.h}, opts),
             gw_expand = at::empty({n.h, n.F}, opts), gb_expand = at::empty({n.F}, opts);
  const int64_t P = n.B * n.R * n.W;
  if (P == 0) {
    for (at::Tensor* t : {&gw_reduce, &gb_reduce, &gw_conv, &gb_conv, &gw_expand, &gb_expand}) {
      t->zero_();
    }
    return {grad_x, gw_reduce, gb_reduce, gw_conv, gb_conv, gw_expand, gb_expand};
  }
  const at::Tensor g = cr::channels_last(grad_out_in), x = cr::channels_last(x_in),
                   r2 = cr::channels_last(r2_in), r3 = cr::channels_last(r3_in),
                   w_reduce = w_reduce_in.contiguous(), w_conv = w_conv_in.contiguous(),
                   w_expand = w_expand_in.contiguous();
  at::Tensor gy2 = cr::empty_map(x_in, n.h), gy1 = cr::empty_map(x_in, n.h);
  const int F = static_cast<int>(n.F), h = static_cast<int>(n.h), R = static_cast<int>(n.R),
            W = static_cast<int>(n.W);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "conv_residual_block_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* gp = g.data_ptr<scalar_t>();
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* r2p = r2.data_ptr<scalar_t>();
    const scalar_t* r3p = r3.data_ptr<scalar_t>();
    const scalar_t* gy2c = gy2.data_ptr<scalar_t>();
    const scalar_t* gy1c = gy1.data_ptr<scalar_t>();
    cr::launch_flat<Dev>(cr::grad_y2_kernel<scalar_t, acc_t>, P * h, gp,
                         static_cast<const scalar_t*>(w_expand.data_ptr<scalar_t>()), r3p,
                         gy2.data_ptr<scalar_t>(), P, F, h);
    cr::launch_flat<Dev>(cr::grad_y1_kernel<scalar_t, acc_t>, P * h, gy2c,
                         static_cast<const scalar_t*>(w_conv.data_ptr<scalar_t>()), r2p,
                         gy1.data_ptr<scalar_t>(), P, h, R, W);
    cr::launch_flat<Dev>(cr::grad_x_kernel<scalar_t, acc_t>, P * F, gp, xp, gy1c,
                         static_cast<const scalar_t*>(w_reduce.data_ptr<scalar_t>()),
                         grad_x.data_ptr<scalar_t>(), P, F, h);
    // grad_w_expand (h, F) = sum r3^T g; grad_w_conv[t] (h, h) = sum r2[p + o_t]^T g_y2;
    // grad_w_reduce (F, h) = sum relu(x)^T g_y1; the biases: sums of g, g_y2, g_y1
    cr::weight_grad<Dev, scalar_t, false, false>(r3p, gp, P, h, F, R, W, gw_expand, gb_expand);
    cr::weight_grad<Dev, scalar_t, true, false>(r2p, gy2c, P, h, h, R, W, gw_conv, gb_conv);
    cr::weight_grad<Dev, scalar_t, false, true>(xp, gy1c, P, F, h, R, W, gw_reduce, gb_reduce);
  });
  return {grad_x, gw_reduce, gb_reduce, gw_conv, gb_conv, gw_expand, gb_expand};
}

}  // namespace cuda
}  // namespace pixelar

// The CUDA build registers the launchers for CudaDevice; the emulation tests
// (tests/cuda_emulation/) include this file with PIXELAR_CUDA_EMULATION defined and
// instantiate them for their host device policy instead.
#if !defined(PIXELAR_CUDA_EMULATION)
TORCH_LIBRARY_IMPL(pixelar, CUDA, m) {
  using pixelar::cuda::CudaDevice;
  m.impl("conv_residual_block", &pixelar::cuda::conv_residual_block<CudaDevice>);
  m.impl("conv_residual_block_backward",
         &pixelar::cuda::conv_residual_block_backward<CudaDevice>);
}
#endif
