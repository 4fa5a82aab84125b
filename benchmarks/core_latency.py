"""Core-to-core latency of the machine's two CPUs, over time: the cause of the "slow NADE
processes" (README, "Performance stability: slow NADE processes, explained").

On the team's 2-vCPU machine the round trip of one cache line between the two CPUs is
50-250 ns most of the time and 300-520 ns in stretches of seconds to minutes (the host
places the two vCPUs on cores far apart: other core complexes or sockets). In those
stretches the 2-thread NADE training step runs at the 1-thread speed or below, while
1-thread work, two independent 1-thread jobs and matmuls are unaffected. The benchmarks
record the round trip beside their timings (train_throughput.py: per round, per process),
so a slow process can be told apart from a slow kernel.

    python benchmarks/core_latency.py                       # round trip every 0.5 s, 60 s
    python benchmarks/core_latency.py --nade --seconds 120  # beside NADE's backward op at
                                                            # 2 threads and at 1
    python benchmarks/core_latency.py --out results/core_latency.json

The probe is a small C function (core_latency.c), compiled with the system C compiler
($CC, else cc) on first use into the temp directory; round_trip_ns() returns None where
that is impossible (no compiler, fewer than two CPUs, affinity not allowed).
"""

import argparse
import ctypes
import functools
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, "core_latency.c")
# Round trips at or above this are the "far" placement: on the team's machine 50-250 ns
# near, 300-520 ns far (histograms: benchmarks/results/slow_nade_2026-12-04/summary.md),
# nothing measured in between.
FAR_NS = 260.0


@functools.lru_cache(maxsize=1)
def _library():
    """The compiled probe (ctypes), or None when it cannot be built."""
    with open(SOURCE, "rb") as f:
        digest = hashlib.sha1(f.read()).hexdigest()[:12]
    path = os.path.join(tempfile.gettempdir(), f"pixelar_core_latency_{digest}.so")
    if not os.path.exists(path):
        tmp = f"{path}.{os.getpid()}.tmp"
        cc = os.environ.get("CC", "cc")
        cmd = [cc, "-O2", "-shared", "-fPIC", "-pthread", "-o", tmp, SOURCE]
        try:
            subprocess.run(cmd, check=True, capture_output=True)
        except (OSError, subprocess.CalledProcessError):
            return None
        os.replace(tmp, path)  # atomic: a concurrent process sees all of it or nothing
    lib = ctypes.CDLL(path)
    lib.round_trip_ns.restype = ctypes.c_double
    lib.round_trip_ns.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long]
    return lib


def round_trip_ns(cpus=None, trips=20000, repeats=3):
    """Nanoseconds per round trip of a cache line between two CPUs (default: the first two
    this process may run on), the best of ``repeats`` runs of ``trips`` round trips (about
    4 ms each), or None where it cannot be measured."""
    if cpus is None:
        allowed = sorted(os.sched_getaffinity(0))
        if len(allowed) < 2:
            return None
        cpus = allowed[:2]
    lib = _library()
    if lib is None:
        return None
    best = min(lib.round_trip_ns(cpus[0], cpus[1], trips) for _ in range(repeats))
    return best if best > 0 else None


def _nade_backward():
    """NADE H=500's backward op at B = 64 (the training step's largest part), as a callable."""
    import torch

    sys.path.insert(0, os.path.dirname(HERE))
    from pixelar.training.trainer import build_model

    torch.manual_seed(0)
    x = (torch.rand(64, 784) < 0.5).float()
    model = build_model("nade", {"hidden": 500}, (1, 28, 28), 2)
    W, c, V, b = (p.detach() for p in (model.W, model.c, model.V, model.b))
    P = torch.ops.pixelar
    out, ckpt = P.nade_forward_checkpointed(x, W, c, V, b)
    grad = torch.randn_like(out) * 1e-3
    return lambda: P.nade_forward_backward(grad, x, W, c, V, b, checkpoints=ckpt, grad_x=False)


def _best_ms(fn, n):
    from _timing import median_time  # imports torch: only where a kernel is timed

    return min(median_time(fn, repeats=n, warmup=0)[1]) * 1e3


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--interval", type=float, default=0.5, help="seconds between samples")
    p.add_argument(
        "--nade", action="store_true", help="also time NADE's backward op at 2 threads and 1"
    )
    p.add_argument("--out", help="write the samples as JSON")
    args = p.parse_args(argv)
    if round_trip_ns() is None:
        sys.exit("core_latency: cannot measure here (no C compiler, or fewer than 2 CPUs)")
    backward = None
    if args.nade:
        import torch

        backward = _nade_backward()
    samples = []
    start = time.time()
    while time.time() - start < args.seconds:
        row = {"t": round(time.time() - start, 2), "round_trip_ns": round_trip_ns()}
        if backward is not None:
            torch.set_num_threads(2)
            row["nade_backward_2t_ms"] = _best_ms(backward, 4)
            torch.set_num_threads(1)
            row["nade_backward_1t_ms"] = _best_ms(backward, 2)
        samples.append(row)
        far = row["round_trip_ns"] >= FAR_NS
        extra = (
            f"  NADE backward 2 threads {row['nade_backward_2t_ms']:6.2f} ms, "
            f"1 thread {row['nade_backward_1t_ms']:6.2f} ms"
            if backward is not None
            else ""
        )
        where = "far " if far else "near"
        print(f"{row['t']:7.1f} s  {row['round_trip_ns']:6.0f} ns {where}{extra}")
        if backward is None:
            time.sleep(args.interval)
    # summary: by placement
    for name, rows in (
        ("near", [r for r in samples if r["round_trip_ns"] < FAR_NS]),
        ("far", [r for r in samples if r["round_trip_ns"] >= FAR_NS]),
    ):
        if not rows:
            print(f"{name}: no samples")
            continue
        trip = statistics.median(r["round_trip_ns"] for r in rows)
        line = f"{name}: {len(rows)} samples, round trip median {trip:.0f} ns"
        if backward is not None:
            line += (
                f", NADE backward median 2 threads "
                f"{statistics.median(r['nade_backward_2t_ms'] for r in rows):.2f} ms, "
                f"1 thread {statistics.median(r['nade_backward_1t_ms'] for r in rows):.2f} ms"
            )
        print(line)
    if args.out:
        columns = list(samples[0])
        rows = [[round(r[c], 2) for c in columns] for r in samples]
        with open(args.out, "w") as f:
            json.dump({"far_ns": FAR_NS, "columns": columns, "samples": rows}, f)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
