"""Bad input raises ValueError naming the argument, what was expected and what was given."""
import pytest
import torch

import pixelar
from pixelar.models import NADE, RNADE, IndependentPixels, MarkovPixels, PixelCNN, PixelRNN


@pytest.fixture
def model():
    return PixelRNN(image_shape=(1, 4, 5), levels=3, layer="row", num_layers=1, hidden=4)


@pytest.mark.parametrize("x,words", [
    (torch.zeros(2, 1, 4, 6, dtype=torch.long), ["x", "shape", "(B, 1, 4, 5)", "(2, 1, 4, 6)"]),
    (torch.zeros(1, 4, 5, dtype=torch.long), ["x", "dimensions"]),
    (torch.zeros(2, 1, 4, 5), ["x", "integer", "float32"]),
    (torch.full((2, 1, 4, 5), 3, dtype=torch.long), ["x", "[0, 3)", "[3, 3]"]),
    (torch.full((2, 1, 4, 5), -1, dtype=torch.long), ["x", "[-1, -1]"]),
    ([[0, 1]], ["x", "torch.Tensor"]),
])
def test_log_prob_rejects_bad_images(model, x, words):
    with pytest.raises(ValueError) as err:
        model.log_prob(x)
    for w in words:
        assert w in str(err.value), (w, str(err.value))


def test_uint8_is_accepted(model):
    x = torch.randint(0, 3, (2, 1, 4, 5), dtype=torch.uint8)
    with pixelar.ops.backend("reference"):
        assert torch.equal(model.log_prob(x), model.log_prob(x.long()))


def test_sample_rejects_bad_condition_and_n(model):
    with pytest.raises(ValueError, match="condition"):
        model.sample(2, condition=torch.zeros(3, 1, 4, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="condition"):
        model.sample(2, condition=torch.full((2, 1, 4, 5), 5, dtype=torch.long))
    with pytest.raises(ValueError, match="n must be"):
        model.sample(0)


@pytest.mark.parametrize("build,words", [
    (lambda: PixelRNN(image_shape=(1, 4, 4), layer="lstm"), ["layer", "'lstm'"]),
    (lambda: PixelCNN(image_shape=(1, 4), levels=2), ["image_shape"]),
    (lambda: IndependentPixels(image_shape=(1, 4, 4), levels=1), ["levels"]),
    (lambda: MarkovPixels(image_shape=(1, 28, 28), levels=256, order=3), ["order"]),
    (lambda: NADE(image_shape=(1, 4, 4), hidden=0), ["hidden"]),
])
def test_constructors_reject_bad_arguments(build, words):
    with pytest.raises(ValueError) as err:
        build()
    for w in words:
        assert w in str(err.value)


def test_rnade_rejects_bad_inputs():
    model = RNADE(num_inputs=3, hidden=4, components=2)
    for x, word in [(torch.zeros(2, 4), "(B, 3)"), (torch.zeros(2, 3, dtype=torch.long), "float"),
                    (torch.tensor([[0.0, float("nan"), 1.0]]), "NaN")]:
        with pytest.raises(ValueError, match="x") as err:
            model.log_prob(x)
        assert word in str(err.value)
