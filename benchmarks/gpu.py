"""GPU check and benchmark of pixelar's CUDA and Triton kernels (run it when a GPU is at hand).

    python benchmarks/gpu.py                      # check, then time, every op
    python benchmarks/gpu.py --ops nade_forward --check-only

1. Check: every CUDA and Triton kernel against the pure-PyTorch reference on the GPU,
   forward and gradients, at odd small shapes and at the paper's configurations (the
   reference runs in float64; the error is max|out - ref| / max|ref|).
2. Time: CUDA events, warm-up, then the median of --iters runs, for the forward and for
   forward + backward, against the reference and, for the LSTM scans, against
   torch.nn.LSTM (cuDNN) with the same hidden size and sequence length (batch = every
   sequence the scan advances at once; cuDNN also does the input projection the scans get
   precomputed, so it does slightly more work).
   Beside the numeric check, torch.library.opcheck of every raw op on CUDA tensors (schema,
   fake kernel against the CUDA kernel, autograd registration, AOT dispatch).
3. With --sampling: the fast (cached) samplers, model.sample(n) on the binarized 28x28
   models of benchmarks/sampling.py, on the GPU (CUDA sampling kernels) against the CPU
   (C++ kernels): wall-clock median of --sampling-iters runs after one warm-up.
4. With --train: the trainer's own step (benchmarks/train_throughput.py's trainer_step:
   forward, backward, Adam, loss.item()) of the Diagonal BiLSTM 7x16, Row LSTM 7x16,
   PixelCNN 15x16 and NADE H=500 on the GPU, per backend (reference, cuda, triton), at
   --train-batches; CUDA events, median of --iters steps after --warmup.
Prints a table and writes JSON to benchmarks/results/gpu.json. Exits with a message and
status 1 when no CUDA GPU is visible.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import pixelar  # noqa: E402
from pixelar import ops  # noqa: E402

RESULTS = os.path.join(ROOT, "benchmarks", "results", "gpu.json")
TOL = {torch.float32: 2e-4, torch.float16: 2e-2, torch.bfloat16: 5e-2, torch.float64: 1e-10}


# --- the registry: one entry per op -------------------------------------------------------


def _scan_inputs(B, H, R, S, K, device, dtype):
    x = torch.randn(B, 4 * H, R, S, device=device, dtype=dtype)
    w = torch.randn(4 * H, H, K, device=device, dtype=dtype) / (H * K) ** 0.5
    return x, w


def _nade_inputs(B, D, Hd, O, device, dtype):
    x = torch.randint(0, 2, (B, D), device=device).to(dtype)
    W = torch.randn(Hd, D, device=device, dtype=dtype) / D**0.5
    c = torch.randn(Hd, device=device, dtype=dtype) * 0.1
    V = torch.randn(D, O, Hd, device=device, dtype=dtype) / Hd**0.5
    b = torch.randn(D, O, device=device, dtype=dtype) * 0.1
    return x, W, c, V, b


def _block_inputs(B, F_, h, R, W, device, dtype):
    kw = dict(device=device, dtype=dtype)
    return (
        torch.randn(B, F_, R, W, **kw),
        torch.randn(F_, h, **kw) / F_**0.5,
        torch.randn(h, **kw) * 0.1,
        torch.randn(5, h, h, **kw) / (5 * h) ** 0.5,
        torch.randn(h, **kw) * 0.1,
        torch.randn(h, F_, **kw) / h**0.5,
        torch.randn(F_, **kw) * 0.1,
    )


OPS = {
    "diagonal_lstm_scan": dict(
        fn=ops.diagonal_lstm_scan,
        ref=ops.diagonal_lstm_scan_ref,
        # (B, H, R, W): odd shapes, then the paper's binarized MNIST layer (28x28, h=16, B=16)
        checks=[(1, 3, 5, 7), (3, 20, 9, 4)],
        paper=(16, 16, 28, 28),
        inputs=lambda B, H, R, W, dev, dt: _scan_inputs(B, H, R, R + W - 1, 2, dev, dt),
        # cuDNN LSTM: sequence = the S skewed columns, batch = B * R rows
        lstm=lambda B, H, R, W: dict(hidden=H, seq=R + W - 1, batch=B * R),
        note="one scan; a 7-layer Diagonal BiLSTM runs 14",
    ),
    "diagonal_lstm_scan_image": dict(
        # the second direction of a Diagonal BiLSTM layer: right to left, with the bias
        fn=lambda x, w, b: ops.diagonal_lstm_scan_image(x, w, True, b),
        ref=lambda x, w, b: ops.diagonal_lstm_scan_image_ref(x, w, True, b),
        raw_args=lambda x, w, b: (x, w, True, b),
        checks=[(1, 3, 5, 7), (3, 20, 9, 4)],
        paper=(16, 16, 28, 28),
        inputs=lambda B, H, R, W, dev, dt: (
            *_scan_inputs(B, H, R, W, 2, dev, dt),
            torch.randn(4 * H, device=dev, dtype=dt) * 0.1,
        ),
        lstm=lambda B, H, R, W: dict(hidden=H, seq=R + W - 1, batch=B * R),
        note="one direction of one layer as DiagonalLSTM runs it",
    ),
    "row_lstm_scan": dict(
        fn=ops.row_lstm_scan,
        ref=ops.row_lstm_scan_ref,
        checks=[(1, 3, 5, 7), (2, 33, 6, 5)],
        paper=(16, 128, 32, 32),
        inputs=lambda B, H, R, W, dev, dt: _scan_inputs(B, H, R, W, 3, dev, dt),
        lstm=lambda B, H, R, W: dict(hidden=H, seq=R, batch=B * W),
        note="one scan (CIFAR 32x32x3, h=128)",
    ),
    "nade_forward": dict(
        fn=ops.nade_forward,
        ref=ops.nade_forward_ref,
        # (B, D, Hd, O)
        checks=[(1, 5, 3, 1), (17, 30, 70, 1), (5, 20, 40, 30)],
        paper=(64, 784, 500, 1),
        inputs=lambda B, D, Hd, O, dev, dt: _nade_inputs(B, D, Hd, O, dev, dt),
        lstm=None,
        note="binarized MNIST NADE, H=500",
    ),
    "conv_residual_block": dict(
        fn=ops.conv_residual_block,
        ref=ops.conv_residual_block_ref,
        # (B, F, h, R, W): odd shapes, then the paper's MNIST PixelCNN block (F = 2h = 32)
        checks=[(2, 6, 3, 5, 7), (3, 20, 12, 9, 4)],
        paper=(16, 32, 16, 28, 28),
        inputs=_block_inputs,
        lstm=None,
        note="one PixelCNN residual block; the 15x16 model runs 15",
    ),
}


# --- checking -----------------------------------------------------------------------------


def _outputs(result):
    return list(result) if isinstance(result, (tuple, list)) else [result]


def run_with_grads(fn, inputs, backend, seed=0):
    """Outputs and input gradients of fn under ``backend`` with fixed output cotangents."""
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    with ops.backend(backend):
        outs = _outputs(fn(*leaves))
    gen = torch.Generator(device=outs[0].device).manual_seed(seed)
    cot = [
        torch.randn(o.shape, generator=gen, device=o.device, dtype=torch.float64).to(o.dtype)
        for o in outs
    ]  # the same numbers whatever the dtype of the outputs
    loss = sum((o * g).sum() for o, g in zip(outs, cot))
    grads = torch.autograd.grad(loss, leaves, allow_unused=True)
    return [o.detach() for o in outs], [
        torch.zeros_like(t) if g is None else g for t, g in zip(leaves, grads)
    ]


def rel_err(out, ref):
    scale = ref.double().abs().max().clamp_min(1e-30)
    return ((out.double() - ref.double()).abs().max() / scale).item()


def available_backends():
    names = []
    if all(pixelar._extension.has_kernel(op, "CUDA") for op in OPS):
        names.append("cuda")
    if ops._backend.triton_available():
        names.append("triton")
    return names


def check(op_names, backends, dtype, device="cuda", paper=True):
    rows = []
    for name in op_names:
        spec = OPS[name]
        for shape in spec["checks"] + ([spec["paper"]] if paper else []):
            torch.manual_seed(0)
            inputs = spec["inputs"](*shape, device, dtype)
            ref_out, ref_grads = run_with_grads(
                spec["fn"], [t.double() for t in inputs], "reference"
            )
            for backend in backends:
                try:
                    out, grads = run_with_grads(spec["fn"], inputs, backend)
                except Exception as exc:  # report and go on: one broken kernel, one row
                    rows.append(
                        dict(
                            op=name,
                            shape=shape,
                            backend=backend,
                            ok=False,
                            error=f"{type(exc).__name__}: {exc}"[:300],
                        )
                    )
                    continue
                fwd = max(rel_err(o, r) for o, r in zip(out, ref_out))
                bwd = max(rel_err(g, r) for g, r in zip(grads, ref_grads))
                ok = fwd <= TOL[dtype] and bwd <= TOL[dtype]
                rows.append(
                    dict(
                        op=name,
                        shape=shape,
                        backend=backend,
                        fwd_rel_err=fwd,
                        grad_rel_err=bwd,
                        ok=ok,
                    )
                )
    return rows


def opchecks(op_names, dtype, device="cuda"):
    """torch.library.opcheck of each raw op on device tensors (schema, fake kernel against
    the CUDA kernel's outputs, autograd registration, AOT dispatch with dynamic shapes), at
    the first small check shape; nade_forward also as the checkpointed op training runs."""
    rows = []
    for name in op_names:
        spec = OPS[name]
        raw = [name] + (["nade_forward_checkpointed"] if name == "nade_forward" else [])
        for raw_name in raw:
            torch.manual_seed(0)
            inputs = [
                t.requires_grad_() if t.is_floating_point() else t
                for t in spec["inputs"](*spec["checks"][0], device, dtype)
            ]
            args = spec.get("raw_args", lambda *t: t)(*inputs)
            try:
                torch.library.opcheck(getattr(torch.ops.pixelar, raw_name).default, tuple(args))
                rows.append(dict(op=raw_name, ok=True))
            except Exception as exc:  # report and go on
                rows.append(dict(op=raw_name, ok=False, error=f"{type(exc).__name__}: {exc}"[:500]))
    return rows


def print_opchecks(rows):
    print(f"\n{'opcheck (CUDA tensors)':28s} result")
    for r in rows:
        print(f"{r['op']:28s} {'ok' if r['ok'] else 'FAIL ' + r['error']}")


# --- timing -------------------------------------------------------------------------------


def time_ms(fn, warmup, iters):
    """Median milliseconds of fn() over iters runs, CUDA events, after warm-up."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def _op_runner(fn, inputs, backend, backward):
    leaves = [t.detach().clone().requires_grad_(backward) for t in inputs]

    def run():
        with ops.backend(backend):
            outs = _outputs(fn(*leaves))
        if backward:
            torch.autograd.backward(outs, [torch.ones_like(o) for o in outs])

    return run


def _lstm_runner(hidden, seq, batch, dtype, backward):
    lstm = torch.nn.LSTM(hidden, hidden).to("cuda", dtype)
    x = torch.randn(seq, batch, hidden, device="cuda", dtype=dtype, requires_grad=backward)

    def run():
        out, _ = lstm(x)
        if backward:
            out.sum().backward()

    return run


def bench(op_names, backends, dtype, warmup, iters):
    rows = []
    for name in op_names:
        spec = OPS[name]
        shape = spec["paper"]
        torch.manual_seed(0)
        inputs = spec["inputs"](*shape, "cuda", dtype)
        for backward in (False, True):
            mode = "fwd+bwd" if backward else "fwd"
            timings = {}
            for backend in ["reference"] + backends:
                try:
                    timings[backend] = time_ms(
                        _op_runner(spec["fn"], inputs, backend, backward), warmup, iters
                    )
                except Exception as exc:
                    timings[backend] = None
                    print(f"  {name} {backend} {mode}: {type(exc).__name__}: {exc}"[:300])
            if spec["lstm"] is not None:
                cfg = spec["lstm"](*shape)
                timings["cudnn_lstm"] = time_ms(
                    _lstm_runner(cfg["hidden"], cfg["seq"], cfg["batch"], dtype, backward),
                    warmup,
                    iters,
                )
            rows.append(dict(op=name, shape=shape, mode=mode, ms=timings, note=spec["note"]))
    return rows


# --- training steps: the trainer's own step on the GPU, per backend ------------------------


def bench_training(batches, warmup, iters):
    """Milliseconds and images/s of the trainer's step (forward, backward, Adam, loss.item())
    for the models of benchmarks/train_throughput.py, on the GPU, per backend: reference
    (pure PyTorch on the GPU), cuda, triton; on the embedded digits28-binary images."""
    from train_throughput import MODELS, step_flops, trainer_step

    from pixelar import data
    from pixelar.training.trainer import build_model

    configs = dict(MODELS, nade=("nade", {"hidden": 500}))
    images = data.load("digits28-binary", "train").images
    backends = ["reference"] + available_backends()
    rows = []
    for name, (kind, kwargs) in configs.items():
        for batch in batches:
            x = images[:batch].cuda()
            row = dict(model=name, batch=batch, ms={}, img_s={})
            for backend in backends:
                torch.manual_seed(0)
                model = build_model(kind, kwargs, (1, 28, 28), 2).cuda()
                step = trainer_step(model, x)

                def run(step=step, backend=backend):
                    with ops.backend(backend):
                        step()

                try:
                    ms = time_ms(run, warmup, iters)
                except Exception as exc:  # report and go on: one broken backend, one cell
                    ms = None
                    print(f"  train {name} B={batch} {backend}: {type(exc).__name__}: {exc}"[:300])
                row["ms"][backend] = ms
                row["img_s"][backend] = batch * 1000 / ms if ms else None
            row["gflop_per_step"] = step_flops(name, model, batch, 784) / 1e9
            rows.append(row)
    return rows


def print_training(rows):
    cols = ["reference", "cuda", "triton"]
    print(
        f"\n{'training step (GPU)':20s} {'batch':>5s} "
        + " ".join(f"{c + ' ms':>14s}" for c in cols)
        + " "
        + " ".join(f"{c + ' img/s':>14s}" for c in cols)
    )
    for r in rows:
        ms = [r["ms"].get(c) for c in cols]
        ips = [r["img_s"].get(c) for c in cols]
        print(
            f"{r['model']:20s} {r['batch']:5d} "
            + " ".join(f"{v:14.2f}" if v else f"{'-':>14s}" for v in ms)
            + " "
            + " ".join(f"{v:14.0f}" if v else f"{'-':>14s}" for v in ips)
        )


# --- fast sampling: the CUDA sampling kernels against the C++ kernels ---------------------


def _samplers():
    from pixelar.models import NADE, PixelCNN, PixelRNN

    shape = (1, 28, 28)  # binarized 28x28, the configurations of benchmarks/sampling.py
    return {  # name: (model factory, batch)
        "pixelrnn_diagonal": (
            lambda: PixelRNN(image_shape=shape, layer="diagonal", num_layers=7, hidden=16),
            16,
        ),
        "pixelrnn_row": (
            lambda: PixelRNN(image_shape=shape, layer="row", num_layers=7, hidden=16),
            16,
        ),
        "pixelcnn": (lambda: PixelCNN(image_shape=shape, num_layers=15, hidden=16), 16),
        "nade": (lambda: NADE(image_shape=shape, hidden=500), 64),
    }


def bench_sampling(iters):
    """Seconds per model.sample(batch) (fast sampler), GPU ("cuda" backend) and CPU ("cpp")."""
    rows = []
    for name, (make, batch) in _samplers().items():
        torch.manual_seed(0)
        model = make().eval()
        row = dict(model=name, batch=batch)
        for device, backend in (("cuda", "cuda"), ("cpu", "cpp")):
            model.to(device)

            def run():
                with ops.backend(backend):
                    model.sample(batch, generator=torch.Generator(device).manual_seed(0))
                if device == "cuda":
                    torch.cuda.synchronize()

            try:
                run()  # warm-up
                row[f"{device}_s"] = statistics.median(_wall_s(run) for _ in range(iters))
            except Exception as exc:  # report and go on
                row[f"{device}_s"] = None
                print(f"  sample {name} on {device}: {type(exc).__name__}: {exc}"[:300])
        rows.append(row)
    return rows


def _wall_s(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def print_sampling(rows):
    print(f"\n{'fast sampling':20s} {'batch':>5s} {'cuda s':>10s} {'cpu s':>10s}  speed-up")
    for r in rows:
        g, c = r.get("cuda_s"), r.get("cpu_s")
        cells = [f"{v:10.4f}" if v is not None else f"{'-':>10s}" for v in (g, c)]
        speed = f"{c / g:.1f}x" if g and c else "-"
        print(f"{r['model']:20s} {r['batch']:5d} " + " ".join(cells) + f"  {speed}")


# --- report -------------------------------------------------------------------------------


def print_checks(rows):
    print(
        f"\n{'op':24s} {'shape':22s} {'backend':8s} {'fwd rel err':>12s} "
        f"{'grad rel err':>12s}  result"
    )
    for r in rows:
        if "error" in r:
            print(
                f"{r['op']:24s} {str(r['shape']):22s} {r['backend']:8s} "
                f"{'':>12s} {'':>12s}  ERROR {r['error']}"
            )
            continue
        print(
            f"{r['op']:24s} {str(r['shape']):22s} {r['backend']:8s} "
            f"{r['fwd_rel_err']:12.2e} {r['grad_rel_err']:12.2e}  "
            f"{'ok' if r['ok'] else 'FAIL'}"
        )


def print_timings(rows):
    cols = ["reference", "cuda", "triton", "cudnn_lstm"]
    print(
        f"\n{'op':24s} {'shape':20s} {'mode':8s} "
        + " ".join(f"{c + ' ms':>14s}" for c in cols)
        + "  speed-up vs reference"
    )
    for r in rows:
        ms = r["ms"]
        cells = [f"{ms[c]:14.3f}" if ms.get(c) is not None else f"{'-':>14s}" for c in cols]
        ref = ms.get("reference")
        best = {c: ref / ms[c] for c in ("cuda", "triton") if ms.get(c) and ref}
        speed = ", ".join(f"{c} {s:.1f}x" for c, s in best.items())
        print(
            f"{r['op']:24s} {str(r['shape']):20s} {r['mode']:8s} " + " ".join(cells) + f"  {speed}"
        )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", nargs="+", choices=sorted(OPS), default=sorted(OPS))
    parser.add_argument(
        "--backends",
        nargs="+",
        choices=["cuda", "triton"],
        default=None,
        help="default: every GPU backend that is available",
    )
    parser.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float32")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--check-only", action="store_true")
    parser.add_argument(
        "--quick", action="store_true", help="check the small odd shapes only, not the paper's"
    )
    parser.add_argument(
        "--device",
        default="cuda",
        help="'cpu' self-tests this script: Triton under TRITON_INTERPRET=1, checks only",
    )
    parser.add_argument(
        "--sampling",
        action="store_true",
        help="also time the fast samplers, CUDA kernels vs C++ kernels",
    )
    parser.add_argument("--sampling-iters", type=int, default=3)
    parser.add_argument(
        "--train",
        action="store_true",
        help="also time the trainer's step of each model on the GPU, per backend",
    )
    parser.add_argument("--train-batches", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--out", default=RESULTS, help="JSON results (default: %(default)s)")
    args = parser.parse_args(argv)

    if args.device == "cpu":
        if os.environ.get("TRITON_INTERPRET") != "1":
            raise SystemExit("benchmarks/gpu.py --device cpu needs TRITON_INTERPRET=1")
        rows = check(args.ops, ["triton"], getattr(torch, args.dtype), "cpu", not args.quick)
        print_checks(rows)
        return 0 if all(r["ok"] for r in rows) else 1
    if not torch.cuda.is_available():
        raise SystemExit(
            "benchmarks/gpu.py: no CUDA GPU is visible "
            "(torch.cuda.is_available() is False); nothing was checked or timed."
        )
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dtype = getattr(torch, args.dtype)
    backends = args.backends or available_backends()
    if not backends:
        raise SystemExit(
            "benchmarks/gpu.py: neither the CUDA kernels (build with "
            "PIXELAR_CUDA=1) nor triton are available."
        )
    print(
        f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}  "
        f"backends: {', '.join(backends)}  dtype: {args.dtype}"
    )

    checks = check(args.ops, backends, dtype, paper=not args.quick)
    print_checks(checks)
    op_checks = opchecks(args.ops, dtype) if "cuda" in backends else []
    print_opchecks(op_checks)
    timings = [] if args.check_only else bench(args.ops, backends, dtype, args.warmup, args.iters)
    if timings:
        print_timings(timings)
    sampling = bench_sampling(args.sampling_iters) if args.sampling else []
    if sampling:
        print_sampling(sampling)
    training = bench_training(args.train_batches, args.warmup, args.iters) if args.train else []
    if training:
        print_training(training)
    result = dict(
        device=torch.cuda.get_device_name(),
        torch=torch.__version__,
        cuda=torch.version.cuda,
        python=platform.python_version(),
        triton=_triton_version(),
        dtype=args.dtype,
        backends=backends,
        warmup=args.warmup,
        iters=args.iters,
        checks=checks,
        opchecks=op_checks,
        timings=timings,
        sampling=sampling,
        training=training,
    )
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"\nwrote {args.out}")
    return 0 if all(r["ok"] for r in checks + op_checks) else 1


def _triton_version():
    try:
        import triton

        return triton.__version__
    except ImportError:
        return None


if __name__ == "__main__":
    sys.exit(main())
