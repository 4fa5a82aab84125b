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

Each subcommand has --help. Commands that read a checkpoint take a training folder (its
best checkpoint) or a checkpoint path, and default to the data the model was trained on.
Every user error (a bad value, an unusable output path, a damaged checkpoint) is one line
on stderr and exit status 2, found before any work starts; a failure while running (a
diverged training, a full disk, a lost DDP peer) is one line and exit status 1.
"""
import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np
import torch

import pixelar

from . import data as datasets
from .training.atomic import OutputWriteError
from .training.checkpoint import (CheckpointError, CheckpointWarning, atomic_write_json,
                                  load_checkpoint)
from .training.distributed import DEFAULT_TIMEOUT, DeviceError, PeerError
from .training.run_lock import RunLockedError
from .training.trainer import RESUME_OVERRIDES, TrainConfig, TrainingDiverged, TrainingError

BENCHMARKS = {"ops": "ops.py", "sampling": "sampling.py", "results": "results_table.py"}
MAX_SAMPLES = 10_000  # images per `pixelar sample` call (one PNG grid)


class CLIError(Exception):
    """A usage error: printed as one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    """argparse, with a usage error printed as one line (exit status 2)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# ---------------------------------------------------------------------------- values

def _number(kind, low=None, high=None, finite=True):
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
            bounds = (f"between {low} and {high}" if low is not None and high is not None
                      else f">= {low}" if low is not None else f"<= {high}")
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {text}")
        return value
    parse.__name__ = kind.__name__
    return parse


COUNT = _number(int, 1)          # sizes, counts: 1 or more
NONNEG = _number(int, 0)
RATE = _number(float, 0.0)       # learning rate, weight decay, clip: finite, >= 0
SEED = _number(int, 0, 2 ** 32 - 1)
SECONDS = _number(float, 0.0)    # a time budget: finite, >= 0 (0 pauses at once)


# ---------------------------------------------------------------------------- output paths

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
        raise CLIError(f"{what} {path} must end in an image extension: "
                       f"{', '.join(sorted(extensions))}")
    _probe_folder(os.path.dirname(os.path.abspath(path)), what)


def _image_extensions():
    """Extensions PIL can write a grey or RGB grid to, among the usual ones."""
    from PIL import Image
    Image.init()
    known = Image.registered_extensions()
    return {ext for ext in (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
            if known.get(ext) in Image.SAVE}


# ---------------------------------------------------------------------------- helpers

def _backend_args(p, threads=None):
    p.add_argument("--threads", type=COUNT, default=threads,
                   help="CPU threads for torch (default: " + (
                       f"{threads}: the small demo models run fastest on one thread, above "
                       f"all on a busy machine)" if threads else "torch's default)"))
    p.add_argument("--backend", default="auto", choices=pixelar.ops.BACKENDS,
                   help="kernels for the pixelar ops: 'auto' = compiled C++ on CPU, CUDA/Triton "
                        "on GPU; 'reference' = pure PyTorch (slow, needs no build) "
                        "(default: auto)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="where to run (default: cuda if available, else cpu)")


def _data_args(p, default=None, what="the data"):
    names = ", ".join(datasets.DATASETS)
    p.add_argument("--data", default=default,
                   help=f"dataset for {what}: {names}" + (
                       f" (default: {default})" if default else
                       " (default: the one the model was trained on)"))
    p.add_argument("--data-dir", default=None,
                   help="folder with the dataset's files (mnist, binarized-mnist, cifar10, png)")
    p.add_argument("--binarize", nargs="?", const="threshold", default=None,
                   choices=("threshold", "dynamic"),
                   help="make the images binary: --binarize (or 'threshold') thresholds them "
                        "at half their range; 'dynamic' draws each pixel from "
                        "Bernoulli(value / max), afresh each epoch when training (one fixed "
                        "draw for validation and evaluation)")


def _device(name):
    return pixelar.training.distributed.pick_device(name, int(os.environ.get("LOCAL_RANK", 0)))


def _parse_kv(items):
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


def _load(args):
    """(model, checkpoint) from args.checkpoint, on args.device. A checkpoint with NaN or
    inf weights is refused (CheckpointError)."""
    ckpt = load_checkpoint(args.checkpoint)
    model = ckpt.build_model().to(_device(args.device)).eval()
    return model, ckpt


def _dataset(args, ckpt, split, name=None, data_dir=None, binarize=None):
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
        binarize = args.binarize if args.binarize is not None else (
            trained.get("binarize", False) if not args.data else False)
    return datasets.load(name, split, data_dir, binarize or False)


def _fit(model, dataset, what):
    """Check that ``dataset`` fits the model's image shape; binarize it for a binary model."""
    if tuple(dataset.image_shape) != tuple(model.image_shape):
        raise CLIError(f"{what} has images of shape {dataset.image_shape}, the model "
                       f"expects {tuple(model.image_shape)}")
    if dataset.levels != model.levels:
        if model.levels != 2:
            raise CLIError(f"{what} has {dataset.levels} levels, the model {model.levels}")
        print(f"note: binarizing {what} ({dataset.levels} levels) for this binary model")
        dataset = dataset.binarized()
    return dataset


