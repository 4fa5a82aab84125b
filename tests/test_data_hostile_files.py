"""Hostile and malformed dataset files: every reader checks what a file promises before
allocating for it (IDX header, gzip bombs, CIFAR pickles that build huge arrays, PNG
headers), accepts exactly its format's dtypes and value ranges, and says what is wrong in
one DataFormatError."""

import gzip
import os
import pickle
import re
import struct
import tracemalloc
import zlib

import numpy as np
import pytest
from PIL import Image

from pixelar import data
from pixelar.data import DataFormatError, read_idx


def _idx_header(type_code, shape):
    return struct.pack(">BBBB", 0, 0, type_code, len(shape)) + b"".join(
        struct.pack(">I", s) for s in shape
    )


def _peak_bytes(fn):
    """(exception raised by fn, peak bytes traced while it ran)."""
    tracemalloc.start()
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - returned to the caller
        raised = exc
    else:
        raised = None
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return raised, peak


def _no_negative_numbers(message):
    assert re.search(r"-\d", message) is None, message


# ---------------------------------------------------------------- IDX


def test_idx_gzip_bomb_is_not_decompressed_past_the_header(tmp_path):
    """S2: a header promising 2 x 28 x 28 bytes followed by 48 MiB of zeros: at most the
    promised bytes + 1 are decompressed, then the trailing data is an error."""
    path = tmp_path / "train-images-idx3-ubyte.gz"
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(_idx_header(0x08, (2, 28, 28)))
        zeros = bytes(1 << 20)
        for _ in range(48):
            f.write(zeros)
    assert os.path.getsize(path) < 1 << 20
    raised, peak = _peak_bytes(lambda: read_idx(path))
    assert isinstance(raised, DataFormatError), raised
    assert "trailing data" in str(raised)
    assert peak < 8 << 20, f"peak {peak / 2**20:.1f} MiB while reading a {2 * 784} byte image"


def test_idx_header_promising_more_than_the_gzip_can_hold(tmp_path):
    path = tmp_path / "images.gz"
    with gzip.open(path, "wb") as f:
        f.write(_idx_header(0x08, (60000, 28, 2800)) + bytes(100))
    raised, peak = _peak_bytes(lambda: read_idx(path))
    assert isinstance(raised, DataFormatError) and "more than the file can hold" in str(raised)
    assert peak < 1 << 20


@pytest.mark.parametrize("shape", [(0xFFFFFFFF,) * 2, (0xFFFFFFFF,) * 255])
@pytest.mark.parametrize("gz", [False, True])
def test_idx_huge_or_255_dimension_headers(tmp_path, shape, gz):
    """U4: sizes that overflow int64 and 255 dimensions: a one-line DataFormatError with
    the true (positive) byte count, nothing allocated."""
    raw = _idx_header(0x08, shape) + bytes(64)
    path = tmp_path / ("x.gz" if gz else "x")
    if gz:
        with gzip.open(path, "wb") as f:
            f.write(raw)
    else:
        path.write_bytes(raw)
    with pytest.raises(DataFormatError, match="header says shape") as err:
        read_idx(path)
    _no_negative_numbers(str(err.value).replace(str(path), "PATH"))
    assert len(str(err.value)) < 400


@pytest.mark.parametrize(
    "type_code,values",
    [(0x0D, np.array([[0.0, 0.5, 1.0]], ">f4")), (0x0C, np.array([[0, 300, -5]], ">i4"))],
)
def test_mnist_refuses_idx_of_other_dtypes(tmp_path, type_code, values):
    """W4: MNIST images and labels are uint8 IDX (type 0x08); float32 or int32 files would
    be trained on as if they were 0..255."""
    images = np.repeat(values.reshape(1, 1, 3), 1, 0)
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(
        _idx_header(type_code, images.shape) + images.tobytes()
    )
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx_header(0x08, (1,)) + bytes([3]))
    with pytest.raises(DataFormatError, match="expected uint8"):
        data.load("mnist", "test", root=tmp_path)
    # the general reader still reads them when no dtype is asked for
    assert read_idx(tmp_path / "t10k-images-idx3-ubyte").shape == (1, 1, 3)


