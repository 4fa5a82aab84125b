"""Benchmark of pixelar's CPU ops: the pure-PyTorch reference vs the C++ kernel, forward and
forward+backward, at the paper's configurations, in one run.

    python benchmarks/ops.py            # paper configurations (a few minutes on 2 cores)
    python benchmarks/ops.py --quick    # small shapes, a smoke run (seconds)

Ops and configurations (van den Oord et al. 2016; Larochelle & Murray 2011):
  diagonal_lstm_scan  binarized 28x28, 16 units, batch 16: x_gates (16, 64, 28, 55)
  row_lstm_scan       32x32x3, 128 units, batch 16:        x_gates (16, 512, 32, 32)
  nade_forward        D = 784, 500 hidden units, batch 64, one logit per dimension
  conv_residual_block PixelCNN's residual block, binarized 28x28, h = 16 (F = 32), batch 16
NADE is also timed as most public code writes it (a Python loop over the 784 dimensions,
building the logits one by one with autograd) and in vectorized pure-PyTorch forms (one
exclusive cumsum over all dimensions; blocks of 28 dimensions, each a small batched matmul);
the table names the fastest vectorized form. Then one training step (log_prob, backward,
Adam) of each model in pixelar.models under the "reference" and "cpp" backends, when the
models are there.

Each time is the median of --repeats wall-clock runs after a warm-up, with the threads torch
uses (--threads). The FLOP floor of an op is its multiply-add count (2 FLOPs each; forward
F, forward+backward 3F: the products for the outputs, the input gradients and the weight
gradients; transcendentals not counted) divided by the rate of one large torch.matmul
measured in the same run; "x floor" is how far above that floor a time is.
Prints a table and writes benchmarks/results/ops.json (or --out).
"""

import argparse
import json
import os
import platform
import sys
import time

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

from _timing import interleaved_times, matmul_rate  # noqa: E402

import pixelar  # noqa: E402
from pixelar.ops import (  # noqa: E402
    conv_residual_block,
    conv_residual_block_ref,
    diagonal_lstm_scan,
    diagonal_lstm_scan_ref,
    nade_forward,
    nade_forward_ref,
    row_lstm_scan,
    row_lstm_scan_ref,
)

PAPER = dict(
    diagonal=dict(B=16, H=16, R=28, W=28),
    row=dict(B=16, H=128, R=32, W=32),
    nade=dict(B=64, D=784, Hd=500),
    block=dict(B=16, F=32, h=16, R=28, W=28),
    models=dict(diag_batch=16, row_batch=16, row_layers=2, nade_batch=64),
)
QUICK = dict(
    diagonal=dict(B=4, H=8, R=10, W=10),
    row=dict(B=2, H=16, R=8, W=8),
    nade=dict(B=8, D=64, Hd=50),
    block=dict(B=2, F=8, h=4, R=6, W=5),
    models=dict(diag_batch=2, row_batch=2, row_layers=1, nade_batch=8),
)


# --------------------------------------------------------------------------- NADE variants
# W: (Hd, D), c: (Hd,), V: (D, Hd), b: (D,), x: (B, D) binary floats. Each returns the
# (B, D) Bernoulli logits; the loss is binary cross-entropy with x.


def nade_python_loop(x, W, c, V, b):
    """NADE as most public code writes it: a loop over the dimensions, one logit at a time."""
    B, D = x.shape
    a = c.expand(B, -1)
    logits = []
    for d in range(D):
        h = torch.sigmoid(a)
        logits.append(h @ V[d] + b[d])
        a = a + torch.outer(x[:, d], W[:, d])
    return torch.stack(logits, dim=1)


def nade_vectorized_cumsum(x, W, c, V, b):
    """All hidden pre-activations at once: a_d = c + exclusive cumsum_d of x_d W[:, d]
    ((B, D, Hd) tensors), then one batched product with V."""
    xw = x.unsqueeze(2) * W.T.unsqueeze(0)
    a = c + torch.cumsum(xw, dim=1) - xw
    return torch.einsum("bdh,dh->bd", torch.sigmoid(a), V) + b


