"""``pixelar demo``: the paper's story on the embedded digits, in about three minutes on
two CPU cores. Trains a Diagonal BiLSTM PixelRNN, a NADE and the independent-pixel
baseline on digits28-binary (MNIST-shaped), reports their test NLL (nats and bits/dim,
95% CI), samples a grid from each with the fast sampler, and writes everything (PNG grids,
metrics.json, checkpoints) into one folder.
"""

import os
import time

import torch

from .. import data as datasets
from ..data import save_grid
from .checkpoint import atomic_write_json, load_model
from .evaluate import evaluate
from .trainer import TrainConfig, train

DATA = "digits28-binary"

# name -> TrainConfig fields. The full budget is sized for ~3 minutes on 2 CPU cores with
# the compiled kernels; --quick shrinks everything to seconds (for tests).
FULL = {
    "independent": dict(model="IndependentPixels", epochs=10, lr=0.1, batch_size=64),
    "nade": dict(model="NADE", model_args={"hidden": 500}, epochs=10, lr=1e-2, batch_size=32),
    "pixelrnn": dict(
        model="PixelRNN",
        model_args={"layer": "diagonal", "num_layers": 2, "hidden": 16, "head_hidden": 32},
        epochs=3,
        lr=1e-2,
        batch_size=16,
    ),
}
QUICK = {
    "independent": dict(
        model="IndependentPixels", epochs=1, lr=0.05, batch_size=32, train_subset=64, val_subset=16
    ),
    "nade": dict(
        model="NADE",
        model_args={"hidden": 8},
        epochs=1,
        lr=3e-3,
        batch_size=32,
        train_subset=64,
        val_subset=16,
    ),
    "pixelrnn": dict(
        model="PixelRNN",
        model_args={"layer": "diagonal", "num_layers": 1, "hidden": 4, "head_hidden": 8},
        epochs=1,
        lr=3e-3,
        batch_size=4,
        train_subset=4,
        val_subset=4,
    ),
}
LABELS = {
    "independent": "IndependentPixels (baseline)",
    "nade": "NADE",
    "pixelrnn": "PixelRNN (Diagonal BiLSTM)",
}


def run_demo(out_dir, quick=False, seed=0, device="auto", progress=True, log=print):
    """Run the demo into ``out_dir``; returns the metrics dict also written to
    out_dir/metrics.json."""
    os.makedirs(out_dir, exist_ok=True)
    plan = QUICK if quick else FULL
    test = datasets.load(DATA, "test")
    if quick:
        test = test.subset(8)
    n_samples = 4 if quick else 25
    metrics = {"data": DATA, "quick": quick, "seed": seed, "test_images": len(test), "models": {}}
    t_start = time.perf_counter()
    for name, fields in plan.items():
        log(f"\n== {LABELS[name]} ==")
        config = TrainConfig(
            data=DATA, seed=seed, device=device, patience=None, **{k: v for k, v in fields.items()}
        )
        t0 = time.perf_counter()
        result = train(
            config, os.path.join(out_dir, name), overwrite=True, progress=progress, log=log
        )
        train_s = time.perf_counter() - t0
        model = load_model(result["best"], device=_device(device))
        t0 = time.perf_counter()
        m = evaluate(model, test.images, batch_size=64)
        eval_s = time.perf_counter() - t0
        entry = {
            "label": LABELS[name],
            "config": config.model_args | {"model": config.model},
            "test": m,
            "train_seconds": train_s,
            "eval_seconds": eval_s,
            "steps": result["global_step"],
            "history": result["history"],
            "checkpoint": os.path.join(name, "best.safetensors"),
        }
        if name != "independent":
            g = torch.Generator(device=_device(device)).manual_seed(seed)
            t0 = time.perf_counter()
            samples = model.sample(n_samples, fast=True, generator=g)
            entry["sample_seconds"] = time.perf_counter() - t0
            png = f"samples_{name}.png"
            save_grid(os.path.join(out_dir, png), samples, 2)
            entry["samples_png"] = png
        metrics["models"][name] = entry
        log(
            f"test: {m['nll_nats']:.2f} ± {m['nll_nats_ci95']:.2f} nats, "
            f"{m['bits_per_dim']:.4f} bits/dim (trained {train_s:.0f} s)"
        )
    save_grid(os.path.join(out_dir, "data_test.png"), test.images[:n_samples], 2)
    metrics["total_seconds"] = time.perf_counter() - t_start
    atomic_write_json(os.path.join(out_dir, "metrics.json"), metrics)
    log("\n" + results_table(metrics))
    log(f"\ntotal {metrics['total_seconds']:.0f} s. Everything is in {os.path.abspath(out_dir)}")
    return metrics


def results_table(metrics):
    """A markdown table of the models' test NLL from a demo's metrics dict."""
    lines = [
        f"Test NLL on {metrics['data']} ({metrics['test_images']} test images, 95% CI):",
        "",
        "| model | NLL (nats) | bits/dim | train time |",
        "|---|---|---|---|",
    ]
    for entry in metrics["models"].values():
        m = entry["test"]
        lines.append(
            f"| {entry['label']} | {m['nll_nats']:.2f} ± {m['nll_nats_ci95']:.2f} | "
            f"{m['bits_per_dim']:.4f} ± {m['bits_per_dim_ci95']:.4f} | "
            f"{entry['train_seconds']:.0f} s |"
        )
    return "\n".join(lines)


def _device(name):
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
