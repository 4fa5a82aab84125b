// Diagonal LSTM scan: CUDA kernels (forward and backward), their launchers and their
// registration, compiled by nvcc and (all but the registration) by the CPU emulation tests.
//
// Semantics: pixelar/ops/diagonal_lstm_scan.py. x_gates: (B, 4H, R, S), S = R + W - 1;
// w_ss: (4H, H, 2), tap 0 = row above, tap 1 = same row, both in the previous column.
//
// Design: one block per image loops over the S columns. One thread per (hidden unit k,
// row r) item, idx = k * R + r, computes its four gate pre-activations and the cell
// (lstm_math.h), then __syncthreads before the next column. The kernels work on
// column-major copies of the maps, x_gates as (B, S, 4H, R) and h, c as (B, S, H, R)
// (the launchers transpose, coalesced, with ATen): in the op's (R, S) layout the rows of
// one column are S elements apart, so every load of a warp would touch 32 sectors; here a
// warp reads and writes consecutive addresses. Each thread loads the x_gates of its first
// prefetch_items() items of column j + 1 into registers before the barrier that ends column j.
// The previous column's h (H x R) and c live in shared memory (h double-buffered, with a
// zero row -1 in front of row 0), and so do the recurrent weights when they fit; the state
// moves to a global scratch buffer when it does not fit (launch_plan.h, plan_scan).
// The backward runs the columns in reverse, recomputing the gates from the saved h (staged
// column by column), and writes grad x_gates; the weight gradient is one contraction of
// grad x_gates with the shifted h (ATen, cuBLAS).
#if !defined(PIXELAR_CUDA_EMULATION)  // the CUDA build: the registration below
#include <torch/library.h>

#include "cuda_device.cuh"
#endif

#include "lstm_scan.cuh"
#include "pixelar/lstm_math.h"

