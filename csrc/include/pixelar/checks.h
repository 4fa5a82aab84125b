// Input checks of every pixelar kernel, CPU (csrc/cpu) and CUDA (csrc/cuda: the launchers'
// host code, which the CUDA emulation tests compile too). One family, each check named
// check_<what>(op, [name,] tensor, ...), every message starting with the op's name:
//   TORCH_CHECK (RuntimeError)        the layout: rank, device, dtype, shape, contiguity,
//                                     32-bit indexing, shared memory;
//   TORCH_CHECK_VALUE (ValueError)    the values the Python wrappers refuse with the same
//                                     words (pixelar/ops/_checks.py): uniforms, condition,
//                                     finite noise, RNADE's clamp, non-finite logits.
// Where a kernel runs is a Target: the device type its tensors must have, and whether it
// takes float16 / bfloat16 besides float32 / float64 (kCpu: the CPU kernels).
#pragma once

#include <ATen/ATen.h>

#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <string>

#include "pixelar/sampling_math.h"

namespace pixelar {

// A tensor's shape as the messages write it: "(2, 3)", "(4,)".
inline std::string shape_str(const at::Tensor& t) {
  std::string s = "(";
  for (int64_t d = 0; d < t.dim(); ++d) {
    if (d) s += ", ";
    s += std::to_string(t.size(d));
  }
  return s + (t.dim() == 1 ? ",)" : ")");
}

namespace checks {

struct Target {
  at::DeviceType device;
  bool reduced_floats;
};
constexpr Target kCpu{at::kCPU, false};

// ---- layout (RuntimeError)

// A floating tensor of rank `ndim` on the target's device. `layout` names the dimensions
// for the message, e.g. "(B, 4H, R, S)".
inline void check_input(const char* op, const char* name, const at::Tensor& t, int64_t ndim,
                        const char* layout, Target target) {
  TORCH_CHECK(t.defined(), op, ": ", name, " is an undefined tensor");
  TORCH_CHECK(t.dim() == ndim, op, ": ", name, " must be a ", ndim, "-D tensor ", layout,
              ", got shape ", shape_str(t));
  TORCH_CHECK(t.device().type() == target.device, op, ": ", name, " must be a ",
              c10::DeviceTypeName(target.device), " tensor for this kernel, got a tensor on ",
              t.device());
  const at::ScalarType s = t.scalar_type();
  if (target.reduced_floats) {
    TORCH_CHECK(s == at::kFloat || s == at::kDouble || s == at::kHalf || s == at::kBFloat16,
                op, ": ", name, " must be float16, bfloat16, float32 or float64, got ", s);
  } else {
    TORCH_CHECK(s == at::kFloat || s == at::kDouble, op, ": ", name,
                " must be float32 or float64, got ", s);
  }
}

// t has the dtype and device of ref.
inline void check_like(const char* op, const char* name, const at::Tensor& t,
                       const char* ref_name, const at::Tensor& ref) {
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), op, ": ", name, " must have the dtype of ",
              ref_name, " (", ref.scalar_type(), "), got ", t.scalar_type());
  TORCH_CHECK(t.device() == ref.device(), op, ": ", name, " must be on the device of ",
              ref_name, " (", ref.device(), "), got ", t.device());
}

inline void check_shape(const char* op, const char* name, const at::Tensor& t,
                        at::IntArrayRef expected, const char* layout) {
  TORCH_CHECK(t.sizes() == expected, op, ": ", name, " must have shape ", layout, " = ",
              expected, ", got ", shape_str(t));
}

// Every tensor of `ts` (named `names`) a floating tensor on a `device` device, of the
// device and dtype of the first one.
inline void check_inputs_alike(const char* op, at::DeviceType device,
                               std::initializer_list<const at::Tensor*> ts,
                               std::initializer_list<const char*> names) {
  const at::Tensor& first = **ts.begin();
  auto name = names.begin();
  for (const at::Tensor* t : ts) {
    TORCH_CHECK(t->defined(), op, ": ", *name, " is an undefined tensor");
    TORCH_CHECK(t->device().type() == device, op, ": ", *name, " must be a ",
                c10::DeviceTypeName(device), " tensor, got ", t->device());
    TORCH_CHECK(t->scalar_type() == first.scalar_type(), op, ": ", *name,
                " must have dtype ", first.scalar_type(), ", got ", t->scalar_type());
    TORCH_CHECK(t->device() == first.device(), op, ": ", *name, " must be on ",
                first.device(), ", got ", t->device());
    TORCH_CHECK(at::isFloatingType(t->scalar_type()), op, ": ", *name,
                " must be floating point, got ", t->scalar_type());
    ++name;
  }
}

