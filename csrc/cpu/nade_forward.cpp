// CPU kernels of pixelar::nade_forward and its backward (semantics: the docstring of
// pixelar/ops/nade_forward.py):
//   a_0 = c,  h_d = sigmoid(a_d),  out_d = V[d] @ h_d + b[d],  a_{d+1} = a_d + W[:, d] x_d.
//
// Hidden units never interact except through the sums out_d = sum_h V[d, :, h] h_d[h] and
// grad_x[b, d] = sum_h W[h, d] S_d[h]. So the work is tiled over (batch block, hidden
// chunk): a tile keeps its running a (kBatchBlock x kHiddenChunk) in L1 and walks d once,
// streaming W^T[d, chunk] and V[d, :, chunk]; each hidden chunk writes its partial sums of
// those two reductions, added up afterwards in a fixed order (results do not depend on the
// thread count). Every other gradient (W, c, V) is owned by one hidden chunk.
// Backward: the hidden gradient flows to earlier dimensions, S_d = sum_{d' > d} grad_a_d',
// so the walk runs d downwards; a_d is recomputed forwards from checkpoints kept every
// kSegment dimensions (bitwise the forward's values, no subtraction drift).
// Zero inputs: where x[b, d] == 0 and column d of W is finite, a_{d+1} = a_d exactly, so
// both walks reuse h_d = sigmoid(a_d) instead of recomputing it (binary images are mostly
// zeros: this skips most of the sigmoids, the bulk of the work). A non-finite column keeps
// the reference's 0 * inf = NaN.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>
#include <vector>

#include "kernel_common.h"
#include "pixelar/lstm_math.h"

