// Explicit SIMD (GCC / Clang vector extensions) for the CPU sampling kernels
// (csrc/cpu/sampling_*.cpp): dense products with the sums held in vector registers, the
// LSTM cell over a vector of units, and the NADE hidden update.
//
// Vectors are 32 bytes (8 floats, 4 doubles). Inside a function compiled for AVX2 + FMA
// (PIXELAR_SIMD_CLONES, csrc/cpu/kernel_common.h) each vector operation is one AVX2
// instruction; in the baseline clone the compiler splits it into SSE2 halves. Everything
// here is forced inline so that it is compiled inside the calling clone.
//
// Float transcendentals use math::SimdMath's formulas (pixelar/lstm_math.h: Cephes expf,
// 1.4 ulp; tanh within 1e-7 absolute), written on vectors; double uses the math library
// (math::LibmMath), element by element, so fp64 models are computed as the references do.
#pragma once

#include <cstdint>
#include <cstring>

#include "pixelar/lstm_math.h"

#if defined(__GNUC__) && !defined(__clang__)
// 32-byte vector arguments of the (always inlined) helpers below: no ABI is involved.
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

#if defined(__GNUC__)
#define PIXELAR_SIMD_INLINE inline __attribute__((always_inline))
#else
#define PIXELAR_SIMD_INLINE inline
#endif

