"""Representations learned by density models, judged by a linear probe: logistic
regression on the model's features versus the same probe on the raw pixels.

Features: NADE's hidden layer sigmoid(c + W x); PixelRNN's last recurrent layer and
PixelCNN's last block, averaged over positions (each model's ``features(x)``).
"""

import numpy as np
import torch

from ..models import MODELS


def feature_models():
    return [name for name, cls in MODELS.items() if hasattr(cls, "features")]


@torch.no_grad()
def extract_features(model, images, batch_size=256):
    """images: (N, C, H, W) int64 -> (N, F) float32 CPU tensor of ``model.features``."""
    if not hasattr(model, "features"):
        raise ValueError(
            f"{type(model).__name__} has no features(); models with features: "
            f"{', '.join(feature_models())}"
        )
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        out = [
            model.features(images[i : i + batch_size].to(device)).float().cpu()
            for i in range(0, len(images), batch_size)
        ]
    finally:
        model.train(was_training)
    return torch.cat(out)


def linear_probe(train_x, train_y, test_x, test_y, max_iter=2000, seed=0):
    """Test accuracy of logistic regression (standardised inputs, L2, C=1) trained on
    (train_x: (N, F), train_y: (N,)) and scored on (test_x, test_y)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter, random_state=seed))
    clf.fit(np.asarray(train_x, np.float64), np.asarray(train_y))
    return float(clf.score(np.asarray(test_x, np.float64), np.asarray(test_y)))


def probe(model, train_set, test_set, batch_size=256):
    """Linear-probe accuracy on the model's features and on the raw pixels.

    train_set, test_set: ImageSets with labels. Returns a dict: feature_dim,
    probe_accuracy (features), raw_pixels_accuracy, chance (most frequent test class).
    """
    for s in (train_set, test_set):
        if s.labels is None:
            raise ValueError(
                f"{s.name} has no labels; a linear probe needs a labelled "
                f"dataset (digits, mnist, cifar10, or a png folder of class "
                f"subfolders)"
            )
    ftr = extract_features(model, train_set.images, batch_size)
    fte = extract_features(model, test_set.images, batch_size)
    raw_tr = train_set.images.flatten(1).float()
    raw_te = test_set.images.flatten(1).float()
    ytr, yte = train_set.labels.numpy(), test_set.labels.numpy()
    return (
        {
            "feature_dim": int(ftr.shape[1]),
            "probe_accuracy": linear_probe(ftr, ytr, fte, yte),
            "raw_pixels_accuracy": linear_probe(raw_tr, ytr, raw_te, yte),
            "chance": float(np.bincount(yte).max() / len(yte)),
            "n_train": len(ytr),
            "n_test": len(yte),
        },
        ftr,
        fte,
    )
