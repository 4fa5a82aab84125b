// PIXELAR_HOST_DEVICE_INLINE: the one inline macro of pixelar's C++ and CUDA code.
//   nvcc (and hipcc):  __host__ __device__ __forceinline__, so the per-element math of
//                      pixelar/lstm_math.h and sampling_math.h is compiled for the GPU
//                      kernels and their host code alike;
//   GCC / Clang:       inline __attribute__((always_inline)): the CPU kernels call these
//                      helpers inside loops that vectorize only when every call is inlined
//                      (GCC's size heuristics otherwise stop inlining in big translation
//                      units), and a helper called from a PIXELAR_SIMD_CLONES function
//                      (csrc/cpu/kernel_common.h) is then compiled inside each clone;
//   otherwise:         inline.
// The CUDA host emulation of the tests (csrc/emulation/cuda_host_emulation.h) compiles the
// kernel bodies with the host compiler, so they take the GCC / Clang form.
#pragma once

#if defined(__CUDACC__) || defined(__HIPCC__)
#define PIXELAR_HOST_DEVICE_INLINE __host__ __device__ __forceinline__
#elif defined(__GNUC__)
#define PIXELAR_HOST_DEVICE_INLINE inline __attribute__((always_inline))
#else
#define PIXELAR_HOST_DEVICE_INLINE inline
#endif