def test_amat_gzip_bomb_of_other_bytes_stops_at_the_first_chunk(tmp_path):
    path = tmp_path / "binarized_mnist_test.amat"
    with gzip.open(path, "wb", compresslevel=1) as f:  # gzipped although named .amat
        for _ in range(64):
            f.write(bytes(1 << 20))
    raised, peak = _peak_bytes(lambda: data.load("binarized-mnist", "test", root=tmp_path))
    assert isinstance(raised, DataFormatError) and "0 and 1" in str(raised)
    assert peak < 16 << 20


# ---------------------------------------------------------------- CIFAR-10


class _Call:
    """Pickles as fn(*args) (the REDUCE of an allowed global)."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def _write_batch(path, batch):
    with open(path, "wb") as f:
        pickle.dump(batch, f, protocol=2)


def _reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct as fn
    except ImportError:  # numpy 1
        from numpy.core.multiarray import _reconstruct as fn
    return fn


@pytest.mark.parametrize(
    "builder",
    [
        lambda: _Call(np.ndarray, (300000, 3072), "u1"),
        lambda: _Call(_reconstruct(), np.ndarray, (300000, 3072), "u1"),
    ],
)
def test_cifar_pickle_cannot_build_huge_arrays(tmp_path, builder):
    """S3: a tiny batch whose pickle calls numpy.ndarray((300000, 3072), 'u1') through the
    allowed globals is refused before the array is allocated."""
    _write_batch(tmp_path / "test_batch", {b"data": builder(), b"labels": [0]})
    assert os.path.getsize(tmp_path / "test_batch") < 400
    raised, peak = _peak_bytes(lambda: data.load("cifar10", "test", root=tmp_path))
    assert isinstance(raised, DataFormatError), raised
    assert "refusing to build an array of shape (300000, 3072)" in str(raised)
    assert peak < 8 << 20


def test_cifar_file_larger_than_a_batch_is_refused_unread(tmp_path):
    path = tmp_path / "test_batch"
    with open(path, "wb") as f:
        f.truncate(70_000_000)  # sparse: no disk used
    with pytest.raises(DataFormatError, match="more than a CIFAR-10 batch can be"):
        data.load("cifar10", "test", root=tmp_path)


@pytest.mark.parametrize(
    "batch,words",
    [
        ({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}, ["uint8", "float32"]),
        ({b"data": np.full((2, 3072), 300, np.int64), b"labels": [0, 1]}, ["uint8", "int64"]),
        ({b"data": np.array(["ab", "cd"]), b"labels": [0, 1]}, ["uint8", "<U2"]),
        ({b"data": b"not an array", b"labels": [0, 1]}, ["'data'"]),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": 5}, ["labels", "int"]),
        (
            {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 12]},
            ["labels", "0..9", "[0, 12]"],
        ),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, "a"]}, ["labels"]),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, ["labels", "2 ints"]),
        ({b"data": np.zeros((2, 3000), np.uint8), b"labels": [0, 1]}, ["(N, 3072)", "(2, 3000)"]),
    ],
)
def test_cifar_batch_dtypes_and_labels_are_checked(tmp_path, batch, words):
    """W4 / U4: float or int64 data (read as 0 or wrapped mod 256), string data, labels that
    are not N ints in 0..9: a DataFormatError naming the key."""
    _write_batch(tmp_path / "test_batch", batch)
    with pytest.raises(DataFormatError) as err:
        data.load("cifar10", "test", root=tmp_path)
    for w in words:
        assert w in str(err.value), (w, str(err.value))


def test_cifar_labels_as_an_integer_array_are_accepted(tmp_path):
    _write_batch(
        tmp_path / "test_batch",
        {b"data": np.ones((2, 3072), np.uint8), b"labels": np.array([3, 9])},
    )
    test = data.load("cifar10", "test", root=tmp_path)
    assert test.labels.tolist() == [3, 9] and int(test.images.max()) == 1


# ---------------------------------------------------------------- PNG


def _png_chunk(kind, payload):
    body = kind + payload
    return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))


def _png_header_only(path, width, height):
    """A PNG whose IHDR claims width x height 8-bit greyscale, with one tiny IDAT."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + _png_chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("width,height", [(20000, 20000), (5000, 5000)])
