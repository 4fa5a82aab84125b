"""Table 4 of the PixelRNN paper (van den Oord et al. 2016) on real MNIST: every model
trained on the fixed binarization of MNIST, its test NLL in nats beside the paper's.

    pixelar data binarize-mnist --data-dir MNIST --out data/binarized_mnist   # once
    python benchmarks/paper_mnist.py --data-dir data/binarized_mnist --models nade \\
        --budget 3600                     # train (or continue) for at most 1 h per model
    python benchmarks/paper_mnist.py --data-dir data/binarized_mnist --report-only

Each model trains into RUNS/<key> (default runs/paper_mnist/<key>; keys: nade, pixelcnn,
row_lstm, diagonal_1x32, diagonal_7x16) with early stopping on the validation split. A run
is continued where it stopped whenever its folder holds a checkpoint (it must have been
made with the same settings), so a budget per sitting (--budget SECONDS) and repeated
sittings train a model to convergence. The report evaluates the best-validation checkpoint
of every run that has one on the 10,000 test images (nats, 95% interval) and writes, into
benchmarks/results/: paper_mnist.json, paper_mnist.md (the table, with the epochs and hours
behind every number), paper_mnist_curves.png (validation nats against epochs and against
wall-clock hours, the paper's numbers dashed), and per model paper_mnist_samples_<key>.png
(25 samples) and paper_mnist_completions_<key>.png (the top half of test digits given,
the bottom half sampled; each original beside its completion). Runs still training are
read, never written.

Settings (the paper gives no more than this for MNIST; what it leaves open is chosen here):
  * data: the fixed stochastic binarization (Larochelle & Murray), 50,000 / 10,000 /
    10,000, made by `pixelar data binarize-mnist --seed 0`; no dynamic binarization.
  * NADE: H = 500 (the paper quotes 88.33 for NADE from the literature); Adam 1e-3,
    batch 64, patience 5 (our choice; the original used SGD).
  * Pixel networks: Adam, learning rate 1e-3, batch 16, gradient-norm clip 1, patience 10,
    head of 32 hidden units before the Bernoulli output (the paper does not give the
    optimizer settings for MNIST, nor the output head's width).
  * Diagonal BiLSTM 7x16 and 1x32: the paper's layer counts and h.
  * Row LSTM and PixelCNN: the paper gives no depth or width for MNIST; we use 7 Row LSTM
    layers with h = 16 (as the Diagonal BiLSTM) and 15 PixelCNN residual blocks with
    h = 16 (the paper's CIFAR-10 PixelCNN depth at the MNIST width).
"""

import argparse
import json
import math
import os
import sys
import time

import torch

import pixelar
from pixelar import data as datasets
from pixelar.data import save_grid
from pixelar.training import CheckpointError, TrainConfig, evaluate, load_checkpoint, train
from pixelar.training.checkpoint import atomic_write_json, checkpoint_file, read_meta
from pixelar.training.history import load_run, plot_runs
from pixelar.training.trainer import RESUME_OVERRIDES, resolve_model_class

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
PAPER_SOURCE = "van den Oord et al. 2016, Pixel Recurrent Neural Networks, Table 4"

_PIXEL_NET = dict(
    batch_size=16,
    optimizer="adam",
    lr=1e-3,
    clip=1.0,
    patience=10,
    epochs=200,
    checkpoint_every=200,
    seed=0,
)
# key -> (row label, paper's test NLL in nats, TrainConfig fields)
MODELS = {
    "nade": (
        "NADE (H=500)",
        88.33,
        dict(
            model="NADE",
            model_args={"hidden": 500},
            batch_size=64,
            optimizer="adam",
            lr=1e-3,
            clip=1.0,
            patience=5,
            epochs=200,
            checkpoint_every=0,
            seed=0,
        ),
    ),
    "pixelcnn": (
        "PixelCNN (15 blocks, h=16)",
        81.30,
        dict(model="PixelCNN", model_args={"num_layers": 15, "hidden": 16}, **_PIXEL_NET),
    ),
    "row_lstm": (
        "Row LSTM (7 layers, h=16)",
        80.54,
        dict(
            model="PixelRNN",
            model_args={"layer": "row", "num_layers": 7, "hidden": 16},
            **_PIXEL_NET,
        ),
    ),
    "diagonal_1x32": (
        "Diagonal BiLSTM (1 layer, h=32)",
        80.75,
        dict(
            model="PixelRNN",
            model_args={"layer": "diagonal", "num_layers": 1, "hidden": 32},
            **_PIXEL_NET,
        ),
    ),
    "diagonal_7x16": (
        "Diagonal BiLSTM (7 layers, h=16)",
        79.20,
        dict(
            model="PixelRNN",
            model_args={"layer": "diagonal", "num_layers": 7, "hidden": 16},
            **_PIXEL_NET,
        ),
    ),
}
NUM_DIMS = 784
NATS_PER_BPD = NUM_DIMS * math.log(2.0)


