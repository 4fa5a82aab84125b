// Loops of LSTM cells over n contiguous elements, shared by the CPU scan kernels. Each
// element runs the cell of pixelar/lstm_math.h (SimdMath); the __restrict parameters tell
// the compiler the arrays do not overlap, so the loops vectorize without runtime checks.
// Include after kernel_common.h.
#pragma once

#include <cstdint>

#include "kernel_common.h"

#include "pixelar/lstm_math.h"

namespace pixelar {
namespace cpu {

// Gate pre-activations p* + q* (two addends, e.g. input-to-state and state-to-state).
template <typename T>
PIXELAR_INLINE void lstm_forward_loop(const T* __restrict pi, const T* __restrict pf,
                              const T* __restrict po, const T* __restrict pg,
                              const T* __restrict qi, const T* __restrict qf,
                              const T* __restrict qo, const T* __restrict qg,
                              const T* __restrict c_prev, T* __restrict c, T* __restrict h,
                              int64_t n) {
  for (int64_t k = 0; k < n; ++k) {
    T cn, hn;
    math::lstm_cell_forward<T, math::SimdMath>(pi[k] + qi[k], pf[k] + qf[k], po[k] + qo[k],
                                               pg[k] + qg[k], c_prev[k], &cn, &hn);
    c[k] = cn;
    h[k] = hn;
  }
}

// Backward of lstm_forward_loop. dh: gradient reaching h; dc_out: gradient of the c output;
// dc_carry: in, the gradient reaching c from the next step; out, the gradient of c_prev.
// Writes the pre-activation gradients d*.
template <typename T>
PIXELAR_INLINE void lstm_backward_loop(const T* __restrict pi, const T* __restrict pf,
                               const T* __restrict po, const T* __restrict pg,
                               const T* __restrict qi, const T* __restrict qf,
                               const T* __restrict qo, const T* __restrict qg,
                               const T* __restrict c_prev, const T* __restrict c,
                               const T* __restrict dh, const T* __restrict dc_out,
                               T* __restrict dc_carry, T* __restrict di, T* __restrict df,
                               T* __restrict d_o, T* __restrict dg, int64_t n) {
  for (int64_t k = 0; k < n; ++k) {
    T a, b, e, f, dcp;
    math::lstm_cell_backward<T, math::SimdMath>(pi[k] + qi[k], pf[k] + qf[k], po[k] + qo[k],
                                                pg[k] + qg[k], c_prev[k], c[k], dh[k],
                                                dc_out[k] + dc_carry[k], &a, &b, &e, &f, &dcp);
    di[k] = a;
    df[k] = b;
    d_o[k] = e;
    dg[k] = f;
    dc_carry[k] = dcp;
  }
}

}  // namespace cpu
}  // namespace pixelar
