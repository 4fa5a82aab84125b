"""pixelar's models, from the simplest to the paper's best. Every image model subclasses
``AutoregressiveModel`` and is listed in ``MODELS`` (by class name: what ``pixelar train``
fits and checkpoints load); RNADE, a model of real-valued vectors (B, D), is neither."""

from .base import AutoregressiveModel, log_prob_from_logits
from .fvsbn import FVSBN
from .independent import IndependentPixels
from .markov import MarkovPixels
from .nade import NADE
from .pixel_networks import PixelCNN, PixelRNN
from .rnade import RNADE

MODELS = {
    cls.__name__: cls for cls in (IndependentPixels, MarkovPixels, FVSBN, NADE, PixelCNN, PixelRNN)
}

__all__ = [
    "AutoregressiveModel",
    "log_prob_from_logits",
    "IndependentPixels",
    "MarkovPixels",
    "FVSBN",
    "NADE",
    "RNADE",
    "PixelCNN",
    "PixelRNN",
    "MODELS",
]