namespace pixelar {
namespace cpu {
namespace {

constexpr const char* kOp = "pixelar::nade_forward";
constexpr const char* kOpBwd = "pixelar::nade_forward_backward";
constexpr int64_t kBatchBlock = 16;
constexpr int64_t kHiddenChunk = 128;
constexpr int64_t kSegment = 32;
using math::SimdMath;

struct Dims {
  int64_t B, D, Hd, O;
};

// Pointers and strides shared by the tile functions.
template <typename T>
struct Args {
  const T* x;             // (B, D)
  const T* wt;            // W^T: (D, Hd)
  const T* c;             // (Hd,)
  const T* v;             // (D, O, Hd)
  const uint8_t* finite;  // (D,): column d of W is finite
  Dims d;
  // a_{d+1} == a_d exactly for batch row b.
  bool unchanged(int64_t b, int64_t dd) const { return x[b * d.D + dd] == T(0) && finite[dd]; }
};

// Forward of one tile: batch rows [b0, b0 + nb), hidden units [h0, h0 + nh). Writes the
// chunk's partial outputs part[b][d][o] = sum_{h in chunk} V[d, o, h] sigmoid(a_d[b, h]).
// a, s: nb * nh scratch each (running a_d and h_d = sigmoid(a_d) per batch row).
template <typename T>
PIXELAR_SIMD_CLONES void forward_tile(Args<T> A, int64_t b0, int64_t nb, int64_t h0, int64_t nh,
                                      T* part, T* a, T* s) {
  const int64_t D = A.d.D, Hd = A.d.Hd, O = A.d.O;
  for (int64_t i = 0; i < nb; ++i) std::copy(A.c + h0, A.c + h0 + nh, a + i * nh);
  for (int64_t dd = 0; dd < D; ++dd) {
    const T* __restrict wd = A.wt + dd * Hd + h0;
    const T* __restrict vd = A.v + dd * O * Hd + h0;
    for (int64_t i = 0; i < nb; ++i) {
      T* __restrict ai = a + i * nh;
      T* __restrict si = s + i * nh;
      const int64_t b = b0 + i;
      T* out = part + (b * D + dd) * O;
      const bool fresh = dd == 0 || !A.unchanged(b, dd - 1);  // else h_d = h_{d-1}
      if (O == 1 && fresh) {
        T acc = 0;
#pragma omp simd reduction(+ : acc)
        for (int64_t k = 0; k < nh; ++k) {
          const T sk = math::sigmoid<T, SimdMath>(ai[k]);
          si[k] = sk;
          acc += vd[k] * sk;
        }
        out[0] = acc;
      } else {
        if (fresh) {
          for (int64_t k = 0; k < nh; ++k) si[k] = math::sigmoid<T, SimdMath>(ai[k]);
        }
        for (int64_t o = 0; o < O; ++o) {
          const T* __restrict vo = vd + o * Hd;
          T acc = 0;
#pragma omp simd reduction(+ : acc)
          for (int64_t k = 0; k < nh; ++k) acc += vo[k] * si[k];
          out[o] = acc;
        }
      }
      if (!A.unchanged(b, dd)) {
        const T xd = A.x[b * D + dd];
        for (int64_t k = 0; k < nh; ++k) ai[k] += xd * wd[k];
      }
    }
  }
}

// One step d of the backward walk for one batch row, O = 1, fused in one pass over the
// chunk: returns sum_k W^T[d, k] S_d[k] (the chunk's part of grad_x[b, d]); adds
// x_d S_d to grad_W^T[d] (kGradW), g0 h_d to grad_V[d]; S += grad_a_d. h_d: sigmoid(a_d)
// into sv (kFresh) or the h_{d+1} already in sv.
template <typename T, bool kFresh, bool kGradW>
PIXELAR_INLINE T step_o1(const T* __restrict ai, T* __restrict sv, T* __restrict Si,
                         const T* __restrict wd, T* __restrict gwd, const T* __restrict vd,
                         T* __restrict gvd, T g0, T xd, int64_t nh) {
  T acc = 0;
#pragma omp simd reduction(+ : acc)
  for (int64_t k = 0; k < nh; ++k) {
    const T s_old = Si[k];  // S_d excludes dimension d itself
    acc += wd[k] * s_old;
    if (kGradW) gwd[k] += xd * s_old;
    T sk;
    if (kFresh) {
      sk = math::sigmoid<T, SimdMath>(ai[k]);
      sv[k] = sk;
    } else {
      sk = sv[k];
    }
    gvd[k] += g0 * sk;
    Si[k] = s_old + g0 * vd[k] * sk * (T(1) - sk);
  }
  return acc;
}

// Backward of one tile (see forward_tile). g: grad_out (B, D, O). Accumulates into the
// chunk's columns of gwt (D, Hd) (grad of W^T), gv (D, O, Hd), gc (Hd), and writes the
// chunk's partial gx[b][d] = sum_{h in chunk} W[h, d] S_d[b, h].
// Scratch: ckpt (ceil(D / kSegment) * nb * nh), seg (kSegment * nb * nh), S and s
// (nb * nh each; s holds h_{d+1} of each batch row, reused when a_d = a_{d+1}), run
// (nb * nh), gh (nh).
template <typename T>
PIXELAR_SIMD_CLONES void backward_tile(Args<T> A, const T* g, bool grads_finite, int64_t b0,
                                       int64_t nb, int64_t h0, int64_t nh, T* gwt, T* gv,
                                       T* gc, T* gx_part, T* scratch) {
  const int64_t D = A.d.D, Hd = A.d.Hd, O = A.d.O, tile = nb * nh;
  const int64_t nseg = ceil_div(D, kSegment);
  T* ckpt = scratch;
  T* seg = ckpt + nseg * tile;
  T* S = seg + kSegment * tile;
  T* s = S + tile;
  T* run = s + tile;
  T* gh = run + tile;
  // Checkpoints: a at d = 0, kSegment, 2 kSegment, ...
  T* a = run;
  for (int64_t i = 0; i < nb; ++i) std::copy(A.c + h0, A.c + h0 + nh, a + i * nh);
  for (int64_t dd = 0; dd < D; ++dd) {
    if (dd % kSegment == 0) std::copy(a, a + tile, ckpt + (dd / kSegment) * tile);
    const T* __restrict wd = A.wt + dd * Hd + h0;
    for (int64_t i = 0; i < nb; ++i) {
      if (A.unchanged(b0 + i, dd)) continue;
      T* __restrict ai = a + i * nh;
      const T xd = A.x[(b0 + i) * D + dd];
      for (int64_t k = 0; k < nh; ++k) ai[k] += xd * wd[k];
    }
  }
  std::fill(S, S + tile, T(0));
  for (int64_t sg = nseg - 1; sg >= 0; --sg) {
    const int64_t d_begin = sg * kSegment, d_end = std::min(D, d_begin + kSegment);
    // seg[t] = a at d_begin + t, recomputed exactly as the forward did, for the (t, row)
    // where the walk below needs it: where h_d is not h_{d+1}.
    std::copy(ckpt + sg * tile, ckpt + (sg + 1) * tile, run);
    for (int64_t dd = d_begin; dd < d_end; ++dd) {
      const T* __restrict wd = A.wt + dd * Hd + h0;
      for (int64_t i = 0; i < nb; ++i) {
        T* __restrict ai = run + i * nh;
        if (dd == D - 1 || !A.unchanged(b0 + i, dd)) {
          std::copy(ai, ai + nh, seg + (dd - d_begin) * tile + i * nh);
        }
        if (dd + 1 < d_end && !A.unchanged(b0 + i, dd)) {
          const T xd = A.x[(b0 + i) * D + dd];
          for (int64_t k = 0; k < nh; ++k) ai[k] += xd * wd[k];
        }
      }
    }
    for (int64_t dd = d_end - 1; dd >= d_begin; --dd) {
      const T* __restrict wd = A.wt + dd * Hd + h0;
      const T* __restrict vd = A.v + dd * O * Hd + h0;
      T* __restrict gwd = gwt + dd * Hd + h0;
      T* __restrict gvd = gv + dd * O * Hd + h0;
      for (int64_t i = 0; i < nb; ++i) {
        const T* __restrict ai = seg + (dd - d_begin) * tile + i * nh;
        T* __restrict Si = S + i * nh;
        T* __restrict sv = s + i * nh;
        const bool fresh = dd == D - 1 || !A.unchanged(b0 + i, dd);  // else h_d = h_{d+1}
        const T* go = g + ((b0 + i) * D + dd) * O;
        const T xd = A.x[(b0 + i) * D + dd];
        // x_d = 0 adds 0 * S_d to grad_W: skipped when the gradients are all finite.
        const bool grad_w = !(xd == T(0) && grads_finite);
        T* out = gx_part + (b0 + i) * D + dd;
        if (O == 1) {
          const T g0 = go[0];
          if (fresh) {
            *out = grad_w ? step_o1<T, true, true>(ai, sv, Si, wd, gwd, vd, gvd, g0, xd, nh)
                          : step_o1<T, true, false>(ai, sv, Si, wd, gwd, vd, gvd, g0, xd, nh);
          } else {
            *out = grad_w ? step_o1<T, false, true>(ai, sv, Si, wd, gwd, vd, gvd, g0, xd, nh)
                          : step_o1<T, false, false>(ai, sv, Si, wd, gwd, vd, gvd, g0, xd, nh);
          }
          continue;
        }
        // S_d excludes dimension d itself: use it before adding grad_a_d.
        T acc = 0;
#pragma omp simd reduction(+ : acc)
        for (int64_t k = 0; k < nh; ++k) {
          acc += wd[k] * Si[k];
          gwd[k] += xd * Si[k];
        }
        *out = acc;
        if (fresh) {
          for (int64_t k = 0; k < nh; ++k) sv[k] = math::sigmoid<T, SimdMath>(ai[k]);
        }
        {
          T* __restrict ghv = gh;
          for (int64_t k = 0; k < nh; ++k) ghv[k] = T(0);
          for (int64_t o = 0; o < O; ++o) {
            const T go_o = go[o];
            const T* __restrict vo = vd + o * Hd;
            T* __restrict gvo = gvd + o * Hd;
            for (int64_t k = 0; k < nh; ++k) {
              ghv[k] += go_o * vo[k];
              gvo[k] += go_o * sv[k];
            }
          }
          for (int64_t k = 0; k < nh; ++k) Si[k] += ghv[k] * sv[k] * (T(1) - sv[k]);
        }
      }
    }
  }
  // grad_c = sum over the batch of S_{-1} = sum_d grad_a_d.
  for (int64_t i = 0; i < nb; ++i) {
    T* __restrict gcc = gc + h0;
    const T* __restrict Si = S + i * nh;
    for (int64_t k = 0; k < nh; ++k) gcc[k] += Si[k];
  }
}

Dims check_inputs(const char* op, const at::Tensor& x, const at::Tensor& W, const at::Tensor& c,
                  const at::Tensor& V, const at::Tensor& b) {
  check_input(op, "x", x, 2, "(B, D)");
  check_input(op, "W", W, 2, "(Hd, D)");
  check_input(op, "c", c, 1, "(Hd,)");
  check_input(op, "V", V, 3, "(D, O, Hd)");
  check_input(op, "b", b, 2, "(D, O)");
  check_same_dtype(op, "W", W, "x", x);
  check_same_dtype(op, "c", c, "x", x);
  check_same_dtype(op, "V", V, "x", x);
  check_same_dtype(op, "b", b, "x", x);
  const int64_t B = x.size(0), D = x.size(1), Hd = W.size(0), O = V.size(1);
  check_shape(op, "W", W, {Hd, D}, "(Hd, D)");
  check_shape(op, "c", c, {Hd}, "(Hd,)");
  check_shape(op, "V", V, {D, O, Hd}, "(D, O, Hd)");
  check_shape(op, "b", b, {D, O}, "(D, O)");
  return Dims{B, D, Hd, O};
}

// True when p[0..n) are all finite: x - x is 0 for finite x, NaN for inf and NaN.
template <typename T>
PIXELAR_SIMD_CLONES bool all_finite(const T* p, int64_t n) {
  T acc = 0;
#pragma omp simd reduction(+ : acc)
  for (int64_t k = 0; k < n; ++k) acc += p[k] - p[k];
  return acc == T(0);
}

// (D,) uint8: row d of W^T (D, Hd) contiguous, i.e. column d of W, has only finite values.
at::Tensor column_finite(const at::Tensor& wt) {
  at::Tensor out = at::empty({wt.size(0)}, wt.options().dtype(at::kByte));
  AT_DISPATCH_FLOATING_TYPES(wt.scalar_type(), "column_finite", [&] {
    const scalar_t* p = wt.data_ptr<scalar_t>();
    uint8_t* o = out.data_ptr<uint8_t>();
    const int64_t Hd = wt.size(1);
    for (int64_t d = 0; d < wt.size(0); ++d) o[d] = all_finite(p + d * Hd, Hd);
  });
  return out;
}

bool tensor_finite(const at::Tensor& t) {  // t contiguous
  bool ok = true;
  AT_DISPATCH_FLOATING_TYPES(t.scalar_type(), "tensor_finite", [&] {
    ok = all_finite(t.data_ptr<scalar_t>(), t.numel());
  });
  return ok;
}

struct Tiling {
  int64_t n_bblocks, n_chunks, chunk;
};

Tiling tiling(const Dims& d) {
  const int64_t chunk = std::max<int64_t>(1, std::min(d.Hd, kHiddenChunk));
  return Tiling{ceil_div(d.B, kBatchBlock), ceil_div(d.Hd, chunk), chunk};
}

at::Tensor nade_forward_cpu(const at::Tensor& x_in, const at::Tensor& W_in, const at::Tensor& c_in,
                            const at::Tensor& V_in, const at::Tensor& b_in) {
  const at::AutoDispatchBelowADInplaceOrView below_autograd;  // plain ATen calls inside
  const Dims d = check_inputs(kOp, x_in, W_in, c_in, V_in, b_in);
  const at::Tensor x = x_in.contiguous(), c = c_in.contiguous(), V = V_in.contiguous();
  const at::Tensor b = b_in.contiguous();
  if (d.B * d.D * d.O == 0) return at::empty({d.B, d.D, d.O}, x.options());
  if (d.Hd == 0) return b.unsqueeze(0).expand({d.B, d.D, d.O}).contiguous();
  const at::Tensor wt = W_in.t().contiguous();
  const at::Tensor finite = column_finite(wt);
  const Tiling t = tiling(d);
  at::Tensor part = at::empty({t.n_chunks, d.B, d.D, d.O}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "nade_forward_cpu", [&] {
    Args<scalar_t> A{x.data_ptr<scalar_t>(), wt.data_ptr<scalar_t>(), c.data_ptr<scalar_t>(),
                     V.data_ptr<scalar_t>(), finite.data_ptr<uint8_t>(), d};
    scalar_t* partp = part.data_ptr<scalar_t>();
    at::parallel_for(0, t.n_bblocks * t.n_chunks, 1, [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> scratch(2 * kBatchBlock * t.chunk);
      for (int64_t task = begin; task < end; ++task) {
        const int64_t bb = task / t.n_chunks, ch = task % t.n_chunks;
        const int64_t b0 = bb * kBatchBlock, nb = std::min(kBatchBlock, d.B - b0);
        const int64_t h0 = ch * t.chunk, nh = std::min(t.chunk, d.Hd - h0);
        forward_tile<scalar_t>(A, b0, nb, h0, nh, partp + ch * d.B * d.D * d.O,
                               scratch.data(), scratch.data() + kBatchBlock * t.chunk);
      }
    });
  });
  at::Tensor out = t.n_chunks == 1 ? part[0] : part.sum(0);
  return out.add_(b);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> nade_forward_backward_cpu(
    const at::Tensor& grad_out_in, const at::Tensor& x_in, const at::Tensor& W_in,
    const at::Tensor& c_in, const at::Tensor& V_in, const at::Tensor& b_in) {
  const at::AutoDispatchBelowADInplaceOrView below_autograd;  // plain ATen calls inside
  const Dims d = check_inputs(kOpBwd, x_in, W_in, c_in, V_in, b_in);
  check_input(kOpBwd, "grad_out", grad_out_in, 3, "(B, D, O)");
  check_same_dtype(kOpBwd, "grad_out", grad_out_in, "x", x_in);
  check_shape(kOpBwd, "grad_out", grad_out_in, {d.B, d.D, d.O}, "(B, D, O)");
  const at::Tensor g = grad_out_in.contiguous(), x = x_in.contiguous(), c = c_in.contiguous();
  const at::Tensor V = V_in.contiguous();
  const at::Tensor wt = W_in.t().contiguous();
  const at::Tensor finite = column_finite(wt);
  const bool grads_finite = tensor_finite(g) && tensor_finite(V);
  const Tiling t = tiling(d);
  // Batch groups: split the batch too when there are fewer hidden chunks than threads; each
  // group then accumulates its own copy of the weight gradients.
  const int64_t n_groups =
      std::max<int64_t>(1, std::min(t.n_bblocks, ceil_div(at::get_num_threads(), t.n_chunks)));
  const int64_t blocks_per_group = ceil_div(t.n_bblocks, n_groups);
  const auto opts = x.options();
  at::Tensor gwt = at::zeros({n_groups, d.D, d.Hd}, opts);
  at::Tensor gv = at::zeros({n_groups, d.D, d.O, d.Hd}, opts);
  at::Tensor gc = at::zeros({n_groups, d.Hd}, opts);
  at::Tensor gx_part = at::zeros({t.n_chunks, d.B, d.D}, opts);
  if (d.B * d.D * d.Hd > 0) {
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "nade_forward_backward_cpu", [&] {
      Args<scalar_t> A{x.data_ptr<scalar_t>(), wt.data_ptr<scalar_t>(),
                       c.data_ptr<scalar_t>(), V.data_ptr<scalar_t>(),
                       finite.data_ptr<uint8_t>(), d};
      const scalar_t* gp = g.data_ptr<scalar_t>();
      scalar_t* gwtp = gwt.data_ptr<scalar_t>();
      scalar_t* gvp = gv.data_ptr<scalar_t>();
      scalar_t* gcp = gc.data_ptr<scalar_t>();
      scalar_t* gxp = gx_part.data_ptr<scalar_t>();
      const int64_t tile = kBatchBlock * t.chunk;
      const int64_t scratch_size =
          (ceil_div(d.D, kSegment) + kSegment + 3) * tile + t.chunk;
      at::parallel_for(0, n_groups * t.n_chunks, 1, [&](int64_t begin, int64_t end) {
        std::vector<scalar_t> scratch(scratch_size);
        for (int64_t task = begin; task < end; ++task) {
          const int64_t grp = task / t.n_chunks, ch = task % t.n_chunks;
          const int64_t h0 = ch * t.chunk, nh = std::min(t.chunk, d.Hd - h0);
          const int64_t bb_end = std::min(t.n_bblocks, (grp + 1) * blocks_per_group);
          for (int64_t bb = grp * blocks_per_group; bb < bb_end; ++bb) {
            const int64_t b0 = bb * kBatchBlock, nb = std::min(kBatchBlock, d.B - b0);
            backward_tile<scalar_t>(A, gp, grads_finite, b0, nb, h0, nh, gwtp + grp * d.D * d.Hd,
                                    gvp + grp * d.D * d.O * d.Hd, gcp + grp * d.Hd,
                                    gxp + ch * d.B * d.D, scratch.data());
          }
        }
      });
    });
  }
  at::Tensor grad_x = gx_part.sum(0);
  at::Tensor grad_W = gwt.sum(0).t().contiguous();
  at::Tensor grad_c = gc.sum(0);
  at::Tensor grad_V = gv.sum(0);
  at::Tensor grad_b = g.sum(0);
  return {like_layout(grad_x, x_in), like_layout(grad_W, W_in), like_layout(grad_c, c_in),
          like_layout(grad_V, V_in), like_layout(grad_b, b_in)};
}

}  // namespace
}  // namespace cpu
}  // namespace pixelar

TORCH_LIBRARY_IMPL(pixelar, CPU, m) {
  m.impl("nade_forward", &pixelar::cpu::nade_forward_cpu);
  m.impl("nade_forward_backward", &pixelar::cpu::nade_forward_backward_cpu);
}