// A tensor of exactly `dtype` and `shape` (the samplers' arguments) on a `device` device,
// and on `*same` when given (the device of the other inputs); contiguous if asked.
inline void check_tensor(const char* op, const char* name, const at::Tensor& t,
                         at::ScalarType dtype, at::IntArrayRef shape, at::DeviceType device,
                         const at::Device* same = nullptr, bool contiguous = false) {
  TORCH_CHECK(t.defined(), op, ": ", name, " is an undefined tensor");
  TORCH_CHECK(t.device().type() == device, op, ": ", name, " must be a ",
              c10::DeviceTypeName(device), " tensor for this kernel, got a tensor on ",
              t.device());
  if (same != nullptr) {
    TORCH_CHECK(t.device() == *same, op, ": ", name, " must be on ", *same,
                " (the device of the other inputs), got ", t.device());
  }
  TORCH_CHECK(t.scalar_type() == dtype, op, ": ", name, " must be ", dtype, ", got ",
              t.scalar_type());
  TORCH_CHECK(t.sizes() == shape, op, ": ", name, " must have shape ", shape, ", got ",
              shape_str(t));
  if (contiguous) TORCH_CHECK(t.is_contiguous(), op, ": ", name, " must be contiguous");
}

// The CUDA kernels index within one image (or one weight) with 32-bit ints: each such
// extent must fit.
inline void check_index32(const char* op, std::initializer_list<int64_t> extents,
                          const char* what) {
  for (int64_t e : extents) {
    TORCH_CHECK(e >= 0 && e <= INT32_MAX, op, ": ", what, " has ", e, " elements, more than "
                "this kernel's 32-bit indexing allows (2^31 - 1)");
  }
}

// `bytes` of dynamic shared memory within the device's `limit`, or an error saying why and,
// in `hint`, what to do instead.
inline void check_smem(const char* op, size_t bytes, size_t limit,
                       const char* hint = "use a smaller hidden size, a 32-bit dtype, or the "
                                          "'triton' backend") {
  TORCH_CHECK(bytes <= limit, op, ": the CUDA kernel needs ", bytes,
              " bytes of shared memory per block at this size, the device allows ", limit,
              "; ", hint);
}

// ---- the LSTM scans: x_gates (B, 4H, R, N), w_ss (4H, H, taps), and the backward's
// grad_h, grad_c, h, c (B, H, R, N). N = S skewed columns (diagonal scan) or W columns
// (row scan); taps = 2 (diagonal) or 3 (row). The backward runs the forward's checks
// first (a backward called directly with mismatched shapes must not read past a tensor).

// x_gates and w_ss of one dtype, x_gates with 4H channels and w_ss of shape (4H, H, taps).
// `x_layout` and `w_layout` name them for the messages, e.g. "(B, 4H, R, S)" and
// "(4H, H, 2)". Returns H.
inline int64_t check_scan_inputs(const char* op, const at::Tensor& x_gates,
                                 const at::Tensor& w_ss, int64_t taps, const char* x_layout,
                                 const char* w_layout, Target target) {
  check_input(op, "x_gates", x_gates, 4, x_layout, target);
  check_input(op, "w_ss", w_ss, 3, w_layout, target);
  check_like(op, "w_ss", w_ss, "x_gates", x_gates);
  const int64_t G = x_gates.size(1);
  TORCH_CHECK(G % 4 == 0, op, ": x_gates must have 4H channels (gates i, f, o, g), got ", G,
              " channels");
  check_shape(op, "w_ss", w_ss, {G, G / 4, taps}, w_layout);
  return G / 4;
}