def _out_beside(checkpoint, name):
    """A default output path next to the checkpoint: FOLDER/name."""
    folder = checkpoint if os.path.isdir(checkpoint) else os.path.dirname(checkpoint) or "."
    return os.path.join(folder, name)


# ---------------------------------------------------------------------------- commands

def cmd_demo(args):
    from .training.demo import run_demo
    out = args.out or os.path.join("runs", time.strftime("demo-%Y%m%d-%H%M%S"))
    check_output_folder(out, "--out")
    print(f"pixelar demo: writing to {os.path.abspath(out)}")
    run_demo(out, quick=args.quick, seed=args.seed, device=args.device,
             progress=not args.no_progress)
    return 0


def cmd_train(args):
    from .training.trainer import train
    config = TrainConfig(
        model=args.model, model_args=_parse_kv(args.model_arg), data=args.data,
        data_dir=args.data_dir, binarize=args.binarize or False, train_subset=args.train_subset,
        val_subset=args.val_subset, epochs=args.epochs, max_steps=args.max_steps,
        batch_size=args.batch_size, eval_batch_size=args.eval_batch_size,
        optimizer=args.optimizer, lr=args.lr, weight_decay=args.weight_decay,
        clip=args.clip if args.clip > 0 else None,
        patience=args.patience if args.patience > 0 else None,
        seed=args.seed, checkpoint_every=args.checkpoint_every, device=args.device,
        max_time=args.time_budget, tensorboard=args.tensorboard)
    out = args.out or os.path.join("runs", f"{args.model.lower()}-{args.data}")
    if args.resume and args.overwrite:
        raise CLIError("--resume continues the run in --out, --overwrite deletes it: pass one")
    check_output_folder(out, "--out")
    if args.resume:
        print(f"resuming {out}: only {', '.join(RESUME_OVERRIDES)} may change; every other "
              f"setting comes from the checkpoint")
    result = train(config, out, resume=args.resume, overwrite=args.overwrite,
                   progress=not args.no_progress, ddp_timeout=args.ddp_timeout)
    if int(os.environ.get("RANK", "0")) == 0:
        best = result["best_val_bpd"]
        print(f"{result['status']} after {result['global_step']} steps; best validation "
              f"{best if best is None else round(best, 4)} bits/dim; checkpoints in "
              f"{os.path.abspath(out)}")
    return 0


def cmd_eval(args):
    from .training.evaluate import evaluate, format_metrics
    model, ckpt = _load(args)
    if args.json:
        check_output_file(args.json, "--json")
    data = _fit(model, _dataset(args, ckpt, args.split).subset(args.limit),
                f"{args.data or 'the data'} ({args.split})")
    t0 = time.perf_counter()
    m = evaluate(model, data.images, args.batch_size, progress=not args.no_progress)
    m.update(data=data.name, split=args.split, model=type(model).__name__,
             checkpoint=ckpt.path, seconds=time.perf_counter() - t0)
    print(f"{type(model).__name__} on {data.name} {args.split}: {format_metrics(m)}")
    if args.json:
        atomic_write_json(args.json, m)
        print(f"wrote {args.json}")
    return 0


