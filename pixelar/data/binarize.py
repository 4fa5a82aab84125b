"""The fixed stochastic binarization of MNIST (Larochelle & Murray 2011), as used by the
PixelRNN paper's binarized-MNIST table, and dynamic binarization for training.

Fixed: every pixel is drawn once from Bernoulli(intensity / 255) with a seeded generator;
the 60,000 training images split into 50,000 train and 10,000 valid (the last 10,000),
plus the 10,000 test images, written as ``binarized_mnist_{train,valid,test}.amat``.
"""

import os

import numpy as np
import torch

AMAT_NAMES = {
    "train": "binarized_mnist_train.amat",
    "val": "binarized_mnist_valid.amat",
    "test": "binarized_mnist_test.amat",
}
NUM_VALID = 10_000


def stochastic_binarize(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """images: (N, ...) integers in [0, 255] -> (N, ...) int64 in {0, 1}, each value drawn
    from Bernoulli(images / 255). The uniforms are drawn in float64, one per value, in the
    tensor's C order, so the result depends only on the generator's state."""
    u = torch.rand(images.shape, generator=generator, dtype=torch.float64)
    return (u * 255.0 < images.to(torch.float64)).to(torch.int64)


def binarize_mnist_splits(train_images: np.ndarray, test_images: np.ndarray, seed: int = 0):
    """train_images: (60000, 784) uint8, test_images: (10000, 784) uint8 (any N works) ->
    {"train": (N_train - 10000, 784), "val": (10000, 784), "test": (N_test, 784)} uint8.

    One generator seeded with ``seed`` draws the training images first, then the test images.
    """
    g = torch.Generator().manual_seed(int(seed))
    train = stochastic_binarize(torch.from_numpy(np.asarray(train_images)), g).numpy()
    test = stochastic_binarize(torch.from_numpy(np.asarray(test_images)), g).numpy()
    train = train.astype(np.uint8)
    test = test.astype(np.uint8)
    if len(train) <= NUM_VALID:
        raise ValueError(
            f"need more than {NUM_VALID} training images to hold out the "
            f"last {NUM_VALID} for validation, got {len(train)}"
        )
    return {"train": train[:-NUM_VALID], "val": train[-NUM_VALID:], "test": test}


def write_amat(path, binary: np.ndarray) -> None:
    """binary: (N, D) values 0/1 -> an .amat text file (one image a line, values separated by
    spaces), written to ``path + '.tmp'`` then renamed into place."""
    binary = np.asarray(binary)
    lines = np.where(binary.reshape(len(binary), -1) > 0, b"1", b"0")
    tmp = os.fspath(path) + ".tmp"
    with open(tmp, "wb") as f:
        for row in lines:
            f.write(b" ".join(row.tolist()) + b"\n")
    os.replace(tmp, path)


# ---------------------------------------------------------------------------- modes

BINARIZE_MODES = ("threshold", "dynamic")


def binarize_mode(value):
    """Normalise a ``binarize`` setting: False/None/"none" -> None; True/"threshold" ->
    "threshold" (older checkpoints store a bool); "dynamic" -> "dynamic"."""
    if value is None or value is False or value == "none":
        return None
    if value is True or value == "threshold":
        return "threshold"
    if value == "dynamic":
        return "dynamic"
    raise ValueError(f"binarize must be one of False, 'threshold', 'dynamic', got {value!r}")


def bernoulli_binarize(images: torch.Tensor, levels: int, generator: torch.Generator):
    """images: (N, ...) integers in [0, levels) -> (N, ...) int64 in {0, 1}, each value
    drawn from Bernoulli(images / (levels - 1)); for levels = 256 the same draws as
    ``stochastic_binarize`` (float64 uniforms, C order)."""
    u = torch.rand(images.shape, generator=generator, dtype=torch.float64)
    return (u * float(levels - 1) < images.to(torch.float64)).to(torch.int64)


def dynamic_generator(seed: int, epoch: int, step: int) -> torch.Generator:
    """The generator of the dynamic binarization of training batch ``step`` of ``epoch``:
    a function of (seed, epoch, step) only, so a resumed run draws the same pixels."""
    key = (int(seed) * 1_000_003 + int(epoch)) * 1_000_003 + int(step) + 1
    return torch.Generator().manual_seed(key % (1 << 63))


FIXED_DRAW_SEED = 0  # the seed of the one fixed draw of a non-training split ("dynamic")