namespace pixelar {
namespace simd {

typedef float v8sf __attribute__((vector_size(32)));
typedef int v8si __attribute__((vector_size(32)));
typedef double v4df __attribute__((vector_size(32)));

template <typename T>
struct Vec;
template <>
struct Vec<float> {
  using type = v8sf;
  static constexpr int lanes = 8;
};
template <>
struct Vec<double> {
  using type = v4df;
  static constexpr int lanes = 4;
};

template <typename V, typename T>
PIXELAR_SIMD_INLINE V load(const T* p) {
  V v;
  std::memcpy(&v, p, sizeof(V));
  return v;
}

template <typename V, typename T>
PIXELAR_SIMD_INLINE void store(T* p, V v) {
  std::memcpy(p, &v, sizeof(V));
}

template <typename V, typename T>
PIXELAR_SIMD_INLINE V broadcast(T x) {
  return V{} + x;
}

// out[0 .. NV * lanes) += sum_k act(x[k]) * w[k * ldw + ...]: NV vectors of sums in two
// chains (even / odd k, added at the end). act: identity, or ReLU when kRelu.
template <typename T, int NV, bool kRelu>
PIXELAR_SIMD_INLINE void affine_block(T* __restrict__ out, const T* __restrict__ x, int64_t K,
                                      const T* __restrict__ w, int64_t ldw) {
  using V = typename Vec<T>::type;
  constexpr int L = Vec<T>::lanes;
  V acc0[NV], acc1[NV];
  for (int v = 0; v < NV; ++v) {
    acc0[v] = load<V>(out + v * L);
    acc1[v] = V{};
  }
  int64_t k = 0;
  for (; k + 2 <= K; k += 2) {
    T x0 = x[k], x1 = x[k + 1];
    if (kRelu) {
      x0 = x0 > T(0) ? x0 : T(0);
      x1 = x1 > T(0) ? x1 : T(0);
    }
    const V b0 = broadcast<V>(x0), b1 = broadcast<V>(x1);
    const T* w0 = w + k * ldw;
    const T* w1 = w0 + ldw;
    for (int v = 0; v < NV; ++v) {
      acc0[v] += b0 * load<V>(w0 + v * L);
      acc1[v] += b1 * load<V>(w1 + v * L);
    }
  }
  if (k < K) {
    T x0 = x[k];
    if (kRelu) x0 = x0 > T(0) ? x0 : T(0);
    const V b0 = broadcast<V>(x0);
    const T* w0 = w + k * ldw;
    for (int v = 0; v < NV; ++v) acc0[v] += b0 * load<V>(w0 + v * L);
  }
  for (int v = 0; v < NV; ++v) store(out + v * L, acc0[v] + acc1[v]);
}

// out[g] += sum_k act(x[k]) * w[k * ldw + g] for g < G: w input-major (K rows of stride
// ldw), blocks of 4, 2 and 1 vectors, then scalars.
template <typename T, bool kRelu>
PIXELAR_SIMD_INLINE void affine(T* __restrict__ out, const T* __restrict__ x, int64_t K,
                                const T* __restrict__ w, int64_t G, int64_t ldw) {
  constexpr int L = Vec<T>::lanes;
  int64_t g = 0;
  for (; g + 4 * L <= G; g += 4 * L) affine_block<T, 4, kRelu>(out + g, x, K, w + g, ldw);
  for (; g + 2 * L <= G; g += 2 * L) affine_block<T, 2, kRelu>(out + g, x, K, w + g, ldw);
  for (; g + L <= G; g += L) affine_block<T, 1, kRelu>(out + g, x, K, w + g, ldw);
  for (; g < G; ++g) {
    T s = out[g];
    for (int64_t k = 0; k < K; ++k) {
      T xk = x[k];
      if (kRelu) xk = xk > T(0) ? xk : T(0);
      s += xk * w[k * ldw + g];
    }
    out[g] = s;
  }
}

// ---- float transcendentals on 8 lanes (the formulas of math::SimdMath)
PIXELAR_SIMD_INLINE v8sf vexp(v8sf x) {
  const v8sf hi = broadcast<v8sf>(88.3762626647949f), lo = broadcast<v8sf>(-87.3365447504f);
  x = x < hi ? x : hi;
  x = x > lo ? x : lo;
  const v8sf magic = broadcast<v8sf>(12582912.0f);
  const v8sf n = (x * 1.44269504088896341f + magic) - magic;
  v8sf r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  v8sf p = broadcast<v8sf>(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const v8si e = (__builtin_convertvector(n, v8si) + 127) << 23;
  v8sf scale;
  std::memcpy(&scale, &e, sizeof(scale));
  return p * scale;
}

PIXELAR_SIMD_INLINE v8sf vsigmoid(v8sf x) { return 1.0f / (1.0f + vexp(-x)); }

PIXELAR_SIMD_INLINE v8sf vtanh(v8sf x) {
  const v8sf zero = v8sf{};
  const v8sf ax = x < zero ? -x : x;
  const v8sf e = vexp(-2.0f * ax);
  const v8sf big = (1.0f - e) / (1.0f + e);
  const v8sf x2 = ax * ax;
  const v8sf small =
      ax + ax * x2 * (-0.333333333333f + x2 * (0.133333333333f + x2 * -0.053968253968f));
  const v8sf t = ax < 0.0625f ? small : big;
  return x < zero ? -t : t;
}

// LSTM cells over U units: pre = [i, f, o, g] blocks of U; writes h and c.
PIXELAR_SIMD_INLINE void lstm_cells(const float* __restrict__ pre,
                                    const float* __restrict__ c_prev, int64_t U,
                                    float* __restrict__ h, float* __restrict__ c) {
  int64_t j = 0;
  for (; j + 8 <= U; j += 8) {
    const v8sf i = vsigmoid(load<v8sf>(pre + j));
    const v8sf f = vsigmoid(load<v8sf>(pre + U + j));
    const v8sf o = vsigmoid(load<v8sf>(pre + 2 * U + j));
    const v8sf g = vtanh(load<v8sf>(pre + 3 * U + j));
    const v8sf cn = f * load<v8sf>(c_prev + j) + i * g;
    store(c + j, cn);
    store(h + j, o * vtanh(cn));
  }
  for (; j < U; ++j) {
    math::lstm_cell_forward<float, math::SimdMath>(pre[j], pre[U + j], pre[2 * U + j],
                                                   pre[3 * U + j], c_prev[j], &c[j], &h[j]);
  }
}

PIXELAR_SIMD_INLINE void lstm_cells(const double* __restrict__ pre,
                                    const double* __restrict__ c_prev, int64_t U,
                                    double* __restrict__ h, double* __restrict__ c) {
  for (int64_t j = 0; j < U; ++j) {
    math::lstm_cell_forward<double>(pre[j], pre[U + j], pre[2 * U + j], pre[3 * U + j],
                                    c_prev[j], &c[j], &h[j]);
  }
}

// NADE / RNADE hidden update over n units: a += xd * w; h = sigmoid(a).
PIXELAR_SIMD_INLINE void hidden_update(float* __restrict__ a, float* __restrict__ h,
                                       const float* __restrict__ w, float xd, int64_t n) {
  int64_t j = 0;
  const v8sf b = broadcast<v8sf>(xd);
  for (; j + 8 <= n; j += 8) {
    const v8sf aj = load<v8sf>(a + j) + b * load<v8sf>(w + j);
    store(a + j, aj);
    store(h + j, vsigmoid(aj));
  }
  for (; j < n; ++j) {
    a[j] += xd * w[j];
    h[j] = math::sigmoid<float, math::SimdMath>(a[j]);
  }
}

PIXELAR_SIMD_INLINE void hidden_update(double* __restrict__ a, double* __restrict__ h,
                                       const double* __restrict__ w, double xd, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    a[j] += xd * w[j];
    h[j] = math::sigmoid<double>(a[j]);
  }
}

// out = exp(-in) over n floats (NADE: the factors exp(-W[:, d]) of the product update).
PIXELAR_SIMD_INLINE void neg_exp(const float* __restrict__ in, float* __restrict__ out,
                                 int64_t n) {
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) store(out + j, vexp(-load<v8sf>(in + j)));
  for (; j < n; ++j) out[j] = math::SimdMath::exp(-in[j]);
}

// NADE hidden update for x_d = 1, float, without an exp per unit: e = exp(-a) is carried
// as a product, e *= exp(-w) (ew), and h = 1 / (1 + e) = sigmoid(a). Each product adds at
// most ~2 ulp of relative error to e; hidden_refresh recomputes e from a.
PIXELAR_SIMD_INLINE void hidden_update_product(float* __restrict__ e, float* __restrict__ h,
                                               const float* __restrict__ ew, int64_t n) {
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const v8sf ej = load<v8sf>(e + j) * load<v8sf>(ew + j);
    store(e + j, ej);
    store(h + j, 1.0f / (1.0f + ej));
  }
  for (; j < n; ++j) {
    e[j] *= ew[j];
    h[j] = 1.0f / (1.0f + e[j]);
  }
}

