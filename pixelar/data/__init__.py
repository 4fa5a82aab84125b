"""Datasets for pixelar, all offline: the embedded scikit-learn digits, and readers for the
files users already have (MNIST IDX, binarized MNIST .amat, CIFAR-10 python batches, a
folder of PNGs). Every loader returns an :class:`ImageSet` of int64 images (N, C, H, W).

    >>> from pixelar.data import load
    >>> test = load("digits28-binary", "test")       # embedded, nothing to download
    >>> test.images.shape, test.levels
    (torch.Size([359, 1, 28, 28]), 2)
    >>> train = load("mnist", "train", root="~/data/mnist")
"""

import os

import torch

from .binarize import FIXED_DRAW_SEED, bernoulli_binarize, binarize_mode
from .cifar import load_cifar10
from .digits import load_digits
from .errors import DataFileNotFoundError, DataFormatError
from .imageset import SPLITS, ImageSet
from .mnist import load_binarized_mnist, load_mnist, read_amat, read_idx, write_idx
from .png import image_grid, load_png_folder, save_grid

# name -> (loader(root, split), needs a data folder, description)
DATASETS = {
    "digits": (
        lambda root, split: load_digits("digits", split),
        False,
        "embedded scikit-learn digits, 1x8x8, 17 grey levels",
    ),
    "digits-binary": (
        lambda root, split: load_digits("digits-binary", split),
        False,
        "embedded digits, 1x8x8, binarized",
    ),
    "digits28-binary": (
        lambda root, split: load_digits("digits28-binary", split),
        False,
        "embedded digits upsampled to 1x28x28, binarized (MNIST-shaped)",
    ),
    "mnist": (load_mnist, True, "MNIST IDX files (.gz or raw), 1x28x28, 256 levels"),
    "binarized-mnist": (
        load_binarized_mnist,
        True,
        "binarized MNIST .amat files (fixed binarization), 1x28x28",
    ),
    "cifar10": (load_cifar10, True, "CIFAR-10 python batches, 3x32x32, 256 levels"),
    "png": (load_png_folder, True, "a folder of same-sized PNG images"),
}


def load(name: str, split: str = "train", root=None, binarize=False) -> ImageSet:
    """Load one split of a dataset.

    name: one of DATASETS ("digits", "digits-binary", "digits28-binary", "mnist",
        "binarized-mnist", "cifar10", "png")
    split: "train", "val" or "test" (fixed splits; see each loader)
    root: the folder holding the files (not needed for the embedded digits)
    binarize: False; True or "threshold": threshold at half the range (value >=
        (levels - 1) / 2), giving levels = 2; "dynamic": one fixed stochastic draw,
        Bernoulli(value / (levels - 1)) with seed FIXED_DRAW_SEED (the trainer draws the
        training images afresh each epoch instead)
    Returns an ImageSet: images (N, C, H, W) int64, labels (N,) int64 or None, levels.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    loader, _, _ = DATASETS[name]
    if root is not None:
        root = os.path.expanduser(os.fspath(root))
    mode = binarize_mode(binarize)
    data = loader(root, split)
    if mode == "dynamic" and data.levels != 2:
        g = torch.Generator().manual_seed(FIXED_DRAW_SEED)
        return ImageSet(
            bernoulli_binarize(data.images, data.levels, g),
            data.labels,
            2,
            data.name + "-stochastic",
            data.split,
        )
    return data.binarized() if mode == "threshold" else data


__all__ = [
    "DATASETS",
    "SPLITS",
    "ImageSet",
    "load",
    "load_digits",
    "load_mnist",
    "load_binarized_mnist",
    "load_cifar10",
    "load_png_folder",
    "read_idx",
    "write_idx",
    "read_amat",
    "image_grid",
    "save_grid",
    "DataFileNotFoundError",
    "DataFormatError",
]
