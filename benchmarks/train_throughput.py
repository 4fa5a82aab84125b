"""Training throughput at the paper's configurations (issue 11): images/s of a whole
training step, timed the way ``pixelar train`` runs it, beside its FLOP floor.

Rows (28x28 binary images, batch 16 unless said):
  pixelrnn_diagonal   PixelRNN Diagonal BiLSTM 7x16      vs the reference backend
  pixelrnn_row        PixelRNN Row LSTM 7x16             vs the reference backend
  pixelcnn            PixelCNN 15x16 (head 32)           vs the reference backend
  nade_digits         NADE H=500, batch 64, data images  vs NADE as a Python loop (autograd)
  nade_bernoulli      NADE H=500, batch 64, Bernoulli(0.5) pixels, same comparison
  nade_sample         NADE H=500: sampling 64 images from a fresh model (p ~ 0.5) vs a
                      Python-loop sampler

A training step is the trainer's own: the model from ``pixelar.training.trainer.build_model``,
its ``NegLogLikelihood`` wrapper and ``make_optimizer("adam")``, and the trainer's step
(loss = mean NLL / D, zero_grad(set_to_none=True), backward, Adam step, loss.item()).
Data: binarized MNIST (the validation split of /work/data/binarized_mnist, or $PIXELAR_MNIST)
when present, else the embedded digits28-binary.

Timing: every row runs in ``--procs`` fresh processes; in each, the fast path and its
baseline alternate for ``--rounds`` rounds (so bursts of load from other processes hit both),
and the row's ratio is min(baseline) / min(fast) per process over those rounds only (as many
samples on each side). The fast path then runs 2 x rounds more times alone, for its img/s
and within-process spread. The table gives the median
over processes of the per-process best img/s, the spread (min..max) across processes, the
FLOPs per step (multiply-adds x 2 of the convolutions, scans and NADE products; backward
counted as twice the forward) and x floor = time / (FLOPs / matmul rate). The matmul rate
is each process's own: a 2048^3 fp32 torch.matmul runs in every round beside the steps, and
the process's x floor is its best step time over the FLOP time at its best matmul rate; the
table gives the median over processes, and their min..max. (The machine's rate drifts 2x
between minutes; a rate measured once at the start, kept in the JSON as
x_floor_start_rate, can sit in a slow or a fast minute that the steps do not share.)
Each process also measures, at the start of every round, the core-to-core round trip of
a cache line between its two CPUs (core_latency.py; ``round_trip_ns`` in the JSON, printed
per process with the share of rounds in the far placement, >= 260 ns): on the team's
2-vCPU machine the host sometimes places the two vCPUs far apart for seconds to minutes,
and steps whose two threads hand data to each other slow down there (README,
"Performance stability: slow NADE processes, explained").
The 1-minute load average before and after is recorded: on a shared machine the absolute
figures are depressed; the ratios much less so. Each process also counts the minor page
faults of every call (``faults_per_fast_call_procs``: the mean over its fast calls): fresh
memory costs a fault per 4 KiB page at first touch, ~2.6 us each on this machine, and
whether a step's temporaries get fresh pages depends on the process's malloc history (in
these processes the 2048^3 matmul's 16 MB frees raise glibc's dynamic mmap threshold, so
they rarely do; README, "Performance stability").

    python benchmarks/train_throughput.py                 # 2 threads, 3 processes per row
    python benchmarks/train_throughput.py --quick         # 1 process, fewer rounds
    python benchmarks/train_throughput.py --rows pixelrnn_diagonal --threads 1
    python benchmarks/train_throughput.py --profile pixelrnn_diagonal   # torch.profiler top 10
    python benchmarks/train_throughput.py --profile nade_bernoulli --by-placement 180
                                                      # its ops near against far

On a machine shared with other busy processes, run it with OMP_WAIT_POLICY=PASSIVE as well
(the workers inherit the environment; the JSON records it): see the README's note on
OpenMP spin-waiting.

Writes benchmarks/results/train_throughput.json (or --out).
"""

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # this checkout's pixelar, not an installed one
sys.path.insert(0, HERE)
import core_latency  # noqa: E402

