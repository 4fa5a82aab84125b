// Per-element math shared by the CPU (csrc/cpu) and CUDA (csrc/cuda) kernels.
//
// Everything here is __host__ __device__ under nvcc and plain inline C++ otherwise, so the
// CPU test suite exercises exactly the code the GPU kernels run.
//
// Gate layout used by every LSTM op in pixelar: the 4H gate pre-activations of one position
// are stored as four blocks of H, in the order [i, f, o, g]:
//   i = sigmoid(pre_i)   input gate
//   f = sigmoid(pre_f)   forget gate
//   o = sigmoid(pre_o)   output gate
//   g = tanh(pre_g)      candidate
//   c = f * c_prev + i * g
//   h = o * tanh(c)
#pragma once

#include <cmath>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define PIXELAR_HD __host__ __device__ __forceinline__
#else
#define PIXELAR_HD inline
#endif

namespace pixelar {
namespace math {

PIXELAR_HD float exp_(float x) { return expf(x); }
PIXELAR_HD double exp_(double x) { return exp(x); }
PIXELAR_HD float tanh_(float x) { return tanhf(x); }
PIXELAR_HD double tanh_(double x) { return tanh(x); }

template <typename T>
PIXELAR_HD T sigmoid(T x) {
  return T(1) / (T(1) + exp_(-x));
}

// Forward of one LSTM cell element. pre_* are gate pre-activations.
template <typename T>
PIXELAR_HD void lstm_cell_forward(T pre_i, T pre_f, T pre_o, T pre_g, T c_prev,
                                  T* c_out, T* h_out) {
  const T i = sigmoid(pre_i);
  const T f = sigmoid(pre_f);
  const T o = sigmoid(pre_o);
  const T g = tanh_(pre_g);
  const T c = f * c_prev + i * g;
  *c_out = c;
  *h_out = o * tanh_(c);
}

// Backward of one LSTM cell element.
//   dh: gradient reaching h (from the output and from later steps through the recurrence)
//   dc: gradient reaching c from outside the cell's own h (grad of the c output plus the
//       next step's dc_prev)
// Writes the gradients of the four pre-activations and of c_prev.
template <typename T>
PIXELAR_HD void lstm_cell_backward(T pre_i, T pre_f, T pre_o, T pre_g, T c_prev, T c,
                                   T dh, T dc,
                                   T* d_pre_i, T* d_pre_f, T* d_pre_o, T* d_pre_g,
                                   T* dc_prev) {
  const T i = sigmoid(pre_i);
  const T f = sigmoid(pre_f);
  const T o = sigmoid(pre_o);
  const T g = tanh_(pre_g);
  const T tc = tanh_(c);
  const T dc_total = dc + dh * o * (T(1) - tc * tc);
  *d_pre_o = dh * tc * o * (T(1) - o);
  *d_pre_i = dc_total * g * i * (T(1) - i);
  *d_pre_g = dc_total * i * (T(1) - g * g);
  *d_pre_f = dc_total * c_prev * f * (T(1) - f);
  *dc_prev = dc_total * f;
}

// Sampling by inverse CDF from one uniform u in [0, 1): the rule every sampler in pixelar
// uses (Python reference included), so fast and naive samplers draw identical values.
// Bernoulli with logit `logit`: 1 if u < sigmoid(logit), else 0.
template <typename T>
PIXELAR_HD long bernoulli_from_uniform(T logit, T u) {
  return u < sigmoid(logit) ? 1 : 0;
}

// Categorical over `levels` logits (stride `stride` between consecutive levels): the
// smallest k with u < cdf[k], where cdf is the cumulative softmax; levels - 1 if rounding
// leaves u above the last cdf value.
template <typename T>
PIXELAR_HD long categorical_from_uniform(const T* logits, long levels, long stride, T u) {
  T m = logits[0];
  for (long k = 1; k < levels; ++k) m = logits[k * stride] > m ? logits[k * stride] : m;
  T total = T(0);
  for (long k = 0; k < levels; ++k) total += exp_(logits[k * stride] - m);
  const T target = u * total;
  T cdf = T(0);
  for (long k = 0; k < levels - 1; ++k) {
    cdf += exp_(logits[k * stride] - m);
    if (target < cdf) return k;
  }
  return levels - 1;
}

}  // namespace math
}  // namespace pixelar
