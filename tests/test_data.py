"""pixelar.data: the embedded digits and their fixed splits, and every reader on small
files this test writes in the real format (IDX raw and .gz, .amat, CIFAR-10 python
batches, PNG folders)."""

import gzip
import os
import pickle
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from pixelar import data
from pixelar.data import DataFileNotFoundError, DataFormatError

# ---------------------------------------------------------------- embedded digits


@pytest.mark.parametrize(
    "name,shape,levels",
    [
        ("digits", (1, 8, 8), 17),
        ("digits-binary", (1, 8, 8), 2),
        ("digits28-binary", (1, 28, 28), 2),
    ],
)
def test_digits_shapes_levels_and_splits(name, shape, levels):
    splits = {s: data.load(name, s) for s in data.SPLITS}
    assert {s: len(d) for s, d in splits.items()} == {"train": 1258, "val": 180, "test": 359}
    for d in splits.values():
        assert d.images.dtype == torch.int64 and d.image_shape == shape and d.levels == levels
        assert int(d.images.min()) >= 0 and int(d.images.max()) == levels - 1
        assert d.labels is not None and set(d.labels.tolist()) == set(range(10))


def test_digits_splits_are_fixed_and_disjoint():
    from pixelar.data.digits import FRACTIONS, SEED
    from pixelar.data.imageset import seeded_split

    idx = {s: seeded_split(1797, s, FRACTIONS, SEED) for s in data.SPLITS}
    assert sorted(np.concatenate(list(idx.values())).tolist()) == list(range(1797))
    # the split never changes (numpy's legacy RandomState stream is frozen)
    assert idx["test"][:6].tolist() == [11, 23, 24, 25, 28, 32]
    assert idx["val"][:6].tolist() == [0, 3, 7, 26, 59, 63]
    a, b = data.load("digits", "test"), data.load("digits", "test")
    assert torch.equal(a.images, b.images)


def test_binary_digits_follow_the_grey_ones():
    grey, binary = data.load("digits", "val"), data.load("digits-binary", "val")
    assert torch.equal(binary.images, (grey.images >= 8).long())
    assert torch.equal(grey.binarized().images, binary.images)
    assert torch.equal(binary.labels, grey.labels)
    big = data.load("digits28-binary", "val")
    assert 0.2 < big.images.float().mean() < 0.4 and torch.equal(big.labels, grey.labels)


def test_unknown_dataset_and_split():
    with pytest.raises(ValueError, match="unknown dataset"):
        data.load("imagenet")
    with pytest.raises(ValueError, match="split"):
        data.load("digits", "validation")


# ---------------------------------------------------------------- MNIST IDX


