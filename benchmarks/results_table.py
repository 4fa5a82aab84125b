"""The results table: every pixelar model trained on the embedded digits with a short,
fixed budget, then its exact test NLL (nats and bits/dim, 95% CI).

    python benchmarks/results_table.py                        # digits28-binary (MNIST-shaped)
    python benchmarks/results_table.py --data digits-binary   # 8x8, much faster
    python benchmarks/results_table.py --only NADE,PixelCNN --epochs-scale 2
    python benchmarks/results_table.py --quick --out /tmp/results   # smoke run, seconds

Prints a markdown table and writes benchmarks/results/results_table_<data>.{md,json}.
Every run is seeded (seed 0) and early-stops on the validation split; the test split is
touched once, at the end, with the best checkpoint. Runs on the backend in force
(--backend, default auto: the compiled kernels).
"""

import argparse
import json
import os
import sys
import tempfile
import time

import torch

import pixelar
from pixelar import data as datasets
from pixelar.training import TrainConfig, evaluate, load_model, train

HERE = os.path.dirname(os.path.abspath(__file__))

# (row label, TrainConfig fields). Budgets are epochs over the 1,258 training images.
RUNS = [
    ("IndependentPixels", dict(model="IndependentPixels", lr=0.1, epochs=10, batch_size=64)),
    (
        "MarkovPixels (order 1)",
        dict(model="MarkovPixels", model_args={"order": 1}, lr=0.1, epochs=10, batch_size=64),
    ),
    (
        "MarkovPixels (order 2)",
        dict(model="MarkovPixels", model_args={"order": 2}, lr=0.1, epochs=10, batch_size=64),
    ),
    ("FVSBN", dict(model="FVSBN", lr=1e-2, epochs=20, batch_size=64)),
    (
        "NADE (500 hidden)",
        dict(model="NADE", model_args={"hidden": 500}, lr=1e-2, epochs=10, batch_size=32),
    ),
    (
        "PixelCNN (4 blocks, h=16)",
        dict(
            model="PixelCNN",
            model_args={"num_layers": 4, "hidden": 16, "head_hidden": 32},
            lr=1e-2,
            epochs=3,
            batch_size=16,
        ),
    ),
    (
        "PixelRNN Row LSTM (2 layers, h=16)",
        dict(
            model="PixelRNN",
            model_args={"layer": "row", "num_layers": 2, "hidden": 16, "head_hidden": 32},
            lr=1e-2,
            epochs=3,
            batch_size=16,
        ),
    ),
    (
        "PixelRNN Diagonal BiLSTM (2 layers, h=16)",
        dict(
            model="PixelRNN",
            model_args={"layer": "diagonal", "num_layers": 2, "hidden": 16, "head_hidden": 32},
            lr=1e-2,
            epochs=3,
            batch_size=16,
        ),
    ),
]


def run_one(label, fields, data, epochs_scale, seed, workdir):
    fields = dict(fields)
    fields["epochs"] = max(1, round(fields["epochs"] * epochs_scale))
    config = TrainConfig(data=data, seed=seed, patience=3, **fields)
    t0 = time.perf_counter()
    result = train(
        config,
        os.path.join(workdir, label.split()[0] + str(id(fields))),
        progress=False,
        log=lambda *a, **k: None,
    )
    seconds = time.perf_counter() - t0
    model = load_model(result["best"])
    test = datasets.load(data, "test")
    m = evaluate(model, test.images, batch_size=64)
    params = sum(p.numel() for p in model.parameters())
    row = {
        "model": label,
        "config": {"model": config.model, **config.model_args},
        "parameters": params,
        "epochs": len(result["history"]),
        "steps": result["global_step"],
        "train_seconds": seconds,
        "best_val_bits_per_dim": result["best_val_bpd"],
        **m,
    }
    print(
        f"{label}: {m['nll_nats']:.2f} ± {m['nll_nats_ci95']:.2f} nats, "
        f"{m['bits_per_dim']:.4f} bits/dim ({row['steps']} steps, {seconds:.0f} s)",
        flush=True,
    )
    return row


def markdown(rows, data, n_test):
    lines = [
        f"Test NLL on the embedded `{data}` ({n_test} test images; mean ± 95% CI; "
        f"seed 0, short fixed budgets, best validation checkpoint)",
        "",
        "| model | parameters | steps | NLL (nats) | bits/dim | train time |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['parameters']:,} | {r['steps']} | "
            f"{r['nll_nats']:.2f} ± {r['nll_nats_ci95']:.2f} | "
            f"{r['bits_per_dim']:.4f} ± {r['bits_per_dim_ci95']:.4f} | "
            f"{r['train_seconds']:.0f} s |"
        )
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--data", default="digits28-binary", choices=("digits28-binary", "digits-binary")
    )
    p.add_argument("--only", help="comma-separated model class names to run (default: all)")
    p.add_argument(
        "--epochs-scale", type=float, default=1.0, help="multiply every budget (default 1)"
    )
    p.add_argument(
        "--quick", action="store_true", help="a smoke run: --data digits-binary --epochs-scale 0.1"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", default="auto", choices=pixelar.ops.BACKENDS)
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: fastest for these small models)",
    )
    p.add_argument("--out", default=os.path.join(HERE, "results"))
    args = p.parse_args(argv)
    if args.quick:
        args.data, args.epochs_scale = "digits-binary", 0.1
    pixelar.ops.set_backend(args.backend)
    torch.set_num_threads(args.threads)
    runs = RUNS
    if args.only:
        wanted = {w.strip().lower() for w in args.only.split(",")}
        runs = [r for r in RUNS if r[1]["model"].lower() in wanted]
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for label, fields in runs:
            rows.append(run_one(label, fields, args.data, args.epochs_scale, args.seed, workdir))
    n_test = len(datasets.load(args.data, "test"))
    table = markdown(rows, args.data, n_test)
    print("\n" + table)
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, f"results_table_{args.data}")
    with open(stem + ".md", "w") as f:
        f.write(table + "\n")
    with open(stem + ".json", "w") as f:
        json.dump(
            {
                "data": args.data,
                "seed": args.seed,
                "backend": args.backend,
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
                "rows": rows,
            },
            f,
            indent=2,
        )
    print(f"\nwrote {stem}.md and {stem}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
