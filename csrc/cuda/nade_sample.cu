// CUDA kernels of pixelar::nade_sample and pixelar::rnade_sample: the whole D-step sampling
// loop of NADE / RNADE in one launch (semantics: the docstring of
// pixelar/ops/nade_sample.py; the CPU kernels: csrc/cpu/nade_sample.cpp).
//
// Design: one thread block per image. Thread t owns the hidden units j = t, t + blockDim,
// ...: their a_j and h_j = sigmoid(a_j) live in shared memory and only that thread touches
// them, so the hidden update needs no barrier. Per dimension d:
//   1. the O outputs V[d] @ h (O = 1 for NADE, 3K for RNADE): each thread sums its units
//      (V[d, o, :] read coalesced), warp shuffles add the lanes, and the warps' partial
//      sums are added in warp order by one thread per output (fixed order: the same result
//      on every run), plus b[d];
//   2. thread 0 draws x_d with the helpers of pixelar/sampling_math.h (float64 inverse
//      CDF, the rule of pixelar/ops/draw.py) and broadcasts it through shared memory;
//   3. every thread updates its units: a_j += x_d W[j, d] (W^T read coalesced) and
//      h_j = sigmoid(a_j). NADE skips units with x_d = 0 and a finite W[j, d] (nothing
//      changes). Float sigmoids use math::SimdMath's exp, as the CPU kernels do.
// RNADE's update and value are rounded as the reference rounds them (no fused
// multiply-add), so a_d is bitwise the reference's; the dot products V[d] @ h differ from
// the CPU and reference sums in summation order, and in float32 the sigmoid's division is
// approximate on the GPU (-prec-div=false), so float32 samples
// agree with the CPU's only up to draws at a threshold; the draws themselves are float64
// and exact, and float64 samples are bitwise the reference's (the emulation tests).
// Kernels, launchers and registration are compiled by nvcc, all but the registration by the
// CPU emulation tests.
#if !defined(PIXELAR_CUDA_EMULATION)  // the CUDA build: the registration below
#include <torch/library.h>

#include "cuda_device.cuh"
#endif

#include <optional>

#include "pixelar/lstm_math.h"
#include "pixelar/sampling_math.h"
#include "sampling_common.cuh"

