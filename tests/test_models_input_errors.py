"""Bad input raises ValueError naming the argument, what was expected and what was given."""

import pytest
import torch

import pixelar
from pixelar.models import FVSBN, NADE, RNADE, IndependentPixels, MarkovPixels, PixelCNN, PixelRNN


@pytest.fixture
def model():
    return PixelRNN(image_shape=(1, 4, 5), levels=3, layer="row", num_layers=1, hidden=4)


@pytest.mark.parametrize(
    "x,words",
    [
        (torch.zeros(2, 1, 4, 6, dtype=torch.long), ["x", "shape", "(B, 1, 4, 5)", "(2, 1, 4, 6)"]),
        (torch.zeros(1, 4, 5, dtype=torch.long), ["x", "dimensions"]),
        (torch.zeros(2, 1, 4, 5), ["x", "integer", "float32"]),
        (torch.full((2, 1, 4, 5), 3, dtype=torch.long), ["x", "[0, 3)", "[3, 3]"]),
        (torch.full((2, 1, 4, 5), -1, dtype=torch.long), ["x", "[-1, -1]"]),
        ([[0, 1]], ["x", "torch.Tensor"]),
    ],
)
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


@pytest.mark.parametrize(
    "build,words",
    [
        (lambda: PixelRNN(image_shape=(1, 4, 4), layer="lstm"), ["layer", "'lstm'"]),
        (lambda: PixelCNN(image_shape=(1, 4), levels=2), ["image_shape"]),
        (lambda: IndependentPixels(image_shape=(1, 4, 4), levels=1), ["levels"]),
        (lambda: MarkovPixels(image_shape=(1, 28, 28), levels=256, order=3), ["order"]),
        (lambda: NADE(image_shape=(1, 4, 4), hidden=0), ["hidden"]),
    ],
)
def test_constructors_reject_bad_arguments(build, words):
    with pytest.raises(ValueError) as err:
        build()
    for w in words:
        assert w in str(err.value)


def test_rnade_rejects_bad_inputs():
    model = RNADE(num_inputs=3, hidden=4, components=2)
    for x, word in [
        (torch.zeros(2, 4), "(B, 3)"),
        (torch.zeros(2, 3, dtype=torch.long), "float"),
        (torch.tensor([[0.0, float("nan"), 1.0]]), "NaN"),
    ]:
        with pytest.raises(ValueError, match="x") as err:
            model.log_prob(x)
        assert word in str(err.value)


# ---------------------------------------------------------------- model(x) checks as log_prob


@pytest.mark.parametrize(
    "build,x,words",
    [
        (
            lambda: PixelRNN(image_shape=(1, 4, 5), levels=3, layer="row", num_layers=1, hidden=4),
            torch.full((2, 1, 4, 5), 7, dtype=torch.long),
            ["x", "[0, 3)", "[7, 7]"],
        ),
        (
            lambda: MarkovPixels(image_shape=(1, 3, 3), levels=2, order=2),
            torch.full((2, 1, 3, 3), 2, dtype=torch.long),
            ["x", "[0, 2)"],
        ),
        (
            lambda: MarkovPixels(image_shape=(1, 3, 3), levels=3, order=1),
            torch.full((2, 1, 3, 3), -1, dtype=torch.long),
            ["x", "[-1, -1]"],
        ),
        (
            lambda: NADE(image_shape=(1, 3, 3), hidden=4),
            torch.rand(2, 1, 3, 3),
            ["x", "integer", "float32"],
        ),
        (
            lambda: FVSBN(image_shape=(1, 3, 3)),
            torch.zeros(2, 1, 3, 4, dtype=torch.long),
            ["x", "(B, 1, 3, 3)"],
        ),
        (
            lambda: IndependentPixels(image_shape=(1, 3, 3), levels=4),
            torch.full((2, 1, 3, 3), 4, dtype=torch.long),
            ["x", "[0, 4)"],
        ),
        (
            lambda: PixelCNN(image_shape=(1, 3, 3), levels=2, num_layers=1, hidden=2),
            torch.full((1, 1, 3, 3), 2, dtype=torch.long),
            ["x", "[0, 2)"],
        ),
    ],
)
def test_forward_checks_its_input_as_log_prob_does(build, x, words):
    """W6: model(x) accepted the value 7 (PixelRNN), read another dimension's table entry or
    wrapped negative values (MarkovPixels) and took floats (NADE)."""
    model = build()
    with pytest.raises(ValueError) as err:
        model(x)
    for w in words:
        assert w in str(err.value), (w, str(err.value))


@pytest.mark.parametrize(
    "build,words",
    [
        (lambda: PixelRNN(image_shape=(True, 6, 5)), ["image_shape", "True"]),
        (lambda: PixelCNN(image_shape=(1, 6, 5), levels=True), ["levels", "True"]),
        (lambda: NADE(image_shape=(1, 4, 4), hidden=True), ["hidden", "True"]),
        (lambda: PixelCNN(image_shape=(1, 4, 4), hidden=True), ["hidden", "True"]),
        (lambda: RNADE(num_inputs=2, components=True), ["components", "True"]),
        (lambda: MarkovPixels(image_shape=(1, 4, 4), order=True), ["order", "True"]),
        (lambda: FVSBN(image_shape=[1, 4.0, 4]), ["image_shape"]),
    ],
)
def test_constructors_refuse_bools_as_ints(build, words):
    """W6 / U8: bools are ints in Python; PixelRNN(image_shape=(True, 6, 5)) was accepted
    and NADE(hidden=True) gave a torch TypeError."""
    with pytest.raises(ValueError) as err:
        build()
    for w in words:
        assert w in str(err.value), (w, str(err.value))