namespace pixelar {
namespace cuda {
namespace diagonal_scan {

// Items per thread whose x_gates are loaded a column early: 4 in float (16 registers), none
// in double (even one spilled under the 64-register cap of a 1,024-thread block: ptxas -v).
template <typename acc_t>
constexpr int prefetch_items() {
  return sizeof(acc_t) > 4 ? 0 : 4;
}

// Offsets of item idx = k * R + r (n = H * R items) of column j of image b in the kernels'
// column-major maps: gate q of x_gates (B, S, 4H, R), and h, c (B, S, H, R). Consecutive
// items are consecutive addresses (the tests check it: a warp's access is 128 bytes).
__host__ __device__ __forceinline__ int64_t x_offset(int64_t b, int j, int q, int idx, int S,
                                                     int n) {
  return ((b * S + j) * 4 + q) * n + idx;
}
__host__ __device__ __forceinline__ int64_t state_offset(int64_t b, int j, int idx, int S,
                                                         int n) {
  return (b * S + j) * n + idx;
}

// x of item idx of column j of image b (zero past the last item): the four gates.
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ void load_x(const scalar_t* __restrict__ x, int64_t b, int j, int S,
                                       int n, int idx, acc_t (&xv)[4]) {
#pragma unroll
  for (int q = 0; q < 4; ++q) {
    xv[q] = idx < n ? static_cast<acc_t>(x[x_offset(b, j, q, idx, S, n)]) : acc_t(0);
  }
}

// pre[0..3]: gate pre-activations [i, f, o, g] of hidden unit k at row r: x (the item's
// x_gates) plus the 2 x 1 state-to-state convolution of the previous column, whose h is hp:
// (H, R + 1), index kk * RP + r + 1, with a zero row -1 in front.
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ void gate_pre_activations(const acc_t (&x)[4],
                                                     const Weights<scalar_t, acc_t>& wt,
                                                     const acc_t* __restrict__ hp, int k, int r,
                                                     int H, int RP, acc_t (&pre)[4]) {
#pragma unroll
  for (int q = 0; q < 4; ++q) pre[q] = x[q];
  for (int kk = 0; kk < H; ++kk) {
    const acc_t above = hp[kk * RP + r];  // row r - 1 (zero for r = 0)
    const acc_t same = hp[kk * RP + r + 1];
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      const int64_t wi = ((static_cast<int64_t>(q) * H + k) * H + kk) * 2;
      pre[q] += wt[wi] * above + wt[wi + 1] * same;
    }
  }
}

// x: (B, S, 4H, R); h, c: (B, S, H, R). Block state (acc_t, in shared memory or this
// block's scratch): h [2][H][R + 1], c [H][R].
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kMaxThreads)
forward_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ w,
               scalar_t* __restrict__ h, scalar_t* __restrict__ c, acc_t* scratch, int H,
               int R, int S, bool state_in_smem, bool weights_in_smem) {
  PIXELAR_DYNAMIC_SMEM(smem_raw);
  const int RP = R + 1;
  const int W = S - R + 1;
  const int n = H * R;
  const int64_t state_elems = 2 * static_cast<int64_t>(H) * RP + n;
  acc_t* h_s = scan_state(smem_raw, scratch, state_elems, state_in_smem);
  acc_t* c_s = h_s + 2 * H * RP;
  acc_t* w_s = scan_weights_smem<acc_t>(smem_raw, state_elems, state_in_smem);
  const int tid = threadIdx.x, nt = blockDim.x;
  const int64_t b = blockIdx.x;
  constexpr int kPrefetch = prefetch_items<acc_t>();

  for (int i = tid; i < 2 * H * RP; i += nt) h_s[i] = acc_t(0);
  for (int i = tid; i < n; i += nt) c_s[i] = acc_t(0);
  const Weights<scalar_t, acc_t> wt = stage_weights(w, w_s, 8 * H * H, weights_in_smem);

  acc_t xn[kPrefetch > 0 ? kPrefetch : 1][4];
#pragma unroll
  for (int m = 0; m < kPrefetch; ++m) load_x(x, b, 0, S, n, tid + m * nt, xn[m]);
  __syncthreads();

  int cur = 0;
  for (int j = 0; j < S; ++j) {
    const acc_t* hp = h_s + cur * H * RP;
    acc_t* hn = h_s + (cur ^ 1) * H * RP;
    auto item = [&](int idx, const acc_t (&xv)[4]) {
      const int k = idx / R;
      const int r = idx - k * R;
      const int col = j - r;
      if (col < 0 || col >= W) {  // the skew's padding: state zero, never read
        hn[k * RP + r + 1] = acc_t(0);
        c_s[idx] = acc_t(0);
        h[state_offset(b, j, idx, S, n)] = scalar_t(0);
        c[state_offset(b, j, idx, S, n)] = scalar_t(0);
        return;
      }
      acc_t pre[4];
      gate_pre_activations(xv, wt, hp, k, r, H, RP, pre);
      acc_t c_new, h_new;
      math::lstm_cell_forward(pre[0], pre[1], pre[2], pre[3], c_s[idx], &c_new, &h_new);
      hn[k * RP + r + 1] = h_new;
      c_s[idx] = c_new;
      h[state_offset(b, j, idx, S, n)] = static_cast<scalar_t>(h_new);
      c[state_offset(b, j, idx, S, n)] = static_cast<scalar_t>(c_new);
    };
#pragma unroll
    for (int m = 0; m < kPrefetch; ++m) {
      if (tid + m * nt < n) item(tid + m * nt, xn[m]);
    }
    for (int idx = tid + kPrefetch * nt; idx < n; idx += nt) {
      acc_t xv[4];
      load_x(x, b, j, S, n, idx, xv);
      item(idx, xv);
    }
    if (j + 1 < S) {  // column j + 1's x_gates, in flight across the barrier
#pragma unroll
      for (int m = 0; m < kPrefetch; ++m) load_x(x, b, j + 1, S, n, tid + m * nt, xn[m]);
    }
    __syncthreads();
    cur ^= 1;
  }
}

