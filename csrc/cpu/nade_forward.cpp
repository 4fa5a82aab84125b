// CPU kernels of pixelar::nade_forward and its backward (semantics: the docstring of
// pixelar/ops/nade_forward.py):
//   a_0 = c,  h_d = sigmoid(a_d),  out_d = V[d] @ h_d + b[d],  a_{d+1} = a_d + W[:, d] x_d.
//
// Hidden units never interact except through the sums out_d = sum_h V[d, :, h] h_d[h] and
// grad_x[b, d] = sum_h W[h, d] S_d[h]. So the work is tiled over (batch block, hidden
// chunk; Tiling): a tile keeps its rows' state (a, e = exp(-a), h: kBatchBlock x chunk)
// and walks d once, streaming W^T[d, chunk] and V[d, :, chunk]; each hidden chunk writes
// its partial sums of those two reductions, added up afterwards in a fixed order (results
// do not depend on the thread count). Every other gradient (W, c, V) is owned by one chunk.
//
// The hidden walk (nade_hidden.h): a step with x_d = 0 costs nothing, and a float step with
// x_d = 1 updates e = exp(-a) by a product instead of an exp per unit. Every kSegment
// dimensions each row restarts from an exact e = exp(-a), so the backward can replay the
// forward from checkpoints of a kept every kSegment dimensions: it recomputes exactly the
// forward's h (same steps, same formulas), without storing the (B, D, Hd) hidden states.
// Backward: the hidden gradient flows to earlier dimensions, S_d = sum_{d' > d} grad_a_d',
// so per segment (last first) it replays h forwards from the checkpoint, then walks d down.
// pixelar::nade_forward_checkpointed writes the forward's a at each segment start
// (pixelar/nade_checkpoints.h); given them, the backward skips its own walk to find them
// (bitwise the same values: the same additions in the same order).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <tuple>
#include <vector>

#include "kernel_common.h"
#include "nade_hidden.h"
#include "pixelar/checks.h"
#include "pixelar/nade_checkpoints.h"
#include "pixelar/simd.h"

