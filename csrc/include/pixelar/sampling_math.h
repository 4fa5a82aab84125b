// Per-element and small dense helpers of the samplers (nade_sample, pixel_network_sample in
// csrc/cpu and csrc/cuda), and the draw rule they share.
//
// Everything is __host__ __device__ under nvcc (PIXELAR_HOST_DEVICE_INLINE, pixelar/inline.h),
// so the CUDA kernels run the CPU kernels' code.
// Matrices are stored input-major: w[k * ldw + g] is the weight from input k to output g,
// so the inner loops run over contiguous outputs and vectorize without reassociating sums.
//
// The draws take logits of the model's dtype, convert them to double and apply the rule of
// pixelar/ops/draw.py, so every sampler fed the same uniforms returns the same values.
//
// Non-finite logits (one rule for every sampler): a draw whose logits hold NaN or +-inf is
// refused. Each sampler checks the logits of every dimension it draws (not those the
// condition replaces) with logit_finite / logits_finite, and reports the smallest such
// dimension d (the raster index (row * W + column) * C + channel, or d of a NADE vector)
// as ValueError(nonfinite_message(d)), the text of pixelar/ops/draw.py's
// NONFINITE_MESSAGE. Kernels never throw inside a parallel region: a worker records its
// smallest bad dimension (record_nonfinite: an atomic minimum, kNoBadDimension when none)
// and the host raises after the region (CPU: after at::parallel_for; CUDA: after copying
// the flag back once the launch is done).
#pragma once

#include <cstdint>
#include <string>

#include "pixelar/inline.h"
#include "pixelar/lstm_math.h"


namespace pixelar {
namespace sampling {

// out[g] += sum_k x[k] * w[k * ldw + g] for g < G.
// (Portable scalar form; the CPU kernels use simd::affine, pixelar/simd.h.)
template <typename T>
PIXELAR_HOST_DEVICE_INLINE void affine_acc(T* __restrict__ out, const T* __restrict__ x, int64_t K,
                                           const T* __restrict__ w, int64_t G, int64_t ldw) {
  for (int64_t k = 0; k < K; ++k)
    for (int64_t g = 0; g < G; ++g) out[g] += x[k] * w[k * ldw + g];
}

template <typename T>
PIXELAR_HOST_DEVICE_INLINE void copy(T* __restrict__ dst, const T* __restrict__ src, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = src[i];
}

// LSTM cell over U units (pixelar/lstm_math.h, math policy M): pre holds the [i, f, o, g]
// blocks of U; h and c are written, c_prev read (a zero buffer at the image border).
template <typename T, typename M>
PIXELAR_HOST_DEVICE_INLINE void lstm_cells(const T* __restrict__ pre, const T* __restrict__ c_prev,
                                           int64_t U, T* __restrict__ h, T* __restrict__ c) {
  for (int64_t j = 0; j < U; ++j) {
    math::lstm_cell_forward<T, M>(pre[j], pre[U + j], pre[2 * U + j], pre[3 * U + j],
                                  c_prev[j], &c[j], &h[j]);
  }
}

// True when v is neither NaN nor +-inf (v - v is NaN exactly then; no <cmath>, works on both
// host and device, and is not folded away without -ffinite-math-only).
PIXELAR_HOST_DEVICE_INLINE bool finite(double v) { return v - v == 0.0; }

// The Bernoulli logit that draw_bernoulli reads is finite.
template <typename T>
PIXELAR_HOST_DEVICE_INLINE bool logit_finite(T logit) {
  return finite(static_cast<double>(logit));
}

// Every one of the `n` logits (stride `stride`) that draw_categorical reads is finite.
template <typename T>
PIXELAR_HOST_DEVICE_INLINE bool logits_finite(const T* logits, int64_t n, int64_t stride) {
  bool ok = true;
  for (int64_t k = 0; k < n; ++k) ok = ok && finite(static_cast<double>(logits[k * stride]));
  return ok;
}

// "No non-finite logit seen": the initial value of a sampler's error flag.
constexpr int64_t kNoBadDimension = INT64_MAX;

// flag = min(flag, d) for a flag shared by the workers (std::atomic<int64_t> on the host).
template <typename Atomic>
inline void record_nonfinite(Atomic& flag, int64_t d) {
  int64_t seen = flag.load();
  while (d < seen && !flag.compare_exchange_weak(seen, d)) {
  }
}

// The device side is sampling_kernels::record_nonfinite (csrc/cuda/sampling_common.cuh).

// The error of a sampler that met a non-finite logit at dimension d (pixelar/ops/draw.py:
// NONFINITE_MESSAGE, the same text).
inline std::string nonfinite_message(int64_t d) {
  return "sampling: a logit is not finite (NaN or inf) at dimension " + std::to_string(d) +
         " (raster order), so no value can be drawn; the model's parameters hold NaN or inf "
         "values";
}

// Sampling by inverse CDF from one uniform u in [0, 1): the rule every sampler in pixelar
// uses (the Python reference included), so fast and naive samplers draw identical values.

// The Bernoulli draw of pixelar/ops/draw.py: 1 if u < sigmoid(logit), in double.
template <typename T>
PIXELAR_HOST_DEVICE_INLINE int64_t draw_bernoulli(T logit, double u) {
  return u < math::sigmoid(static_cast<double>(logit)) ? 1 : 0;
}

// The categorical draw of pixelar/ops/draw.py from `levels` logits (stride `stride`),
// in double: the smallest k with u * total < cdf[k], levels - 1 if rounding leaves none.
template <typename T>
PIXELAR_HOST_DEVICE_INLINE int64_t draw_categorical(const T* logits, int64_t levels, int64_t stride,
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