// gh, gc, h, c: (B, S, H, R); x, gx: (B, S, 4H, R). Block state (acc_t): the saved h of
// column j - 1 [H][R + 1], the gate gradients [4H][R + 1] (zero row R), dL/dh and dL/dc
// from column j + 1 [H][R] each.
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kMaxThreads)
backward_kernel(const scalar_t* __restrict__ gh, const scalar_t* __restrict__ gc,
                const scalar_t* __restrict__ x, const scalar_t* __restrict__ w,
                const scalar_t* __restrict__ h, const scalar_t* __restrict__ c,
                scalar_t* __restrict__ gx, acc_t* scratch, int H, int R, int S,
                bool state_in_smem, bool weights_in_smem) {
  PIXELAR_DYNAMIC_SMEM(smem_raw);
  const int RP = R + 1;
  const int W = S - R + 1;
  const int n = H * R;
  const int64_t state_elems = 5 * static_cast<int64_t>(H) * RP + 2 * n;
  acc_t* hs_s = scan_state(smem_raw, scratch, state_elems, state_in_smem);
  acc_t* dp_s = hs_s + H * RP;
  acc_t* dh_s = dp_s + 4 * H * RP;
  acc_t* dc_s = dh_s + n;
  acc_t* w_s = scan_weights_smem<acc_t>(smem_raw, state_elems, state_in_smem);
  const int tid = threadIdx.x, nt = blockDim.x;
  const int64_t b = blockIdx.x;
  constexpr int kPrefetch = prefetch_items<acc_t>();

  for (int i = tid; i < 4 * H * RP; i += nt) dp_s[i] = acc_t(0);
  for (int i = tid; i < n; i += nt) {
    dh_s[i] = acc_t(0);
    dc_s[i] = acc_t(0);
  }
  const Weights<scalar_t, acc_t> wt = stage_weights(w, w_s, 8 * H * H, weights_in_smem);
  // h of column jp (zero for jp < 0) into hs_s, with a zero row -1
  auto stage = [&](int jp) {
    for (int i = tid; i < H * RP; i += nt) {
      const int k = i / RP;
      const int rr = i - k * RP;  // rr = r + 1
      hs_s[i] = (jp >= 0 && rr >= 1)
                    ? static_cast<acc_t>(h[state_offset(b, jp, k * R + rr - 1, S, n)])
                    : acc_t(0);
    }
  };
  stage(S - 2);  // the state the last column saw
  acc_t xn[kPrefetch > 0 ? kPrefetch : 1][4];
#pragma unroll
  for (int m = 0; m < kPrefetch; ++m) load_x(x, b, S - 1, S, n, tid + m * nt, xn[m]);
  __syncthreads();

  for (int j = S - 1; j >= 0; --j) {
    // Phase A: gate gradients of column j.
    auto item = [&](int idx, const acc_t (&xv)[4]) {
      const int k = idx / R;
      const int r = idx - k * R;
      const int col = j - r;
      if (col < 0 || col >= W) {
#pragma unroll
        for (int q = 0; q < 4; ++q) {
          dp_s[(q * H + k) * RP + r] = acc_t(0);
          gx[x_offset(b, j, q, idx, S, n)] = scalar_t(0);
        }
        dc_s[idx] = acc_t(0);
        return;
      }
      acc_t pre[4];
      gate_pre_activations(xv, wt, hs_s, k, r, H, RP, pre);
      const int64_t o = state_offset(b, j, idx, S, n);
      const acc_t c_prev = j > 0 ? static_cast<acc_t>(c[state_offset(b, j - 1, idx, S, n)])
                                 : acc_t(0);
      const acc_t dh = static_cast<acc_t>(gh[o]) + dh_s[idx];
      const acc_t dc = static_cast<acc_t>(gc[o]) + dc_s[idx];
      acc_t d[4], dc_prev;
      math::lstm_cell_backward(pre[0], pre[1], pre[2], pre[3], c_prev,
                               static_cast<acc_t>(c[o]), dh, dc, &d[0], &d[1], &d[2],
                               &d[3], &dc_prev);
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        dp_s[(q * H + k) * RP + r] = d[q];
        gx[x_offset(b, j, q, idx, S, n)] = static_cast<scalar_t>(d[q]);
      }
      dc_s[idx] = dc_prev;
    };
#pragma unroll
    for (int m = 0; m < kPrefetch; ++m) {
      if (tid + m * nt < n) item(tid + m * nt, xn[m]);
    }
    for (int idx = tid + kPrefetch * nt; idx < n; idx += nt) {
      acc_t xv[4];
      load_x(x, b, j, S, n, idx, xv);
      item(idx, xv);
    }
    if (j > 0) {  // column j - 1's x_gates, in flight across the barriers
#pragma unroll
      for (int m = 0; m < kPrefetch; ++m) load_x(x, b, j - 1, S, n, tid + m * nt, xn[m]);
    }
    __syncthreads();
    // Phase B: dL/dh of column j - 1 = W1^T dpre[r] + W0^T dpre[r + 1]; stage h of j - 2.
    for (int idx = tid; idx < n; idx += nt) {
      const int k = idx / R;
      const int r = idx - k * R;
      acc_t acc = acc_t(0);
      for (int g = 0; g < 4 * H; ++g) {
        const int64_t wi = (static_cast<int64_t>(g) * H + k) * 2;
        acc += wt[wi + 1] * dp_s[g * RP + r] + wt[wi] * dp_s[g * RP + r + 1];
      }
      dh_s[idx] = acc;
    }
    stage(j - 2);
    __syncthreads();
  }
}

}  // namespace diagonal_scan

