"""``pixelar data``: prepare datasets (binarize-mnist: the fixed binarization of MNIST)."""


def add_parser(subparsers):
    p = subparsers.add_parser(
        "data",
        help="prepare datasets (binarize-mnist)",
        description="binarize-mnist: the fixed stochastic binarization of Larochelle & Murray "
        "(each pixel drawn once from Bernoulli(value/255), seeded), split 50,000 train / "
        "10,000 valid (the last 10,000 training images) / 10,000 test, written as "
        "binarized_mnist_{train,valid,test}.amat for --data binarized-mnist.",
    )
    p.add_argument("action", choices=("binarize-mnist",))
    p.add_argument(
        "--data-dir",
        required=True,
        help="folder with MNIST: the IDX files or mnist_train.csv / mnist_test.csv (.gz or not)",
    )
    p.add_argument("--out", required=True, help="folder for the three .amat files")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace existing .amat files")
    p.set_defaults(func=run)
    return p


def run(args):
    from ..data.binarized_mnist import make_binarized_mnist

    paths = make_binarized_mnist(
        args.data_dir, args.out, seed=args.seed, overwrite=args.overwrite, log=print
    )
    print(f"wrote {', '.join(paths)}; train with --data binarized-mnist --data-dir {args.out}")
    return 0
