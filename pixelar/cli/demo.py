"""``pixelar demo``: train PixelRNN, NADE and a baseline on the embedded digits (~3 min)."""

import os
import time

from .inputs import check_output_folder
from .options import SEED, add_backend_args


def add_parser(subparsers):
    p = subparsers.add_parser(
        "demo",
        help="train PixelRNN, NADE and a baseline on the embedded digits, evaluate, "
        "sample (~3 min on 2 CPU cores)",
        description="Train a Diagonal BiLSTM PixelRNN, a NADE and the independent-pixel "
        "baseline on digits28-binary (embedded, no network), report test NLL, sample grids, "
        "and write PNGs, metrics.json and checkpoints into one folder.",
    )
    p.add_argument("--out", help="output folder (default: runs/demo-DATE-TIME)")
    p.add_argument("--quick", action="store_true", help="tiny models and data (seconds; for tests)")
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_backend_args(p, threads=1)
    p.set_defaults(func=run)
    return p


def run(args):
    from ..training.demo import run_demo

    out = args.out or os.path.join("runs", time.strftime("demo-%Y%m%d-%H%M%S"))
    check_output_folder(out, "--out")
    print(f"pixelar demo: writing to {os.path.abspath(out)}")
    run_demo(
        out, quick=args.quick, seed=args.seed, device=args.device, progress=not args.no_progress
    )
    return 0