def log(*a):
    print(time.strftime("[%H:%M:%S]"), *a, flush=True)


def model_config(key, data_dir, **extra):
    """The TrainConfig of model ``key`` on the binarized MNIST in ``data_dir``."""
    fields = dict(MODELS[key][2], data="binarized-mnist", data_dir=os.path.abspath(data_dir))
    fields.update(extra)
    return TrainConfig(**fields)


def config_mismatch(stored, wanted):
    """Fields (besides the data folder and the settings a resumed run may change) on which
    a stored run's config differs from ``wanted``: {field: (stored, wanted)}."""
    out = {}
    skip = set(RESUME_OVERRIDES) | {"data_dir"}
    want = wanted.__dict__
    for k, v in want.items():
        if k in skip:
            continue
        s = stored.get(k, TrainConfig.__dataclass_fields__[k].default)
        if k == "model":
            same = resolve_model_class(s) is resolve_model_class(v)
        elif k == "binarize":
            same = datasets.binarize_mode(s) == datasets.binarize_mode(v)
        else:
            same = s == v
        if not same:
            out[k] = (s, v)
    return out


def stored_config(run_dir):
    """The config recorded in RUN/last's trainer state, or None without a checkpoint."""
    meta = read_meta(os.path.join(run_dir, "last"))
    if meta is None:
        return None
    return (meta.get("train_state") or {}).get("config", {})


# ---------------------------------------------------------------------------- training


def train_model(key, args):
    """Train (or continue) model ``key`` for at most args.budget seconds."""
    run_dir = os.path.join(args.runs_dir, key)
    wanted = model_config(
        key,
        args.data_dir,
        max_time=args.budget,
        train_subset=args.train_subset,
        val_subset=args.val_subset,
        **({"epochs": args.epochs} if args.epochs else {}),
    )
    stored = stored_config(run_dir)
    if stored is not None:
        diff = config_mismatch(stored, wanted)
        if diff:
            raise SystemExit(
                f"{run_dir} holds a run with other settings ("
                + "; ".join(f"{k}: {a!r} there, {b!r} here" for k, (a, b) in diff.items())
                + "); move it away or pass another --runs-dir"
            )
        age = time.time() - os.path.getmtime(checkpoint_file(os.path.join(run_dir, "last")))
        if age < args.busy_minutes * 60:
            log(
                f"{key}: skipped, its checkpoint was written {age / 60:.1f} min ago: another "
                f"process seems to be training it (--busy-minutes 0 to override)"
            )
            return None
        state = (read_meta(os.path.join(run_dir, "last")) or {}).get("train_state") or {}
        status = state.get("status")
        if status == "early_stopped" or (
            status == "finished" and state.get("epoch", 0) >= wanted.epochs
        ):
            log(f"{key}: already {status}")
            return None
    log(f"{key}: {'continuing' if stored else 'starting'} {run_dir} (budget {args.budget} s)")
    result = train(
        wanted,
        run_dir,
        resume=stored is not None,
        progress=args.progress,
        log=lambda *a: log(f"{key}:", *a),
    )
    log(f"{key}: {result['status']} at step {result['global_step']}")
    return result


# ---------------------------------------------------------------------------- report


def _load_ckpt(path, tries=3):
    """load_checkpoint, retried: a run in progress may be replacing the files."""
    for i in range(tries):
        try:
            return load_checkpoint(path)
        except CheckpointError:
            if i == tries - 1:
                raise
            time.sleep(2.0)


