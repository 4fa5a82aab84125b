"""PNG in and out: a folder of PNGs as a dataset, and image grids written as PNG.

    png  a folder of same-sized PNGs (searched recursively, sorted by path). Greyscale
         images give (1, H, W), anything else RGB (3, H, W); 256 levels, or 2 when every
         file is a 1-bit PNG (in a folder that mixes them, 1-bit images count as 0 and
         255). When every image sits in a subfolder, the subfolder names (sorted) are the
         labels. Splits: a seeded 80/10/10 permutation.

Every file's header is checked before any image is decoded: it must be a PNG of 8 bits
(or 1 bit) per sample, of at most MAX_PIXELS pixels, and all of the same width and height;
16-bit and float images, corrupt files and larger images are a DataFormatError.
"""

import math
import os
import struct
import zlib

import numpy as np
from PIL import Image

from .errors import DataFileNotFoundError, DataFormatError
from .imageset import ImageSet, check_split, make_imageset, seeded_split

GREY_MODES = ("1", "L", "LA")
COLOUR_MODES = ("RGB", "RGBA", "P", "PA")  # 8 bits per sample (P: a palette of RGB colours)
MAX_PIXELS = 1 << 24  # 16.8 Mpx (4096 x 4096) per image
# what PIL raises on corrupt or hostile files, besides OSError
_PIL_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    zlib.error,
    struct.error,
    Image.DecompressionBombError,
)


def _png_paths(root):
    if root is None or not os.path.isdir(root):
        where = (
            "no folder was given" if root is None else f"{os.path.abspath(root)} is not a folder"
        )
        raise DataFileNotFoundError(
            f"png: {where}. Put your .png images (all the same size) in "
            f"a folder, optionally in one subfolder per class, and pass "
            f"it as --data-dir DIR (Python: root=DIR)."
        )
    paths = sorted(
        os.path.join(d, f)
        for d, _, files in os.walk(root)
        for f in files
        if f.lower().endswith(".png")
    )
    if not paths:
        raise DataFileNotFoundError(
            f"png: no .png files in {os.path.abspath(root)}. Put your "
            f"images there (all the same size), optionally in one "
            f"subfolder per class."
        )
    return paths


def _header(path):
    """(mode, (width, height)) of a PNG, from its header only (nothing decoded)."""
    with open(path, "rb") as f:
        ihdr = f.read(26)  # signature (8), chunk length and type (8), width, height, depth
    if len(ihdr) == 26 and ihdr[:8] == b"\x89PNG\r\n\x1a\n" and ihdr[12:16] == b"IHDR":
        width, height = struct.unpack(">II", ihdr[16:24])
        if width * height > MAX_PIXELS:
            raise DataFormatError(
                f"{path}: {width} x {height} pixels, more than the "
                f"{MAX_PIXELS:,} a dataset image may have"
            )
        if ihdr[24] == 16:
            raise DataFormatError(
                f"{path}: a 16-bit PNG is not supported (its values would "
                f"be cut to 8 bits); convert the images to 8-bit greyscale "
                f"or RGB"
            )
    try:
        with Image.open(path) as im:
            fmt, mode, size = im.format, im.mode, im.size
    except _PIL_ERRORS as exc:
        raise DataFormatError(f"{path}: cannot read as PNG ({type(exc).__name__}: {exc})") from exc
    if fmt != "PNG":
        raise DataFormatError(f"{path}: not a PNG file ({fmt} data)")
    if mode not in GREY_MODES + COLOUR_MODES:
        raise DataFormatError(
            f"{path}: PNG mode {mode!r} (16-bit or wider samples) is not "
            f"supported; convert the images to 8-bit greyscale or RGB"
        )
    if size[0] * size[1] > MAX_PIXELS:
        raise DataFormatError(
            f"{path}: {size[0]} x {size[1]} pixels, more than the "
            f"{MAX_PIXELS:,} a dataset image may have"
        )
    return mode, size


