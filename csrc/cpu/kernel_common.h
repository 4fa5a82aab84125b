// Shared by the CPU kernels in csrc/cpu: the compiler settings under which their inner loops
// vectorize, and small tensor helpers. (Input checks: pixelar/checks.h, shared with CUDA.)
//
// Include this after the torch headers and before pixelar/lstm_math.h: the pragma below
// applies to every function defined after it in the translation unit (our kernels and the
// lstm_math.h functions they inline), not to torch's own inline functions.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/LegacyTypeDispatch.h>

#include <algorithm>
#include <atomic>
#include <type_traits>

#include "pixelar/inline.h"

// Vectorization of the inner loops.
// * -ftrapping-math (GCC's default) forbids if-converting the clamps and selects of the
//   branch-free math in lstm_math.h (SimdMath), so no loop calling it would vectorize;
//   torch itself is built with -fno-trapping-math. fp-contract=fast lets the AVX2 clone
//   fuse multiply-adds.
// * PIXELAR_SIMD_CLONES compiles a function three times, for x86-64-v4 (AVX-512), x86-64-v3
//   (AVX2 + FMA) and the baseline, and picks one at load time (GNU ifunc), so the extension
//   stays portable while using 8-wide float vectors where the CPU has them. The v4 clone
//   keeps the same 8-wide vectors but has 32 vector registers instead of 16, so the
//   constants of the exp / tanh polynomials and the register-blocked sums stay in
//   registers (an LSTM cell loop: 2.8 vs 4.1 ns per element in a standalone test). Hot
//   loops live in such functions (a lambda inside one would not be cloned).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math", "fp-contract=fast")
#endif
#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) && !defined(__clang__) && \
    __GNUC__ >= 11
#define PIXELAR_SIMD_CLONES \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#elif defined(__x86_64__) && defined(__linux__) && defined(__clang__) && __clang_major__ >= 14
#define PIXELAR_SIMD_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define PIXELAR_SIMD_CLONES
#endif
// Helpers called from a PIXELAR_SIMD_CLONES function are PIXELAR_HOST_DEVICE_INLINE
// (pixelar/inline.h): inlined, they are compiled for each clone's target; an out-of-line
// copy would be baseline code only.

#include "pixelar/simd.h"  // after the pragma: its math (lstm_math.h) is compiled under it

