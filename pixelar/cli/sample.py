"""``pixelar sample``: a PNG grid (+ .npy) of samples, or completions (--condition-top K)."""

import math
import os
import time

import numpy as np
import torch

from .. import data as datasets
from .errors import CLIError
from .inputs import check_output_file, dataset, device, fit, image_extensions, load, out_beside
from .options import COUNT, NONNEG, SEED, add_checkpoint_command, add_data_args, number

MAX_SAMPLES = 10_000  # images per `pixelar sample` call (one PNG grid)


def add_parser(subparsers):
    p = add_checkpoint_command(
        subparsers,
        "sample",
        "write samples (or completions) as a PNG grid and .npy",
        "Sample images from a trained model into a PNG grid (and the same images as .npy, "
        "(n, C, H, W) int64).",
    )
    p.add_argument(
        "-n",
        type=number(int, 1, MAX_SAMPLES),
        default=16,
        help=f"number of images (default 16, at most {MAX_SAMPLES})",
    )
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--out", help="PNG path (default: samples.png beside the checkpoint)")
    p.add_argument("--ncol", type=COUNT, help="images per grid row")
    p.add_argument(
        "--naive",
        action="store_true",
        help="naive sampler (a full forward pass per dimension) instead of the fast cached one",
    )
    p.add_argument(
        "--condition-top",
        type=NONNEG,
        metavar="K",
        help="completion: keep the top K "
        "rows of the first n images of --data/--split and sample the rest; the "
        "grid shows each original beside its completion",
    )
    add_data_args(p, what="--condition-top")
    p.add_argument("--split", default="test", choices=datasets.SPLITS)
    p.set_defaults(func=run)
    return p


def _completions(args, model, ckpt, generator):
    """(samples, grid, ncol, group): the first n images of --data/--split with all rows
    from K = --condition-top on sampled; the grid pairs each original with its completion."""
    H = model.image_shape[1]
    if not 0 <= args.condition_top <= H:
        raise CLIError(f"--condition-top must be in [0, {H}], got {args.condition_top}")
    data = fit(model, dataset(args, ckpt, args.split), f"{args.data or 'the data'}")
    originals = data.images[: args.n]
    if len(originals) < args.n:
        raise CLIError(f"{data.name} {args.split} has only {len(originals)} images")
    condition = originals.clone()
    condition[:, :, args.condition_top :, :] = -1
    samples = model.sample(
        args.n,
        fast=not args.naive,
        generator=generator,
        condition=condition.to(device(args.device)),
        progress=not args.no_progress,
    )
    grid = torch.stack([originals, samples.cpu()], dim=1).flatten(0, 1)  # pairs
    return samples, grid, 2 * (args.ncol or math.ceil(math.sqrt(args.n))), 2


def run(args):
    from ..data import save_grid

    out = args.out or out_beside(args.checkpoint, "samples.png")
    check_output_file(out, "--out", image_extensions())
    model, ckpt = load(args)
    g = torch.Generator(device=device(args.device)).manual_seed(args.seed)
    t0 = time.perf_counter()
    if args.condition_top is None:
        samples = model.sample(
            args.n, fast=not args.naive, generator=g, progress=not args.no_progress
        )
        grid, ncol, group = samples, args.ncol, 1
    else:
        samples, grid, ncol, group = _completions(args, model, ckpt, g)
    seconds = time.perf_counter() - t0
    save_grid(out, grid.cpu(), model.levels, ncol=ncol, group=group)
    npy = os.path.splitext(out)[0] + ".npy"
    np.save(npy, samples.cpu().numpy())
    what = (
        "samples"
        if args.condition_top is None
        else f"completions of the top {args.condition_top} rows (each beside its original)"
    )
    print(
        f"{args.n} {what} in {seconds:.2f} s ({'naive' if args.naive else 'fast'} "
        f"sampler): wrote {out} and {npy}"
    )
    return 0
