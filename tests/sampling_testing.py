"""Helpers of the sampling-op tests (tests/test_pixel_network_sample.py,
tests/test_nade_sample.py): the CUDA-kernel comparisons (GPU only).

Same inputs on both devices. The draws use the same helpers (pixelar/sampling_math.h,
float64 inverse CDF) and the models' values differ only by the rounding of differently
ordered sums, so float64 samples are equal; in float32 a value can differ only where a
uniform falls within float rounding of a threshold (rare: a small fraction is allowed),
and the caches are compared where the images agree."""

import pytest
import torch

import pixelar

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def require_cuda_kernel(op):
    if not pixelar._extension.has_kernel(op, "CUDA"):
        pytest.skip(f"pixelar was built without CUDA kernels (no CUDA kernel for {op})")


def assert_samples_agree(out, ref, dtype, what):
    assert out.dtype == ref.dtype and out.shape == ref.shape
    differ = (out.cpu() != ref).sum().item()
    if dtype == torch.float64:
        assert differ == 0, f"{what}: {differ} of {ref.numel()} values differ"
    else:
        assert differ <= max(1, ref.numel() // 50), f"{what}: {differ} of {ref.numel()} differ"
    return differ == 0
