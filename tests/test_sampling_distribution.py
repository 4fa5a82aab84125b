"""Fast samples follow each model's exact distribution (frequency test on tiny images whose
every configuration is enumerated), and `condition` keeps every given entry."""

import pytest
import torch

from conftest import cpp_built
from model_zoo import exact_probabilities, make_model, worst_deviation

pytestmark = pytest.mark.skipif(not cpp_built(), reason="pixelar._C is not built")
N = 20000


@pytest.mark.parametrize(
    "name,image_shape,levels",
    [
        ("pixelrnn_diagonal", (1, 2, 2), 2),
        ("pixelrnn_row", (1, 2, 2), 2),
        ("pixelcnn", (1, 2, 2), 2),
        ("pixelrnn_diagonal", (3, 1, 1), 3),
        ("pixelcnn", (2, 1, 2), 3),
        ("nade", (1, 2, 2), 2),
    ],
)
def test_fast_samples_follow_exact_distribution(name, image_shape, levels):
    model = make_model(name, image_shape, levels)
    exact = exact_probabilities(model)
    samples = model.sample(N, fast=True, generator=torch.Generator().manual_seed(1))
    worst = worst_deviation(samples, exact, levels)
    print(f"{name} {image_shape} levels={levels}: worst deviation {worst:.2f} standard errors")
    assert worst < 5.0


@pytest.mark.parametrize(
    "name",
    ["pixelcnn", "pixelrnn_row", "pixelrnn_diagonal", "nade", "markov2", "fvsbn", "independent"],
)
def test_condition_keeps_given_entries(name):
    levels = 2 if name in ("nade", "fvsbn") else 3
    image_shape = (1, 4, 5) if levels == 2 else (3, 3, 4)
    model = make_model(name, image_shape, levels)
    g = torch.Generator().manual_seed(3)
    cond = torch.randint(0, levels, (5, *image_shape), generator=g)
    cond[torch.rand(cond.shape, generator=g) < 0.5] = -1
    cond[2] = -1  # one image fully sampled
    cond[3, :, :2] = 0  # the first two rows given
    out = model.sample(5, condition=cond, generator=torch.Generator().manual_seed(0))
    keep = cond >= 0
    assert torch.equal(out[keep], cond[keep])
    assert out.shape == cond.shape and ((out >= 0) & (out < levels)).all()
