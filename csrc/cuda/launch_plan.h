// Launch geometry and shared-memory sizes of the CUDA kernels: plain host arithmetic (no
// CUDA, no ATen), called by the launchers in csrc/cuda/<op>.cu, which the CUDA build and the
// CPU emulation tests (tests/cuda_emulation/) both compile, and exposed to the tests so they
// check the real numbers at sizes no emulation could run (the paper's shapes, a batch of a
// million, each GPU's shared-memory limit).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

namespace pixelar {
namespace cuda {

constexpr int kMaxThreads = 1024;
constexpr size_t kDefaultSmem = 48 * 1024;     // without cudaFuncSetAttribute
constexpr size_t kWeightsSmemCap = 96 * 1024;  // scans keep w_ss in shared memory below this
constexpr int64_t kMaxGridX = 2147483647;
constexpr int64_t kMaxGridYZ = 65535;

// Threads for a block that loops over n items: a multiple of 32, at most max_threads
// (kMaxThreads, or less to force the loops to stride; a multiple of 32).
inline int block_threads(int64_t n, int max_threads = kMaxThreads) {
  const int64_t warps = std::max<int64_t>(1, std::min<int64_t>((n + 31) / 32, max_threads / 32));
  return static_cast<int>(warps * 32);
}

// ---- LSTM scans (lstm_scan.cuh): one block per image, H * L items per step.
// Shared memory of a scan kernel besides the weights, in acc_t values. Both work on the L
// positions of one step (L = R rows of a skewed column, or W columns of a row) and stage
// the previous step's h with P zero entries of padding (one row in front, or a column at
// each end). Forward: h double-buffered [2][H][L + P], c [H][L]. Backward: the saved h
// [H][L + P], the gate gradients [4H][L + P], dL/dh and dL/dc [H][L] each.
inline int64_t forward_state(int64_t H, int64_t L, int64_t P) { return 2 * H * (L + P) + H * L; }
inline int64_t backward_state(int64_t H, int64_t L, int64_t P) {
  return 5 * H * (L + P) + 2 * H * L;
}

// Where a scan kernel keeps its state and weights: the state (state_bytes) in shared memory
// when it fits the device's opt-in limit, else in a global scratch buffer of state_bytes
// per image (scratch_bytes); the weights (weight_bytes) in shared memory when they fit
// beside what is there within min(limit, kWeightsSmemCap), else read from global memory.
struct ScanPlan {
  size_t smem_bytes;     // dynamic shared memory per block
  bool state_in_smem;
  bool weights_in_smem;
  size_t scratch_bytes;  // global scratch per image (0 when the state is in shared memory)
};

inline ScanPlan plan_scan(size_t state_bytes, size_t weight_bytes, size_t smem_limit) {
  ScanPlan p{};
  p.state_in_smem = state_bytes <= smem_limit;
  const size_t base = p.state_in_smem ? state_bytes : 0;
  p.weights_in_smem = base + weight_bytes <= std::min(smem_limit, kWeightsSmemCap);
  p.smem_bytes = base + (p.weights_in_smem ? weight_bytes : 0);
  p.scratch_bytes = p.state_in_smem ? 0 : state_bytes;
  return p;
}

// ---- NADE forward / backward (nade_forward.cu): a lane owns one hidden unit for kNadeRows
// batch rows; a block covers up to kNadeMaxThreads hidden units (its warps' sums are added
// in shared memory), blocks tile the hidden units on gridDim.y and the batch groups on
// gridDim.x (up to 2^31 - 1 groups: any batch). 512 threads, not 1,024: the float64
// backward needs more than the 64 registers a 1,024-thread block leaves (ptxas -v).
constexpr int kNadeRows = 8;
constexpr int kNadeMaxThreads = 512;

struct NadeGrid {
  int64_t x, y;  // batch groups, hidden-unit blocks
  int threads;   // per block
};

inline NadeGrid nade_grid(int64_t B, int64_t Hd, int max_threads = kMaxThreads) {
  const int threads = block_threads(Hd, std::min(max_threads, kNadeMaxThreads));
  return {std::max<int64_t>(1, (B + kNadeRows - 1) / kNadeRows),
          std::max<int64_t>(1, (Hd + threads - 1) / threads), threads};
}

inline bool grid_fits(int64_t x, int64_t y, int64_t z = 1) {
  return x >= 1 && x <= kMaxGridX && y >= 1 && y <= kMaxGridYZ && z >= 1 && z <= kMaxGridYZ;
}

// Values of the NADE forward's partial-sum buffer (one (B, D, O) slice per hidden-unit
// block) and the backward's grad-x buffer (one (B, D) slice per block).
inline int64_t nade_forward_partials(int64_t B, int64_t D, int64_t O, int64_t Hd,
                                     int max_threads = kMaxThreads) {
  return nade_grid(B, Hd, max_threads).y * B * D * O;
}

// ---- sampling kernels (nade_sample.cu, pixel_network_sample.cu): one block per image, up to 512 threads.
constexpr int kMaxSampleThreads = 512;

inline int sample_threads(int64_t n, int max_threads = kMaxSampleThreads) {
  return block_threads(n, std::min(max_threads, kMaxSampleThreads));
}

// nade_sample / rnade_sample: a (Hd), h (Hd), partial sums (O * warps), outputs (O), x_d.
inline size_t nade_sample_smem(int64_t Hd, int64_t O, int threads, size_t elem) {
  return static_cast<size_t>(2 * Hd + O * (threads / 32) + O + 1) * elem;
}

// pixel_network_sample_step: y (F), pre (4U), hc (U), cell (U), hid (Q), logits (O).
inline size_t pixel_network_smem(int64_t F, int64_t U, int64_t Q, int64_t O, size_t elem) {
  return static_cast<size_t>(F + 4 * U + 2 * U + Q + O) * elem;
}

inline bool fits_int32(int64_t v) { return v >= 0 && v <= 2147483647; }

}  // namespace cuda
}  // namespace pixelar
