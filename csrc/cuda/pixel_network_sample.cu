// CUDA kernel of pixelar::pixel_network_sample_step: cached sampling of PixelCNN and
// PixelRNN (Row LSTM, Diagonal BiLSTM), pixels [start, stop) of every image in one launch
// (semantics, packed weight layout and state layout: the docstring of
// pixelar/ops/pixel_network_sample.py; the CPU kernel: csrc/cpu/pixel_network_sample.cpp,
// whose structure this kernel follows step by step).
//
// Design: one thread block per image runs the whole pixel loop. Per pixel and channel, the
// column of layers at (r, c) is a chain of small dense products, one stage per product:
// thread g computes output g (bias, then the sum over the stage's inputs, read from shared
// memory; the weights are input-major, so a warp reads 32 consecutive weights per input),
// and a __syncthreads separates the stages. The running layer input y, the gates, the
// layer's hidden values and the head live in shared memory; the new h / cell / layer input
// of every layer at (r, c) go to a per-image "pending" workspace in global memory and are
// written to the cache (the state tensors, global memory) after the pixel's last channel.
// Thread 0 draws each value (pixelar/sampling_math.h: float64 inverse CDF, the rule of
// pixelar/ops/draw.py) and writes it to x, which the next channel's input convolution
// reads. For the Diagonal BiLSTM the right-to-left direction of row r runs after the row's
// last pixel, column by column, two stages per column. The kernel calls one __device__
// function per stage group: input_conv, conv_layer / row_layer / diagonal_layer, head_and_draw,
// commit_column, right_to_left_row. LSTM cells: lstm_math.h with
// math::CellMath, as the CPU kernel. Kernel, launcher and registration are compiled by
// nvcc, all but the registration by the CPU emulation tests.
#if !defined(PIXELAR_CUDA_EMULATION)  // the CUDA build: the registration below
#include <torch/library.h>

#include "cuda_device.cuh"
#endif

#include <optional>
#include <string>
#include <vector>

#include "pixelar/lstm_math.h"
#include "pixelar/sampling_math.h"
#include "pixelar/pixel_network_args.h"
#include "sampling_common.cuh"

namespace pixelar {
namespace cuda {
namespace pixel_sampling {

using namespace sampling_kernels;

constexpr const char* kOp = "pixelar::pixel_network_sample_step";
using pixel_network::block_params;
using pixel_network::kConv;
using pixel_network::kDiagonal;
using pixel_network::kRow;

// Everything the kernel reads: sizes, weight pointers, state and workspace pointers.
// Pointers to tensors the kernel writes (x, state, pending) are not __restrict__ / const:
// they are read back in the same launch, so they must not go through the read-only cache.
template <typename T>
struct Net : pixel_network::Buffers<T> {
  int layer;
  int C, H, W, F, U, Q, O, L;  // U: h (conv) or hidden units (LSTM); Q: head hidden
  int64_t levels;
  const T* const* blk;  // device table of L * block_params(layer) pointers
  T* pend;              // (B, L * (2U + F)): new h, new cell, layer input at (r, c)
  int64_t pend_stride;
  int64_t* bad;         // smallest dimension drawn from a non-finite logit (a flag)

