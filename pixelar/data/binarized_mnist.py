"""``pixelar data binarize-mnist``: MNIST (IDX or CSV files) -> the three .amat files of
the fixed stochastic binarization that ``--data binarized-mnist`` reads (see binarize)."""

import os

import numpy as np

from .binarize import AMAT_NAMES, binarize_mnist_splits, write_amat
from .errors import DataFormatError, require_file
from .mnist import MNIST_FILES, MNIST_HOW, read_idx
from .mnist_csv import CSV_HOW, find_mnist_csv, read_mnist_csv


def read_mnist_images(root, part):
    """All images of ``part`` ("train": 60,000, "test": 10,000) from the IDX files in
    ``root`` or, when there are none, its CSV files: (N, 784) uint8 in file order."""
    names = MNIST_FILES[part]
    idx_present = any(os.path.isfile(os.path.join(root, n)) for n in (names[0], names[0] + ".gz"))
    csv_path = None if idx_present else find_mnist_csv(root, part)
    if csv_path is not None:
        images, _ = read_mnist_csv(csv_path)
    else:
        images = read_idx(
            require_file(root, [names[0], names[0] + ".gz"], "mnist", MNIST_HOW + " " + CSV_HOW)
        )
    if images.ndim != 3:
        raise DataFormatError(f"mnist {part}: expected images (N, H, W), got {images.shape}")
    return np.array(images.reshape(len(images), -1), dtype=np.uint8)  # a writable copy


def make_binarized_mnist(data_dir, out_dir, seed=0, overwrite=False, log=print):
    """Write out_dir/binarized_mnist_{train,valid,test}.amat: every pixel of MNIST (in
    ``data_dir``) drawn once from Bernoulli(value / 255) by one generator seeded with
    ``seed`` (training images first, then test), the last 10,000 training images as the
    validation split. Returns the three paths (train, valid, test)."""
    data_dir = os.path.expanduser(os.fspath(data_dir))
    out_dir = os.path.expanduser(os.fspath(out_dir))
    paths = [os.path.join(out_dir, AMAT_NAMES[s]) for s in ("train", "val", "test")]
    existing = [p for p in paths if os.path.exists(p)]
    if existing and not overwrite:
        raise FileExistsError(
            f"{', '.join(existing)} already exist(s); pass --overwrite to replace them"
        )
    train = read_mnist_images(data_dir, "train")
    test = read_mnist_images(data_dir, "test")
    log(f"binarizing {len(train)} training and {len(test)} test images (seed {seed})")
    splits = binarize_mnist_splits(train, test, seed=seed)
    os.makedirs(out_dir, exist_ok=True)
    for split, path in zip(("train", "val", "test"), paths):
        write_amat(path, splits[split])
    return paths
