"""Shared test setup: fixed seeds, fp64 by default where a test asks for it, and helpers."""

import os

import pytest
import torch

import pixelar

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _seed_and_backend():
    """Every test starts from the same seed and the default backend."""
    torch.manual_seed(0)
    previous = pixelar.ops.get_backend()
    yield
    pixelar.ops.set_backend(previous)


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread for a whole test module (use with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``): tiny models run fastest on one
    thread (thread hand-offs cost more than they save, above all on a busy machine)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def cpp_built() -> bool:
    return pixelar._extension.extension_loaded()


def report_diff(name, out, ref):
    """Print the max and mean absolute difference (shown with pytest -s or on failure)."""
    diff = (out.double() - ref.double()).abs()
    if diff.numel() == 0:
        print(f"{name}: empty, shape {tuple(diff.shape)}")
        return
    print(f"{name}: max diff {diff.max().item():.3e}, mean diff {diff.mean().item():.3e}")


# Tolerances per dtype for kernel-vs-reference comparisons.
TOL = {torch.float64: dict(rtol=1e-9, atol=1e-10), torch.float32: dict(rtol=3e-4, atol=1e-4)}
