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

#include "pixelar/inline.h"

#if defined(__GNUC__) && !defined(__clang__) && !defined(__CUDACC__)
// exp_poly, tanh_rational and the sigmoids below also take GCC float vectors (pixelar/simd.h); they are always
// inlined, so no ABI is involved in passing them.
#pragma GCC diagnostic ignored "-Wpsabi"
#endif


namespace pixelar {
namespace math {

PIXELAR_HOST_DEVICE_INLINE float exp_(float x) { return expf(x); }
PIXELAR_HOST_DEVICE_INLINE double exp_(double x) { return exp(x); }
PIXELAR_HOST_DEVICE_INLINE float tanh_(float x) { return tanhf(x); }
PIXELAR_HOST_DEVICE_INLINE double tanh_(double x) { return tanh(x); }

// ---- Where tanh and sigmoid come from: a policy type, the last template argument of the
// functions below (default LibmMath, so existing calls are unchanged). Float policies other
// than LibmMath are branch-free arithmetic, so that a compiler can vectorize a loop that
// calls them (a libm call in a loop blocks vectorization); double always uses the math
// library, so fp64 models are computed as the references do.
//   LibmMath  the C / CUDA math library (expf, tanhf, ...): the CUDA scans.
//   SimdMath  float sigmoid = 1 / (1 + exp_poly(-x)) (Cephes expf: exp within 1.4 ulp,
//             sigmoid within 1.5e-7 relative over [-20, 20]; NaN in, NaN out; exp
//             saturates at the ends of the float range, 0 < exp(x) <= FLT_MAX): NADE.
//   CellMath  float tanh as a rational function, sigmoid through it (below): the LSTM
//             cells of the CPU scans and of both devices' cached samplers.
struct LibmMath {
  template <typename T>
  PIXELAR_HOST_DEVICE_INLINE static T tanh(T x) { return tanh_(x); }
  template <typename T>
  PIXELAR_HOST_DEVICE_INLINE static T sigmoid(T x) { return T(1) / (T(1) + exp_(-x)); }
};

PIXELAR_HOST_DEVICE_INLINE float bits_to_float(int bits) {
#if defined(__CUDA_ARCH__) || defined(__HIP_DEVICE_COMPILE__)
  return __int_as_float(bits);
#else
  return __builtin_bit_cast(float, bits);
#endif
}

// 2^n for an integral n in [-127, 127], built from the exponent bits (2^-127 gives 0).
// F: float here; float vectors specialise it (pixelar/simd.h), so that exp_poly
// below is one formula for scalars and vectors.
template <typename F>
struct Pow2;
template <>
struct Pow2<float> {
  PIXELAR_HOST_DEVICE_INLINE
  static float of(float n) { return bits_to_float((static_cast<int>(n) + 127) << 23); }
};

// Cephes expf: exp(x) = 2^n * exp(r), n = round(x / ln 2), |r| <= ln(2) / 2, exp(r) by a
// degree-7 polynomial. x is clamped to [-87.34, 88.38] (2^n stays a normal float). Written
// with +, *, comparisons and selects only, so F may be float or a GCC float vector.
template <typename F>
PIXELAR_HOST_DEVICE_INLINE F exp_poly(F x) {
  const F zero{};
  const F hi = zero + 88.3762626647949f, lo = zero + -87.3365447504f;
  // Clamps that keep NaN (a comparison with NaN is false).
  x = x > hi ? hi : x;
  x = x < lo ? lo : x;
  // Round to nearest with the 1.5 * 2^23 trick (|x / ln 2| < 2^22; no libm call).
  const F n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  F r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  F p = zero + 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  // n is NaN only where x is, and then so is p: the exponent is taken of a copy with NaN
  // replaced (no float-to-int conversion of NaN).
  const F n_low = zero + -127.0f;
  const F n_finite = n > n_low ? n : n_low;
  return p * Pow2<F>::of(n_finite);
}

// sigmoid(x) = 1 / (1 + exp(-x)) with exp_poly (SimdMath's float sigmoid; simd::vsigmoid).
template <typename F>
PIXELAR_HOST_DEVICE_INLINE F sigmoid_poly(F x) {
  return 1.0f / (1.0f + exp_poly(-x));
}

struct SimdMath {
  PIXELAR_HOST_DEVICE_INLINE static float sigmoid(float x) { return sigmoid_poly(x); }
  PIXELAR_HOST_DEVICE_INLINE static double sigmoid(double x) { return LibmMath::sigmoid(x); }
};

// tanh as a rational function, Eigen's and XLA's fast float tanh: x clamped to +-7.9053
// (where float tanh is +-1), then x * P(x^2) / Q(x^2), P of degree 6 and Q of degree 3.
// Error against double tanh <= 4e-7 absolute (at most 3.9e-7 compiled without FMA, 2.7e-7
// with, over [-12, 12] in steps of 1e-5, [-0.01, 0.01] in steps of 1e-7 and [-100, 100];
// tests/test_lstm_math.py); |tanh| <= 1; NaN in, NaN out. One division and no exp: about
// half the operations of tanh from exp_poly ((1 - e) / (1 + e), e = exp(-2|x|)).
template <typename F>
PIXELAR_HOST_DEVICE_INLINE F tanh_rational(F x) {
  const F zero{};
  const F hi = zero + 7.90531110763549805f, lo = zero + -7.90531110763549805f;
  x = x > hi ? hi : x;  // comparisons false for NaN: NaN passes through
  x = x < lo ? lo : x;
  const F x2 = x * x;
  F p = x2 * -2.76076847742355e-16f + 2.00018790482477e-13f;
  p = p * x2 + -8.60467152213735e-11f;
  p = p * x2 + 5.12229709037114e-08f;
  p = p * x2 + 1.48572235717979e-05f;
  p = p * x2 + 6.37261928875436e-04f;
  p = p * x2 + 4.89352455891786e-03f;
  F q = x2 * 1.19825839466702e-06f + 1.18534705686654e-04f;
  q = q * x2 + 2.26843463243900e-03f;
  q = q * x2 + 4.89352518554385e-03f;
  return x * p / q;
}

// sigmoid(x) = (1 + tanh(x / 2)) / 2 with tanh_rational (CellMath's float sigmoid;
// simd::vcell_sigmoid).
template <typename F>
PIXELAR_HOST_DEVICE_INLINE F sigmoid_rational(F x) {
  return 0.5f + 0.5f * tanh_rational(0.5f * x);
}

// The LSTM cells' math (the scans' forward and backward, the cached samplers' cells): float
// tanh = tanh_rational, sigmoid(x) = (1 + tanh(x / 2)) / 2 (error <= 2.5e-7 absolute over
// the ranges above; 0 and 1 at the ends); double as LibmMath. The Diagonal BiLSTM's forward
// on the CPU (B = 16, H = 16, 28 x 28, one thread) spent half its time in the cell with
// SimdMath's exp-based sigmoid and tanh.
struct CellMath {
  PIXELAR_HOST_DEVICE_INLINE static float tanh(float x) { return tanh_rational(x); }
  PIXELAR_HOST_DEVICE_INLINE static float sigmoid(float x) { return sigmoid_rational(x); }
  PIXELAR_HOST_DEVICE_INLINE static double tanh(double x) { return tanh_(x); }
  PIXELAR_HOST_DEVICE_INLINE static double sigmoid(double x) { return LibmMath::sigmoid(x); }
};

// sigmoid(x) = 1 / (1 + exp(-x)) by the policy M (CellMath: through its tanh).
template <typename T, typename M = LibmMath>
PIXELAR_HOST_DEVICE_INLINE T sigmoid(T x) {
  return M::sigmoid(x);
}

// Forward of one LSTM cell element. pre_* are gate pre-activations.
template <typename T, typename M = LibmMath>
PIXELAR_HOST_DEVICE_INLINE void lstm_cell_forward(T pre_i, T pre_f, T pre_o, T pre_g, T c_prev,
                                                  T* c_out, T* h_out) {
  const T i = sigmoid<T, M>(pre_i);
  const T f = sigmoid<T, M>(pre_f);
  const T o = sigmoid<T, M>(pre_o);
  const T g = M::tanh(pre_g);
  const T c = f * c_prev + i * g;
  *c_out = c;
  *h_out = o * M::tanh(c);
}

// Backward of one LSTM cell element.
//   dh: gradient reaching h (from the output and from later steps through the recurrence)
//   dc: gradient reaching c from outside the cell's own h (grad of the c output plus the
//       next step's dc_prev)
// Writes the gradients of the four pre-activations and of c_prev.
template <typename T, typename M = LibmMath>
PIXELAR_HOST_DEVICE_INLINE
void lstm_cell_backward(T pre_i, T pre_f, T pre_o, T pre_g, T c_prev, T c,
                        T dh, T dc,
                        T* d_pre_i, T* d_pre_f, T* d_pre_o, T* d_pre_g,
                        T* dc_prev) {
  const T i = sigmoid<T, M>(pre_i);
  const T f = sigmoid<T, M>(pre_f);
  const T o = sigmoid<T, M>(pre_o);
  const T g = M::tanh(pre_g);
  const T tc = M::tanh(c);
  const T dc_total = dc + dh * o * (T(1) - tc * tc);
  *d_pre_o = dh * tc * o * (T(1) - o);
  *d_pre_i = dc_total * g * i * (T(1) - i);
  *d_pre_g = dc_total * i * (T(1) - g * g);
  *d_pre_f = dc_total * c_prev * f * (T(1) - f);
  *dc_prev = dc_total * f;
}

}  // namespace math
}  // namespace pixelar