namespace pixelar {
namespace cpu {
namespace {

constexpr const char* kOp = "pixelar::nade_forward";
constexpr const char* kOpCkpt = "pixelar::nade_forward_checkpointed";
constexpr const char* kOpBwd = "pixelar::nade_forward_backward";
constexpr int64_t kBatchBlock = 16;
// Hidden chunks (Tiling below): at most kMaxChunkForward units in the forward and
// kMaxChunkBackward in the backward, fewer where the tiles would not keep the threads busy,
// never below kMinChunk. Wider chunks cost less per row and step (the rule, the loop set-up)
// but hold more state: 500 hidden units at B = 64, 2 threads, min of 60 calls, alternating
// fresh processes: forward 2.26-2.32 ms with one chunk of 500 (2.39-2.64 with chunks of
// 256, 3.04-3.12 with 128); backward 3.77-4.22 ms with chunks of 256 (4.48-4.68 with one
// of 500, which splits the batch into two groups; 4.76-5.23 with 128).
constexpr int64_t kMaxChunkForward = 512;
constexpr int64_t kMaxChunkBackward = 256;
constexpr int64_t kMinChunk = 128;
constexpr int64_t kForwardMinTiles = 4;
constexpr int64_t kSegment = nade_checkpoints::kEvery;
static_assert(kSegment <= nade::kMaxProducts + 1, "a segment's product chain fits the rule");
using nade::Step;

struct Dims {
  int64_t B, D, Hd, O;
};

// Pointers shared by the tile functions.
template <typename T>
struct Args {
  const T* x;          // (B, D)
  const T* wt;         // W^T: (D, Hd)
  const T* ew;         // exp(-W^T): (D, Hd), float only
  const float* wmax;   // (D,): max_k |W[k, d]|, inf for a non-finite column
  const T* c;          // (Hd,)
  const T* v;          // (D, O, Hd)
  Dims d;
};

// The step that brings batch row b to dimension dd (applying column dd - 1): the rule's
// choice, except at segment starts, where every row restarts from an exact e.
template <typename T>
PIXELAR_HOST_DEVICE_INLINE
Step step_to(const Args<T>& A, nade::Row<T>& rule, int64_t b, int64_t dd) {
  if (dd == 0) return rule.restart();
  const T xp = A.x[b * A.d.D + dd - 1];
  const float wmax = A.wmax[dd - 1];
  if (dd % kSegment == 0) {
    const bool keep = xp == T(0) && wmax < INFINITY;
    rule.restart();
    return keep ? Step::kRestart : Step::kExact;
  }
  return rule.next(xp, wmax);
}

// Forward of one tile: batch rows [b0, b0 + nb), hidden units [h0, h0 + nh). Writes the
// chunk's partial outputs part[b][d][o] = sum_{h in chunk} V[d, o, h] h_d[b, h], and, when
// ckpt is not null, the tile's part of the checkpoints ckpt (ceil(D / kSegment), B, Hd).
// scratch: 3 * nb * nh (a, e, h of each row).
template <typename T>
PIXELAR_SIMD_CLONES void forward_tile(Args<T> A, int64_t b0, int64_t nb, int64_t h0, int64_t nh,
                                      T* part, T* ckpt, T* scratch) {
  const int64_t D = A.d.D, Hd = A.d.Hd, O = A.d.O, tile = nb * nh;
  T *a = scratch, *e = a + tile, *h = e + tile;
  nade::Row<T> rows[kBatchBlock];
  for (int64_t i = 0; i < nb; ++i) std::copy(A.c + h0, A.c + h0 + nh, a + i * nh);
  for (int64_t dd = 0; dd < D; ++dd) {
    const T* wp = dd > 0 ? A.wt + (dd - 1) * Hd + h0 : nullptr;  // column dd - 1
    const T* ewp = dd > 0 && A.ew ? A.ew + (dd - 1) * Hd + h0 : nullptr;
    const T* vd = A.v + dd * O * Hd + h0;
    for (int64_t i = 0; i < nb; ++i) {
      const int64_t b = b0 + i;
      const Step s = step_to(A, rows[i], b, dd);
      const T xp = dd > 0 ? A.x[b * D + dd - 1] : T(0);
      nade::step(s, rows[i], a + i * nh, e + i * nh, h + i * nh, wp, ewp, xp, nh);
    }
    // A segment start's step is exact (no pending columns): a is a_dd.
    if (ckpt && dd % kSegment == 0) {
      T* cd = ckpt + ((dd / kSegment) * A.d.B + b0) * Hd + h0;
      for (int64_t i = 0; i < nb; ++i) std::copy(a + i * nh, a + (i + 1) * nh, cd + i * Hd);
    }
    // The outputs, kRows rows at a time (V[d] loaded once for them).
    constexpr int kRows = 8;
    const T* hr[kRows];
    T sums[kRows];
    for (int64_t o = 0; o < O; ++o) {
      for (int64_t i0 = 0; i0 < nb; i0 += kRows) {
        const int nr = static_cast<int>(std::min<int64_t>(kRows, nb - i0));
        for (int r = 0; r < nr; ++r) hr[r] = h + (i0 + r) * nh;
        if (nr == kRows) {
          simd::dot_rows<kRows>(vd + o * Hd, hr, nh, sums);
        } else {
          for (int r = 0; r < nr; ++r) sums[r] = simd::dot(vd + o * Hd, hr[r], nh);
        }
        for (int r = 0; r < nr; ++r) part[((b0 + i0 + r) * D + dd) * O + o] = sums[r];
      }
    }
  }
}

// One step d of the backward walk for R batch rows at once, O = 1, in one pass over the
// chunk (W^T[d], V[d] and their gradients loaded once for the R rows): for each row r,
// out[r] = sum_k W^T[d, k] S_d[k] (the chunk's part of grad_x[b, d]; kGradX); adds x_d S_d to
// grad_W^T[d] (kGradW; else every x_d of the group is 0 and S finite), g0 h_d to
// grad_V[d]; S += grad_a_d = g0 V[d] h_d (1 - h_d). S_d excludes dimension d itself: it
// is read before the update.
template <int R, bool kGradW, bool kGradX, typename T>
PIXELAR_HOST_DEVICE_INLINE
void backward_rows_o1(const T* const* hd, T* const* S, const T* g0, const T* xd,
                      const T* __restrict wd, T* __restrict gwd,
                      const T* __restrict vd, T* __restrict gvd, int64_t n,
                      T* out) {
  using V = typename simd::Vec<T>::type;
  constexpr int L = simd::Vec<T>::lanes;
  V acc[R] = {};
  int64_t k = 0;
  for (; k + L <= n; k += L) {
    const V w = simd::load<V>(wd + k), v = simd::load<V>(vd + k);
    V gw = kGradW ? simd::load<V>(gwd + k) : V{};
    V gv = simd::load<V>(gvd + k);
    for (int r = 0; r < R; ++r) {
      const V s_old = simd::load<V>(S[r] + k), h = simd::load<V>(hd[r] + k);
      if (kGradX) acc[r] += w * s_old;
      if (kGradW) gw += xd[r] * s_old;
      gv += g0[r] * h;
      simd::store(S[r] + k, s_old + g0[r] * v * h * (T(1) - h));
    }
    if (kGradW) simd::store(gwd + k, gw);
    simd::store(gvd + k, gv);
  }
  if constexpr (kGradX) {
    if constexpr (R == 1) {
      out[0] = simd::reduce_add(acc[0]);
    } else {
      simd::reduce_add_rows<R>(acc, out);
    }
  }
  for (; k < n; ++k) {
    for (int r = 0; r < R; ++r) {
      const T s_old = S[r][k], h = hd[r][k];
      if (kGradX) out[r] += wd[k] * s_old;
      if (kGradW) gwd[k] += xd[r] * s_old;
      gvd[k] += g0[r] * h;
      S[r][k] = s_old + g0[r] * vd[k] * h * (T(1) - h);
    }
  }
}

// backward_rows_o1 for the rows i0 .. i0 + R - 1 of a tile.
template <int R, bool kGradX, typename T>
PIXELAR_HOST_DEVICE_INLINE
void backward_group_o1(const T* const* hd, T* const* S, const T* g0, const T* xd,
                       bool grads_finite, const T* wd, T* gwd, const T* vd,
                       T* gvd, int64_t n, T* out) {
  bool grad_w = !grads_finite;  // x_d = 0 adds 0 * S_d to grad_W: skipped when S is finite
  for (int r = 0; r < R; ++r) grad_w = grad_w || xd[r] != T(0);
  if (grad_w) {
    backward_rows_o1<R, true, kGradX>(hd, S, g0, xd, wd, gwd, vd, gvd, n, out);
  } else {
    backward_rows_o1<R, false, kGradX>(hd, S, g0, xd, wd, gwd, vd, gvd, n, out);
  }
}

// backward_group_o1 with kGradX chosen at run time.
template <int R, typename T>
PIXELAR_HOST_DEVICE_INLINE
void backward_group_o1(bool grad_x, const T* const* hd, T* const* S, const T* g0,
                       const T* xd, bool grads_finite, const T* wd, T* gwd, const T* vd,
                       T* gvd, int64_t n, T* out) {
  if (grad_x) {
    backward_group_o1<R, true>(hd, S, g0, xd, grads_finite, wd, gwd, vd, gvd, n, out);
  } else {
    backward_group_o1<R, false>(hd, S, g0, xd, grads_finite, wd, gwd, vd, gvd, n, out);
  }
}

// The same for any O: gh = sum_o g_o V[d, o], grad_V[d, o] += g_o h_d, S += gh h_d (1 - h_d).
// V[d, o] is at vd + o * Hd, grad_V[d, o] at gvd + o * gstride. Returns the chunk's part of
// grad_x[b, d] (0 without grad_x).
template <typename T>
PIXELAR_HOST_DEVICE_INLINE
T backward_step(const T* __restrict hd, T* __restrict S, const T* __restrict wd,
                T* __restrict gwd, const T* __restrict vd, T* __restrict gvd,
                const T* go, int64_t O, int64_t Hd, int64_t gstride, T xd,
                T* __restrict gh, int64_t n, bool grad_x) {
  const T total = grad_x ? simd::dot(wd, S, n) : T(0);
  for (int64_t k = 0; k < n; ++k) gwd[k] += xd * S[k];
  std::fill(gh, gh + n, T(0));
  for (int64_t o = 0; o < O; ++o) {
    const T go_o = go[o];
    const T* __restrict vo = vd + o * Hd;
    T* __restrict gvo = gvd + o * gstride;
    for (int64_t k = 0; k < n; ++k) {
      gh[k] += go_o * vo[k];
      gvo[k] += go_o * hd[k];
    }
  }
  for (int64_t k = 0; k < n; ++k) S[k] += gh[k] * hd[k] * (T(1) - hd[k]);
  return total;
}

// Backward of one tile (see forward_tile). g: grad_out (B, D, O). Accumulates into the
// chunk's accumulators (Accumulators, below): gwt, gv and gc point at the chunk's first
// column of grad W^T (D rows), grad V (D * O rows) and grad c (one row), rows gstride
// apart. Writes the chunk's partial gx[b][d] = sum_{h in chunk} W[h, d] S_d[b, h] unless
// gx_part is null (no grad_x: the sums are skipped). fwd_ckpt: the forward's checkpoints
// (ceil(D / kSegment), B, Hd), or null: then the tile walks a to find them.
// Scratch (backward_scratch): ckpt (ceil(D / kSegment) tiles: a at each segment start),
// hseg (kSegment tiles: the h the forward computed at each step of a segment, where it
// computed one), S, a, e (a tile each), gh (nh).
template <typename T>
PIXELAR_SIMD_CLONES void backward_tile(Args<T> A, const T* g, const T* fwd_ckpt,
                                       bool grads_finite, int64_t b0, int64_t nb, int64_t h0,
                                       int64_t nh, T* gwt, T* gv, T* gc, int64_t gstride,
                                       T* gx_part, T* scratch) {
  const int64_t D = A.d.D, Hd = A.d.Hd, O = A.d.O, tile = nb * nh;
  const int64_t nseg = ceil_div(D, kSegment);
  const bool grad_x = gx_part != nullptr;
  T* ckpt = scratch;
  T* hseg = ckpt + nseg * tile;
  T* S = hseg + kSegment * tile;
  T* a = S + tile;
  T* e = a + tile;
  T* gh = e + tile;
  // Checkpoints: a at d = 0, kSegment, 2 kSegment, ... (the forward's a: same updates).
  if (!fwd_ckpt) {
    for (int64_t i = 0; i < nb; ++i) std::copy(A.c + h0, A.c + h0 + nh, a + i * nh);
    for (int64_t dd = 0; dd < D; ++dd) {
      if (dd % kSegment == 0) std::copy(a, a + tile, ckpt + (dd / kSegment) * tile);
      if (dd + 1 == D) break;
      const T* __restrict wd = A.wt + dd * Hd + h0;
      for (int64_t i = 0; i < nb; ++i) {
        const T xd = A.x[(b0 + i) * D + dd];
        if (xd == T(0) && A.wmax[dd] < INFINITY) continue;
        T* __restrict ai = a + i * nh;
        for (int64_t k = 0; k < nh; ++k) ai[k] += xd * wd[k];
      }
    }
  }
  std::fill(S, S + tile, T(0));
  uint8_t src[kSegment][kBatchBlock];  // src[t][i]: the hseg step holding h at step t of row i
  for (int64_t sg = nseg - 1; sg >= 0; --sg) {
    const int64_t d_begin = sg * kSegment, d_end = std::min(D, d_begin + kSegment);
    // Replay the forward over the segment from its checkpoint (the rules restart there).
    if (fwd_ckpt) {
      const T* cs = fwd_ckpt + (sg * A.d.B + b0) * Hd + h0;
      for (int64_t i = 0; i < nb; ++i) std::copy(cs + i * Hd, cs + i * Hd + nh, a + i * nh);
    } else {
      std::copy(ckpt + sg * tile, ckpt + (sg + 1) * tile, a);
    }
    nade::Row<T> rows[kBatchBlock];
    for (int64_t dd = d_begin; dd < d_end; ++dd) {
      const int64_t t = dd - d_begin;
      const T* wp = dd > 0 ? A.wt + (dd - 1) * Hd + h0 : nullptr;
      const T* ewp = dd > 0 && A.ew ? A.ew + (dd - 1) * Hd + h0 : nullptr;
      for (int64_t i = 0; i < nb; ++i) {
        const int64_t b = b0 + i;
        // At the segment start the checkpoint already holds a_d: restart, no update.
        const Step s = t == 0 ? rows[i].restart() : step_to(A, rows[i], b, dd);
        if (s == Step::kKeep) {
          src[t][i] = src[t - 1][i];
          continue;
        }
        const T xp = dd > 0 ? A.x[b * D + dd - 1] : T(0);
        nade::step(s, rows[i], a + i * nh, e + i * nh, hseg + t * tile + i * nh, wp, ewp, xp,
                   nh);
        src[t][i] = static_cast<uint8_t>(t);
      }
    }
    for (int64_t dd = d_end - 1; dd >= d_begin; --dd) {
      const int64_t t = dd - d_begin;
      const T* __restrict wd = A.wt + dd * Hd + h0;
      const T* __restrict vd = A.v + dd * O * Hd + h0;
      T* __restrict gwd = gwt + dd * gstride;
      T* __restrict gvd = gv + dd * O * gstride;
      if (O == 1) {
        constexpr int R = 4;
        const T* hd[R];
        T* Sr[R];
        T g0[R], xd[R], out[R];
        for (int64_t i0 = 0; i0 < nb; i0 += R) {
          const int nr = static_cast<int>(std::min<int64_t>(R, nb - i0));
          for (int r = 0; r < nr; ++r) {
            const int64_t i = i0 + r, b = b0 + i;
            hd[r] = hseg + src[t][i] * tile + i * nh;
            Sr[r] = S + i * nh;
            g0[r] = g[b * D + dd];
            xd[r] = A.x[b * D + dd];
          }
          if (nr == R) {
            backward_group_o1<R>(grad_x, hd, Sr, g0, xd, grads_finite, wd, gwd, vd, gvd, nh,
                                 out);
          } else {
            for (int r = 0; r < nr; ++r)
              backward_group_o1<1>(grad_x, hd + r, Sr + r, g0 + r, xd + r, grads_finite, wd,
                                   gwd, vd, gvd, nh, out + r);
          }
          if (grad_x)
            for (int r = 0; r < nr; ++r) gx_part[(b0 + i0 + r) * D + dd] = out[r];
        }
        continue;
      }
      for (int64_t i = 0; i < nb; ++i) {
        const int64_t b = b0 + i;
        const T* hd = hseg + src[t][i] * tile + i * nh;
        const T gxd = backward_step(hd, S + i * nh, wd, gwd, vd, gvd, g + (b * D + dd) * O, O,
                                    Hd, gstride, A.x[b * D + dd], gh, nh, grad_x);
        if (grad_x) gx_part[b * D + dd] = gxd;
      }
    }
  }
  // grad_c = sum over the batch of S_{-1} = sum_d grad_a_d.
  for (int64_t i = 0; i < nb; ++i) {
    const T* __restrict Si = S + i * nh;
    for (int64_t k = 0; k < nh; ++k) gc[k] += Si[k];
  }
}

// Zeroes the first nh elements of rows rows of m, stride apart.
template <typename T>
void zero_rows(T* m, int64_t rows, int64_t stride, int64_t nh) {
  for (int64_t r = 0; r < rows; ++r) std::fill(m + r * stride, m + r * stride + nh, T(0));
}

// parts (n, ...) added up over the first dimension (one part: itself, no copy).
inline at::Tensor sum_parts(const at::Tensor& parts) {
  return parts.size(0) == 1 ? parts[0] : parts.sum(0);
}

// Where the backward accumulates the weight gradients: per batch group, grad W^T (D rows),
// grad V (D * O rows) and grad c (one row) of Hd columns each.
//
// With one hidden chunk (one thread, or Hd <= kMaxChunkBackward) they are the gradients'
// own layout, (groups, rows, Hd), and the groups are added up afterwards. With several
// chunks, each chunk accumulates into a block of its own, (groups, chunks, rows, pitch)
// (pitch: the chunk rounded up to 128 bytes), and total() packs the blocks into
// (rows, Hd), adding up the groups, in parallel over rows. With the chunks side by side in
// every row instead (W^T's layout, as before 2026-12-04), the two threads wrote next to
// each other's columns in all D rows at about the same d; when the machine's host placed
// its two vCPUs far apart (a core-to-core round trip of 300-520 ns instead of 50-250 ns;
// benchmarks/core_latency.py) the lines and their neighbours that the prefetchers pull in
// went back and forth between the cores, and the 2-thread backward of NADE H = 500 at
// B = 64 took 9.5-10.5 ms against 3.8-4.4 ms (and 8 ms on one thread). In blocks it takes
// 4.9 ms there and 3.8 ms otherwise, the gather included (README, "Performance stability:
// slow NADE processes, explained"). Padding the rows' chunks to separate lines was not
// enough (13.4 ms). The gather writes by rows, the split the fused Adam then reads them in.
struct Accumulators {
  int64_t groups, Hd, chunk, n_chunks;
  int64_t pitch;  // the accumulators' row stride: Hd, or the chunk rounded up to 128 bytes

