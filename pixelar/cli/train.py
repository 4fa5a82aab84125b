"""``pixelar train``: train any image model (``torchrun --nproc_per_node=N -m pixelar train``
for DistributedDataParallel)."""

import os

from ..training.config import RESUME_OVERRIDES, TrainConfig
from ..training.distributed import DEFAULT_TIMEOUT
from ..training.stop_signals import stop_signals
from .errors import CLIError
from .inputs import check_output_folder, parse_kv
from .options import COUNT, NONNEG, RATE, SECONDS, SEED, add_backend_args, add_data_args, number


def add_parser(subparsers):
    p = subparsers.add_parser(
        "train",
        help="train a model (torchrun --nproc_per_node=N -m pixelar train ... for "
        "several processes)",
        description="Train an image model by maximum likelihood, checkpointing "
        "OUT/last.safetensors and OUT/best.safetensors (each one file, replaced atomically). "
        "Under torchrun it uses DistributedDataParallel (gloo on CPU, nccl on GPU).",
    )
    p.add_argument(
        "--model",
        default="PixelRNN",
        help="IndependentPixels, MarkovPixels, FVSBN, NADE, PixelCNN or PixelRNN "
        "(case-insensitive; default: PixelRNN)",
    )
    p.add_argument(
        "--model-arg",
        action="append",
        metavar="KEY=VALUE",
        help="constructor argument, repeatable: --model-arg layer=diagonal "
        "--model-arg num_layers=7 --model-arg hidden=16",
    )
    add_data_args(p, default="digits28-binary", what="training (its train and val splits)")
    p.add_argument("--train-subset", type=COUNT, help="use only the first N training images")
    p.add_argument("--val-subset", type=COUNT, help="use only the first N validation images")
    p.add_argument("--epochs", type=COUNT, default=10)
    p.add_argument(
        "--max-steps",
        type=COUNT,
        help="pause after this many steps in all (checkpoint; continue with --resume)",
    )
    p.add_argument(
        "--time-budget",
        type=SECONDS,
        metavar="SECONDS",
        help="pause after this many seconds of this sitting (checkpoint; continue with --resume)",
    )
    p.add_argument(
        "--tensorboard",
        action="store_true",
        help="also log the per-epoch scalars to OUT/tensorboard (needs: pip install tensorboard)",
    )
    p.add_argument("--batch-size", type=COUNT, default=64, help="global batch size (default 64)")
    p.add_argument("--eval-batch-size", type=COUNT, default=256)
    p.add_argument("--optimizer", default="adam", choices=("adam", "rmsprop"))
    p.add_argument("--lr", type=RATE, default=1e-3)
    p.add_argument("--weight-decay", type=RATE, default=0.0)
    p.add_argument("--clip", type=RATE, default=1.0, help="max gradient norm; 0: no clipping")
    p.add_argument(
        "--patience",
        type=NONNEG,
        default=5,
        help="early stopping after N epochs without better validation bits/dim; "
        "0: never (default 5)",
    )
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument(
        "--checkpoint-every",
        type=NONNEG,
        default=0,
        help="also write OUT/last every N steps (default: each epoch)",
    )
    p.add_argument("--out", help="output folder (default: runs/MODEL-DATA)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue OUT/last exactly where it "
        "stopped (weights, optimizer, RNG, position in the epoch)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="start again even if OUT holds "
        "a run: its checkpoints and metrics.json are deleted first",
    )
    p.add_argument(
        "--ddp-timeout",
        type=number(float, 1.0),
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help="under torchrun, fail when another process does "
        f"not answer for this long (default {DEFAULT_TIMEOUT:g})",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_backend_args(p)
    p.set_defaults(func=run)
    return p


def config_from(args):
    """The TrainConfig the command line describes (--clip 0 and --patience 0: None)."""
    return TrainConfig(
        model=args.model,
        model_args=parse_kv(args.model_arg),
        data=args.data,
        data_dir=args.data_dir,
        binarize=args.binarize or False,
        train_subset=args.train_subset,
        val_subset=args.val_subset,
        epochs=args.epochs,
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        eval_batch_size=args.eval_batch_size,
        optimizer=args.optimizer,
        lr=args.lr,
        weight_decay=args.weight_decay,
        clip=args.clip if args.clip > 0 else None,
        patience=args.patience if args.patience > 0 else None,
        seed=args.seed,
        checkpoint_every=args.checkpoint_every,
        device=args.device,
        max_time=args.time_budget,
        tensorboard=args.tensorboard,
    )


def run(args):
    from ..training.trainer import train

    config = config_from(args)
    out = args.out or os.path.join("runs", f"{args.model.lower()}-{args.data}")
    if args.resume and args.overwrite:
        raise CLIError("--resume continues the run in --out, --overwrite deletes it: pass one")
    check_output_folder(out, "--out")
    if args.resume:
        print(
            f"resuming {out}: only {', '.join(RESUME_OVERRIDES)} may change; every other "
            f"setting comes from the checkpoint"
        )
    with stop_signals():  # SIGTERM and SIGINT stop like Ctrl-C: OUT/last, then status 130
        result = train(
            config,
            out,
            resume=args.resume,
            overwrite=args.overwrite,
            progress=not args.no_progress,
            ddp_timeout=args.ddp_timeout,
        )
    if int(os.environ.get("RANK", "0")) == 0:
        best = result["best_val_bpd"]
        print(
            f"{result['status']} after {result['global_step']} steps; best validation "
            f"{best if best is None else round(best, 4)} bits/dim; checkpoints in "
            f"{os.path.abspath(out)}"
        )
    return 0