namespace pixelar {
namespace cuda {
namespace nade_sampling {

using namespace sampling_kernels;

// kRnade = false: NADE, x_long (n, D) int64, O = 1, z and the clamp unused.
// kRnade = true: RNADE, x_float (n, D) of T, O = 3K, cond unused.
// Dynamic shared memory (T): a (Hd), h (Hd), partial sums (O * warps), outputs (O), x_d (1).
template <typename T, bool kRnade>
__global__ void __launch_bounds__(kMaxSampleThreads)
nade_sample_kernel(const double* __restrict__ u, const double* __restrict__ z,
                   const int64_t* __restrict__ cond, const T* __restrict__ wt,
                   const T* __restrict__ c, const T* __restrict__ V,
                   const T* __restrict__ bias, int64_t* __restrict__ x_long,
                   T* __restrict__ x_float, int64_t* __restrict__ bad, int64_t D, int Hd,
                   int O, double ls_min, double ls_max) {
  PIXELAR_DYNAMIC_SMEM(smem_raw);
  const int tid = threadIdx.x, nt = blockDim.x;
  const int lane = tid & 31, warp = tid >> 5, warps = nt >> 5;
  T* a = reinterpret_cast<T*>(smem_raw);
  T* h = a + Hd;
  T* part = h + Hd;         // [O][warps]
  T* out = part + O * warps;  // [O], then x_d at out[O]
  const int64_t img = blockIdx.x;

  for (int j = tid; j < Hd; j += nt) {
    a[j] = c[j];
    h[j] = math::sigmoid<T, math::SimdMath>(c[j]);
  }
  for (int64_t d = 0; d < D; ++d) {
    // 1. out = V[d] @ h + b[d]
    const T* vd = V + d * O * Hd;
    for (int o = 0; o < O; ++o) {
      T s = T(0);
      for (int j = tid; j < Hd; j += nt) s += vd[static_cast<int64_t>(o) * Hd + j] * h[j];
      s = warp_sum(s);
      if (lane == 0) part[o * warps + warp] = s;
    }
    __syncthreads();
    for (int o = tid; o < O; o += nt) {
      T s = part[o * warps];
      for (int w = 1; w < warps; ++w) s += part[o * warps + w];
      out[o] = s + bias[d * O + o];
    }
    if (kRnade) __syncthreads();  // NADE: thread 0 wrote out[0] itself
    // 2. the draw
    if (tid == 0) {
      const int64_t i = img * D + d;
      T xd;
      if (kRnade) {
        const int K = O / 3;
        if (!sampling::logits_finite(out, O, 1)) record_nonfinite(bad, d);
        const int64_t k = sampling::draw_categorical(out, K, 1, u[i]);
        // clamp in the model's dtype, as the reference does
        const T ls = out[2 * K + k];
        const T lo = static_cast<T>(ls_min), hi = static_cast<T>(ls_max);
        const double log_sigma = static_cast<double>(ls < lo ? lo : (ls > hi ? hi : ls));
        const double value = add_rn(static_cast<double>(out[K + k]),
                                    mul_rn(math::exp_(log_sigma), z[i]));
        xd = static_cast<T>(value);
        x_float[i] = xd;
      } else {
        int64_t value = sampling::draw_bernoulli(out[0], u[i]);
        if (cond != nullptr && cond[i] >= 0) {
          value = cond[i];
        } else if (!sampling::logit_finite(out[0])) {
          record_nonfinite(bad, d);
        }
        x_long[i] = value;
        xd = static_cast<T>(value);
      }
      out[O] = xd;
    }
    __syncthreads();
    // 3. a += x_d W[:, d]; h = sigmoid(a), each thread on its own units
    const T xd = out[O];
    const T* wd = wt + d * Hd;
    for (int j = tid; j < Hd; j += nt) {
      const T w = wd[j];
      if (kRnade || xd != T(0) || !isfinite(w)) {
        a[j] = add_rn(a[j], mul_rn(xd, w));
        h[j] = math::sigmoid<T, math::SimdMath>(a[j]);
      }
    }
    // the next step's partial sums are written after this step's were read: thread 0
    // read them before the barrier above
  }
}

}  // namespace nade_sampling

// Checks W (Hd, D), c (Hd,), V (D, O, Hd), b (D, O) and u (n, D), all on u's device;
// returns Hd.
template <typename Dev>
int64_t check_nade_sample_params(const char* op, const at::Tensor& u, const at::Tensor& W,
                                 const at::Tensor& c, const at::Tensor& V, const at::Tensor& b,
                                 int64_t O) {
  TORCH_CHECK(u.dim() == 2, op, ": u must be (n, D), got ", shape_str(u));
  TORCH_CHECK(W.dim() == 2, op, ": W must be (Hd, D), got ", shape_str(W));
  const int64_t D = u.size(1), Hd = W.size(0);
  const at::ScalarType dtype = W.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble, op,
              ": W must be float32 or float64, got ", dtype);
  TORCH_CHECK(u.device().type() == Dev::kDeviceType, op, ": u must be a ",
              c10::DeviceTypeName(Dev::kDeviceType), " tensor for this kernel, got a tensor on ",
              u.device());
  const at::Device dev = u.device();
  checks::check_tensor(op, "u", u, at::kDouble, u.sizes(), Dev::kDeviceType, &dev);
  checks::check_tensor(op, "W", W, dtype, {Hd, D}, Dev::kDeviceType, &dev);
  checks::check_tensor(op, "c", c, dtype, {Hd}, Dev::kDeviceType, &dev);
  checks::check_tensor(op, "V", V, dtype, {D, O, Hd}, Dev::kDeviceType, &dev);
  checks::check_tensor(op, "b", b, dtype, {D, O}, Dev::kDeviceType, &dev);
  TORCH_CHECK(Hd <= INT32_MAX && O <= INT32_MAX, op, ": W and V are too large for this kernel");
  return Hd;
}

template <typename Dev, typename T, bool kRnade>
void launch_nade_sample(const char* op, const at::Tensor& u, const at::Tensor* z,
                        const at::Tensor* cond, const at::Tensor& Wt, const at::Tensor& c,
                        const at::Tensor& V, const at::Tensor& b, const at::Tensor& x,
                        int64_t O, double ls_min, double ls_max) {
  const int64_t n = u.size(0), D = u.size(1), Hd = Wt.size(1);
  const int threads = sample_threads(std::max<int64_t>(Hd, O), Dev::max_threads());
  const size_t smem = nade_sample_smem(Hd, O, threads, sizeof(T));
  checks::check_smem(op, smem, Dev::max_smem_optin(),
                     sampling_kernels::sample_smem_hint("the hidden state a and h of one image")
                         .c_str());
  const at::Tensor bad = sampling_kernels::nonfinite_flag(u);
  Dev::launch(nade_sampling::nade_sample_kernel<T, kRnade>, n, 1, threads, smem,
              u.data_ptr<double>(), z ? z->data_ptr<double>() : nullptr,
              cond ? cond->data_ptr<int64_t>() : nullptr, Wt.data_ptr<T>(), c.data_ptr<T>(),
              V.data_ptr<T>(), b.data_ptr<T>(), kRnade ? nullptr : x.data_ptr<int64_t>(),
              kRnade ? x.data_ptr<T>() : nullptr, bad.data_ptr<int64_t>(), D,
              static_cast<int>(Hd), static_cast<int>(O), ls_min, ls_max);
  checks::check_logits_finite(bad.item<int64_t>());
}

template <typename Dev>
at::Tensor nade_sample(const at::Tensor& u_, const std::optional<at::Tensor>& cond_,
                       const at::Tensor& W, const at::Tensor& c_, const at::Tensor& V_,
                       const at::Tensor& b_) {
  const char* op = "pixelar::nade_sample";
  check_nade_sample_params<Dev>(op, u_, W, c_, V_, b_, 1);
  const int64_t n = u_.size(0), D = u_.size(1);
  if (cond_.has_value()) {
    const at::Device dev = u_.device();
    checks::check_tensor(op, "cond", *cond_, at::kLong, u_.sizes(), Dev::kDeviceType, &dev);
  }
  TORCH_CHECK(n <= INT32_MAX, op, ": at most 2^31 - 1 images per call, got ", n);
  const typename Dev::Guard guard(u_.device());
  const at::Tensor u = u_.contiguous(), c = c_.contiguous(), V = V_.contiguous(),
                   b = b_.contiguous(), Wt = W.t().contiguous();
  const at::Tensor cond = cond_.has_value() ? cond_->contiguous() : at::Tensor();
  at::Tensor x = at::empty({n, D}, u.options().dtype(at::kLong));
  if (n == 0 || D == 0) return x;
  AT_DISPATCH_FLOATING_TYPES(W.scalar_type(), "nade_sample_cuda", [&] {
    launch_nade_sample<Dev, scalar_t, false>(op, u, nullptr, cond.defined() ? &cond : nullptr,
                                             Wt, c, V, b, x, 1, 0.0, 0.0);
  });
  return x;
}

template <typename Dev>
at::Tensor rnade_sample(const at::Tensor& u_, const at::Tensor& z_, const at::Tensor& W,
                        const at::Tensor& c_, const at::Tensor& V_, const at::Tensor& b_,
                        double log_scale_min, double log_scale_max) {
  const char* op = "pixelar::rnade_sample";
  TORCH_CHECK(V_.dim() == 3 && V_.size(1) % 3 == 0, op, ": V must be (D, 3K, Hd), got ",
              shape_str(V_));
  const int64_t O = V_.size(1);
  check_nade_sample_params<Dev>(op, u_, W, c_, V_, b_, O);
  const int64_t n = u_.size(0), D = u_.size(1);
  const at::Device dev = u_.device();
  checks::check_tensor(op, "z", z_, at::kDouble, u_.sizes(), Dev::kDeviceType, &dev);
  TORCH_CHECK(n <= INT32_MAX, op, ": at most 2^31 - 1 vectors per call, got ", n);
  const typename Dev::Guard guard(u_.device());
  const at::Tensor u = u_.contiguous(), z = z_.contiguous(), c = c_.contiguous(),
                   V = V_.contiguous(), b = b_.contiguous(), Wt = W.t().contiguous();
  TORCH_CHECK(O > 0, op, ": V must have K >= 1 components (3K outputs), got 0");
  at::Tensor x = at::empty({n, D}, W.options());
  if (n == 0 || D == 0) return x;
  AT_DISPATCH_FLOATING_TYPES(W.scalar_type(), "rnade_sample_cuda", [&] {
    launch_nade_sample<Dev, scalar_t, true>(op, u, &z, nullptr, Wt, c, V, b, x, O,
                                            log_scale_min, log_scale_max);
  });
  return x;
}

}  // namespace cuda
}  // namespace pixelar

// The CUDA build registers the launchers for CudaDevice; the emulation tests
// (tests/cuda_emulation/) include this file with PIXELAR_CUDA_EMULATION defined and
// instantiate them for their host device policy instead.
#if !defined(PIXELAR_CUDA_EMULATION)
TORCH_LIBRARY_IMPL(pixelar, CUDA, m) {
  using pixelar::cuda::CudaDevice;
  m.impl("nade_sample", &pixelar::cuda::nade_sample<CudaDevice>);
  m.impl("rnade_sample", &pixelar::cuda::rnade_sample<CudaDevice>);
}
#endif