def nade_vectorized_blocked(x, W, c, V, b, block=28):
    """Blocks of dimensions: inside a block, a_d = a_start + (x masked to earlier dims of the
    block) @ W_block^T as one batched matmul; the block's total carries to the next."""
    B, D = x.shape
    a = c.expand(B, -1)
    mask = torch.ones(block, block, dtype=x.dtype).tril(-1)
    logits = []
    for s in range(0, D, block):
        xb, Wb = x[:, s : s + block], W[:, s : s + block]
        k = xb.shape[1]
        pre = a.unsqueeze(1) + torch.matmul(xb.unsqueeze(1) * mask[:k, :k], Wb.T)
        logits.append((torch.sigmoid(pre) * V[s : s + k]).sum(-1) + b[s : s + k])
        a = a + xb @ Wb.T
    return torch.cat(logits, dim=1)


def nade_op(fn):
    """Adapt an op with the pixelar layout (V: (D, 1, Hd), b: (D, 1)) to the NADE signature."""
    return lambda x, W, c, V, b: fn(x, W, c, V.unsqueeze(1), b.unsqueeze(1))[..., 0]


def nade_cpp(x, W, c, V, b):
    with pixelar.ops.backend("cpp"):
        return nade_forward(x, W, c, V.unsqueeze(1), b.unsqueeze(1))[..., 0]


# ------------------------------------------------------------------------------ harness


class Bench:
    def __init__(self, args):
        self.args = args
        self.rows = []

    def times(self, fns, repeats=None):
        return interleaved_times(
            fns, repeats=repeats or self.args.repeats, warmup=1, max_seconds=self.args.max_seconds
        )

    def add(
        self, op, config, mode, variant, seconds, samples, flops=None, rate=None, baseline=None
    ):
        row = dict(
            op=op,
            config=config,
            mode=mode,
            variant=variant,
            median_s=seconds,
            samples_s=samples,
            baseline=baseline,
        )
        if flops is not None:
            row["flops"] = flops
            row["floor_s"] = flops / rate
            row["x_floor"] = seconds / row["floor_s"]
        self.rows.append(row)
        print(f"  {op:20s} {mode:8s} {variant:28s} {seconds * 1e3:10.2f} ms", flush=True)
        return row


def scan_case(bench, name, ref_fn, op_fn, x, w, flops, rate, config):
    gh = torch.randn(x.shape[0], w.shape[1], *x.shape[2:])
    gc = torch.randn_like(gh)

    def fwd(fn):
        def run():
            with torch.no_grad():
                fn(x, w)

        return run

    def fwd_bwd(fn):
        xg = x.detach().clone().requires_grad_()
        wg = w.detach().clone().requires_grad_()

        def run():
            h, c = fn(xg, wg)
            torch.autograd.backward((h, c), (gh, gc))
            xg.grad = wg.grad = None

        return run

    def cpp(xx, ww):
        with pixelar.ops.backend("cpp"):
            return op_fn(xx, ww)

    # The kernel agrees with the reference on these inputs (fp32 tolerance).
    with torch.no_grad():
        h_ref, _ = ref_fn(x, w)
        h_cpp, _ = cpp(x, w)
    torch.testing.assert_close(h_cpp, h_ref, rtol=1e-3, atol=1e-4)
    for mode, wrap, f in (("fwd", fwd, flops), ("fwd+bwd", fwd_bwd, 3 * flops)):
        res = bench.times({"reference": wrap(ref_fn), "cpp": wrap(cpp)})
        bench.add(name, config, mode, "reference", *res["reference"], f, rate)
        bench.add(name, config, mode, "cpp", *res["cpp"], f, rate, baseline="reference")


