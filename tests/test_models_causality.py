"""Causality: changing one dimension never changes the conditionals of itself or of any
earlier dimension (raster order, then R -> G -> B); and the Diagonal BiLSTM sees every
earlier dimension (no blind spot)."""

import pytest
import torch

import pixelar
from pixelar.models.raster import to_sequence

from model_zoo import FACTORIES, make_model, model_or_skip

CASES = [((1, 5, 7), 2), ((3, 4, 5), 3)]
EXACT = 1e-12  # conditionals that must not move (fp64)
MOVED = 1e-9  # a change that counts as influence


def influence(model, x, i):
    """(D,) max change of each dimension's logits when dimension i of x changes."""
    levels = model.levels
    x2 = to_sequence(x).clone()
    x2[:, i] = (x2[:, i] + 1) % levels
    C, H, W = model.image_shape
    x2 = x2.reshape(x.shape[0], H, W, C).movedim(3, 1)
    with torch.no_grad():
        a, b = to_sequence(model(x)), to_sequence(model(x2))
    diff = (a - b).abs()
    return diff.reshape(diff.shape[0], diff.shape[1], -1).amax(dim=(0, 2))


@pytest.mark.parametrize("name", sorted(FACTORIES))
@pytest.mark.parametrize("image_shape,levels", CASES)
def test_no_dimension_sees_itself_or_later(name, image_shape, levels):
    model = model_or_skip(name, image_shape, levels)
    D = model.num_dims
    x = torch.randint(0, levels, (2, *image_shape))
    seen_later = 0.0
    with pixelar.ops.backend("reference"):
        for i in range(D):
            inf = influence(model, x, i)
            assert inf[: i + 1].max().item() < EXACT, (
                f"{name}: changing dim {i} moved the conditionals of dim "
                f"{int(inf[: i + 1].argmax())}"
            )
            if i + 1 < D:
                seen_later = max(seen_later, inf[i + 1 :].max().item())
    if name != "independent":
        assert seen_later > MOVED, f"{name}: no dimension depends on any other"


@pytest.mark.parametrize("image_shape,levels", [((1, 5, 7), 2), ((3, 3, 4), 3)])
def test_diagonal_bilstm_has_no_blind_spot(image_shape, levels):
    # a wide head, so that no output is cut off by ReLUs that happen to be dead
    torch.manual_seed(0)
    model = pixelar.models.PixelRNN(
        image_shape=image_shape,
        levels=levels,
        layer="diagonal",
        num_layers=2,
        hidden=6,
        head_hidden=48,
    ).double()
    assert blind_spots(model, image_shape, levels) == []


def blind_spots(model, image_shape, levels):
    """(j, i) pairs with j < i where changing dimension j leaves dimension i unmoved."""
    D = model.num_dims
    x = torch.randint(0, levels, (4, *image_shape))
    missing = []
    with pixelar.ops.backend("reference"):
        for j in range(D - 1):
            inf = influence(model, x, j)
            missing += [(j, i) for i in range(j + 1, D) if inf[i].item() <= MOVED]
    return missing


def test_blind_spot_test_catches_missing_right_to_left(monkeypatch):
    """The completeness test can fail: without the right-to-left direction, pixels above
    and to the right are not seen."""
    model = make_model("pixelrnn_diagonal", (1, 5, 7), 2)
    for block in model.blocks:
        monkeypatch.setattr(
            block.lstm.right_to_left,
            "forward",
            lambda x: torch.zeros(x.shape[0], block.lstm.hidden, *x.shape[2:], dtype=x.dtype),
        )
    assert blind_spots(model, (1, 5, 7), 2) != []


def test_causality_test_catches_unshifted_right_to_left(monkeypatch):
    """Without the one-row shift the right-to-left direction sees the future."""
    model = make_model("pixelrnn_diagonal", (1, 5, 7), 2)
    monkeypatch.setattr(pixelar.nn.diagonal_lstm, "shift_down", lambda x: x)
    x = torch.randint(0, 2, (1, 1, 5, 7))
    with pixelar.ops.backend("reference"):
        inf = influence(model, x, 10)
    assert inf[:11].max().item() > MOVED
