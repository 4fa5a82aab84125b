// The NADE hidden-state walk shared by the CPU training kernel (nade_forward.cpp) and the
// sampler (nade_sample.cpp): a_0 = c, h_d = sigmoid(a_d), a_{d+1} = a_d + x_d W[:, d].
//
// Each step d -> d + 1 of one row (a batch row / an image) takes one of four forms:
//   kKeep     x_d = 0 and column d of W finite: a, e and h are unchanged (no work at all;
//             binary images are mostly zeros).
//   kProduct  float, x_d = 1: e *= exp(-W[:, d]) (precomputed: ew), where e = exp(-a);
//             h = 1 / (1 + e); a += W[:, d] is left pending until the next exact step.
//             No exp per unit: about 3x cheaper than kExact.
//   kExact    a += (pending columns) + x_d W[:, d]; h = sigmoid(a) (float: e = exp(-a) anew).
//   kRestart  a += (pending columns); h = sigmoid(a) (the first step, and checkpoints).
// A row's Row::next picks kProduct only while the chain of products since its last exact e
// is short (at most kMaxProducts) and moves a by at most kMaxDrift (the sum of the columns'
// max |W[k, d]|): then e carries at most ~2 kMaxProducts ulp of relative error, and an e
// saturated at the ends of exp's range (|a| > 87) cannot come back into range (a is
// still beyond +-27 there, where h is 0 or 1 to within 1e-12). Double never takes products.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <mutex>
#include <type_traits>

#include "kernel_common.h"
#include "pixelar/lstm_math.h"
#include "pixelar/simd.h"