@pytest.mark.parametrize(
    "build,words",
    [
        (lambda: FVSBN((1, 512, 512)), ["FVSBN", "image_shape=(1, 512, 512)", "GiB"]),
        (lambda: NADE((1, 28, 28), hidden=10**9), ["NADE", "hidden=1000000000", "GiB"]),
        (lambda: PixelCNN((1, 28, 28), hidden=10**6), ["PixelCNN", "hidden=1000000", "GiB"]),
        (lambda: PixelRNN((3, 8, 8), levels=256, head_hidden=10**9), ["PixelRNN", "GiB"]),
        (lambda: IndependentPixels((3, 32, 32), levels=10**9), ["levels=1000000000", "GiB"]),
        (lambda: RNADE(num_inputs=10, hidden=10**9), ["RNADE", "hidden=1000000000", "GiB"]),
    ],
)
def test_absurd_sizes_are_refused_before_allocating(build, words, monkeypatch):
    """U8: FVSBN((1, 512, 512)) or hidden=10**9 reached the allocator ('tried to allocate
    549753716736 bytes'); now a ValueError naming the arguments and the memory needed."""
    monkeypatch.setattr(pixelar.models.base, "memory_limit", lambda: 64 * 2**30)
    with pytest.raises(ValueError) as err:
        build()
    for w in words:
        assert w in str(err.value), (w, str(err.value))
    assert "more than this machine's memory" in str(err.value)


@pytest.mark.parametrize(
    "call,words",
    [
        (lambda m: m.sample(True), ["n must be a positive int", "True"]),
        (lambda m: m.sample(2.0), ["n must be a positive int", "2.0"]),
        (lambda m: m.sample(2, fast="yes"), ["fast", "'yes'"]),
        (lambda m: m.sample(2, generator=3), ["generator", "int"]),
        (
            lambda m: m.sample(
                2, condition=torch.zeros(2, 1, 4, 5, dtype=torch.long, device="meta")
            ),
            ["condition", "meta"],
        ),
        (
            lambda m: m.log_prob(torch.zeros(2, 1, 4, 5, dtype=torch.long, device="meta")),
            ["x", "meta"],
        ),
    ],
)
def test_sample_arguments_are_checked(model, call, words):
    """U8: sample(True) and meta-device conditions gave torch internals."""
    with pytest.raises(ValueError) as err:
        call(model)
    for w in words:
        assert w in str(err.value), (w, str(err.value))


def test_rnade_sample_and_meta_inputs():
    model = RNADE(num_inputs=3, hidden=4, components=2)
    with pytest.raises(ValueError, match="n must be a positive int, got True"):
        model.sample(True)
    with pytest.raises(ValueError, match="meta"):
        model.log_prob(torch.zeros(2, 3, device="meta"))


def test_sample_sizes_beyond_memory_are_refused(model, monkeypatch):
    """U8: sample(10**12) reached the allocator; now a ValueError with the memory needed."""
    monkeypatch.setattr(pixelar.models.base, "memory_limit", lambda: 64 * 2**30)
    with pytest.raises(
        ValueError, match=r"n=1,000,000,000,000 samples of 20 dimensions need .* GiB"
    ):
        model.sample(10**12)
    with pytest.raises(ValueError, match="GiB"):
        RNADE(num_inputs=3).sample(10**13)


@pytest.mark.parametrize("levels", [2, 3])
def test_bernoulli_is_derived_from_levels(levels):
    """``bernoulli`` is levels == 2 on every image model: no separate flag that could
    disagree with ``levels`` (and so with the shape of the logits)."""
    from model_zoo import FACTORIES

    for name, factory in FACTORIES.items():
        model = factory((1, 2, 2), levels)
        if model is None:
            continue
        assert model.bernoulli == (levels == 2), name
        x = torch.zeros(1, 1, 2, 2, dtype=torch.long)
        assert model(x).dim() == (4 if levels == 2 else 5), name
        with pytest.raises(AttributeError):
            model.bernoulli = levels != 2


def test_models_lists_the_image_models():
    """MODELS (what `pixelar train` fits and checkpoints load) holds the image models, each an
    AutoregressiveModel; RNADE, a model of vectors, stays importable beside them."""
    assert set(pixelar.models.MODELS) == {
        "IndependentPixels",
        "MarkovPixels",
        "FVSBN",
        "NADE",
        "PixelCNN",
        "PixelRNN",
    }
    assert all(
        issubclass(cls, pixelar.models.AutoregressiveModel)
        for cls in pixelar.models.MODELS.values()
    )
    assert pixelar.models.RNADE is RNADE and "RNADE" in pixelar.models.__all__