def report_model(key, args, test, previous):
    """Evaluate, sample and complete with model ``key``'s best checkpoint: a dict row."""
    label, paper, _ = MODELS[key]
    run_dir = os.path.join(args.runs_dir, key)
    row = {"key": key, "model": label, "paper_nats": paper, "run_dir": os.path.abspath(run_dir)}
    best = checkpoint_file(os.path.join(run_dir, "best"))
    last = checkpoint_file(os.path.join(run_dir, "last"))
    if last is None and best is None:
        return dict(row, status="not trained")
    which = best if best is not None else last
    ckpt = _load_ckpt(which)
    state = ckpt.train_state
    row.update(checkpoint=os.path.basename(which).split(".")[0], checkpoint_sha256=ckpt.sha256)
    try:
        run = load_run(run_dir)
        rows = run["rows"]
        status = run["status"]
    except FileNotFoundError:
        rows, status = [], "running"
    last = last or which
    last_state = (read_meta(last) or {}).get("train_state") or {}
    status = last_state.get("status", status)
    age_min = (time.time() - os.path.getmtime(last)) / 60
    if status in ("running", "paused") and age_min < args.busy_minutes:
        status = "training"
    best_epoch = state.get("best_epoch")
    best_row = next((r for r in rows if r["epoch"] == best_epoch), None)
    row.update(
        status=status,
        epochs=len(rows),
        best_epoch=best_epoch,
        global_step=last_state.get("global_step"),
        hours=rows[-1]["hours"] if rows else None,
        hours_at_best=best_row["hours"] if best_row else None,
        best_val_nats=best_row["val_nats"] if best_row else None,
        last_val_nats=rows[-1]["val_nats"] if rows else None,
        improving=bool(rows) and best_epoch == rows[-1]["epoch"],
        step_in_epoch=last_state.get("step_in_epoch"),
        config=ckpt.train_state.get("config"),
    )
    model = ckpt.build_model().eval()
    row["parameters"] = sum(p.numel() for p in model.parameters())
    cached = previous.get(key, {})
    same = cached.get("checkpoint_sha256") == row["checkpoint_sha256"] is not None and cached.get(
        "test", {}
    ).get("n") == len(test)
    if same:
        row["test"] = cached["test"]
        log(f"{key}: checkpoint unchanged, test NLL from the previous report")
    else:
        t0 = time.perf_counter()
        row["test"] = evaluate(model, test, batch_size=args.eval_batch_size)
        row["test"]["seconds"] = time.perf_counter() - t0
        log(
            f"{key}: test NLL {row['test']['nll_nats']:.2f} ± "
            f"{row['test']['nll_nats_ci95']:.2f} nats ({row['test']['seconds']:.0f} s)"
        )
    samples_png = os.path.join(args.results_dir, f"paper_mnist_samples_{key}.png")
    completions_png = os.path.join(args.results_dir, f"paper_mnist_completions_{key}.png")
    if not (same and os.path.isfile(samples_png) and os.path.isfile(completions_png)):
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            samples = model.sample(25, generator=g)
            save_grid(samples_png, samples, 2, ncol=5)
            originals = test[: args.completions]
            condition = originals.clone()
            condition[:, :, NUM_HALF:, :] = -1
            done = model.sample(len(originals), generator=g, condition=condition)
        pairs = torch.stack([originals, done], dim=1).flatten(0, 1)
        save_grid(completions_png, pairs, 2, ncol=10, group=2)
    row["samples_png"] = os.path.relpath(samples_png, args.results_dir)
    row["completions_png"] = os.path.relpath(completions_png, args.results_dir)
    return row


NUM_HALF = 14  # rows given to the completions (the top half of a 28x28 digit)


def _fmt(v, spec, none="–"):
    return none if v is None else format(v, spec)


STATUS_WORDS = {
    "early_stopped": "converged (early-stopped)",
    "training": "still training",
    "paused": "paused (rerun to continue)",
    "running": "stopped mid-run (rerun to continue)",
    "finished": "finished (epoch limit)",
}


