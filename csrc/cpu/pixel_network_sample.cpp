// CPU kernel of pixelar::pixel_network_sample_step: cached sampling of PixelCNN and
// PixelRNN (Row LSTM, Diagonal BiLSTM), any range of pixels in one call (semantics, packed
// weight layout and state layout: the docstring of pixelar/ops/pixel_network_sample.py).
//
// Images are independent: each thread takes images from a shared counter and runs their
// whole pixel loop with no synchronisation. Per pixel and channel, the column of layers at
// (r, c) is computed from the cached states (rows above, pixels to the left) into per-layer
// "pending" buffers; after the pixel's last channel they are written to the cache. For the
// Diagonal BiLSTM, the right-to-left direction of row r runs after the row's last pixel.
// Dense products and LSTM cells: pixelar/simd.h; draws: pixelar/sampling_math.h.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <optional>
#include <string>
#include <vector>

#include "kernel_common.h"
#include "pixelar/checks.h"
#include "pixelar/lstm_math.h"
#include "pixelar/pixel_network_args.h"
#include "pixelar/sampling_math.h"
#include "pixelar/simd.h"

namespace pixelar {
namespace cpu {
namespace {

constexpr const char* kOp = "pixelar::pixel_network_sample_step";
using pixel_network::kConv;
using pixel_network::kDiagonal;
using pixel_network::kRow;

using sampling::copy;

// out[g] += sum_k x[k] * w[k * ldw + g], g < G (ReLU applied to x in the _relu form).
template <typename T>
PIXELAR_HOST_DEVICE_INLINE void affine_acc(T* out, const T* x, int64_t K, const T* w, int64_t G,
                                           int64_t ldw) {
  simd::affine<T, false>(out, x, K, w, G, ldw);
}
template <typename T>
PIXELAR_HOST_DEVICE_INLINE void affine_relu_acc(T* out, const T* x, int64_t K, const T* w,
                                                int64_t G, int64_t ldw) {
  simd::affine<T, true>(out, x, K, w, G, ldw);
}
template <typename T>
PIXELAR_HOST_DEVICE_INLINE void lstm_cell(const T* pre, const T* c_prev, int64_t U, T* h, T* c) {
  simd::lstm_cells(pre, c_prev, U, h, c);
}

// Everything the per-image loop reads: sizes, weight pointers, per-image state pointers.
template <typename T>
struct Net : pixel_network::Buffers<T> {
  int layer;
  int64_t C, H, W, F, U, Q, O, L, levels;  // U: h (conv) or hidden units (LSTM); Q: head
  const T* const* blk;  // L * pixel_network::block_params(layer) pointers

