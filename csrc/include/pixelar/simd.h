// Explicit SIMD (GCC / Clang vector extensions) for the CPU kernels (csrc/cpu): dense
// products with the sums held in vector registers, dot products, the LSTM cell over a
// vector of units, and the float exp / sigmoid / tanh on vectors.
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
#include <type_traits>

#include "pixelar/inline.h"
#include "pixelar/lstm_math.h"  // also silences -Wpsabi: 32-byte vector arguments of
                                 // always-inlined helpers involve no ABI

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
PIXELAR_HOST_DEVICE_INLINE V load(const T* p) {
  V v;
  std::memcpy(&v, p, sizeof(V));
  return v;
}

template <typename V, typename T>
PIXELAR_HOST_DEVICE_INLINE void store(T* p, V v) {
  std::memcpy(p, &v, sizeof(V));
}

// A vector of lanes all equal to x: lane 0 shuffled to all lanes, which GCC (12 and later)
// and Clang compile to one vbroadcastss / vbroadcastsd, from memory where x is loaded. (With
// V{} + x, GCC kept the add, which is not a no-op for x = -0: a scalar add and a register
// broadcast, two FP operations per broadcast in the register-blocked products; a vector of
// x's, or x - V{}, it built lane by lane in the target_clones functions.)
template <typename V, typename T>
PIXELAR_HOST_DEVICE_INLINE V broadcast(T x) {
  static_assert(std::is_same<V, v8sf>::value || std::is_same<V, v4df>::value,
                "simd::broadcast: a float or double vector");
#if defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 12)
  if constexpr (std::is_same<V, v8sf>::value) {
    const v8sf t = {static_cast<float>(x)};
    return __builtin_shufflevector(t, t, 0, 0, 0, 0, 0, 0, 0, 0);
  } else {
    const v4df t = {static_cast<double>(x)};
    return __builtin_shufflevector(t, t, 0, 0, 0, 0);
  }
#else
  return V{} + x;
#endif
}