namespace pixelar {
namespace cpu {

// An output laid out like `like` (what torch.empty_like gives, which is what the fake
// kernels promise), holding `value` (contiguous). Copies only when the layouts differ.
inline at::Tensor like_layout(const at::Tensor& value, const at::Tensor& like) {
  if (like.is_contiguous()) return value;
  at::Tensor out = at::empty_like(like);
  out.copy_(value);
  return out;
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// work(task, scratch) for every task in [0, n), on torch's threads (at most n of them). The
// tasks are handed out one at a time from a shared counter, so a thread that the OS gives
// less time (a busy machine) takes fewer of them. make_scratch() runs once per thread; its
// result is passed to each of that thread's tasks.
template <typename MakeScratch, typename Work>
void parallel_tasks(int64_t n, const MakeScratch& make_scratch, const Work& work) {
  std::atomic<int64_t> next{0};
  at::parallel_for(0, std::min<int64_t>(at::get_num_threads(), n), 1, [&](int64_t, int64_t) {
    auto scratch = make_scratch();
    for (int64_t task = next++; task < n; task = next++) work(task, scratch);
  });
}

// Memory for a kernel's large temporaries, kept from one call to the next: one buffer per
// calling thread and slot, grown when too small. Fresh memory of a megabyte comes from mmap
// and costs a page fault per 4 KiB page at first touch, on every call; with NADE's W^T and
// exp(-W^T) (1.5 MB each at 500 x 784), that made NADE sampling of 64 images take 3.3 ms
// instead of 2.5 ms in about half the processes (glibc's malloc thresholds decide which;
// README, "Performance stability"; exp(-W^T) is now kept by nade::ColumnCache,
// nade_hidden.h). Only for temporaries that do not outlive the call.
enum class Reused : int { kTransposed, kCount };

inline at::Tensor reused_empty(Reused slot, at::IntArrayRef sizes, at::ScalarType dtype) {
  thread_local at::Tensor kept[static_cast<int>(Reused::kCount)];
  at::Tensor& buffer = kept[static_cast<int>(slot)];
  int64_t n = 1;
  for (const int64_t s : sizes) n *= s;
  if (!buffer.defined() || buffer.scalar_type() != dtype || buffer.numel() < n) {
    buffer = at::Tensor();  // free the old buffer first
    buffer = at::empty({n}, at::TensorOptions().dtype(dtype));
  }
  return buffer.narrow(0, 0, n).view(sizes);
}

// The block of transposed() and its parallel grain: 32 x 32 elements (in L1).
constexpr int64_t kTransposeBlock = 32;

// dst (C, R) = src (R, C)^T, src element (r, c) at src[r * rs + c * cs], for the columns
// [c0, c1) of src: kTransposeBlock-square blocks, each as 8 x 8 register transposes where
// the columns are unit-stride floats, else (double, strided columns, edges) element by
// element.
template <typename T>
PIXELAR_SIMD_CLONES void transpose_columns(const T* src, int64_t rs, int64_t cs, T* dst,
                                           int64_t R, int64_t c0, int64_t c1) {
  for (int64_t cb = c0; cb < c1; cb += kTransposeBlock) {
    const int64_t ce = std::min(c1, cb + kTransposeBlock);
    for (int64_t rb = 0; rb < R; rb += kTransposeBlock) {
      const int64_t re = std::min(R, rb + kTransposeBlock);
      int64_t c = cb;
      if constexpr (std::is_same<T, float>::value) {
        for (; cs == 1 && c + 8 <= ce; c += 8) {
          int64_t r = rb;
          for (; r + 8 <= re; r += 8) simd::transpose8x8(src + r * rs + c, rs, dst + c * R + r, R);
          for (; r < re; ++r)
            for (int64_t j = c; j < c + 8; ++j) dst[j * R + r] = src[r * rs + j];
        }
      }
      for (; c < ce; ++c)
        for (int64_t r = rb; r < re; ++r) dst[c * R + r] = src[r * rs + c * cs];
    }
  }
}

// The transpose of a 2-D tensor m (R, C), any strides, contiguous (C, R), in parallel over
// blocks of columns of m (ATen's strided copy of m.t() reads a cache line per element:
// about 10x slower for the 500 x 784 NADE weights). With kTemporary, the result lives in
// reused memory (Reused::kTransposed) and must not outlive the call; where m is stored
// transposed (m.t() contiguous, as the NADE models keep W) it is the view m.t(), no copy.
template <bool kTemporary = false>
inline at::Tensor transposed(const at::Tensor& m) {
  if (kTemporary && m.t().is_contiguous()) return m.t();
  const int64_t R = m.size(0), C = m.size(1);
  at::Tensor out = kTemporary ? reused_empty(Reused::kTransposed, {C, R}, m.scalar_type())
                              : at::empty({C, R}, m.options());
  if (R * C == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(m.scalar_type(), "pixelar_transposed", [&] {
    const scalar_t* src = m.data_ptr<scalar_t>();
    scalar_t* dst = out.data_ptr<scalar_t>();
    const int64_t rs = m.stride(0), cs = m.stride(1);
    at::parallel_for(0, ceil_div(C, kTransposeBlock), 1, [&](int64_t cb0, int64_t cb1) {
      transpose_columns<scalar_t>(src, rs, cs, dst, R, cb0 * kTransposeBlock,
                                  std::min(C, cb1 * kTransposeBlock));
    });
  });
  return out;
}

}  // namespace cpu
}  // namespace pixelar
