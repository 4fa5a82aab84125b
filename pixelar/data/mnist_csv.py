"""MNIST in the common CSV layout: ``mnist_train.csv`` and ``mnist_test.csv`` (or .csv.gz),
one image a line, ``label,p0,...,p783`` with pixels 0..255 in raster order, with or
without a header line. ``load_mnist`` reads these when a folder has no IDX files.
"""

import gzip
import io
import math
import os

import numpy as np

from .errors import DataFormatError

CSV_FILES = {"train": "mnist_train.csv", "test": "mnist_test.csv"}
CSV_HOW = (
    "Or put the CSV files mnist_train.csv and mnist_test.csv (label first, then the "
    "784 pixels 0-255; optional header line; .csv or .csv.gz) there."
)


def find_mnist_csv(root, part):
    """The path of the CSV file of ``part`` ("train" or "test") in ``root``, or None."""
    if root is None:
        return None
    for name in (CSV_FILES[part], CSV_FILES[part] + ".gz"):
        path = os.path.join(root, name)
        if os.path.isfile(path):
            return path
    return None


def _read_text(path):
    with open(path, "rb") as f:
        head = f.read(2)
    opener = gzip.open if head == b"\x1f\x8b" else open
    try:
        with opener(path, "rb") as f:
            return f.read()
    except (OSError, EOFError) as exc:
        raise DataFormatError(f"{path}: cannot read ({exc}); the file may be truncated") from exc


def read_mnist_csv(path):
    """A MNIST CSV file -> (images (N, S, S) uint8, labels (N,) uint8), S * S pixels a line.

    The first line is skipped when its first field is not a number (a header such as
    ``label,pixel0,...``). Raises
    DataFormatError for lines of different lengths, non-integer values, values outside
    0..255, labels outside 0..9, or a pixel count that is not a square.
    """
    raw = _read_text(path)
    first, _, rest = raw.partition(b"\n")
    has_header = not first.split(b",")[0].strip().isdigit()  # e.g. "label,1x1,..."
    body = rest if has_header else raw
    if not body.strip():
        raise DataFormatError(
            f"{path}: no images (an MNIST CSV holds one image a line: label,p0,...,p783)"
        )
    try:
        table = np.loadtxt(io.BytesIO(body), delimiter=",", dtype=np.int64, ndmin=2)
    except ValueError as exc:
        raise DataFormatError(
            f"{path}: not an MNIST CSV file ({exc}); expected one image "
            f"a line: label,p0,...,p783 (integers)"
        ) from exc
    n_pixels = table.shape[1] - 1
    side = math.isqrt(max(n_pixels, 0))
    if n_pixels < 1 or side * side != n_pixels:
        raise DataFormatError(
            f"{path}: expected a label and a square number of pixels "
            f"(785 values for 28x28) on every line, got {table.shape[1]}"
        )
    labels, pixels = table[:, 0], table[:, 1:]
    if pixels.min() < 0 or pixels.max() > 255:
        raise DataFormatError(
            f"{path}: pixel values must be in 0..255, got {pixels.min()}..{pixels.max()}"
        )
    if labels.min() < 0 or labels.max() > 9:
        raise DataFormatError(
            f"{path}: the first column must be the label 0..9, got "
            f"{labels.min()}..{labels.max()} (is the label not first?)"
        )
    return pixels.astype(np.uint8).reshape(-1, side, side), labels.astype(np.uint8)