// A scan's tensor `name` other than x_gates and w_ss (a state, a bias, saved gates): of
// x_gates' dtype and device and of shape `shape`, named `layout` in the messages.
inline void check_scan_tensor(const char* op, const char* name, const at::Tensor& t,
                              const at::Tensor& x_gates, at::IntArrayRef shape,
                              const char* layout, Target target) {
  check_input(op, name, t, static_cast<int64_t>(shape.size()), layout, target);
  check_like(op, name, t, "x_gates", x_gates);
  check_shape(op, name, t, shape, layout);
}

// The backward's grad_h, grad_c, h, c: each of x_gates' dtype and device and of shape
// `shape` = (B, H, R, N), named `layout` in the messages, e.g. "(B, H, R, S)".
inline void check_scan_states(const char* op, const at::Tensor& x_gates,
                              at::IntArrayRef shape, const char* layout,
                              const at::Tensor& grad_h, const at::Tensor& grad_c,
                              const at::Tensor& h, const at::Tensor& c, Target target) {
  const char* names[] = {"grad_h", "grad_c", "h", "c"};
  const at::Tensor* states[] = {&grad_h, &grad_c, &h, &c};
  for (int i = 0; i < 4; ++i) {
    check_scan_tensor(op, names[i], *states[i], x_gates, shape, layout, target);
  }
}

// ---- values of the samplers' inputs (ValueError, the Python wrappers' words)

// u: uniforms, every value in [0, 1) (NaN refused: aminmax propagates it, and NaN fails
// both comparisons). One reduction pass, no temporaries: at::logical_and(u >= 0, u < 1).all()
// took three passes and three temporaries, 0.1-0.3 ms of a 2.5-3 ms CPU NADE sampling call
// of 64 images (the rest of the call's setup is exp(-W^T), 0.2 ms).
inline void check_uniforms(const char* op, const char* name, const at::Tensor& u) {
  if (u.numel() == 0) return;
  const auto [lo_t, hi_t] = at::aminmax(u);
  const double lo = lo_t.item<double>(), hi = hi_t.item<double>();
  TORCH_CHECK_VALUE(lo >= 0 && hi < 1, op, ": ", name,
                    " must hold uniforms in [0, 1), got values in [", lo, ", ", hi, "]");
}

// cond: values < levels; negative entries mean "sample this dimension".
inline void check_condition(const char* op, const char* name, const at::Tensor& cond,
                            int64_t levels) {
  if (cond.numel() == 0) return;
  const int64_t hi = cond.max().item<int64_t>();
  TORCH_CHECK_VALUE(hi < levels, op, ": ", name, " values must be < ", levels,
                    " (negative: sample), got values in [", cond.min().item<int64_t>(), ", ",
                    hi, "]");
}

// t: no NaN or inf. A floating tensor is finite when its min and max are (aminmax gives
// NaN when t holds one): one reduction pass, as check_uniforms.
inline void check_finite(const char* op, const char* name, const at::Tensor& t) {
  if (t.numel() == 0 || !t.is_floating_point()) return;
  const auto [lo_t, hi_t] = at::aminmax(t);
  TORCH_CHECK_VALUE(std::isfinite(lo_t.item<double>()) && std::isfinite(hi_t.item<double>()),
                    op, ": ", name, " must be finite, got NaN or inf values");
}

// The clamp of RNADE's log_sigma: finite, lo <= hi.
inline void check_clamp(const char* op, double lo, double hi) {
  TORCH_CHECK_VALUE(std::isfinite(lo), op, ": log_scale_min must be a finite number, got ", lo);
  TORCH_CHECK_VALUE(std::isfinite(hi), op, ": log_scale_max must be a finite number, got ", hi);
  TORCH_CHECK_VALUE(lo <= hi, op, ": need log_scale_min <= log_scale_max, got ", lo, " > ", hi);
}

// After a sampler's parallel region (CPU) or launch (CUDA): `first_bad`, the smallest
// dimension drawn from a non-finite logit, must be sampling::kNoBadDimension (none);
// otherwise ValueError(sampling::nonfinite_message(first_bad)), the references' text.
inline void check_logits_finite(int64_t first_bad) {
  TORCH_CHECK_VALUE(first_bad == sampling::kNoBadDimension,
                    sampling::nonfinite_message(first_bad));
}

}  // namespace checks
}  // namespace pixelar