def _read(path, rgb, binary):
    """(C, H, W) uint8: 0/1 when ``binary`` (every file 1-bit), else 0..255 (1-bit: 0/255)."""
    try:
        with Image.open(path) as im:
            im.load()
            if binary:
                return np.asarray(im, dtype=np.uint8)[None]
            if rgb:
                return np.asarray(im.convert("RGB"), dtype=np.uint8).transpose(2, 0, 1)
            return np.asarray(im.convert("L"), dtype=np.uint8)[None]
    except _PIL_ERRORS as exc:
        raise DataFormatError(f"{path}: cannot read as PNG ({type(exc).__name__}: {exc})") from exc


def load_png_folder(root, split="train") -> ImageSet:
    """A folder of PNGs -> ImageSet (see the module docstring for the conventions)."""
    check_split(split)
    paths = _png_paths(root)
    headers = [_header(p) for p in paths]
    for p, (_, size) in zip(paths, headers):
        if size != headers[0][1]:
            raise DataFormatError(
                f"png: {p} is {size[0]} x {size[1]} pixels (width x "
                f"height), {paths[0]} {headers[0][1][0]} x "
                f"{headers[0][1][1]}; every image must be the same size"
            )
    modes = [m for m, _ in headers]
    binary = all(m == "1" for m in modes)
    rgb = not all(m in GREY_MODES for m in modes)
    rel = [os.path.relpath(p, root) for p in paths]
    labelled = all(os.sep in r for r in rel)
    classes = sorted({r.split(os.sep)[0] for r in rel}) if labelled else None
    idx = seeded_split(len(paths), split, (0.8, 0.1, 0.1), seed=0)
    images = []
    for i in idx:
        arr = _read(paths[i], rgb, binary)
        if images and arr.shape != images[0].shape:  # a header that lied about the size
            raise DataFormatError(
                f"png: {paths[i]} decodes to shape {arr.shape}, the others to {images[0].shape}"
            )
        images.append(arr)
    if not images:
        raise DataFormatError(f"png: the {split} split of {len(paths)} images is empty")
    labels = None
    if labelled:
        labels = np.array([classes.index(rel[i].split(os.sep)[0]) for i in idx])
    return make_imageset(np.stack(images), labels, 2 if binary else 256, "png", split)


def image_grid(images, levels, ncol=None, pad=2, min_size=64, group=1):
    """Tile images into one uint8 picture, upscaled (nearest) so each image is at least
    ``min_size`` pixels high.

    images: (N, C, H, W) integers in [0, levels) (numpy or torch), C = 1 or 3
    group: columns come in groups of this many (e.g. 2: an original beside its
        completion), with a wider gap between groups
    Returns (rows, cols) or (rows, cols, 3) uint8; the background between images is grey.
    """
    images = np.asarray(images.cpu() if hasattr(images, "cpu") else images)
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be (N, 1 or 3, H, W), got {images.shape}")
    n, C, H, W = images.shape
    ncol = ncol or max(1, math.ceil(math.sqrt(n)))
    nrow = math.ceil(n / ncol)
    scale = max(1, math.ceil(min_size / H))
    pix = (images.astype(np.float64) * 255.0 / (levels - 1)).round().astype(np.uint8)
    pix = pix.repeat(scale, axis=2).repeat(scale, axis=3)
    h, w = H * scale, W * scale
    gap = 4 * pad if group > 1 else 0  # extra space between groups of columns
    width = ncol * (w + pad) + pad + gap * ((ncol - 1) // group)
    grid = np.full((C, nrow * (h + pad) + pad, width), 128, dtype=np.uint8)
    for k in range(n):
        r, c = divmod(k, ncol)
        y, x = pad + r * (h + pad), pad + c * (w + pad) + gap * (c // group)
        grid[:, y : y + h, x : x + w] = pix[k]
    return grid[0] if C == 1 else grid.transpose(1, 2, 0)


def save_grid(path, images, levels, ncol=None, pad=2, min_size=64, group=1):
    """Write ``image_grid(images, levels, ncol, pad, min_size, group)`` to ``path`` as PNG."""
    grid = image_grid(images, levels, ncol, pad, min_size, group)
    Image.fromarray(grid).save(path)
    return path
