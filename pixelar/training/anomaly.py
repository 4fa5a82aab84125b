"""Density-based anomaly detection: score each image by its NLL under the model; with an
in-distribution and an out-of-distribution set, the AUROC of that score and a histogram
of both score distributions.

The shipped example compares the digits with corrupted copies of themselves
(``corrupt``: a fraction of the pixels flipped, or replaced by noise).
"""
import numpy as np
import torch

CORRUPTIONS = ("flip", "noise")


def corrupt(images, levels, kind="flip", fraction=0.1, seed=0):
    """Corrupt a fraction of the pixels of every image.

    images: (N, C, H, W) int64 in [0, levels) -> (N, C, H, W) int64, a new tensor.
    kind: "flip" sets a chosen value v to levels - 1 - v (binary: 0 <-> 1); "noise" sets it
    to a uniformly random level. Each dimension is chosen independently with probability
    ``fraction``, from a generator seeded with ``seed``.
    """
    if kind not in CORRUPTIONS:
        raise ValueError(f"kind must be one of {CORRUPTIONS}, got {kind!r}")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    g = torch.Generator().manual_seed(seed)
    chosen = torch.rand(images.shape, generator=g) < fraction
    if kind == "flip":
        new = levels - 1 - images
    else:
        new = torch.randint(0, levels, images.shape, generator=g)
    return torch.where(chosen, new, images)


def auroc(in_scores, out_scores):
    """Area under the ROC curve for telling out-of-distribution images (positives) from
    in-distribution ones by a higher score. in_scores: (N,), out_scores: (M,) -> float."""
    from sklearn.metrics import roc_auc_score
    y = np.concatenate([np.zeros(len(in_scores)), np.ones(len(out_scores))])
    s = np.concatenate([np.asarray(in_scores, np.float64), np.asarray(out_scores, np.float64)])
    return float(roc_auc_score(y, s))


def save_histogram(path, in_scores, out_scores, in_label="in-distribution",
                   out_label="out-of-distribution", title=None, bins=40):
    """Write a PNG with overlaid histograms of the two score sets (NLL in nats).
    Uses matplotlib when installed (pip install pixelar[plot]), else draws with Pillow."""
    in_scores = np.asarray(in_scores, np.float64)
    out_scores = np.asarray(out_scores, np.float64)
    edges = np.histogram_bin_edges(np.concatenate([in_scores, out_scores]), bins=bins)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return _histogram_pillow(path, in_scores, out_scores, edges, in_label, out_label, title)
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=120)
    ax.hist(in_scores, bins=edges, alpha=0.6, label=f"{in_label} (n={len(in_scores)})")
    ax.hist(out_scores, bins=edges, alpha=0.6, label=f"{out_label} (n={len(out_scores)})")
    ax.set_xlabel("negative log-likelihood (nats)")
    ax.set_ylabel("images")
    if title:
        ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _histogram_pillow(path, a, b, edges, in_label, out_label, title):
    from PIL import Image, ImageDraw
    W, H, margin = 640, 360, 40
    ca, _ = np.histogram(a, edges)
    cb, _ = np.histogram(b, edges)
    top = max(ca.max(), cb.max(), 1)
    im = Image.new("RGB", (W, H), "white")
    draw = ImageDraw.Draw(im)
    bw = (W - 2 * margin) / len(ca)
    for counts, colour, off in ((ca, (31, 119, 180), 0.0), (cb, (255, 127, 14), 0.5)):
        for i, c in enumerate(counts):
            x0 = margin + i * bw + off * bw
            y0 = H - margin - (H - 2 * margin) * c / top
            draw.rectangle([x0, y0, x0 + bw / 2, H - margin], fill=colour)
    draw.line([margin, H - margin, W - margin, H - margin], fill="black")
    draw.text((margin, H - margin + 5), f"{edges[0]:.1f}", fill="black")
    draw.text((W - margin - 40, H - margin + 5), f"{edges[-1]:.1f}", fill="black")
    draw.text((W // 2 - 80, H - margin + 18), "negative log-likelihood (nats)", fill="black")
    draw.text((margin, 8), f"{title or ''}  blue: {in_label}  orange: {out_label}", fill="black")
    im.save(path)
    return path
