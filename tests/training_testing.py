"""Shared by the training tests: a tiny run configuration and the backend they use."""

import pytest
import torch

import pixelar
from pixelar.models import NADE
from pixelar.training import TrainConfig

BACKEND = "auto" if pixelar._extension.has_kernel("nade_forward", "CPU") else "reference"
QUIET = dict(progress=False, log=lambda *a, **k: None)


@pytest.fixture(autouse=True)
def training_backend():
    """Import into a test module to run its tests with BACKEND (autouse there)."""
    with pixelar.ops.backend(BACKEND):
        yield


# The same tiny run on the command line (add --epochs etc.): pixelar train *TINY_CLI ...
TINY_CLI = [
    "--model", "nade", "--model-arg", "hidden=6", "--data", "digits-binary",
    "--train-subset", "96", "--val-subset", "32", "--batch-size", "32",
]  # fmt: skip


def tiny(**kw):
    """A NADE on 96 binary 8x8 digits: 3 steps of 32 per epoch."""
    base = dict(
        model="NADE",
        model_args={"hidden": 6},
        data="digits-binary",
        epochs=2,
        batch_size=32,
        train_subset=96,
        val_subset=32,
        lr=1e-2,
        patience=None,
    )
    base.update(kw)
    return TrainConfig(**base)


def nade_and_adam(hidden=4):
    """A tiny NADE (1x3x3) and its Adam after two steps: weights and optimizer state set."""
    torch.manual_seed(0)
    model = NADE(image_shape=(1, 3, 3), hidden=hidden)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    x = torch.randint(0, 2, (8, 1, 3, 3))
    for _ in range(2):
        opt.zero_grad()
        (-model.log_prob(x).mean()).backward()
        opt.step()
    return model, opt
