"""Density-based anomaly detection: score each image by its NLL under the model; with an
in-distribution and an out-of-distribution set, the AUROC of that score and a histogram
of both score distributions.

The shipped example compares the digits with corrupted copies of themselves
(``corrupt``: a fraction of the pixels flipped, or replaced by noise).

    >>> scores = score_anomalies(model, test_images, corrupt(test_images, 2, "flip", 0.1))
    >>> scores.auroc, scores.nll_in.shape, scores.nll_ood.shape   # float, (N,), (M,)
"""

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from .evaluate import nll_per_image, summarize

CORRUPTIONS = ("flip", "noise")


@dataclass
class AnomalyScores:
    """The result of ``score_anomalies``.

    nll_in: (N,) float64, nats per in-distribution image, on the CPU.
    summary_in: ``summarize(nll_in)`` (n, mean NLL in nats and bits/dim, 95% intervals).
    nll_ood: (M,) float64 nats per out-of-distribution image, or None without that set.
    summary_ood: ``summarize(nll_ood)``, or None.
    auroc: the AUROC of telling the out-of-distribution images apart by a higher NLL
        (``auroc(nll_in, nll_ood)``), or None.
    """

    nll_in: torch.Tensor
    summary_in: dict
    nll_ood: Optional[torch.Tensor] = None
    summary_ood: Optional[dict] = None
    auroc: Optional[float] = None


def score_anomalies(model, images, ood_images=None, batch_size=256, progress=False):
    """Density-based anomaly scores: the NLL of every image under ``model`` and, given an
    out-of-distribution set, the AUROC of telling it apart by a higher NLL.

    images: (N, C, H, W) int64 in [0, model.levels); ood_images: (M, C, H, W) int64 of the
    same image shape, or None. The model runs in eval mode on its parameters' device,
    ``batch_size`` images at a time. Returns an ``AnomalyScores``.
    """
    nll_in = nll_per_image(model, images, batch_size, progress=progress)
    scores = AnomalyScores(nll_in, summarize(nll_in, model.num_dims))
    if ood_images is not None:
        nll_ood = nll_per_image(model, ood_images, batch_size, progress=progress)
        scores.nll_ood, scores.summary_ood = nll_ood, summarize(nll_ood, model.num_dims)
        scores.auroc = auroc(nll_in.numpy(), nll_ood.numpy())
    return scores


def corruption_label(name, kind, fraction):
    """A readable name for ``corrupt(images of name, kind, fraction)``:
    'digits with 0.1 of pixels flipped'."""
    if kind not in CORRUPTIONS:
        raise ValueError(f"kind must be one of {CORRUPTIONS}, got {kind!r}")
    return f"{name} with {fraction:g} of pixels {'flipped' if kind == 'flip' else 'noised'}"


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


def save_histogram(
    path,
    in_scores,
    out_scores,
    in_label="in-distribution",
    out_label="out-of-distribution",
    title=None,
    bins=40,
):
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