// The diagonal scan for the launchers of lstm_scan.cuh: N = S skewed columns; a step is a
// skewed column, its positions the R rows, staged with one zero row in front.
struct DiagonalScan {
  static constexpr ScanNames kNames{
      "pixelar::diagonal_lstm_scan (CUDA)", "pixelar::diagonal_lstm_scan_backward (CUDA)",
      "diagonal_lstm_scan_cuda", "diagonal_lstm_scan_backward_cuda", "(B, 4H, R, S)",
      "(4H, H, 2)", "(B, H, R, S)"};
  static constexpr int64_t kTaps = 2;
  static constexpr int64_t kPad = 1;

  static void check_sizes(const char* op, const ScanSizes& n) {
    TORCH_CHECK(n.N >= n.R, op, ": x_gates must be a skewed map with S = R + W - 1 >= R "
                "columns (W >= 1), got R = ", n.R, ", S = ", n.N);
  }
  static int64_t positions(const ScanSizes& n) { return n.R; }

  // (B, C, R, S) <-> the kernels' column-major (B, S, C, R)
  static at::Tensor columns(const at::Tensor& t) { return t.permute({0, 3, 1, 2}).contiguous(); }
  static at::Tensor uncolumns(const at::Tensor& t) {
    return t.permute({0, 2, 3, 1}).contiguous();
  }

  template <typename Dev, typename scalar_t, typename acc_t>
  static std::tuple<at::Tensor, at::Tensor> forward(const at::Tensor& x_gates,
                                                    const at::Tensor& w_ss, const ScanSizes& n,
                                                    const ScanPlan& plan, int threads) {
    TORCH_CHECK(grid_fits(n.B, 1), kNames.forward_op, ": batch ", n.B, " too large");
    const at::Tensor xt = columns(x_gates);
    at::Tensor ht = at::empty({n.B, n.N, n.H, n.R}, x_gates.options());
    at::Tensor ct = at::empty_like(ht);
    at::Tensor scratch = scan_scratch<acc_t>(plan, n.B, x_gates.options());
    Dev::launch(diagonal_scan::forward_kernel<scalar_t, acc_t>, n.B, 1, threads,
                plan.smem_bytes, xt.data_ptr<scalar_t>(), w_ss.data_ptr<scalar_t>(),
                ht.data_ptr<scalar_t>(), ct.data_ptr<scalar_t>(), scratch.data_ptr<acc_t>(),
                static_cast<int>(n.H), static_cast<int>(n.R), static_cast<int>(n.N),
                plan.state_in_smem, plan.weights_in_smem);
    return {uncolumns(ht), uncolumns(ct)};
  }

  template <typename Dev, typename scalar_t, typename acc_t>
  static at::Tensor backward(const at::Tensor& grad_h, const at::Tensor& grad_c,
                             const at::Tensor& x_gates, const at::Tensor& w_ss,
                             const at::Tensor& h, const at::Tensor& c, const ScanSizes& n,
                             const ScanPlan& plan, int threads) {
    TORCH_CHECK(grid_fits(n.B, 1), kNames.backward_op, ": batch ", n.B, " too large");
    const at::Tensor ght = columns(grad_h), gct = columns(grad_c), xt = columns(x_gates),
                     ht = columns(h), ct = columns(c);
    at::Tensor gxt = at::empty_like(xt);
    at::Tensor scratch = scan_scratch<acc_t>(plan, n.B, x_gates.options());
    Dev::launch(diagonal_scan::backward_kernel<scalar_t, acc_t>, n.B, 1, threads,
                plan.smem_bytes, ght.data_ptr<scalar_t>(), gct.data_ptr<scalar_t>(),
                xt.data_ptr<scalar_t>(), w_ss.data_ptr<scalar_t>(), ht.data_ptr<scalar_t>(),
                ct.data_ptr<scalar_t>(), gxt.data_ptr<scalar_t>(), scratch.data_ptr<acc_t>(),
                static_cast<int>(n.H), static_cast<int>(n.R), static_cast<int>(n.N),
                plan.state_in_smem, plan.weights_in_smem);
    return uncolumns(gxt);
  }