def test_png_too_many_pixels_is_refused_before_decoding(tmp_path, width, height):
    """U4: a 400-Mpx PNG (PIL's decompression-bomb error) and a 25-Mpx one (over pixelar's
    limit): DataFormatError from the header, nothing decoded."""
    _png_header_only(tmp_path / "big.png", width, height)
    raised, _ = _peak_bytes(lambda: data.load("png", "train", root=tmp_path))
    assert isinstance(raised, DataFormatError), raised
    assert f"big.png: {width} x {height} pixels, more than the" in str(raised), str(raised)


def test_png_corrupt_file(tmp_path):
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(40))
    with pytest.raises(DataFormatError, match="b.png: cannot read as PNG"):
        data.load("png", "train", root=tmp_path)


def test_png_that_is_a_jpeg(tmp_path):
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "a.png", format="JPEG")
    with pytest.raises(DataFormatError, match="not a PNG file"):
        data.load("png", "train", root=tmp_path)


def test_png_16_bit_is_refused(tmp_path):
    """W4: a 16-bit greyscale PNG was read as all 255."""
    for i in range(3):
        Image.fromarray(np.full((4, 5), 1000 * i, np.uint16)).save(tmp_path / f"{i}.png")
    with pytest.raises(DataFormatError, match="16-bit"):
        data.load("png", "train", root=tmp_path)


def _bits(seed):
    return np.random.RandomState(seed).randint(0, 2, (4, 5)).astype(np.uint8)


def test_png_mixing_1_bit_and_8_bit_uses_one_scale(tmp_path):
    """W4: in a folder that mixes 1-bit and 8-bit greyscale PNGs, the 1-bit images count as
    0 and 255 (they were 0 and 1 beside 0..255 values)."""
    for i in range(5):
        Image.fromarray(_bits(i) * 255).convert("1").save(tmp_path / f"bit{i}.png")
    for i in range(5):
        Image.fromarray(np.full((4, 5), 100, np.uint8)).save(tmp_path / f"grey{i}.png")
    every = [data.load("png", s, root=tmp_path) for s in data.SPLITS]
    images = np.concatenate([d.images.numpy() for d in every])
    assert every[0].levels == 256
    assert set(np.unique(images).tolist()) <= {0, 100, 255}
    assert (images == 255).any()


def test_png_mixing_1_bit_and_rgb_of_the_same_size_loads(tmp_path):
    """U4: this said 'must be the same size' although the sizes were equal."""
    Image.fromarray(_bits(0) * 255).convert("1").save(tmp_path / "a.png")
    for i in range(4):
        Image.fromarray(np.full((4, 5, 3), 9 * i, np.uint8)).save(tmp_path / f"rgb{i}.png")
    images = np.concatenate(
        [data.load("png", s, root=tmp_path).images.numpy() for s in data.SPLITS]
    )
    assert images.shape == (5, 3, 4, 5)
    bit = _bits(0) * 255
    assert any(np.array_equal(img, np.stack([bit] * 3)) for img in images)


def test_png_different_sizes_message_gives_both_sizes(tmp_path):
    Image.fromarray(np.zeros((4, 5), np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.zeros((4, 6), np.uint8)).save(tmp_path / "b.png")
    with pytest.raises(DataFormatError) as err:
        data.load("png", "train", root=tmp_path)
    assert "6 x 4" in str(err.value) and "5 x 4" in str(err.value)
