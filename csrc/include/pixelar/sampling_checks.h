// Value checks of the sampling ops' inputs, shared by their kernels (CPU and CUDA; host
// code): the wrappers in pixelar/ops/_checks.py say the same words (ValueError naming the
// argument), so a direct torch.ops.pixelar call refuses what the Python op refuses.
#pragma once

#include <ATen/ATen.h>

#include <cmath>

namespace pixelar {
namespace sampling {

// u: uniforms, every value in [0, 1) (NaN refused).
inline void check_uniforms(const char* op, const at::Tensor& u, const char* name = "u") {
  if (u.numel() == 0) return;
  TORCH_CHECK_VALUE(at::logical_and(u >= 0, u < 1).all().item<bool>(), op, ": ", name,
                    " must hold uniforms in [0, 1), got values in [", u.min().item<double>(),
                    ", ", u.max().item<double>(), "]");
}

// cond: values < levels; negative entries mean "sample this dimension".
inline void check_condition(const char* op, const at::Tensor& cond, int64_t levels) {
  if (cond.numel() == 0) return;
  const int64_t hi = cond.max().item<int64_t>();
  TORCH_CHECK_VALUE(hi < levels, op, ": cond values must be < ", levels,
                    " (negative: sample), got values in [", cond.min().item<int64_t>(), ", ",
                    hi, "]");
}

inline void check_finite(const char* op, const at::Tensor& t, const char* name) {
  if (t.numel() == 0) return;
  TORCH_CHECK_VALUE(at::isfinite(t).all().item<bool>(), op, ": ", name,
                    " must be finite, got NaN or inf values");
}

// The clamp of RNADE's log_sigma: finite, lo <= hi.
inline void check_clamp(const char* op, double lo, double hi) {
  TORCH_CHECK_VALUE(std::isfinite(lo), op, ": log_scale_min must be a finite number, got ", lo);
  TORCH_CHECK_VALUE(std::isfinite(hi), op, ": log_scale_max must be a finite number, got ", hi);
  TORCH_CHECK_VALUE(lo <= hi, op, ": need log_scale_min <= log_scale_max, got ", lo, " > ", hi);
}

}  // namespace sampling
}  // namespace pixelar