ROWS = (
    "pixelrnn_diagonal",
    "pixelrnn_row",
    "pixelcnn",
    "nade_digits",
    "nade_bernoulli",
    "nade_sample",
)
LABELS = {
    "pixelrnn_diagonal": "PixelRNN Diagonal BiLSTM 7x16, B=16",
    "pixelrnn_row": "PixelRNN Row LSTM 7x16, B=16",
    "pixelcnn": "PixelCNN 15x16 (head 32), B=16",
    "nade_digits": "NADE H=500, B=64, data images",
    "nade_bernoulli": "NADE H=500, B=64, Bernoulli(0.5) pixels",
    "nade_sample": "NADE H=500, sample 64 images (fresh model)",
}
BASELINE = {
    "pixelrnn_diagonal": "reference backend",
    "pixelrnn_row": "reference backend",
    "pixelcnn": "reference backend",
    "nade_digits": "Python-loop NADE",
    "nade_bernoulli": "Python-loop NADE",
    "nade_sample": "Python-loop sampler",
}
BARS = {
    "pixelrnn_diagonal": "img/s >= 150",
    "pixelrnn_row": "img/s >= 200",
    "pixelcnn": "x floor <= 2",
    "nade_digits": "speedup >= 20",
    "nade_bernoulli": "speedup >= 20",
    "nade_sample": "speedup >= 15",
}
MODELS = {
    "pixelrnn_diagonal": ("pixelrnn", dict(layer="diagonal", num_layers=7, hidden=16)),
    "pixelrnn_row": ("pixelrnn", dict(layer="row", num_layers=7, hidden=16)),
    "pixelcnn": ("pixelcnn", dict(num_layers=15, hidden=16, head_hidden=32)),
}


# ------------------------------------------------------------------------------ FLOPs


def conv_flops(model, pixels):
    """Multiply-adds x 2 of every Conv2d (dense kernels, masks not discounted) per image."""
    total = 0
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            kh, kw = m.kernel_size
            total += 2 * pixels * m.out_channels * m.in_channels * kh * kw
    return total


def step_flops(name, model, batch, pixels):
    """FLOPs of one training step: forward, and twice the forward for the backward."""
    fwd = conv_flops(model, pixels)
    if name == "pixelrnn_diagonal":
        H = model.blocks[0].lstm.hidden
        fwd += len(model.blocks) * 2 * (2 * pixels * 4 * H * 2 * H)  # two directions
    elif name == "pixelrnn_row":
        H = model.blocks[0].lstm.hidden
        fwd += len(model.blocks) * 2 * pixels * 4 * H * 3 * H
    elif name.startswith("nade"):
        fwd = 4 * pixels * model.hidden  # a update and output product per dimension
    return 3 * fwd * batch


# ------------------------------------------------------------------------------ worker


def load_images(n):
    """(images (n, 1, 28, 28) int64, dataset name)."""
    from pixelar import data

    root = os.environ.get("PIXELAR_MNIST", "/work/data/binarized_mnist")
    if os.path.exists(os.path.join(root, "binarized_mnist_valid.amat")):
        return data.load("binarized-mnist", "val", root).images[:n], "binarized-mnist (val)"
    return data.load("digits28-binary", "train").images[:n], "digits28-binary"


def trainer_step(model, x):
    """The trainer's step (pixelar/training/trainer.py), as a callable."""
    from pixelar.training.trainer import NegLogLikelihood, make_optimizer

    net = NegLogLikelihood(model)
    opt = make_optimizer("adam", model.parameters(), 1e-3)
    D = model.num_dims

    def step():
        loss = net(x).mean() / D
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    return step


