// A host emulation of the CUDA execution model, enough to run pixelar's CUDA kernel bodies
// (csrc/cuda/<op>.cu) on the CPU, under the test extension of tests/cuda_emulation/.
//
// Model: one std::thread per CUDA thread of a block; blocks run one after another.
//   __syncthreads      a std::barrier over the block; a thread that returns calls
//                      arrive_and_drop, so the others are not blocked by it.
//   __shfl_xor_sync    a per-warp barrier plus an exchange buffer; aborts unless the mask
//                      names every lane of a full, live warp (a partial mask is undefined
//                      in pixelar's kernels, which always shuffle whole warps).
//   atomicAdd, atomicMin  under one mutex.
//   dynamic shared     an exact-size heap buffer filled with 0xFF bytes (NaN in float and
//   memory             double), so an out-of-bounds access is an AddressSanitizer error and
//                      a read of an unwritten value shows up as NaN.
//   launch limits      asserted: gridDim.x <= 2^31 - 1, gridDim.y, gridDim.z <= 65535,
//                      blockDim.z <= 64, at most 1024 threads per block, and the dynamic
//                      shared memory within the limit the launcher was told.
// Memory visibility follows the C++ memory model (std::barrier synchronises), so
// ThreadSanitizer reports a missing __syncthreads as a data race; the GPU's weaker memory
// model and its timing are not emulated.
#pragma once

#define PIXELAR_CUDA_EMULATION 1

#include <atomic>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>
#include <tuple>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) alignas(n)

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

inline thread_local dim3 threadIdx;
inline thread_local dim3 blockIdx;
inline thread_local dim3 blockDim;
inline thread_local dim3 gridDim;

using std::isfinite;

namespace pixelar {
namespace emu {

[[noreturn]] inline void fail(const char* what) {
  std::fprintf(stderr, "pixelar CUDA emulation: %s\n", what);
  std::fflush(stderr);
  std::abort();
}

struct Warp {
  explicit Warp(int n) : lanes(n), bar(n) {}
  int lanes;
  std::barrier<> bar;
  std::atomic<int> exited{0};
  alignas(16) unsigned char buf[32][16];
};

struct Block {
  Block(int n, size_t smem_bytes) : bar(n), smem(smem_bytes) {
    for (int w = 0; w < (n + 31) / 32; ++w) {
      warps.emplace_back(std::make_unique<Warp>(std::min(32, n - 32 * w)));
    }
    if (!smem.empty()) std::memset(smem.data(), 0xFF, smem.size());
  }
  std::barrier<> bar;
  std::vector<unsigned char> smem;  // exact size: ASan catches accesses past it
  std::vector<std::unique_ptr<Warp>> warps;
};

inline thread_local Block* tl_block = nullptr;

inline std::mutex& atomic_mutex() {
  static std::mutex m;
  return m;
}

inline unsigned char* dynamic_smem() {
  // An empty vector's data() may be null; kernels with no dynamic shared memory never use it.
  return tl_block->smem.data();
}

// Counters a test can read: launches and blocks run since the extension was loaded.
inline std::atomic<int64_t>& launches() {
  static std::atomic<int64_t> n{0};
  return n;
}

// Run kernel<<<grid, block, smem_bytes>>>(args...) on the host (smem_limit: the dynamic
// shared memory the launcher was allowed, asserted like a device's opt-in limit).
template <typename... KArgs, typename... Args>
void launch(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem_bytes,
            size_t smem_limit, Args&&... args) {
  if (grid.x < 1 || grid.x > 2147483647u || grid.y < 1 || grid.y > 65535 || grid.z < 1 ||
      grid.z > 65535) {
    fail("grid dimensions out of range (x <= 2^31 - 1, y, z <= 65535)");
  }
  const uint64_t nt = uint64_t(block.x) * block.y * block.z;
  if (nt < 1 || nt > 1024 || block.x > 1024 || block.y > 1024 || block.z > 64) {
    fail("block dimensions out of range (at most 1024 threads)");
  }
  if (smem_bytes > smem_limit) fail("dynamic shared memory above the launcher's limit");
  launches()++;
  const std::tuple<KArgs...> targs(std::forward<Args>(args)...);
  for (unsigned bz = 0; bz < grid.z; ++bz)
    for (unsigned by = 0; by < grid.y; ++by)
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        Block blk(static_cast<int>(nt), smem_bytes);
        std::vector<std::thread> threads;
        threads.reserve(nt);
        for (unsigned t = 0; t < nt; ++t) {
          threads.emplace_back([&, t] {
            threadIdx = dim3(t % block.x, (t / block.x) % block.y, t / (block.x * block.y));
            blockIdx = dim3(bx, by, bz);
            blockDim = block;
            gridDim = grid;
            tl_block = &blk;
            std::apply(kernel, targs);
            Warp& w = *blk.warps[t / 32];
            w.exited.fetch_add(1);
            w.bar.arrive_and_drop();
            blk.bar.arrive_and_drop();
            tl_block = nullptr;
          });
        }
        for (std::thread& th : threads) th.join();
      }
}

inline int linear_tid() {
  return static_cast<int>(threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z));
}

}  // namespace emu
}  // namespace pixelar

inline void __syncthreads() { pixelar::emu::tl_block->bar.arrive_and_wait(); }

template <typename T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask) {
  static_assert(sizeof(T) <= 16, "shuffled type too large");
  using pixelar::emu::Warp;
  const int t = pixelar::emu::linear_tid();
  Warp& w = *pixelar::emu::tl_block->warps[t / 32];
  const unsigned full = w.lanes == 32 ? 0xffffffffu : ((1u << w.lanes) - 1u);
  if (mask != full || w.lanes != 32) pixelar::emu::fail("__shfl_xor_sync with a partial mask");
  const int lane = t & 31;
  std::memcpy(w.buf[lane], &v, sizeof(T));
  w.bar.arrive_and_wait();
  if (w.exited.load() != 0) pixelar::emu::fail("__shfl_xor_sync in a warp with exited lanes");
  T r;
  std::memcpy(&r, w.buf[lane ^ (lane_mask & 31)], sizeof(T));
  w.bar.arrive_and_wait();
  return r;
}

template <typename T>
T atomicAdd(T* address, T v) {
  std::lock_guard<std::mutex> lock(pixelar::emu::atomic_mutex());
  const T old = *address;
  *address = old + v;
  return old;
}

template <typename T>
T atomicMin(T* address, T v) {
  std::lock_guard<std::mutex> lock(pixelar::emu::atomic_mutex());
  const T old = *address;
  *address = v < old ? v : old;
  return old;
}

// Correctly rounded arithmetic: the test extension is compiled with -ffp-contract=off.
inline float __fadd_rn(float a, float b) { return a + b; }
inline double __dadd_rn(double a, double b) { return a + b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline double __ddiv_rn(double a, double b) { return a / b; }
