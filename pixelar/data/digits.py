"""The embedded default data: scikit-learn's handwritten digits (1,797 8x8 images with
values 0..16, shipped inside the scikit-learn wheel, so nothing is downloaded).

    digits           (1, 8, 8),   17 levels (the original values)
    digits-binary    (1, 8, 8),   2 levels  (value >= 8)
    digits28-binary  (1, 28, 28), 2 levels  (bilinear upsampling of value / 16 to 28x28,
                                             then >= 0.5): MNIST-shaped, so the paper's
                                             MNIST configurations run unchanged

Splits are fixed: a seeded permutation (numpy RandomState(0)) cut into 70% train
(1,258 images), 10% validation (180) and 20% test (359). Labels are the digit classes.
"""

import functools

import numpy as np
import torch
import torch.nn.functional as F

from .imageset import ImageSet, check_split, make_imageset, seeded_split

FRACTIONS = (0.7, 0.1, 0.2)
SEED = 0
NAMES = ("digits", "digits-binary", "digits28-binary")


@functools.lru_cache(maxsize=1)
def _raw():
    """(1797, 1, 8, 8) uint8 values 0..16 and (1797,) labels, read from scikit-learn."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = bunch.images.astype(np.uint8).reshape(-1, 1, 8, 8)
    return images, bunch.target.astype(np.int64)


def upsample_binary(images: np.ndarray, size: int = 28) -> np.ndarray:
    """(N, 1, 8, 8) values 0..16 -> (N, 1, size, size) values 0/1: bilinear upsampling of
    value / 16 (align_corners=False), thresholded at 0.5."""
    x = torch.from_numpy(images.astype(np.float64) / 16.0)
    up = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return (up >= 0.5).to(torch.uint8).numpy()


def load_digits(name: str = "digits", split: str = "train") -> ImageSet:
    """One split of the embedded digits: ``name`` in NAMES, ``split`` in train/val/test."""
    if name not in NAMES:
        raise ValueError(f"digits: name must be one of {NAMES}, got {name!r}")
    check_split(split)
    images, labels = _raw()
    idx = seeded_split(len(images), split, FRACTIONS, SEED)
    images, labels = images[idx], labels[idx]
    if name == "digits":
        return make_imageset(images, labels, 17, name, split)
    if name == "digits-binary":
        return make_imageset((images >= 8).astype(np.uint8), labels, 2, name, split)
    return make_imageset(upsample_binary(images), labels, 2, name, split)
