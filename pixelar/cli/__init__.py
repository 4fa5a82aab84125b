"""The ``pixelar`` command (also ``python -m pixelar``):

    pixelar demo       train PixelRNN, NADE and a baseline on the embedded digits (~3 min)
    pixelar train      train any image model (torchrun --nproc_per_node=N -m pixelar train
                       for DistributedDataParallel)
    pixelar eval       test NLL in nats and bits/dim with a 95% confidence interval
    pixelar sample     a PNG grid (+ .npy) of samples, or completions (--condition-top K)
    pixelar score      per-image NLL; AUROC and a histogram against out-of-distribution data
    pixelar features   a linear probe on the model's features versus on raw pixels
    pixelar bench      run the scripts under benchmarks/
    pixelar data       prepare datasets (binarize-mnist: the fixed binarization of MNIST)
    pixelar plot       learning curves of one or more training folders on one figure

Each subcommand is one module of this package, its options beside its command:
``add_parser(subparsers)`` declares them, ``run(args)`` does the work (importing anything
heavy only then, so that ``pixelar --help`` stays light) and returns the exit status.

Each subcommand has --help. Commands that read a checkpoint take a training folder (its
best checkpoint) or a checkpoint path, and default to the data the model was trained on.
Every user error (a bad value, an unusable output path, a damaged checkpoint) is one line
on stderr and exit status 2, found before any work starts; a failure while running (a
diverged training, a full disk, a lost DDP peer) is one line and exit status 1 (the table
of both is ``errors.ERRORS``).
"""

import importlib
import os
import sys
import warnings

import torch

import pixelar

from ..training.checkpoint import CheckpointWarning
from .errors import CLIError, explain, one_line  # noqa: F401  (CLIError: part of the API)
from .inputs import device
from .options import Parser

# the subcommands, in the order --help lists them; each is the module pixelar.cli.NAME
COMMANDS = ("demo", "train", "eval", "sample", "score", "features", "bench", "data", "plot")


def build_parser():
    """The argument parser of the pixelar command, every subcommand's options included."""
    parser = Parser(
        prog="pixelar",
        description="Autoregressive image models (PixelRNN, PixelCNN, NADE, "
        "...): train, evaluate, sample, score and probe them.",
        epilog="Run 'pixelar COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"pixelar {pixelar.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").add_parser(sub)
    return parser


def _apply_settings(args):
    """--backend, --device (checked: --device cuda without a GPU says so before any work)
    and --threads, for the commands that have them."""
    if hasattr(args, "backend"):
        pixelar.ops.set_backend(args.backend)
    if getattr(args, "device", None) is not None:
        device(args.device)
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)


def main(argv=None):
    """Run the pixelar command on ``argv`` (default: sys.argv[1:]); returns the exit status.
    The process is left as it was: threads, backend and warning display are restored."""
    args = build_parser().parse_args(argv)
    prog = f"pixelar {args.command}"
    threads, backend = torch.get_num_threads(), pixelar.ops.get_backend()

    def show_warning(message, category, *rest, **kw):
        if issubclass(category, CheckpointWarning):
            print(f"{prog}: warning: {one_line(message)}", file=sys.stderr)
        else:
            previous_show(message, category, *rest, **kw)

    previous_show = warnings.showwarning
    warnings.showwarning = show_warning
    try:
        _apply_settings(args)
        return args.func(args)
    except KeyboardInterrupt:
        print(f"\n{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        reported = explain(exc, args)
        if reported is None:
            raise
        status, message = reported
        print(f"{prog}: error: {message}", file=sys.stderr)
        return status
    finally:  # leave the process as it was (main() may be called in-process)
        warnings.showwarning = previous_show
        torch.set_num_threads(threads)
        pixelar.ops.set_backend(backend)


def entry_point():
    """The ``pixelar`` command's process entry (the console script and ``python -m pixelar``):
    exit with ``main()``'s status. An interrupted command (status 130: Ctrl-C, SIGTERM, see
    ``pixelar.training.stop_signals``) ends with ``os._exit(130)`` once stdout and stderr
    are flushed (everything else was closed on the way out of ``main``). Once, under load,
    a stopped run printed "interrupted" and then died by SIGINT (status -2, no traceback):
    what CPython does at exit when it has flagged a KeyboardInterrupt as unhandled, which it
    does for one that left a ``PyRun_*`` call even if caught later (our reading)."""
    status = main()
    if status == 130:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    sys.exit(status)
