"""``pixelar score``: per-image NLL; AUROC and a histogram against out-of-distribution data
(the computation is ``pixelar.training.anomaly.score_anomalies``)."""

import os

import numpy as np

from .. import data as datasets
from ..training.checkpoint import atomic_write_json
from .errors import CLIError
from .inputs import check_output_folder, dataset, fit, load, out_beside
from .options import COUNT, SEED, add_checkpoint_command, add_data_args


def add_parser(subparsers):
    p = add_checkpoint_command(
        subparsers,
        "score",
        "per-image NLL; AUROC + histogram vs. out-of-distribution images",
        "Density-based anomaly detection: the NLL of every image of a set; with --ood-corrupt "
        "or --ood-data, the AUROC of telling the out-of-distribution images apart by higher "
        "NLL, and a histogram PNG of both. Example: --ood-corrupt flip:0.1 (the test digits "
        "with 10% of pixels flipped).",
    )
    add_data_args(p, what="in-distribution images")
    p.add_argument("--split", default="test", choices=datasets.SPLITS)
    p.add_argument(
        "--ood-corrupt",
        metavar="KIND:FRACTION",
        help="out-of-distribution set = "
        "the in-distribution images with a fraction of pixels flipped (flip:0.1) or "
        "set to random values (noise:0.1)",
    )
    p.add_argument("--ood-data", help="out-of-distribution dataset name (same image shape)")
    p.add_argument("--ood-data-dir")
    p.add_argument("--ood-split", default="test", choices=datasets.SPLITS)
    p.add_argument("--limit", type=COUNT, help="only the first N images of each set")
    p.add_argument("--seed", type=SEED, default=0, help="seed of the corruption")
    p.add_argument("--out", help="output folder (default: score/ beside the checkpoint)")
    p.set_defaults(func=run)
    return p


def parse_corruption(text):
    """'flip:0.1' -> ('flip', 0.1); the fraction defaults to 0.1 (CLIError when bad)."""
    kind, _, frac = text.partition(":")
    try:
        fraction = float(frac) if frac else 0.1
    except ValueError:
        fraction = None
    if kind not in ("flip", "noise") or fraction is None or not 0 <= fraction <= 1:
        raise CLIError(
            f"--ood-corrupt expects flip:FRACTION or noise:FRACTION with FRACTION "
            f"in [0, 1], got {text!r}"
        )
    return kind, fraction


def _ood_set(args, model, ckpt, data, corruption):
    """(images, label) of the out-of-distribution set, or (None, None) without one."""
    from ..training.anomaly import corrupt, corruption_label

    if corruption is not None:
        kind, fraction = corruption
        return (
            corrupt(data.images, data.levels, kind, fraction, seed=args.seed),
            corruption_label(data.name, kind, fraction),
        )
    if args.ood_data:
        ood_set = dataset(
            args,
            ckpt,
            args.ood_split,
            name=args.ood_data,
            data_dir=args.ood_data_dir,
            binarize=False,
        )
        ood_set = fit(model, ood_set.subset(args.limit), f"--ood-data {args.ood_data}")
        return ood_set.images, f"{ood_set.name} {args.ood_split}"
    return None, None


def run(args):
    from ..training.anomaly import save_histogram, score_anomalies

    corruption = parse_corruption(args.ood_corrupt) if args.ood_corrupt else None
    model, ckpt = load(args)
    out = args.out or out_beside(args.checkpoint, "score")
    check_output_folder(out, "--out")
    data = fit(
        model, dataset(args, ckpt, args.split).subset(args.limit), f"{args.data or 'the data'}"
    )
    ood, ood_label = _ood_set(args, model, ckpt, data, corruption)
    scores = score_anomalies(
        model, data.images, ood, args.batch_size, progress=not args.no_progress
    )
    in_label = f"{data.name} {args.split}"
    np.save(os.path.join(out, "nll_in.npy"), scores.nll_in.numpy())
    report = {"in": {"data": data.name, "split": args.split, **scores.summary_in}}
    print(
        f"{in_label}: {len(scores.nll_in)} images, mean NLL "
        f"{report['in']['nll_nats']:.2f} nats; per-image NLL in {out}/nll_in.npy"
    )
    if ood is not None:
        np.save(os.path.join(out, "nll_ood.npy"), scores.nll_ood.numpy())
        report["ood"] = {"data": ood_label, **scores.summary_ood}
        report["auroc"] = scores.auroc
        hist = os.path.join(out, "histogram.png")
        save_histogram(
            hist,
            scores.nll_in.numpy(),
            scores.nll_ood.numpy(),
            in_label,
            ood_label,
            title=f"{type(model).__name__}: AUROC {scores.auroc:.3f}",
        )
        print(
            f"out-of-distribution: {ood_label}, mean NLL {report['ood']['nll_nats']:.2f} "
            f"nats; AUROC (higher NLL = anomalous) {scores.auroc:.4f}; histogram {hist}"
        )
    atomic_write_json(os.path.join(out, "score.json"), report)
    return 0
