"""Every model is a normalized distribution: on tiny images, exp(log_prob) summed over
every possible image is 1 (fp64)."""

import pytest
import torch

import pixelar
from pixelar.models import RNADE

from model_zoo import FACTORIES, all_images, model_or_skip

CASES = [((1, 2, 3), 2), ((3, 1, 2), 3)]


@pytest.mark.parametrize("name", sorted(FACTORIES))
@pytest.mark.parametrize("image_shape,levels", CASES)
def test_probabilities_sum_to_one(name, image_shape, levels):
    model = model_or_skip(name, image_shape, levels)
    x = all_images(image_shape, levels)
    with pixelar.ops.backend("reference"), torch.no_grad():
        log_p = torch.cat([model.log_prob(chunk) for chunk in x.split(256)])
    total = torch.logsumexp(log_p, 0).exp().item()
    print(f"{name} {image_shape} levels={levels}: sum p = {total!r}")
    assert abs(total - 1.0) < 1e-9
    # and the distribution is not degenerate (the test could tell a wrong model apart)
    assert log_p.exp().max().item() < 0.99


def test_rnade_density_integrates_to_one():
    torch.manual_seed(0)
    model = RNADE(num_inputs=2, hidden=6, components=3).double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    grid = torch.linspace(-60, 60, 3001, dtype=torch.float64)  # wide: heavy components
    xx, yy = torch.meshgrid(grid, grid, indexing="ij")
    points = torch.stack([xx.flatten(), yy.flatten()], dim=1)
    with pixelar.ops.backend("reference"), torch.no_grad():
        density = model.log_prob(points).exp().reshape(len(grid), len(grid))
    integral = torch.trapezoid(torch.trapezoid(density, grid, dim=1), grid).item()
    print(f"RNADE integral = {integral!r}")
    assert abs(integral - 1.0) < 1e-6


def test_parameter_counts():
    n = 2 * 3 * 5
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(pixelar.models.IndependentPixels(image_shape=(2, 3, 5))) == n
    assert count(pixelar.models.MarkovPixels(image_shape=(2, 3, 5), order=1)) == 2 * n - 1
    assert count(pixelar.models.FVSBN(image_shape=(2, 3, 5))) == n + n * (n - 1) // 2
    # levels=3, order 2: 2 + 3*2 + (n-2)*9*2 free logits
    assert (
        count(pixelar.models.MarkovPixels(image_shape=(2, 3, 5), levels=3, order=2))
        == 2 + 6 + (n - 2) * 18
    )
