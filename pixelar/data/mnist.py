"""Readers for MNIST as users already have it: the IDX files (raw or .gz) and the standard
fixed binarization of Larochelle & Murray (2011) as .amat text files.

    mnist            (1, 28, 28), 256 levels, labels. Splits: the first 50,000 training
                     images (in general the first 5/6) train, the rest validation; the
                     t10k files test.
    binarized-mnist  (1, 28, 28), 2 levels, no labels: binarized_mnist_{train,valid,test}.amat
                     (50,000 / 10,000 / 10,000 images), the split of the PixelRNN paper.
"""

import gzip
import math
import os
import zlib

import numpy as np

from .errors import DataFormatError, require_file
from .imageset import ImageSet, check_split, make_imageset
from .mnist_csv import CSV_HOW, find_mnist_csv, read_mnist_csv

MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
MNIST_HOW = (
    "Get the four IDX files of http://yann.lecun.com/exdb/mnist/ "
    "(train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, "
    "t10k-labels-idx1-ubyte.gz; gzipped or not) and put them in that folder."
)
AMAT_FILES = {
    "train": "binarized_mnist_train.amat",
    "val": "binarized_mnist_valid.amat",
    "test": "binarized_mnist_test.amat",
}
AMAT_HOW = (
    "Get binarized_mnist_train.amat, binarized_mnist_valid.amat and "
    "binarized_mnist_test.amat (Larochelle & Murray's fixed binarization, e.g. from "
    "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/) and put "
    "them in that folder."
)

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_IDX_TYPE_NAMES = {
    0x08: "uint8",
    0x09: "int8",
    0x0B: "int16",
    0x0C: "int32",
    0x0D: "float32",
    0x0E: "float64",
}
# deflate expands at most ~1032:1, so a gzip file of n bytes never holds more than this many
# times n bytes of data: a header promising more is refused before decompressing anything
_MAX_DEFLATE_RATIO = 1100
_CHUNK = 1 << 20


def _open(path):
    """(file object, compressed size or None): gzip streams are decompressed on the fly."""
    with open(path, "rb") as f:
        head = f.read(2)
    if head == b"\x1f\x8b":
        return gzip.open(path, "rb"), os.path.getsize(path)
    return open(path, "rb"), None


def _read_exactly(f, n, path):
    """Up to n bytes of f, read in chunks (a truncated file gives fewer)."""
    parts, left = [], n
    try:
        while left > 0:
            part = f.read(min(left, _CHUNK))
            if not part:
                break
            parts.append(part)
            left -= len(part)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataFormatError(
            f"{path}: cannot read ({exc}); the file may be truncated or not a gzip file"
        ) from exc
    return b"".join(parts)


def _read_bytes(path, check_chunk=None):
    """The whole (decompressed) content of a file, read in chunks; ``check_chunk(bytes)``
    validates each chunk as it comes, so a gzip bomb of invalid content stops at its first
    chunk."""
    f, _ = _open(path)
    parts = []
    with f:
        while True:
            part = _read_exactly(f, _CHUNK, path)
            if check_chunk is not None and part:
                check_chunk(part)
            parts.append(part)
            if len(part) < _CHUNK:
                return b"".join(parts)


def _bytes_str(n):
    return f"{n:,} bytes" if n < 10**18 else f"more than 10^{len(str(n)) - 1} bytes"


def _shape_str(shape):
    return (
        str(shape)
        if len(shape) <= 6
        else f"({', '.join(map(str, shape[:4]))}, ... {len(shape)} dimensions)"
    )


