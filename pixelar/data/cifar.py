"""CIFAR-10 from its python batches (``cifar-10-python.tar.gz`` extracted), read with a
restricted unpickler: only numpy array reconstruction is allowed, never arbitrary code.

    cifar10  (3, 32, 32), 256 levels, labels. Files: data_batch_1 ... data_batch_5 and
             test_batch, in ``root`` or in ``root/cifar-10-batches-py``. Splits: the first
             45,000 training images (in general the first 9/10) train, the rest
             validation; test_batch test.
"""
import os
import pickle

import numpy as np

from .errors import DataFormatError, require_file
from .imageset import ImageSet, check_split, make_imageset

TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
HOW = ("Get cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html, "
       "extract it, and pass the folder cifar-10-batches-py (holding data_batch_1 ... "
       "data_batch_5 and test_batch).")

# Everything a pickled numpy array may refer to (numpy 1 and numpy 2 module names), and
# _codecs.encode, which protocol-2 pickles written by Python 3 use for bytes.
_ALLOWED = {
    ("_codecs", "encode"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
}


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays; any other global is refused."""

    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"refusing to unpickle {module}.{name}: a CIFAR-10 batch holds only numpy arrays")


def read_batch(path):
    """One CIFAR-10 python batch -> images (N, 3, 32, 32) uint8, labels (N,) int64."""
    try:
        with open(path, "rb") as f:
            batch = NumpyOnlyUnpickler(f, encoding="bytes").load()
    except pickle.UnpicklingError as exc:
        raise DataFormatError(f"{path}: {exc}") from exc
    except (EOFError, ValueError, TypeError) as exc:
        raise DataFormatError(f"{path}: not a CIFAR-10 python batch ({exc}); the file may "
                              f"be truncated") from exc
    if not isinstance(batch, dict):
        raise DataFormatError(f"{path}: expected a dict, got {type(batch).__name__}")
    batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    labels = batch.get("labels", batch.get("fine_labels"))
    data = batch.get("data")
    if not isinstance(data, np.ndarray) or labels is None:
        raise DataFormatError(f"{path}: expected keys 'data' (numpy array) and 'labels'")
    data = np.asarray(data, dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise DataFormatError(f"{path}: expected data (N, 3072) and N labels, got "
                              f"{data.shape} and {len(labels)} labels")
    return data.reshape(-1, 3, 32, 32), np.asarray(labels, dtype=np.int64)


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