def cmd_sample(args):
    from .data import save_grid
    out = args.out or _out_beside(args.checkpoint, "samples.png")
    check_output_file(out, "--out", _image_extensions())
    model, ckpt = _load(args)
    device = _device(args.device)
    g = torch.Generator(device=device).manual_seed(args.seed)
    t0 = time.perf_counter()
    if args.condition_top is None:
        samples = model.sample(args.n, fast=not args.naive, generator=g,
                               progress=not args.no_progress)
        grid, ncol, group = samples, args.ncol, 1
    else:
        H = model.image_shape[1]
        if not 0 <= args.condition_top <= H:
            raise CLIError(f"--condition-top must be in [0, {H}], got {args.condition_top}")
        data = _fit(model, _dataset(args, ckpt, args.split), f"{args.data or 'the data'}")
        originals = data.images[:args.n]
        if len(originals) < args.n:
            raise CLIError(f"{data.name} {args.split} has only {len(originals)} images")
        condition = originals.clone()
        condition[:, :, args.condition_top:, :] = -1
        samples = model.sample(args.n, fast=not args.naive, generator=g,
                               condition=condition.to(device), progress=not args.no_progress)
        grid = torch.stack([originals, samples.cpu()], dim=1).flatten(0, 1)  # pairs
        ncol, group = 2 * (args.ncol or math.ceil(math.sqrt(args.n))), 2
    seconds = time.perf_counter() - t0
    save_grid(out, grid.cpu(), model.levels, ncol=ncol, group=group)
    npy = os.path.splitext(out)[0] + ".npy"
    np.save(npy, samples.cpu().numpy())
    what = "samples" if args.condition_top is None else \
        f"completions of the top {args.condition_top} rows (each beside its original)"
    print(f"{args.n} {what} in {seconds:.2f} s ({'naive' if args.naive else 'fast'} "
          f"sampler): wrote {out} and {npy}")
    return 0


def _parse_corruption(text):
    kind, _, frac = text.partition(":")
    try:
        fraction = float(frac) if frac else 0.1
    except ValueError:
        fraction = None
    if kind not in ("flip", "noise") or fraction is None or not 0 <= fraction <= 1:
        raise CLIError(f"--ood-corrupt expects flip:FRACTION or noise:FRACTION with FRACTION "
                       f"in [0, 1], got {text!r}")
    return kind, fraction


def cmd_score(args):
    from .training.anomaly import auroc, corrupt, save_histogram
    from .training.evaluate import nll_per_image, summarize
    corruption = _parse_corruption(args.ood_corrupt) if args.ood_corrupt else None
    model, ckpt = _load(args)
    out = args.out or _out_beside(args.checkpoint, "score")
    check_output_folder(out, "--out")
    data = _fit(model, _dataset(args, ckpt, args.split).subset(args.limit),
                f"{args.data or 'the data'}")
    nll = nll_per_image(model, data.images, args.batch_size, progress=not args.no_progress)
    np.save(os.path.join(out, "nll_in.npy"), nll.numpy())
    report = {"in": {"data": data.name, "split": args.split, **summarize(nll, model.num_dims)}}
    print(f"{data.name} {args.split}: {len(nll)} images, mean NLL "
          f"{report['in']['nll_nats']:.2f} nats; per-image NLL in {out}/nll_in.npy")
    ood_label = None
    if corruption is not None:
        kind, fraction = corruption
        ood = corrupt(data.images, data.levels, kind, fraction, seed=args.seed)
        verb = "flipped" if kind == "flip" else "noised"
        ood_label = f"{data.name} with {fraction:g} of pixels {verb}"
    elif args.ood_data:
        ood_set = _dataset(args, ckpt, args.ood_split, name=args.ood_data,
                           data_dir=args.ood_data_dir, binarize=False)
        ood_set = _fit(model, ood_set.subset(args.limit), f"--ood-data {args.ood_data}")
        ood, ood_label = ood_set.images, f"{ood_set.name} {args.ood_split}"
    if ood_label is not None:
        nll_ood = nll_per_image(model, ood, args.batch_size, progress=not args.no_progress)
        np.save(os.path.join(out, "nll_ood.npy"), nll_ood.numpy())
        report["ood"] = {"data": ood_label, **summarize(nll_ood, model.num_dims)}
        report["auroc"] = auroc(nll.numpy(), nll_ood.numpy())
        hist = os.path.join(out, "histogram.png")
        save_histogram(hist, nll.numpy(), nll_ood.numpy(), f"{data.name} {args.split}",
                       ood_label, title=f"{type(model).__name__}: AUROC {report['auroc']:.3f}")
        print(f"out-of-distribution: {ood_label}, mean NLL {report['ood']['nll_nats']:.2f} "
              f"nats; AUROC (higher NLL = anomalous) {report['auroc']:.4f}; histogram {hist}")
    atomic_write_json(os.path.join(out, "score.json"), report)
    return 0