def read_idx(path, dtype=None) -> np.ndarray:
    """An IDX file (gzipped or raw) -> numpy array of the shape its header gives.

    Header: two zero bytes, a type byte (0x08 = uint8 ...), the number of dimensions, then
    each size as a big-endian int32; the data follows in C order.
    dtype: the numpy dtype the file must hold (e.g. np.uint8 for MNIST), or None for any.
    The header is read and checked first; no more than the data it promises (+ 1 byte, to
    find trailing data) is ever read or decompressed, so a gzip bomb costs nothing.
    """
    f, compressed = _open(path)
    with f:
        magic = _read_exactly(f, 4, path)
        if len(magic) < 4 or magic[0] != 0 or magic[1] != 0 or magic[2] not in _IDX_DTYPES:
            raise DataFormatError(f"{path}: not an IDX file (bad magic number {magic.hex()})")
        ndim = magic[3]
        head = _read_exactly(f, 4 * ndim, path)
        if len(head) < 4 * ndim:
            raise DataFormatError(f"{path}: IDX header is truncated")
        file_dtype = np.dtype(_IDX_DTYPES[magic[2]])
        if dtype is not None and file_dtype != np.dtype(dtype):
            raise DataFormatError(
                f"{path}: holds {_IDX_TYPE_NAMES[magic[2]]} values (IDX type "
                f"0x{magic[2]:02X}); expected {np.dtype(dtype).name} "
                f"(type 0x08, values 0..255)"
            )
        shape = tuple(int.from_bytes(head[4 * i : 4 * i + 4], "big") for i in range(ndim))
        expected = math.prod(shape) * file_dtype.itemsize  # Python ints: no overflow
        available = (
            os.path.getsize(path) - 4 - 4 * ndim
            if compressed is None
            else _MAX_DEFLATE_RATIO * compressed
        )
        if expected > available:
            raise DataFormatError(
                f"{path}: header says shape {_shape_str(shape)} ({_bytes_str(expected)} of "
                f"data), more than the file can hold ({'' if compressed is None else 'at most '}"
                f"{_bytes_str(max(available, 0))}); the file is truncated or not an IDX file"
            )
        data = _read_exactly(f, expected + 1, path)
    if len(data) != expected:
        got = "more" if len(data) > expected else f"{len(data):,}"
        raise DataFormatError(
            f"{path}: header says shape {_shape_str(shape)} ({expected:,} "
            f"bytes of data), file has {got}; the file may be truncated or "
            f"hold trailing data"
        )
    return np.frombuffer(data, dtype=file_dtype).reshape(shape)


def load_mnist(root, split="train") -> ImageSet:
    """MNIST from IDX files in ``root`` (or, when there are none, mnist_train.csv /
    mnist_test.csv: see mnist_csv): (N, 1, 28, 28) values 0..255, with labels."""
    check_split(split)
    part = "test" if split == "test" else "train"
    names = MNIST_FILES[part]
    idx_present = root is not None and any(
        os.path.isfile(os.path.join(root, n)) for n in (names[0], names[0] + ".gz")
    )
    csv_path = None if idx_present else find_mnist_csv(root, part)
    if csv_path is not None:
        images, labels = read_mnist_csv(csv_path)
        image_path = label_path = csv_path
    else:
        how = MNIST_HOW + " " + CSV_HOW
        image_path = require_file(root, [names[0], names[0] + ".gz"], "mnist", how)
        label_path = require_file(root, [names[1], names[1] + ".gz"], "mnist", how)
        images, labels = read_idx(image_path, np.uint8), read_idx(label_path, np.uint8)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataFormatError(
            f"mnist: expected images (N, H, W) and labels (N,), got "
            f"{images.shape} in {image_path} and {labels.shape} in {label_path}"
        )
    if part == "train":
        n_train = len(images) - len(images) // 6
        sl = slice(0, n_train) if split == "train" else slice(n_train, None)
        images, labels = images[sl], labels[sl]
    return make_imageset(images[:, None], labels, 256, "mnist", split)


def read_amat(path, num_dims=784) -> np.ndarray:
    """A binarized-MNIST .amat text file (one image a line: ``num_dims`` values 0 or 1
    separated by spaces) -> (N, num_dims) uint8."""
    allowed = np.frombuffer(b"01 \t\r\n", dtype=np.uint8)
    message = (
        f"{path}: an .amat file holds only the values 0 and 1 separated by spaces, one image a line"
    )

    def check_chunk(part):  # as it is read: a gzip bomb of other bytes stops at once
        if not np.isin(np.frombuffer(part, dtype=np.uint8), allowed).all():
            raise DataFormatError(message)

    chars = np.frombuffer(_read_bytes(path, check_chunk), dtype=np.uint8)
    digit = (chars == ord("0")) | (chars == ord("1"))
    if (digit[1:] & digit[:-1]).any():
        raise DataFormatError(message)
    line_of_value = np.cumsum(chars == ord("\n"))[digit]
    per_line = np.bincount(line_of_value)
    per_line = per_line[per_line > 0]
    if len(per_line) == 0 or (per_line != num_dims).any():
        raise DataFormatError(
            f"{path}: expected {num_dims} values on every line, got lines "
            f"with {sorted(set(per_line.tolist()))[:5]} values"
        )
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
        int(s).to_bytes(4, "big") for s in array.shape
    )
    opener = gzip.open if os.fspath(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(header + array.tobytes())
