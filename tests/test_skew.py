"""pixelar.ops.skew / unskew: vs the loop reference skew_ref, round trips, non-square maps."""

import pytest
import torch

from pixelar.ops import skew, skew_ref, unskew


@pytest.mark.parametrize("shape", [(1, 1), (4, 4), (3, 7), (7, 3), (2, 5, 6), (2, 3, 1, 5)])
def test_skew_matches_reference(shape):
    x = torch.randn(*shape)
    y = skew(x)
    R, W = shape[-2:]
    assert y.shape == (*shape[:-2], R, R + W - 1)
    torch.testing.assert_close(y, skew_ref(x), rtol=0, atol=0)


@pytest.mark.parametrize("shape", [(4, 4), (3, 7), (7, 3), (2, 5, 6), (2, 3, 1, 5)])
def test_unskew_inverts_skew(shape):
    x = torch.randn(*shape)
    assert torch.equal(unskew(skew(x), shape[-1]), x)


def test_skew_places_each_row():
    x = torch.arange(1, 13.0).view(3, 4)
    y = skew(x)
    for r in range(3):
        assert torch.equal(y[r, r : r + 4], x[r])
        assert (y[r, :r] == 0).all() and (y[r, r + 4 :] == 0).all()


def test_skew_gradient_round_trip():
    x = torch.randn(2, 3, 5, requires_grad=True)
    unskew(skew(x), 5).sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))


def test_unskew_rejects_wrong_width():
    with pytest.raises(ValueError, match="unskew"):
        unskew(torch.randn(3, 8), 5)


@pytest.mark.parametrize("width", [-1, 0, True, 2.0])
def test_unskew_refuses_a_width_that_is_not_positive(width):
    """W7: unskew(y, -1) returned a map of width 1."""
    y = torch.randn(3, 3)  # R = 3, S = 3: would match R + width - 1 for width = 1 only
    with pytest.raises(ValueError, match="width must be a positive int"):
        unskew(y, width)
