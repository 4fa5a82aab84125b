"""Readers for MNIST as users already have it: the IDX files (raw or .gz) and the standard
fixed binarization of Larochelle & Murray (2011) as .amat text files.

    mnist            (1, 28, 28), 256 levels, labels. Splits: the first 50,000 training
                     images (in general the first 5/6) train, the rest validation; the
                     t10k files test.
    binarized-mnist  (1, 28, 28), 2 levels, no labels: binarized_mnist_{train,valid,test}.amat
                     (50,000 / 10,000 / 10,000 images), the split of the PixelRNN paper.
"""
import gzip
import os

import numpy as np

from .errors import DataFormatError, require_file
from .imageset import ImageSet, check_split, make_imageset

MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
MNIST_HOW = ("Get the four IDX files of http://yann.lecun.com/exdb/mnist/ "
             "(train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, "
             "t10k-labels-idx1-ubyte.gz; gzipped or not) and put them in that folder.")
AMAT_FILES = {"train": "binarized_mnist_train.amat", "val": "binarized_mnist_valid.amat",
              "test": "binarized_mnist_test.amat"}
AMAT_HOW = ("Get binarized_mnist_train.amat, binarized_mnist_valid.amat and "
            "binarized_mnist_test.amat (Larochelle & Murray's fixed binarization, e.g. from "
            "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/) and put "
            "them in that folder.")

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _read_bytes(path):
    with open(path, "rb") as f:
        head = f.read(2)
    opener = gzip.open if head == b"\x1f\x8b" else open
    try:
        with opener(path, "rb") as f:
            return f.read()
    except (OSError, EOFError) as exc:
        raise DataFormatError(f"{path}: cannot read ({exc}); the file may be truncated") from exc


def read_idx(path) -> np.ndarray:
    """An IDX file (gzipped or raw) -> numpy array of the shape its header gives.

    Header: two zero bytes, a type byte (0x08 = uint8 ...), the number of dimensions, then
    each size as a big-endian int32; the data follows in C order.
    """
    data = _read_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DataFormatError(f"{path}: not an IDX file (bad magic number {data[:4].hex()})")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataFormatError(f"{path}: IDX header is truncated")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - header != expected:
        raise DataFormatError(f"{path}: header says shape {shape} ({expected} bytes of data), "
                              f"file has {len(data) - header}; the file may be truncated")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)


def load_mnist(root, split="train") -> ImageSet:
    """MNIST from IDX files in ``root`` (or, when there are none, mnist_train.csv /
    mnist_test.csv: see mnist_csv): (N, 1, 28, 28) values 0..255, with labels."""
    check_split(split)
    part = "test" if split == "test" else "train"
    names = MNIST_FILES[part]
    from .mnist_csv import CSV_HOW, find_mnist_csv, read_mnist_csv  # the CSV layout
    idx_present = root is not None and any(
        os.path.isfile(os.path.join(root, n)) for n in (names[0], names[0] + ".gz"))
    csv_path = None if idx_present else find_mnist_csv(root, part)
    if csv_path is not None:
        images, labels = read_mnist_csv(csv_path)
        image_path = label_path = csv_path
    else:
        how = MNIST_HOW + " " + CSV_HOW
        image_path = require_file(root, [names[0], names[0] + ".gz"], "mnist", how)
        label_path = require_file(root, [names[1], names[1] + ".gz"], "mnist", how)
        images, labels = read_idx(image_path), read_idx(label_path)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataFormatError(f"mnist: expected images (N, H, W) and labels (N,), got "
                              f"{images.shape} in {image_path} and {labels.shape} in {label_path}")
    if part == "train":
        n_train = len(images) - len(images) // 6
        sl = slice(0, n_train) if split == "train" else slice(n_train, None)
        images, labels = images[sl], labels[sl]
    return make_imageset(images[:, None], labels, 256, "mnist", split)


def read_amat(path, num_dims=784) -> np.ndarray:
    """A binarized-MNIST .amat text file (one image a line: ``num_dims`` values 0 or 1
    separated by spaces) -> (N, num_dims) uint8."""
    chars = np.frombuffer(_read_bytes(path), dtype=np.uint8)
    allowed = np.frombuffer(b"01 \t\r\n", dtype=np.uint8)
    digit = (chars == ord("0")) | (chars == ord("1"))
    if not np.isin(chars, allowed).all() or (digit[1:] & digit[:-1]).any():
        raise DataFormatError(f"{path}: an .amat file holds only the values 0 and 1 "
                              f"separated by spaces, one image a line")
    line_of_value = np.cumsum(chars == ord("\n"))[digit]
    per_line = np.bincount(line_of_value)
    per_line = per_line[per_line > 0]
    if len(per_line) == 0 or (per_line != num_dims).any():
        raise DataFormatError(f"{path}: expected {num_dims} values on every line, got lines "
                              f"with {sorted(set(per_line.tolist()))[:5]} values")
    return (chars[digit] - ord("0")).reshape(len(per_line), num_dims)


def load_binarized_mnist(root, split="train") -> ImageSet:
    """Binarized MNIST from .amat files in ``root``: (N, 1, 28, 28) values 0/1, no labels."""
    check_split(split)
    path = require_file(root, [AMAT_FILES[split]], "binarized-mnist", AMAT_HOW)
    images = read_amat(path).reshape(-1, 1, 28, 28)
    return make_imageset(images, None, 2, "binarized-mnist", split)


def write_idx(path, array: np.ndarray):
    """Write a uint8 array in IDX format (gzipped when ``path`` ends in .gz)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(s).to_bytes(4, "big") for s in array.shape)
    opener = gzip.open if os.fspath(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(header + array.tobytes())