  // grad_x: (B, 4H, R, S), h: (B, H, R, S) -> (4H, H, 2).
  static at::Tensor grad_w(const at::Tensor& grad_x, const at::Tensor& h) {
    const int64_t R = h.size(2), S = h.size(3);
    // Tap 1 saw h[r, j - 1], tap 0 saw h[r - 1, j - 1] (zero-padded).
    const at::Tensor h_same = at::constant_pad_nd(h, {1, 0}).narrow(3, 0, S);
    const at::Tensor h_above = at::constant_pad_nd(h_same, {0, 0, 1, 0}).narrow(2, 0, R);
    return at::stack({at::einsum("bgrs,bkrs->gk", {grad_x, h_above}),
                      at::einsum("bgrs,bkrs->gk", {grad_x, h_same})},
                     -1);
  }
};

// pixelar::diagonal_lstm_scan_image (the image layout, reverse = right to left): the
// kernels above between ATen's skew (and mirror) of the inputs and unskew (and mirror) of
// the outputs, as pixelar/ops/skew.py defines them; outputs channels-last, as on the CPU.
namespace image_layout {

constexpr const char* kOp = "pixelar::diagonal_lstm_scan_image";
constexpr const char* kOpBwd = "pixelar::diagonal_lstm_scan_image_backward";

// (B, C, R, W) -> (B, C, R, R + W - 1): row r shifted right by r (mirrored first when
// reverse), zero-filled.
inline at::Tensor to_skewed(const at::Tensor& t_in, bool reverse) {
  const at::Tensor t = reverse ? t_in.flip({3}) : t_in;
  const int64_t B = t.size(0), C = t.size(1), R = t.size(2), W = t.size(3), S = R + W - 1;
  return at::constant_pad_nd(t, {0, R})
      .reshape({B, C, R * (W + R)})
      .narrow(2, 0, R * S)
      .reshape({B, C, R, S});
}

// Inverse of to_skewed: (B, C, R, R + W - 1) -> (B, C, R, W), channels-last.
inline at::Tensor to_image(const at::Tensor& y, int64_t W, bool reverse) {
  const int64_t B = y.size(0), C = y.size(1), R = y.size(2), S = y.size(3);
  at::Tensor t = at::constant_pad_nd(y.reshape({B, C, R * S}), {0, R})
                     .reshape({B, C, R, S + 1})
                     .narrow(3, 0, W);
  if (reverse) t = t.flip({3});
  return t.contiguous(at::MemoryFormat::ChannelsLast);
}

inline at::Tensor empty_states(const at::Tensor& x_gates, int64_t H) {
  return at::empty({x_gates.size(0), H, x_gates.size(2), x_gates.size(3)},
                   x_gates.options().memory_format(at::MemoryFormat::ChannelsLast));
}


// The activated gates [sigmoid i, f, o, tanh g] of every pixel, from x_gates and the
// states: (B, 4H, R, W), channels-last (the op's third output).
inline at::Tensor gates_from_states(const at::Tensor& x_gates, const at::Tensor& w_ss,
                                    const at::Tensor& h, bool reverse) {
  const int64_t R = h.size(2), W = h.size(3), H = h.size(1);
  const at::Tensor above = at::constant_pad_nd(h, {0, 0, 1, 0}).narrow(2, 0, R);
  const at::Tensor prev = reverse ? at::constant_pad_nd(h, {0, 1}).narrow(3, 1, W)
                                  : at::constant_pad_nd(h, {1, 0}).narrow(3, 0, W);
  const at::Tensor pre = x_gates + at::einsum("gk,bkrw->bgrw", {w_ss.select(2, 0), above}) +
                         at::einsum("gk,bkrw->bgrw", {w_ss.select(2, 1), prev});
  return at::cat({at::sigmoid(pre.narrow(1, 0, 3 * H)), at::tanh(pre.narrow(1, 3 * H, H))}, 1)
      .contiguous(at::MemoryFormat::ChannelsLast);
}

}  // namespace image_layout

