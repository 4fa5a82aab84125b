"""The inputs and outputs of the subcommands, checked before any work: the device, the
checkpoint and its model, a dataset split that fits the model, output folders and files.
A problem is a ``CLIError`` (one line, exit status 2)."""

import json
import os
import tempfile

from .. import data as datasets
from ..training import distributed
from ..training.checkpoint import load_checkpoint
from .errors import CLIError


def device(name):
    """The torch device for --device ``name`` (this process's GPU under torchrun)."""
    return distributed.pick_device(name, int(os.environ.get("LOCAL_RANK", 0)))


def parse_kv(items):
    """['hidden=16', 'layer=diagonal'] -> {'hidden': 16, 'layer': 'diagonal'} (JSON values)."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise CLIError(f"--model-arg expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def load(args):
    """(model, checkpoint) from args.checkpoint, on args.device. A checkpoint with NaN or
    inf weights is refused (CheckpointError)."""
    ckpt = load_checkpoint(args.checkpoint)
    model = ckpt.build_model().to(device(args.device)).eval()
    return model, ckpt


def dataset(args, ckpt, split, name=None, data_dir=None, binarize=None):
    """Load a split of args.data (default: the checkpoint's training data)."""
    trained = ckpt.train_state.get("config", {}) if ckpt is not None else {}
    name = name or args.data or trained.get("data")
    if name is None:
        raise CLIError("this checkpoint does not record its training data; pass --data")
    if name not in datasets.DATASETS:
        raise CLIError(f"unknown dataset {name!r}; choose one of {', '.join(datasets.DATASETS)}")
    if data_dir is None:
        data_dir = args.data_dir if args.data else args.data_dir or trained.get("data_dir")
    if binarize is None:
        binarize = (
            args.binarize
            if args.binarize is not None
            else (trained.get("binarize", False) if not args.data else False)
        )
    return datasets.load(name, split, data_dir, binarize or False)


def fit(model, dataset, what):
    """Check that ``dataset`` fits the model's image shape; binarize it for a binary model."""
    if tuple(dataset.image_shape) != tuple(model.image_shape):
        raise CLIError(
            f"{what} has images of shape {dataset.image_shape}, the model "
            f"expects {tuple(model.image_shape)}"
        )
    if dataset.levels != model.levels:
        if model.levels != 2:
            raise CLIError(f"{what} has {dataset.levels} levels, the model {model.levels}")
        print(f"note: binarizing {what} ({dataset.levels} levels) for this binary model")
        dataset = dataset.binarized()
    return dataset


def out_beside(checkpoint, name):
    """A default output path next to the checkpoint: FOLDER/name."""
    folder = checkpoint if os.path.isdir(checkpoint) else os.path.dirname(checkpoint) or "."
    return os.path.join(folder, name)


def _probe_folder(folder, what):
    """Create ``folder`` and check a file can be written in it (CLIError otherwise)."""
    try:
        os.makedirs(folder, exist_ok=True)
        if not os.path.isdir(folder):
            raise NotADirectoryError(20, "not a folder")
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise CLIError(f"{what} {folder}: cannot write there ({exc.strerror or exc})") from exc


def check_output_folder(path, what):
    """An output folder is usable: it is (or can be made) a writable folder."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise CLIError(f"{what} {path} is a file, not a folder")
    _probe_folder(path, what)


def check_output_file(path, what, extensions=None):
    """An output file can be written: not a folder, an allowed extension, a writable
    folder."""
    if os.path.isdir(path):
        raise CLIError(f"{what} {path} is a folder; give a file name")
    ext = os.path.splitext(path)[1].lower()
    if extensions is not None and ext not in extensions:
        raise CLIError(
            f"{what} {path} must end in an image extension: {', '.join(sorted(extensions))}"
        )
    _probe_folder(os.path.dirname(os.path.abspath(path)), what)


def image_extensions():
    """Extensions PIL can write a grey or RGB grid to, among the usual ones."""
    from PIL import Image

    Image.init()
    known = Image.registered_extensions()
    return {
        ext
        for ext in (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
        if known.get(ext) in Image.SAVE
    }