namespace pixelar {
namespace cpu {
namespace nade {

enum class Step { kKeep, kProduct, kExact, kRestart };

constexpr int kMaxProducts = 32;
constexpr float kMaxDrift = 60.0f;

// Per-column facts of W^T (D, Hd), from ColumnCache (below): ew = exp(-W^T) (float only)
// and wmax[d] = max_k |W[k, d]|, +inf where column d has an inf or NaN.
struct Columns {
  at::Tensor ew;    // (D, Hd) float, or undefined for double
  at::Tensor wmax;  // (D,) float32
};

// The facts of rows [d0, d1) of wt (D, Hd), and those rows of wt copied to copy (the
// ColumnCache's record of them: no second pass over W^T).
template <typename T>
PIXELAR_SIMD_CLONES void column_facts_rows(const T* wt, T* ew, float* wmax, T* copy, int64_t d0,
                                           int64_t d1, int64_t Hd) {
  using V = typename simd::Vec<T>::type;
  constexpr int L = simd::Vec<T>::lanes;
  for (int64_t d = d0; d < d1; ++d) {
    const T* w = wt + d * Hd;
    // max |w| and sum of (w - w): 0 for finite values, NaN once an inf or NaN is met
    V m{}, nonfinite{};
    int64_t k = 0;
    for (; k + L <= Hd; k += L) {
      const V wk = simd::load<V>(w + k);
      const V ak = wk < V{} ? -wk : wk;
      m = ak > m ? ak : m;
      nonfinite += wk - wk;
      if constexpr (std::is_same<T, float>::value) simd::store(ew + d * Hd + k, simd::vexp(-wk));
      simd::store(copy + d * Hd + k, wk);
    }
    T m_all = 0, nf_all = simd::reduce_add(nonfinite);
    for (int l = 0; l < L; ++l) m_all = m[l] > m_all ? m[l] : m_all;
    for (; k < Hd; ++k) {
      const T ak = w[k] < T(0) ? -w[k] : w[k];
      m_all = ak > m_all ? ak : m_all;
      nf_all += w[k] - w[k];
      if constexpr (std::is_same<T, float>::value) ew[d * Hd + k] = math::exp_poly(-w[k]);
      copy[d * Hd + k] = w[k];
    }
    wmax[d] = nf_all == T(0) ? static_cast<float>(m_all) : INFINITY;
  }
}

// Fills out (ew: (D, Hd) float or undefined, wmax: (D,)) with the facts of wt (D, Hd)
// contiguous, and copy (D, Hd) with wt.
inline void fill_column_facts(const at::Tensor& wt, const Columns& out, const at::Tensor& copy) {
  const int64_t D = wt.size(0), Hd = wt.size(1);
  AT_DISPATCH_FLOATING_TYPES(wt.scalar_type(), "nade_column_facts", [&] {
    at::parallel_for(0, D, 16, [&](int64_t d0, int64_t d1) {
      column_facts_rows<scalar_t>(wt.data_ptr<scalar_t>(),
                                  out.ew.defined() ? out.ew.data_ptr<scalar_t>() : nullptr,
                                  out.wmax.data_ptr<float>(), copy.data_ptr<scalar_t>(), d0,
                                  d1, Hd);
    });
  });
}

// Whether a and b (contiguous, the same dtype and number of elements) hold the same bytes:
// memcmp in parallel over 64 KiB blocks.
inline bool same_bytes(const at::Tensor& a, const at::Tensor& b) {
  const char* pa = static_cast<const char*>(a.data_ptr());
  const char* pb = static_cast<const char*>(b.data_ptr());
  std::atomic<bool> differ{false};
  at::parallel_for(0, static_cast<int64_t>(a.nbytes()), int64_t{1} << 16,
                   [&](int64_t b0, int64_t b1) {
    if (!differ.load(std::memory_order_relaxed) && std::memcmp(pa + b0, pb + b0, b1 - b0) != 0)
      differ.store(true, std::memory_order_relaxed);
  });
  return !differ.load();
}

// The column facts, kept from one call to the next beside a copy of the W^T they were
// computed from: a call whose W^T holds the same bytes as the copy reuses them instead of
// computing D * Hd exps. That is the training backward after its forward (the same W), and
// every sampling call after the first while the weights do not change. The copy makes the
// reuse exact whatever changed W in between (an optimizer, a load, writes through .data
// that no version counter sees). One entry per process; a caller keeps its Columns alive
// however the entry is replaced meanwhile. When the threads' two CPUs are far apart
// (README, "Performance stability"), a hit also spares each thread reading the half of a
// fresh exp(-W^T) that the other one wrote. In-process A/B, H = 500, 2 threads, medians of
// the rounds' best: NADE.sample of 64 images 2.14 against 2.21 ms near (399 rounds), 2.56
// against 2.77 ms far (299); the trainer's NADE step, B = 64, Bernoulli(0.5) pixels, 8.16
// against 8.22 ms near (300), 10.61 against 10.97 ms far (368) (measured with the copy as
// a pass of its own; it is now written by the pass that computes the facts).
class ColumnCache {
 public:
  Columns get(const at::Tensor& wt) {  // wt: (D, Hd) contiguous
    std::lock_guard<std::mutex> lock(mutex_);
    const bool fits = copy_.defined() && copy_.scalar_type() == wt.scalar_type() &&
                      copy_.sizes() == wt.sizes();
    if (fits && same_bytes(copy_, wt)) return cols_;
    // refill in place when no caller holds the old entry (copy_ is never handed out), else
    // in new memory
    if (!fits || cols_.wmax.use_count() > 1 ||
        (cols_.ew.defined() && cols_.ew.use_count() > 1)) {
      copy_ = at::empty(wt.sizes(), wt.options());
      cols_ = Columns{wt.scalar_type() == at::kFloat ? at::empty(wt.sizes(), wt.options())
                                                     : at::Tensor(),
                      at::empty({wt.size(0)}, wt.options().dtype(at::kFloat))};
    }
    fill_column_facts(wt, cols_, copy_);
    return cols_;
  }

