"""``pixelar plot``: learning curves of one or more training folders on one figure."""

from .errors import CLIError


def add_parser(subparsers):
    p = subparsers.add_parser(
        "plot",
        help="learning curves of training folders on one figure",
        description="Draw the validation curves (bits/dim or nats against epochs and against "
        "wall-clock hours) of one or more training folders (their metrics.json) on one PNG. "
        "Needs matplotlib.",
    )
    p.add_argument("runs", nargs="+", metavar="RUN", help="training folders")
    p.add_argument("--out", help="PNG path (default: curves.png)")
    p.add_argument("--unit", default="bpd", choices=("bpd", "nats"))
    p.add_argument("--train", action="store_true", help="also draw the training curves")
    p.add_argument("--title")
    p.set_defaults(func=run)
    return p


def run(args):
    from ..training.history import load_run, plot_runs

    try:
        runs = [load_run(r) for r in args.runs]
    except FileNotFoundError as exc:
        raise CLIError(str(exc)) from exc
    if args.unit == "nats":
        missing = [r["dir"] for r in runs if not r["num_dims"]]
        if missing:
            raise CLIError(
                f"cannot convert to nats: no checkpoint JSON with the image shape "
                f"in {', '.join(missing)}; use --unit bpd"
            )
    out = args.out or "curves.png"
    if plot_runs(out, runs, unit=args.unit, train=args.train, title=args.title) is None:
        raise CLIError("pixelar plot needs matplotlib: pip install matplotlib")
    print(
        f"wrote {out} ({len(runs)} run(s): "
        + ", ".join(f"{r['label']} {len(r['rows'])} epochs" for r in runs)
        + ")"
    )
    return 0
