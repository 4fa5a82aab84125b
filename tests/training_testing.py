"""Shared by the training tests: a tiny run configuration and the backend they use."""
import pytest

import pixelar
from pixelar.training import TrainConfig

BACKEND = "auto" if pixelar._extension.has_kernel("nade_forward", "CPU") else "reference"
QUIET = dict(progress=False, log=lambda *a, **k: None)


@pytest.fixture(autouse=True)
def training_backend():
    """Import into a test module to run its tests with BACKEND (autouse there)."""
    with pixelar.ops.backend(BACKEND):
        yield


def tiny(**kw):
    """A NADE on 96 binary 8x8 digits: 3 steps of 32 per epoch."""
    base = dict(model="NADE", model_args={"hidden": 6}, data="digits-binary", epochs=2,
                batch_size=32, train_subset=96, val_subset=32, lr=1e-2, patience=None)
    base.update(kw)
    return TrainConfig(**base)
