"""Sampling benchmark: naive (a full forward pass per dimension) vs fast (cached) sampling,
timed in the same run.

1. Binarized 28x28: PixelRNN diagonal 7x16, PixelRNN row 7x16, PixelCNN 15x16 (batch 16),
   NADE H=500 (batch 64); plus NADE's sampler written as most public code writes it (a
   Python loop over the dimensions, one batched update per step).
2. Scaling sweep over image sizes 8, 16, 28, 32 (fast also 64): the exponent b of
   time = a * pixels^b, fitted by least squares on log-log, for naive and fast.
3. The FLOP floor of each fast sampler: its multiply-add FLOPs over this machine's measured
   matmul rate (the best of 5 runs of a 2048^3 fp32 torch.matmul, same thread count; the
   same measurement as benchmarks/ops.py).

Naive sampling is slow: it runs until done or until its time budget (30 s per 28x28
configuration, 10 s per sweep point; --quick: 4 s and 2 s) has passed; a partial run's total
is extrapolated from its per-dimension cost (every naive step is one full forward pass, the
same work at every dimension), and the output says so ("extrapolated", "*").

    python benchmarks/sampling.py            # full run (several minutes)
    python benchmarks/sampling.py --quick    # a short run: smaller naive subsets, fewer sizes

Writes benchmarks/results/sampling.json and benchmarks/results/sampling_scaling.png.
"""

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time

import torch

import pixelar
from pixelar.models import NADE, PixelCNN, PixelRNN
from pixelar.ops.draw import draw

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import interleaved_times, matmul_rate, median_time  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))

CONFIGS = {
    "pixelrnn_diagonal": lambda s: PixelRNN(
        image_shape=(1, s, s), layer="diagonal", num_layers=7, hidden=16
    ),
    "pixelrnn_row": lambda s: PixelRNN(image_shape=(1, s, s), layer="row", num_layers=7, hidden=16),
    "pixelcnn": lambda s: PixelCNN(image_shape=(1, s, s), num_layers=15, hidden=16),
    "nade": lambda s: NADE(image_shape=(1, s, s), hidden=500),
}
LABELS = {
    "pixelrnn_diagonal": "PixelRNN diagonal 7x16",
    "pixelrnn_row": "PixelRNN row 7x16",
    "pixelcnn": "PixelCNN 15x16",
    "nade": "NADE H=500",
}
BATCH = {"nade": 64}
NAIVE_OPS = {
    "pixelrnn_diagonal": "diagonal_lstm_scan",
    "pixelrnn_row": "row_lstm_scan",
    "pixelcnn": None,
    "nade": "nade_forward",
}


def build(name, size):
    torch.manual_seed(0)
    return CONFIGS[name](size).eval()


def naive_backend(name):
    """The backend the naive sampler runs on: "auto" (compiled kernels) where every op it
    needs has a CPU kernel, else "reference" (said in the output)."""
    op = NAIVE_OPS[name]
    if op is None or pixelar._extension.has_kernel(op, "CPU"):
        return "auto"
    return "reference"


