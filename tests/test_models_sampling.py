"""Naive sampling follows each model's exact distribution, honours `condition`, and draws
its randomness in the documented fixed order."""

import pytest
import torch

import pixelar

from model_zoo import exact_probabilities, make_model, worst_deviation

SHAPE = (1, 2, 2)
N = 20000


@pytest.mark.parametrize(
    "name,image_shape,levels",
    [
        ("pixelrnn_diagonal", (1, 2, 2), 2),
        ("nade", (1, 2, 2), 2),
        ("markov2", (2, 1, 2), 3),
    ],
)
def test_naive_samples_follow_exact_distribution(name, image_shape, levels):
    model = make_model(name, image_shape, levels)
    exact = exact_probabilities(model)
    with pixelar.ops.backend("reference"):
        samples = model.sample(N, fast=False, generator=torch.Generator().manual_seed(1))
    worst = worst_deviation(samples, exact, levels)
    print(f"{name}: worst deviation {worst:.2f} standard errors")
    # 5 standard errors per cell (fixed seed, so this is deterministic)
    assert worst < 5.0


def test_condition_keeps_given_entries_and_samples_the_rest():
    model = make_model("pixelrnn_row", (1, 3, 4), 2)
    cond = torch.full((3, 1, 3, 4), -1, dtype=torch.long)
    cond[:, :, 0, :] = torch.tensor([1, 0, 1, 1])
    cond[1, 0, 2, 3] = 0
    with pixelar.ops.backend("reference"):
        out = model.sample(
            3, fast=False, condition=cond, generator=torch.Generator().manual_seed(0)
        )
    keep = cond >= 0
    assert torch.equal(out[keep], cond[keep])
    assert out.dtype == torch.int64 and out.shape == (3, 1, 3, 4)
    assert ((out >= 0) & (out < 2)).all()


def test_same_seed_same_samples_and_uniform_order():
    model = make_model("markov1", (1, 2, 3), 2)
    a = model.sample(5, fast=False, generator=torch.Generator().manual_seed(3))
    b = model.sample(5, fast=False, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    # the documented order: one float64 uniform per dimension, drawn first
    u = torch.rand((5, 1, 2, 3), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    with torch.no_grad():
        logits = model(a)
    expected = (u < torch.sigmoid(logits)).long()
    assert torch.equal(a, expected)


def test_draw_categorical_inverse_cdf():
    from pixelar.ops.draw import draw_categorical

    logits = torch.log(torch.tensor([[0.2, 0.5, 0.3]], dtype=torch.float64)).expand(5, 3)
    u = torch.tensor([0.0, 0.19, 0.21, 0.69, 0.71], dtype=torch.float64)
    assert draw_categorical(logits, u).tolist() == [0, 0, 1, 1, 2]


@pytest.mark.parametrize("fast", [False, True])
def test_sampling_runs_in_eval_mode_and_restores_the_mode(fast):
    """sample() runs every submodule in eval mode and leaves the model's mode as it found it:
    training stays training, eval stays eval, and a submodule left in training mode under an
    eval model is switched for sampling (then the whole model back to eval, as train(False))."""
    model = make_model("pixelrnn_row", (1, 3, 4), 2)
    seen = []
    for m in model.modules():
        m.register_forward_pre_hook(lambda mod, args: seen.append(mod.training))
    g = torch.Generator().manual_seed(0)
    for start in ("train", "eval", "mixed"):
        model.train(start == "train")
        if start == "mixed":
            next(m for m in model.modules() if m is not model).train()
        seen.clear()
        model.sample(2, fast=fast, generator=g)
        assert not any(seen) and (fast or seen), start  # every forward ran in eval mode
        assert all(m.training == (start == "train") for m in model.modules()), start
