"""``pixelar eval``: test NLL in nats and bits/dim with a 95% confidence interval."""

import time

from .. import data as datasets
from ..training.checkpoint import atomic_write_json
from .inputs import check_output_file, dataset, fit, load
from .options import COUNT, add_checkpoint_command, add_data_args


def add_parser(subparsers):
    p = add_checkpoint_command(
        subparsers,
        "eval",
        "NLL in nats and bits/dim with a 95%% confidence interval",
        "Evaluate the exact NLL of a dataset split under a trained model.",
    )
    add_data_args(p)
    p.add_argument("--split", default="test", choices=datasets.SPLITS)
    p.add_argument("--limit", type=COUNT, help="only the first N images")
    p.add_argument("--json", help="also write the metrics to this JSON file")
    p.set_defaults(func=run)
    return p


def run(args):
    from ..training.evaluate import evaluate, format_metrics

    model, ckpt = load(args)
    if args.json:
        check_output_file(args.json, "--json")
    data = fit(
        model,
        dataset(args, ckpt, args.split).subset(args.limit),
        f"{args.data or 'the data'} ({args.split})",
    )
    t0 = time.perf_counter()
    m = evaluate(model, data.images, args.batch_size, progress=not args.no_progress)
    m.update(
        data=data.name,
        split=args.split,
        model=type(model).__name__,
        checkpoint=ckpt.path,
        seconds=time.perf_counter() - t0,
    )
    print(f"{type(model).__name__} on {data.name} {args.split}: {format_metrics(m)}")
    if args.json:
        atomic_write_json(args.json, m)
        print(f"wrote {args.json}")
    return 0