  const T* p(int64_t l, int i) const {
    return blk[l * pixel_network::block_params(layer) + i];
  }
  // y, t, img, pre, hid, logits, feat, pending h / c / y, zeros, right-to-left scratch
  int64_t scratch_size() const {
    return 2 * F + (F + C) + 4 * U + Q + O + 4 * U + L * (2 * U + F) + U + (6 * U + C);
  }
};

template <typename T>
PIXELAR_HOST_DEVICE_INLINE T pixel_value(const Net<T>& n, const int64_t* x, int64_t ch, int64_t r,
                                         int64_t c) {
  const int64_t v = x[(ch * n.H + r) * n.W + c];
  return v == 0 ? T(0) : static_cast<T>(v) / static_cast<T>(n.levels - 1);
}

// The image row r of one image through the right-to-left direction of every layer
// (Diagonal BiLSTM), after the row's last pixel: back[l][c] = h(r, c).
template <typename T>
PIXELAR_SIMD_CLONES void right_to_left_row(const Net<T>& n, int64_t b, int64_t r, T* scratch) {
  const int64_t W = n.W, U = n.U, F = n.F, G = 4 * U;
  const int64_t* x = n.x + b * n.C * n.H * W;
  T* back = n.state[2] + b * n.state_stride[2];
  const T* ys = n.state[3] + b * n.state_stride[3];
  T* pre = scratch;
  T* cell = pre + G;       // U: cell state of (r, c + 1), zero right of the image
  T* cell_new = cell + U;  // U
  T* img = cell_new + U;   // C
  for (int64_t l = 0; l < n.L; ++l) {
    const T* rw = n.p(l, 3);
    const T* rb = n.p(l, 4);
    const T* rss = n.p(l, 5);
    T* bl = back + l * W * U;
    std::fill(cell, cell + U, T(0));
    for (int64_t c = W - 1; c >= 0; --c) {
      copy(pre, rb, G);
      affine_acc(pre, ys + (l * W + c) * F, F, rw, G, G);
      for (int64_t ch = 0; ch < n.C; ++ch) img[ch] = pixel_value(n, x, ch, r, c);
      affine_acc(pre, img, n.C, rw + F * G, G, G);
      if (r >= 1) affine_acc(pre, bl + c * U, U, rss, G, G);
      if (c + 1 < W) affine_acc(pre, bl + (c + 1) * U, U, rss + U * G, G, G);
      lstm_cell(pre, cell, U, bl + c * U, cell_new);
      copy(cell, cell_new, U);
    }
  }
}

// Pixels [start, stop) of image b. Scratch: n.scratch_size() elements. Returns the smallest
// dimension (raster index p * C + ch) drawn from a non-finite logit, or
// sampling::kNoBadDimension.
template <typename T>
PIXELAR_SIMD_CLONES int64_t sample_image(const Net<T>& n, int64_t b, int64_t start,
                                      int64_t stop, T* scratch) {
  const int64_t C = n.C, H = n.H, W = n.W, F = n.F, U = n.U, Q = n.Q, O = n.O, L = n.L;
  const int64_t G = 4 * U;
  int64_t* x = n.x + b * C * H * W;
  const double* u = n.u + b * C * H * W;
  const int64_t* cond = n.cond ? n.cond + b * C * H * W : nullptr;
  T* s0 = n.state[0] + b * n.state_stride[0];
  T* s1 = n.layer == kConv ? nullptr : n.state[1] + b * n.state_stride[1];
  T* s2 = n.layer == kDiagonal ? n.state[2] + b * n.state_stride[2] : nullptr;
  T* s3 = n.layer == kRow ? n.state[2] + b * n.state_stride[2]
                          : (n.layer == kDiagonal ? n.state[3] + b * n.state_stride[3]
                                                  : nullptr);
  // scratch
  T* y = scratch;              // F      the running layer input / output
  T* t = y + F;                // F      a block's output before the residual sum
  T* img = t + F;              // F + C  image values
  T* pre = img + F + C;        // 4U     gates, or the conv block's 1x1 / 3x3 outputs
  T* hid = pre + 4 * U;        // Q      head hidden
  T* logits = hid + Q;         // O
  T* feat = logits + O;        // 4U     LSTM features
  T* pend_h = feat + 4 * U;    // L * U  new h (LSTM) or ReLU(1x1) (conv) at (r, c)
  T* pend_c = pend_h + L * U;  // L * U  new cell state
  T* pend_y = pend_c + L * U;  // L * F  the layers' inputs at (r, c)
  T* zeros = pend_y + L * F;   // U      zero cell state (left of / above the image)
  T* r2l = zeros + U;          // 6U + C right-to-left scratch
  std::fill(zeros, zeros + U, T(0));
  const T norm = static_cast<T>(n.levels - 1);  // image value = x / (levels - 1)
  int64_t bad = sampling::kNoBadDimension;

  for (int64_t p = start; p < stop; ++p) {
    const int64_t r = p / W, c = p % W;
    const int64_t above = (r - 1) & 1, here = r & 1;
    for (int64_t ch = 0; ch < C; ++ch) {
      // input convolution, 7x7 mask A: rows r-3..r, the centre row up to column c
      copy(y, n.in_b, F);
      for (int64_t ky = 0; ky < 4; ++ky) {
        const int64_t rr = r + ky - 3;
        if (rr < 0) continue;
        for (int64_t kx = 0; kx < (ky < 3 ? 7 : 4); ++kx) {
          const int64_t cc = c + kx - 3;
          if (cc < 0 || cc >= W) continue;
          for (int64_t ci = 0; ci < C; ++ci) {
            const int64_t v = x[(ci * H + rr) * W + cc];
            img[ci] = v == 0 ? T(0) : static_cast<T>(v) / norm;
          }
          affine_acc(y, img, C, n.in_w + (ky * 7 + kx) * C * F, F, F);
        }
      }
      for (int64_t l = 0; l < L; ++l) {
        T* ph = pend_h + l * U;
        if (n.layer == kConv) {
          const T* act = s0 + l * 2 * W * U;  // (2, W, U)
          // a = ReLU(ReLU(y) @ red_w + red_b)
          copy(ph, n.p(l, 1), U);
          affine_relu_acc(ph, y, F, n.p(l, 0), U, U);
          for (int64_t j = 0; j < U; ++j) ph[j] = ph[j] > T(0) ? ph[j] : T(0);
          // z = conv_b + 3x3 mask-B taps over a
          const T* cw = n.p(l, 2);  // (2, 3, U, U)
          copy(pre, n.p(l, 3), U);
          affine_acc(pre, ph, U, cw + 4 * U * U, U, U);
          if (r >= 1) {
            for (int64_t kx = 0; kx < 3; ++kx) {
              const int64_t cc = c + kx - 1;
              if (cc >= 0 && cc < W)
                affine_acc(pre, act + (above * W + cc) * U, U, cw + kx * U * U, U, U);
            }
          }
          if (c >= 1) affine_acc(pre, act + (here * W + c - 1) * U, U, cw + 3 * U * U, U, U);
          // y = y + (ReLU(z) @ exp_w + exp_b)
          copy(t, n.p(l, 5), F);
          affine_relu_acc(t, pre, U, n.p(l, 4), F, F);
        } else if (n.layer == kRow) {
          const T* hs = s0 + l * 2 * W * U;  // (2, W, U)
          const T* cs = s1 + l * 2 * W * U;
          const T* ys = s3 + l * W * F;      // (W, F)
          const T* is_w = n.p(l, 0);         // (2, F, G)
          const T* ss_w = n.p(l, 2);         // (3, U, G)
          copy(pend_y + l * F, y, F);
          copy(pre, n.p(l, 1), G);
          affine_acc(pre, y, F, is_w + F * G, G, G);
          if (c >= 1) affine_acc(pre, ys + (c - 1) * F, F, is_w, G, G);
          const T* c_prev = zeros;
          if (r >= 1) {
            for (int64_t kx = 0; kx < 3; ++kx) {
              const int64_t cc = c + kx - 1;
              if (cc >= 0 && cc < W)
                affine_acc(pre, hs + (above * W + cc) * U, U, ss_w + kx * U * G, G, G);
            }
            c_prev = cs + (above * W + c) * U;
          }
          lstm_cell(pre, c_prev, U, ph, pend_c + l * U);
          copy(t, n.p(l, 4), F);
          affine_acc(t, ph, U, n.p(l, 3), F, F);
        } else {
          const T* hs = s0 + l * W * U;    // (W, U)
          const T* cl = s1 + l * U;        // (U,)
          const T* back = s2 + l * W * U;  // (W, U)
          const T* ss = n.p(l, 2);         // (2, U, G)
          copy(pend_y + l * F, y, F);
          copy(pre, n.p(l, 1), G);
          affine_acc(pre, y, F, n.p(l, 0), G, G);
          if (r >= 1) affine_acc(pre, hs + c * U, U, ss, G, G);
          if (c >= 1) affine_acc(pre, hs + (c - 1) * U, U, ss + U * G, G, G);
          lstm_cell(pre, c >= 1 ? cl : zeros, U, ph, pend_c + l * U);
          if (r >= 1) {
            for (int64_t j = 0; j < U; ++j) feat[j] = ph[j] + back[c * U + j];
          } else {
            copy(feat, ph, U);
          }
          copy(t, n.p(l, 7), F);
          affine_acc(t, feat, U, n.p(l, 6), F, F);
        }
        for (int64_t f = 0; f < F; ++f) y[f] += t[f];
      }
      // head: ReLU, 1x1 -> Q, ReLU, 1x1 -> the O logits of channel ch
      copy(hid, n.b1, Q);
      affine_relu_acc(hid, y, F, n.w1, Q, Q);
      copy(logits, n.b2 + ch * O, O);
      affine_relu_acc(logits, hid, Q, n.w2 + ch * O, O, C * O);
      const int64_t i = (ch * H + r) * W + c;
      int64_t value = O == 1 ? sampling::draw_bernoulli(logits[0], u[i])
                             : sampling::draw_categorical(logits, O, 1, u[i]);
      if (cond && cond[i] >= 0) {
        value = cond[i];
      } else if (bad == sampling::kNoBadDimension &&
                 !(O == 1 ? sampling::logit_finite(logits[0])
                          : sampling::logits_finite(logits, O, 1))) {
        bad = p * C + ch;
      }
      x[i] = value;
    }
    // commit the column at (r, c)
    for (int64_t l = 0; l < L; ++l) {
      if (n.layer == kConv) {
        copy(s0 + (l * 2 * W + here * W + c) * U, pend_h + l * U, U);
      } else if (n.layer == kRow) {
        copy(s0 + (l * 2 * W + here * W + c) * U, pend_h + l * U, U);
        copy(s1 + (l * 2 * W + here * W + c) * U, pend_c + l * U, U);
        copy(s3 + (l * W + c) * F, pend_y + l * F, F);
      } else {
        copy(s0 + (l * W + c) * U, pend_h + l * U, U);
        copy(s1 + l * U, pend_c + l * U, U);
        copy(s3 + (l * W + c) * F, pend_y + l * F, F);
      }
    }
    if (n.layer == kDiagonal && c == W - 1) right_to_left_row(n, b, r, r2l);
  }
  return bad;
}

void pixel_network_sample_step_cpu(const at::Tensor& x, at::TensorList state,
                                   const at::Tensor& u, const std::optional<at::Tensor>& cond,
                                   at::TensorList weights, c10::string_view layer_name,
                                   int64_t levels, int64_t start, int64_t stop) {
  const std::string name(layer_name.data(), layer_name.size());
  const pixel_network::Sizes sz = pixel_network::check_args(
      kOp, x, u, cond, weights, state, name, levels, start, stop, at::kCPU);
  const int layer = sz.layer;
  const int64_t B = sz.B, C = sz.C, H = sz.H, W = sz.W, L = sz.L, F = sz.F, U = sz.U,
                Q = sz.Q, O = sz.O, nw = sz.nw;
  const at::ScalarType dtype = sz.dtype;
  if (B == 0 || start == stop) return;
  // the smallest dimension drawn from a non-finite logit: raised after the parallel region
  std::atomic<int64_t> bad{sampling::kNoBadDimension};

  AT_DISPATCH_FLOATING_TYPES(dtype, "pixel_network_sample_step_cpu", [&] {
    std::vector<const scalar_t*> blk;
    for (int64_t i = 2; i < nw - 4; ++i) blk.push_back(weights[i].data_ptr<scalar_t>());
    Net<scalar_t> n{};
    static_cast<pixel_network::Buffers<scalar_t>&>(n) =
        pixel_network::buffers<scalar_t>(sz, x, u, cond, weights, state);
    n.layer = layer;
    n.C = C; n.H = H; n.W = W; n.F = F; n.U = U; n.Q = Q; n.O = O; n.L = L;
    n.levels = levels;
    n.blk = blk.data();
    const int64_t scratch = n.scratch_size();
    // Images one at a time from a shared counter (parallel_tasks).
    parallel_tasks(B, [&] { return std::vector<scalar_t>(scratch); },
                   [&](int64_t b, std::vector<scalar_t>& buf) {
      sampling::record_nonfinite(bad, sample_image(n, b, start, stop, buf.data()));
    });
  });
  const int64_t first_bad = bad.load();
  checks::check_logits_finite(first_bad);
}

}  // namespace

TORCH_LIBRARY_IMPL(pixelar, CPU, m) {
  m.impl("pixel_network_sample_step", &pixel_network_sample_step_cpu);
}

}  // namespace cpu
}  // namespace pixelar
