// CPU kernels of pixelar::nade_sample and pixelar::rnade_sample: the whole D-step sampling
// loop of NADE / RNADE in one call (semantics: the docstring of pixelar/ops/nade_sample.py).
//
// Images are split into tiles that advance through the dimensions in lockstep, so that V[d]
// and W[:, d] are read from memory once per tile; the threads take tiles from a shared
// counter. NADE's tiles hold up to kMaxTile images, fewer when that would leave a thread
// without a tile (tile_size); RNADE's hold kRnadeTile. Per image: a (Hd) and h = sigmoid(a)
// (Hd); dimension d costs one dot product per output, the draw, and, when x_d != 0,
// a += x_d W[:, d] and h = sigmoid(a) (NADE skips both for x_d = 0: h does not change; its
// float update: nade_hidden.h, which also takes the next dimension's dot product from the new
// h while it is in registers). exp(-W^T) and the columns' max |W| are kept from one call to
// the next while W's bytes do not change (nade::ColumnCache).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <optional>
#include <type_traits>
#include <vector>

#include "kernel_common.h"
#include "nade_hidden.h"
#include "pixelar/lstm_math.h"
#include "pixelar/checks.h"
#include "pixelar/sampling_math.h"
#include "pixelar/simd.h"

namespace pixelar {
namespace cpu {
namespace {

constexpr int64_t kMaxTile = 32;
constexpr int64_t kRnadeTile = 8;

// NADE's tile for n images: kMaxTile, or n / threads (rounded up) when smaller. For 64 images
// (H=500, 28x28) at 2 threads, with the fused step and dot, tiles of 32 took 0.85-0.91x the
// time of the unfused walk's tiles of 16, and tiles of 16 0.92-0.96x (medians of 15 rounds
// in each of 6 processes, alternating in-process, a slow hour: 4.9-7.3 ms per call): fewer
// passes over V, W^T and exp(-W^T). Unfused, 16 had beaten 8 and 32.
inline int64_t tile_size(int64_t n) {
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  return std::max<int64_t>(1, std::min(kMaxTile, (n + threads - 1) / threads));
}

template <typename T>
PIXELAR_HOST_DEVICE_INLINE void update_hidden(T* a, T* h, const T* w, T xd, int64_t Hd) {
  simd::hidden_update(a, h, w, xd, Hd);
}

// out[s] = sum_j v[j] * rows[s][j] for s < nb: one weight row's dot products with nb hidden
// states, in groups that share v's loads (simd::dot_rows), then one by one.
template <typename T>
PIXELAR_HOST_DEVICE_INLINE void row_dots(const T* v, const T* const* rows, int64_t nb,
                                         int64_t Hd, T* out) {
  constexpr int S = sizeof(T) == 4 ? 8 : 4;
  int64_t s = 0;
  for (; s + S <= nb; s += S) simd::dot_rows<S>(v, rows + s, Hd, out + s);
  for (; s < nb; ++s) out[s] = simd::dot(v, rows[s], Hd);
}

// out[o * nb + s] = sum_j v[o * Hd + j] * h[s * Hd + j] for o < O, s < nb (<= kMaxTile): the
// dot products of O weight rows with the hidden states of the tile's images.
template <typename T>
PIXELAR_HOST_DEVICE_INLINE void tile_dots(const T* v, const T* h, int64_t O, int64_t nb, int64_t Hd,
                                          T* out) {
  const T* rows[kMaxTile];
  for (int64_t s = 0; s < nb; ++s) rows[s] = h + s * Hd;
  for (int64_t o = 0; o < O; ++o) row_dots(v + o * Hd, rows, nb, Hd, out + o * nb);
}

// Images [b0, b1) (at most kMaxTile), in lockstep over d. Wt: (D, Hd) = W transposed; ew, wmax:
// nade::Columns of Wt; a, h, e: (b1 - b0) * Hd scratch. The hidden update of each image is
// nade_hidden.h's walk (float: e = exp(-a) updated by products for x_d = 1), fused with the
// dot product of the next dimension: an image whose h changes at d takes its logit of d + 1
// from the h in registers (step<S, kDot>); the others (kKeep) share V[d + 1]'s loads in
// row_dots. Returns the smallest dimension drawn from a non-finite logit
// (sampling::kNoBadDimension if none).
template <typename T>
PIXELAR_SIMD_CLONES int64_t nade_tile(const double* u, const int64_t* cond, const T* Wt,
                                   const T* ew, const float* wmax, const T* c, const T* V,
                                   const T* bias, int64_t* x, int64_t b0, int64_t b1, int64_t D,
                                   int64_t Hd, T* a, T* h, T* e) {
  const int64_t nb = b1 - b0;
  int64_t bad = sampling::kNoBadDimension;
  if (D == 0) return bad;
  nade::Row<T> rows[kMaxTile];
  T logits[kMaxTile];  // of dimension d, for the tile's images
  for (int64_t s = 0; s < nb; ++s) {
    std::copy(c, c + Hd, a + s * Hd);
    logits[s] = nade::step<nade::Step::kRestart, true>(rows[s], a + s * Hd, e + s * Hd,
                                                       h + s * Hd, static_cast<const T*>(nullptr),
                                                       static_cast<const T*>(nullptr), T(0), Hd, V);
  }
  for (int64_t d = 0; d < D; ++d) {
    int64_t values[kMaxTile];  // every draw of the tile first: their latencies overlap
    for (int64_t s = 0; s < nb; ++s) {
      const int64_t i = (b0 + s) * D + d;
      const T logit = logits[s] + bias[d];
      values[s] = sampling::draw_bernoulli(logit, u[i]);
      if (cond && cond[i] >= 0) {
        values[s] = cond[i];
      } else if (!sampling::logit_finite(logit) && bad == sampling::kNoBadDimension) {
        bad = d;
      }
      x[i] = values[s];
    }
    if (d + 1 == D) break;  // the state after the last dimension is never read
    const T* vn = V + (d + 1) * Hd;
    const T* wd = Wt + d * Hd;
    const T* ewd = ew ? ew + d * Hd : nullptr;
    const T* kept[kMaxTile];  // the h of the images that keep their state, and their slots
    int64_t kept_at[kMaxTile], nkept = 0;
    for (int64_t s = 0; s < nb; ++s) {
      const T xd = static_cast<T>(values[s]);
      const nade::Step kind = rows[s].next(xd, wmax[d]);
      if (kind == nade::Step::kKeep) {
        kept[nkept] = h + s * Hd;
        kept_at[nkept++] = s;
      } else {
        logits[s] = nade::step<true>(kind, rows[s], a + s * Hd, e + s * Hd, h + s * Hd, wd, ewd,
                                     xd, Hd, vn);
      }
    }
    T dots[kMaxTile];
    row_dots(vn, kept, nkept, Hd, dots);
    for (int64_t r = 0; r < nkept; ++r) logits[kept_at[r]] = dots[r];
  }
  return bad;
}

// As nade_tile, for RNADE: every one of the 3K outputs (logit_pi, mu, log_sigma) of a
// dimension must be finite. Returns the smallest dimension where one is not.
template <typename T>
PIXELAR_SIMD_CLONES int64_t rnade_tile(const double* u, const double* z, const T* Wt, const T* c,
                                    const T* V, const T* bias, T* x, int64_t b0, int64_t b1,
                                    int64_t D, int64_t Hd, int64_t K, double ls_min,
                                    double ls_max, T* a, T* h, T* out, T* dots) {
  const int64_t nb = b1 - b0;
  int64_t bad = sampling::kNoBadDimension;
  for (int64_t s = 0; s < nb; ++s) {
    for (int64_t j = 0; j < Hd; ++j) a[s * Hd + j] = c[j];
    for (int64_t j = 0; j < Hd; ++j) h[s * Hd + j] = math::sigmoid<T, math::SimdMath>(c[j]);
  }
  for (int64_t d = 0; d < D; ++d) {
    const T* vd = V + d * 3 * K * Hd;
    const T* wd = Wt + d * Hd;
    tile_dots(vd, h, 3 * K, nb, Hd, dots);
    for (int64_t s = 0; s < nb; ++s) {
      const int64_t i = (b0 + s) * D + d;
      for (int64_t o = 0; o < 3 * K; ++o) out[o] = dots[o * nb + s] + bias[d * 3 * K + o];
      if (!sampling::logits_finite(out, 3 * K, 1) && bad == sampling::kNoBadDimension) bad = d;
      const int64_t k = sampling::draw_categorical(out, K, 1, u[i]);
      double log_sigma = static_cast<double>(out[2 * K + k]);
      // clamp in the model's dtype, as the reference does
      const T ls = static_cast<T>(log_sigma);
      const T lo = static_cast<T>(ls_min), hi = static_cast<T>(ls_max);
      log_sigma = static_cast<double>(ls < lo ? lo : (ls > hi ? hi : ls));
      const double value = static_cast<double>(out[K + k]) + math::exp_(log_sigma) * z[i];
      const T xd = static_cast<T>(value);
      x[i] = xd;
      update_hidden(a + s * Hd, h + s * Hd, wd, xd, Hd);
    }
  }
  return bad;
}

// Checks W (Hd, D), c (Hd,), V (D, O, Hd), b (D, O) and u (n, D); returns Hd.
int64_t check_params(const char* op, const at::Tensor& u, const at::Tensor& W,
                     const at::Tensor& c, const at::Tensor& V, const at::Tensor& b, int64_t O) {
  TORCH_CHECK(u.dim() == 2, op, ": u must be (n, D), got ", shape_str(u));
  TORCH_CHECK(W.dim() == 2, op, ": W must be (Hd, D), got ", shape_str(W));
  const int64_t D = u.size(1), Hd = W.size(0);
  const at::ScalarType dtype = W.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble, op,
              ": W must be float32 or float64, got ", dtype);
  checks::check_tensor(op, "u", u, at::kDouble, u.sizes(), at::kCPU);
  checks::check_tensor(op, "W", W, dtype, {Hd, D}, at::kCPU);
  checks::check_tensor(op, "c", c, dtype, {Hd}, at::kCPU);
  checks::check_tensor(op, "V", V, dtype, {D, O, Hd}, at::kCPU);
  checks::check_tensor(op, "b", b, dtype, {D, O}, at::kCPU);
  return Hd;
}

at::Tensor nade_sample_cpu(const at::Tensor& u_, const std::optional<at::Tensor>& cond_,
                           const at::Tensor& W, const at::Tensor& c_, const at::Tensor& V_,
                           const at::Tensor& b_) {
  const char* op = "pixelar::nade_sample";
  const int64_t Hd = check_params(op, u_, W, c_, V_, b_, 1);
  const int64_t n = u_.size(0), D = u_.size(1);
  if (cond_.has_value()) {
    checks::check_tensor(op, "cond", *cond_, at::kLong, u_.sizes(), at::kCPU);
  }
  checks::check_uniforms(op, "u", u_);
  if (cond_.has_value()) checks::check_condition(op, "cond", *cond_, 2);
  const at::Tensor u = u_.contiguous(), c = c_.contiguous(), V = V_.contiguous(),
                   b = b_.contiguous(), Wt = transposed</*kTemporary=*/true>(W);
  const at::Tensor cond = cond_.has_value() ? cond_->contiguous() : at::Tensor();
  at::Tensor x = at::empty({n, D}, u.options().dtype(at::kLong));
  // the smallest dimension drawn from a non-finite logit: raised after the parallel region
  std::atomic<int64_t> bad{sampling::kNoBadDimension};
  // exp(-W^T) and the columns' max |W|, reused while W's bytes are unchanged (ColumnCache)
  const nade::Columns cols = nade::column_cache().get(Wt);
  AT_DISPATCH_FLOATING_TYPES(W.scalar_type(), "nade_sample_cpu", [&] {
    const int64_t tile = tile_size(n), tiles = (n + tile - 1) / tile;
    // one buffer per thread: a, h, e of a tile
    parallel_tasks(tiles, [&] { return std::vector<scalar_t>(3 * tile * Hd); },
                   [&](int64_t t, std::vector<scalar_t>& buf) {
      scalar_t *a = buf.data(), *h = a + tile * Hd, *e = h + tile * Hd;
      const int64_t d = nade_tile<scalar_t>(u.data_ptr<double>(),
                          cond.defined() ? cond.data_ptr<int64_t>() : nullptr,
                          Wt.data_ptr<scalar_t>(),
                          cols.ew.defined() ? cols.ew.data_ptr<scalar_t>() : nullptr,
                          cols.wmax.data_ptr<float>(), c.data_ptr<scalar_t>(),
                          V.data_ptr<scalar_t>(),
                          b.data_ptr<scalar_t>(), x.data_ptr<int64_t>(), t * tile,
                          std::min(n, (t + 1) * tile), D, Hd, a, h, e);
      sampling::record_nonfinite(bad, d);
    });
  });
  const int64_t first_bad = bad.load();
  checks::check_logits_finite(first_bad);
  return x;
}

at::Tensor rnade_sample_cpu(const at::Tensor& u_, const at::Tensor& z_, const at::Tensor& W,
                            const at::Tensor& c_, const at::Tensor& V_, const at::Tensor& b_,
                            double log_scale_min, double log_scale_max) {
  const char* op = "pixelar::rnade_sample";
  TORCH_CHECK(V_.dim() == 3 && V_.size(1) % 3 == 0 && V_.size(1) > 0, op,
              ": V must be (D, 3K, Hd) with K >= 1 components, got ", shape_str(V_));
  const int64_t O = V_.size(1), K = O / 3;
  const int64_t Hd = check_params(op, u_, W, c_, V_, b_, O);
  const int64_t n = u_.size(0), D = u_.size(1);
  checks::check_tensor(op, "z", z_, at::kDouble, u_.sizes(), at::kCPU);
  checks::check_uniforms(op, "u", u_);
  checks::check_finite(op, "z", z_);
  checks::check_clamp(op, log_scale_min, log_scale_max);
  const at::Tensor u = u_.contiguous(), z = z_.contiguous(), c = c_.contiguous(),
                   V = V_.contiguous(), b = b_.contiguous();
  const at::Tensor Wt = transposed</*kTemporary=*/true>(W);
  at::Tensor x = at::empty({n, D}, W.options());
  std::atomic<int64_t> bad{sampling::kNoBadDimension};  // as in nade_sample_cpu
  AT_DISPATCH_FLOATING_TYPES(W.scalar_type(), "rnade_sample_cpu", [&] {
    const int64_t tiles = (n + kRnadeTile - 1) / kRnadeTile;
    const int64_t th = kRnadeTile * Hd;
    // one buffer per thread: a and h of a tile, the outputs of an image, the tile's dots
    parallel_tasks(tiles, [&] { return std::vector<scalar_t>(2 * th + O + O * kRnadeTile); },
                   [&](int64_t t, std::vector<scalar_t>& buf) {
      scalar_t *a = buf.data(), *h = a + th, *out = h + th, *dots = out + O;
      const int64_t d = rnade_tile<scalar_t>(u.data_ptr<double>(), z.data_ptr<double>(),
                           Wt.data_ptr<scalar_t>(), c.data_ptr<scalar_t>(),
                           V.data_ptr<scalar_t>(), b.data_ptr<scalar_t>(),
                           x.data_ptr<scalar_t>(), t * kRnadeTile,
                           std::min(n, (t + 1) * kRnadeTile), D, Hd, K, log_scale_min,
                           log_scale_max, a, h, out, dots);
      sampling::record_nonfinite(bad, d);
    });
  });
  const int64_t first_bad = bad.load();
  checks::check_logits_finite(first_bad);
  return x;
}

}  // namespace

TORCH_LIBRARY_IMPL(pixelar, CPU, m) {
  m.impl("nade_sample", &nade_sample_cpu);
  m.impl("rnade_sample", &rnade_sample_cpu);
}

}  // namespace cpu
}  // namespace pixelar
