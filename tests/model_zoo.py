"""Small instances of every image model, for the model tests. Each factory takes
(image_shape, levels) and returns None where the model does not support those levels.
Also: every image of a tiny shape, and the frequency check of samples against exact
probabilities."""

import pytest
import torch

import pixelar
from pixelar.models import FVSBN, NADE, IndependentPixels, MarkovPixels, PixelCNN, PixelRNN


def _binary_only(cls, **kw):
    return lambda shape, levels: cls(image_shape=shape, **kw) if levels == 2 else None


FACTORIES = {
    "independent": lambda s, L: IndependentPixels(image_shape=s, levels=L),
    "markov1": lambda s, L: MarkovPixels(image_shape=s, levels=L, order=1),
    "markov2": lambda s, L: MarkovPixels(image_shape=s, levels=L, order=2),
    "fvsbn": _binary_only(FVSBN),
    "nade": _binary_only(NADE, hidden=7),
    "pixelcnn": lambda s, L: PixelCNN(
        image_shape=s, levels=L, num_layers=2, hidden=6, head_hidden=6
    ),
    "pixelrnn_row": lambda s, L: PixelRNN(
        image_shape=s, levels=L, layer="row", num_layers=2, hidden=6, head_hidden=6
    ),
    "pixelrnn_diagonal": lambda s, L: PixelRNN(
        image_shape=s, levels=L, layer="diagonal", num_layers=2, hidden=6, head_hidden=6
    ),
}


def make_model(name, image_shape, levels, seed=0):
    """The model in fp64 with every parameter randomised (so no test passes on a model
    that happens to be uniform), or None if it does not support ``levels``."""
    torch.manual_seed(seed)
    model = FACTORIES[name](image_shape, levels)
    if model is None:
        return None
    model = model.double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    return model.eval()


def model_or_skip(name, image_shape, levels, seed=0):
    """make_model, skipping the test where the model does not support ``levels``."""
    model = make_model(name, image_shape, levels, seed)
    if model is None:
        pytest.skip(f"{name} is binary only")
    return model


def all_images(image_shape, levels):
    """Every image of the given shape: (levels ** dims, C, H, W) int64."""
    C, H, W = image_shape
    D = C * H * W
    idx = torch.arange(levels**D)
    digits = torch.stack([(idx // levels**k) % levels for k in range(D)], dim=1)
    return digits.reshape(-1, C, H, W)


def exact_probabilities(model):
    """(levels ** D,) the model's probability of every image of its shape (reference
    backend), in the order of all_images."""
    with pixelar.ops.backend("reference"):
        return model.log_prob(all_images(model.image_shape, model.levels)).exp()


def worst_deviation(samples, exact, levels):
    """Largest |frequency - probability| over every image, in standard errors of a frequency
    of len(samples) draws. samples: (N, C, H, W) int64; exact: (levels ** D,) the
    probabilities of all_images(image_shape, levels), in its order."""
    N = samples.shape[0]
    digits = samples.reshape(N, -1)
    # all_images enumerates dimension k of the (C, H, W) layout with weight levels ** k
    index = (digits * levels ** torch.arange(digits.shape[1])).sum(1)
    freq = torch.bincount(index, minlength=len(exact)).double() / N
    se = (exact * (1 - exact) / N).sqrt()
    return ((freq - exact).abs() / (se + 1e-12)).max().item()


def pixel_step_inputs(name, image_shape, levels, dtype, seed=0, batch=3):
    """Inputs of pixel_network_sample_step: a packed model (layer, weights), a random state,
    a partially generated image x, uniforms u and a condition (70% of it -1: sampled)."""
    model = make_model(name, image_shape, levels).to(dtype)
    layer, weights = model.sampling_kind, model.sampling_weights()
    g = torch.Generator().manual_seed(seed)
    state = [
        torch.randn(s.shape, generator=g, dtype=dtype)
        for s in pixelar.ops.pixel_network_sample_state(layer, weights, batch, image_shape)
    ]
    x = torch.randint(0, levels, (batch, *image_shape), generator=g)
    u = torch.rand(x.shape, generator=g, dtype=torch.float64)
    cond = torch.randint(0, levels, x.shape, generator=g)
    cond[torch.rand(x.shape, generator=g) < 0.7] = -1
    return layer, weights, state, x, u, cond
