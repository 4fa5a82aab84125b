// The hidden-state checkpoints that pixelar::nade_forward_checkpointed hands to
// pixelar::nade_forward_backward: a_d (before h_d = sigmoid(a_d)) at d = 0, kEvery,
// 2 kEvery, ..., as a (ceil(D / kEvery), B, Hd) tensor in the op-math dtype (float for
// float16 / bfloat16, else x's dtype). The CPU backward replays the forward from them
// instead of re-walking a_d from c; the CUDA backward recovers a_d by subtraction and
// does not read them (its forward still writes them, the op's contract on every device).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

#include "pixelar/checks.h"

namespace pixelar {
namespace nade_checkpoints {

constexpr int64_t kEvery = 32;

inline int64_t count(int64_t D) { return (D + kEvery - 1) / kEvery; }

// The checkpoints' dtype for inputs of dtype t.
inline at::ScalarType scalar_type(at::ScalarType t) {
  return t == at::kHalf || t == at::kBFloat16 ? at::kFloat : t;
}

// Checks the optional checkpoints argument of the backward against x (B, D) and Hd.
inline void check(const char* op, const at::Tensor& ckpt, const at::Tensor& x, int64_t Hd) {
  const int64_t B = x.size(0), D = x.size(1);
  TORCH_CHECK(ckpt.device() == x.device(), op, ": checkpoints must be on x's device (",
              x.device(), "), got ", ckpt.device());
  const at::ScalarType want = nade_checkpoints::scalar_type(x.scalar_type());
  TORCH_CHECK(ckpt.scalar_type() == want, op, ": checkpoints must be ", want, " for x of ",
              x.scalar_type(), ", got ", ckpt.scalar_type());
  TORCH_CHECK(ckpt.dim() == 3 && ckpt.size(0) == count(D) && ckpt.size(1) == B &&
                  ckpt.size(2) == Hd,
              op, ": checkpoints must be (ceil(D / ", kEvery, "), B, Hd) = (", count(D), ", ",
              B, ", ", Hd, "), got ", shape_str(ckpt));
}

}  // namespace nade_checkpoints
}  // namespace pixelar
