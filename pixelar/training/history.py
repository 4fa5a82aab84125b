"""Watching a training run: after every epoch the trainer writes, beside metrics.json,

    history.csv   one row per epoch: epoch, step, hours (wall clock since the run began,
                  summed over sittings), train/val bits per dimension and nats per image,
                  the epoch's seconds and images/s
    curve.png     train and validation bits/dim (nats on the right axis) against epochs and
                  against wall-clock hours (needs matplotlib; without it only the CSV is
                  written, and the run says once how to get the PNG)

and, with ``--tensorboard``, the same scalars as TensorBoard events in OUT/tensorboard.
``plot_runs`` draws several runs on one figure (``pixelar plot RUN [RUN ...]``).

matplotlib and tensorboard are imported inside the functions that need them, so that
``import pixelar`` stays fast and neither is a dependency.
"""

import csv
import io
import json
import math
import os

from .checkpoint import atomic_write, read_meta

CSV_NAME = "history.csv"
PNG_NAME = "curve.png"
TENSORBOARD_DIR = "tensorboard"
COLUMNS = (
    "epoch",
    "step",
    "hours",
    "train_bpd",
    "val_bpd",
    "train_nats",
    "val_nats",
    "epoch_seconds",
    "images_per_s",
)
MATPLOTLIB_HOW = "pip install matplotlib"
_said_no_matplotlib = False


# ---------------------------------------------------------------------------- rows


def history_rows(history, num_dims=None):
    """The trainer's per-epoch history (metrics.json "history") -> one dict per epoch with
    the keys COLUMNS (None where unknown).

    Entries written before this module existed lack ``elapsed_s``, ``step`` and the nats:
    their hours are the running sum of the epochs' training seconds (validation excluded)
    and their nats come from bits/dim and ``num_dims`` (nats = bpd * num_dims * ln 2).
    """
    rows, elapsed = [], 0.0
    to_nats = num_dims * math.log(2.0) if num_dims else None
    for e in history:
        elapsed = (
            e["elapsed_s"]
            if e.get("elapsed_s") is not None
            else elapsed + (e.get("seconds") or 0.0)
        )
        row = {
            "epoch": e["epoch"],
            "step": e.get("step"),
            "hours": elapsed / 3600.0,
            "train_bpd": e.get("train_bpd"),
            "val_bpd": e.get("val_bpd"),
            "epoch_seconds": e.get("seconds"),
            "images_per_s": e.get("images_per_s"),
        }
        for part in ("train", "val"):
            nats = e.get(f"{part}_nats")
            if nats is None and to_nats is not None and row[f"{part}_bpd"] is not None:
                nats = row[f"{part}_bpd"] * to_nats
            row[f"{part}_nats"] = nats
        rows.append(row)
    return rows


def csv_text(rows):
    """The rows as CSV text with a header line (COLUMNS); unknown values are empty."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow(
            [
                ""
                if row.get(k) is None
                else (f"{row[k]:.6g}" if isinstance(row[k], float) else row[k])
                for k in COLUMNS
            ]
        )
    return buf.getvalue()


def write_csv(path, rows):
    """Write ``csv_text(rows)`` to ``path`` atomically."""

    def write(tmp):
        with open(tmp, "w") as f:
            f.write(csv_text(rows))

    atomic_write(path, write)
    return path


def read_csv(path):
    """history.csv -> list of dicts (numbers parsed; empty fields None)."""
    with open(path, newline="") as f:
        out = []
        for row in csv.DictReader(f):
            out.append(
                {
                    k: (None if v == "" else (int(v) if k in ("epoch", "step") else float(v)))
                    for k, v in row.items()
                }
            )
    return out


# ---------------------------------------------------------------------------- runs


def _num_dims_of_run(run_dir):
    """C * H * W from the run's checkpoint metadata (model_config.image_shape), or None."""
    for name in ("best", "last"):
        meta = read_meta(os.path.join(run_dir, name))
        if meta is not None:
            try:
                shape = meta.get("model_config", {}).get("image_shape")
                return int(math.prod(shape)) if shape else None
            except (ValueError, TypeError, AttributeError):
                return None
    return None


def load_run(run_dir, label=None):
    """A training folder -> {"label", "dir", "rows" (history_rows), "num_dims", "status",
    "best_epoch"} from its metrics.json. Raises FileNotFoundError when there is none."""
    path = os.path.join(os.fspath(run_dir), "metrics.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{run_dir}: no metrics.json (not a pixelar training folder, "
            f"or no epoch has finished yet)"
        )
    with open(path) as f:
        metrics = json.load(f)
    num_dims = _num_dims_of_run(run_dir)
    return {
        "label": label or os.path.basename(os.path.normpath(os.fspath(run_dir))),
        "dir": os.fspath(run_dir),
        "rows": history_rows(metrics.get("history", []), num_dims),
        "num_dims": num_dims,
        "status": metrics.get("status"),
        "best_epoch": metrics.get("best_epoch"),
    }


# ---------------------------------------------------------------------------- figures