// out[0 .. NV * lanes) += sum_k act(x[k]) * w[k * ldw + ...]: NV vectors of sums in two
// chains (even / odd k, added at the end). act: identity, or ReLU when kRelu.
template <typename T, int NV, bool kRelu>
PIXELAR_HOST_DEVICE_INLINE
void affine_block(T* __restrict__ out, const T* __restrict__ x, int64_t K,
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

// Sum of the lanes, pairwise.
PIXELAR_HOST_DEVICE_INLINE float reduce_add(v8sf v) {
  typedef float v4sf __attribute__((vector_size(16)));
  v4sf lo, hi;
  std::memcpy(&lo, &v, sizeof(lo));
  std::memcpy(&hi, reinterpret_cast<const char*>(&v) + sizeof(lo), sizeof(hi));
  const v4sf s = lo + hi;
  return (s[0] + s[2]) + (s[1] + s[3]);
}

PIXELAR_HOST_DEVICE_INLINE double reduce_add(v4df v) { return (v[0] + v[2]) + (v[1] + v[3]); }

// sum_k v[k] * h[k] over n values: two chains of vector sums, then the tail.
template <typename T>
PIXELAR_HOST_DEVICE_INLINE T dot(const T* __restrict__ v, const T* __restrict__ h, int64_t n) {
  using V = typename Vec<T>::type;
  constexpr int L = Vec<T>::lanes;
  V acc0{}, acc1{};
  int64_t k = 0;
  for (; k + 2 * L <= n; k += 2 * L) {
    acc0 += load<V>(v + k) * load<V>(h + k);
    acc1 += load<V>(v + k + L) * load<V>(h + k + L);
  }
  if (k + L <= n) {
    acc0 += load<V>(v + k) * load<V>(h + k);
    k += L;
  }
  T total = reduce_add(acc0 + acc1);
  for (; k < n; ++k) total += v[k] * h[k];
  return total;
}

// out[r] = the lane sum of acc[r], r < R, for R = 4 or 8 float vectors: a transpose-and-add
// tree of shuffles (no serial chain of scalar adds per vector). Other cases: one by one.
template <int R>
PIXELAR_HOST_DEVICE_INLINE void reduce_add_rows(const v8sf* acc, float* out) {
  static_assert(R == 4 || R == 8, "R = 4 or 8");
  const v8si even = {0, 8, 2, 10, 4, 12, 6, 14}, odd = {1, 9, 3, 11, 5, 13, 7, 15};
  const v8si lo2 = {0, 1, 8, 9, 4, 5, 12, 13}, hi2 = {2, 3, 10, 11, 6, 7, 14, 15};
  // t[i] = [r0 01, r1 01, r0 23, r1 23, r0 45, r1 45, r0 67, r1 67] for rows 2i, 2i + 1
  v8sf t[R / 2];
  for (int i = 0; i < R / 2; ++i)
    t[i] = __builtin_shuffle(acc[2 * i], acc[2 * i + 1], even) +
           __builtin_shuffle(acc[2 * i], acc[2 * i + 1], odd);
  // u[j] = [r0 0-3, r1 0-3, r2 0-3, r3 0-3, r0 4-7, r1 4-7, r2 4-7, r3 4-7], rows 4j ..
  v8sf u[R / 4];
  for (int j = 0; j < R / 4; ++j)
    u[j] = __builtin_shuffle(t[2 * j], t[2 * j + 1], lo2) +
           __builtin_shuffle(t[2 * j], t[2 * j + 1], hi2);
  if constexpr (R == 8) {
    const v8si lo4 = {0, 1, 2, 3, 8, 9, 10, 11}, hi4 = {4, 5, 6, 7, 12, 13, 14, 15};
    store(out, __builtin_shuffle(u[0], u[1], lo4) + __builtin_shuffle(u[0], u[1], hi4));
  } else {
    for (int r = 0; r < 4; ++r) out[r] = u[0][r] + u[0][r + 4];
  }
}

// dst[j * ldd + i] = src[i * lds + j] for i, j < 8: an 8 x 8 float block transposed in
// registers (three rounds of two-vector shuffles: pairs of rows, pairs of pairs, halves).
PIXELAR_HOST_DEVICE_INLINE void transpose8x8(const float* src, int64_t lds, float* dst,
                                             int64_t ldd) {
  const v8si lo1 = {0, 8, 1, 9, 4, 12, 5, 13}, hi1 = {2, 10, 3, 11, 6, 14, 7, 15};
  const v8si lo2 = {0, 1, 8, 9, 4, 5, 12, 13}, hi2 = {2, 3, 10, 11, 6, 7, 14, 15};
  const v8si lo4 = {0, 1, 2, 3, 8, 9, 10, 11}, hi4 = {4, 5, 6, 7, 12, 13, 14, 15};
  v8sf r[8], t[8], u[8];
  for (int i = 0; i < 8; ++i) r[i] = load<v8sf>(src + i * lds);
  for (int i = 0; i < 8; i += 2) {  // t[i] = [r_i0 r_i+1,0 r_i1 r_i+1,1 | the same for 4, 5]
    t[i] = __builtin_shuffle(r[i], r[i + 1], lo1);
    t[i + 1] = __builtin_shuffle(r[i], r[i + 1], hi1);
  }
  for (int i = 0; i < 8; i += 4) {  // u: columns (0 | 4), (1 | 5), (2 | 6), (3 | 7) of 4 rows
    u[i] = __builtin_shuffle(t[i], t[i + 2], lo2);
    u[i + 1] = __builtin_shuffle(t[i], t[i + 2], hi2);
    u[i + 2] = __builtin_shuffle(t[i + 1], t[i + 3], lo2);
    u[i + 3] = __builtin_shuffle(t[i + 1], t[i + 3], hi2);
  }
  for (int j = 0; j < 4; ++j) {  // column j from rows 0-3 and 4-7, and column j + 4
    store(dst + j * ldd, __builtin_shuffle(u[j], u[j + 4], lo4));
    store(dst + (j + 4) * ldd, __builtin_shuffle(u[j], u[j + 4], hi4));
  }
}

template <int R>
PIXELAR_HOST_DEVICE_INLINE void reduce_add_rows(const v4df* acc, double* out) {
  for (int r = 0; r < R; ++r) out[r] = reduce_add(acc[r]);
}

// out[r] = sum_k v[k] * h[r][k] over n values, r < R: v loaded once for the R rows.
template <int R, typename T>
PIXELAR_HOST_DEVICE_INLINE void dot_rows(const T* __restrict__ v, const T* const* h, int64_t n,
                                         T* out) {
  using V = typename Vec<T>::type;
  constexpr int L = Vec<T>::lanes;
  V acc[R] = {};
  int64_t k = 0;
  for (; k + L <= n; k += L) {
    const V vk = load<V>(v + k);
    for (int r = 0; r < R; ++r) acc[r] += vk * load<V>(h[r] + k);
  }
  reduce_add_rows<R>(acc, out);
  for (; k < n; ++k)
    for (int r = 0; r < R; ++r) out[r] += v[k] * h[r][k];
}

// out[g] += sum_k act(x[k]) * w[k * ldw + g] for g < G: w input-major (K rows of stride
// ldw), blocks of 4, 2 and 1 vectors, then scalars.
template <typename T, bool kRelu>
PIXELAR_HOST_DEVICE_INLINE void affine(T* __restrict__ out, const T* __restrict__ x, int64_t K,
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

// ---- float transcendentals on 8 lanes: lstm_math.h's formulas on vectors
}  // namespace simd

namespace math {
template <>
struct Pow2<simd::v8sf> {
  PIXELAR_HOST_DEVICE_INLINE static simd::v8sf of(simd::v8sf n) {
    const simd::v8si e = (__builtin_convertvector(n, simd::v8si) + 127) << 23;
    simd::v8sf scale;
    std::memcpy(&scale, &e, sizeof(scale));
    return scale;
  }
};
}  // namespace math

namespace simd {

PIXELAR_HOST_DEVICE_INLINE v8sf vexp(v8sf x) { return math::exp_poly(x); }

PIXELAR_HOST_DEVICE_INLINE v8sf vsigmoid(v8sf x) { return math::sigmoid_poly(x); }

// The LSTM cells' tanh and sigmoid (math::CellMath) on vectors.
PIXELAR_HOST_DEVICE_INLINE v8sf vcell_tanh(v8sf x) { return math::tanh_rational(x); }

PIXELAR_HOST_DEVICE_INLINE v8sf vcell_sigmoid(v8sf x) { return math::sigmoid_rational(x); }

// LSTM cells over U units (math::CellMath): pre = [i, f, o, g] blocks of U; writes h and c.
PIXELAR_HOST_DEVICE_INLINE void lstm_cells(const float* __restrict__ pre,
                                           const float* __restrict__ c_prev, int64_t U,
                                           float* __restrict__ h, float* __restrict__ c) {
  int64_t j = 0;
  for (; j + 8 <= U; j += 8) {
    const v8sf i = vcell_sigmoid(load<v8sf>(pre + j));
    const v8sf f = vcell_sigmoid(load<v8sf>(pre + U + j));
    const v8sf o = vcell_sigmoid(load<v8sf>(pre + 2 * U + j));
    const v8sf g = vcell_tanh(load<v8sf>(pre + 3 * U + j));
    const v8sf cn = f * load<v8sf>(c_prev + j) + i * g;
    store(c + j, cn);
    store(h + j, o * vcell_tanh(cn));
  }
  for (; j < U; ++j) {
    math::lstm_cell_forward<float, math::CellMath>(pre[j], pre[U + j], pre[2 * U + j],
                                                   pre[3 * U + j], c_prev[j], &c[j], &h[j]);
  }
}

PIXELAR_HOST_DEVICE_INLINE void lstm_cells(const double* __restrict__ pre,
                                           const double* __restrict__ c_prev, int64_t U,
                                           double* __restrict__ h, double* __restrict__ c) {
  for (int64_t j = 0; j < U; ++j) {
    math::lstm_cell_forward<double>(pre[j], pre[U + j], pre[2 * U + j], pre[3 * U + j],
                                    c_prev[j], &c[j], &h[j]);
  }
}

// RNADE hidden update over n units: a += xd * w; h = sigmoid(a) (NADE: nade_hidden.h).
PIXELAR_HOST_DEVICE_INLINE void hidden_update(float* __restrict__ a, float* __restrict__ h,
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

PIXELAR_HOST_DEVICE_INLINE void hidden_update(double* __restrict__ a, double* __restrict__ h,
                                              const double* __restrict__ w, double xd, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    a[j] += xd * w[j];
    h[j] = math::sigmoid<double>(a[j]);
  }
}

}  // namespace simd
}  // namespace pixelar