 private:
  std::mutex mutex_;
  at::Tensor copy_;  // the W^T of cols_
  Columns cols_;
};

// The process's ColumnCache (never destroyed: no tensor is freed after torch's teardown).
inline ColumnCache& column_cache() {
  static ColumnCache* cache = new ColumnCache();
  return *cache;
}

// One row's walk state: which step each column takes, and the columns multiplied into e
// but not yet added to a (a is only needed at the next exact step: the pending columns are
// added then, in order, one rounding each, so a is bitwise what eager updates give).
template <typename T>
struct Row {
  float drift = 0;                   // sum of wmax over the products since the exact e
  int products = 0;                  // products since the exact e
  int npending = 0;                  // pending[0 .. npending): columns not yet in a
  const T* pending[kMaxProducts];

  // The step for a column with input xd and max |W[:, d]| wmax (Step::kKeep, kProduct or
  // kExact), or restart(): an exact h from a, no column (kRestart).
  Step next(T xd, float wmax) {
    if (xd == T(0) && wmax < INFINITY) return Step::kKeep;
    if (std::is_same<T, float>::value && xd == T(1) && products < kMaxProducts &&
        drift + wmax <= kMaxDrift) {
      drift += wmax;
      ++products;
      return Step::kProduct;
    }
    drift = 0;
    products = 0;
    return Step::kExact;
  }
  Step restart() {
    drift = 0;
    products = 0;
    return Step::kRestart;
  }
};

// a[k .. k + NV * 8) += pend[0][..] + ... + pend[np - 1][..] (+ xd * w[..] when kUpdate), in
// that order, one rounding each: NV independent chains of vector adds, so the adds of
// different vectors overlap (a single chain would wait on every add's latency).
template <int NV, bool kUpdate>
PIXELAR_HOST_DEVICE_INLINE void add_columns(float* __restrict a, const float* const* pend, int np,
                                            const float* __restrict w, float xd, int64_t k) {
  using simd::v8sf;
  v8sf acc[NV];
  for (int j = 0; j < NV; ++j) acc[j] = simd::load<v8sf>(a + k + 8 * j);
  for (int p = 0; p < np; ++p)
    for (int j = 0; j < NV; ++j) acc[j] = acc[j] + simd::load<v8sf>(pend[p] + k + 8 * j);
  if (kUpdate)
    for (int j = 0; j < NV; ++j) acc[j] = acc[j] + xd * simd::load<v8sf>(w + k + 8 * j);
  for (int j = 0; j < NV; ++j) simd::store(a + k + 8 * j, acc[j]);
}

// h[k .. k + 8 * NV) = 1 / (1 + e') for the NV vectors of e' given, stored with e'; with
// kDot, acc[j] += v * h (the next dimension's dot product, from the h still in registers).
template <int NV, bool kDot>
PIXELAR_HOST_DEVICE_INLINE void store_state(float* __restrict e, float* __restrict h,
                                            const float* __restrict v, const simd::v8sf* ek,
                                            simd::v8sf* acc, int64_t k) {
  for (int j = 0; j < NV; ++j) {
    const simd::v8sf hk = 1.0f / (1.0f + ek[j]);
    simd::store(e + k + 8 * j, ek[j]);
    simd::store(h + k + 8 * j, hk);
    if (kDot) acc[j] = acc[j] + simd::load<simd::v8sf>(v + k + 8 * j) * hk;
  }
}

// Applies step S (not kKeep) to a row over n units: a, e, h (n each) are its state; w, ew
// the column (W^T[d], exp(-W^T[d]), at the same unit offset), xd its input. With kDot, also
// returns sum_k v[k] * h[k] of the new h (v: the next dimension's output weights), taken
// while h is in registers rather than read back (the sampler's walk: nade_sample.cpp);
// float sums it in two chains of vectors, then the tail; double calls simd::dot after.
template <Step S, bool kDot = false, typename T>
PIXELAR_HOST_DEVICE_INLINE
T step(Row<T>& row, T* __restrict a, T* __restrict e, T* __restrict h,
       const T* __restrict w, const T* __restrict ew, T xd, int64_t n,
       const T* __restrict v = nullptr) {
  static_assert(S != Step::kKeep, "kKeep changes nothing");
  const int np = S == Step::kProduct ? 0 : row.npending;
  const T* const* pend = row.pending;
  T total = 0;
  int64_t k = 0;
  if constexpr (std::is_same<T, float>::value) {
    using simd::load;
    using simd::v8sf;
    v8sf acc[2] = {};
    if constexpr (S == Step::kProduct) {
      for (; k + 16 <= n; k += 16) {
        const v8sf ek[2] = {load<v8sf>(e + k) * load<v8sf>(ew + k),
                            load<v8sf>(e + k + 8) * load<v8sf>(ew + k + 8)};
        store_state<2, kDot>(e, h, v, ek, acc, k);
      }
      if (k + 8 <= n) {
        const v8sf ek[1] = {load<v8sf>(e + k) * load<v8sf>(ew + k)};
        store_state<1, kDot>(e, h, v, ek, acc, k);
        k += 8;
      }
    } else {
      constexpr bool kUpdate = S == Step::kExact;
      for (; k + 64 <= n; k += 64) add_columns<8, kUpdate>(a, pend, np, w, xd, k);
      if (k + 32 <= n) add_columns<4, kUpdate>(a, pend, np, w, xd, k), k += 32;
      if (k + 16 <= n) add_columns<2, kUpdate>(a, pend, np, w, xd, k), k += 16;
      if (k + 8 <= n) add_columns<1, kUpdate>(a, pend, np, w, xd, k), k += 8;
      int64_t j = 0;
      for (; j + 16 <= k; j += 16) {
        const v8sf ej[2] = {simd::vexp(-load<v8sf>(a + j)), simd::vexp(-load<v8sf>(a + j + 8))};
        store_state<2, kDot>(e, h, v, ej, acc, j);
      }
      if (j < k) {
        const v8sf ej[1] = {simd::vexp(-load<v8sf>(a + j))};
        store_state<1, kDot>(e, h, v, ej, acc, j);
      }
    }
    if (kDot) total = simd::reduce_add(acc[0] + acc[1]);
  }
  for (; k < n; ++k) {  // double, and the float tail: the same formulas per element
    if constexpr (S == Step::kProduct) {
      e[k] *= ew[k];
      h[k] = T(1) / (T(1) + e[k]);
    } else {
      T ak = a[k];
      for (int p = 0; p < np; ++p) ak = ak + pend[p][k];
      if constexpr (S == Step::kExact) ak = ak + xd * w[k];
      a[k] = ak;
      if constexpr (std::is_same<T, float>::value) {
        e[k] = math::exp_poly(-ak);
        h[k] = 1.0f / (1.0f + e[k]);
      } else {
        h[k] = math::sigmoid<T>(ak);
      }
    }
    if (kDot && std::is_same<T, float>::value) total += v[k] * h[k];
  }
  if constexpr (S == Step::kProduct) {
    row.pending[row.npending++] = w;
  } else {
    row.npending = 0;
  }
  if constexpr (kDot && !std::is_same<T, float>::value) total = simd::dot(v, h, n);
  return total;
}

// step() with S chosen at run time; kKeep does nothing (and returns 0: with kDot, the
// caller takes the dot of an unchanged h itself).
template <bool kDot = false, typename T>
PIXELAR_HOST_DEVICE_INLINE
T step(Step s, Row<T>& row, T* a, T* e, T* h, const T* w, const T* ew, T xd, int64_t n,
       const T* v = nullptr) {
  switch (s) {
    case Step::kKeep: return T(0);
    case Step::kProduct: return step<Step::kProduct, kDot>(row, a, e, h, w, ew, xd, n, v);
    case Step::kExact: return step<Step::kExact, kDot>(row, a, e, h, w, ew, xd, n, v);
    default: return step<Step::kRestart, kDot>(row, a, e, h, w, ew, xd, n, v);
  }
}

}  // namespace nade
}  // namespace cpu
}  // namespace pixelar
