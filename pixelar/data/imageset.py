"""The container every dataset loader returns, and the seeded split rule they share."""

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

SPLITS = ("train", "val", "test")


@dataclass
class ImageSet:
    """A split of an image dataset.

    images: (N, C, H, W) int64 with values in [0, levels)
    labels: (N,) int64 class labels, or None when the dataset has none
    """

    images: torch.Tensor
    labels: Optional[torch.Tensor]
    levels: int
    name: str
    split: str

    @property
    def image_shape(self):
        """(C, H, W)."""
        return tuple(self.images.shape[1:])

    @property
    def num_dims(self) -> int:
        C, H, W = self.image_shape
        return C * H * W

    def __len__(self):
        return self.images.shape[0]

    def subset(self, n: int) -> "ImageSet":
        """The first n images (all of them when n is None or larger)."""
        if n is None or n >= len(self):
            return self
        labels = None if self.labels is None else self.labels[:n]
        return ImageSet(self.images[:n], labels, self.levels, self.name, self.split)

    def binarized(self) -> "ImageSet":
        """Threshold at half the range: value >= (levels - 1) / 2 -> 1, else 0 (levels = 2);
        e.g. >= 128 for 8-bit images, >= 8 for the 17-level digits."""
        if self.levels == 2:
            return self
        images = (2 * self.images >= self.levels - 1).long()
        return ImageSet(images, self.labels, 2, self.name + "-binarized", self.split)


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return split


def seeded_split(n: int, split: str, fractions=(0.8, 0.1, 0.1), seed: int = 0) -> np.ndarray:
    """Indices of ``split`` in a fixed, seeded permutation of range(n): (k,) int64.

    The permutation is numpy's legacy ``RandomState(seed).permutation(n)``, whose stream
    numpy keeps stable across versions, so the splits never change. Sizes: val and test are
    round(n * fraction) (at least 1 each when n >= 3), train is the rest.
    """
    check_split(split)
    perm = np.random.RandomState(seed).permutation(n)
    n_val = round(n * fractions[1])
    n_test = round(n * fractions[2])
    if n >= 3:
        n_val, n_test = max(1, n_val), max(1, n_test)
    n_train = n - n_val - n_test
    bounds = {
        "train": (0, n_train),
        "val": (n_train, n_train + n_val),
        "test": (n_train + n_val, n),
    }
    lo, hi = bounds[split]
    return np.sort(perm[lo:hi])


def make_imageset(images: np.ndarray, labels, levels: int, name: str, split: str) -> ImageSet:
    """numpy (N, C, H, W) integers (and (N,) labels or None) -> ImageSet of int64 tensors."""
    images = torch.from_numpy(np.ascontiguousarray(images).astype(np.int64))
    if labels is not None:
        labels = torch.from_numpy(np.ascontiguousarray(labels).astype(np.int64))
    return ImageSet(images, labels, levels, name, split)