def _figure(ncols, width=11.0, height=4.0):
    """A matplotlib Figure on the Agg canvas (no pyplot, no global state), or None when
    matplotlib is not installed."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path):
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", bbox_inches="tight"))
    return path


def plot_curve(path, rows, num_dims=None, title=None):
    """One run's curve PNG: train and validation bits/dim against epochs (left) and against
    wall-clock hours (right), with nats per image on a second axis when ``num_dims`` is
    known. Returns ``path``, or None when matplotlib is missing."""
    fig = _figure(2)
    if fig is None:
        return None
    axes = fig.subplots(1, 2, sharey=True)
    for ax, x_key, x_label in ((axes[0], "epoch", "epoch"), (axes[1], "hours", "wall-clock hours")):
        for part, style in (("train", "--"), ("val", "-")):
            pts = [
                (r[x_key], r[f"{part}_bpd"])
                for r in rows
                if r[x_key] is not None and r[f"{part}_bpd"] is not None
            ]
            if pts:
                ax.plot(*zip(*pts), style, marker="o", markersize=3, label=part)
        ax.set_xlabel(x_label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("bits / dim")
    axes[0].legend()
    if num_dims:
        k = num_dims * math.log(2.0)
        sec = axes[1].secondary_yaxis("right", functions=(lambda b: b * k, lambda n: n / k))
        sec.set_ylabel("nats / image")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_runs(path, runs, unit="bpd", train=False, reference=None, title=None, ylim=None):
    """Several runs on one figure: validation (and with ``train`` also training) ``unit``
    ("bpd" or "nats") against epochs and against wall-clock hours.

    runs: list of load_run() dicts (label, rows); reference: {label: value in ``unit``}
    drawn as dashed horizontal lines in the colour of the run with that label (grey
    otherwise). ylim: (bottom, top) or None (matplotlib's choice). Returns ``path``, or
    None when matplotlib is missing.
    """
    if unit not in ("bpd", "nats"):
        raise ValueError(f"unit must be 'bpd' or 'nats', got {unit!r}")
    fig = _figure(2, height=4.5)
    if fig is None:
        return None
    axes = fig.subplots(1, 2, sharey=True)
    colors = {}
    for i, run in enumerate(runs):
        color = f"C{i % 10}"
        colors[run["label"]] = color
        for ax, x_key in ((axes[0], "epoch"), (axes[1], "hours")):
            for part, style in (("val", "-"), ("train", ":")):
                if part == "train" and not train:
                    continue
                pts = [
                    (r[x_key], r[f"{part}_{unit}"])
                    for r in run["rows"]
                    if r[x_key] is not None and r[f"{part}_{unit}"] is not None
                ]
                if pts:
                    ax.plot(
                        *zip(*pts),
                        style,
                        color=color,
                        marker="o",
                        markersize=2.5,
                        label=run["label"] + ("" if part == "val" else " (train)"),
                    )
    for label, value in (reference or {}).items():
        color = colors.setdefault(label, f"C{len(colors) % 10}")
        for ax in axes:
            ax.axhline(
                value,
                linestyle="--",
                linewidth=1,
                color=color,
                label=f"{label}: {value:g}" if ax is axes[0] else None,
            )
    axes[0].set_xlabel("epoch")
    axes[1].set_xlabel("wall-clock hours")
    axes[0].set_ylabel(
        ("" if train else "validation ") + {"bpd": "bits / dim", "nats": "nats / image"}[unit]
    )
    for ax in axes:
        ax.grid(alpha=0.3)
    if ylim is not None:
        axes[0].set_ylim(*ylim)
    axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


# ---------------------------------------------------------------------------- trainer hook


def tensorboard_writer(out_dir):
    """A torch SummaryWriter logging to OUT/tensorboard. Raises ImportError with a
    one-line message saying how to install tensorboard when it is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        raise ImportError(
            "--tensorboard needs the tensorboard package: pip install tensorboard"
        ) from exc
    return SummaryWriter(log_dir=os.path.join(os.fspath(out_dir), TENSORBOARD_DIR))


def on_epoch(out_dir, history, num_dims, writer=None, log=print, title=None):
    """Called by the trainer after each epoch (main process): rewrites OUT/history.csv and
    OUT/curve.png from the whole ``history`` and logs the last epoch to ``writer``.
    A failure to draw the PNG is reported, never raised: it must not stop a long run."""
    global _said_no_matplotlib
    rows = history_rows(history, num_dims)
    write_csv(os.path.join(out_dir, CSV_NAME), rows)
    try:
        png = plot_curve(os.path.join(out_dir, PNG_NAME), rows, num_dims, title)
    except Exception as exc:  # noqa: BLE001 - a plotting bug must not kill training
        log(f"warning: could not draw {PNG_NAME}: {type(exc).__name__}: {exc}")
        png = True
    if png is None and not _said_no_matplotlib:
        _said_no_matplotlib = True
        log(
            f"note: writing {CSV_NAME} only; for the learning-curve PNG ({PNG_NAME}) "
            f"{MATPLOTLIB_HOW}"
        )
    if writer is not None and rows:
        last = rows[-1]
        for key in ("train_bpd", "val_bpd", "train_nats", "val_nats"):
            if last[key] is not None:
                writer.add_scalar(key.replace("_", "/", 1), last[key], last["epoch"])
        writer.add_scalar("time/hours", last["hours"], last["epoch"])
        writer.flush()
    return rows
