"""Independent pixels: one categorical per dimension (n parameters for binary images)."""
import torch
import torch.nn as nn

from .base import AutoregressiveModel
from .draw import draw


class IndependentPixels(AutoregressiveModel):
    """p(x) = prod_i p(x_i): each dimension its own categorical, ignoring all others.

    Parameters: (C, H, W) Bernoulli logits for levels=2 (n parameters), else
    (C, H, W, levels - 1) logits with level 0 fixed at logit 0.
    forward(x: (B, C, H, W)) -> (B, C, H, W) logits (binary) or (B, C, H, W, levels).
    """

    def __init__(self, image_shape=(1, 28, 28), levels=2):
        super().__init__(image_shape, levels)
        self._config = dict(image_shape=list(self.image_shape), levels=levels)
        self.bernoulli = levels == 2
        shape = self.image_shape if self.bernoulli else (*self.image_shape, levels - 1)
        self.logits = nn.Parameter(torch.zeros(shape))

    def forward(self, x):
        B = x.shape[0]
        if self.bernoulli:
            return self.logits.expand(B, *self.logits.shape)
        full = torch.cat([self.logits.new_zeros(*self.image_shape, 1), self.logits], dim=-1)
        return full.expand(B, *full.shape)

    def _sample_fast(self, u, cond, progress=False):
        """No dimension depends on another: one draw for all. u: (n, C, H, W) float64."""
        value = draw(self(u), u, self.bernoulli)  # forward reads only the batch size
        return value if cond is None else torch.where(cond >= 0, cond, value)
