"""Fast (cached) sampling returns exactly the images of naive sampling: same generator
seed, fp64 models, binary and 3-channel levels=4 images, non-square shapes, with and
without a condition; for the compiled kernels (C++; CUDA when a GPU is present) and for
the PyTorch cached samplers."""

import pytest
import torch

import pixelar
from pixelar.models import RNADE

from conftest import cpp_built
from model_zoo import FACTORIES, make_model, model_or_skip

CASES = [((1, 3, 4), 2), ((3, 2, 3), 4), ((1, 4, 2), 2)]
N = 4


def condition_for(image_shape, levels, seed=5):
    """(N, C, H, W): about a third of the entries given, the rest -1; one dimension given
    for every image (so the naive sampler's skip of fully given dimensions is exercised)."""
    g = torch.Generator().manual_seed(seed)
    cond = torch.randint(0, levels, (N, *image_shape), generator=g)
    cond[torch.rand(cond.shape, generator=g) < 0.67] = -1
    cond[:, 0, 0, 1] = 1
    return cond


def naive_and_fast(model, cond, fast_backend):
    with pixelar.ops.backend("reference"):
        naive = model.sample(
            N, fast=False, condition=cond, generator=torch.Generator().manual_seed(11)
        )
    with pixelar.ops.backend(fast_backend):
        fast = model.sample(
            N, fast=True, condition=cond, generator=torch.Generator().manual_seed(11)
        )
    return naive, fast


@pytest.mark.parametrize("name", sorted(FACTORIES))
@pytest.mark.parametrize("image_shape,levels", CASES)
@pytest.mark.parametrize("with_condition", [False, True])
def test_fast_equals_naive(name, image_shape, levels, with_condition):
    if not cpp_built():
        pytest.skip("pixelar._C is not built")
    model = model_or_skip(name, image_shape, levels)
    cond = condition_for(image_shape, levels) if with_condition else None
    naive, fast = naive_and_fast(model, cond, "auto")
    assert fast.dtype == torch.int64 and fast.shape == (N, *image_shape)
    assert torch.equal(naive, fast), f"{name}: {(naive != fast).sum().item()} values differ"
    assert len({tuple(x.flatten().tolist()) for x in fast}) > 1  # not a degenerate model


@pytest.mark.parametrize("name", ["pixelcnn", "pixelrnn_row", "pixelrnn_diagonal", "nade"])
def test_pytorch_cached_sampler_equals_naive(name):
    # the reference backend runs the cached samplers written in PyTorch (<op>_ref)
    image_shape, levels = ((1, 3, 4), 2) if name == "nade" else ((3, 2, 3), 4)
    model = make_model(name, image_shape, levels)
    naive, fast = naive_and_fast(model, condition_for(image_shape, levels), "reference")
    assert torch.equal(naive, fast)


@pytest.mark.parametrize("backend", ["auto", "reference"])
def test_rnade_fast_equals_naive(backend):
    if backend == "auto" and not cpp_built():
        pytest.skip("pixelar._C is not built")
    torch.manual_seed(0)
    model = RNADE(num_inputs=7, hidden=9, components=3).double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    with pixelar.ops.backend("reference"):
        naive = model.sample(6, fast=False, generator=torch.Generator().manual_seed(2))
    with pixelar.ops.backend(backend):
        fast = model.sample(6, fast=True, generator=torch.Generator().manual_seed(2))
    diff = (naive - fast).abs().max().item()
    print(f"RNADE fast vs naive ({backend}): max diff {diff:.3e}")
    assert fast.dtype == torch.float64 and fast.shape == (6, 7)
    # continuous values: equal up to the rounding of differently ordered sums
    torch.testing.assert_close(fast, naive, rtol=1e-10, atol=1e-10)


def test_fp32_fast_sampler_runs_and_matches_naive():
    if not cpp_built():
        pytest.skip("pixelar._C is not built")
    model = make_model("pixelrnn_diagonal", (3, 3, 2), 4).float()
    naive, fast = naive_and_fast(model, None, "auto")
    # fp32: identical unless a uniform falls within float rounding of a threshold
    assert (naive != fast).float().mean().item() < 0.05


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", ["pixelcnn", "pixelrnn_row", "pixelrnn_diagonal", "nade"])
@pytest.mark.parametrize("with_condition", [False, True])
def test_cuda_model_fast_equals_naive(name, with_condition):
    """model.sample() of a CUDA model: the fast sampler (backend "auto": the CUDA sampling
    kernels) returns the images of the naive sampler (PyTorch on the GPU), fp64."""
    op = "nade_sample" if name == "nade" else "pixel_network_sample_step"
    if not pixelar._extension.has_kernel(op, "CUDA"):
        pytest.skip("pixelar was built without CUDA kernels")
    image_shape, levels = ((1, 3, 4), 2) if name == "nade" else ((3, 2, 3), 4)
    model = make_model(name, image_shape, levels).cuda()
    cond = condition_for(image_shape, levels).cuda() if with_condition else None

    def sample(fast, backend):
        with pixelar.ops.backend(backend):
            return model.sample(
                N,
                fast=fast,
                condition=cond,
                generator=torch.Generator(device="cuda").manual_seed(11),
            )

    naive, fast = sample(False, "reference"), sample(True, "auto")
    assert fast.is_cuda and fast.dtype == torch.int64 and fast.shape == (N, *image_shape)
    assert torch.equal(naive, fast), f"{name}: {(naive != fast).sum().item()} values differ"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_rnade_fast_equals_naive():
    if not pixelar._extension.has_kernel("rnade_sample", "CUDA"):
        pytest.skip("pixelar was built without CUDA kernels")
    torch.manual_seed(0)
    model = RNADE(num_inputs=7, hidden=9, components=3).double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    model = model.cuda()
    with pixelar.ops.backend("reference"):
        naive = model.sample(6, fast=False, generator=torch.Generator("cuda").manual_seed(2))
    with pixelar.ops.backend("auto"):
        fast = model.sample(6, fast=True, generator=torch.Generator("cuda").manual_seed(2))
    assert fast.is_cuda and fast.dtype == torch.float64
    torch.testing.assert_close(fast, naive, rtol=1e-10, atol=1e-10)
