"""``pixelar bench``: run the scripts under benchmarks/ (a source checkout's)."""

import argparse
import os
import subprocess
import sys

import pixelar

BENCHMARKS = {"ops": "ops.py", "sampling": "sampling.py", "results": "results_table.py"}


def add_parser(subparsers):
    p = subparsers.add_parser(
        "bench",
        help="run the benchmark scripts under benchmarks/",
        description="Run benchmarks/ops.py (kernels), benchmarks/sampling.py (fast vs naive "
        "sampling) or benchmarks/results_table.py (test NLL of every model on the digits). "
        "Extra arguments go to the script.",
    )
    p.add_argument("which", choices=(*BENCHMARKS, "all"), help="which benchmark")
    p.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the script")
    p.set_defaults(func=run)
    return p


def benchmarks_dir():
    """benchmarks/ of a source checkout (beside the pixelar package), or None."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(pixelar.__file__)))
    path = os.path.join(root, "benchmarks")
    return path if os.path.isdir(path) else None


def run(args):
    folder = benchmarks_dir()
    names = list(BENCHMARKS) if args.which == "all" else [args.which]
    status = 0
    for name in names:
        script = os.path.join(folder, BENCHMARKS[name]) if folder else None
        if script is None or not os.path.isfile(script):
            where = (
                os.path.join(folder, BENCHMARKS[name])
                if folder
                else "benchmarks/ (it ships with the source checkout, not the installed package)"
            )
            print(
                f"pixelar bench {name}: the benchmark script is missing: {where}", file=sys.stderr
            )
            status = 2
            continue
        cmd = [sys.executable, script, *args.args]
        print("$ " + " ".join(cmd), flush=True)
        rc = subprocess.call(cmd)
        status = status or rc
    return status