def nade_loop_step(W, c, V, b, x):
    """Training step of NADE written as a Python loop over the dimensions (autograd), with
    its own Adam: the baseline public code writes. Its weights are contiguous copies, W as
    an (H, D) parameter: the model stores W transposed (pixelar.models.nade), which would
    make the loop's column reads W[:, d] contiguous and move the baseline with our layout."""
    params = [
        p.detach().clone(memory_format=torch.contiguous_format).requires_grad_(True)
        for p in (W, c, V, b)
    ]
    opt = torch.optim.Adam(params, lr=1e-3)
    xs = x.reshape(x.shape[0], -1).float()

    def step():
        W_, c_, V_, b_ = params
        B, D = xs.shape
        a = c_.expand(B, -1)
        logits = []
        for d in range(D):
            h = torch.sigmoid(a)
            logits.append(h @ V_[d] + b_[d])
            a = a + torch.outer(xs[:, d], W_[:, d])
        logits = torch.stack(logits, dim=1)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, xs, reduction="sum") / (
            B * D
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    return step


def nade_loop_sampler(model, n):
    """NADE sampling as a Python loop over the dimensions (one batched update per step), on
    contiguous copies of the weights (W as an (H, D) tensor: see nade_loop_step)."""
    W, c, V, b = (p.detach().contiguous() for p in (model.W, model.c, model.V[:, 0], model.b[:, 0]))
    D = W.shape[1]

    def sample():
        g = torch.Generator().manual_seed(0)
        a = c.expand(n, -1).clone()
        x = torch.empty(n, D)
        for d in range(D):
            p = torch.sigmoid(torch.sigmoid(a) @ V[d] + b[d])
            x[:, d] = (torch.rand(n, generator=g) < p).float()
            a += x[:, d : d + 1] * W[:, d]
        return x

    return sample


def make_pair(name):
    """{"fast": fn, "baseline": fn}, FLOPs per call, images per call, data name."""
    import pixelar
    from pixelar.models import NADE
    from pixelar.training.trainer import build_model

    torch.manual_seed(0)
    if name in MODELS:
        batch = 16
        x, data_name = load_images(batch)
        fns = {}
        for variant, backend in (("fast", "auto"), ("baseline", "reference")):
            torch.manual_seed(0)
            model = build_model(MODELS[name][0], MODELS[name][1], (1, 28, 28), 2)
            step = trainer_step(model, x)

            def run(step=step, backend=backend):
                with pixelar.ops.backend(backend):
                    step()

            fns[variant] = run
        return fns, step_flops(name, model, batch, 784), batch, data_name
    if name in ("nade_digits", "nade_bernoulli"):
        batch = 64
        if name == "nade_digits":
            x, data_name = load_images(batch)
        else:
            g = torch.Generator().manual_seed(0)
            x, data_name = (
                (torch.rand(batch, 1, 28, 28, generator=g) < 0.5).long(),
                "Bernoulli(0.5)",
            )
        model = build_model("nade", {"hidden": 500}, (1, 28, 28), 2)
        baseline = nade_loop_step(model.W, model.c, model.V[:, 0], model.b[:, 0], x)
        return (
            {"fast": trainer_step(model, x), "baseline": baseline},
            step_flops(name, model, batch, 784),
            batch,
            data_name,
        )
    if name == "nade_sample":
        n = 64
        model = NADE(image_shape=(1, 28, 28), hidden=500).eval()
        g = torch.Generator().manual_seed(0)

        def fast():
            with torch.no_grad():
                model.sample(n, generator=g)

        flops = n * 784 * 4 * model.hidden
        return {"fast": fast, "baseline": nade_loop_sampler(model, n)}, flops, n, "-"
    raise ValueError(f"unknown row {name!r}; expected one of {ROWS}")


MATMUL_N = 2048  # the FLOP floor's matmul: MATMUL_N^3, as benchmarks/_timing.matmul_rate


def matmul_control():
    """One MATMUL_N^3 fp32 matmul, timed in every round beside the steps: the process's own
    matmul rate, so that its x floor compares times taken in the same minutes."""
    a, b = torch.randn(MATMUL_N, MATMUL_N), torch.randn(MATMUL_N, MATMUL_N)
    return lambda: torch.matmul(a, b)


def minor_faults():
    """The process's minor page faults so far."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def worker(name, threads, rounds, max_seconds, fast_only=False):
    torch.set_num_threads(threads)
    fns, flops, images, data_name = make_pair(name)
    if fast_only:
        del fns["baseline"]
    fns["matmul"] = matmul_control()
    for fn in fns.values():  # warm-up (allocator, thread pool, first-call paths)
        fn()
    fns["fast"]()
    samples = {k: [] for k in fns}
    faults = []  # the fast path's, one count per call
    trips = []  # the CPUs' core-to-core round trip at each round's start (None: unmeasurable)
    start = time.perf_counter()
    for i in range(rounds):
        trips.append(core_latency.round_trip_ns())
        for k, fn in fns.items():
            f0, t0 = minor_faults(), time.perf_counter()
            fn()
            samples[k].append(time.perf_counter() - t0)
            if k == "fast":
                faults.append(minor_faults() - f0)
        if i >= 2 and time.perf_counter() - start > max_seconds:
            break
    rounds_done = len(samples["fast"])
    # More samples of the fast path alone (cheap), for the within-process spread and img/s;
    # the ratio to the baseline reads only the first rounds_done (the interleaved ones).
    for _ in range(2 * rounds_done):
        f0, t0 = minor_faults(), time.perf_counter()
        fns["fast"]()
        samples["fast"].append(time.perf_counter() - t0)
        faults.append(minor_faults() - f0)
    print(
        json.dumps(
            dict(
                name=name,
                samples=samples,
                faults=faults,
                round_trip_ns=trips,
                interleaved_rounds=rounds_done,
                flops=flops,
                images=images,
                data=data_name,
            )
        )
    )


def write_json(out, obj, indent=1):
    """Writes obj as JSON to the path out (creating its folder) and says so."""
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(obj, f, indent=indent)
    print(f"wrote {out}")


def warm_fast_step(name, threads):
    """One row's fast step at ``threads`` threads, run 3 times: (step, images per step)."""
    torch.set_num_threads(threads)
    fns, _, images, _ = make_pair(name)
    step = fns["fast"]
    for _ in range(3):
        step()
    return step, images


def profile_row(name, threads, steps, out):
    """torch.profiler of the fast path's step: the top ten ops by self CPU time per step
    (printed, and written as JSON to ``out``)."""
    from torch.profiler import ProfilerActivity, profile

    step, images = warm_fast_step(name, threads)
    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    per_step = (time.perf_counter() - t0) / steps
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    top = [
        dict(
            op=e.key,
            self_ms_per_step=e.self_cpu_time_total / 1e3 / steps,
            share=e.self_cpu_time_total / total,
            calls_per_step=e.count / steps,
        )
        for e in events[:10]
    ]
    print(f"{LABELS[name]}, {threads} thread(s): {per_step * 1e3:.1f} ms/step under the profiler")
    for t in top:
        print(
            f"  {t['op'][:60]:60s} {t['self_ms_per_step']:8.2f} ms {100 * t['share']:5.1f}% "
            f"{t['calls_per_step']:6.0f} calls"
        )
    result = dict(
        row=name,
        threads=threads,
        steps=steps,
        ms_per_step_profiled=per_step * 1e3,
        images=images,
        top10=top,
        load_average=os.getloadavg()[0],
        date=time.strftime("%Y-%m-%d %H:%M"),
    )
    write_json(out, result)


def profile_by_placement(name, threads, seconds, out):
    """The fast step's ops by self CPU time, near against far (README, "Performance
    stability"): for ``seconds``, each round measures the core-to-core round trip, times 3
    plain steps, then profiles 3 more; the rounds are split by their round trip (far:
    >= core_latency.FAR_NS) and each op's median ms per step is printed for both sides
    (the 15 ops largest near), and written as JSON to ``out``. The placement changes on
    its own, on a scale of seconds to minutes: a run may see only one side."""
    from torch.profiler import ProfilerActivity, profile

    step, _ = warm_fast_step(name, threads)
    rounds, t_end = [], time.time() + seconds
    while time.time() < t_end:
        trip = core_latency.round_trip_ns()
        t0 = time.perf_counter()
        for _ in range(3):
            step()
        plain = (time.perf_counter() - t0) / 3
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(3):
                step()
        ops = {e.key: e.self_cpu_time_total / 3e3 for e in prof.key_averages()}
        rounds.append(dict(round_trip_ns=trip, step_ms=plain * 1e3, ops_ms=ops))
    sides = {
        "near": [r for r in rounds if r["round_trip_ns"] < core_latency.FAR_NS],
        "far": [r for r in rounds if r["round_trip_ns"] >= core_latency.FAR_NS],
    }

    def median(side, get):
        values = [get(r) for r in sides[side]]
        return statistics.median(values) if values else None

    first = "near" if sides["near"] else "far"
    keys = sorted(
        rounds[0]["ops_ms"], key=lambda k: -(median(first, lambda r: r["ops_ms"].get(k, 0.0)))
    )
    table = [
        dict(op=k, **{s: median(s, lambda r, k=k: r["ops_ms"].get(k, 0.0)) for s in sides})
        for k in keys[:15]
    ]
    steps = {s: median(s, lambda r: r["step_ms"]) for s in sides}

    def ms(v):
        return f"{v:8.2f}" if v is not None else f"{'-':>8s}"

    print(
        f"{LABELS[name]}, {threads} thread(s), {seconds:.0f} s: {len(sides['near'])} rounds near, "
        f"{len(sides['far'])} far; step {ms(steps['near'])} ms near, {ms(steps['far'])} ms far "
        "(medians of 3-step rounds, no profiler)"
    )
    print(
        f"  {'op (self CPU ms per step, median of rounds under the profiler)':62s} "
        f"{'near':>8s} {'far':>8s}"
    )
    for t in table:
        print(f"  {t['op'][:62]:62s} {ms(t['near'])} {ms(t['far'])}")
    for r in rounds:  # each round's ms of the shown ops, in the order of "ops"
        r["ops_ms"] = [round(r["ops_ms"].get(t["op"], 0.0), 3) for t in table]
    result = dict(
        row=name,
        threads=threads,
        seconds=seconds,
        far_ns=core_latency.FAR_NS,
        rounds_near=len(sides["near"]),
        rounds_far=len(sides["far"]),
        step_ms=steps,
        ops=table,
        rounds=rounds,
        date=time.strftime("%Y-%m-%d %H:%M"),
    )
    write_json(out, result, indent=None)  # one line: thousands of rounds


# ------------------------------------------------------------------------------ driver


def run_row(name, args):
    results = []
    for _ in range(args.procs):
        cmd = [
            sys.executable,
            os.path.abspath(__file__),
            "--worker",
            name,
            "--threads",
            str(args.threads),
            "--rounds",
            str(args.rounds),
            "--max-seconds",
            str(args.max_seconds),
        ] + (["--fast-only"] if args.fast_only else [])
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            raise RuntimeError(f"{name}: worker failed:\n{out.stderr[-2000:]}")
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return results


def summarize(name, procs, rate):
    images, flops = procs[0]["images"], procs[0]["flops"]
    best = [min(p["samples"]["fast"]) for p in procs]
    med = [statistics.median(p["samples"]["fast"]) for p in procs]
    base = [min(p["samples"]["baseline"]) for p in procs if "baseline" in p["samples"]]
    # each side's best of the same interleaved rounds (as many samples on each side)
    best_interleaved = [min(p["samples"]["fast"][: p["interleaved_rounds"]]) for p in procs]
    ratios = [b / f for b, f in zip(base, best_interleaved)]
    # each process's matmul rate (best of its rounds) and its x floor at that rate
    rates = [2.0 * MATMUL_N**3 / min(p["samples"]["matmul"]) for p in procs]
    x_floor_procs = [f / (flops / r) for f, r in zip(best, rates)]
    faults = [statistics.mean(p["faults"]) for p in procs]
    trips = [[x for x in p.get("round_trip_ns", []) if x is not None] for p in procs]
    t = statistics.median(best)
    floor = flops / rate
    return dict(
        row=name,
        label=LABELS[name],
        baseline=BASELINE[name],
        bar=BARS[name],
        data=procs[0]["data"],
        images_per_call=images,
        flops=flops,
        seconds_best=t,
        images_per_s=images / t,
        images_per_s_procs=[images / b for b in best],
        images_per_s_median_procs=[images / m for m in med],
        baseline_seconds=statistics.median(base) if base else None,
        speedup_vs_baseline=statistics.median(ratios) if ratios else None,
        speedup_procs=ratios,
        floor_seconds=floor,
        x_floor_start_rate=t / floor,
        matmul_rate_procs=rates,
        x_floor_procs=x_floor_procs,
        x_floor=statistics.median(x_floor_procs),
        faults_per_fast_call_procs=faults,
        round_trip_ns_procs=[statistics.median(x) if x else None for x in trips],
        far_rounds_procs=[
            sum(v >= core_latency.FAR_NS for v in x) / len(x) if x else None for x in trips
        ],
    )


def print_table(rows):
    print(
        f"\n{'row':44s} {'img/s':>7s} {'procs min..max':>15s} {'GFLOP':>6s} "
        f"{'x floor':>7s} {'min..max':>9s} {'vs baseline':>11s}  bar"
    )
    for r in rows:
        lo, hi = min(r["images_per_s_procs"]), max(r["images_per_s_procs"])
        flo, fhi = min(r["x_floor_procs"]), max(r["x_floor_procs"])
        ratio = r["speedup_vs_baseline"]
        ratio = f"{ratio:10.1f}x" if ratio is not None else f"{'-':>11s}"
        print(
            f"{r['label']:44s} {r['images_per_s']:7.1f} {lo:7.1f}..{hi:<7.1f} "
            f"{r['flops'] / 1e9:6.2f} {r['x_floor']:7.1f} {flo:4.1f}..{fhi:<4.1f} {ratio}  "
            f"{r['bar']}"
        )


def print_placement(rows):
    """Per row and process: the median core-to-core round trip and the share of rounds in the
    far placement (core_latency.py), where the 2-thread NADE step runs at 1-thread speed."""
    threshold = f">= {core_latency.FAR_NS:.0f} ns"
    print(f"\ncore-to-core round trip per process: median ns (share of rounds far, {threshold})")
    for r in rows:
        procs = [
            f"{ns:.0f} ({far:.0%})" if ns is not None else "-"
            for ns, far in zip(r["round_trip_ns_procs"], r["far_rounds_procs"])
        ]
        print(f"{r['label']:44s} {', '.join(procs)}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", nargs="+", default=list(ROWS), choices=ROWS)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--procs", type=int, default=3, help="fresh processes per row")
    p.add_argument("--rounds", type=int, default=8, help="interleaved rounds per process")
    p.add_argument(
        "--max-seconds",
        type=float,
        default=60.0,
        help="stop a process's rounds after this long (at least 3 rounds)",
    )
    p.add_argument("--quick", action="store_true", help="1 process, 3 rounds per row")
    p.add_argument(
        "--fast-only",
        action="store_true",
        help="time the fast path alone (no baseline, no speedup column)",
    )
    p.add_argument(
        "--profile",
        default=None,
        choices=ROWS,
        help="instead of timing: torch.profiler's top ten ops of one row's fast step",
    )
    p.add_argument("--profile-steps", type=int, default=5)
    p.add_argument(
        "--by-placement",
        type=float,
        default=None,
        metavar="SECONDS",
        help="with --profile: profile for this long, the ops near against far",
    )
    p.add_argument("--out", default=None)
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.by_placement is not None and not args.profile:
        p.error("--by-placement needs --profile ROW")
    if args.profile and args.by_placement is not None:
        out = args.out or os.path.join(
            HERE, "results", f"train_profile_{args.profile}_{args.threads}t_placement.json"
        )
        return profile_by_placement(args.profile, args.threads, args.by_placement, out)
    if args.profile:
        out = args.out or os.path.join(
            HERE, "results", f"train_profile_{args.profile}_{args.threads}t.json"
        )
        return profile_row(args.profile, args.threads, args.profile_steps, out)
    if args.worker:
        return worker(args.worker, args.threads, args.rounds, args.max_seconds, args.fast_only)
    if args.quick:
        args.procs, args.rounds = 1, 3
    from _timing import matmul_rate

    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    rate = matmul_rate()
    import pixelar

    print(f"pixelar from {os.path.dirname(pixelar.__file__)}")
    print(
        f"matmul rate {rate / 1e9:.1f} GFLOP/s ({args.threads} threads); "
        f"load average {load_before:.2f}; OMP_WAIT_POLICY="
        f"{os.environ.get('OMP_WAIT_POLICY', '(unset)')}"
    )
    rows = []
    for name in args.rows:
        rows.append(summarize(name, run_row(name, args), rate))
        r = rows[-1]
        vs = (
            f", {r['speedup_vs_baseline']:.1f}x vs {r['baseline']}"
            if r["speedup_vs_baseline"] is not None
            else ""
        )
        faults = ", ".join(f"{f:.0f}" for f in r["faults_per_fast_call_procs"])
        print(
            f"  {r['label']}: {r['images_per_s']:.1f} img/s, x floor {r['x_floor']:.1f}{vs}; "
            f"page faults per fast call (per process) {faults}"
        )
    load_after = os.getloadavg()[0]
    print_table(rows)
    print_placement(rows)
    print(f"load average: {load_before:.2f} before, {load_after:.2f} after ({os.cpu_count()} CPUs)")
    meta = dict(
        threads=args.threads,
        procs=args.procs,
        rounds=args.rounds,
        fast_only=args.fast_only,
        omp_wait_policy=os.environ.get("OMP_WAIT_POLICY"),
        matmul_rate=rate,
        load_average_before=load_before,
        load_average_after=load_after,
        cpus=os.cpu_count(),
        torch=torch.__version__,
        machine=platform.processor() or platform.machine(),
        date=time.strftime("%Y-%m-%d %H:%M"),
    )
    out = args.out or os.path.join(HERE, "results", "train_throughput.json")
    write_json(out, dict(meta=meta, rows=rows))


if __name__ == "__main__":
    main()
