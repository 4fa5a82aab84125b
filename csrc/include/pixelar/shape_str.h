// A tensor's shape as pixelar's kernels write it in error messages: "(2, 3)", "(4,)".
// Host code, shared by the CPU and CUDA kernels.
#pragma once

#include <ATen/ATen.h>

#include <string>

namespace pixelar {

inline std::string shape_str(const at::Tensor& t) {
  std::string s = "(";
  for (int64_t d = 0; d < t.dim(); ++d) {
    if (d) s += ", ";
    s += std::to_string(t.size(d));
  }
  return s + (t.dim() == 1 ? ",)" : ")");
}

}  // namespace pixelar
