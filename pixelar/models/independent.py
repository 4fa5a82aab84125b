"""Independent pixels: one categorical per dimension (n parameters for binary images)."""

import math

import torch
import torch.nn as nn

from ..ops.draw import check_finite_logits, draw
from .base import AutoregressiveModel


class IndependentPixels(AutoregressiveModel):
    """p(x) = prod_i p(x_i): each dimension its own categorical, ignoring all others.

    Parameters: (C, H, W) Bernoulli logits for levels=2 (n parameters), else
    (C, H, W, levels - 1) logits with level 0 fixed at logit 0.
    forward(x: (B, C, H, W)) -> (B, C, H, W) logits (binary) or (B, C, H, W, levels).
    """

    def __init__(self, image_shape=(1, 28, 28), levels=2):
        super().__init__(image_shape, levels)
        self._config = dict(image_shape=list(self.image_shape), levels=levels)
        shape = self.image_shape if self.bernoulli else (*self.image_shape, levels - 1)
        self.check_size(
            4 * math.prod(shape), f"levels={levels} with image_shape={self.image_shape}"
        )
        self.logits = nn.Parameter(torch.zeros(shape))

    def forward(self, x):
        """x: (B, C, H, W) integers in [0, levels) -> logits (see the class docstring)."""
        return self._batch_logits(self.check_images(x).shape[0])

    def _batch_logits(self, B):
        if self.bernoulli:
            return self.logits.expand(B, *self.logits.shape)
        full = torch.cat([self.logits.new_zeros(*self.image_shape, 1), self.logits], dim=-1)
        return full.expand(B, *full.shape)

    def _sample_fast(self, u, cond, progress=False):
        """No dimension depends on another: one draw for all. u: (n, C, H, W) float64."""
        logits = self._batch_logits(u.shape[0])
        C, H, W = self.image_shape
        dims = torch.arange(C * H * W, device=u.device).view(H, W, C).permute(2, 0, 1)
        check_finite_logits(logits, self.bernoulli, dims, None if cond is None else cond < 0)
        value = draw(logits, u, self.bernoulli)
        return value if cond is None else torch.where(cond >= 0, cond, value)
