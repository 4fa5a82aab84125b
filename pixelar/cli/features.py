"""``pixelar features``: a linear probe on the model's features versus on raw pixels."""

import os

import numpy as np

from .. import data as datasets
from ..training.checkpoint import atomic_write_json
from .errors import CLIError
from .inputs import check_output_folder, dataset, fit, load, out_beside
from .options import COUNT, add_checkpoint_command, add_data_args


def add_parser(subparsers):
    p = add_checkpoint_command(
        subparsers,
        "features",
        "linear probe on the model's features vs raw pixels",
        "Extract the model's hidden features (NADE's hidden layer, PixelRNN's last recurrent "
        "layer or PixelCNN's last block averaged over positions) and compare "
        "logistic-regression accuracy on the labels with the same probe on raw pixels.",
    )
    add_data_args(p, what="the probe (needs labels)")
    p.add_argument(
        "--split",
        default="test",
        choices=datasets.SPLITS,
        help="split the probe is scored on (trained on train)",
    )
    p.add_argument("--limit", type=COUNT, help="only the first N images of each split")
    p.add_argument("--out", help="output folder (default: features/ beside the checkpoint)")
    p.set_defaults(func=run)
    return p


def run(args):
    from ..training.features import probe

    model, ckpt = load(args)
    out = args.out or out_beside(args.checkpoint, "features")
    check_output_folder(out, "--out")
    train_set = fit(model, dataset(args, ckpt, "train").subset(args.limit), "the data")
    test_set = fit(model, dataset(args, ckpt, args.split).subset(args.limit), "the data")
    try:
        report, ftr, fte = probe(model, train_set, test_set, args.batch_size)
    except ValueError as exc:
        raise CLIError(str(exc)) from exc
    np.save(os.path.join(out, "features_train.npy"), ftr.numpy())
    np.save(os.path.join(out, f"features_{args.split}.npy"), fte.numpy())
    report.update(model=type(model).__name__, data=train_set.name, split=args.split)
    atomic_write_json(os.path.join(out, "features.json"), report)
    print(
        f"{type(model).__name__} features ({report['feature_dim']} dims) on "
        f"{train_set.name}: linear-probe accuracy {report['probe_accuracy']:.4f} on "
        f"{args.split} vs raw pixels {report['raw_pixels_accuracy']:.4f} (chance "
        f"{report['chance']:.4f}, {report['n_train']} train / {report['n_test']} test); "
        f"features in {out}"
    )
    return 0