  __device__ __forceinline__ const T* p(int l, int i) const {
    return blk[l * block_params(layer) + i];
  }
};

// out = bias + sum_k act(x[k]) * w[k * ldw] for one output (w already offset to it).
template <typename T, bool kRelu = false>
__device__ __forceinline__ T dot_acc(T acc, const T* x, int K, const T* __restrict__ w,
                                     int64_t ldw) {
  for (int k = 0; k < K; ++k) {
    const T xk = kRelu ? relu(x[k]) : x[k];
    acc += xk * w[k * ldw];
  }
  return acc;
}

template <typename T>
__device__ __forceinline__ T pixel_value(const int64_t* x, int64_t i, T norm) {
  const int64_t v = x[i];
  return v == 0 ? T(0) : div_rn(static_cast<T>(v), norm);
}

// What one block (one image) works on at pixel (r, c): the shared-memory buffers, the
// image's tensors and state, its row of the pending workspace, and the thread's place.
// Shared memory (T): y (F), pre (4U), hc (U), cell (U), hid (Q), logits (O).
template <typename T>
struct Block {
  T* y;       // F   the running layer input / output
  T* pre;     // 4U  gates, or the conv block's 3x3 outputs
  T* hc;      // U   ReLU(1x1) (conv), h (row), features (diag)
  T* cell;    // U   right-to-left cell state
  T* hid;     // Q   head hidden
  T* logits;  // O
  int64_t* x;
  const double* u;
  const int64_t* cond;
  T *s0, *s1, *s2, *s3;          // the image's state tensors (pixel_network_args.h)
  T *pend_h, *pend_c, *pend_y;   // L * U, L * U, L * F
  T norm;                        // image value = x / (levels - 1)
  int tid, nt;
  int r, c, above, here;         // the pixel, and the rows of the (2, W, .) caches
};

// y = the input convolution at (r, c), 7x7 mask A: rows r-3..r, the centre row up to
// column c.
template <typename T>
__device__ __forceinline__ void input_conv(const Net<T>& n, const Block<T>& k) {
  const int C = n.C, H = n.H, W = n.W, F = n.F, r = k.r, c = k.c;
  for (int f = k.tid; f < F; f += k.nt) {
    T acc = n.in_b[f];
    for (int ky = 0; ky < 4; ++ky) {
      const int rr = r + ky - 3;
      if (rr < 0) continue;
      for (int kx = 0; kx < (ky < 3 ? 7 : 4); ++kx) {
        const int cc = c + kx - 3;
        if (cc < 0 || cc >= W) continue;
        const T* w = n.in_w + static_cast<int64_t>((ky * 7 + kx) * C) * F + f;
        for (int ci = 0; ci < C; ++ci) {
          const T v = pixel_value(k.x, (static_cast<int64_t>(ci) * H + rr) * W + cc, k.norm);
          acc += v * w[static_cast<int64_t>(ci) * F];
        }
      }
    }
    k.y[f] = acc;
  }
  __syncthreads();
}

// PixelCNN residual block l at (r, c): y += ReLU(conv3x3(ReLU(ReLU(y) @ red))) @ exp.
template <typename T>
__device__ __forceinline__ void conv_layer(const Net<T>& n, const Block<T>& k, int l) {
  const int W = n.W, F = n.F, U = n.U, r = k.r, c = k.c, above = k.above, here = k.here;
  T* ph = k.pend_h + l * U;
  T* hc = k.hc;
  T* pre = k.pre;
  T* y = k.y;
  const T* act = k.s0 + static_cast<int64_t>(l) * 2 * W * U;  // (2, W, U)
  const T* red_w = n.p(l, 0);
  const T* red_b = n.p(l, 1);
  const T* cw = n.p(l, 2);  // (2, 3, U, U)
  const T* conv_b = n.p(l, 3);
  const T* exp_w = n.p(l, 4);
  const T* exp_b = n.p(l, 5);
  // a = ReLU(ReLU(y) @ red_w + red_b)
  for (int j = k.tid; j < U; j += k.nt) {
    const T v = relu(dot_acc<T, true>(red_b[j], y, F, red_w + j, U));
    hc[j] = v;
    ph[j] = v;
  }
  __syncthreads();
  // z = conv_b + 3x3 mask-B taps over a
  for (int j = k.tid; j < U; j += k.nt) {
    T acc = dot_acc(conv_b[j], hc, U, cw + 4 * U * U + j, U);
    if (r >= 1) {
      for (int kx = 0; kx < 3; ++kx) {
        const int cc = c + kx - 1;
        if (cc >= 0 && cc < W)
          acc = dot_acc(acc, act + (above * W + cc) * U, U, cw + kx * U * U + j, U);
      }
    }
    if (c >= 1) acc = dot_acc(acc, act + (here * W + c - 1) * U, U, cw + 3 * U * U + j, U);
    pre[j] = acc;
  }
  __syncthreads();
  // y = y + (ReLU(z) @ exp_w + exp_b)
  for (int f = k.tid; f < F; f += k.nt) y[f] += dot_acc<T, true>(exp_b[f], pre, U, exp_w + f, F);
  __syncthreads();
}

// Row LSTM layer l at (r, c): gates from y, the layer input to the left and h of the row
// above (1 x 3), the cell, y += h @ out.
template <typename T>
__device__ __forceinline__ void row_layer(const Net<T>& n, const Block<T>& k, int l) {
  const int W = n.W, F = n.F, U = n.U, G = 4 * U, r = k.r, c = k.c, above = k.above;
  T* ph = k.pend_h + l * U;
  T* pc = k.pend_c + l * U;
  T* hc = k.hc;
  T* pre = k.pre;
  T* y = k.y;
  const T* hs = k.s0 + static_cast<int64_t>(l) * 2 * W * U;  // (2, W, U)
  const T* cs = k.s1 + static_cast<int64_t>(l) * 2 * W * U;
  const T* ys = k.s3 + static_cast<int64_t>(l) * W * F;      // (W, F)
  const T* is_w = n.p(l, 0);                                 // (2, F, G)
  const T* is_b = n.p(l, 1);
  const T* ss_w = n.p(l, 2);                                 // (3, U, G)
  const T* out_w = n.p(l, 3);
  const T* out_b = n.p(l, 4);
  for (int f = k.tid; f < F; f += k.nt) k.pend_y[l * F + f] = y[f];
  for (int g = k.tid; g < G; g += k.nt) {
    T acc = dot_acc(is_b[g], y, F, is_w + F * G + g, G);
    if (c >= 1) acc = dot_acc(acc, ys + (c - 1) * F, F, is_w + g, G);
    if (r >= 1) {
      for (int kx = 0; kx < 3; ++kx) {
        const int cc = c + kx - 1;
        if (cc >= 0 && cc < W)
          acc = dot_acc(acc, hs + (above * W + cc) * U, U, ss_w + kx * U * G + g, G);
      }
    }
    pre[g] = acc;
  }
  __syncthreads();
  for (int j = k.tid; j < U; j += k.nt) {
    const T c_prev = r >= 1 ? cs[(above * W + c) * U + j] : T(0);
    T cn, hn;
    math::lstm_cell_forward<T, math::CellMath>(pre[j], pre[U + j], pre[2 * U + j],
                                               pre[3 * U + j], c_prev, &cn, &hn);
    hc[j] = hn;
    ph[j] = hn;
    pc[j] = cn;
  }
  __syncthreads();
  for (int f = k.tid; f < F; f += k.nt) y[f] += dot_acc(out_b[f], hc, U, out_w + f, F);
  __syncthreads();
}

// Diagonal BiLSTM layer l at (r, c), left-to-right direction: gates from y and the h of
// (r - 1, c) and (r, c - 1), the cell, y += (h + the right-to-left h of the row above) @ out.
template <typename T>
__device__ __forceinline__ void diagonal_layer(const Net<T>& n, const Block<T>& k, int l) {
  const int W = n.W, F = n.F, U = n.U, G = 4 * U, r = k.r, c = k.c;
  T* ph = k.pend_h + l * U;
  T* pc = k.pend_c + l * U;
  T* hc = k.hc;
  T* pre = k.pre;
  T* y = k.y;
  const T* hs = k.s0 + static_cast<int64_t>(l) * W * U;    // (W, U)
  const T* cl = k.s1 + static_cast<int64_t>(l) * U;        // (U,)
  const T* back = k.s2 + static_cast<int64_t>(l) * W * U;  // (W, U)
  const T* l2r_w = n.p(l, 0);                              // (F, G)
  const T* l2r_b = n.p(l, 1);
  const T* ss = n.p(l, 2);                                 // (2, U, G)
  const T* out_w = n.p(l, 6);
  const T* out_b = n.p(l, 7);
  for (int f = k.tid; f < F; f += k.nt) k.pend_y[l * F + f] = y[f];
  for (int g = k.tid; g < G; g += k.nt) {
    T acc = dot_acc(l2r_b[g], y, F, l2r_w + g, G);
    if (r >= 1) acc = dot_acc(acc, hs + c * U, U, ss + g, G);
    if (c >= 1) acc = dot_acc(acc, hs + (c - 1) * U, U, ss + U * G + g, G);
    pre[g] = acc;
  }
  __syncthreads();
  for (int j = k.tid; j < U; j += k.nt) {
    const T c_prev = c >= 1 ? cl[j] : T(0);
    T cn, hn;
    math::lstm_cell_forward<T, math::CellMath>(pre[j], pre[U + j], pre[2 * U + j],
                                               pre[3 * U + j], c_prev, &cn, &hn);
    ph[j] = hn;
    pc[j] = cn;
    hc[j] = r >= 1 ? hn + back[c * U + j] : hn;
  }
  __syncthreads();
  for (int f = k.tid; f < F; f += k.nt) y[f] += dot_acc(out_b[f], hc, U, out_w + f, F);
  __syncthreads();
}

// The head (ReLU, 1x1 -> Q, ReLU, 1x1 -> the O logits of channel ch) and thread 0's draw
// of x at (ch, r, c), which the next channel's input convolution reads.
template <typename T>
__device__ __forceinline__ void head_and_draw(const Net<T>& n, const Block<T>& k, int ch) {
  const int C = n.C, H = n.H, W = n.W, F = n.F, Q = n.Q, O = n.O, r = k.r, c = k.c;
  T* hid = k.hid;
  T* logits = k.logits;
  for (int q = k.tid; q < Q; q += k.nt) hid[q] = dot_acc<T, true>(n.b1[q], k.y, F, n.w1 + q, Q);
  __syncthreads();
  for (int o = k.tid; o < O; o += k.nt) {
    logits[o] = dot_acc<T, true>(n.b2[ch * O + o], hid, Q, n.w2 + ch * O + o,
                                 static_cast<int64_t>(C) * O);
  }
  __syncthreads();
  if (k.tid == 0) {
    const int64_t i = (static_cast<int64_t>(ch) * H + r) * W + c;
    int64_t value = O == 1 ? sampling::draw_bernoulli(logits[0], k.u[i])
                           : sampling::draw_categorical(logits, O, 1, k.u[i]);
    if (k.cond != nullptr && k.cond[i] >= 0) {
      value = k.cond[i];
    } else if (!(O == 1 ? sampling::logit_finite(logits[0])
                        : sampling::logits_finite(logits, O, 1))) {
      record_nonfinite(n.bad, (static_cast<int64_t>(r) * W + c) * C + ch);
    }
    k.x[i] = value;
  }
  __syncthreads();  // x[i] is read by the next channel's input convolution
}

// The pending h / cell / layer input of every layer at (r, c) written to the cache.
template <typename T>
__device__ __forceinline__ void commit_column(const Net<T>& n, const Block<T>& k) {
  const int W = n.W, F = n.F, U = n.U, L = n.L, c = k.c, here = k.here;
  for (int l = 0; l < L; ++l) {
    const T* ph = k.pend_h + l * U;
    const T* pc = k.pend_c + l * U;
    if (n.layer == kConv) {
      T* act = k.s0 + (static_cast<int64_t>(l) * 2 * W + here * W + c) * U;
      for (int j = k.tid; j < U; j += k.nt) act[j] = ph[j];
    } else if (n.layer == kRow) {
      const int64_t at = (static_cast<int64_t>(l) * 2 * W + here * W + c) * U;
      for (int j = k.tid; j < U; j += k.nt) {
        k.s0[at + j] = ph[j];
        k.s1[at + j] = pc[j];
      }
      T* ys = k.s3 + (static_cast<int64_t>(l) * W + c) * F;
      for (int f = k.tid; f < F; f += k.nt) ys[f] = k.pend_y[l * F + f];
    } else {
      T* hs = k.s0 + (static_cast<int64_t>(l) * W + c) * U;
      T* cl = k.s1 + static_cast<int64_t>(l) * U;
      for (int j = k.tid; j < U; j += k.nt) {
        hs[j] = ph[j];
        cl[j] = pc[j];
      }
      T* ys = k.s3 + (static_cast<int64_t>(l) * W + c) * F;
      for (int f = k.tid; f < F; f += k.nt) ys[f] = k.pend_y[l * F + f];
    }
  }
  __syncthreads();
}

// Diagonal BiLSTM, after the last pixel of row r: the image row r through the
// right-to-left direction of every layer, back[l][c] = h(r, c), from column W - 1 down to 0.
template <typename T>
__device__ __forceinline__ void right_to_left_row(const Net<T>& n, const Block<T>& k) {
  const int C = n.C, H = n.H, W = n.W, F = n.F, U = n.U, G = 4 * U, L = n.L, r = k.r;
  T* pre = k.pre;
  T* cell = k.cell;
  for (int l = 0; l < L; ++l) {
    const T* rw = n.p(l, 3);   // (F + C, G)
    const T* rb = n.p(l, 4);
    const T* rss = n.p(l, 5);  // (2, U, G)
    T* bl = k.s2 + static_cast<int64_t>(l) * W * U;
    const T* ys = k.s3 + static_cast<int64_t>(l) * W * F;
    for (int j = k.tid; j < U; j += k.nt) cell[j] = T(0);  // cell of (r, c + 1)
    for (int cc = W - 1; cc >= 0; --cc) {
      for (int g = k.tid; g < G; g += k.nt) {
        T acc = dot_acc(rb[g], ys + cc * F, F, rw + g, G);
        for (int ci = 0; ci < C; ++ci) {
          const T v = pixel_value(k.x, (static_cast<int64_t>(ci) * H + r) * W + cc, k.norm);
          acc += v * rw[static_cast<int64_t>(F + ci) * G + g];
        }
        if (r >= 1) acc = dot_acc(acc, bl + cc * U, U, rss + g, G);
        if (cc + 1 < W) acc = dot_acc(acc, bl + (cc + 1) * U, U, rss + U * G + g, G);
        pre[g] = acc;
      }
      __syncthreads();
      for (int j = k.tid; j < U; j += k.nt) {
        T cn, hn;
        math::lstm_cell_forward<T, math::CellMath>(pre[j], pre[U + j], pre[2 * U + j],
                                                   pre[3 * U + j], cell[j], &cn, &hn);
        bl[cc * U + j] = hn;
        cell[j] = cn;
      }
      __syncthreads();
    }
  }
}

// One block per image: pixels [start, stop), each channel through the input convolution,
// the L layers and the head, then the column's commit (and, for the Diagonal BiLSTM at the
// end of a row, the row's right-to-left direction). Every thread calls every stage (each
// ends in __syncthreads).
template <typename T>
__global__ void __launch_bounds__(kMaxSampleThreads)
pixel_network_sample_kernel(const Net<T> n, int64_t start, int64_t stop) {
  PIXELAR_DYNAMIC_SMEM(smem_raw);
  const int C = n.C, H = n.H, W = n.W, F = n.F, U = n.U, Q = n.Q, L = n.L;
  Block<T> k;
  k.tid = threadIdx.x;
  k.nt = blockDim.x;
  k.y = reinterpret_cast<T*>(smem_raw);
  k.pre = k.y + F;
  k.hc = k.pre + 4 * U;
  k.cell = k.hc + U;
  k.hid = k.cell + U;
  k.logits = k.hid + Q;

  const int64_t b = blockIdx.x;
  const int64_t CHW = static_cast<int64_t>(C) * H * W;
  k.x = n.x + b * CHW;
  k.u = n.u + b * CHW;
  k.cond = n.cond ? n.cond + b * CHW : nullptr;
  k.s0 = n.state[0] + b * n.state_stride[0];
  k.s1 = n.layer == kConv ? nullptr : n.state[1] + b * n.state_stride[1];
  k.s2 = n.layer == kDiagonal ? n.state[2] + b * n.state_stride[2] : nullptr;
  k.s3 = n.layer == kRow ? n.state[2] + b * n.state_stride[2]
                         : (n.layer == kDiagonal ? n.state[3] + b * n.state_stride[3]
                                                 : nullptr);
  k.pend_h = n.pend + b * n.pend_stride;
  k.pend_c = k.pend_h + L * U;
  k.pend_y = k.pend_c + L * U;
  k.norm = static_cast<T>(n.levels - 1);

  for (int64_t p = start; p < stop; ++p) {
    k.r = static_cast<int>(p / W);
    k.c = static_cast<int>(p % W);
    k.above = (k.r - 1) & 1;
    k.here = k.r & 1;
    for (int ch = 0; ch < C; ++ch) {
      input_conv(n, k);
      for (int l = 0; l < L; ++l) {
        if (n.layer == kConv) {
          conv_layer(n, k, l);
        } else if (n.layer == kRow) {
          row_layer(n, k, l);
        } else {
          diagonal_layer(n, k, l);
        }
      }
      head_and_draw(n, k, ch);
    }
    commit_column(n, k);
    if (n.layer == kDiagonal && k.c == W - 1) right_to_left_row(n, k);
  }
}

}  // namespace pixel_sampling

template <typename Dev>
void pixel_network_sample_step(const at::Tensor& x, at::TensorList state, const at::Tensor& u,
                               const std::optional<at::Tensor>& cond, at::TensorList weights,
                               c10::string_view layer_name, int64_t levels, int64_t start,
                               int64_t stop) {
  using namespace pixel_sampling;
  const std::string name(layer_name.data(), layer_name.size());
  TORCH_CHECK(x.device().type() == Dev::kDeviceType, kOp, ": x must be a ",
              c10::DeviceTypeName(Dev::kDeviceType), " tensor for this kernel, got a tensor on ",
              x.device());
  const at::Device dev = x.device();
  const pixel_network::Sizes sz = pixel_network::check_args(
      kOp, x, u, cond, weights, state, name, levels, start, stop, Dev::kDeviceType);
  const int layer = sz.layer;
  const int64_t B = sz.B, C = sz.C, H = sz.H, W = sz.W, L = sz.L, F = sz.F, U = sz.U,
                G = sz.G, Q = sz.Q, O = sz.O, nw = sz.nw;
  const at::ScalarType dtype = sz.dtype;
  const at::Tensor& in_w = weights[0];
  // offsets inside one weight, one image's state or one image are ints in the kernel
  bool fits = C * H * W <= INT32_MAX && L * (2 * U + F) <= INT32_MAX;
  for (const at::Tensor& w : weights) fits = fits && w.numel() <= INT32_MAX;
  for (const at::Tensor& s : state) fits = fits && (B == 0 || s.numel() / B <= INT32_MAX);
  TORCH_CHECK(fits, kOp, ": the model or image is too large for this kernel (offsets inside "
              "one weight or one image's state must fit in 32 bits)");
  TORCH_CHECK(B <= INT32_MAX, kOp, ": at most 2^31 - 1 images per call, got ", B);
  if (B == 0 || start == stop) return;

  const typename Dev::Guard guard(dev);
  const int64_t pend_stride = L * (2 * U + F);
  at::Tensor pend = at::empty({B, std::max<int64_t>(pend_stride, 1)}, in_w.options());
  // the table of block weight pointers, on the device
  const int64_t nblk = nw - 6;
  at::Tensor table_host = at::empty({nblk}, at::TensorOptions().dtype(at::kLong));
  for (int64_t i = 0; i < nblk; ++i) {
    table_host.data_ptr<int64_t>()[i] =
        static_cast<int64_t>(reinterpret_cast<uintptr_t>(weights[2 + i].data_ptr()));
  }
  const at::Tensor table = Dev::device_table(table_host, dev);
  const at::Tensor bad = sampling_kernels::nonfinite_flag(u);
  const int threads = sample_threads(std::max({F, G, Q, O}), Dev::max_threads());
  AT_DISPATCH_FLOATING_TYPES(dtype, "pixel_network_sample_step_cuda", [&] {
    Net<scalar_t> n{};
    static_cast<pixel_network::Buffers<scalar_t>&>(n) =
        pixel_network::buffers<scalar_t>(sz, x, u, cond, weights, state);
    n.layer = layer;
    n.C = static_cast<int>(C);
    n.H = static_cast<int>(H);
    n.W = static_cast<int>(W);
    n.F = static_cast<int>(F);
    n.U = static_cast<int>(U);
    n.Q = static_cast<int>(Q);
    n.O = static_cast<int>(O);
    n.L = static_cast<int>(L);
    n.levels = levels;
    n.blk = reinterpret_cast<const scalar_t* const*>(table.data_ptr<int64_t>());
    n.pend = pend.data_ptr<scalar_t>();
    n.pend_stride = pend_stride;
    n.bad = bad.data_ptr<int64_t>();
    const size_t smem = pixel_network_smem(F, U, Q, O, sizeof(scalar_t));
    checks::check_smem(kOp, smem, Dev::max_smem_optin(),
                       sampling_kernels::sample_smem_hint("one image's layer input, gates "
                                                          "and head").c_str());
    Dev::launch(pixel_network_sample_kernel<scalar_t>, B, 1, threads, smem, n, start, stop);
  });
  checks::check_logits_finite(bad.item<int64_t>());
}

}  // namespace cuda
}  // namespace pixelar

// The CUDA build registers the launchers for CudaDevice; the emulation tests
// (tests/cuda_emulation/) include this file with PIXELAR_CUDA_EMULATION defined and
// instantiate them for their host device policy instead.
#if !defined(PIXELAR_CUDA_EMULATION)
TORCH_LIBRARY_IMPL(pixelar, CUDA, m) {
  using pixelar::cuda::CudaDevice;
  m.impl("pixel_network_sample_step", &pixelar::cuda::pixel_network_sample_step<CudaDevice>);
}
#endif
