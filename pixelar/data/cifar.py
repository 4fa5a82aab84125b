"""CIFAR-10 from its python batches (``cifar-10-python.tar.gz`` extracted), read with a
restricted unpickler: only numpy array reconstruction is allowed, never arbitrary code, and
no array larger than a batch's data (10,000 x 3072 bytes); a file larger than a batch can be
is refused before unpickling. A batch must hold ``data``: uint8 (N, 3072) with N <= 10,000
and ``labels``: N ints in 0..9; anything else is a DataFormatError.

    cifar10  (3, 32, 32), 256 levels, labels. Files: data_batch_1 ... data_batch_5 and
             test_batch, in ``root`` or in ``root/cifar-10-batches-py``. Splits: the first
             45,000 training images (in general the first 9/10) train, the rest
             validation; test_batch test.
"""

import math
import os
import pickle

import numpy as np

from .errors import DataFormatError, require_file
from .imageset import ImageSet, check_split, make_imageset

TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
HOW = (
    "Get cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html, "
    "extract it, and pass the folder cifar-10-batches-py (holding data_batch_1 ... "
    "data_batch_5 and test_batch)."
)

# Everything a pickled numpy array may refer to (numpy 1 and numpy 2 module names), and
# _codecs.encode, which protocol-2 pickles written by Python 3 use for bytes.
_ALLOWED = {
    ("_codecs", "encode"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}

BATCH_IMAGES = 10_000  # images per batch in the CIFAR-10 format
MAX_ARRAY_BYTES = BATCH_IMAGES * 3072  # the largest array a batch holds (its data)
MAX_FILE_BYTES = 2 * MAX_ARRAY_BYTES  # a real batch file is about 31 MB
CLASSES = 10


def _checked_size(shape, dtype):
    """Refuse (UnpicklingError) an array larger than MAX_ARRAY_BYTES, before allocating."""
    try:
        dims = [int(s) for s in (shape if isinstance(shape, (tuple, list)) else (shape,))]
        nbytes = math.prod(dims) * np.dtype(dtype).itemsize
    except (TypeError, ValueError) as exc:
        raise pickle.UnpicklingError(f"bad array shape {shape!r} or dtype {dtype!r}") from exc
    if any(d < 0 for d in dims) or nbytes > MAX_ARRAY_BYTES:
        raise pickle.UnpicklingError(
            f"refusing to build an array of shape {tuple(dims)} ({nbytes:,} bytes): a CIFAR-10 "
            f"batch holds at most {BATCH_IMAGES} x 3072 bytes"
        )


def _ndarray(shape, dtype=float, *args, **kwargs):
    """numpy.ndarray(shape, dtype, ...) as a pickle may call it, size-checked."""
    _checked_size(shape, dtype)
    return np.ndarray(shape, dtype, *args, **kwargs)


def _reconstruct(subtype, shape, dtype):
    """numpy's _reconstruct(ndarray, shape, dtype), size-checked; the data itself comes from
    the file's bytes (__setstate__), so it is bounded by the file's size."""
    if subtype is not _ndarray and subtype is not np.ndarray:
        raise pickle.UnpicklingError(f"refusing to reconstruct a {subtype!r}")
    _checked_size(shape, dtype)
    return np.ndarray.__new__(np.ndarray, shape, dtype)


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays of at most MAX_ARRAY_BYTES; any other
    global is refused."""

    def find_class(self, module, name):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(
                f"refusing to unpickle {module}.{name}: a CIFAR-10 batch holds only numpy arrays"
            )
        if name == "ndarray":
            return _ndarray
        if name == "_reconstruct":
            return _reconstruct
        return super().find_class(module, name)


def _labels(path, labels, n):
    """The batch's labels: a list (or 1-D integer array) of n ints in 0..9 -> (n,) int64."""
    if isinstance(labels, np.ndarray):
        ok = labels.ndim == 1 and labels.dtype.kind in "iu"
        values = labels.tolist() if ok else []
    else:
        ok = isinstance(labels, (list, tuple))
        values = list(labels) if ok else []
    ok = ok and all(isinstance(v, int) and not isinstance(v, bool) for v in values)
    if not ok or len(values) != n or any(not 0 <= v < CLASSES for v in values):
        got = (
            f"{len(values)} values in [{min(values)}, {max(values)}]"
            if ok and values
            else f"{type(labels).__name__}" + (f" of {len(values)}" if ok else "")
        )
        raise DataFormatError(
            f"{path}: 'labels' must be a list of {n} ints in 0..{CLASSES - 1} "
            f"(one per image), got {got}"
        )
    return np.asarray(values, dtype=np.int64)


def read_batch(path):
    """One CIFAR-10 python batch -> images (N, 3, 32, 32) uint8, labels (N,) int64."""
    size = os.path.getsize(path)
    if size > MAX_FILE_BYTES:
        raise DataFormatError(
            f"{path}: {size:,} bytes, more than a CIFAR-10 batch can be "
            f"({MAX_FILE_BYTES:,}); not a CIFAR-10 python batch"
        )
    try:
        with open(path, "rb") as f:
            batch = NumpyOnlyUnpickler(f, encoding="bytes").load()
    except pickle.UnpicklingError as exc:
        raise DataFormatError(f"{path}: {exc}") from exc
    except (
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
        OverflowError,
        MemoryError,
        RecursionError,
    ) as exc:
        raise DataFormatError(
            f"{path}: not a CIFAR-10 python batch ({type(exc).__name__}: "
            f"{exc}); the file may be truncated"
        ) from exc
    if not isinstance(batch, dict):
        raise DataFormatError(f"{path}: expected a dict, got {type(batch).__name__}")
    batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    labels = batch.get("labels", batch.get("fine_labels"))
    data = batch.get("data")
    if not isinstance(data, np.ndarray) or labels is None:
        raise DataFormatError(f"{path}: expected keys 'data' (numpy array) and 'labels'")
    if (
        data.dtype != np.uint8
        or data.ndim != 2
        or data.shape[1] != 3 * 32 * 32
        or len(data) > BATCH_IMAGES
    ):
        raise DataFormatError(
            f"{path}: 'data' must be a uint8 array (N, 3072) with N <= "
            f"{BATCH_IMAGES}, got {data.dtype} {data.shape}"
        )
    return data.reshape(-1, 3, 32, 32), _labels(path, labels, len(data))


def _folder(root):
    if root is not None and not os.path.isfile(os.path.join(root, "test_batch")):
        inner = os.path.join(root, "cifar-10-batches-py")
        if os.path.isdir(inner):
            return inner
    return root


def load_cifar10(root, split="train") -> ImageSet:
    """CIFAR-10 from python batches in ``root``: (N, 3, 32, 32) values 0..255, labels."""
    check_split(split)
    root = _folder(root)
    if split == "test":
        images, labels = read_batch(require_file(root, ["test_batch"], "cifar10", HOW))
    else:
        parts = [read_batch(require_file(root, [name], "cifar10", HOW)) for name in TRAIN_BATCHES]
        images = np.concatenate([p[0] for p in parts])
        labels = np.concatenate([p[1] for p in parts])
        n_train = len(images) - len(images) // 10
        sl = slice(0, n_train) if split == "train" else slice(n_train, None)
        images, labels = images[sl], labels[sl]
    return make_imageset(images, labels, 256, "cifar10", split)