def block_case(bench, cfg, rate):
    """conv_residual_block: the C++ kernel against the reference (a composite of F.conv2d
    calls) on channels-last maps, forward and forward + backward. FLOPs: the five open taps
    of the 3x3 kernel, which is what both compute (the reference's zero taps aside)."""
    B, F_, h, R, W = (cfg[k] for k in ("B", "F", "h", "R", "W"))
    x = torch.randn(B, F_, R, W).contiguous(memory_format=torch.channels_last)
    weights = [
        torch.randn(F_, h) / F_**0.5,
        torch.randn(h) * 0.1,
        torch.randn(5, h, h) / (5 * h) ** 0.5,
        torch.randn(h) * 0.1,
        torch.randn(h, F_) / h**0.5,
        torch.randn(F_) * 0.1,
    ]
    grad = torch.randn_like(x)
    flops = 2 * B * R * W * (F_ * h + 5 * h * h + h * F_)

    def cpp(*args):
        with pixelar.ops.backend("cpp"):
            return conv_residual_block(*args)

    def fwd(fn):
        def run():
            with torch.no_grad():
                fn(x, *weights)

        return run

    def fwd_bwd(fn):
        leaves = [t.detach().clone().requires_grad_() for t in [x] + weights]

        def run():
            fn(*leaves).backward(grad)
            for t in leaves:
                t.grad = None

        return run

    with torch.no_grad():  # the kernel agrees with the reference on these inputs
        torch.testing.assert_close(
            cpp(x, *weights), conv_residual_block_ref(x, *weights), rtol=1e-3, atol=1e-4
        )
    config = f"x {tuple(x.shape)}, h = {h}"
    for mode, wrap, f in (("fwd", fwd, flops), ("fwd+bwd", fwd_bwd, 3 * flops)):
        res = bench.times({"reference": wrap(conv_residual_block_ref), "cpp": wrap(cpp)})
        bench.add("conv_residual_block", config, mode, "reference", *res["reference"], f, rate)
        bench.add(
            "conv_residual_block", config, mode, "cpp", *res["cpp"], f, rate, baseline="reference"
        )


def nade_inputs(cfg):
    """The NADE input cases: random Bernoulli(0.5) pixels, and (when pixelar.data has them)
    the first B images of the embedded binarized digits, pixelar's own training data. The
    kernel skips work where x_d = 0 (mostly-zero images are faster), so both are timed."""
    B, D = cfg["B"], cfg["D"]
    cases = [("x ~ Bernoulli(0.5)", torch.bernoulli(torch.full((B, D), 0.5)))]
    try:
        from pixelar import data as datasets

        name = "digits28-binary" if D == 784 else "digits-binary"
        images = datasets.load(name, "train").images[:B].reshape(B, -1).float()
        if images.shape == (B, D):
            cases.append((f"x = {B} images of {name} ({images.mean():.0%} ones)", images))
    except Exception as exc:  # data module missing or different: keep the random case
        print(f"  (digits case skipped: {type(exc).__name__}: {exc})")
    return cases


def nade_case(bench, cfg, rate, data_name, x):
    B, D, Hd = cfg["B"], cfg["D"], cfg["Hd"]
    config = f"B={B} D={D} Hd={Hd} O=1, {data_name}"
    params = [
        torch.randn(Hd, D) / D**0.5,
        torch.zeros(Hd),
        torch.randn(D, Hd) / Hd**0.5,
        torch.zeros(D),
    ]
    variants = [
        ("python loop (public code)", nade_python_loop),
        ("vectorized: cumsum", nade_vectorized_cumsum),
        ("vectorized: blocks of 28", nade_vectorized_blocked),
        ("reference (nade_forward_ref)", nade_op(nade_forward_ref)),
        ("cpp", nade_cpp),
    ]
    with torch.no_grad():
        expected = nade_python_loop(x, *params)
        for name, fn in variants[1:]:
            torch.testing.assert_close(
                fn(x, *params), expected, rtol=1e-3, atol=1e-4, msg=lambda m: f"{name}: {m}"
            )
    flops = 2 * B * D * Hd * 2  # a update and output product, per dimension
    times = {}
    for mode in ("fwd", "fwd+bwd"):
        runs = {}
        for name, fn in variants:
            if mode == "fwd":

                def run(fn=fn):
                    with torch.no_grad():
                        fn(x, *params)
            else:
                leaves = [p.detach().clone().requires_grad_() for p in params]

                def run(fn=fn, leaves=leaves):
                    loss = F.binary_cross_entropy_with_logits(fn(x, *leaves), x)
                    torch.autograd.grad(loss, leaves)

            runs[name] = run
        for name, (t, s) in bench.times(runs).items():
            times[mode, name] = t
            bench.add(
                "nade_forward",
                config,
                mode,
                name,
                t,
                s,
                flops if mode == "fwd" else 3 * flops,
                rate,
                baseline=None if name != "cpp" else "python loop (public code)",
            )
    return times


