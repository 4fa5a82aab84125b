// Loops of LSTM cells over n contiguous elements, shared by the CPU scan kernels. Each
// element runs the cell of pixelar/lstm_math.h (CellMath); the __restrict parameters tell
// the compiler the arrays do not overlap, so the loops vectorize without runtime checks.
// Include after kernel_common.h.
#pragma once

#include <cstdint>

#include "kernel_common.h"

#include "pixelar/lstm_math.h"
#include "pixelar/simd.h"

namespace pixelar {
namespace cpu {

// Gate pre-activations p* + q* (two addends, e.g. input-to-state and state-to-state).
template <typename T>
PIXELAR_HOST_DEVICE_INLINE
void lstm_forward_loop(const T* __restrict pi, const T* __restrict pf,
                       const T* __restrict po, const T* __restrict pg,
                       const T* __restrict qi, const T* __restrict qf,
                       const T* __restrict qo, const T* __restrict qg,
                       const T* __restrict c_prev, T* __restrict c, T* __restrict h,
                       int64_t n) {
  for (int64_t k = 0; k < n; ++k) {
    T cn, hn;
    math::lstm_cell_forward<T, math::CellMath>(pi[k] + qi[k], pf[k] + qf[k], po[k] + qo[k],
                                               pg[k] + qg[k], c_prev[k], &cn, &hn);
    c[k] = cn;
    h[k] = hn;
  }
}

// Backward of lstm_forward_loop. dh: gradient reaching h; dc_out: gradient of the c output;
// dc_carry: in, the gradient reaching c from the next step; out, the gradient of c_prev.
// Writes the pre-activation gradients d*.
template <typename T>
PIXELAR_HOST_DEVICE_INLINE
void lstm_backward_loop(const T* __restrict pi, const T* __restrict pf,
                        const T* __restrict po, const T* __restrict pg,
                        const T* __restrict qi, const T* __restrict qf,
                        const T* __restrict qo, const T* __restrict qg,
                        const T* __restrict c_prev, const T* __restrict c,
                        const T* __restrict dh, const T* __restrict dc_out,
                        T* __restrict dc_carry, T* __restrict di, T* __restrict df,
                        T* __restrict d_o, T* __restrict dg, int64_t n) {
  for (int64_t k = 0; k < n; ++k) {
    T a, b, e, f, dcp;
    math::lstm_cell_backward<T, math::CellMath>(pi[k] + qi[k], pf[k] + qf[k], po[k] + qo[k],
                                                pg[k] + qg[k], c_prev[k], c[k], dh[k],
                                                dc_out[k] + dc_carry[k], &a, &b, &e, &f, &dcp);
    di[k] = a;
    df[k] = b;
    d_o[k] = e;
    dg[k] = f;
    dc_carry[k] = dcp;
  }
}


// ---- Small dense products for the diagonal scan (csrc/cpu/diagonal_lstm_scan.cpp), whose
// per-column data is kept unit-major: one contiguous run of rows per unit / gate.

// out[g * ldo + i] += sum_k w[g * ldw + k] * b[k][i0 + i] for g < NG, i < NV * lanes: NG x NV
// vectors of sums held in registers, each b vector loaded once for the NG outputs.
template <typename T, int NG, int NV>
PIXELAR_HOST_DEVICE_INLINE
void rows_gemm_block(T* __restrict out, int64_t ldo, const T* __restrict w,
                     int64_t ldw, const T* const* b, int64_t i0, int64_t K) {
  using V = typename simd::Vec<T>::type;
  constexpr int L = simd::Vec<T>::lanes;
  V acc[NG][NV];
  for (int g = 0; g < NG; ++g)
    for (int v = 0; v < NV; ++v) acc[g][v] = simd::load<V>(out + g * ldo + v * L);
  for (int64_t k = 0; k < K; ++k) {
    V bv[NV];
    for (int v = 0; v < NV; ++v) bv[v] = simd::load<V>(b[k] + i0 + v * L);
    for (int g = 0; g < NG; ++g) {
      const V wg = simd::broadcast<V>(w[g * ldw + k]);
      for (int v = 0; v < NV; ++v) acc[g][v] += wg * bv[v];
    }
  }
  for (int g = 0; g < NG; ++g)
    for (int v = 0; v < NV; ++v) simd::store(out + g * ldo + v * L, acc[g][v]);
}

template <typename T, int NG, int NV>
PIXELAR_HOST_DEVICE_INLINE
void rows_gemm_cols(T* out, int64_t ldo, const T* w, int64_t ldw, int64_t M,
                    const T* const* b, int64_t i0, int64_t K) {
  int64_t g = 0;
  for (; g + NG <= M; g += NG)
    rows_gemm_block<T, NG, NV>(out + g * ldo + i0, ldo, w + g * ldw, ldw, b, i0, K);
  for (; g < M; ++g) rows_gemm_block<T, 1, NV>(out + g * ldo + i0, ldo, w + g * ldw, ldw, b, i0, K);
}

// out[g * ldo + i] += sum_k w[g * ldw + k] * b[k][i] for g < M and i < n rounded up to whole
// vectors: out rows and every b[k] must be addressable that far (the extra lanes are
// scratch). w: (M, K) with row stride ldw; b: K pointers to runs of rows.
template <typename T>
PIXELAR_HOST_DEVICE_INLINE void rows_gemm(T* out, int64_t ldo, const T* w, int64_t ldw, int64_t M,
                                          const T* const* b, int64_t K, int64_t n) {
  constexpr int L = simd::Vec<T>::lanes;
  const int64_t nv = (n + L - 1) / L;
  int64_t v = 0;
  for (; v + 4 <= nv; v += 4) rows_gemm_cols<T, 2, 4>(out, ldo, w, ldw, M, b, v * L, K);
  switch (nv - v) {
    case 3: rows_gemm_cols<T, 4, 3>(out, ldo, w, ldw, M, b, v * L, K); break;
    case 2: rows_gemm_cols<T, 4, 2>(out, ldo, w, ldw, M, b, v * L, K); break;
    case 1: rows_gemm_cols<T, 8, 1>(out, ldo, w, ldw, M, b, v * L, K); break;
    default: break;
  }
}

// out[g * ldo + u] += sum_{t < n} a[g * lda + t] * b[u * ldb + t] for g < NG, u < NU.
template <typename T, int NG, int NU>
PIXELAR_HOST_DEVICE_INLINE void dots_block(T* out, int64_t ldo, const T* __restrict a, int64_t lda,
                                           const T* __restrict b, int64_t ldb, int64_t n) {
  using V = typename simd::Vec<T>::type;
  constexpr int L = simd::Vec<T>::lanes;
  V acc[NG][NU];
  for (int g = 0; g < NG; ++g)
    for (int u = 0; u < NU; ++u) acc[g][u] = V{};
  int64_t t = 0;
  for (; t + L <= n; t += L) {
    V bv[NU];
    for (int u = 0; u < NU; ++u) bv[u] = simd::load<V>(b + u * ldb + t);
    for (int g = 0; g < NG; ++g) {
      const V av = simd::load<V>(a + g * lda + t);
      for (int u = 0; u < NU; ++u) acc[g][u] += av * bv[u];
    }
  }
  for (int g = 0; g < NG; ++g) {
    for (int u = 0; u < NU; ++u) {
      T s = simd::reduce_add(acc[g][u]);
      for (int64_t k = t; k < n; ++k) s += a[g * lda + k] * b[u * ldb + k];
      out[g * ldo + u] += s;
    }
  }
}

// out[g * ldo + u] += sum_{t < n} a[g * lda + t] * b[u * ldb + t] for g < M, u < N: the
// products of the rows of a with the rows of b, in blocks of 4 x 2 rows.
template <typename T>
PIXELAR_HOST_DEVICE_INLINE void row_dots(T* out, int64_t ldo, const T* a, int64_t lda, int64_t M,
                                         const T* b, int64_t ldb, int64_t N, int64_t n) {
  int64_t g = 0;
  for (; g + 4 <= M; g += 4) {
    int64_t u = 0;
    for (; u + 2 <= N; u += 2)
      dots_block<T, 4, 2>(out + g * ldo + u, ldo, a + g * lda, lda, b + u * ldb, ldb, n);
    for (; u < N; ++u)
      dots_block<T, 4, 1>(out + g * ldo + u, ldo, a + g * lda, lda, b + u * ldb, ldb, n);
  }
  for (; g < M; ++g)
    for (int64_t u = 0; u < N; ++u)
      dots_block<T, 1, 1>(out + g * ldo + u, ldo, a + g * lda, lda, b + u * ldb, ldb, n);
}

}  // namespace cpu
}  // namespace pixelar
