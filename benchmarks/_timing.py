"""Timing helpers shared by the benchmark scripts: medians of wall-clock times after warm-up,
and the machine's measured matmul rate (the FLOP floor's denominator)."""

import statistics
import time

import torch


def median_time(fn, repeats=5, warmup=1, max_seconds=None):
    """Median wall-clock seconds of ``fn()`` over ``repeats`` calls after ``warmup`` calls.

    With ``max_seconds``, stops early (keeping at least 3 samples) once the measured calls
    have taken that long. Returns (median, list of samples).
    """
    for _ in range(warmup):
        fn()
    samples = []
    start = time.perf_counter()
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
        if (
            max_seconds is not None
            and len(samples) >= 3
            and time.perf_counter() - start > max_seconds
        ):
            break
    return statistics.median(samples), samples


def interleaved_times(fns, repeats=5, warmup=1, max_seconds=None):
    """Medians of wall-clock seconds of several callables, timed in rounds (each round runs
    every callable once, in order), so that a burst of load from other processes on the
    machine hits all of them alike. ``fns``: {name: fn}. Stops after ``max_seconds`` (at
    least 3 rounds). Returns {name: (median, samples)}."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples = {name: [] for name in fns}
    start = time.perf_counter()
    for i in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - t0)
        if max_seconds is not None and i >= 2 and time.perf_counter() - start > max_seconds:
            break
    return {name: (statistics.median(s), s) for name, s in samples.items()}


def matmul_rate(n=2048, repeats=5, dtype=torch.float32):
    """FLOP/s of one large ``torch.matmul`` (n x n by n x n) on the CPU: the best rate of
    ``repeats`` runs (the machine's capability; slower runs are interference), used as the
    denominator of the FLOP floor."""
    a = torch.randn(n, n, dtype=dtype)
    b = torch.randn(n, n, dtype=dtype)
    _, samples = median_time(lambda: torch.matmul(a, b), repeats=repeats, warmup=2)
    return 2.0 * n**3 / min(samples)
