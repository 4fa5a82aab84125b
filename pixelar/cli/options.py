"""What the subcommands share on their command lines: the parser class, the argument types
(checked numbers) and the option groups (--threads/--backend/--device, --data/--data-dir/
--binarize, and the checkpoint argument of eval/sample/score/features)."""

import argparse
import math

import pixelar

from .. import data as datasets


class Parser(argparse.ArgumentParser):
    """argparse, with a usage error printed as one line (exit status 2)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def number(kind, low=None, high=None, finite=True):
    """An argparse type: ``kind`` (int or float) in [low, high], finite for floats."""

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            what = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if kind is float and finite and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = (
                f"between {low} and {high}"
                if low is not None and high is not None
                else f">= {low}"
                if low is not None
                else f"<= {high}"
            )
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


COUNT = number(int, 1)  # sizes, counts: 1 or more
NONNEG = number(int, 0)
RATE = number(float, 0.0)  # learning rate, weight decay, clip: finite, >= 0
SEED = number(int, 0, 2**32 - 1)
SECONDS = number(float, 0.0)  # a time budget: finite, >= 0 (0 pauses at once)


def add_backend_args(p, threads=None):
    """--threads, --backend and --device (main() applies them before the command runs)."""
    p.add_argument(
        "--threads",
        type=COUNT,
        default=threads,
        help="CPU threads for torch (default: "
        + (
            f"{threads}: the small demo models run fastest on one thread, above "
            f"all on a busy machine)"
            if threads
            else "torch's default)"
        ),
    )
    p.add_argument(
        "--backend",
        default="auto",
        choices=pixelar.ops.BACKENDS,
        help="kernels for the pixelar ops: 'auto' = compiled C++ on CPU, CUDA/Triton "
        "on GPU; 'reference' = pure PyTorch (slow, needs no build) "
        "(default: auto)",
    )
    p.add_argument(
        "--device",
        default="auto",
        choices=("auto", "cpu", "cuda"),
        help="where to run (default: cuda if available, else cpu)",
    )


def add_data_args(p, default=None, what="the data"):
    """--data, --data-dir and --binarize (default: the data the checkpoint was trained on)."""
    names = ", ".join(datasets.DATASETS)
    p.add_argument(
        "--data",
        default=default,
        help=f"dataset for {what}: {names}"
        + (f" (default: {default})" if default else " (default: the one the model was trained on)"),
    )
    p.add_argument(
        "--data-dir",
        default=None,
        help="folder with the dataset's files (mnist, binarized-mnist, cifar10, png)",
    )
    p.add_argument(
        "--binarize",
        nargs="?",
        const="threshold",
        default=None,
        choices=("threshold", "dynamic"),
        help="make the images binary: --binarize (or 'threshold') thresholds them "
        "at half their range; 'dynamic' draws each pixel from "
        "Bernoulli(value / max), afresh each epoch when training (one fixed "
        "draw for validation and evaluation)",
    )


def add_checkpoint_command(subparsers, name, help_, description):
    """A subcommand that reads a checkpoint: its positional argument, --batch-size,
    --no-progress and the backend options."""
    p = subparsers.add_parser(name, help=help_, description=description)
    p.add_argument(
        "checkpoint",
        help="a training folder (uses its best checkpoint) or a "
        "checkpoint PREFIX[.json|.safetensors]",
    )
    p.add_argument("--batch-size", type=COUNT, default=256)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_backend_args(p)
    return p