def model_steps(bench, cfg, quick):
    try:
        from pixelar.models import NADE, PixelRNN
    except ImportError as exc:  # the models are optional for this script
        print(f"  (models skipped: {exc})")
        return
    size = 8 if quick else 28
    cases = [
        (
            f"PixelRNN diagonal, 7 layers x 16, 1x{size}x{size}, binary, B={cfg['diag_batch']}",
            lambda: PixelRNN(
                image_shape=(1, size, size), levels=2, layer="diagonal", num_layers=7, hidden=16
            ),
            lambda: torch.randint(0, 2, (cfg["diag_batch"], 1, size, size)),
        ),
        (
            f"PixelRNN row, {cfg['row_layers']} layers x {16 if quick else 128}, "
            f"3x{size if quick else 32}x{size if quick else 32}, 256 levels, B={cfg['row_batch']}",
            lambda: PixelRNN(
                image_shape=(3, size, size) if quick else (3, 32, 32),
                levels=256,
                layer="row",
                num_layers=cfg["row_layers"],
                hidden=16 if quick else 128,
            ),
            lambda: torch.randint(
                0, 256, (cfg["row_batch"], 3) + ((size, size) if quick else (32, 32))
            ),
        ),
        (
            f"NADE {50 if quick else 500} hidden, 1x{size}x{size}, B={cfg['nade_batch']}",
            lambda: NADE(image_shape=(1, size, size), hidden=50 if quick else 500),
            lambda: torch.randint(0, 2, (cfg["nade_batch"], 1, size, size)),
        ),
    ]
    for name, make, data in cases:
        steps = {}
        for backend_name in ("reference", "cpp"):
            torch.manual_seed(0)
            try:
                model = make()
            except Exception as exc:  # a model the other engineers have not finished
                print(f"  (model {name!r} skipped: {type(exc).__name__}: {exc})")
                break
            opt = torch.optim.Adam(model.parameters(), lr=1e-3)
            x = data()

            def step(model=model, opt=opt, x=x, backend_name=backend_name):
                with pixelar.ops.backend(backend_name):
                    loss = -model.log_prob(x).mean()
                    opt.zero_grad()
                    loss.backward()
                    opt.step()

            steps[backend_name] = step
        if len(steps) < 2:
            continue
        res = bench.times(steps, repeats=max(3, bench.args.repeats // 2))
        bench.add("train step", name, "step", "reference", *res["reference"])
        bench.add("train step", name, "step", "cpp", *res["cpp"], baseline="reference")


def print_table(rows, rate, n):
    print(
        f"\nthreads: {torch.get_num_threads()}   matmul rate: {rate / 1e9:.1f} GFLOP/s "
        f"({n}x{n} by {n}x{n} fp32)"
    )
    by_key = {(r["op"], r["config"], r["mode"], r["variant"]): r for r in rows}
    header = (
        f"| {'mode':7s} | {'variant':28s} | {'median ms':>10s} | {'speedup':>8s} | "
        f"{'floor ms':>8s} | {'x floor':>7s} |"
    )
    group = None
    for r in rows:
        if (r["op"], r["config"]) != group:
            group = (r["op"], r["config"])
            print(f"\n{r['op']}: {r['config']}")
            print(header)
            print("|" + "|".join("-" * len(c) for c in header.split("|")[1:-1]) + "|")
        base = by_key.get((r["op"], r["config"], r["mode"], r["baseline"]))
        speed = f"{base['median_s'] / r['median_s']:.1f}x" if base else ""
        floor = f"{r['floor_s'] * 1e3:.2f}" if "floor_s" in r else ""
        xf = f"{r['x_floor']:.1f}" if "x_floor" in r else ""
        print(
            f"| {r['mode']:7s} | {r['variant'][:28]:28s} | {r['median_s'] * 1e3:10.2f} | "
            f"{speed:>8s} | {floor:>8s} | {xf:>7s} |"
        )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small shapes, a smoke run")
    parser.add_argument(
        "--repeats", type=int, default=None, help="timed runs per case (default 7, --quick 3)"
    )
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=20.0,
        help="stop repeating a case after this long (at least 3 runs)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--no-models", action="store_true", help="skip the model steps")
    parser.add_argument("--out", default=None, help="JSON path (default results/ops.json)")
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = 3 if args.quick else 7
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if not pixelar._extension.extension_loaded():
        sys.exit(pixelar._extension.extension_error())
    torch.manual_seed(0)
    cfg = QUICK if args.quick else PAPER
    bench = Bench(args)
    t_start = time.perf_counter()

    n = 512 if args.quick else 2048
    rate = matmul_rate(n)
    print(f"matmul rate: {rate / 1e9:.1f} GFLOP/s, threads: {torch.get_num_threads()}")

    d = cfg["diagonal"]
    S = d["R"] + d["W"] - 1
    x = torch.randn(d["B"], 4 * d["H"], d["R"], S)
    w = 0.5 * torch.randn(4 * d["H"], d["H"], 2) / d["H"] ** 0.5
    flops = 2 * d["B"] * d["R"] * d["W"] * (4 * d["H"]) * (2 * d["H"])
    scan_case(
        bench,
        "diagonal_lstm_scan",
        diagonal_lstm_scan_ref,
        diagonal_lstm_scan,
        x,
        w,
        flops,
        rate,
        f"x_gates {tuple(x.shape)}",
    )

    r = cfg["row"]
    x = torch.randn(r["B"], 4 * r["H"], r["R"], r["W"])
    w = 0.5 * torch.randn(4 * r["H"], r["H"], 3) / (3 * r["H"]) ** 0.5
    flops = 2 * r["B"] * (r["R"] - 1) * r["W"] * (4 * r["H"]) * (3 * r["H"])
    scan_case(
        bench,
        "row_lstm_scan",
        row_lstm_scan_ref,
        row_lstm_scan,
        x,
        w,
        flops,
        rate,
        f"x_gates {tuple(x.shape)}",
    )

    nade_times = {
        name: nade_case(bench, cfg["nade"], rate, name, x) for name, x in nade_inputs(cfg["nade"])
    }

    block_case(bench, cfg["block"], rate)

    if not args.no_models:
        model_steps(bench, cfg["models"], args.quick)

    print_table(bench.rows, rate, n)
    summary = {}
    for data_name, times in nade_times.items():
        vec = min(
            ("vectorized: cumsum", "vectorized: blocks of 28"), key=lambda n: times["fwd+bwd", n]
        )
        print(f"\nNADE, {data_name}: best vectorized pure-PyTorch form (fwd+bwd): {vec}")
        summary[data_name] = {"best_vectorized": vec}
        for mode in ("fwd", "fwd+bwd"):
            cpp = times[mode, "cpp"]
            s = summary[data_name][mode] = dict(
                vs_python_loop=times[mode, "python loop (public code)"] / cpp,
                vs_best_vectorized=times[mode, vec] / cpp,
                vs_reference=times[mode, "reference (nade_forward_ref)"] / cpp,
            )
            print(
                f"  cpp {mode}: {s['vs_python_loop']:.1f}x the Python loop, "
                f"{s['vs_best_vectorized']:.1f}x the best vectorized form, "
                f"{s['vs_reference']:.1f}x nade_forward_ref"
            )
    out = args.out or os.path.join(
        HERE, "results", "ops.json" if not args.quick else "ops_quick.json"
    )
    os.makedirs(os.path.dirname(out), exist_ok=True)
    meta = dict(
        torch=torch.__version__,
        threads=torch.get_num_threads(),
        cpu=platform.processor() or platform.machine(),
        quick=args.quick,
        repeats=args.repeats,
        matmul_flops_per_s=rate,
        nade_speedups=summary,
        seconds=time.perf_counter() - t_start,
    )
    with open(out, "w") as f:
        json.dump(dict(meta=meta, results=bench.rows), f, indent=1)
    print(f"wrote {out} ({meta['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