@torch.no_grad()
def time_naive(model, n, budget_s, min_dims=3, seed=0):
    """(seconds for the whole naive sampler, extrapolated?, images or None).

    Runs the naive sampler's loop (a full forward pass and a draw per dimension, raster
    order) until every dimension is done or ``budget_s`` has passed (at least ``min_dims``
    dimensions). A complete run reports its time; a partial one D times the median time of
    its steps (every naive step is one forward pass of the whole image, the same work at
    every dimension; the median discounts steps slowed by other processes)."""
    C, H, W = model.image_shape
    D = model.num_dims
    x = torch.zeros((n, C, H, W), dtype=torch.long)
    u = torch.rand((n, C, H, W), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    model(x)  # warm-up
    steps = []
    start = time.perf_counter()
    for r in range(H):
        for c in range(W):
            for ch in range(C):
                t = time.perf_counter()
                logits = model(x)[:, ch, r, c]
                x[:, ch, r, c] = draw(logits, u[:, ch, r, c], model.bernoulli)
                steps.append(time.perf_counter() - t)
                if (
                    len(steps) < D
                    and len(steps) >= min_dims
                    and time.perf_counter() - start > budget_s
                ):
                    return statistics.median(steps) * D, True, None
    return time.perf_counter() - start, False, x


def fast_sampler(model, n):
    """A callable drawing n images with the fast sampler (the same seed every call)."""
    gen = torch.Generator()

    @torch.no_grad()
    def run():
        gen.manual_seed(0)
        return model.sample(n, fast=True, generator=gen)

    return run


def time_fast(model, n, repeats):
    return median_time(fast_sampler(model, n), repeats)[0]


@torch.no_grad()
def nade_python_loop(model, n):
    """NADE sampling the way most public code writes it: a Python loop over dimensions,
    each step a batched sigmoid, dot product, Bernoulli draw and hidden update."""
    W, c = model.W, model.c
    V, b = model.V[:, 0], model.b[:, 0]
    D = W.shape[1]
    a = c.expand(n, -1)
    x = torch.zeros(n, D)
    for d in range(D):
        h = torch.sigmoid(a)
        p = torch.sigmoid(h @ V[d] + b[d])
        x[:, d] = torch.bernoulli(p)
        a = a + x[:, d : d + 1] * W[:, d]
    return x


def fast_flops(model, n, ones_fraction=0.5):
    """Multiply-add FLOPs (2 per multiply-add) of the fast sampler for n images: what the
    cached sampler computes (per pixel: one pass of every layer per channel; the Diagonal
    BiLSTM's right-to-left direction once per pixel). Transcendentals not counted. NADE: a
    dot product per dimension, and the hidden update for the dimensions drawn as 1."""
    C, H, W = model.image_shape
    if isinstance(model, NADE):
        Hd, D = model.hidden, model.num_dims
        return 2 * n * D * Hd * (1 + ones_fraction)
    F = model.input_conv.out_channels
    Q = model.head.hidden.out_channels
    O = 1 if model.bernoulli else model.levels
    per_pass = 25 * C * F + F * Q + Q * O
    per_pixel = 0
    for block in model.blocks:
        if hasattr(block, "reduce"):
            U = block.reduce.out_channels
            per_pass += F * U + 5 * U * U + U * F
        else:
            U = block.lstm.hidden
            G = 4 * U
            if hasattr(block.lstm, "right_to_left"):
                per_pass += F * G + 2 * U * G + U * F
                per_pixel += (F + C) * G + 2 * U * G
            else:
                per_pass += 2 * F * G + 3 * U * G + U * F
    return 2 * n * H * W * (C * per_pass + per_pixel)


def fit_exponent(pixels, times):
    xs = [math.log(p) for p in pixels]
    ys = [math.log(t) for t in times]
    mx, my = statistics.mean(xs), statistics.mean(ys)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return b, math.exp(my - b * mx)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short run (about a minute)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument(
        "--replot", action="store_true", help="only redraw the PNG from the JSON in --out"
    )
    args = parser.parse_args(argv)
    if args.replot:
        with open(os.path.join(args.out, "sampling.json")) as f:
            results = json.load(f)
        plot(results, os.path.join(args.out, "sampling_scaling.png"))
        return results
    torch.set_num_threads(args.threads)
    quick = args.quick
    naive_budget = 4.0 if quick else 30.0  # seconds of naive sampling per configuration
    sweep_budget = 2.0 if quick else 10.0
    repeats = 3 if quick else 5
    sizes = [8, 16, 28] if quick else [8, 16, 28, 32]
    fast_sizes = sizes + [64]

    load_start = os.getloadavg()[0]
    rate = matmul_rate() / 1e9
    print(
        f"pixelar sampling benchmark  ({platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, {args.threads} threads, fp32, "
        f"{'--quick' if quick else 'full'})"
    )
    print(
        f"measured matmul rate: {rate:.1f} GFLOP/s (best of 5, 2048^3 fp32 matmul); "
        f"load average at start {load_start:.1f}\n"
    )
    results = {
        "machine": {
            "cpu_count": os.cpu_count(),
            "threads": args.threads,
            "torch": torch.__version__,
            "matmul_gflops": rate,
        },
        "quick": quick,
        "main": {},
        "sweep": {},
    }

    # 1. binarized 28x28
    header = (
        f"{'model (28x28, binary)':<24}{'batch':>6}{'naive s':>10}{'fast ms':>10}"
        f"{'speedup':>10}{'floor ms':>10}{'/floor':>8}  naive backend"
    )
    print(header)
    print("-" * len(header))
    for name in CONFIGS:
        model = build(name, 28)
        n = BATCH.get(name, 16)
        backend = naive_backend(name)
        with pixelar.ops.backend(backend):
            t_naive, extrapolated, x_naive = time_naive(model, n, naive_budget)
        t_fast = time_fast(model, n, repeats)
        with torch.no_grad():
            x_fast = model._sample_fast(
                torch.rand(
                    (n, *model.image_shape),
                    generator=torch.Generator().manual_seed(0),
                    dtype=torch.float64,
                ),
                None,
            )
        ones = x_fast.float().mean().item()
        floor = fast_flops(model, n, ones) / (rate * 1e9)
        same = None if x_naive is None else (x_naive == x_fast).float().mean().item()
        results["main"][name] = dict(
            batch=n,
            naive_s=t_naive,
            naive_extrapolated=extrapolated,
            naive_backend=backend,
            fast_s=t_fast,
            speedup=t_naive / t_fast,
            flops=fast_flops(model, n, ones),
            floor_s=floor,
            fast_over_floor=t_fast / floor,
            naive_fast_equal_fraction=same,
        )
        note = backend + (", extrapolated" if extrapolated else "")
        if same is not None:
            note += f", {100 * same:.2f}% values equal to fast"
        print(
            f"{LABELS[name]:<24}{n:>6}{t_naive:>10.2f}{t_fast * 1e3:>10.1f}"
            f"{t_naive / t_fast:>9.0f}x{floor * 1e3:>10.2f}{t_fast / floor:>7.1f}x  {note}"
        )

    model = build("nade", 28)
    # timed in alternating rounds, so that load from other processes hits both alike
    times = interleaved_times(
        {"loop": lambda: nade_python_loop(model, 64), "fast": fast_sampler(model, 64)},
        repeats=3 * repeats,
    )
    t_loop, t_fast = times["loop"][0], times["fast"][0]
    results["nade_python_loop"] = dict(
        batch=64, python_loop_s=t_loop, fast_s=t_fast, speedup=t_loop / t_fast
    )
    print(
        f"\nNADE H=500, D=784, 64 samples: Python loop over dimensions {t_loop * 1e3:.1f} ms, "
        f"fast {t_fast * 1e3:.1f} ms: {t_loop / t_fast:.1f}x"
    )

    # 2. scaling sweep
    print(
        f"\nscaling sweep (time in ms; * = naive extrapolated from the dimensions done "
        f"in {sweep_budget:.0f} s)"
    )
    print(f"{'model':<24}" + "".join(f"{f'{s}x{s}':>12}" for s in fast_sizes) + f"{'exponent':>10}")
    for name in CONFIGS:
        n = BATCH.get(name, 16)
        backend = naive_backend(name)
        naive_t, fast_t, flags = [], [], []
        for s in fast_sizes:
            model = build(name, s)
            if s in sizes:
                with pixelar.ops.backend(backend):
                    t, ex, _ = time_naive(model, n, sweep_budget)
                naive_t.append(t)
                flags.append(ex)
            fast_t.append(time_fast(model, n, repeats))
        b_naive, a_naive = fit_exponent([s * s for s in sizes], naive_t)
        b_fast, a_fast = fit_exponent([s * s for s in fast_sizes], fast_t)
        results["sweep"][name] = dict(
            batch=n,
            sizes=sizes,
            fast_sizes=fast_sizes,
            naive_s=naive_t,
            naive_extrapolated=flags,
            fast_s=fast_t,
            naive_exponent=b_naive,
            fast_exponent=b_fast,
            naive_fit=[a_naive, b_naive],
            fast_fit=[a_fast, b_fast],
            naive_backend=backend,
        )
        row = "".join(f"{t * 1e3:>11.0f}{'*' if ex else ' '}" for t, ex in zip(naive_t, flags))
        print(f"{LABELS[name] + ' naive':<24}{row}{'':>12}{b_naive:>10.2f}")
        row = "".join(f"{t * 1e3:>12.1f}" for t in fast_t)
        print(f"{LABELS[name] + ' fast':<24}{row}{b_fast:>10.2f}")

    results["machine"]["load_average"] = [load_start, os.getloadavg()[0]]
    print(
        f"\nload average at start / end: {load_start:.1f} / {os.getloadavg()[0]:.1f} "
        f"(other processes share the {os.cpu_count()} cores: times include their interference)"
    )
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "sampling.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=2)
    print(f"\nwrote {path}")
    if not args.no_plot:
        try:
            plot(results, os.path.join(args.out, "sampling_scaling.png"))
        except ImportError as err:
            print(
                f"no plot: {err} (pip install matplotlib, or pixelar[plot]; then "
                f"python benchmarks/sampling.py --replot --out {args.out})"
            )
    return results


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 5.5))
    colors = dict(zip(CONFIGS, ["C0", "C1", "C2", "C3"]))
    for name, r in results["sweep"].items():
        px = [s * s for s in r["sizes"]]
        fpx = [s * s for s in r["fast_sizes"]]
        ax.loglog(
            px,
            r["naive_s"],
            "o--",
            color=colors[name],
            label=f"{LABELS[name]} naive (b={r['naive_exponent']:.2f})",
        )
        ax.loglog(
            fpx,
            r["fast_s"],
            "s-",
            color=colors[name],
            label=f"{LABELS[name]} fast (b={r['fast_exponent']:.2f})",
        )
    ax.set_xlabel("pixels per image")
    m = results["machine"]
    load = m.get("load_average")
    ax.set_ylabel("seconds per batch (16 images; NADE 64)")
    threads = f"{m['threads']} thread" + ("s" if m["threads"] != 1 else "")
    ax.set_title(
        f"pixelar sampling time vs image size (time ~ pixels^b); {threads}"
        + (f", load average {load[0]:.1f}" if load else "")
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