def cmd_features(args):
    from .training.features import probe
    model, ckpt = _load(args)
    out = args.out or _out_beside(args.checkpoint, "features")
    check_output_folder(out, "--out")
    train_set = _fit(model, _dataset(args, ckpt, "train").subset(args.limit), "the data")
    test_set = _fit(model, _dataset(args, ckpt, args.split).subset(args.limit), "the data")
    try:
        report, ftr, fte = probe(model, train_set, test_set, args.batch_size)
    except ValueError as exc:
        raise CLIError(str(exc)) from exc
    np.save(os.path.join(out, "features_train.npy"), ftr.numpy())
    np.save(os.path.join(out, f"features_{args.split}.npy"), fte.numpy())
    report.update(model=type(model).__name__, data=train_set.name, split=args.split)
    atomic_write_json(os.path.join(out, "features.json"), report)
    print(f"{type(model).__name__} features ({report['feature_dim']} dims) on "
          f"{train_set.name}: linear-probe accuracy {report['probe_accuracy']:.4f} on "
          f"{args.split} vs raw pixels {report['raw_pixels_accuracy']:.4f} (chance "
          f"{report['chance']:.4f}, {report['n_train']} train / {report['n_test']} test); "
          f"features in {out}")
    return 0


def cmd_data(args):
    from .data.binarized_mnist import make_binarized_mnist
    paths = make_binarized_mnist(args.data_dir, args.out, seed=args.seed,
                                 overwrite=args.overwrite, log=print)
    print(f"wrote {', '.join(paths)}; train with --data binarized-mnist --data-dir {args.out}")
    return 0


def cmd_plot(args):
    from .training.history import load_run, plot_runs
    try:
        runs = [load_run(r) for r in args.runs]
    except FileNotFoundError as exc:
        raise CLIError(str(exc)) from exc
    if args.unit == "nats":
        missing = [r["dir"] for r in runs if not r["num_dims"]]
        if missing:
            raise CLIError(f"cannot convert to nats: no checkpoint JSON with the image shape "
                           f"in {', '.join(missing)}; use --unit bpd")
    out = args.out or "curves.png"
    if plot_runs(out, runs, unit=args.unit, train=args.train, title=args.title) is None:
        raise CLIError("pixelar plot needs matplotlib: pip install matplotlib")
    print(f"wrote {out} ({len(runs)} run(s): "
          + ", ".join(f"{r['label']} {len(r['rows'])} epochs" for r in runs) + ")")
    return 0