  Accumulators(int64_t groups, int64_t Hd, int64_t chunk, int64_t n_chunks, int64_t elem_size)
      : groups(groups), Hd(Hd), chunk(chunk), n_chunks(n_chunks) {
    const int64_t line_pair = 128 / elem_size;
    pitch = blocks() ? ceil_div(chunk, line_pair) * line_pair : Hd;
  }
  bool blocks() const { return n_chunks > 1; }
  // The accumulators of `rows` rows: (groups, chunks * rows, pitch) or (groups, rows, Hd).
  std::vector<int64_t> shape(int64_t rows) const {
    return {groups, blocks() ? n_chunks * rows : rows, pitch};
  }
  // Chunk ch's first element within a group's accumulators of `rows` rows.
  int64_t offset(int64_t ch, int64_t rows) const {
    return blocks() ? ch * rows * pitch : ch * chunk;
  }

  // The gradient (rows, Hd): the groups added up, and the chunks' blocks packed.
  at::Tensor total(const at::Tensor& acc, int64_t rows) const {
    if (!blocks()) return sum_parts(acc);
    at::Tensor out = at::empty({rows, Hd}, acc.options());
    AT_DISPATCH_FLOATING_TYPES(acc.scalar_type(), "nade_backward_gather", [&] {
      const scalar_t* src = acc.data_ptr<scalar_t>();
      scalar_t* dst = out.data_ptr<scalar_t>();
      const int64_t group_size = n_chunks * rows * pitch;
      at::parallel_for(0, rows, 16, [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
          for (int64_t ch = 0; ch < n_chunks; ++ch) {
            const int64_t h0 = ch * chunk, nh = std::min(chunk, Hd - h0);
            const scalar_t* in = src + offset(ch, rows) + r * pitch;
            scalar_t* __restrict o = dst + r * Hd + h0;
            std::copy(in, in + nh, o);
            for (int64_t g = 1; g < groups; ++g) {
              const scalar_t* __restrict ig = in + g * group_size;
              for (int64_t k = 0; k < nh; ++k) o[k] += ig[k];
            }
          }
        }
      });
    });
    return out;
  }
};

int64_t backward_scratch(int64_t D, int64_t chunk) {
  return (ceil_div(D, kSegment) + kSegment + 3) * kBatchBlock * chunk + chunk;
}

Dims check_inputs(const char* op, const at::Tensor& x, const at::Tensor& W, const at::Tensor& c,
                  const at::Tensor& V, const at::Tensor& b) {
  checks::check_input(op, "x", x, 2, "(B, D)", checks::kCpu);
  checks::check_input(op, "W", W, 2, "(Hd, D)", checks::kCpu);
  checks::check_input(op, "c", c, 1, "(Hd,)", checks::kCpu);
  checks::check_input(op, "V", V, 3, "(D, O, Hd)", checks::kCpu);
  checks::check_input(op, "b", b, 2, "(D, O)", checks::kCpu);
  checks::check_like(op, "W", W, "x", x);
  checks::check_like(op, "c", c, "x", x);
  checks::check_like(op, "V", V, "x", x);
  checks::check_like(op, "b", b, "x", x);
  const int64_t B = x.size(0), D = x.size(1), Hd = W.size(0), O = V.size(1);
  checks::check_shape(op, "W", W, {Hd, D}, "(Hd, D)");
  checks::check_shape(op, "c", c, {Hd}, "(Hd,)");
  checks::check_shape(op, "V", V, {D, O, Hd}, "(D, O, Hd)");
  checks::check_shape(op, "b", b, {D, O}, "(D, O)");
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

// Batch blocks of kBatchBlock rows and n hidden chunks of equal width, a multiple of 8:
// n = ceil(Hd / max_chunk), raised towards min_tasks tiles while chunks stay >= kMinChunk.
// Every chunk but the last is a whole number of 8-unit vectors, so each hidden unit takes
// the same code path (vector, or the scalar tail of the last chunk) under any such tiling:
// the backward's replay gives bitwise the forward's h although their chunks differ.
Tiling tiling(const Dims& d, int64_t max_chunk, int64_t min_tasks) {
  const int64_t n_bblocks = ceil_div(d.B, kBatchBlock);
  const int64_t most = std::max<int64_t>(1, ceil_div(d.Hd, kMinChunk));
  const int64_t wanted = ceil_div(min_tasks, std::max<int64_t>(1, n_bblocks));
  const int64_t n = std::max(ceil_div(d.Hd, max_chunk), std::min(most, wanted));
  const int64_t chunk = std::max<int64_t>(1, std::min(d.Hd, 8 * ceil_div(ceil_div(d.Hd, n), 8)));
  return Tiling{n_bblocks, ceil_div(d.Hd, chunk), chunk};
}

template <typename T>
Args<T> args(const at::Tensor& x, const at::Tensor& wt, const nade::Columns& cols,
             const at::Tensor& c, const at::Tensor& V, const Dims& d) {
  return Args<T>{x.data_ptr<T>(), wt.data_ptr<T>(),
                 cols.ew.defined() ? cols.ew.data_ptr<T>() : nullptr, cols.wmax.data_ptr<float>(),
                 c.data_ptr<T>(), V.data_ptr<T>(), d};
}

// The forward; with_ckpt: also the checkpoints (ceil(D / kSegment), B, Hd), else an
// undefined second tensor.
std::tuple<at::Tensor, at::Tensor> forward(const char* op, const at::Tensor& x_in,
                                           const at::Tensor& W_in, const at::Tensor& c_in,
                                           const at::Tensor& V_in, const at::Tensor& b_in,
                                           bool with_ckpt) {
  const at::AutoDispatchBelowADInplaceOrView below_autograd;  // plain ATen calls inside
  const Dims d = check_inputs(op, x_in, W_in, c_in, V_in, b_in);
  const at::Tensor x = x_in.contiguous(), c = c_in.contiguous(), V = V_in.contiguous();
  const at::Tensor b = b_in.contiguous();
  at::Tensor ckpt = with_ckpt
      ? at::empty({nade_checkpoints::count(d.D), d.B, d.Hd}, x.options()) : at::Tensor();
  // No work: no outputs, and no checkpoints or empty ones (O = 0 with checkpoints walks).
  if (d.B * d.D == 0 || d.Hd == 0 || (d.O == 0 && !with_ckpt)) {
    const bool bias_only = d.Hd == 0 && d.B * d.D * d.O > 0;  // no hidden units: out = b
    at::Tensor out = bias_only ? b.unsqueeze(0).expand({d.B, d.D, d.O}).contiguous()
                               : at::empty({d.B, d.D, d.O}, x.options());
    return {out, ckpt};
  }
  const at::Tensor wt = transposed</*kTemporary=*/true>(W_in);
  // exp(-W^T) and the columns' max |W|: kept for the backward (nade::ColumnCache)
  const nade::Columns cols = nade::column_cache().get(wt);
  // at least kForwardMinTiles tiles (parallel_tasks); not the thread count: the
  // chunks' partial sums, and so the outputs' bits, must not depend on it
  const Tiling t = tiling(d, kMaxChunkForward, kForwardMinTiles);
  at::Tensor part = at::empty({t.n_chunks, d.B, d.D, d.O}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "nade_forward_cpu", [&] {
    const Args<scalar_t> A = args<scalar_t>(x, wt, cols, c, V, d);
    scalar_t* partp = part.data_ptr<scalar_t>();
    parallel_tasks(
        t.n_bblocks * t.n_chunks,
        [&] { return std::vector<scalar_t>(3 * kBatchBlock * t.chunk); },
        [&](int64_t task, std::vector<scalar_t>& scratch) {
          const int64_t bb = task / t.n_chunks, ch = task % t.n_chunks;
          const int64_t b0 = bb * kBatchBlock, nb = std::min(kBatchBlock, d.B - b0);
          const int64_t h0 = ch * t.chunk, nh = std::min(t.chunk, d.Hd - h0);
          forward_tile<scalar_t>(A, b0, nb, h0, nh, partp + ch * d.B * d.D * d.O,
                                 ckpt.defined() ? ckpt.data_ptr<scalar_t>() : nullptr,
                                 scratch.data());
        });
  });
  at::Tensor out = t.n_chunks == 1 ? part[0] : part.sum(0);
  return {out.add_(b), ckpt};
}

at::Tensor nade_forward_cpu(const at::Tensor& x, const at::Tensor& W, const at::Tensor& c,
                            const at::Tensor& V, const at::Tensor& b) {
  return std::get<0>(forward(kOp, x, W, c, V, b, /*with_ckpt=*/false));
}

std::tuple<at::Tensor, at::Tensor> nade_forward_checkpointed_cpu(
    const at::Tensor& x, const at::Tensor& W, const at::Tensor& c, const at::Tensor& V,
    const at::Tensor& b) {
  return forward(kOpCkpt, x, W, c, V, b, /*with_ckpt=*/true);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> nade_forward_backward_cpu(
    const at::Tensor& grad_out_in, const at::Tensor& x_in, const at::Tensor& W_in,
    const at::Tensor& c_in, const at::Tensor& V_in, const at::Tensor& b_in,
    const c10::optional<at::Tensor>& ckpt_in, bool grad_x_wanted) {
  const at::AutoDispatchBelowADInplaceOrView below_autograd;  // plain ATen calls inside
  const Dims d = check_inputs(kOpBwd, x_in, W_in, c_in, V_in, b_in);
  checks::check_input(kOpBwd, "grad_out", grad_out_in, 3, "(B, D, O)", checks::kCpu);
  checks::check_like(kOpBwd, "grad_out", grad_out_in, "x", x_in);
  checks::check_shape(kOpBwd, "grad_out", grad_out_in, {d.B, d.D, d.O}, "(B, D, O)");
  at::Tensor ckpt;
  if (ckpt_in.has_value()) {
    nade_checkpoints::check(kOpBwd, *ckpt_in, x_in, d.Hd);
    ckpt = ckpt_in->contiguous();
  }
  const at::Tensor g = grad_out_in.contiguous(), x = x_in.contiguous(), c = c_in.contiguous();
  const at::Tensor V = V_in.contiguous();
  const at::Tensor wt = transposed</*kTemporary=*/true>(W_in);
  // the forward's, when W has not changed since (nade::ColumnCache)
  const nade::Columns cols = nade::column_cache().get(wt);
  const bool grads_finite = tensor_finite(g) && tensor_finite(V);
  // a hidden chunk per thread or more (fewer: the batch is split into groups, below)
  const Tiling t = tiling(d, kMaxChunkBackward, at::get_num_threads());
  // Batch groups: split the batch too when there are fewer hidden chunks than threads; each
  // group then accumulates its own copy of the weight gradients.
  const int64_t n_groups = t.n_chunks == 0 ? 1  // Hd = 0: no tiles, all-zero gradients
      : std::max<int64_t>(1, std::min(t.n_bblocks, ceil_div(at::get_num_threads(), t.n_chunks)));
  const int64_t blocks_per_group = ceil_div(t.n_bblocks, n_groups);
  const auto opts = x.options();
  const Accumulators acc(n_groups, d.Hd, t.chunk, t.n_chunks, x.element_size());
  // The weight gradients are zeroed by the tasks that accumulate them (in parallel, in the
  // memory order they use), unless there is no work at all.
  const bool work = d.B * d.D * d.Hd > 0;
  const auto alloc = [&](at::IntArrayRef shape) {
    return work ? at::empty(shape, opts) : at::zeros(shape, opts);
  };
  at::Tensor gwt = alloc(acc.shape(d.D));
  at::Tensor gv = alloc(acc.shape(d.D * d.O));
  at::Tensor gc = alloc(acc.shape(1));
  // Every (chunk, b, d) is written by exactly one tile walk: no zero fill.
  at::Tensor gx_part = grad_x_wanted ? at::empty({t.n_chunks, d.B, d.D}, opts) : at::Tensor();
  if (work) {
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "nade_forward_backward_cpu", [&] {
      const Args<scalar_t> A = args<scalar_t>(x, wt, cols, c, V, d);
      const scalar_t* gp = g.data_ptr<scalar_t>();
      const scalar_t* ckptp = ckpt.defined() ? ckpt.data_ptr<scalar_t>() : nullptr;
      scalar_t* gxp = grad_x_wanted ? gx_part.data_ptr<scalar_t>() : nullptr;
      const int64_t scratch_size = backward_scratch(d.D, t.chunk);
      parallel_tasks(
          n_groups * t.n_chunks,
          [&] { return std::unique_ptr<scalar_t[]>(new scalar_t[scratch_size]); },  // no fill
          [&](int64_t task, std::unique_ptr<scalar_t[]>& scratch) {
            const int64_t grp = task / t.n_chunks, ch = task % t.n_chunks;
            const int64_t h0 = ch * t.chunk, nh = std::min(t.chunk, d.Hd - h0);
            scalar_t* gwtp = gwt[grp].data_ptr<scalar_t>() + acc.offset(ch, d.D);
            scalar_t* gvp = gv[grp].data_ptr<scalar_t>() + acc.offset(ch, d.D * d.O);
            scalar_t* gcp = gc[grp].data_ptr<scalar_t>() + acc.offset(ch, 1);
            zero_rows(gwtp, d.D, acc.pitch, nh);
            zero_rows(gvp, d.D * d.O, acc.pitch, nh);
            zero_rows(gcp, 1, acc.pitch, nh);
            const int64_t bb_end = std::min(t.n_bblocks, (grp + 1) * blocks_per_group);
            for (int64_t bb = grp * blocks_per_group; bb < bb_end; ++bb) {
              const int64_t b0 = bb * kBatchBlock, nb = std::min(kBatchBlock, d.B - b0);
              backward_tile<scalar_t>(A, gp, ckptp, grads_finite, b0, nb, h0, nh, gwtp, gvp,
                                      gcp, acc.pitch,
                                      gxp ? gxp + ch * d.B * d.D : nullptr, scratch.get());
            }
          });
    });
  }
  const at::Tensor gwt_total = acc.total(gwt, d.D);
  // grad_x: the chunks' partial sums, added up; without grad_x: an empty (0,) tensor.
  at::Tensor grad_x = grad_x_wanted ? like_layout(sum_parts(gx_part), x_in) : at::empty({0}, opts);
  // grad W in W's layout: for a W stored transposed (W.t() contiguous, as the NADE models
  // keep it) that is grad W^T itself, viewed transposed.
  at::Tensor grad_W = W_in.t().is_contiguous() && !W_in.is_contiguous()
      ? gwt_total.t() : like_layout(transposed(gwt_total), W_in);
  at::Tensor grad_c = acc.total(gc, 1).view({d.Hd});
  at::Tensor grad_V = acc.total(gv, d.D * d.O).view({d.D, d.O, d.Hd});
  at::Tensor grad_b = g.sum(0);
  return {grad_x, grad_W, like_layout(grad_c, c_in), like_layout(grad_V, V_in),
          like_layout(grad_b, b_in)};
}

}  // namespace
}  // namespace cpu
}  // namespace pixelar

TORCH_LIBRARY_IMPL(pixelar, CPU, m) {
  m.impl("nade_forward", &pixelar::cpu::nade_forward_cpu);
  m.impl("nade_forward_checkpointed", &pixelar::cpu::nade_forward_checkpointed_cpu);
  m.impl("nade_forward_backward", &pixelar::cpu::nade_forward_backward_cpu);
}