template <typename Dev>
std::tuple<at::Tensor, at::Tensor, at::Tensor> scan_image_forward(
    const at::Tensor& x_gates_in, const at::Tensor& w_ss, bool reverse,
    const c10::optional<at::Tensor>& bias) {
  const int64_t H = checks::check_scan_inputs(image_layout::kOp, x_gates_in, w_ss, 2,
                                              "(B, 4H, R, W)", "(4H, H, 2)", scan_target<Dev>());
  at::Tensor x_gates = x_gates_in;
  if (bias.has_value() && bias->defined()) {
    checks::check_scan_tensor(image_layout::kOp, "bias", *bias, x_gates_in, {4 * H}, "(4H,)",
                              scan_target<Dev>());
    x_gates = x_gates_in + bias->view({1, 4 * H, 1, 1});
  }
  if (x_gates.numel() == 0) {
    return {image_layout::empty_states(x_gates, H), image_layout::empty_states(x_gates, H),
            image_layout::empty_states(x_gates, 4 * H)};
  }
  const int64_t W = x_gates.size(3);
  auto hc = scan_forward<DiagonalScan, Dev>(image_layout::to_skewed(x_gates, reverse), w_ss);
  at::Tensor h = image_layout::to_image(std::get<0>(hc), W, reverse);
  at::Tensor gates = image_layout::gates_from_states(x_gates, w_ss, h, reverse);
  return {h, image_layout::to_image(std::get<1>(hc), W, reverse), gates};
}

template <typename Dev>
std::tuple<at::Tensor, at::Tensor> scan_image_backward(
    const at::Tensor& grad_h, const at::Tensor& grad_c, const at::Tensor& x_gates,
    const at::Tensor& w_ss, const at::Tensor& h, const at::Tensor& c, const at::Tensor& gates,
    bool reverse, const c10::optional<at::Tensor>& bias) {
  const char* op = image_layout::kOpBwd;
  const int64_t H = checks::check_scan_inputs(op, x_gates, w_ss, 2, "(B, 4H, R, W)",
                                              "(4H, H, 2)", scan_target<Dev>());
  const int64_t B = x_gates.size(0), R = x_gates.size(2), W = x_gates.size(3);
  checks::check_scan_states(op, x_gates, {B, H, R, W}, "(B, H, R, W)", grad_h, grad_c, h, c,
                            scan_target<Dev>());
  checks::check_scan_tensor(op, "gates", gates, x_gates, {B, 4 * H, R, W}, "(B, 4H, R, W)",
                            scan_target<Dev>());
  if (x_gates.numel() == 0) {
    return {at::empty_like(x_gates, at::MemoryFormat::ChannelsLast), at::zeros_like(w_ss)};
  }
  // (the skewed-map backward recomputes the gates from x_gates + bias and h)
  const at::Tensor x = bias.has_value() && bias->defined()
                           ? x_gates + bias->view({1, 4 * H, 1, 1})
                           : x_gates;
  auto sk = [reverse](const at::Tensor& t) { return image_layout::to_skewed(t, reverse); };
  auto gxw = scan_backward<DiagonalScan, Dev>(sk(grad_h), sk(grad_c), sk(x), w_ss, sk(h),
                                               sk(c));
  return {image_layout::to_image(std::get<0>(gxw), W, reverse), std::get<1>(gxw)};
}

}  // namespace cuda
}  // namespace pixelar

// The CUDA build registers the launchers for CudaDevice; the emulation tests
// (tests/cuda_emulation/) include this file with PIXELAR_CUDA_EMULATION defined and
// instantiate them for their host device policy instead.
#if !defined(PIXELAR_CUDA_EMULATION)
TORCH_LIBRARY_IMPL(pixelar, CUDA, m) {
  using pixelar::cuda::CudaDevice;
  using pixelar::cuda::DiagonalScan;
  m.impl("diagonal_lstm_scan", &pixelar::cuda::scan_forward<DiagonalScan, CudaDevice>);
  m.impl("diagonal_lstm_scan_backward",
         &pixelar::cuda::scan_backward<DiagonalScan, CudaDevice>);
  m.impl("diagonal_lstm_scan_image", &pixelar::cuda::scan_image_forward<CudaDevice>);
  m.impl("diagonal_lstm_scan_image_backward",
         &pixelar::cuda::scan_image_backward<CudaDevice>);
}
#endif
