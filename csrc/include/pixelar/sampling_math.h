// Per-element and small dense helpers of the cached samplers (csrc/cpu/sampling_*.cpp).
//
// Everything is __host__ __device__ under nvcc (PIXELAR_SAMPLING_HD) so a GPU sampler can reuse it.
// Matrices are stored input-major: w[k * ldw + g] is the weight from input k to output g,
// so the inner loops run over contiguous outputs and vectorize without reassociating sums.
//
// The draws take logits of the model's dtype, convert them to double and apply the rule of
// pixelar/models/draw.py (and math::bernoulli_from_uniform / categorical_from_uniform), so
// every sampler fed the same uniforms returns the same values.
#pragma once

#include <cstdint>

#include "pixelar/lstm_math.h"

// Forced inlining, so that the helpers are compiled inside each target clone of the CPU
// kernels that call them (csrc/cpu/kernel_common.h: PIXELAR_SIMD_CLONES).
#if defined(__CUDACC__) || defined(__HIPCC__)
#define PIXELAR_SAMPLING_HD __host__ __device__ __forceinline__
#elif defined(__GNUC__)
#define PIXELAR_SAMPLING_HD inline __attribute__((always_inline))
#else
#define PIXELAR_SAMPLING_HD inline
#endif

namespace pixelar {
namespace sampling {

// out[g] += sum_k x[k] * w[k * ldw + g] for g < G.
// (Portable scalar form; the CPU kernels use simd::affine, pixelar/simd.h.)
template <typename T>
PIXELAR_SAMPLING_HD void affine_acc(T* __restrict__ out, const T* __restrict__ x, int64_t K,
                                    const T* __restrict__ w, int64_t G, int64_t ldw) {
  for (int64_t k = 0; k < K; ++k)
    for (int64_t g = 0; g < G; ++g) out[g] += x[k] * w[k * ldw + g];
}

template <typename T>
PIXELAR_SAMPLING_HD void copy(T* __restrict__ dst, const T* __restrict__ src, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = src[i];
}

// LSTM cell over U units (pixelar/lstm_math.h, math policy M): pre holds the [i, f, o, g]
// blocks of U; h and c are written, c_prev read (a zero buffer at the image border).
template <typename T, typename M>
PIXELAR_SAMPLING_HD void lstm_cells(const T* __restrict__ pre, const T* __restrict__ c_prev,
                                    int64_t U, T* __restrict__ h, T* __restrict__ c) {
  for (int64_t j = 0; j < U; ++j) {
    math::lstm_cell_forward<T, M>(pre[j], pre[U + j], pre[2 * U + j], pre[3 * U + j],
                                  c_prev[j], &c[j], &h[j]);
  }
}

// The Bernoulli draw of pixelar/models/draw.py: 1 if u < sigmoid(logit), in double.
template <typename T>
PIXELAR_SAMPLING_HD int64_t draw_bernoulli(T logit, double u) {
  return math::bernoulli_from_uniform<double>(static_cast<double>(logit), u);
}

// The categorical draw of pixelar/models/draw.py from `levels` logits (stride `stride`),
// in double: the smallest k with u * total < cdf[k], levels - 1 if rounding leaves none.
template <typename T>
PIXELAR_SAMPLING_HD int64_t draw_categorical(const T* logits, int64_t levels, int64_t stride,
                                    double u) {
  double m = static_cast<double>(logits[0]);
  for (int64_t k = 1; k < levels; ++k) {
    const double v = static_cast<double>(logits[k * stride]);
    m = v > m ? v : m;
  }
  double total = 0.0;
  for (int64_t k = 0; k < levels; ++k)
    total += math::exp_(static_cast<double>(logits[k * stride]) - m);
  const double target = u * total;
  double cdf = 0.0;
  for (int64_t k = 0; k < levels - 1; ++k) {
    cdf += math::exp_(static_cast<double>(logits[k * stride]) - m);
    if (target < cdf) return k;
  }
  return levels - 1;
}

}  // namespace sampling
}  // namespace pixelar