// e = exp(-a), h = 1 / (1 + e) = sigmoid(a), exactly as vsigmoid computes it.
PIXELAR_SIMD_INLINE void hidden_refresh(const float* __restrict__ a, float* __restrict__ e,
                                        float* __restrict__ h, int64_t n) {
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const v8sf ej = vexp(-load<v8sf>(a + j));
    store(e + j, ej);
    store(h + j, 1.0f / (1.0f + ej));
  }
  for (; j < n; ++j) {
    e[j] = math::SimdMath::exp(-a[j]);
    h[j] = 1.0f / (1.0f + e[j]);
  }
}

// out[s] = sum_j v[j] * h[s * ldh + j] for s < S (S fixed): S vector sums, one pass over v.
template <typename T, int S>
PIXELAR_SIMD_INLINE void dot_many(const T* __restrict__ v, const T* __restrict__ h,
                                  int64_t ldh, int64_t n, T* __restrict__ out) {
  using V = typename Vec<T>::type;
  constexpr int L = Vec<T>::lanes;
  V acc[S];
  for (int s = 0; s < S; ++s) acc[s] = V{};
  int64_t j = 0;
  for (; j + L <= n; j += L) {
    const V vj = load<V>(v + j);
    for (int s = 0; s < S; ++s) acc[s] += vj * load<V>(h + s * ldh + j);
  }
  for (int s = 0; s < S; ++s) {
    T total = T(0);
    for (int l = 0; l < L; ++l) total += acc[s][l];
    for (int64_t jj = j; jj < n; ++jj) total += v[jj] * h[s * ldh + jj];
    out[s] = total;
  }
}

}  // namespace simd
}  // namespace pixelar
