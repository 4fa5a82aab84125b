// Arguments of pixelar::pixel_network_sample_step, shared by its CPU kernel
// (csrc/cpu/pixel_network_sample.cpp) and CUDA kernel (csrc/cuda/pixel_network_sample.cu):
// their checks (the layer name, x / u / cond, the packed weights and the state, laid out
// as the docstring of pixelar/ops/pixel_network_sample.py says; the values of u and cond:
// uniforms in [0, 1), cond < levels) and the pointers into them (Buffers). Host code, but
// for block_params and the Buffers struct (also device).
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <string>
#include <vector>

#include "pixelar/checks.h"
#include "pixelar/inline.h"


namespace pixelar {

namespace pixel_network {

enum Layer : int { kConv = 0, kRow = 1, kDiagonal = 2 };

// Weight tensors per residual block of each layer kind.
PIXELAR_HOST_DEVICE_INLINE int block_params(int layer) {
  return layer == kConv ? 6 : (layer == kRow ? 5 : 8);
}

// The sizes every kernel needs: B images of C x H x W, L blocks, F = 2h features, U hidden
// units per block (G = 4U gates), Q head units, O outputs per channel; nw weight tensors.
struct Sizes {
  int layer;
  int64_t B, C, H, W, L, F, U, G, Q, O, nw;
  at::ScalarType dtype;
};

// The data every kernel reads or writes, besides the block weights (whose pointer table
// differs by device): input and head weights, the state (up to 4 tensors, with the
// elements per image), the images x, the uniforms u and cond (nullptr: none).
template <typename T>
struct Buffers {
  const T* in_w;
  const T* in_b;
  const T* w1;
  const T* b1;
  const T* w2;
  const T* b2;
  T* state[4];
  int64_t state_stride[4];
  int64_t* x;
  const double* u;
  const int64_t* cond;
};

// The Buffers of arguments that check_args accepted (s: its result).
template <typename T>
Buffers<T> buffers(const Sizes& s, const at::Tensor& x, const at::Tensor& u,
                   const std::optional<at::Tensor>& cond, at::TensorList weights,
                   at::TensorList state) {
  Buffers<T> n{};
  n.in_w = weights[0].data_ptr<T>();
  n.in_b = weights[1].data_ptr<T>();
  n.w1 = weights[s.nw - 4].data_ptr<T>();
  n.b1 = weights[s.nw - 3].data_ptr<T>();
  n.w2 = weights[s.nw - 2].data_ptr<T>();
  n.b2 = weights[s.nw - 1].data_ptr<T>();
  for (size_t i = 0; i < 4; ++i) {
    n.state[i] = i < state.size() ? state[i].data_ptr<T>() : nullptr;
    n.state_stride[i] = i < state.size() && s.B > 0 ? state[i].numel() / s.B : 0;
  }
  n.x = x.data_ptr<int64_t>();
  n.u = u.data_ptr<double>();
  n.cond = cond.has_value() ? cond->data_ptr<int64_t>() : nullptr;
  return n;
}

// Checks every argument (pixelar/checks.h; messages naming op) and returns the sizes:
// every tensor on a `device` device (the device of x), contiguous, of its dtype and shape.
inline Sizes check_args(const char* op, const at::Tensor& x, const at::Tensor& u,
                        const std::optional<at::Tensor>& cond, at::TensorList weights,
                        at::TensorList state, const std::string& name, int64_t levels,
                        int64_t start, int64_t stop, at::DeviceType device) {
  const at::Device same = x.device();
  const auto check = [&](const at::Tensor& t, const char* tname, at::ScalarType dtype,
                         at::IntArrayRef shape) {
    checks::check_tensor(op, tname, t, dtype, shape, device, &same, /*contiguous=*/true);
  };
  Sizes s{};
  if (name == "conv") s.layer = kConv;
  else if (name == "row") s.layer = kRow;
  else if (name == "diagonal") s.layer = kDiagonal;
  else TORCH_CHECK(false, op, ": layer must be 'conv', 'row' or 'diagonal', got '", name, "'");
  TORCH_CHECK(x.dim() == 4, op, ": x must be (B, C, H, W), got ", shape_str(x));
  s.B = x.size(0), s.C = x.size(1), s.H = x.size(2), s.W = x.size(3);
  check(x, "x", at::kLong, x.sizes());
  check(u, "u", at::kDouble, x.sizes());
  if (cond.has_value()) check(*cond, "cond", at::kLong, x.sizes());
  TORCH_CHECK(s.C >= 1, op, ": x must have at least one channel, got ", shape_str(x));
  TORCH_CHECK(levels >= 2, op, ": levels must be >= 2, got ", levels);
  TORCH_CHECK(0 <= start && start <= stop && stop <= s.H * s.W, op,
              ": need 0 <= start <= stop <= H * W, got ", start, ", ", stop);
  checks::check_uniforms(op, "u", u);
  if (cond.has_value()) checks::check_condition(op, "cond", *cond, levels);
  const int np = block_params(s.layer);
  s.nw = static_cast<int64_t>(weights.size());
  TORCH_CHECK(s.nw >= 6 + np && (s.nw - 6) % np == 0, op, ": weights must be 2 + ", np,
              " * L + 4 tensors for layer '", name, "', got ", s.nw);
  s.L = (s.nw - 6) / np;
  const at::Tensor& in_w = weights[0];
  TORCH_CHECK(in_w.dim() == 4, op, ": in_w must be (4, 7, C, F), got ", shape_str(in_w));
  s.F = in_w.size(3);
  s.dtype = in_w.scalar_type();
  TORCH_CHECK(s.dtype == at::kFloat || s.dtype == at::kDouble, op,
              ": weights must be float32 or float64, got ", s.dtype);
  // U from the first block's 1x1 reduce (conv: (F, U)) or output (row, diagonal: (U, F))
  const at::Tensor& sizer = weights[s.layer == kConv ? 2 : 2 + np - 2];
  TORCH_CHECK(sizer.dim() == 2, op, ": weights[", s.layer == kConv ? 2 : 2 + np - 2,
              "] must be a matrix, got ", shape_str(sizer));
  s.U = s.layer == kConv ? sizer.size(1) : sizer.size(0);
  s.G = 4 * s.U;
  const at::Tensor& w2 = weights[s.nw - 2];
  TORCH_CHECK(w2.dim() == 2 && w2.size(1) % s.C == 0, op, ": head_w2 must be (Q, C * O), got ",
              shape_str(w2));
  s.Q = w2.size(0), s.O = w2.size(1) / s.C;
  TORCH_CHECK(s.O == (levels == 2 ? 1 : levels), op, ": head_w2 must have C * ",
              (levels == 2 ? 1 : levels), " outputs for levels=", levels, ", got ", w2.size(1));
  const int64_t C = s.C, F = s.F, U = s.U, G = s.G, Q = s.Q, O = s.O, B = s.B, L = s.L,
                W = s.W;
  std::vector<std::vector<int64_t>> shapes = {{4, 7, C, F}, {F}};
  for (int64_t l = 0; l < L; ++l) {
    if (s.layer == kConv) {
      shapes.insert(shapes.end(), {{F, U}, {U}, {2, 3, U, U}, {U}, {U, F}, {F}});
    } else if (s.layer == kRow) {
      shapes.insert(shapes.end(), {{2, F, G}, {G}, {3, U, G}, {U, F}, {F}});
    } else {
      shapes.insert(shapes.end(),
                    {{F, G}, {G}, {2, U, G}, {F + C, G}, {G}, {2, U, G}, {U, F}, {F}});
    }
  }
  shapes.insert(shapes.end(), {{F, Q}, {Q}, {Q, C * O}, {C * O}});
  for (int64_t i = 0; i < s.nw; ++i) {
    const std::string wn = "weights[" + std::to_string(i) + "]";
    check(weights[i], wn.c_str(), s.dtype, at::IntArrayRef(shapes[i]));
  }
  std::vector<std::vector<int64_t>> sshapes;
  if (s.layer == kConv) sshapes = {{B, L, 2, W, U}};
  else if (s.layer == kRow) sshapes = {{B, L, 2, W, U}, {B, L, 2, W, U}, {B, L, W, F}};
  else sshapes = {{B, L, W, U}, {B, L, U}, {B, L, W, U}, {B, L, W, F}};
  TORCH_CHECK(state.size() == sshapes.size(), op, ": state must be ", sshapes.size(),
              " tensors for layer '", name, "', got ", state.size());
  for (size_t i = 0; i < state.size(); ++i) {
    const std::string sn = "state[" + std::to_string(i) + "]";
    check(state[i], sn.c_str(), s.dtype, at::IntArrayRef(sshapes[i]));
  }
  return s;
}

}  // namespace pixel_network
}  // namespace pixelar