def markdown(rows, meta):
    lines = [
        "| model | paper (nats) | pixelar test NLL (nats, 95%) | bits/dim | parameters | "
        "epochs (best / done) | hours (at best / total) | status |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        if "test" not in r:
            lines.append(f"| {r['model']} | {r['paper_nats']:.2f} | not trained | | | | | |")
            continue
        t = r["test"]
        status = STATUS_WORDS.get(r["status"], r["status"]) + (
            "" if r["epochs"] else f" (epoch 1, step {r.get('step_in_epoch')}: no validation yet)"
        )
        if r["epochs"] == 1:
            status += ", 1 epoch so far"
        elif r["epochs"] and r["improving"]:
            status += ", still improving"
        lines.append(
            f"| {r['model']} | {r['paper_nats']:.2f} | {t['nll_nats']:.2f} ± "
            f"{t['nll_nats_ci95']:.2f} | {t['bits_per_dim']:.4f} | {r['parameters']:,} | "
            f"{_fmt(r['best_epoch'], 'd')} / {r['epochs']} | "
            f"{_fmt(r['hours_at_best'], '.2f')} / {_fmt(r['hours'], '.2f')} | {status} |"
        )
    lines.append("")
    lines.append(
        f"Test set: {meta['test_images']} images of the fixed binarization in "
        f"{meta['data_dir']}; best-validation checkpoint (the last one where a run "
        f"has not finished an epoch). Written {meta['written']}."
    )
    return "\n".join(lines) + "\n"


def report(args):
    os.makedirs(args.results_dir, exist_ok=True)
    json_path = os.path.join(args.results_dir, "paper_mnist.json")
    previous = {}
    if os.path.isfile(json_path):
        with open(json_path) as f:
            previous = {r["key"]: r for r in json.load(f).get("models", [])}
    test = datasets.load("binarized-mnist", "test", args.data_dir).images
    if args.test_limit:
        test = test[: args.test_limit]
    rows = [report_model(k, args, test, previous) for k in args.models]
    runs, reference = [], {}
    for r in rows:
        reference[r["model"]] = r["paper_nats"]
        if r.get("epochs"):
            runs.append(load_run(os.path.join(args.runs_dir, r["key"]), label=r["model"]))
    curves = os.path.join(args.results_dir, "paper_mnist_curves.png")
    papers = [m[1] for m in MODELS.values()]
    ylim = (min(papers) - 4, max(papers) + 22)  # the paper's range; first epochs may be above
    vals = [r["val_nats"] for run in runs for r in run["rows"] if r["val_nats"] is not None]
    if not vals or min(vals) > ylim[1]:
        ylim = None
    drawn = plot_runs(
        curves,
        runs,
        unit="nats",
        reference=reference,
        title="binarized MNIST: validation NLL (paper's test NLL dashed)",
        ylim=ylim,
    )
    if drawn is None:
        log("no curves PNG: pip install matplotlib")
    meta = {
        "paper": PAPER_SOURCE,
        "data_dir": os.path.abspath(args.data_dir),
        "test_images": len(test),
        "written": time.strftime("%Y-%m-%d %H:%M"),
        "threads": torch.get_num_threads(),
        "pixelar_version": pixelar.__version__,
        "curves_png": os.path.basename(curves) if drawn else None,
    }
    atomic_write_json(json_path, {"meta": meta, "models": rows})
    md = markdown(rows, meta)
    with open(os.path.join(args.results_dir, "paper_mnist.md"), "w") as f:
        f.write(md)
    print(md)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--data-dir",
        default="data/binarized_mnist",
        help="folder with binarized_mnist_{train,valid,test}.amat (make them with "
        "pixelar data binarize-mnist)",
    )
    p.add_argument("--runs-dir", default=os.path.join("runs", "paper_mnist"))
    p.add_argument("--results-dir", default=RESULTS)
    p.add_argument(
        "--models",
        default=",".join(MODELS),
        help=f"comma-separated keys (default: all): {', '.join(MODELS)}",
    )
    p.add_argument(
        "--budget",
        type=float,
        default=3600.0,
        help="seconds of training per model in this sitting (default 3600)",
    )
    p.add_argument(
        "--report-only",
        action="store_true",
        help="train nothing; evaluate and draw what the runs hold",
    )
    p.add_argument("--train-only", action="store_true", help="train; write no report")
    p.add_argument(
        "--busy-minutes",
        type=float,
        default=20.0,
        help="a run whose last checkpoint is younger than this is taken to be "
        "training in another process: not trained here (default 20)",
    )
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--eval-batch-size", type=int, default=256)
    p.add_argument("--completions", type=int, default=10, help="test digits to complete")
    p.add_argument("--progress", action="store_true", help="progress bars while training")
    # for smoke tests: a run made with these differs from the benchmark's settings
    p.add_argument("--epochs", type=int, help=argparse.SUPPRESS)
    p.add_argument("--train-subset", type=int, help=argparse.SUPPRESS)
    p.add_argument("--val-subset", type=int, help=argparse.SUPPRESS)
    p.add_argument("--test-limit", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in args.models if m not in MODELS]
    if unknown:
        p.error(f"unknown model key(s) {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    if args.report_only and args.train_only:
        p.error("--report-only and --train-only exclude each other")
    torch.set_num_threads(args.threads)
    if not args.report_only:
        for key in args.models:
            train_model(key, args)
    if not args.train_only:
        report(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
