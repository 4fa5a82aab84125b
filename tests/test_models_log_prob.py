"""bernoulli_log_prob (pixelar/models/base.py) against torch's binary cross-entropy, its
analytic backward by gradcheck, and every model's log_prob against log_prob_from_logits of
its own forward. Tolerances: float64 1e-12, float32 1e-5 relative (sums of 10^2-10^3 terms)."""

import pytest
import torch
import torch.nn.functional as F

from pixelar.models import NADE, log_prob_from_logits
from pixelar.models.base import bernoulli_log_prob

from model_zoo import FACTORIES, make_model


def bce_log_prob(logits, x):
    ll = -F.binary_cross_entropy_with_logits(logits, x.to(logits.dtype), reduction="none")
    return ll.flatten(1).sum(dim=1)


TOL = {torch.float64: dict(rtol=1e-12, atol=1e-12), torch.float32: dict(rtol=1e-5, atol=1e-4)}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(3, 1, 5, 7), (2, 11), (1, 3, 2, 3)])
def test_matches_binary_cross_entropy(dtype, shape):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(shape, generator=g, dtype=dtype) * 6
    logits.view(-1)[:4] = torch.tensor([80.0, -80.0, 700.0, -700.0], dtype=dtype)  # far tails
    x = torch.randint(0, 2, shape, generator=g)
    out = bernoulli_log_prob(logits, x)
    assert out.shape == (shape[0],) and out.dtype == dtype
    torch.testing.assert_close(out, bce_log_prob(logits, x), **TOL[dtype])


def test_non_contiguous_inputs():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(5, 9, 4, generator=g, dtype=torch.float64).transpose(1, 2)
    x = torch.randint(0, 2, (5, 9, 4), generator=g).transpose(1, 2)
    assert not logits.is_contiguous()
    torch.testing.assert_close(bernoulli_log_prob(logits, x), bce_log_prob(logits, x))


def test_gradients_by_gradcheck():
    g = torch.Generator().manual_seed(2)
    logits = (torch.randn(3, 2, 4, generator=g, dtype=torch.float64) * 3).requires_grad_()
    x = torch.randint(0, 2, (3, 2, 4), generator=g).double().requires_grad_()
    assert torch.autograd.gradcheck(bernoulli_log_prob, (logits, x))


def test_gradient_matches_binary_cross_entropy():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(4, 1, 3, 5, generator=g).requires_grad_()
    x = torch.randint(0, 2, (4, 1, 3, 5), generator=g)
    w = torch.randn(4, generator=g)
    (ours,) = torch.autograd.grad((bernoulli_log_prob(logits, x) * w).sum(), logits)
    (theirs,) = torch.autograd.grad((bce_log_prob(logits, x) * w).sum(), logits)
    torch.testing.assert_close(ours, theirs)


def test_torch_func_transforms_and_double_backward():
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(3, 5, 2, generator=g, dtype=torch.float64)
    x = torch.randint(0, 2, (3, 5, 2), generator=g).double()
    # vmap over an extra leading dimension, against a loop
    batched = torch.func.vmap(bernoulli_log_prob)(logits, x)
    looped = torch.stack([bernoulli_log_prob(lo, xo) for lo, xo in zip(logits, x)])
    torch.testing.assert_close(batched, looped)
    # torch.func.grad, against the cross-entropy's
    ours = torch.func.grad(lambda lo: bernoulli_log_prob(lo, x).sum())(logits)
    theirs = torch.func.grad(lambda lo: bce_log_prob(lo, x).sum())(logits)
    torch.testing.assert_close(ours, theirs)
    # second derivatives by gradgradcheck
    lo = logits.clone().requires_grad_()
    assert torch.autograd.gradgradcheck(lambda t: bernoulli_log_prob(t, x), (lo,))


@pytest.mark.parametrize("name", sorted(FACTORIES))
@pytest.mark.parametrize("levels", [2, 3])
def test_log_prob_is_the_likelihood_of_the_forward(name, levels):
    """Models that override log_prob (NADE: on the op's (B, D) layout) give the generic
    answer log_prob_from_logits(model(x), x), and the same gradients."""
    model = make_model(name, (1, 3, 4), levels)
    if model is None:
        pytest.skip(f"{name} is binary only")
    x = torch.randint(0, levels, (3, 1, 3, 4), generator=torch.Generator().manual_seed(0))
    ours = model.log_prob(x)
    generic = log_prob_from_logits(model(x), x)
    torch.testing.assert_close(ours, generic, rtol=1e-12, atol=1e-12)
    params = [p for p in model.parameters() if p.requires_grad]
    g_ours = torch.autograd.grad(ours.sum(), params)
    g_generic = torch.autograd.grad(generic.sum(), params)
    for a, b in zip(g_ours, g_generic):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_nade_log_prob_float32():
    torch.manual_seed(0)
    model = NADE(image_shape=(1, 5, 6), hidden=7)
    x = torch.randint(0, 2, (4, 1, 5, 6))
    torch.testing.assert_close(model.log_prob(x), bce_log_prob(model(x), x), rtol=1e-5, atol=1e-4)