def _idx_bytes(array, type_code=0x08):
    header = struct.pack(">BBBB", 0, 0, type_code, array.ndim)
    header += b"".join(struct.pack(">I", s) for s in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def _write_mnist(folder, n_train=12, n_test=5, gz=True):
    rng = np.random.RandomState(0)
    files = {
        "train-images-idx3-ubyte": rng.randint(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": rng.randint(0, 10, n_train),
        "t10k-images-idx3-ubyte": rng.randint(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": rng.randint(0, 10, n_test),
    }
    for name, arr in files.items():
        raw = _idx_bytes(arr)
        if gz:
            with gzip.open(os.path.join(folder, name + ".gz"), "wb") as f:
                f.write(raw)
        else:
            with open(os.path.join(folder, name), "wb") as f:
                f.write(raw)
    return files


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_idx_reader(tmp_path, gz):
    files = _write_mnist(tmp_path, gz=gz)
    train, val, test = (data.load("mnist", s, root=tmp_path) for s in data.SPLITS)
    assert (len(train), len(val), len(test)) == (10, 2, 5)  # val = the last 1/6 of train
    assert train.image_shape == (1, 28, 28) and train.levels == 256
    images = files["train-images-idx3-ubyte"]
    assert np.array_equal(train.images[:, 0].numpy(), images[:10])
    assert np.array_equal(val.images[:, 0].numpy(), images[10:])
    assert np.array_equal(test.labels.numpy(), files["t10k-labels-idx1-ubyte"])
    assert torch.equal(
        data.load("mnist", "test", tmp_path, binarize=True).images, (test.images >= 128).long()
    )


def test_mnist_truncated_and_missing(tmp_path):
    _write_mnist(tmp_path, gz=False)
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(DataFormatError, match="truncated"):
        data.load("mnist", "test", root=tmp_path)
    os.remove(tmp_path / "train-labels-idx1-ubyte")
    with pytest.raises(DataFileNotFoundError) as err:
        data.load("mnist", "train", root=tmp_path)
    assert "train-labels-idx1-ubyte" in str(err.value) and str(tmp_path) in str(err.value)
    with pytest.raises(DataFileNotFoundError, match="--data-dir"):
        data.load("mnist", "train")


# ---------------------------------------------------------------- binarized MNIST .amat


def test_amat_reader(tmp_path):
    rng = np.random.RandomState(1)
    sets = {}
    for split, fname in (
        ("train", "binarized_mnist_train.amat"),
        ("val", "binarized_mnist_valid.amat"),
        ("test", "binarized_mnist_test.amat"),
    ):
        sets[split] = rng.randint(0, 2, (3, 784))
        lines = [" ".join(str(v) for v in row) for row in sets[split]]
        (tmp_path / fname).write_text("\n".join(lines) + "\n")
    for split in data.SPLITS:
        d = data.load("binarized-mnist", split, root=tmp_path)
        assert d.image_shape == (1, 28, 28) and d.levels == 2 and d.labels is None
        assert np.array_equal(d.images.reshape(3, 784).numpy(), sets[split])


def test_amat_malformed(tmp_path):
    (tmp_path / "binarized_mnist_test.amat").write_text("0 1 1\n1 0 1\n")
    with pytest.raises(DataFormatError, match="784"):
        data.load("binarized-mnist", "test", root=tmp_path)
    (tmp_path / "binarized_mnist_test.amat").write_text("0 2 1\n")
    with pytest.raises(DataFormatError, match="0 and 1"):
        data.load("binarized-mnist", "test", root=tmp_path)
    with pytest.raises(DataFileNotFoundError, match="binarized_mnist_train.amat"):
        data.load("binarized-mnist", "train", root=tmp_path)


# ---------------------------------------------------------------- CIFAR-10


def _cifar_batch(path, n, seed):
    rng = np.random.RandomState(seed)
    batch = {
        b"batch_label": b"testing batch",
        b"labels": rng.randint(0, 10, n).tolist(),
        b"data": rng.randint(0, 256, (n, 3072)).astype(np.uint8),
        b"filenames": [b"img_%d.png" % i for i in range(n)],
    }
    with open(path, "wb") as f:
        pickle.dump(batch, f, protocol=2)
    return batch


def test_cifar10_reader(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    batches = [_cifar_batch(folder / f"data_batch_{i}", 4, i) for i in range(1, 6)]
    test_batch = _cifar_batch(folder / "test_batch", 3, 9)
    train, val, test = (data.load("cifar10", s, root=tmp_path) for s in data.SPLITS)
    assert (len(train), len(val), len(test)) == (18, 2, 3)  # val = the last 1/10 of train
    assert train.image_shape == (3, 32, 32) and train.levels == 256
    first = batches[0][b"data"][0]
    assert np.array_equal(train.images[0, 0].numpy().ravel(), first[:1024])  # red plane
    assert np.array_equal(train.images[0, 2].numpy().ravel(), first[2048:])  # blue plane
    assert test.labels.tolist() == test_batch[b"labels"]
    assert val.labels.tolist() == batches[4][b"labels"][2:]


def test_cifar10_refuses_code_in_pickles(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    with open(tmp_path / "test_batch", "wb") as f:
        pickle.dump({b"data": Evil(), b"labels": []}, f, protocol=2)
    with pytest.raises(DataFormatError, match="refusing to unpickle"):
        data.load("cifar10", "test", root=tmp_path)
    assert not marker.exists()


def test_cifar10_missing_and_truncated(tmp_path):
    with pytest.raises(DataFileNotFoundError, match="data_batch_1"):
        data.load("cifar10", "train", root=tmp_path)
    _cifar_batch(tmp_path / "test_batch", 2, 0)
    raw = (tmp_path / "test_batch").read_bytes()
    (tmp_path / "test_batch").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataFormatError, match="truncated"):
        data.load("cifar10", "test", root=tmp_path)


# ---------------------------------------------------------------- PNG folder


def test_png_folder_grey_with_class_subfolders(tmp_path):
    rng = np.random.RandomState(0)
    written = {}
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(10):
            arr = rng.randint(0, 256, (6, 5)).astype(np.uint8)
            Image.fromarray(arr, mode="L").save(tmp_path / cls / f"{i}.png")
            written[(cls, i)] = arr
    splits = {s: data.load("png", s, root=tmp_path) for s in data.SPLITS}
    assert sum(len(d) for d in splits.values()) == 20
    assert (len(splits["val"]), len(splits["test"])) == (2, 2)
    train = splits["train"]
    assert train.image_shape == (1, 6, 5) and train.levels == 256
    found = {tuple(img.ravel().tolist()) for img in train.images[:, 0].numpy()}
    expected = {tuple(a.ravel().tolist()) for a in written.values()}
    assert found <= expected
    # labels follow the subfolder: an image's label says which folder it came from
    for img, label in zip(train.images[:, 0].numpy(), train.labels.tolist()):
        cls = ("cat", "dog")[label]
        assert any(np.array_equal(img, a) for (c, _), a in written.items() if c == cls)


def test_png_folder_rgb_and_binary(tmp_path):
    rgb = tmp_path / "rgb"
    rgb.mkdir()
    arr = np.random.RandomState(0).randint(0, 256, (4, 3, 3)).astype(np.uint8)
    for i in range(5):
        Image.fromarray(arr, mode="RGB").save(rgb / f"{i}.png")
    d = data.load("png", "train", root=rgb)
    assert d.image_shape == (3, 4, 3) and d.labels is None
    assert np.array_equal(d.images[0].numpy(), arr.transpose(2, 0, 1))
    binary = tmp_path / "binary"
    binary.mkdir()
    bits = np.random.RandomState(1).randint(0, 2, (7, 7)).astype(bool)
    for i in range(5):
        Image.fromarray(bits).convert("1").save(binary / f"{i}.png")
    d = data.load("png", "train", root=binary)
    assert d.levels == 2 and np.array_equal(d.images[0, 0].numpy(), bits.astype(np.int64))


def test_png_folder_errors(tmp_path):
    with pytest.raises(DataFileNotFoundError, match="no .png files"):
        data.load("png", "train", root=tmp_path)
    with pytest.raises(DataFileNotFoundError, match="not a folder"):
        data.load("png", "train", root=tmp_path / "nowhere")
    for i, size in enumerate([(4, 4)] * 9 + [(5, 4)]):
        Image.fromarray(np.zeros(size, np.uint8)).save(tmp_path / f"{i}.png")
    with pytest.raises(DataFormatError, match="same size"):
        for s in data.SPLITS:
            data.load("png", s, root=tmp_path)


# ---------------------------------------------------------------- PNG grids


def test_image_grid_tiles_and_upscales(tmp_path):
    images = torch.zeros(5, 1, 8, 8, dtype=torch.long)
    images[1] = 1
    grid = data.image_grid(images, levels=2, ncol=3, pad=2)
    assert grid.shape == (2 * (64 + 2) + 2, 3 * (64 + 2) + 2)  # 8 px upscaled 8x to 64
    assert grid[2:66, 68:132].min() == 255 and grid[2:66, 2:66].max() == 0
    path = data.save_grid(tmp_path / "g.png", torch.randint(0, 256, (4, 3, 5, 5)), 256)
    with Image.open(path) as im:
        assert im.mode == "RGB" and im.size[0] >= 2 * 64
