"""Does a change make pixelar slower? Times the same cases in two source trees (each a
checkout with its own built pixelar/_C), alternating fresh processes, and prints the
ratio per case.

    python benchmarks/compare_trees.py OLD_TREE NEW_TREE [--rounds 3] [--threads 1]

Cases (CPU, fp32): the ops at the paper's configurations (forward + backward), the cached
samplers of every model family, and a whole Diagonal BiLSTM 7x16 training step (forward,
backward, Adam). Each process runs every case `--repeats` times and keeps the minimum; a
case's figure per tree is the median over rounds of those minima, and "new / old" is their
ratio (below 1: the new tree is faster). Rounds alternate the trees (old, new, new, old, ...)
so that drift on a shared machine hits both alike. JSON: benchmarks/results/compare_trees.json.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))

# Runs inside one tree (cwd = the tree, so its pixelar is imported); prints JSON.
CHILD = r"""
import json, sys, time
import torch
torch.set_num_threads(int(sys.argv[1]))
repeats = int(sys.argv[2])
import pixelar
from pixelar.models import NADE, PixelCNN, PixelRNN

def best(fn):
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter(); fn(); times.append(time.perf_counter() - t)
    return min(times)

g = torch.Generator().manual_seed(0)
out = {"pixelar": pixelar.__file__}

xg = torch.randn(16, 64, 28, 55, generator=g, requires_grad=True)
wss = (0.1 * torch.randn(64, 16, 2, generator=g)).requires_grad_()
def diag():
    h, c = pixelar.ops.diagonal_lstm_scan(xg, wss)
    (h.sum() + c.sum()).backward()
out["diagonal_lstm_scan fwd+bwd (16, 64, 28, 55)"] = best(diag)

x = (torch.rand(64, 784, generator=g) < 0.3).float()
W = (0.05 * torch.randn(500, 784, generator=g)).requires_grad_()
c0 = torch.zeros(500, requires_grad=True)
V = (0.05 * torch.randn(784, 1, 500, generator=g)).requires_grad_()
b = torch.zeros(784, 1, requires_grad=True)
def nade():
    pixelar.ops.nade_forward(x, W, c0, V, b).sum().backward()
out["nade_forward fwd+bwd B=64 H=500"] = best(nade)

torch.manual_seed(0)
models = {
    "sample 16, PixelRNN diagonal 7x16": (PixelRNN((1, 28, 28), levels=2, layer="diagonal",
                                                  num_layers=7, hidden=16), 16),
    "sample 16, PixelRNN row 7x16": (PixelRNN((1, 28, 28), levels=2, layer="row",
                                             num_layers=7, hidden=16), 16),
    "sample 16, PixelCNN 15x16": (PixelCNN((1, 28, 28), levels=2, num_layers=15,
                                           hidden=16), 16),
    "sample 64, NADE H=500": (NADE((1, 28, 28), hidden=500), 64),
}
for name, (model, n) in models.items():
    model.eval()
    out[name] = best(lambda: model.sample(n, generator=torch.Generator().manual_seed(1)))

model = models["sample 16, PixelRNN diagonal 7x16"][0].train()
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
xb = (torch.rand(16, 1, 28, 28, generator=g) < 0.2).long()
def step():
    opt.zero_grad()
    loss = -model.log_prob(xb).mean() / 784
    loss.backward()
    opt.step()
out["train step, PixelRNN diagonal 7x16, B=16"] = best(step)
print(json.dumps(out))
"""


def run_tree(tree, threads, repeats):
    env = dict(os.environ, PYTHONPATH=os.path.abspath(tree), OMP_WAIT_POLICY="PASSIVE")
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(threads), str(repeats)],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        sys.exit(f"compare_trees: the run in {tree} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    where = os.path.dirname(os.path.dirname(os.path.abspath(result.pop("pixelar"))))
    if where != os.path.abspath(tree):
        sys.exit(f"compare_trees: {tree} imported pixelar from {where}")
    return result


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("old")
    p.add_argument("new")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=os.path.join(HERE, "results", "compare_trees.json"))
    args = p.parse_args(argv)
    runs = {"old": [], "new": []}
    load_before = os.getloadavg()[0]
    for r in range(args.rounds):
        order = ("old", "new") if r % 2 == 0 else ("new", "old")
        for which in order:
            t = time.time()
            runs[which].append(run_tree(getattr(args, which), args.threads, args.repeats))
            print(f"round {r + 1}/{args.rounds}: {which} ({time.time() - t:.0f} s)", flush=True)
    rows = []
    for case in runs["old"][0]:
        old = statistics.median(x[case] for x in runs["old"])
        new = statistics.median(x[case] for x in runs["new"])
        ratios = [n[case] / o[case] for o, n in zip(runs["old"], runs["new"])]
        rows.append(
            dict(
                case=case,
                old_ms=1e3 * old,
                new_ms=1e3 * new,
                ratio=new / old,
                ratio_min=min(ratios),
                ratio_max=max(ratios),
            )
        )
    print("\n| case | old (ms) | new (ms) | new / old (per round: min–max) |\n|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['case']} | {row['old_ms']:.1f} | {row['new_ms']:.1f} | "
            f"{row['ratio']:.2f} ({row['ratio_min']:.2f}–{row['ratio_max']:.2f}) |"
        )
    meta = dict(
        old=os.path.abspath(args.old),
        new=os.path.abspath(args.new),
        rounds=args.rounds,
        repeats=args.repeats,
        threads=args.threads,
        load_average_before=load_before,
        load_average_after=os.getloadavg()[0],
        date=time.strftime("%Y-%m-%d %H:%M"),
    )
    for tree in ("old", "new"):
        head = subprocess.run(
            ["git", "-C", meta[tree], "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        meta[f"{tree}_commit"] = head or None
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(dict(meta=meta, rows=rows, runs=runs), f, indent=1)
    print(f"\nload average {load_before:.1f} -> {meta['load_average_after']:.1f}; JSON: {args.out}")


if __name__ == "__main__":
    main()