def benchmarks_dir():
    """benchmarks/ of a source checkout (beside the pixelar package), or None."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(pixelar.__file__)))
    path = os.path.join(root, "benchmarks")
    return path if os.path.isdir(path) else None


def cmd_bench(args):
    folder = benchmarks_dir()
    names = list(BENCHMARKS) if args.which == "all" else [args.which]
    status = 0
    for name in names:
        script = os.path.join(folder, BENCHMARKS[name]) if folder else None
        if script is None or not os.path.isfile(script):
            where = (os.path.join(folder, BENCHMARKS[name]) if folder else
                     "benchmarks/ (it ships with the source checkout, not the installed package)")
            print(f"pixelar bench {name}: the benchmark script is missing: {where}",
                  file=sys.stderr)
            status = 2
            continue
        cmd = [sys.executable, script, *args.args]
        print("$ " + " ".join(cmd), flush=True)
        rc = subprocess.call(cmd)
        status = status or rc
    return status


# ---------------------------------------------------------------------------- parser

def build_parser():
    parser = Parser(
        prog="pixelar", description="Autoregressive image models (PixelRNN, PixelCNN, NADE, "
        "...): train, evaluate, sample, score and probe them.",
        epilog="Run 'pixelar COMMAND --help' for a command's options.")
    parser.add_argument("--version", action="version", version=f"pixelar {pixelar.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("demo", help="train PixelRNN, NADE and a baseline on the embedded "
                       "digits, evaluate, sample (~3 min on 2 CPU cores)",
                       description="Train a Diagonal BiLSTM PixelRNN, a NADE and the "
                       "independent-pixel baseline on digits28-binary (embedded, no network), "
                       "report test NLL, sample grids, and write PNGs, metrics.json and "
                       "checkpoints into one folder.")
    p.add_argument("--out", help="output folder (default: runs/demo-DATE-TIME)")
    p.add_argument("--quick", action="store_true", help="tiny models and data (seconds; for tests)")
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    _backend_args(p, threads=1)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("train", help="train a model (torchrun --nproc_per_node=N -m pixelar "
                       "train ... for several processes)",
                       description="Train an image model by maximum likelihood, checkpointing "
                       "OUT/last.safetensors and OUT/best.safetensors (each one file, replaced "
                       "atomically). Under torchrun it uses "
                       "DistributedDataParallel (gloo on CPU, nccl on GPU).")
    p.add_argument("--model", default="PixelRNN",
                   help="IndependentPixels, MarkovPixels, FVSBN, NADE, PixelCNN or PixelRNN "
                        "(case-insensitive; default: PixelRNN)")
    p.add_argument("--model-arg", action="append", metavar="KEY=VALUE",
                   help="constructor argument, repeatable: --model-arg layer=diagonal "
                        "--model-arg num_layers=7 --model-arg hidden=16")
    _data_args(p, default="digits28-binary", what="training (its train and val splits)")
    p.add_argument("--train-subset", type=COUNT, help="use only the first N training images")
    p.add_argument("--val-subset", type=COUNT, help="use only the first N validation images")
    p.add_argument("--epochs", type=COUNT, default=10)
    p.add_argument("--max-steps", type=COUNT, help="pause after this many steps in all "
                   "(checkpoint; continue with --resume)")
    p.add_argument("--time-budget", type=SECONDS, metavar="SECONDS",
                   help="pause after this many seconds of this sitting (checkpoint; continue "
                        "with --resume)")
    p.add_argument("--tensorboard", action="store_true", help="also log the per-epoch "
                   "scalars to OUT/tensorboard (needs: pip install tensorboard)")
    p.add_argument("--batch-size", type=COUNT, default=64, help="global batch size (default 64)")
    p.add_argument("--eval-batch-size", type=COUNT, default=256)
    p.add_argument("--optimizer", default="adam", choices=("adam", "rmsprop"))
    p.add_argument("--lr", type=RATE, default=1e-3)
    p.add_argument("--weight-decay", type=RATE, default=0.0)
    p.add_argument("--clip", type=RATE, default=1.0, help="max gradient norm; 0: no clipping")
    p.add_argument("--patience", type=NONNEG, default=5,
                   help="early stopping after N epochs without better validation bits/dim; "
                        "0: never (default 5)")
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--checkpoint-every", type=NONNEG, default=0,
                   help="also write OUT/last every N steps (default: each epoch)")
    p.add_argument("--out", help="output folder (default: runs/MODEL-DATA)")
    p.add_argument("--resume", action="store_true", help="continue OUT/last exactly where it "
                   "stopped (weights, optimizer, RNG, position in the epoch)")
    p.add_argument("--overwrite", action="store_true", help="start again even if OUT holds "
                   "a run: its checkpoints and metrics.json are deleted first")
    p.add_argument("--ddp-timeout", type=_number(float, 1.0), default=DEFAULT_TIMEOUT,
                   metavar="SECONDS", help="under torchrun, fail when another process does "
                   f"not answer for this long (default {DEFAULT_TIMEOUT:g})")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _backend_args(p)
    p.set_defaults(func=cmd_train)

    def checkpoint_command(name, help_, description):
        p = sub.add_parser(name, help=help_, description=description)
        p.add_argument("checkpoint", help="a training folder (uses its best checkpoint) or a "
                       "checkpoint PREFIX[.json|.safetensors]")
        p.add_argument("--batch-size", type=COUNT, default=256)
        p.add_argument("--no-progress", action="store_true", help="no progress bars")
        _backend_args(p)
        return p

    p = checkpoint_command("eval", "NLL in nats and bits/dim with a 95%% confidence interval",
                           "Evaluate the exact NLL of a dataset split under a trained model.")
    _data_args(p)
    p.add_argument("--split", default="test", choices=datasets.SPLITS)
    p.add_argument("--limit", type=COUNT, help="only the first N images")
    p.add_argument("--json", help="also write the metrics to this JSON file")
    p.set_defaults(func=cmd_eval)

    p = checkpoint_command("sample", "write samples (or completions) as a PNG grid and .npy",
                           "Sample images from a trained model into a PNG grid (and the "
                           "same images as .npy, (n, C, H, W) int64).")
    p.add_argument("-n", type=_number(int, 1, MAX_SAMPLES), default=16,
                   help=f"number of images (default 16, at most {MAX_SAMPLES})")
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--out", help="PNG path (default: samples.png beside the checkpoint)")
    p.add_argument("--ncol", type=COUNT, help="images per grid row")
    p.add_argument("--naive", action="store_true", help="naive sampler (a full forward pass "
                   "per dimension) instead of the fast cached one")
    p.add_argument("--condition-top", type=NONNEG, metavar="K", help="completion: keep the top K "
                   "rows of the first n images of --data/--split and sample the rest; the "
                   "grid shows each original beside its completion")
    _data_args(p, what="--condition-top")
    p.add_argument("--split", default="test", choices=datasets.SPLITS)
    p.set_defaults(func=cmd_sample)

    p = checkpoint_command("score", "per-image NLL; AUROC + histogram vs. out-of-distribution "
                           "images", "Density-based anomaly detection: the NLL of every image "
                           "of a set; with --ood-corrupt or --ood-data, the AUROC of telling "
                           "the out-of-distribution images apart by higher NLL, and a "
                           "histogram PNG of both. Example: --ood-corrupt flip:0.1 (the test "
                           "digits with 10% of pixels flipped).")
    _data_args(p, what="in-distribution images")
    p.add_argument("--split", default="test", choices=datasets.SPLITS)
    p.add_argument("--ood-corrupt", metavar="KIND:FRACTION", help="out-of-distribution set = "
                   "the in-distribution images with a fraction of pixels flipped (flip:0.1) or "
                   "set to random values (noise:0.1)")
    p.add_argument("--ood-data", help="out-of-distribution dataset name (same image shape)")
    p.add_argument("--ood-data-dir")
    p.add_argument("--ood-split", default="test", choices=datasets.SPLITS)
    p.add_argument("--limit", type=COUNT, help="only the first N images of each set")
    p.add_argument("--seed", type=SEED, default=0, help="seed of the corruption")
    p.add_argument("--out", help="output folder (default: score/ beside the checkpoint)")
    p.set_defaults(func=cmd_score)

    p = checkpoint_command("features", "linear probe on the model's features vs raw pixels",
                           "Extract the model's hidden features (NADE's hidden layer, "
                           "PixelRNN's last recurrent layer or PixelCNN's last block averaged "
                           "over positions) and compare logistic-regression accuracy on the "
                           "labels with the same probe on raw pixels.")
    _data_args(p, what="the probe (needs labels)")
    p.add_argument("--split", default="test", choices=datasets.SPLITS,
                   help="split the probe is scored on (trained on train)")
    p.add_argument("--limit", type=COUNT, help="only the first N images of each split")
    p.add_argument("--out", help="output folder (default: features/ beside the checkpoint)")
    p.set_defaults(func=cmd_features)

    p = sub.add_parser("bench", help="run the benchmark scripts under benchmarks/",
                       description="Run benchmarks/ops.py (kernels), benchmarks/sampling.py "
                       "(fast vs naive sampling) or benchmarks/results_table.py (test NLL of "
                       "every model on the digits). Extra arguments go to the script.")
    p.add_argument("which", choices=(*BENCHMARKS, "all"), help="which benchmark")
    p.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the script")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("data", help="prepare datasets (binarize-mnist)",
                       description="binarize-mnist: the fixed stochastic binarization of "
                       "Larochelle & Murray (each pixel drawn once from Bernoulli(value/255), "
                       "seeded), split 50,000 train / 10,000 valid (the last 10,000 training "
                       "images) / 10,000 test, written as binarized_mnist_{train,valid,test}"
                       ".amat for --data binarized-mnist.")
    p.add_argument("action", choices=("binarize-mnist",))
    p.add_argument("--data-dir", required=True, help="folder with MNIST: the IDX files or "
                   "mnist_train.csv / mnist_test.csv (.gz or not)")
    p.add_argument("--out", required=True, help="folder for the three .amat files")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace existing .amat files")
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("plot", help="learning curves of training folders on one figure",
                       description="Draw the validation curves (bits/dim or nats against "
                       "epochs and against wall-clock hours) of one or more training folders "
                       "(their metrics.json) on one PNG. Needs matplotlib.")
    p.add_argument("runs", nargs="+", metavar="RUN", help="training folders")
    p.add_argument("--out", help="PNG path (default: curves.png)")
    p.add_argument("--unit", default="bpd", choices=("bpd", "nats"))
    p.add_argument("--train", action="store_true", help="also draw the training curves")
    p.add_argument("--title")
    p.set_defaults(func=cmd_plot)
    return parser


def _one_line(exc):
    return " ".join(str(exc).split()) or type(exc).__name__


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    prog = f"pixelar {args.command}"
    threads, backend = torch.get_num_threads(), pixelar.ops.get_backend()

    def show_warning(message, category, *rest, **kw):
        if issubclass(category, CheckpointWarning):
            print(f"{prog}: warning: {_one_line(message)}", file=sys.stderr)
        else:
            previous_show(message, category, *rest, **kw)

    previous_show = warnings.showwarning
    warnings.showwarning = show_warning
    try:
        if hasattr(args, "backend"):
            pixelar.ops.set_backend(args.backend)
        if getattr(args, "device", None) is not None:
            _device(args.device)  # --device cuda without a GPU: say so before any work
        if getattr(args, "threads", None):
            torch.set_num_threads(args.threads)
        return args.func(args)
    except (CLIError, TrainingError, CheckpointError, datasets.DataFileNotFoundError,
            datasets.DataFormatError, RunLockedError, DeviceError, FileExistsError) as exc:
        print(f"{prog}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except (TrainingDiverged, OutputWriteError, PeerError) as exc:
        print(f"{prog}: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    except OSError as exc:  # writing an output failed midway (disk full, permissions, ...)
        where = f" {exc.filename}" if getattr(exc, "filename", None) else ""
        print(f"{prog}: error: cannot write{where}: {exc.strerror or _one_line(exc)}",
              file=sys.stderr)
        return 1
    except RuntimeError as exc:
        if not str(exc).startswith("pixelar.ops."):
            raise
        print(f"{prog}: error: backend '{args.backend}' cannot run this model here: "
              f"{_one_line(exc)} Use --backend reference for the pure-PyTorch kernels (slow), "
              f"or build the compiled ones: pip install --no-build-isolation -e .",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\n{prog}: interrupted", file=sys.stderr)
        return 130
    finally:  # leave the process as it was (main() may be called in-process)
        warnings.showwarning = previous_show
        torch.set_num_threads(threads)
        pixelar.ops.set_backend(backend)
